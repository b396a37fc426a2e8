"""The run's two pictures are valid PNGs of a sensible size for every shape of history and confusion matrix
the trainer can produce, written atomically, deterministic, and with nothing in the warnings or the log."""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from training_agent.trainer.plots import (
    FALLBACK_CONFIG_DIR,
    _row_shares,
    _safe_text,
    matplotlib_config_dir,
    write_confusion,
    write_curves,
)

# Drawing must not warn (glyphs, divisions, matplotlib's own). Only those kinds: a ResourceWarning from an
# earlier test's socket, collected while a picture is drawn, is not this module's.
pytestmark = [
    pytest.mark.filterwarnings("error::UserWarning"),
    pytest.mark.filterwarnings("error::RuntimeWarning"),
    pytest.mark.filterwarnings("error::DeprecationWarning"),
]


def history(epochs: int, *, train_accuracy: bool = True) -> list[dict[str, Any]]:
    records = []
    for epoch in range(1, epochs + 1):
        record = {
            "epoch": epoch,
            "train_loss": 2.3 * math.exp(-epoch / 5) + 0.05,
            "val_loss": 2.3 * math.exp(-epoch / 6) + 0.1,
            "val_accuracy": 1 - 0.9 * math.exp(-epoch / 5),
            "seconds": 1.0,
        }
        if train_accuracy:
            record["train_accuracy"] = 1 - 0.9 * math.exp(-epoch / 4)
        records.append(record)
    return records


def confusion(n: int) -> list[list[int]]:
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 4, size=(n, n)) * (rng.random((n, n)) < 0.2) + np.eye(n, dtype=np.int64) * 20
    return [[int(c) for c in row] for row in counts]


