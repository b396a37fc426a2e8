"""GET /agents/training/status/{project_id}."""

from __future__ import annotations

from collections.abc import Callable
from uuid import uuid4

from fastapi.testclient import TestClient

from tests.api.conftest import FakeTrainers, wait_for_status, wait_until
from tests.conftest import seed_project
from tests.support.datasets import DatasetFactory
from training_agent.core.lease import run_of
from training_agent.core.records import NewModel, Project, RecordsStore


def status_of(client: TestClient, project_id: object, **params: int | str) -> dict:  # type: ignore[type-arg]
    response = client.get(f"/agents/training/status/{project_id}", params=params)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_unknown_project_is_404(client: TestClient) -> None:
    missing = uuid4()
    response = client.get(f"/agents/training/status/{missing}")
    assert response.status_code == 404 and response.json() == {"detail": f"Project {missing} not found"}


def test_malformed_id_is_422(client: TestClient) -> None:
    assert client.get("/agents/training/status/nope").status_code == 422


def test_not_started_project(client: TestClient, api_records: RecordsStore) -> None:
    project = seed_project(api_records, "gs://bucket/d.zip", metadata={"epochs": 7})
    body = status_of(client, project.id)
    assert body["status"] == "pending_training" and body["run"] is None
    assert body["progress"] == {
        "epoch": 0,
        "total_epochs": 7,
        "train_loss": None,
        "val_loss": None,
        "val_accuracy": None,
        "images_per_s": None,
        "eta_seconds": None,
        "live": None,
    }
    assert body["model_url"] is None and body["error"] is None and body["logs"] == []
    assert body["curves_url"] is None and body["confusion_url"] is None


def test_finished_run_reports_progress_model_and_logs(
    client: TestClient, api_records: RecordsStore, ready_project: Callable[..., Project]
) -> None:
    project = ready_project(epochs=2)
    client.post("/agents/training/start", json={"project_id": str(project.id)})
    wait_for_status(api_records, project.id, {"pending_evaluation", "failed"})
    # The trainer may still be exiting (exit code None): the records are ahead and the phase follows them.
    assert status_of(client, project.id, limit=3)["run"]["phase"] == "Succeeded"
    assert client.app.state.executor.wait_settled(30)  # type: ignore[attr-defined]
    body = status_of(client, project.id, limit=3)  # the closing row comes after the status moves
    assert body["status"] == "pending_evaluation"
    assert body["run"]["phase"] == "Succeeded" and body["run"]["exit_code"] == 0
    assert body["progress"]["epoch"] == 2 and body["progress"]["total_epochs"] == 2
    assert body["progress"]["eta_seconds"] == 0
    assert 0 <= body["progress"]["val_accuracy"] <= 1 and body["progress"]["images_per_s"] > 0
    assert body["model_url"].endswith("/models/Demo_project_model.pth")
    assert body["logs"][0]["message"].startswith("Training complete for project Demo project")
    assert len(body["logs"]) == 3
    assert len(status_of(client, project.id, limit=0)["logs"]) == 0


def test_failed_run_reports_the_error(
    client: TestClient, api_records: RecordsStore, datasets: DatasetFactory
) -> None:
    project = seed_project(api_records, str(datasets.not_a_zip()))
    client.post("/agents/training/start", json={"project_id": str(project.id)})
    wait_for_status(api_records, project.id, {"failed", "pending_evaluation"})
    body = status_of(client, project.id)
    assert body["status"] == "failed"
    assert body["run"]["phase"] == "Failed"
    assert body["error"]["step"] == "extract" and "not a zip archive" in body["error"]["message"]


def test_run_known_only_from_records(client: TestClient, api_records: RecordsStore) -> None:
    """A run this server did not start (another replica, before a restart) is described from the records."""
    project = seed_project(
        api_records,
        "gs://bucket/d.zip",
        status="failed",
        metadata={"training_run": {"name": "tr-x", "executor": "kubernetes"}},
    )
    run = status_of(client, project.id)["run"]
    assert run["name"] == "tr-x" and run["executor"] == "kubernetes" and run["phase"] == "Failed"


def test_cancelled_run_known_only_from_records(client: TestClient, api_records: RecordsStore) -> None:
    project = seed_project(
        api_records,
        "gs://bucket/d.zip",
        status="failed",
        metadata={
            "training_run": {"name": "tr-x", "executor": "local"},
            "error": {"message": "Cancelled by request", "type": "Cancelled"},
        },
    )
    assert status_of(client, project.id)["run"]["phase"] == "Cancelled"


def test_accepted_run_has_its_identity(
    client: TestClient, api_records: RecordsStore, fake_trainers: FakeTrainers
) -> None:
    """The claim writes the run record; the local executor adds the trainer's pid without losing it."""
    project = seed_project(api_records, "gs://bucket/d.zip")
    client.post("/agents/training/start", json={"project_id": str(project.id)})
    wait_until(lambda: "pid" in run_of(api_records.get_project(project.id)), "pid recorded")  # type: ignore[arg-type]
    run = run_of(api_records.get_project(project.id))  # type: ignore[arg-type]
    assert run["name"] == f"tr-{project.id}" and run["executor"] == "local"
    assert len(run["run_id"]) == 32 and run["accepted_at"] and run["started_at"]
    assert run["pid"] == fake_trainers.started[0].pid and run["host"]
    initiated = [row for row in api_records.recent_logs(project.id) if row.message == "Training initiated"]
    assert initiated[0].metadata["run_id"] == run["run_id"]


def test_limit_is_bounded(client: TestClient, api_records: RecordsStore) -> None:
    project = seed_project(api_records, "gs://bucket/d.zip")
    assert client.get(f"/agents/training/status/{project.id}", params={"limit": 501}).status_code == 422
    assert client.get(f"/agents/training/status/{project.id}", params={"limit": -1}).status_code == 422


def test_recorded_model_reports_its_pictures(client: TestClient, api_records: RecordsStore) -> None:
    """The curves and confusion-matrix pictures beside the model come from the models row's metadata."""
    project = seed_project(api_records, "gs://bucket/d.zip", status="pending_evaluation")
    model_url = "gs://bucket/models/Demo_project_model.pth"
    api_records.insert_model(
        NewModel(
            project_id=project.id,
            name="Demo_project_model",
            gcs_url=model_url,
            metadata={
                "curves_url": model_url.replace(".pth", "_curves.png"),
                "confusion_url": model_url.replace(".pth", "_confusion.png"),
            },
        )
    )
    body = status_of(client, project.id)
    assert body["model_url"] == model_url
    assert body["curves_url"] == "gs://bucket/models/Demo_project_model_curves.png"
    assert body["confusion_url"] == "gs://bucket/models/Demo_project_model_confusion.png"


def test_a_model_recorded_without_pictures_reports_none(
    client: TestClient, api_records: RecordsStore
) -> None:
    """Models recorded before the pictures existed (or whose metadata holds something else there)."""
    project = seed_project(api_records, "gs://bucket/d.zip", status="pending_evaluation")
    api_records.insert_model(
        NewModel(
            project_id=project.id,
            name="Demo_project_model",
            gcs_url="gs://bucket/models/Demo_project_model.pth",
            metadata={"confusion_url": 3},
        )
    )
    body = status_of(client, project.id)
    assert body["model_url"] == "gs://bucket/models/Demo_project_model.pth"
    assert body["curves_url"] is None and body["confusion_url"] is None
