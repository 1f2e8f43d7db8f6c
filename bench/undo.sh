#!/usr/bin/env bash
# pitr undo vs a full restore: the scratch space and time an undo of a DROP TABLE takes in a
# cluster where the damaged database is small and another database is large (pgbench).
#
# Usage: bench/undo.sh [--scale N] [--rows N] [--keep] [--workdir DIR]
#
# One cluster (PostgreSQL 16 by default): database `shop` with `orders` (--rows rows, default
# 200000, an index, a grant), database `big` with pgbench scale N (default 20, ≈ 300 MB).
# A full backup, then `DROP TABLE orders`, then, timed:
#   undo:     pitr undo XID --table public.orders (restores the cluster-wide files, the system
#             databases and shop; big as sparse files), loads the table back, checked
#   restore:  pitr restore --pgdata DIR --target-xid XID --target-exclusive (everything)
# and prints the bytes each put on disk (`du`, allocated blocks) and the seconds.
# Environment: PITR_BIN (use this binary), PGBIN (PostgreSQL bin dir; default: the one
# scripts/install-test-deps.sh recorded in /opt/pitr-pg/16/bindir, else Debian's), BENCH_PORT (25445).
set -euo pipefail

SCALE=20
ROWS=200000
KEEP=0
WORKPARENT=${TMPDIR:-/tmp}
PGBIN=${PGBIN:-$(cat /opt/pitr-pg/16/bindir 2>/dev/null || echo /usr/lib/postgresql/16/bin)}
PORT=${BENCH_PORT:-25445}

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case $1 in
    --scale) SCALE=$2; shift 2 ;;
    --rows) ROWS=$2; shift 2 ;;
    --workdir) WORKPARENT=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "undo.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || die "run as root (PostgreSQL and pitr run as the postgres OS user)"
[ -x "$PGBIN/pgbench" ] || die "no PostgreSQL with pgbench in $PGBIN"
REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
ensure_pitr_bin "$REPO_ROOT"

WORK=$(mktemp -d "$WORKPARENT/pitr-bench-undo.XXXXXX")
chmod 755 "$WORK"
PGDATA=$WORK/pgdata
SOCK=$WORK/sock
mkdir -p "$SOCK" "$WORK/bin" "$WORK/scratch"
cp "$PITR_BIN" "$WORK/bin/pitr"
chown -R postgres: "$WORK"
as_pg() { runuser -u postgres -- "$@"; }
cleanup() {
  local rc=$?
  for d in "$PGDATA" "$WORK/restored"; do
    [ -f "$d/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1
  done
  if [ $KEEP = 1 ] || [ $rc != 0 ]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
psql_db() { local db=$1; shift; psql -X -q -At -h "$SOCK" -p "$PORT" -U postgres -d "$db" -v ON_ERROR_STOP=1 "$@"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
PITR="$WORK/bin/pitr --repo $WORK/repo"

log "initdb, shop ($ROWS orders), big (pgbench scale $SCALE)"
as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres -A trust --locale=C -E UTF8 -k >/dev/null
as_pg $PITR init >/dev/null
cat >>"$PGDATA/postgresql.conf" <<CONF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$SOCK'
wal_level = replica
archive_mode = on
archive_command = '$PITR archive-push %p'
max_wal_size = 1GB
CONF
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$WORK/postgres.log" -w start >/dev/null
psql_db postgres -c 'CREATE DATABASE shop' -c 'CREATE DATABASE big' -c 'CREATE ROLE reader'
psql_db shop -c "CREATE TABLE orders (id serial PRIMARY KEY, amount int, note text DEFAULT 'x')" \
  -c "INSERT INTO orders (amount) SELECT g FROM generate_series(1, $ROWS) g" \
  -c 'CREATE INDEX ON orders (amount)' -c 'GRANT SELECT ON orders TO reader'
PGHOST=$SOCK PGPORT=$PORT PGUSER=postgres "$PGBIN/pgbench" -i -q -s "$SCALE" big >/dev/null 2>&1
as_pg $PITR backup -h "$SOCK" -p "$PORT" -U postgres >/dev/null
XID=$(psql_db shop -c 'DROP TABLE orders; SELECT txid_current()' | tail -1)
psql_db postgres -c 'SELECT pg_switch_wal()' >/dev/null
sleep 2
log "load: $(cut -d' ' -f1-3 /proc/loadavg)"

t0=$(now)
as_pg $PITR undo "$XID" --table public.orders -h "$SOCK" -p "$PORT" -U postgres -d shop \
  --scratch "$WORK/scratch" --pg-bin "$PGBIN" --json >"$WORK/undo.json"
UNDO_SECS=$(since "$t0")
UNDO_BYTES=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["scratch_bytes"])' "$WORK/undo.json")
[ "$(psql_db shop -c 'SELECT count(*) FROM orders')" = "$ROWS" ] || die "orders did not come back"

t0=$(now)
as_pg $PITR restore --pgdata "$WORK/restored" --target-xid "$XID" --target-exclusive \
  --target-action promote --archive-mode off >/dev/null
RESTORE_SECS=$(since "$t0")
RESTORE_BYTES=$(du -s --block-size=1 "$WORK/restored" | cut -f1)
log "load: $(cut -d' ' -f1-3 /proc/loadavg)"

printf '%-40s %14s %8s\n' "" "on disk" "seconds"
printf '%-40s %14s %8s\n' "pitr undo (restore, replay, load, check)" "$UNDO_BYTES" "$UNDO_SECS"
printf '%-40s %14s %8s\n' "pitr restore (files only, no replay)" "$RESTORE_BYTES" "$RESTORE_SECS"
awk -v u="$UNDO_BYTES" -v r="$RESTORE_BYTES" 'BEGIN { printf "undo scratch / full restore: %.3f\n", u / r }'
