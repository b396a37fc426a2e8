"""The listing queries behind `GET /agents/training/runs` and `GET /agents/training/logs/{id}`, run against
both stores: embedded SQLite, and Supabase (supabase-py → PostgREST protocol → real PostgreSQL)."""

from __future__ import annotations

from training_agent.core.records import RecordsStore


def test_list_projects_newest_update_first(store: RecordsStore) -> None:
    old = store.create_project("old", status="training", metadata={})
    other = store.create_project("other", status="pending_dataset", metadata={})
    new = store.create_project("new", status="pending_training", metadata={})
    # Moving `old` on makes it the most recently updated.
    store.transition_project(old.id, from_status="training", to_status="failed")

    assert [p.name for p in store.list_projects()] == ["old", "new", "other"]
    training = store.list_projects(statuses=["pending_training", "training", "failed"])
    assert [p.id for p in training] == [old.id, new.id]
    assert [p.id for p in store.list_projects(statuses=["pending_dataset"])] == [other.id]
    assert [p.name for p in store.list_projects(limit=2)] == ["old", "new"]
    assert store.list_projects(statuses=[]) == []
    assert store.list_projects(statuses=["pending_evaluation"]) == []


def test_recent_logs_by_level(store: RecordsStore) -> None:
    project = store.create_project("p", status="training", metadata={})
    elsewhere = store.create_project("q", status="training", metadata={})
    for level, message in [("info", "one"), ("warning", "two"), ("error", "three"), ("info", "four")]:
        store.insert_log(project.id, "training-agent", level, message)
    store.insert_log(elsewhere.id, "training-agent", "error", "not this project's")

    assert [r.message for r in store.recent_logs(project.id)] == ["four", "three", "two", "one"]
    serious = store.recent_logs(project.id, levels=["warning", "error"])
    assert [r.message for r in serious] == ["three", "two"]
    assert [r.message for r in store.recent_logs(project.id, levels=["info"], limit=1)] == ["four"]
    assert store.recent_logs(project.id, levels=[]) == []
    assert store.recent_logs(project.id, levels=["debug"]) == []
