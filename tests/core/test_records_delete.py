"""`delete_project`, which undoes a project creation that could not finish, on both stores: the project and,
by the tables' cascade, its rows go; other projects stay."""

from __future__ import annotations

from training_agent.core.records import RecordsStore


def test_delete_project_takes_its_rows(store: RecordsStore) -> None:
    gone = store.create_project("gone", status="creating", metadata={})
    kept = store.create_project("kept", status="pending_training", metadata={})
    for project in (gone, kept):
        store.create_dataset(project.id, gcs_url="gs://b/d.zip")
        store.insert_log(project.id, "training_agent", "info", "hello")
    store.delete_project(gone.id)
    assert store.get_project(gone.id) is None
    assert store.latest_dataset(gone.id) is None and store.recent_logs(gone.id) == []
    assert store.get_project(kept.id) is not None and store.latest_dataset(kept.id) is not None
    store.delete_project(gone.id)  # deleting what is gone is fine
