"""The records contract, run against both stores: embedded SQLite, and Supabase (supabase-py → PostgREST
protocol → real PostgreSQL with the shipped migration)."""

from __future__ import annotations

import threading
from pathlib import Path
from uuid import uuid4

import pytest

from tests.support.services import Supabase
from training_agent.core.errors import RecordsError
from training_agent.core.records import NewModel, RecordsStore
from training_agent.core.records.sqlite import SQLiteRecords
from training_agent.core.records.supabase import SupabaseRecords


@pytest.fixture(params=["sqlite", pytest.param("supabase", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> RecordsStore:
    if request.param == "sqlite":
        return SQLiteRecords(tmp_path / "records.db")
    supabase: Supabase = request.getfixturevalue("supabase")
    return SupabaseRecords(supabase.url, supabase.key)


def test_project_round_trip(store: RecordsStore) -> None:
    project = store.create_project(
        "p", status="pending_training", metadata={"epochs": 3, "nested": {"a": [1]}}
    )
    again = store.get_project(project.id)
    assert again is not None
    assert again.name == "p" and again.status == "pending_training"
    assert again.metadata == {"epochs": 3, "nested": {"a": [1]}}
    assert again.created_at is not None and again.updated_at is not None
    assert store.get_project(uuid4()) is None


def test_projects_in_status(store: RecordsStore) -> None:
    first = store.create_project("a", status="training", metadata={})
    store.create_project("b", status="pending_training", metadata={})
    second = store.create_project("c", status="training", metadata={})
    assert [p.id for p in store.projects_in_status("training")] == [first.id, second.id]
    assert store.projects_in_status("failed") == []


def test_latest_dataset(store: RecordsStore) -> None:
    project = store.create_project("p", status="pending_training", metadata={})
    assert store.latest_dataset(project.id) is None
    store.create_dataset(project.id, gcs_url="gs://b/old.zip")
    store.create_dataset(project.id, gcs_url="gs://b/new.zip")
    latest = store.latest_dataset(project.id)
    assert latest is not None and latest.gcs_url == "gs://b/new.zip"


def test_transition_is_compare_and_set(store: RecordsStore) -> None:
    project = store.create_project("p", status="pending_training", metadata={"keep": 1})
    moved = store.transition_project(project.id, from_status="pending_training", to_status="training")
    assert moved is not None and moved.status == "training"
    assert (
        moved.updated_at is not None
        and project.updated_at is not None
        and moved.updated_at >= project.updated_at
    )
    assert store.transition_project(project.id, from_status="pending_training", to_status="training") is None
    failed = store.transition_project(
        project.id, from_status="training", to_status="failed", metadata_patch={"error": {"message": "x"}}
    )
    assert failed is not None and failed.metadata == {"keep": 1, "error": {"message": "x"}}
    assert store.transition_project(uuid4(), from_status="training", to_status="failed") is None


def test_concurrent_claims_have_one_winner(store: RecordsStore) -> None:
    project = store.create_project("p", status="pending_training", metadata={})
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def claim() -> None:
        barrier.wait()
        results.append(
            store.transition_project(project.id, from_status="pending_training", to_status="training")
            is not None
        )

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results) == [False] * 7 + [True]


def test_models_and_logs(store: RecordsStore) -> None:
    project = store.create_project("p", status="training", metadata={})
    row = store.insert_model(
        NewModel(
            project_id=project.id, name="p_model", gcs_url="gs://b/models/p_model.pth", metadata={"acc": 0.5}
        )
    )
    assert row.framework == "pytorch" and row.metadata == {"acc": 0.5}
    assert [m.id for m in store.list_models(project.id)] == [row.id]
    for i in range(5):
        store.insert_log(project.id, "training_agent", "info", f"step {i}", {"i": i})
    store.insert_log(None, "training_agent", "error", "no project", {"project_id": "x"})
    logs = store.recent_logs(project.id, limit=3)
    assert [log.message for log in logs] == ["step 4", "step 3", "step 2"]
    assert logs[0].metadata == {"i": 4} and logs[0].agent_name == "training_agent"


def test_ping(store: RecordsStore) -> None:
    store.ping()


@pytest.mark.integration
def test_supabase_errors_are_records_errors(supabase: Supabase) -> None:
    wrong_key = SupabaseRecords(supabase.url, "wrong.key.value")
    with pytest.raises(RecordsError, match="Supabase refused"):
        wrong_key.ping()
    store = SupabaseRecords(supabase.url, supabase.key)
    with pytest.raises(RecordsError, match="refused to write to agent_logs"):
        store.insert_log(uuid4(), "training_agent", "info", "unknown project violates the foreign key")


@pytest.mark.integration
def test_supabase_unreachable(supabase: Supabase) -> None:
    from tests.support.postgres import free_port

    store = SupabaseRecords(f"http://127.0.0.1:{free_port()}", supabase.key)
    with pytest.raises(RecordsError, match="Cannot reach Supabase"):
        store.insert_log(None, "training_agent", "info", "x")


@pytest.mark.integration
def test_supabase_speaks_plain_postgrest(supabase: Supabase) -> None:
    """What goes over the wire is the PostgREST protocol the real server expects."""
    store = SupabaseRecords(supabase.url, supabase.key)
    project = store.create_project("p", status="pending_training", metadata={})
    supabase.server.requests.clear()
    store.get_project(project.id)
    store.transition_project(project.id, from_status="pending_training", to_status="training")
    assert supabase.server.requests == [
        ("GET", f"/rest/v1/projects?select=%2A&id=eq.{project.id}"),
        ("PATCH", f"/rest/v1/projects?id=eq.{project.id}&status=eq.pending_training"),
    ]
