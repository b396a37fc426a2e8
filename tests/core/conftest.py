"""Fixtures shared by the records tests: one `store` fixture, run against both stores."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.services import Supabase
from training_agent.core.records import RecordsStore
from training_agent.core.records.sqlite import SQLiteRecords
from training_agent.core.records.supabase import SupabaseRecords


@pytest.fixture(params=["sqlite", pytest.param("supabase", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> RecordsStore:
    """Embedded SQLite, and Supabase (supabase-py → PostgREST protocol → real PostgreSQL)."""
    if request.param == "sqlite":
        return SQLiteRecords(tmp_path / "records.db")
    supabase: Supabase = request.getfixturevalue("supabase")
    return SupabaseRecords(supabase.url, supabase.key)
