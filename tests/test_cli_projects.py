"""`training-agent projects create | list | show | logs` as a user runs them: child processes, on the embedded
store and local bucket, on Supabase (supabase-py → PostgREST stand-in → real PostgreSQL) and with a GCS
bucket (gcp-storage-emulator)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage as gcs

from tests.conftest import FAST_METADATA
from tests.support.datasets import DatasetFactory
from tests.support.services import Supabase
from training_agent.core.errors import EXIT_USAGE
from training_agent.core.records import RecordsStore
from training_agent.core.records.sqlite import SQLiteRecords
from training_agent.core.records.supabase import SupabaseRecords


def cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "training_agent", *args],
        cwd=tmp_path,
        env=cli_env(tmp_path, env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def cli_env(tmp_path: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {
        **os.environ,
        "TRAINING_AGENT_DATA_DIR": str(tmp_path / "data"),
        "TRAINING_AGENT_WORK_DIR": str(tmp_path / "work"),
        **(extra or {}),
    }


def embedded(tmp_path: Path) -> SQLiteRecords:
    return SQLiteRecords(tmp_path / "data" / "records.db")


def assert_refused(done: subprocess.CompletedProcess[str], message: str) -> None:
    assert done.returncode == EXIT_USAGE, done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("training-agent: ") and message in lines[0], lines[0]


def test_create_uploads_the_zip_and_records_project_and_dataset(
    tmp_path: Path, datasets: DatasetFactory
) -> None:
    zip_path = datasets.shapes()
    done = cli(
        tmp_path,
        "projects",
        "create",
        "--name",
        "flowers",
        "--dataset",
        str(zip_path),
        "--option",
        "epochs=2",
        "--option",
        "recipe=auto",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    created = json.loads(done.stdout)
    records = embedded(tmp_path)
    project = records.get_project(UUID(created["project_id"]))
    assert project is not None and project.name == "flowers" and project.status == "pending_training"
    assert project.metadata == {"epochs": 2, "recipe": "auto"} == created["metadata"]
    dataset = records.latest_dataset(project.id)
    assert dataset is not None and dataset.gcs_url == created["dataset_url"]
    # In the bucket under datasets/<project id>/, a copy of the file, owned by the project.
    bucket = (tmp_path / "data" / "bucket").resolve()
    uploaded = bucket / "datasets" / str(project.id) / zip_path.name
    assert dataset.gcs_url == uploaded.as_uri() and dataset.name == zip_path.name
    assert uploaded.read_bytes() == zip_path.read_bytes()

    plain = cli(
        tmp_path, "projects", "create", "--name", "n2", "--dataset", str(zip_path), "--metadata", "{}"
    )
    assert plain.returncode == 0, plain.stderr
    assert records.get_project(UUID(plain.stdout.strip())) is not None  # the id alone, for $(...)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "missing.zip"], "--dataset missing.zip: no such file"),
        (["--dataset", "."], "not a file; zip the dataset folder first"),
        (["--dataset", "NOT_A_ZIP"], "not a zip archive"),
        (["--metadata", "{epochs: 3}"], "--metadata is not valid JSON"),
        (["--metadata", "[1, 2]"], "--metadata must be a JSON object, got list"),
        (["--metadata", '{"epochs": 0}'], "metadata.epochs input should be greater than 0"),
        (["--option", "epoch=3"], "--option epoch: not a training option; did you mean epochs?"),
        (["--option", "preferred_model=resnet19"], "Unknown model 'resnet19'"),
        (["--dataset", "gs://Bad_Bucket/x.zip"], "is not a valid bucket name"),
        (["--name", "  "], "--name is empty"),
    ],
)
def test_create_refuses_bad_input_and_creates_nothing(
    tmp_path: Path, datasets: DatasetFactory, args: list[str], message: str
) -> None:
    values = {"--name": "p", "--dataset": str(datasets.shapes())}
    flags = dict(zip(args[::2], args[1::2], strict=True))
    if flags.get("--dataset") == "NOT_A_ZIP":
        flags["--dataset"] = str(datasets.not_a_zip())
    command = [item for flag, value in {**values, **flags}.items() for item in (flag, value)]
    assert_refused(cli(tmp_path, "projects", "create", *command), message)
    assert embedded(tmp_path).list_projects(limit=10) == []
    assert not (tmp_path / "data" / "bucket" / "datasets").exists()


def test_a_failed_upload_leaves_no_project(tmp_path: Path, datasets: DatasetFactory) -> None:
    # A file where the bucket's datasets/ folder must be: the upload fails after the project row exists.
    (tmp_path / "data" / "bucket").mkdir(parents=True)
    (tmp_path / "data" / "bucket" / "datasets").write_text("in the way")
    done = cli(tmp_path, "projects", "create", "--name", "p", "--dataset", str(datasets.shapes()))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert embedded(tmp_path).list_projects(limit=10) == []


def test_list_show_and_logs(tmp_path: Path, datasets: DatasetFactory) -> None:
    records = embedded(tmp_path)
    ids = []
    for name in ("first", "second"):
        done = cli(tmp_path, "projects", "create", "--name", name, "--dataset", str(datasets.shapes()))
        assert done.returncode == 0, done.stderr
        ids.append(done.stdout.strip())
    records.transition_project(UUID(ids[0]), from_status="pending_training", to_status="training")
    for level, message in [("info", "Training initiated"), ("debug", "noise"), ("warning", "Slow disk")]:
        records.insert_log(UUID(ids[0]), "training_agent", level, message)

    listed = cli(tmp_path, "projects", "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "UPDATED", "NAME"]
    assert [line.split()[0] for line in lines[1:]] == [ids[0], ids[1]]  # most recently updated first
    only = json.loads(cli(tmp_path, "projects", "list", "--status", "training", "--json").stdout)
    assert [p["id"] for p in only["projects"]] == [ids[0]]
    limited = json.loads(cli(tmp_path, "projects", "list", "--limit", "1", "--json").stdout)
    assert len(limited["projects"]) == 1

    shown = cli(tmp_path, "projects", "show", ids[0])
    assert shown.returncode == 0, shown.stderr
    assert "status    training" in shown.stdout and f"datasets/{ids[0]}/" in shown.stdout
    assert "model     -" in shown.stdout and "Slow disk" in shown.stdout
    as_json = json.loads(cli(tmp_path, "projects", "show", ids[0], "--json").stdout)
    assert as_json["project"]["id"] == ids[0] and as_json["model"] is None
    assert as_json["dataset"]["gcs_url"].endswith(".zip")
    assert [log["message"] for log in as_json["logs"]] == ["Training initiated", "noise", "Slow disk"]

    logs = cli(tmp_path, "projects", "logs", ids[0])
    assert [line.split(None, 3)[3] for line in logs.stdout.splitlines()] == [
        "Training initiated",
        "noise",
        "Slow disk",
    ]
    warnings = cli(tmp_path, "projects", "logs", ids[0], "--level", "info", "--tail", "1")
    assert warnings.stdout.splitlines()[0].endswith("WARNING  Slow disk")
    assert len(warnings.stdout.splitlines()) == 1


@pytest.mark.parametrize("action", ["show", "logs"])
def test_unknown_project_id(tmp_path: Path, action: str) -> None:
    missing = "00000000-0000-0000-0000-000000000000"
    assert_refused(cli(tmp_path, "projects", action, missing), f"No project with id {missing}")
    bad = cli(tmp_path, "projects", action, "not-a-uuid")
    assert bad.returncode == EXIT_USAGE and "invalid UUID value" in bad.stderr


def test_follow_ends_cleanly_on_ctrl_c(tmp_path: Path, datasets: DatasetFactory) -> None:
    created = cli(tmp_path, "projects", "create", "--name", "p", "--dataset", str(datasets.shapes()))
    project_id = created.stdout.strip()
    records = embedded(tmp_path)
    records.insert_log(UUID(project_id), "training_agent", "info", "first row")
    follow = subprocess.Popen(
        [sys.executable, "-m", "training_agent", "projects", "logs", project_id, "--follow"],
        cwd=tmp_path,
        env=cli_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell starts background jobs with SIGINT ignored, and a child inherits that: restore Ctrl-C.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    )
    try:
        assert "first row" in _read_line(follow, timeout_s=60)
        # A row written while it follows is printed too; the project is still pending, so it goes on.
        records.insert_log(UUID(project_id), "training_agent", "warning", "second row")
        assert "second row" in _read_line(follow, timeout_s=30)
        follow.send_signal(signal.SIGINT)
        assert follow.wait(timeout=30) == 0
        assert "Traceback" not in (follow.stderr.read() if follow.stderr else "")
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()


def _read_line(process: subprocess.Popen[str], *, timeout_s: float) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout_s)
    assert ready, f"no output within {timeout_s} s"
    return process.stdout.readline()


@pytest.mark.integration
def test_on_supabase(supabase: Supabase, tmp_path: Path, datasets: DatasetFactory) -> None:
    env = {"SUPABASE_URL": supabase.url, "SUPABASE_KEY": supabase.key}
    records: RecordsStore = SupabaseRecords(supabase.url, supabase.key)
    done = cli(
        tmp_path,
        "projects",
        "create",
        "--name",
        "p",
        "--dataset",
        str(datasets.shapes()),
        "--metadata",
        json.dumps(FAST_METADATA),
        "--json",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    project_id = json.loads(done.stdout)["project_id"]
    project = records.get_project(UUID(project_id))
    assert project is not None and project.status == "pending_training" and project.metadata == FAST_METADATA
    assert records.latest_dataset(project.id) is not None
    records.insert_log(project.id, "training_agent", "error", "It broke")
    listed = json.loads(cli(tmp_path, "projects", "list", "--json", env=env).stdout)
    assert [p["id"] for p in listed["projects"]] == [project_id]
    shown = json.loads(cli(tmp_path, "projects", "show", project_id, "--json", env=env).stdout)
    assert shown["dataset"]["project_id"] == project_id
    logs = cli(tmp_path, "projects", "logs", project_id, "--level", "error", env=env)
    assert logs.stdout.strip().endswith("ERROR    It broke")
    # Refused input, and a failure after the project row was written: no project is left behind.
    assert_refused(
        cli(tmp_path, "projects", "create", "--name", "q", "--dataset", "nope.zip", env=env), "no such file"
    )
    blocked = tmp_path / "blocked-bucket"
    blocked.mkdir()
    (blocked / "datasets").write_text("in the way")
    env["TRAINING_AGENT_LOCAL_BUCKET_DIR"] = str(blocked)
    failed = cli(tmp_path, "projects", "create", "--name", "q", "--dataset", str(datasets.shapes()), env=env)
    assert failed.returncode == 1, failed.stderr
    assert [p.id for p in records.list_projects()] == [project.id]


BUCKET = "projects-cli-bucket"


@pytest.fixture
def bucket(gcs_emulator: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    client = gcs.Client(project="test", credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
    existing = client.lookup_bucket(BUCKET)
    if existing is not None:
        for blob in client.list_blobs(BUCKET):
            blob.delete()
        return existing
    return client.create_bucket(BUCKET)


@pytest.mark.integration
def test_on_a_gcs_bucket(bucket: Any, gcs_emulator: str, tmp_path: Path, datasets: DatasetFactory) -> None:
    env = {"GCP_BUCKET_NAME": BUCKET, "STORAGE_EMULATOR_HOST": gcs_emulator}
    zip_path = datasets.shapes()
    done = cli(tmp_path, "projects", "create", "--name", "p", "--dataset", str(zip_path), "--json", env=env)
    assert done.returncode == 0, done.stderr
    created = json.loads(done.stdout)
    uploaded = f"gs://{BUCKET}/datasets/{created['project_id']}/{zip_path.name}"
    assert created["dataset_url"] == uploaded
    assert bucket.blob(uploaded.removeprefix(f"gs://{BUCKET}/")).download_as_bytes() == zip_path.read_bytes()

    # A gs:// URL is recorded as given once it is known to exist; a missing object is refused.
    again = cli(tmp_path, "projects", "create", "--name", "q", "--dataset", uploaded, "--json", env=env)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["dataset_url"] == uploaded
    missing = f"gs://{BUCKET}/datasets/none.zip"
    assert_refused(
        cli(tmp_path, "projects", "create", "--name", "r", "--dataset", missing, env=env),
        f"--dataset {missing}: no such object in the bucket",
    )
    assert len(embedded(tmp_path).list_projects()) == 2


def test_help_lists_every_action(tmp_path: Path) -> None:
    done = cli(tmp_path, "projects", "--help")
    assert done.returncode == 0
    for action in ("create", "list", "show", "logs"):
        assert action in done.stdout


def test_create_needs_no_torch(tmp_path: Path, datasets: DatasetFactory) -> None:
    """The control-plane image has no torch: creating a project (options checked) must not import it."""
    script = (
        "import sys; from training_agent.cli import main; "
        f"rc = main(['projects', 'create', '--name', 'p', '--dataset', {str(datasets.shapes())!r}, "
        "'--option', 'epochs=3']); print(rc, 'torch' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.stdout.splitlines()[-1] == "0 False", done.stderr
