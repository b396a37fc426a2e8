"""The dataset corpus: every listing (listings.py) through the pure `plan_layout`, every zip (layouts.py)
through the trainer's extraction and gate, and a few end to end on the embedded path.

Every refusal is one sentence that says what is wrong and what to do: no traceback, no exception repr, no
folder of this machine; nothing is left half-written.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.conftest import make_settings, seed_project
from tests.datasets_corpus.layouts import ZIPS, Entry, ZipCase, dataset, write_zip
from tests.datasets_corpus.listings import LISTINGS, listing
from tests.trainer.test_pipeline import run
from training_agent.core.datasets.layout import DatasetPlan, plan_layout
from training_agent.core.datasets.names import decode_member_name
from training_agent.core.errors import EXIT_INVALID_INPUT, InvalidInputError
from training_agent.core.records import RecordsStore
from training_agent.trainer.dataset_checks import DatasetLayout, inspect_dataset
from training_agent.trainer.fetch import extract_zip, open_dataset

LIMITS: dict[str, Any] = {"max_files": 10_000, "max_bytes": 10**9}


def assert_plain_sentence(message: str, *machine_paths: Path) -> None:
    assert "\n" not in message and "Traceback" not in message, message
    assert not re.search(r"\w+Error\(|<\w+ object|Errno", message), message
    for path in machine_paths:
        assert str(path) not in message, message


# -- plan_layout on listings --------------------------------------------------------------------------------
def _attribute(plan: DatasetPlan, key: str) -> Any:
    if key.startswith("counts."):
        _, split, cls = key.split(".")
        return plan.counts[split][cls]
    return getattr(plan, key)


@pytest.mark.parametrize("name", sorted(LISTINGS))
def test_plan_layout(name: str) -> None:
    case = LISTINGS[name]
    members = case.members if case.members is not None else listing(case.names)
    options: dict[str, Any] = {**LIMITS, **case.options}
    if case.refused:
        with pytest.raises(InvalidInputError) as refusal:
            plan_layout(members, **options)
        assert case.refused in str(refusal.value)
        assert_plain_sentence(str(refusal.value))
        return
    plan = plan_layout(members, **options)
    for key, expected in case.expect.items():
        actual = _attribute(plan, key)
        if isinstance(expected, dict) and key == "ignored":
            actual = {k: v for k, v in actual.items() if k in expected}
        assert actual == expected, key
    json.dumps(plan.summary())  # goes to agent_logs as it is


def test_plan_names_where_each_image_goes() -> None:
    plan = plan_layout(
        listing(
            [
                *(f"ds/Training/{c}/{i}.jpg" for c in ("cat", "dog") for i in range(2)),
                *(f"ds/valid/{c}/a/{i}.JPG" for c in ("cat", "dog") for i in range(2)),
                *(f"ds/Test/{c}/{i}.png" for c in ("cat", "dog") for i in range(2)),
                "ds/README.md",
                "__MACOSX/ds/._README.md",
            ]
        ),
        **LIMITS,
    )
    assert plan.split_mapping() == "ds/Training/ as train, ds/valid/ as val, ds/Test/ as test"
    assert plan.destination("ds/valid/dog/a/1.JPG") == "val/dog/a/1.JPG"
    assert len(list(plan.planned())) == 12
    summary = plan.summary()
    assert summary["split_folders"] == {"train": "Training", "val": "valid", "test": "Test"}
    assert summary["ignored"] == {
        "count": 2,
        "by_reason": {"outside_splits": 1, "system": 1},
        "examples": ["ds/README.md", "__MACOSX/ds/._README.md"],
    }


# -- member names -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "encoding"),
    [
        ("猫/1.jpg", "utf-8"),
        ("café/crème.png", "utf-8"),
        ("café/Müller.png", "cp437"),
        ("château/x.jpg", "cp437"),
        ("猫/狗.jpg", "gbk"),
        ("训练/照片_01.jpg", "gbk"),
        ("ねこ/いぬ.png", "shift_jis"),
        ("東京/写真_01.jpg", "shift_jis"),
        ("plain/ascii.png", "ascii"),
    ],
)
def test_names_without_the_utf8_flag(name: str, encoding: str) -> None:
    assert decode_member_name(name.encode(encoding), 0) == name


def test_names_with_the_utf8_flag_are_utf8() -> None:
    assert decode_member_name("猫/1.jpg".encode(), 0x800) == "猫/1.jpg"


def test_zipinfo_names_are_recovered_from_zipfiles_cp437(tmp_path: Path) -> None:
    archive = write_zip(
        tmp_path / "names.zip", [Entry("猫/1.png".encode("gbk"), b"x"), Entry("flagged/é.png", b"y")]
    )
    import zipfile

    with zipfile.ZipFile(archive) as zf:
        assert [decode_member_name(i) for i in zf.infolist()] == ["猫/1.png", "flagged/é.png"]


# -- extraction and the gate on real zips -------------------------------------------------------------------
def _gate(case: ZipCase, archive: Path, dest: Path) -> DatasetLayout:
    plan = extract_zip(
        archive, dest, **LIMITS, max_ratio=200.0, allow_missing_val="val_fraction" in case.metadata
    )
    return inspect_dataset(
        dest,
        plan,
        max_bad_fraction=case.settings.get("max_bad_image_fraction", 0.01),
        val_fraction=case.metadata.get("val_fraction"),
        seed=7,
        fail_on_leakage=case.settings.get("fail_on_split_leakage", False),
    )


@pytest.mark.parametrize("name", sorted(ZIPS))
def test_zip_through_extraction_and_gate(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    case = ZIPS[name]
    if "max_image_pixels" in case.settings:  # what the trainer's gate stage sets from the setting
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", case.settings["max_image_pixels"])
    (tmp_path / "zips").mkdir()
    archive = case.build(tmp_path / "zips")
    dest = tmp_path / "work" / "data"
    if case.refused:
        with pytest.raises(InvalidInputError) as refusal:
            _gate(case, archive, dest)
        assert case.refused in str(refusal.value)
        assert_plain_sentence(str(refusal.value), tmp_path)
        if refusal.value.step == "extract":
            assert not dest.exists()  # nothing half-written
        assert list(archive.parent.glob("*-inner.zip")) == []
        return
    layout = _gate(case, archive, dest)
    assert tuple(layout.classes) == case.classes
    written = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    planned = sorted(p.relative_to(dest).as_posix() for split in layout.samples.values() for p, _ in split)
    assert written == sorted(planned + [name for name, _ in layout.skipped if name.startswith("train/")])
    assert {p.split("/")[0] for p in written} <= {"train", "val", "test"}
    assert all(layout.counts[split][c] > 0 for split in ("train", "val", "test") for c in layout.classes)
    json.dumps(layout.checks())


def test_junk_and_other_files_are_never_written(tmp_path: Path) -> None:
    archive = ZIPS["aliases, wrapper, junk, mixed formats"].build(tmp_path)
    plan = extract_zip(archive, tmp_path / "out", **LIMITS)
    assert plan.root == "My Dataset/" and plan.split_folders == {
        "train": "Training",
        "val": "valid",
        "test": "Test",
    }
    written = [
        p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file()
    ]
    assert len(written) == 9 * 8
    assert not any("ipynb" in p or "DS_Store" in p or "Thumbs" in p or "README" in p for p in written)
    assert plan.ignored == {"outside_splits": 1, "system": 4}


def test_a_zip_inside_a_zip_is_unwrapped_once(tmp_path: Path) -> None:
    archive = ZIPS["zip inside a zip"].build(tmp_path)
    with open_dataset(archive, **LIMITS) as dataset_zip:
        assert dataset_zip.unwrapped == "dataset.zip"
        assert any(m.name == "train/cat/0.png" for m in dataset_zip.members)
        assert (tmp_path / "dataset-inner.zip").exists()
    assert not (tmp_path / "dataset-inner.zip").exists()


def test_cut_off_in_the_middle_says_how_much_arrived(tmp_path: Path) -> None:
    archive = ZIPS["cut off in the middle"].build(tmp_path)
    size = archive.stat().st_size
    with pytest.raises(InvalidInputError, match=rf"cut off: {size:,} of {size + 300:,} bytes"):
        extract_zip(archive, tmp_path / "out", **LIMITS)


def test_val_carved_out_of_train_is_stratified_and_seeded(tmp_path: Path) -> None:
    case = ZIPS["val carved out of train"]
    archive = case.build(tmp_path)
    first = _gate(case, archive, tmp_path / "a")
    assert first.counts == {
        "train": {"cat": 6, "dog": 6},
        "val": {"cat": 2, "dog": 2},
        "test": {"cat": 3, "dog": 3},
    }
    assert first.val_split == {
        "from": "train",
        "fraction": 0.25,
        "seed": 7,
        "images": 4,
        "images_per_class": {"cat": 2, "dog": 2},
    }
    again = _gate(case, archive, tmp_path / "b")
    names = [[p.name for p, _ in layout.samples["val"]] for layout in (first, again)]
    assert names[0] == names[1]  # the same seed carves the same split
    assert not set(first.samples["val"]) & set(first.samples["train"])


def test_leakage_is_reported_with_examples(tmp_path: Path) -> None:
    case = ZIPS["leakage warned"]
    layout = _gate(case, case.build(tmp_path), tmp_path / "out")
    assert layout.duplicates == {"count": 1, "examples": ["train/cat/0.png = test/cat/copy-of-0.png"]}
    [(level, message, _)] = layout.notes(None)
    assert level == "warning" and message.startswith("1 image(s) appear byte for byte in more than one split")


def test_unreadable_files_are_named(tmp_path: Path) -> None:
    case = ZIPS["a few unreadable images skipped"]
    layout = _gate(case, case.build(tmp_path), tmp_path / "out")
    assert [name for name, _ in layout.skipped] == ["train/cat/cut.jpg"]
    [(level, message, fields)] = layout.notes(None)
    assert level == "warning" and message.startswith("Skipped 1 unreadable image(s): train/cat/cut.jpg (")
    assert fields["skipped"][0]["path"] == "train/cat/cut.jpg"


def test_a_warning_names_twenty_then_counts(tmp_path: Path) -> None:
    bad = [Entry(f"train/cat/bad{i:02}.png", b"not a png") for i in range(25)]
    archive = write_zip(tmp_path / "d.zip", [*dataset(per_class=(40, 5, 5)), *bad])
    plan = extract_zip(archive, tmp_path / "out", **LIMITS)
    layout = inspect_dataset(tmp_path / "out", plan, max_bad_fraction=0.5)
    [(_, message, _)] = layout.notes(None)
    assert "train/cat/bad19.png" in message and "bad20" not in message and message.endswith(" and 5 more")


# -- end to end on the embedded path ------------------------------------------------------------------------
# Every accepted zip of the corpus (the rows of the issue that end `pending_evaluation`).
E2E_ACCEPTED = [name for name, case in ZIPS.items() if case.refused is None]


def _project(tmp_path: Path, records: RecordsStore, case: ZipCase) -> Any:
    (tmp_path / "zips").mkdir()
    return seed_project(records, str(case.build(tmp_path / "zips")), metadata={"seed": 3, **case.metadata})


@pytest.mark.slow
@pytest.mark.parametrize("name", E2E_ACCEPTED)
def test_end_to_end_accepted(
    tmp_path: Path, records: RecordsStore, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = ZIPS[name]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # the run sets it for the process
    settings = make_settings(tmp_path, **case.settings)
    project = _project(tmp_path, records, case)
    result = run(project.id, settings, records)
    assert result.succeeded, result.error
    stored = records.get_project(project.id)
    assert stored is not None and stored.status == "pending_evaluation"
    [model] = records.list_models(project.id)
    assert sorted(model.metadata["class_to_idx"]) == sorted(case.classes)
    checks = model.metadata["dataset_checks"]
    assert set(checks["split_folders"]) >= {"train", "test"}
    messages = [log.message for log in records.recent_logs(project.id)]
    assert any(m.startswith("Dataset layout: read ") for m in messages)
    if "val_fraction" in case.metadata:
        assert checks["val_split"]["images"] == 4
        assert any(m.startswith("No val/ folder: 4 training images") for m in messages)
    if name == "zip inside a zip":
        assert "The dataset zip holds only dataset.zip: unpacking that zip instead" in messages
    assert list(settings.work_dir.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(n for n, c in ZIPS.items() if c.refused))
def test_end_to_end_refused(
    tmp_path: Path, records: RecordsStore, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = ZIPS[name]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # the run sets it for the process
    settings = make_settings(tmp_path, **case.settings)
    project = _project(tmp_path, records, case)
    result = run(project.id, settings, records)
    assert result.exit_code == EXIT_INVALID_INPUT
    stored = records.get_project(project.id)
    assert stored is not None and stored.status == "failed"
    error = stored.metadata["error"]
    assert case.refused is not None and case.refused in error["message"]
    assert error["step"] == case.step
    assert_plain_sentence(error["message"], tmp_path, settings.work_dir)
    [logged] = [log for log in records.recent_logs(project.id) if log.log_level == "error"]
    assert case.refused in logged.message
    assert list(settings.work_dir.iterdir()) == []
