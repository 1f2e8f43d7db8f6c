#!/usr/bin/env bash
# WAL decoding benchmark: pitr's decoder vs pg_waldump, on real 16 MB segments from pgbench
# (PostgreSQL 15, TPC-B-like load), all in one run, files in the page cache.
#
# Timed, interleaved, --repeat times each (the median is reported):
#   pg_waldump --stats      per-rmgr statistics (decodes every record, prints a summary)
#   pg_waldump > /dev/null  every record described as text
#   wal_stats               pitr-pg's decoder alone (cargo example, release), --stats-like
#   pitr wal log --json     the whole command over a local repository: fetch, verify
#                           (BLAKE3), decompress (zstd), decode, per-transaction summaries,
#                           JSON of every transaction to /dev/null
#   pitr wal incidents      the same scan, reporting only incidents
#
# Usage: bench/wal-decode.sh [--segments N] [--repeat N] [--scale N] [--keep]
#                            [--workdir DIR] [--segments-from DIR]
# --segments-from DIR: copy N segments from DIR (e.g. the segments/ of a work directory kept
# by bench/archive-push.sh --keep) instead of generating WAL with pgbench (minutes).
# Environment: CARGO_TARGET_DIR, PGBIN (PostgreSQL 15 bin dir), BENCH_PORT (default 25434).
set -euo pipefail

SEGMENTS=64
REPEAT=3
SCALE=10
KEEP=0
FROM=
WORKPARENT=${TMPDIR:-/tmp}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PORT=${BENCH_PORT:-25434}

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case $1 in
    --segments) SEGMENTS=$2; shift 2 ;;
    --repeat) REPEAT=$2; shift 2 ;;
    --scale) SCALE=$2; shift 2 ;;
    --workdir) WORKPARENT=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --segments-from) FROM=$(cd "$2" && pwd); shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "wal-decode.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

[ -x "$PGBIN/pg_waldump" ] || die "no pg_waldump in $PGBIN"
REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
log "cargo build --release (pitr, wal_stats example)"
(cd "$REPO_ROOT" && cargo build --release -q -p pitr && cargo build --release -q -p pitr-pg --example wal_stats) ||
  die "cargo build failed"
PITR=$CARGO_TARGET_DIR/release/pitr
WAL_STATS=$CARGO_TARGET_DIR/release/examples/wal_stats

WORK=$(mktemp -d "$WORKPARENT/pitr-walbench.XXXXXX")
chmod 755 "$WORK"
SEGDIR=$WORK/segments
REPO=$WORK/repo
mkdir -p "$SEGDIR"
PGDATA=$WORK/pgdata
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  local rc=$?
  if [ -f "$PGDATA/postmaster.pid" ]; then as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate stop >/dev/null 2>&1 || true; fi
  if [ $KEEP = 1 ] || [ $rc != 0 ]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

