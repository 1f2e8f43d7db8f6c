#!/usr/bin/env bash
# pitr's main job on an embedded default: builds pitr and runs `pitr demo`, the PITR lab on a
# throwaway PostgreSQL cluster and a repository in a temporary directory, removed at the end.
# On a fresh Debian machine it first installs PostgreSQL 15 (apt) when no PostgreSQL is found
# and it may (root or passwordless sudo). Extra arguments go to `pitr demo` (e.g. --pg-bin DIR,
# --keep, -v). PITR_DEMO_PROFILE=release builds with the release profile instead.
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

# The demo profile: release without LTO and with 16 codegen units (Cargo.toml): a shorter first
# build at a run-time cost measured in bench/README.md.
profile=${PITR_DEMO_PROFILE:-demo}
if [ -x "target/$profile/pitr" ]; then
  echo "demo: updating pitr (cargo build --profile $profile): seconds when little changed" >&2
else
  echo "demo: building pitr for the first time (cargo build --profile $profile): about 10 minutes on" >&2
  echo "demo: 2 cores, 3-4 on 8; later runs take seconds. Cargo's progress follows." >&2
fi
started=$SECONDS
cargo build --profile "$profile" -p pitr
echo "demo: build done in $((SECONDS - started)) s" >&2
exec "target/$profile/pitr" demo "$@"
