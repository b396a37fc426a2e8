"""The two pictures a run leaves beside its model in the bucket: `…_curves.png` (loss and accuracy per epoch,
best epoch marked) and `…_confusion.png` (the test confusion matrix, normalised per true class).

They are drawn with matplotlib's object API on the Agg canvas (`Figure` plus `FigureCanvasAgg`), never
`matplotlib.pyplot`: pyplot keeps global figure state and picks a GUI backend from the environment, while a
`Figure` of our own needs no display and shares nothing with other figures. matplotlib is imported only when
a picture is drawn, so importing this module costs nothing.
"""

from __future__ import annotations

import io
import math
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from training_agent.core.files import atomic_write

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 100
CURVES_SIZE = (10.0, 4.0)
CONFUSION_MIN_SIZE = (6.0, 5.0)
CONFUSION_MAX_SIZE = (14.0, 12.0)
# Above these the cells are too small for text, and the tick labels are thinned to about MAX_TICK_LABELS.
MAX_ANNOTATED_CLASSES = 20
MAX_TICK_LABELS = 60
# Up to this many epochs each point gets a marker; a single epoch would otherwise draw nothing at all.
MAX_MARKED_EPOCHS = 30
LABEL_CHARS = 24
TITLE_CHARS = 100
FALLBACK_CONFIG_DIR = Path(tempfile.gettempdir()) / "training-agent-mpl"


def matplotlib_config_dir(environ: Mapping[str, str]) -> str | None:
    """The MPLCONFIGDIR to set before matplotlib is imported, or None where its own choice will do.

    matplotlib keeps its font cache in a config/cache folder under the home directory; where that is missing
    or read-only (trainer containers often run so) it falls back to a fresh temporary folder with a warning in
    the log on every start. One fixed temporary folder instead keeps the log clean and the cache reused.
    """
    if environ.get("MPLCONFIGDIR") or not sys.platform.startswith(("linux", "freebsd")):
        return None
    try:
        home = Path(environ.get("HOME") or Path.home())
    except RuntimeError:  # no HOME and no passwd entry
        return str(FALLBACK_CONFIG_DIR)
    defaults = [
        Path(environ.get("XDG_CONFIG_HOME") or home / ".config", "matplotlib"),
        Path(environ.get("XDG_CACHE_HOME") or home / ".cache", "matplotlib"),
    ]
    return None if all(map(_can_create, defaults)) else str(FALLBACK_CONFIG_DIR)


def _can_create(directory: Path) -> bool:
    # matplotlib creates the folder with its parents, so the nearest folder that exists decides.
    for folder in (directory, *directory.parents):
        if folder.exists():
            return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)
    return False


@cache
def _prepare_matplotlib() -> None:
    # Must run before the first matplotlib import: it reads MPLCONFIGDIR once, at import.
    config_dir = matplotlib_config_dir(os.environ)
    if config_dir is not None:
        os.environ["MPLCONFIGDIR"] = config_dir


@contextmanager
def _quiet_missing_glyphs() -> Iterator[None]:
    # Class names can hold any character (emoji, rare scripts); DejaVu Sans draws a box for what it lacks and
    # matplotlib warns once per glyph, which would only clutter the trainer's log. catch_warnings swaps the
    # process-wide filters, so two threads drawing at once could restore each other's: the trainer draws from
    # one thread.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font", category=UserWarning)
        yield


def _new_figure(size: tuple[float, float]) -> Figure:
    _prepare_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: Path) -> Path:
    from PIL import Image

    raw = io.BytesIO()
    figure.savefig(raw, format="rgba", dpi=DPI)
    pixels = Image.frombytes("RGBA", figure.canvas.get_width_height(physical=True), raw.getvalue())
    # A chart has few colours besides anti-aliasing shades: a 256-colour palette looks the same and makes the
    # file about three times smaller than matplotlib's RGBA PNG.
    image = pixels.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE)
    # The temporary file ends in .part, so the format must be named.
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG", optimize=True, dpi=(DPI, DPI)))


