"""The records contract, run against both stores: embedded SQLite, and Supabase (supabase-py → PostgREST
protocol → real PostgreSQL with the shipped migration)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import pytest

from tests.support.postgrest import DROP
from tests.support.services import Supabase
from training_agent.core.errors import RecordsError
from training_agent.core.records import NewModel, RecordsStore
from training_agent.core.records.supabase import SupabaseRecords


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

    store = SupabaseRecords(f"http://127.0.0.1:{free_port()}", supabase.key, retry_initial_s=0.01)
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


# -- retries: the stand-in fails requests on a switch ------------------------------------------------------
@pytest.fixture
def faulty(supabase: Supabase) -> Iterator[Supabase]:
    """The Supabase stand-in, its faults cleared after the test whatever happened."""
    yield supabase
    supabase.server.fail_next(0)


def fast_store(supabase: Supabase, **retry: Any) -> SupabaseRecords:
    return SupabaseRecords(supabase.url, supabase.key, retry_initial_s=0.01, retry_max_s=0.05, **retry)


def sent(supabase: Supabase, method: str) -> int:
    return sum(1 for m, _ in supabase.server.requests if m == method)


@pytest.mark.integration
@pytest.mark.parametrize("fault", [503, 502, 504, DROP], ids=["503", "502", "504", "connection-closed"])
def test_reads_and_status_updates_are_retried(
    faulty: Supabase, fault: int, caplog: pytest.LogCaptureFixture
) -> None:
    store = fast_store(faulty)
    project = store.create_project("p", status="pending_training", metadata={})
    faulty.server.requests.clear()
    faulty.server.fail_next(2, status=fault)
    with caplog.at_level(logging.WARNING, logger="training_agent.core.records.supabase"):
        again = store.get_project(project.id)
    assert again is not None and again.id == project.id
    assert sent(faulty, "GET") == 3
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2
    assert "read the project" in caplog.records[0].getMessage()

    faulty.server.fail_next(2, status=fault, methods=("PATCH",))
    moved = store.transition_project(
        project.id, from_status="pending_training", to_status="training", metadata_patch={"k": 1}
    )
    assert moved is not None and moved.status == "training" and moved.metadata == {"k": 1}
    assert sent(faulty, "PATCH") == 3


@pytest.mark.integration
@pytest.mark.parametrize("fault", [503, DROP], ids=["503", "connection-closed"])
def test_inserts_whose_answer_was_lost_are_stored_once(faulty: Supabase, fault: int) -> None:
    """The first try is carried out and only its answer lost: the retry must not add a second row."""
    store = fast_store(faulty)
    project = store.create_project("p", status="training", metadata={})
    faulty.server.requests.clear()
    faulty.server.fail_next(1, status=fault, after=True, methods=("POST",))
    row = store.insert_model(NewModel(project_id=project.id, name="p_model", gcs_url="gs://b/models/p.pth"))
    assert sent(faulty, "POST") == 2
    assert [m.id for m in store.list_models(project.id)] == [row.id]

    faulty.server.fail_next(1, status=fault, after=True, methods=("POST",))
    store.insert_log(project.id, "training_agent", "info", "Epoch 1/2")
    assert [log.message for log in store.recent_logs(project.id)] == ["Epoch 1/2"]


@pytest.mark.integration
def test_a_status_update_whose_answer_was_lost_is_ours(faulty: Supabase) -> None:
    """The retried compare-and-set finds the project moved on by its own first try: that is success, not
    a lost race. A move by somebody else stays a lost race."""
    store = fast_store(faulty)
    project = store.create_project("p", status="pending_training", metadata={})
    faulty.server.fail_next(1, after=True, methods=("PATCH",))
    moved = store.transition_project(project.id, from_status="pending_training", to_status="training")
    assert moved is not None and moved.status == "training"
    assert sent(faulty, "PATCH") == 2
    other = fast_store(faulty)
    assert other.transition_project(project.id, from_status="training", to_status="failed") is not None
    assert store.transition_project(project.id, from_status="training", to_status="failed") is None


@pytest.mark.integration
def test_answers_are_not_retried(faulty: Supabase) -> None:
    store = fast_store(faulty)
    project = store.create_project("p", status="pending_training", metadata={})
    faulty.server.requests.clear()
    faulty.server.fail_next(1, status=400)
    with pytest.raises(RecordsError, match="Supabase refused to read the project"):
        store.get_project(project.id)
    assert sent(faulty, "GET") == 1
    # A refused insert (the project does not exist: a foreign key violation, 409) is tried once.
    with pytest.raises(RecordsError, match="refused to write to agent_logs"):
        store.insert_log(uuid4(), "training_agent", "info", "x")
    assert sent(faulty, "POST") == 1


@pytest.mark.integration
def test_retries_are_bounded(faulty: Supabase) -> None:
    store = fast_store(faulty, retry_attempts=3)
    project = store.create_project("p", status="pending_training", metadata={})
    faulty.server.requests.clear()
    faulty.server.fail_next(10)
    with pytest.raises(RecordsError, match=r"unavailable to read the project: HTTP 503"):
        store.get_project(project.id)
    assert sent(faulty, "GET") == 3
    # The budget stops retrying as well, whatever the number of tries left.
    faulty.server.requests.clear()
    faulty.server.fail_next(1000)
    budgeted = fast_store(faulty, retry_attempts=1000, retry_budget_s=0.3)
    started = time.monotonic()
    with pytest.raises(RecordsError, match="unavailable"):
        budgeted.get_project(project.id)
    assert time.monotonic() - started < 5.0  # 0.3 s of budget, one try and one wait past it
    assert 1 < sent(faulty, "GET") < 100
