#!/usr/bin/env bash
# WAL streaming benchmark: `pitr stream` (zstd into a local repository, the .partial kept as WAL
# arrives) vs `pg_receivewal` (plain files, and --compress=lz4), draining the same backlog of
# pgbench WAL from a physical slot each, one receiver at a time, interleaved over repetitions.
#
# Usage: bench/stream.sh [--segments N] [--repeat N] [--scale N] [--keep] [--workdir DIR]
# Environment: CARGO_TARGET_DIR (where pitr is built), PITR_BIN (use this binary, skip the
# build), PGBIN (PostgreSQL 15 bin dir), BENCH_PORT (server port, default 25435), PERF_DIR
# (profile each pitr receiver with `perf record -p` into PERF_DIR/TOOL-REP.data; not timed fairly).
# Throughput = backlog bytes / seconds from the receiver's start until the backlog's last
# segment is complete at its destination (a repository object for pitr, a file without
# .partial for pg_receivewal). Every receiver starts from its own slot, created before the load,
# so all of them stream exactly the same WAL. See bench/README.md for the figures.
set -euo pipefail

SEGMENTS=48
REPEAT=3
SCALE=10
KEEP=0
WORKPARENT=${TMPDIR:-/tmp}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PORT=${BENCH_PORT:-25435}

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case $1 in
    --segments) SEGMENTS=$2; shift 2 ;;
    --repeat) REPEAT=$2; shift 2 ;;
    --scale) SCALE=$2; shift 2 ;;
    --workdir) WORKPARENT=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "stream.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || die "run as root (PostgreSQL and the receivers run as the postgres OS user via runuser)"
id postgres >/dev/null 2>&1 || die "no postgres OS user (install postgresql-15)"
[ -x "$PGBIN/pg_receivewal" ] && [ -x "$PGBIN/pgbench" ] || die "no PostgreSQL with pg_receivewal and pgbench in $PGBIN"
REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)

ensure_pitr_bin "$REPO_ROOT"
[ -x "$PITR_BIN" ] || die "no pitr binary at $PITR_BIN"

