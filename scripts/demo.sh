#!/usr/bin/env bash
# pitr's main job on an embedded default: builds pitr and runs `pitr demo`, the PITR lab on a
# throwaway PostgreSQL cluster and a repository in a temporary directory, removed at the end.
# On a fresh Debian machine it first installs PostgreSQL 15 (apt) when no PostgreSQL is found
# and it may (root or passwordless sudo). Extra arguments go to `pitr demo` (e.g. --pg-bin DIR,
# --keep, -v).
set -euo pipefail
cd "$(dirname "$0")/.."

have_pg() {
  command -v pg_ctl >/dev/null 2>&1 || command -v pg_config >/dev/null 2>&1 ||
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

if ! have_pg; then
  if [ "$(id -u)" = 0 ] || sudo -n true 2>/dev/null; then
    as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
    echo "demo: no PostgreSQL found; installing postgresql-15 (apt)" >&2
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql-15 >/dev/null
  else
    echo "demo: no PostgreSQL found and cannot install it; install PostgreSQL 14-18 or pass --pg-bin DIR" >&2
  fi
fi

cargo build --release -q -p pitr
exec target/release/pitr demo "$@"
