"""`training-agent demo`'s options and output, in process: no training is started here (tests/test_cli.py
runs the demo end to end)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import seed_project
from training_agent import cli
from training_agent.core.errors import EXIT_INVALID_INPUT, EXIT_USAGE, ConfigurationError, InvalidInputError
from training_agent.core.records import NewModel, RecordsStore
from training_agent.demo import (
    QUICK_OPTIONS,
    DemoOptions,
    check_options,
    project_metadata,
    training_option_defaults,
)
from training_agent.demo_summary import MAX_CLASS_ROWS, format_summary, shown_value, summarize
from training_agent.trainer.config import TrainingConfig


def demo_args(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(["demo", *argv])


def training_of(*argv: str) -> dict[str, Any]:
    return cli.demo_training_options(demo_args(*argv))


# -- the command line: named flags and --option KEY=VALUE -------------------------------------------------


def test_no_options_give_no_training_options() -> None:
    assert training_of() == {}


def test_option_values_are_json_when_they_parse_else_strings() -> None:
    options = training_of(
        *("--option", "epochs=3"),
        *("--option", "label_smoothing=0.5"),
        *("--option", "augment=false"),
        *("--option", "seed=null"),
        *("--option", "recipe=auto"),
        *("--option", "weights_url=/tmp/w=1.pth"),  # only the first '=' separates the key
        *("--option", ' lr_schedule = "cosine"'),
        *("--option", "lr_step_size="),
    )
    assert options == {
        "epochs": 3,
        "label_smoothing": 0.5,
        "augment": False,
        "seed": None,
        "recipe": "auto",
        "weights_url": "/tmp/w=1.pth",
        "lr_schedule": "cosine",
        "lr_step_size": "",
    }
    assert isinstance(options["epochs"], int) and isinstance(options["label_smoothing"], float)


def test_a_repeated_option_keeps_the_last_value() -> None:
    assert training_of("--option", "epochs=3", "--option", "epochs=5") == {"epochs": 5}


def test_named_flags_set_the_same_keys() -> None:
    options = training_of(
        *("--model", "mobilenet_v3_small", "--epochs", "4", "--image-size", "32"),
        *("--batch-size", "8", "--lr", "0.01", "--from-scratch"),
        *("--option", "recipe=auto"),
    )
    assert options == {
        "preferred_model": "mobilenet_v3_small",
        "epochs": 4,
        "image_size": 32,
        "batch_size": 8,
        "learning_rate": 0.01,
        "pretrained": False,
        "recipe": "auto",
    }
    assert training_of("--pretrained") == {"pretrained": True}
    assert training_of("--no-pretrained") == {"pretrained": False}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--epochs", "2", "--option", "epochs=3"), "--epochs and --option epochs=3 both set epochs"),
        (("--lr", "0.1", "--option", "learning_rate=0.2"), "--lr and --option learning_rate=0.2 both set"),
        (("--no-pretrained", "--option", "pretrained=true"), "--pretrained/--no-pretrained and --option"),
    ],
)
def test_a_key_given_by_a_flag_and_an_option_is_refused(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigurationError, match="give it once") as refused:
        training_of(*argv)
    assert str(refused.value).startswith(message)
    assert refused.value.exit_code == EXIT_USAGE


@pytest.mark.parametrize("bad", ["epochs", "=3", " =3"])
def test_an_option_without_key_and_value_is_an_argparse_error(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        demo_args("--option", bad)
    assert stopped.value.code == EXIT_USAGE
    assert f"argument --option: expected KEY=VALUE, e.g. recipe=auto or epochs=5; got {bad!r}" in (
        capsys.readouterr().err
    )


# -- the checks made before anything is created ------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("epoch", "did you mean epochs?"),
        ("image-size", "did you mean image_size?"),
        ("model", "did you mean preferred_model?"),
        ("lr", "did you mean learning_rate?"),
        ("zzzz", "`training-agent demo --help` lists the keys"),
    ],
)
def test_an_unknown_key_is_refused_with_suggestions(key: str, hint: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        check_options(DemoOptions(training={key: 3}))
    assert str(refused.value) == f"--option {key}: not a training option; {hint}"


def test_a_bad_value_is_refused_naming_the_key() -> None:
    with pytest.raises(InvalidInputError, match=r"metadata\.epochs .*greater than 0.*\(got 0\)"):
        check_options(DemoOptions(training={"epochs": 0}))
    with pytest.raises(InvalidInputError, match=r"metadata\.augment .*\(got 'perhaps'\)"):
        check_options(DemoOptions(training={"augment": "perhaps"}))


def test_an_unknown_model_given_as_an_option_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="resnet181 is not a torchvision classification model"):
        check_options(DemoOptions(training={"preferred_model": "resnet181"}))


def test_valid_options_pass() -> None:
    check_options(DemoOptions(training={"epochs": 2, "batch_size": 8, "augment": False, "seed": None}))


def test_every_error_is_one_line_and_nothing_is_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TRAINING_AGENT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    for argv, code, line in [
        (["--epochs", "2", "--option", "epochs=3"], EXIT_USAGE, "--epochs and --option epochs=3 both set"),
        (["--option", "epoch=3"], EXIT_USAGE, "--option epoch: not a training option; did you mean epochs?"),
        (["--option", "lr_schedule=sometimes"], EXIT_INVALID_INPUT, "Invalid training options"),
    ]:
        assert cli.main(["demo", *argv]) == code
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"training-agent: {line}"), err
    assert "metadata.lr_schedule" in err
    assert not (tmp_path / "data").exists()


# -- the project the demo creates ----------------------------------------------------------------------


def never_cached(model: str) -> bool:
    return False


def test_the_demo_project_holds_only_its_quick_options() -> None:
    metadata = project_metadata(DemoOptions(), weights_cached=never_cached)
    assert metadata == {"epochs": 3, "image_size": 64, "pretrained": False}
    # Everything else is the project default: batch 32, lr 0.001, as for any project.
    config = TrainingConfig.from_metadata(metadata)
    defaults = training_option_defaults()
    assert config.batch_size == defaults["batch_size"] and config.learning_rate == defaults["learning_rate"]


def test_pretrained_follows_the_cache_of_the_chosen_model() -> None:
    asked: list[str] = []

    def cached(model: str) -> bool:
        asked.append(model)
        return True

    assert project_metadata(DemoOptions(), weights_cached=cached)["pretrained"] is True
    project_metadata(DemoOptions(training={"preferred_model": "efficientnet_b0"}), weights_cached=cached)
    assert asked == ["resnet18", "efficientnet_b0"]
    chosen = project_metadata(DemoOptions(training={"pretrained": False}), weights_cached=cached)
    assert chosen["pretrained"] is False and len(asked) == 2


def test_the_users_options_win_and_null_means_the_project_default() -> None:
    options = DemoOptions(training={"epochs": None, "batch_size": 8, "recipe": "auto", "image_size": 32})
    metadata = project_metadata(options, weights_cached=never_cached)
    assert metadata == {"image_size": 32, "pretrained": False, "batch_size": 8, "recipe": "auto"}


# -- --help ------------------------------------------------------------------------------------------------


def test_help_shows_the_defaults_and_every_training_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        demo_args("--help")
    assert stopped.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    defaults = training_option_defaults()
    assert f"--batch-size N batch size [batch_size] (default: {defaults['batch_size']}, the project" in text
    assert f"--epochs N epochs to train [epochs] (default: {QUICK_OPTIONS['epochs']}, set by the demo" in text
    assert "--option KEY=VALUE" in text and "--timeout S seconds to wait for the run (default: 3600)" in text
    table = capsys_table(text)
    for key in TrainingConfig.model_fields:  # generated from the trainer's own list: new keys show up
        assert f" {key} " in table, key
    for key, demo in (("epochs", QUICK_OPTIONS["epochs"]), ("image_size", QUICK_OPTIONS["image_size"])):
        assert f" {key} {defaults[key]} {demo} " in table  # the project default, then the demo's
    for key in ("batch_size", "learning_rate", "preferred_model"):
        assert f" {key} {shown_value(defaults[key])} " in table


def capsys_table(text: str) -> str:
    return text[text.index("key project default demo") :] + " "


# -- the summary -----------------------------------------------------------------------------------------


def fake_summary(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    model = tmp_path / "bucket" / "models" / "demo-1a2b3c4d_model.pth"
    summary: dict[str, Any] = {
        "project_id": "6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f",
        "project_name": "demo-1a2b3c4d",
        "status": "pending_evaluation",
        "dataset_url": "file:///tmp/shapes.zip",
        "options": {"epochs": 3, "image_size": 64, "pretrained": False},
        "model_url": model.as_uri(),
        "curves_url": model.with_name("demo-1a2b3c4d_model_curves.png").as_uri(),
        "confusion_url": "gs://models-bucket/models/demo-1a2b3c4d_model_confusion.png",
        "metrics": {
            "architecture": "resnet18",
            "pretrained": False,
            "num_classes": 3,
            "epochs": 3,
            "image_size": 64,
            "batch_size": 32,
            "learning_rate": 0.001,
            "best_epoch": 2,
            "epochs_run": 3,
            "val_accuracy": 0.9,
            "test_accuracy": 0.8667,
            "test_macro_f1": 0.8612,
            "test_balanced_accuracy": 0.8667,
            "training_seconds": 21.4,
            "images_per_second": 118.2,
            "device": "cpu",
            "history": [
                {"epoch": 1, "train_loss": 1.05, "val_loss": 0.93, "val_accuracy": 0.6, "best": True},
                {"epoch": 2, "train_loss": 0.61, "val_loss": 0.41, "val_accuracy": 0.9, "best": True},
                {"epoch": 3, "train_loss": 0.44, "val_loss": 0.45, "val_accuracy": 0.867, "best": False},
            ],
            "per_class": {
                "circle": {"precision": 0.9, "recall": 0.9, "f1": 0.9, "support": 10},
                "square": {"precision": 1.0, "recall": 0.8, "f1": 0.888889, "support": 10},
                "triangle": {"precision": 0.75, "recall": 0.9, "f1": 0.818182, "support": 10},
            },
        },
        "error": None,
    }
    summary.update(changes)
    return summary


def test_the_summary_marks_the_best_epoch_and_shows_per_class_scores_and_pictures(tmp_path: Path) -> None:
    text = format_summary(fake_summary(tmp_path))
    lines = text.splitlines()
    assert (
        "options   epochs=3 image_size=64 pretrained=false (every other option: the project default)" in lines
    )
    assert "accuracy  val 0.900 (best epoch 2), test 0.867, macro-F1 0.861, balanced 0.867" in lines, text
    assert "batch 32, lr 0.001 on cpu" in text
    epochs = [line for line in lines if line.startswith("  epoch ")]
    assert [line.endswith("* best") for line in epochs] == [False, True, False]
    assert "  class     precision  recall      F1  support" in lines
    assert "  triangle      0.750   0.900   0.818       10" in lines
    models = tmp_path / "bucket" / "models"
    assert f"model     {models / 'demo-1a2b3c4d_model.pth'}" in lines  # a local object: its path
    assert f"curves    {models / 'demo-1a2b3c4d_model_curves.png'}" in lines
    assert "confusion gs://models-bucket/models/demo-1a2b3c4d_model_confusion.png" in lines


def test_the_summary_of_an_older_model_without_the_new_keys(tmp_path: Path) -> None:
    summary = fake_summary(tmp_path, curves_url=None, confusion_url=None)
    metrics = summary["metrics"]
    for key in ("best_epoch", "test_macro_f1", "test_balanced_accuracy", "per_class", "batch_size"):
        metrics[key] = None
    metrics["test_accuracy"] = None
    for row in metrics["history"]:
        del row["val_loss"]
    text = format_summary(summary)
    assert "accuracy  val 0.900 (best epoch 2), test n/a" in text  # best from the history's last gain
    assert "curves" not in text and "confusion" not in text and "precision" not in text
    assert "val_loss n/a" in text
    bare: dict[str, Any] = {
        "project_id": "x",
        "project_name": "p",
        "status": "failed",
        "model_url": None,
        "metrics": {},
    }
    assert format_summary({**bare, "error": {"step": "extract", "message": "not a zip"}}).endswith(
        "error     [extract] not a zip"
    )


def test_many_classes_show_the_worst_by_f1(tmp_path: Path) -> None:
    per_class = {
        f"class_{i:02d}": {"precision": 1.0, "recall": 1.0, "f1": i / 100, "support": 5} for i in range(45)
    }
    text = format_summary(
        fake_summary(tmp_path, metrics={**fake_summary(tmp_path)["metrics"], "per_class": per_class})
    )
    rows = [line for line in text.splitlines() if line.startswith("  class_")]
    assert len(rows) == MAX_CLASS_ROWS
    assert rows[0].startswith("  class_00 ") and rows[-1].startswith(f"  class_{MAX_CLASS_ROWS - 1:02d} ")
    assert f"the {MAX_CLASS_ROWS} worst by F1 of 45" in text
    assert f"... and {45 - MAX_CLASS_ROWS} more classes, each with F1 >= 0.300" in text


def test_summarize_reads_the_models_row(records: RecordsStore) -> None:
    project = seed_project(records, "gs://bucket/d.zip", status="pending_evaluation")
    url = "gs://bucket/models/Demo_project_model.pth"
    per_class = {"a": {"precision": 1.0, "recall": 0.5, "f1": 0.666667, "support": 2}}
    records.insert_model(
        NewModel(
            project_id=project.id,
            name="Demo_project_model",
            gcs_url=url,
            metadata={
                "architecture": "resnet18",
                "best_epoch": 1,
                "test_macro_f1": 0.5,
                "test_metrics": {"accuracy": 0.5, "balanced_accuracy": 0.6, "per_class": per_class},
                "curves_url": url.replace(".pth", "_curves.png"),
            },
        )
    )
    summary = summarize(records, project.id, "gs://bucket/d.zip", options={"epochs": 3})
    assert summary["options"] == {"epochs": 3}
    assert summary["curves_url"] == "gs://bucket/models/Demo_project_model_curves.png"
    assert summary["confusion_url"] is None
    metrics = summary["metrics"]
    assert metrics["best_epoch"] == 1 and metrics["test_macro_f1"] == 0.5
    assert metrics["test_balanced_accuracy"] == 0.6 and metrics["per_class"] == per_class
    format_summary(summary)  # most keys absent: still a summary