WORK=$(mktemp -d "$WORKPARENT/pitr-bench-stream.XXXXXX")
chmod 755 "$WORK"
PGDATA=$WORK/pgdata
SOCK=$WORK/sock
BIN=$WORK/bin
RESULTS=$WORK/results.txt
mkdir -p "$SOCK" "$BIN"
chown -R postgres: "$WORK"
as_pg() { runuser -u postgres -- "$@"; }
# exec as postgres keeping the pid (runuser would stay the parent: a signal must reach the receiver)
EXEC_PG=(setpriv --reuid postgres --regid postgres --init-groups)
RECEIVER_PID=
cleanup() {
  local rc=$?
  [ -n "$RECEIVER_PID" ] && kill "$RECEIVER_PID" 2>/dev/null || true
  if [ -f "$PGDATA/postmaster.pid" ]; then as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate stop >/dev/null 2>&1 || true; fi
  if [ $KEEP = 1 ] || [ $rc != 0 ]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
log "work directory $WORK ($(stat -f -c %T "$WORK") on $(df -P "$WORK" | awk 'NR==2 {print $1}'))"
psql_pg() { psql -X -q -At -h "$SOCK" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }

# ---------------------------------------------------------------- the backlog
log "initdb (PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}'), 16 MB segments)"
as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres -A trust --locale=C -E UTF8 --wal-segsize=16 >/dev/null
cat >>"$PGDATA/postgresql.conf" <<EOF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$SOCK'
wal_level = replica
max_wal_senders = 4
max_replication_slots = 32
# only makes generating the backlog cheaper; the WAL streamed is the same
fsync = off
synchronous_commit = off
EOF
echo "local replication all trust" >>"$PGDATA/pg_hba.conf"
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$WORK/postgres.log" -w start >/dev/null
log "pgbench -i -s $SCALE"
PGHOST=$SOCK PGPORT=$PORT PGUSER=postgres "$PGBIN/pgbench" -i -q -s "$SCALE" postgres >/dev/null 2>&1
psql_pg -c 'CHECKPOINT' >/dev/null
psql_pg -c 'SELECT pg_switch_wal()' >/dev/null

TOOLS=(pitr pitr-interval pg_receivewal pg_receivewal-lz4)
for rep in $(seq 1 "$REPEAT"); do
  for t in "${TOOLS[@]}"; do
    psql_pg -c "SELECT pg_create_physical_replication_slot('b_${t//-/_}_$rep', true)" >/dev/null
  done
done
START_LSN=$(psql_pg -c "SELECT restart_lsn FROM pg_replication_slots LIMIT 1")
FIRST=$(psql_pg -c "SELECT pg_walfile_name('$START_LSN')")
log "slots reserve WAL from $START_LSN ($FIRST); generating $SEGMENTS segments of pgbench WAL (-c 4 -j 2)"
t_load=$SECONDS
while [ "$(psql_pg -c "SELECT (pg_current_wal_lsn() - '$START_LSN'::pg_lsn) / 16777216 >= $SEGMENTS")" != t ]; do
  [ $((SECONDS - t_load)) -lt 1800 ] || die "pgbench did not produce $SEGMENTS segments in 30 min"
  PGHOST=$SOCK PGPORT=$PORT PGUSER=postgres "$PGBIN/pgbench" -n -c 4 -j 2 -T 5 postgres >/dev/null 2>&1
done
psql_pg -c 'SELECT pg_switch_wal()' >/dev/null
END_LSN=$(psql_pg -c 'SELECT pg_current_wal_lsn()')
# The last segment complete on the server: the backlog ends with it.
LAST=$(psql_pg -c "SELECT pg_walfile_name('$END_LSN'::pg_lsn - 1)")
BACKLOG=$(psql_pg -c "SELECT ('$END_LSN'::pg_lsn - '$START_LSN'::pg_lsn)::bigint")
log "backlog $FIRST .. $LAST: $BACKLOG bytes (generated in $((SECONDS - t_load)) s)"

# ---------------------------------------------------------------- the timed runs
cp "$PITR_BIN" "$BIN/pitr"
chmod 755 "$BIN/pitr"
log "pitr binary: $PITR_BIN ($(stat -c %y "$PITR_BIN"))"
# run TOOL REP: starts the receiver on its slot, waits until LAST is complete at its
# destination, stops it; appends "tool rep seconds bytes-at-destination" to RESULTS.
run() {
  local tool=$1 rep=$2 slot="b_${1//-/_}_$2" dest="$WORK/dest-$1" done_file t0 t1
  rm -rf "$dest"; as_pg mkdir -p "$dest"
  case $tool in
    pitr*) as_pg "$BIN/pitr" init --repo "$dest/repo" >/dev/null
           done_file="$dest/repo/main/wal/${LAST:0:8}/$LAST" ;;
    *) done_file="$dest/$LAST" ;;
  esac
  sync
  t0=${EPOCHREALTIME/./}
  case $tool in
    pitr) "${EXEC_PG[@]}" "$BIN/pitr" --repo "$dest/repo" -q stream -h "$SOCK" -p "$PORT" -U postgres \
            --slot "$slot" --spool "$dest/spool" & ;;
    pitr-interval) "${EXEC_PG[@]}" "$BIN/pitr" --repo "$dest/repo" -q stream -h "$SOCK" -p "$PORT" -U postgres \
            --slot "$slot" --spool "$dest/spool" --partial-interval 10 & ;;
    pg_receivewal) "${EXEC_PG[@]}" "$PGBIN/pg_receivewal" -h "$SOCK" -p "$PORT" -U postgres -S "$slot" -D "$dest" -n & ;;
    pg_receivewal-lz4) "${EXEC_PG[@]}" "$PGBIN/pg_receivewal" -h "$SOCK" -p "$PORT" -U postgres -S "$slot" -D "$dest" -n --compress=lz4 & ;;
  esac
  RECEIVER_PID=$!
  local perf_pid=
  if [ -n "${PERF_DIR:-}" ] && [ "${tool#pitr}" != "$tool" ]; then
    mkdir -p "$PERF_DIR"
    perf record -q -F 1999 -g -p "$RECEIVER_PID" -o "$PERF_DIR/$tool-$rep.data" 2>/dev/null &
    perf_pid=$!
  fi
  until [ -f "$done_file" ] || [ -f "$done_file.lz4" ]; do
    kill -0 "$RECEIVER_PID" 2>/dev/null || die "$tool exited before $LAST was complete"
    sleep 0.02
  done
  t1=${EPOCHREALTIME/./}
  local cpu; cpu=$(awk '{ printf "%.2f", ($14 + $15) / 100 }' "/proc/$RECEIVER_PID/stat" 2>/dev/null || echo ?)
  [ -z "$perf_pid" ] || { kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true; }
  kill -TERM "$RECEIVER_PID"; wait "$RECEIVER_PID" 2>/dev/null || true; RECEIVER_PID=
  local secs; secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e6 }')
  local bytes; bytes=$(du -sb --exclude=spool "$dest" | cut -f1)
  echo "$tool $rep $secs $bytes" >>"$RESULTS"
  log "run $rep/$REPEAT $tool: $secs s, $(awk -v b="$BACKLOG" -v s="$secs" 'BEGIN { printf "%.1f", b / s / 1048576 }') MiB/s, $bytes bytes at the destination, ${cpu} s CPU"
  if [ "$tool" = pitr ] && [ "$rep" = 1 ]; then
    # Correctness (not timed): the stored segments are the server's, fetched back.
    local got="$WORK/got"; rm -f "$got"
    as_pg "$BIN/pitr" --repo "$dest/repo" archive-get "$LAST" "$got"
    cmp -s "$got" "$PGDATA/pg_wal/$LAST" || die "pitr: $LAST fetched back differs from pg_wal/$LAST"
  fi
  [ "$rep" = "$REPEAT" ] || rm -rf "$dest" || true
}