def _safe_text(text: str, limit: int) -> str:
    """`text` on one line, at most `limit` characters, with `$` escaped so that matplotlib never reads it as
    mathtext (an unbalanced formula in a class name would fail the whole picture)."""
    text = " ".join(str(text).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("$", r"\$")


def write_curves(history: list[dict[str, Any]], best_epoch: int, path: Path, *, title: str) -> Path:
    """Loss (train, val) and accuracy (train when recorded, val) per epoch, side by side, with `best_epoch`
    marked on both; non-finite values are left out. Written atomically to `path`, which is returned."""
    with _quiet_missing_glyphs():
        figure = _new_figure(CURVES_SIZE)
        figure.suptitle(_safe_text(title, TITLE_CHARS))
        loss_axes, accuracy_axes = figure.subplots(1, 2)
        epochs = sorted(r["epoch"] for r in history if isinstance(r.get("epoch"), int))
        panels: list[tuple[Axes, str, str, Callable[[float], str]]] = [
            (loss_axes, "loss", "val loss", lambda v: f"{v:.3g}"),
            (accuracy_axes, "accuracy", "val acc", lambda v: f"{v:.3f}"),
        ]
        for axes, metric, short, fmt in panels:
            for split, colour in (("train", "C0"), ("val", "C1")):
                _draw_series(axes, _series(history, f"{split}_{metric}"), split, colour)
            _mark_best(axes, _series(history, f"val_{metric}"), best_epoch, short, fmt)
            _style_curves(axes, metric, epochs)
        if _wide_positive_range(_series(history, "train_loss")[1] + _series(history, "val_loss")[1]):
            # A diverging run (a loss in the thousands beside 0.01) would flatten every other epoch.
            loss_axes.set_yscale("log")
        return _save(figure, path)


def _series(history: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = sorted(
        (r["epoch"], float(r[key]))
        for r in history
        if isinstance(r.get("epoch"), int) and _is_finite(r.get(key))
    )
    return [e for e, _ in points], [v for _, v in points]


def _is_finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _draw_series(axes: Axes, series: tuple[list[int], list[float]], label: str, colour: str) -> None:
    epochs, values = series
    if epochs:
        marker = "o" if len(epochs) <= MAX_MARKED_EPOCHS else None
        axes.plot(epochs, values, label=label, color=colour, marker=marker, markersize=4, linewidth=1.5)


def _mark_best(
    axes: Axes, val: tuple[list[int], list[float]], best_epoch: int, short: str, fmt: Callable[[float], str]
) -> None:
    axes.axvline(best_epoch, color="0.4", linestyle="--", linewidth=1)
    if best_epoch in val[0]:
        value = val[1][val[0].index(best_epoch)]
        label = f"best: epoch {best_epoch}, {short} {fmt(value)}"
        axes.plot(
            [best_epoch], [value], linestyle="none", marker="*", markersize=14, color="crimson", label=label
        )


def _style_curves(axes: Axes, metric: str, epochs: list[int]) -> None:
    from matplotlib.ticker import MaxNLocator

    axes.set_title(metric)
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if epochs:
        # Room at each end, so that a single epoch is a point in the middle rather than the whole axis.
        pad = max(0.5, (epochs[-1] - epochs[0]) * 0.02)
        axes.set_xlim(epochs[0] - pad, epochs[-1] + pad)
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:  # an empty legend warns
        axes.legend(fontsize="small")


def _wide_positive_range(values: list[float]) -> bool:
    return bool(values) and min(values) > 0 and max(values) / min(values) > 100


def write_confusion(
    matrix: Sequence[Sequence[int]], classes: Sequence[str], path: Path, *, title: str
) -> Path:
    """The confusion matrix (true class on y, predicted on x), each row divided by its count so that it sums
    to 1 (a class without test images stays 0), with a colour bar and, for up to 20 classes, the percentage
    and count in each cell. Written atomically to `path`, which is returned."""
    counts = np.asarray(matrix, dtype=np.int64)
    n = len(classes)
    if n == 0 or counts.shape != (n, n):
        raise ValueError(f"confusion matrix of shape {counts.shape} for {n} classes")
    fractions = _row_shares(counts)

    with _quiet_missing_glyphs():
        figure = _new_figure(_confusion_size(n))
        figure.suptitle(_safe_text(title, TITLE_CHARS))
        axes = figure.subplots()
        image = axes.imshow(
            fractions, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest", aspect="auto"
        )
        colour_bar = figure.colorbar(image, ax=axes, shrink=0.9)
        colour_bar.set_label("share of the true class")
        axes.set_title(f"normalised per true class, {int(counts.sum()):,} test images", fontsize="small")
        axes.set_xlabel("predicted")
        axes.set_ylabel("true")
        _class_ticks(axes, [_safe_text(name, LABEL_CHARS) for name in classes])
        if n <= MAX_ANNOTATED_CLASSES:
            _annotate_cells(axes, counts, fractions)
        return _save(figure, path)


def _row_shares(counts: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Each row divided by its sum; a row of zeros (a class with no test images) stays zeros, without the
    division-by-zero warning."""
    totals = counts.sum(axis=1, keepdims=True)
    shares: np.ndarray[Any, Any] = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    return shares


def _confusion_size(n: int) -> tuple[float, float]:
    # About 0.4 inch per class, between a small square and a cap that keeps hundreds of classes in a few
    # hundred KB: the colours still show where the confusion is.
    (min_w, min_h), (max_w, max_h) = CONFUSION_MIN_SIZE, CONFUSION_MAX_SIZE
    return min(max_w, max(min_w, 3.0 + 0.4 * n)), min(max_h, max(min_h, 2.0 + 0.4 * n))


def _class_ticks(axes: Axes, labels: list[str]) -> None:
    n = len(labels)
    step = math.ceil(n / MAX_TICK_LABELS)
    positions = list(range(0, n, step))
    shown = [labels[i] for i in positions]
    fontsize = 9 if n <= MAX_ANNOTATED_CLASSES else 7 if n <= 40 else 6
    axes.set_xticks(positions, shown, fontsize=fontsize, rotation=45 if n <= 10 else 90)
    axes.set_yticks(positions, shown, fontsize=fontsize)
    if n <= 10:
        for label in axes.get_xticklabels():
            label.set_horizontalalignment("right")
            label.set_rotation_mode("anchor")


def _annotate_cells(axes: Axes, counts: np.ndarray[Any, Any], fractions: np.ndarray[Any, Any]) -> None:
    n = counts.shape[0]
    fontsize = 9 if n <= 8 else 7 if n <= 14 else 5.5
    for (row, column), count in np.ndenumerate(counts):
        if count == 0:  # empty cells stay blank, so the confusions stand out
            continue
        share = fractions[row, column]
        axes.text(
            column,
            row,
            f"{share:.0%}\n{count}",
            ha="center",
            va="center",
            fontsize=fontsize,
            color="white" if share > 0.5 else "black",
        )
