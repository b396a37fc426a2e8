"""The `training-agent` command as a user runs it: child processes, the embedded defaults."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from tests.conftest import seed_project
from tests.support.datasets import DatasetFactory
from training_agent.core.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INVALID_INPUT, EXIT_USAGE
from training_agent.core.records.sqlite import SQLiteRecords


def cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "TRAINING_AGENT_DATA_DIR": str(tmp_path / "data"),
        "TRAINING_AGENT_WORK_DIR": str(tmp_path / "work"),
        "TRAINING_AGENT_NUM_WORKERS": "0",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "training_agent", *args],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
def test_demo_runs_end_to_end_on_embedded_defaults(tmp_path: Path) -> None:
    done = cli(tmp_path, "demo", "--json", "--epochs", "2", "--image-size", "32", "--batch-size", "16")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["status"] == "pending_evaluation"
    model_path = Path(summary["model_url"].removeprefix("file://"))
    assert model_path.is_file() and model_path.parent == (tmp_path / "data" / "bucket" / "models").resolve()
    metrics = summary["metrics"]
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert 0 <= metrics["val_accuracy"] <= 1 and 0 <= metrics["test_accuracy"] <= 1
    assert metrics["pretrained"] is False  # no cached weights in the test's TORCH_HOME
    # Progress went to stderr while stdout stayed one JSON object.
    assert "epoch 1/2 step" in done.stderr
    assert list((tmp_path / "work").iterdir()) == []


@pytest.mark.slow
def test_demo_trains_with_two_processes(tmp_path: Path) -> None:
    """`demo --nproc-per-node 2`: torchrun starts two trainers (gloo on this CPU), each with half a batch."""
    done = cli(
        tmp_path,
        *("demo", "--json", "--nproc-per-node", "2", "--epochs", "2", "--image-size", "32"),
        env={"OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads(done.stdout)["metrics"]
    assert (metrics["world_size"], metrics["nodes"], metrics["global_batch_size"]) == (2, 1, 64)
    assert list((tmp_path / "work").iterdir()) == []


def test_demo_refuses_nproc_with_another_server(tmp_path: Path) -> None:
    done = cli(tmp_path, "demo", "--nproc-per-node", "2", "--api-url", "http://127.0.0.1:9")
    assert done.returncode == 2 and "TRAINING_AGENT_LOCAL_NPROC_PER_NODE" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_demo_takes_a_dataset_folder(tmp_path: Path, datasets: DatasetFactory) -> None:
    folder = tmp_path / "mydata"
    with zipfile.ZipFile(datasets.shapes()) as zf:
        zf.extractall(folder)
    done = cli(
        tmp_path,
        "demo",
        "--json",
        "--dataset",
        str(folder),
        "--epochs",
        "1",
        "--image-size",
        "16",
        "--no-pretrained",
        "--option",
        "seed=7",
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["status"] == "pending_evaluation"
    assert summary["metrics"]["num_classes"] == 2
    # An ordinary project: what the demo and the user set, every other option the project default.
    assert summary["options"] == {"epochs": 1, "image_size": 16, "pretrained": False, "seed": 7}
    for picture in ("curves_url", "confusion_url"):
        if summary[picture]:  # beside the model, when the trainer draws them
            assert Path(summary[picture].removeprefix("file://")).is_file()


def test_demo_reports_a_failed_run(tmp_path: Path, datasets: DatasetFactory) -> None:
    done = cli(tmp_path, "demo", "--json", "--dataset", str(datasets.not_a_zip()), "--epochs", "1")
    assert done.returncode == EXIT_INVALID_INPUT
    summary = json.loads(done.stdout)
    assert summary["status"] == "failed" and summary["model_url"] is None
    # Refused by the start's pre-flight, before any trainer was started.
    assert summary["error"]["step"] == "preflight" and "not a zip archive" in summary["error"]["message"]


def test_train_command(tmp_path: Path, datasets: DatasetFactory) -> None:
    records = SQLiteRecords(tmp_path / "data" / "records.db")
    project = seed_project(records, str(datasets.shapes()))
    done = cli(tmp_path, "train", "--project-id", str(project.id), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["succeeded"] is True and result["status"] == "pending_evaluation"
    assert records.get_project(project.id).status == "pending_evaluation"  # type: ignore[union-attr]


@pytest.mark.parametrize("status", ["missing", "pending_evaluation"])
def test_train_refuses_a_project_not_its_own_before_importing_torch(tmp_path: Path, status: str) -> None:
    """A lone trainer reads the project first: a refusal takes a second, reported as the run reports it
    (exit code, one line, an agent_logs row), and the project is left as it was."""
    records = SQLiteRecords(tmp_path / "data" / "records.db")
    project = seed_project(records, "gs://bucket/d.zip", status="pending_evaluation")
    project_id = "00000000-0000-0000-0000-000000000000" if status == "missing" else str(project.id)
    probe = (
        "import sys; from training_agent.cli import main; code = main(sys.argv[1:]); "
        "print('torch imported' if 'torch' in sys.modules else 'no torch', file=sys.stderr); sys.exit(code)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, "train", "--project-id", project_id],
        cwd=tmp_path,
        env={**os.environ, "TRAINING_AGENT_DATA_DIR": str(tmp_path / "data")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == EXIT_INVALID_INPUT, done.stderr
    message = f"No project with id {project_id}" if status == "missing" else "not 'pending_training'"
    assert message in done.stderr and "no torch" in done.stderr
    assert records.get_project(project.id).status == "pending_evaluation"  # type: ignore[union-attr]
    if status != "missing":  # an unknown id's row names no project (agent_logs.project_id is a reference)
        [row] = records.recent_logs(project.id)
        assert row.log_level == "error" and row.message.startswith("Training not started: Project")


def test_bad_configuration_stops_with_one_message(tmp_path: Path) -> None:
    done = cli(
        tmp_path,
        "train",
        "--project-id",
        "00000000-0000-0000-0000-000000000000",
        env={"TRAINING_AGENT_MAX_BAD_IMAGE_FRACTION": "2"},
    )
    assert done.returncode == EXIT_USAGE
    assert done.stderr.strip() == (
        "training-agent: Invalid configuration: TRAINING_AGENT_MAX_BAD_IMAGE_FRACTION: "
        "Input should be less than or equal to 1"
    )


def test_bad_arguments(tmp_path: Path) -> None:
    done = cli(tmp_path, "train", "--project-id", "not-a-uuid")
    assert done.returncode == EXIT_USAGE and "invalid UUID value" in done.stderr
    done = cli(tmp_path, "demo", "--epochs", "0")
    assert done.returncode == EXIT_USAGE and "must be a positive integer" in done.stderr
    done = cli(tmp_path, "demo", "--option", "epochs")
    assert done.returncode == EXIT_USAGE and "argument --option: expected KEY=VALUE" in done.stderr


def test_fetch_weights_reports_the_cached_file_and_refuses_unknown_models(tmp_path: Path) -> None:
    # What the trainer image's PRETRAINED_MODELS build argument runs. A file already in the hub cache is
    # used as it is (torch only checks the hash of what it downloads), so this needs no internet.
    import torch
    from torchvision import models

    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    cached = checkpoints / Path(models.ResNet18_Weights.DEFAULT.url).name
    torch.save(models.resnet18().state_dict(), cached)

    done = cli(tmp_path, "fetch-weights", "resnet18", env={"TORCH_HOME": str(tmp_path / "torch")})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"resnet18: {cached}"

    done = cli(tmp_path, "fetch-weights", "resnet181", env={"TORCH_HOME": str(tmp_path / "torch")})
    assert done.returncode == EXIT_INVALID_INPUT
    assert "Unknown model 'resnet181'" in done.stderr and "resnet18" in done.stderr


def test_cluster_processes_warn_about_embedded_stores(tmp_path: Path) -> None:
    from tests.conftest import make_settings
    from training_agent.cli import embedded_stores_warning

    warning = embedded_stores_warning(make_settings(tmp_path))
    assert warning is not None and warning.startswith("SUPABASE_URL and GCP_BUCKET_NAME not set")
    shared = make_settings(
        tmp_path, supabase_url="https://x.supabase.co", supabase_key="k", gcp_bucket_name="models-bucket"
    )
    assert embedded_stores_warning(shared) is None


# -- user errors: one line on stderr, the README's exit code, never a traceback ---------------------------


def assert_one_line(stderr: str, start: str) -> None:
    assert "Traceback" not in stderr
    assert stderr.count("\n") == 1 and stderr.startswith(f"training-agent: {start}"), stderr


def test_demo_refuses_an_unknown_model_up_front(tmp_path: Path) -> None:
    done = cli(tmp_path, "demo", "--model", "resnet181")
    assert done.returncode == EXIT_INVALID_INPUT
    assert_one_line(done.stderr, "--model resnet181 is not a torchvision classification model; did you mean")
    assert not (tmp_path / "data").exists()  # refused before a project (or its records file) was made


def test_demo_refuses_a_missing_dataset_up_front(tmp_path: Path) -> None:
    done = cli(tmp_path, "demo", "--dataset", "missing.zip")
    assert done.returncode == EXIT_INVALID_INPUT
    assert_one_line(done.stderr, "--dataset missing.zip: no such file or folder")


def test_serve_on_a_busy_port(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = cli(tmp_path, "serve", "--port", str(port))
    assert done.returncode == EXIT_USAGE
    assert_one_line(done.stderr, f"Cannot listen on 127.0.0.1:{port}: Address already in use")
    assert not (tmp_path / "data").exists()  # refused before the app started (and settled any runs)


def test_serve_with_the_kubernetes_executor_and_no_kubeconfig(tmp_path: Path) -> None:
    env = {
        "TRAINING_AGENT_EXECUTOR": "kubernetes",
        "KUBECONFIG": str(tmp_path / "missing-kubeconfig"),
        "HOME": str(tmp_path),
        "KUBERNETES_SERVICE_HOST": "",  # as outside a pod, even where the tests run in one
    }
    done = cli(tmp_path, "serve", "--port", "0", env=env)
    assert done.returncode == EXIT_USAGE
    assert_one_line(done.stderr, "Cannot configure the Kubernetes client")


def test_serve_refuses_an_empty_api_key(tmp_path: Path) -> None:
    done = cli(tmp_path, "serve", "--port", "0", env={"MCP_API_KEY": " "})
    assert done.returncode == EXIT_USAGE
    assert_one_line(done.stderr, "Invalid configuration: MCP_API_KEY: is set but empty")


def test_serve_reports_a_failed_start_up_in_one_line(tmp_path: Path) -> None:
    # The records file cannot be created: the app's start-up fails after uvicorn started.
    done = cli(tmp_path, "serve", "--port", "0", env={"TRAINING_AGENT_DATABASE_PATH": "/proc/none/r.db"})
    assert done.returncode == EXIT_FAILED
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].startswith("training-agent: Cannot open the SQLite records file")


def test_serve_stopped_by_sigterm_exits_0(tmp_path: Path) -> None:
    server = subprocess.Popen(
        [sys.executable, "-m", "training_agent", "serve", "--port", "0"],
        cwd=tmp_path,
        env={**os.environ, "TRAINING_AGENT_DATA_DIR": str(tmp_path / "data")},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stderr is not None
        seen = []
        for line in server.stderr:  # ends at EOF if the server exits; the test's timeout bounds a hang
            seen.append(line)
            if "Application startup complete" in line:
                break
        assert "Application startup complete" in seen[-1], "".join(seen)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.returncode == 0


def _main_raising(
    tmp_path: Path, error: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`training-agent fetch-weights x` whose command raises `error` (a Python expression)."""
    code = (
        "import sys\nfrom training_agent import cli\n"
        f"def boom(args, settings):\n    raise {error}\n"
        "cli.cmd_fetch_weights = boom\nsys.exit(cli.main(['fetch-weights', 'x']))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**os.environ, "TRAINING_AGENT_DATA_DIR": str(tmp_path / "data"), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_an_unexpected_error_is_one_line_with_the_traceback_only_at_debug(tmp_path: Path) -> None:
    done = _main_raising(tmp_path, "RuntimeError('disk on fire\\nsecond line')")
    assert done.returncode == EXIT_FAILED
    assert done.stderr == (
        "training-agent: RuntimeError: disk on fire second line "
        "(run with LOG_LEVEL=DEBUG for the traceback)\n"
    )
    debug = _main_raising(tmp_path, "RuntimeError('disk on fire')", env={"LOG_LEVEL": "DEBUG"})
    assert debug.returncode == EXIT_FAILED
    assert "Traceback" in debug.stderr and ", in boom" in debug.stderr
    assert debug.stderr.endswith("training-agent: RuntimeError: disk on fire (traceback above)\n")


def test_ctrl_c_in_the_demo_is_one_line_and_exit_130(tmp_path: Path) -> None:
    environment = {
        **os.environ,
        "TRAINING_AGENT_DATA_DIR": str(tmp_path / "data"),
        "TRAINING_AGENT_WORK_DIR": str(tmp_path / "work"),
        "TRAINING_AGENT_NUM_WORKERS": "0",
    }
    demo = subprocess.Popen(
        [sys.executable, "-m", "training_agent", "demo", "--epochs", "50", "--image-size", "16"],
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell starts background jobs with SIGINT ignored, and a child inherits that: restore Ctrl-C.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    )
    try:
        assert demo.stderr is not None
        deadline = time.monotonic() + 240
        seen = []
        while time.monotonic() < deadline:  # the demo's stderr ends (EOF) if it exits early
            line = demo.stderr.readline()
            seen.append(line)
            if not line or "training_agent.demo: Started" in line:
                break
        assert "training_agent.demo: Started" in seen[-1], "".join(seen)
        demo.send_signal(signal.SIGINT)
        _, rest = demo.communicate(timeout=120)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == EXIT_INTERRUPTED
    assert "Traceback" not in rest
    assert rest.splitlines()[-1] == "training-agent: Interrupted"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_lone_trainer_without_the_gpu_it_was_told_to_use_fails_its_project(
    tmp_path: Path, datasets: DatasetFactory
) -> None:
    """The missing GPU is found inside the run, so the project records why (not only the terminal)."""
    records = SQLiteRecords(tmp_path / "data" / "records.db")
    project = seed_project(records, str(datasets.shapes()))
    done = cli(tmp_path, "train", "--project-id", str(project.id), env={"TRAINING_AGENT_DEVICE": "cuda"})
    assert done.returncode != 0
    failed = records.get_project(project.id)
    assert failed is not None and failed.status == "failed"
    assert "no CUDA device is available" in failed.metadata["error"]["message"]