: >"$RESULTS"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for rep in $(seq 1 "$REPEAT"); do
  n=${#TOOLS[@]}
  for ((k = 0; k < n; k++)); do run "${TOOLS[$(( (rep + k) % n ))]}" "$rep"; done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
echo
echo "pitr stream vs pg_receivewal: $BACKLOG bytes of pgbench WAL ($FIRST .. $LAST), PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}'), $REPEAT runs each"
echo "load average before: $LOAD_BEFORE, after: $LOAD_AFTER"
awk -v backlog="$BACKLOG" '
  function median(str,   n, a, i, j, v) {
    n = split(substr(str, 2), a, " ")
    for (i = 2; i <= n; i++) { v = a[i] + 0; j = i - 1; while (j > 0 && a[j] + 0 > v) { a[j+1] = a[j]; j-- } a[j+1] = v }
    return (n % 2) ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
  }
  { secs[$1] = secs[$1] " " $3; bytes[$1] = $4 }
  END {
    base = backlog / median(secs["pg_receivewal"])
    printf "%-18s %10s %12s %14s %8s  %s\n", "receiver", "median s", "MiB/s", "stored bytes", "vs recv", "runs (s)"
    split("pitr pitr-interval pg_receivewal pg_receivewal-lz4", order, " ")
    for (k = 1; k <= 4; k++) { t = order[k]; m = median(secs[t]); r = backlog / m
      printf "%-18s %10.3f %12.1f %14d %7.2fx  %s\n", t, m, r / 1048576, bytes[t], r / base, substr(secs[t], 2) }
  }' "$RESULTS"
