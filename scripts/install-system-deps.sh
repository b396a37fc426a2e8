#!/usr/bin/env bash
# Installs the system packages the test suite needs (PostgreSQL server binaries for the Supabase store
# tests). Idempotent: does nothing when they are already there.
set -euo pipefail

have_postgres() {
    command -v initdb >/dev/null 2>&1 || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

if have_postgres; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "PostgreSQL server binaries (initdb, pg_ctl) are missing; install the 'postgresql' package." >&2
    exit 1
fi
echo "Installing PostgreSQL for the integration tests..."
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
have_postgres