if [ -n "$FROM" ]; then
  mapfile -t chosen < <(ls "$FROM" | grep -E '^[0-9A-F]{24}$' | sort | head -n "$SEGMENTS")
  [ ${#chosen[@]} = "$SEGMENTS" ] || die "$FROM has fewer than $SEGMENTS segments"
  for s in "${chosen[@]}"; do cp "$FROM/$s" "$SEGDIR/"; done
  log "copied $SEGMENTS segments from $FROM"
else
  # The same generation as bench/archive-push.sh: pgbench TPC-B-like load on PostgreSQL 15.
  "$PGBIN/postgres" --version | grep -q ' 15\.' || die "$PGBIN is not PostgreSQL 15"
  SOCK=$WORK/sock STAGE=$WORK/staging
  mkdir -p "$SOCK" "$STAGE"
  chown -R postgres: "$WORK"
  as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres -A trust --locale=C -E UTF8 --wal-segsize=16 >/dev/null
  cat >>"$PGDATA/postgresql.conf" <<EOF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$SOCK'
wal_level = replica
archive_mode = on
archive_command = 'test ! -f $STAGE/%f && cp %p $STAGE/%f.tmp && mv $STAGE/%f.tmp $STAGE/%f'
fsync = off
synchronous_commit = off
EOF
  as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$WORK/postgres.log" -w start >/dev/null
  psql_pg() { "$PGBIN/psql" -X -q -At -h "$SOCK" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }
  log "pgbench -i -s $SCALE"
  PGHOST=$SOCK PGPORT=$PORT PGUSER=postgres "$PGBIN/pgbench" -i -q -s "$SCALE" postgres >/dev/null 2>&1
  psql_pg -c 'CHECKPOINT' >/dev/null
  psql_pg -c 'SELECT pg_switch_wal()' >/dev/null
  FIRST=$(psql_pg -c 'SELECT pg_walfile_name(pg_current_wal_insert_lsn())')
  load_segments() { ls "$STAGE" | grep -E '^[0-9A-F]{24}$' | sort | awk -v first="$FIRST" '$0 >= first'; }
  log "collecting $SEGMENTS segments of pgbench -c 4 -j 2 load from $FIRST on"
  while [ "$(load_segments | wc -l)" -lt "$SEGMENTS" ]; do
    PGHOST=$SOCK PGPORT=$PORT PGUSER=postgres "$PGBIN/pgbench" -n -c 4 -j 2 -T 10 postgres >/dev/null 2>&1
  done
  as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
  mapfile -t chosen < <(load_segments | head -n "$SEGMENTS")
  for s in "${chosen[@]}"; do cp "$STAGE/$s" "$SEGDIR/"; done
  rm -rf "$STAGE"
fi
FIRST=$(ls "$SEGDIR" | head -1)
LAST=$(ls "$SEGDIR" | tail -1)
BYTES=$(du -sb "$SEGDIR" | cut -f1)
MB=$(awk -v b="$BYTES" 'BEGIN { printf "%.1f", b / 1048576 }')

log "pushing $SEGMENTS segments into a local repository (pitr archive-push, zstd)"
"$PITR" init --repo "$REPO" >/dev/null
for s in $(ls "$SEGDIR"); do "$PITR" --repo "$REPO" archive-push "$SEGDIR/$s" >/dev/null; done
RECORDS=$({ "$PGBIN/pg_waldump" --stats -p "$SEGDIR" "$FIRST" "$LAST" 2>/dev/null || true; } | awk '/^Total/ {print $2; exit}')
log "$SEGMENTS segments $FIRST..$LAST, $MB MB, $RECORDS records (pg_waldump --stats)"

# Warm the page cache for everyone.
cat "$SEGDIR"/* "$REPO"/main/wal/*/* >/dev/null 2>&1 || true

# name|command (stdout to /dev/null, stderr kept for the check below)
TOOLS=(
  "pg_waldump --stats|$PGBIN/pg_waldump --stats -p $SEGDIR $FIRST $LAST"
  "pg_waldump (text)|$PGBIN/pg_waldump -p $SEGDIR $FIRST $LAST"
  "wal_stats (pitr-pg decoder)|$WAL_STATS $SEGDIR/*"
  "pitr wal log --json|$PITR --repo $REPO --json wal log"
  "pitr wal incidents|$PITR --repo $REPO wal incidents"
)
declare -A T
for ((r = 1; r <= REPEAT; r++)); do
  for entry in "${TOOLS[@]}"; do
    name=${entry%%|*} cmd=${entry#*|}
    t0=$(date +%s.%N)
    bash -c "$cmd" >/dev/null 2>"$WORK/err" || true
    t1=$(date +%s.%N)
    T[$name]+="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", b - a }') "
  done
done
# pitr must have decoded everything: its report says how many records.
"$PITR" --repo "$REPO" --json wal incidents >"$WORK/incidents.json"
PITR_RECORDS=$(grep -m1 '"records"' "$WORK/incidents.json" | tr -dc 0-9)
[ "$PITR_RECORDS" = "$RECORDS" ] || log "warning: pitr decoded $PITR_RECORDS records, pg_waldump $RECORDS"

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
BASE=$(echo "${T["pg_waldump --stats"]}" | median)
BASE_TEXT=$(echo "${T["pg_waldump (text)"]}" | median)
printf '\nWAL decoding: %s segments of 16 MB (%s MB, %s records), PostgreSQL 15 pgbench; median of %s, load %s\n' \
  "$SEGMENTS" "$MB" "$RECORDS" "$REPEAT" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-30s %9s %9s %16s %16s\n' tool seconds MB/s "vs waldump --stats" "vs waldump text"
for entry in "${TOOLS[@]}"; do
  name=${entry%%|*}
  m=$(echo "${T[$name]}" | median)
  awk -v n="$name" -v m="$m" -v mb="$MB" -v b="$BASE" -v bt="$BASE_TEXT" \
    'BEGIN { printf "%-30s %9.3f %9.0f %15.2fx %15.2fx\n", n, m, mb / m, b / m, bt / m }'
done
printf '(ratios > 1 mean faster than pg_waldump)\n'
