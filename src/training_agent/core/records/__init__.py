"""The shared tables: one interface, a Supabase and an embedded SQLite implementation."""

from __future__ import annotations

from training_agent.core.records.base import RecordsStore
from training_agent.core.records.models import (
    AgentLog,
    Dataset,
    LogLevel,
    ModelRecord,
    NewModel,
    Project,
    ProjectStatus,
)
from training_agent.core.settings import Settings

__all__ = [
    "AgentLog",
    "Dataset",
    "LogLevel",
    "ModelRecord",
    "NewModel",
    "Project",
    "ProjectStatus",
    "RecordsStore",
    "open_records",
]


def open_records(settings: Settings) -> RecordsStore:
    """Supabase when SUPABASE_URL/SUPABASE_KEY are set, else the embedded SQLite file."""
    if settings.supabase_url and settings.supabase_key:
        # Imported here so the embedded mode never pays for the Supabase client's import.
        from training_agent.core.records.supabase import SupabaseRecords

        return SupabaseRecords(settings.supabase_url, settings.supabase_key.get_secret_value())
    from training_agent.core.records.sqlite import SQLiteRecords

    return SQLiteRecords(settings.resolved_database_path)