def assert_only_png(path: Path, *, min_size: tuple[int, int], max_size: tuple[int, int]) -> None:
    """A valid PNG between the sizes given, and alone in its folder: no temporary file left beside it."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        image.verify()
    assert min_size[0] <= width <= max_size[0] and min_size[1] <= height <= max_size[1], (width, height)
    assert [p.name for p in path.parent.iterdir()] == [path.name]


CURVES = {"min_size": (1000, 400), "max_size": (1000, 400)}


def test_curves_of_a_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "run_curves.png"
    with caplog.at_level(logging.WARNING):
        assert write_curves(history(20), 14, path, title="demo · resnet18") == path
    assert_only_png(path, **CURVES)
    assert 5_000 < path.stat().st_size < 100_000
    assert not caplog.records


@pytest.mark.parametrize("epochs", [1, 50, 300])
def test_curves_of_any_length(tmp_path: Path, epochs: int) -> None:
    path = write_curves(history(epochs), epochs, tmp_path / "curves.png", title="run")
    assert_only_png(path, **CURVES)


def test_curves_leave_out_non_finite_values(tmp_path: Path) -> None:
    records = history(10)
    records[0]["train_loss"] = float("inf")
    records[3]["val_loss"] = float("nan")  # the best epoch's own val loss
    records[5]["val_accuracy"] = None
    for record in records[6:]:
        record["train_loss"] = float("nan")
    path = write_curves(records, 4, tmp_path / "curves.png", title="diverged")
    assert_only_png(path, **CURVES)


def test_curves_without_train_accuracy(tmp_path: Path) -> None:
    path = write_curves(history(8, train_accuracy=False), 8, tmp_path / "curves.png", title="old run")
    assert_only_png(path, **CURVES)


@pytest.mark.parametrize(
    "records", [[], [{"epoch": 1, "train_loss": float("nan"), "val_loss": float("nan")}]]
)
def test_curves_with_nothing_to_draw(tmp_path: Path, records: list[dict[str, Any]]) -> None:
    path = write_curves(records, 3, tmp_path / "curves.png", title="empty")
    assert_only_png(path, **CURVES)


def test_confusion_of_two_classes(tmp_path: Path) -> None:
    path = tmp_path / "run_confusion.png"
    assert write_confusion([[40, 2], [5, 33]], ["cat", "dog"], path, title="demo") == path
    assert_only_png(path, min_size=(600, 500), max_size=(600, 500))
    assert path.stat().st_size < 100_000


def test_confusion_of_many_classes_with_long_names_stays_capped(tmp_path: Path) -> None:
    names = [f"{i:03d} " + "a very long and descriptive class name " * 2 for i in range(150)]
    names = [name[:60] for name in names]
    path = write_confusion(confusion(150), names, tmp_path / "confusion.png", title="many")
    assert_only_png(path, min_size=(1000, 900), max_size=(1400, 1200))
    assert path.stat().st_size < 300_000


def test_confusion_with_a_class_without_test_images(tmp_path: Path) -> None:
    matrix = confusion(5)
    matrix[2] = [0] * 5
    path = write_confusion(matrix, list("abcde"), tmp_path / "confusion.png", title="empty row")
    assert_only_png(path, min_size=(600, 500), max_size=(700, 600))


def test_confusion_with_any_characters_in_names(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Missing glyphs (CJK, most emoji in DejaVu Sans) warn inside matplotlib; a lone or paired `$` would be
    # mathtext; newlines and tabs would break the layout.
    names = ["Übermensch", "北京", "😀 smile", "$100 bill", "$x$ and $", "two\nlines\tand tab", "", "ﷺ عربى"]
    with caplog.at_level(logging.WARNING):
        path = write_confusion(confusion(len(names)), names, tmp_path / "confusion.png", title="🚀 $ ünïcode")
    assert_only_png(path, min_size=(600, 500), max_size=(800, 700))
    assert not caplog.records


def test_pictures_are_deterministic(tmp_path: Path) -> None:
    first = write_confusion(confusion(10), [f"class {i}" for i in range(10)], tmp_path / "a.png", title="t")
    second = write_confusion(confusion(10), [f"class {i}" for i in range(10)], tmp_path / "b.png", title="t")
    assert first.read_bytes() == second.read_bytes()


def test_replacing_a_picture(tmp_path: Path) -> None:
    path = tmp_path / "curves.png"
    write_curves(history(3), 3, path, title="first")
    write_curves(history(5), 5, path, title="second")
    assert_only_png(path, **CURVES)


def test_confusion_of_the_wrong_shape_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shape"):
        write_confusion([[1, 2], [3, 4]], ["a", "b", "c"], tmp_path / "confusion.png", title="t")
    with pytest.raises(ValueError, match="shape"):
        write_confusion([], [], tmp_path / "confusion.png", title="t")
    assert not list(tmp_path.iterdir())


def test_row_shares() -> None:
    shares = _row_shares(np.array([[3, 1], [0, 0]]))
    assert shares.tolist() == [[0.75, 0.25], [0.0, 0.0]]


def test_safe_text() -> None:
    assert _safe_text("cat", 24) == "cat"
    assert _safe_text("x" * 30, 24) == "x" * 23 + "…"
    assert _safe_text(" two\nlines\t", 24) == "two lines"
    assert _safe_text("$100 $x$", 24) == r"\$100 \$x\$"


def test_config_dir_left_to_matplotlib_when_home_is_writable(tmp_path: Path) -> None:
    assert matplotlib_config_dir({"HOME": str(tmp_path)}) is None
    assert matplotlib_config_dir({"HOME": str(tmp_path / "not" / "yet")}) is None  # matplotlib creates it


def test_config_dir_kept_when_set(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert matplotlib_config_dir({"MPLCONFIGDIR": "/anywhere", "HOME": str(blocked)}) is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG folders on Linux")
@pytest.mark.parametrize("variable", ["HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"])
def test_config_dir_in_temp_when_default_cannot_be_created(tmp_path: Path, variable: str) -> None:
    # A regular file where a folder should be: unwritable even for root, unlike a read-only mode.
    blocked = tmp_path / "file"
    blocked.write_text("")
    environ = {"HOME": str(tmp_path), variable: str(blocked)}
    assert matplotlib_config_dir(environ) == str(FALLBACK_CONFIG_DIR)
