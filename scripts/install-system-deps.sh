#!/usr/bin/env bash
# Installs the system packages the test suite needs: PostgreSQL server binaries (the Supabase store tests),
# the shellcheck linter (the kind quickstart and other scripts) and curl (the README's projects walk-through).
# Idempotent: does nothing when they are there.
set -euo pipefail

have_postgres() {
    command -v initdb >/dev/null 2>&1 || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

missing=()
have_postgres || missing+=(postgresql)
command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "Missing system packages for the tests: ${missing[*]}; install them with your package manager." >&2
    exit 1
fi
echo "Installing ${missing[*]} for the tests..."
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
have_postgres
command -v shellcheck >/dev/null
command -v curl >/dev/null
