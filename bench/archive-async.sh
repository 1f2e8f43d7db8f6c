#!/usr/bin/env bash
# Backlog-drain benchmark: how fast a backlog of N ready WAL segments (real 16 MB pgbench
# segments, PostgreSQL 15) is archived when an archiver calls archive_command for one segment
# at a time, in order, as PostgreSQL's does: pitr asynchronous (default) vs pitr --no-async vs
# pgBackRest 2.45 zst async (process-max 2) vs pgBackRest one process per segment vs cp + fsync,
# into a local repository and (--where s3|both) into SeaweedFS over https.
#
# Usage: bench/archive-async.sh [--segments N] [--repeat N] [--scale N] [--where local|s3|both]
#                               [--keep] [--workdir DIR] [--reuse WORKDIR]
# --reuse: measure again with the cluster and segments of a work directory kept by --keep (or
# by a failed run), skipping the minutes of WAL generation.
# Each run copies the segments into a fresh pg_wal-like directory with archive_status/*.ready,
# a fresh repository per tool, then times the archiver loop (archive_command with %p and %f for
# each ready file in order, renamed .done on success, as PostgreSQL does) until the last segment
# is acknowledged. Tools are run in a different order in each run; medians of --repeat runs.
# Environment: PITR_BIN (use this binary, skip the build), PGBIN (PostgreSQL 15 bin dir),
# BENCH_PORT (server port, default 25441), BENCH_S3_PORT (SeaweedFS ports, default 28320).
set -euo pipefail

SEGMENTS=64
REPEAT=3
SCALE=10
WHERE=both
KEEP=0
REUSE=
WORKPARENT=${TMPDIR:-/tmp}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PORT=${BENCH_PORT:-25441}
export BENCH_S3_PORT=${BENCH_S3_PORT:-28320}
STANZA=bench

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case $1 in
    --segments) SEGMENTS=$2; shift 2 ;;
    --repeat) REPEAT=$2; shift 2 ;;
    --scale) SCALE=$2; shift 2 ;;
    --where) WHERE=$2; shift 2 ;;
    --workdir) WORKPARENT=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --reuse) REUSE=$(cd "$2" && pwd); KEEP=1; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "archive-async.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done
case $WHERE in local|s3|both) ;; *) echo "--where: local, s3 or both" >&2; exit 2 ;; esac

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || die "run as root (PostgreSQL and the tools run as the postgres OS user)"
id postgres >/dev/null 2>&1 || die "no postgres OS user (install postgresql-15)"
[ -x "$PGBIN/pgbench" ] || die "no PostgreSQL 15 with pgbench in $PGBIN"
ensure_pgbackrest
[ "$PGBR_VERSION" = 2.45 ] || log "warning: pgBackRest $PGBR_VERSION (the target is stated against 2.45)"
REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
ensure_pitr_bin "$REPO_ROOT"

if [ -n "$REUSE" ]; then
  WORK=$REUSE
  [ -f "$WORK/pgdata/PG_VERSION" ] && [ -d "$WORK/segments" ] || die "$WORK is not a work directory kept by --keep"
  rm -rf "$WORK"/out "$WORK"/wal-* "$WORK"/repo-* "$WORK"/seaweedfs "$WORK"/pgbackrest
else
  WORK=$(mktemp -d "$WORKPARENT/pitr-bench-async.XXXXXX")
fi
chmod 755 "$WORK"
PGDATA=$WORK/pgdata
SOCK=$WORK/sock
mkdir -p "$SOCK" "$WORK/staging" "$WORK/segments" "$WORK/bin" "$WORK/out"
cp "$PITR_BIN" "$WORK/bin/pitr"
as_pg() { runuser -u postgres -- "$@"; }
cleanup() {
  local rc=$?
  [ -f "$PGDATA/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate stop >/dev/null 2>&1
  stop_seaweedfs
  if [ $KEEP = 1 ] || [ $rc != 0 ]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
psql_pg() { psql -X -q -At -h "$SOCK" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- real WAL
if [ -n "$REUSE" ]; then
  log "reusing the cluster and the segments of $WORK"
  cp "$PITR_BIN" "$WORK/bin/pitr"
  chown -R postgres: "$WORK"
  as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$WORK/postgres.log" -w start >/dev/null
  SEGMENTS=$(ls "$WORK/segments" | wc -l)
else
log "initdb + pgbench -i -s $SCALE (PostgreSQL 15), then $SEGMENTS segments of pgbench WAL"
chown -R postgres: "$WORK"
as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres -A trust --locale=C -E UTF8 >/dev/null
cat >>"$PGDATA/postgresql.conf" <<EOF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$SOCK'
wal_level = replica
archive_mode = on
archive_command = 'cp %p $WORK/staging/%f'
max_wal_size = 1GB
fsync = off
synchronous_commit = off
EOF
chown -R postgres: "$WORK"
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$WORK/postgres.log" -w start >/dev/null
PGHOST=$SOCK PGPORT=$PORT PGUSER=postgres "$PGBIN/pgbench" -i -q -s "$SCALE" postgres >/dev/null 2>&1
psql_pg -c 'SELECT pg_switch_wal()' >/dev/null
until [ "$(ls "$WORK/staging" | grep -c '^[0-9A-F]\{24\}$')" -ge $((SEGMENTS + 2)) ]; do
  PGHOST=$SOCK PGPORT=$PORT PGUSER=postgres "$PGBIN/pgbench" -n -c 4 -j 2 -T 5 postgres >/dev/null 2>&1
  psql_pg -c 'SELECT pg_switch_wal()' >/dev/null
  sleep 1
done
ls "$WORK/staging" | grep '^[0-9A-F]\{24\}$' | tail -n "$SEGMENTS" | while read -r s; do cp "$WORK/staging/$s" "$WORK/segments/"; done
rm -rf "$WORK/staging"
psql_pg -c "ALTER SYSTEM SET archive_command = '/bin/true'" -c 'SELECT pg_reload_conf()' >/dev/null
fi
chown -R postgres: "$WORK/segments"
SEG_BYTES=$(du -sb "$WORK/segments" | cut -f1)

# ---------------------------------------------------------------- tools
TOOLS=()
[ "$WHERE" = s3 ] || TOOLS+=(cp pgbr pgbr-async pitr pitr-async)
if [ "$WHERE" != local ]; then
  command -v curl >/dev/null || die "curl missing"
  start_seaweedfs "$WORK/seaweedfs" "$BENCH_S3_PORT"
  chown -R postgres: "$WORK/seaweedfs"
  TOOLS+=(pgbr-s3 pgbr-s3-async pitr-s3 pitr-s3-async)
  write_pgbackrest_conf "$WORK/pgbr-s3.conf" "$WORK" "$STANZA" "$PGDATA" "$PORT" "$SOCK" \
    repo1-type=s3 repo1-path=/pgbackrest "repo1-s3-bucket=$SW_BUCKET" repo1-s3-endpoint=127.0.0.1 \
    "repo1-storage-port=$SW_HTTPS_PORT" repo1-s3-region=us-east-1 repo1-s3-uri-style=path \
    "repo1-s3-key=$SW_KEY" "repo1-s3-key-secret=$SW_SECRET" repo1-storage-verify-tls=n
  chmod 600 "$WORK/pgbr-s3.conf"
fi
write_pgbackrest_conf "$WORK/pgbr-local.conf" "$WORK" "$STANZA" "$PGDATA" "$PORT" "$SOCK"
AWS="env AWS_ACCESS_KEY_ID=${SW_KEY:-} AWS_SECRET_ACCESS_KEY=${SW_SECRET:-}"
PITR_S3="--s3-endpoint ${SW_HTTPS:-} --s3-ca-file ${SW_CA:-}"

# repo_of TOOL RUN: the tool's repository in run RUN (a directory, or an S3 prefix / repo1-path).
repo_of() {
  case $1 in
    *-s3*) echo "/run-$2-$1" ;;
    *) echo "$WORK/repo-$2-$1" ;;
  esac
}
# cmd_of TOOL REPO DATADIR: its archive_command (%p, %f as PostgreSQL expands them).
cmd_of() {
  local pgbr_local="pgbackrest --config=$WORK/pgbr-local.conf --stanza=$STANZA --repo1-path=$2 --pg1-path=$3"
  local pgbr_s3="pgbackrest --config=$WORK/pgbr-s3.conf --stanza=$STANZA --repo1-path=$2 --pg1-path=$3"
  case $1 in
    cp) echo "dd if=%p of=$2/%f bs=1M conv=fsync status=none" ;;
    pgbr) echo "$pgbr_local archive-push %p" ;;
    pgbr-async) echo "$pgbr_local --archive-async --process-max=2 archive-push %p" ;;
    pitr) echo "$WORK/bin/pitr --repo $2 archive-push --no-async %p" ;;
    pitr-async) echo "$WORK/bin/pitr --repo $2 archive-push %p" ;;
    pgbr-s3) echo "$pgbr_s3 archive-push %p" ;;
    pgbr-s3-async) echo "$pgbr_s3 --archive-async --process-max=2 archive-push %p" ;;
    pitr-s3) echo "$WORK/bin/pitr --repo s3://$SW_BUCKET$2 $PITR_S3 archive-push --no-async %p" ;;
    pitr-s3-async) echo "$WORK/bin/pitr --repo s3://$SW_BUCKET$2 $PITR_S3 archive-push %p" ;;
  esac
}
# new_repo TOOL REPO: an empty repository for TOOL.
new_repo() {
  case $1 in
    cp) as_pg mkdir -p "$2" ;;
    pgbr|pgbr-async) as_pg pgbackrest --config="$WORK/pgbr-local.conf" --stanza=$STANZA --repo1-path="$2" stanza-create >/dev/null ;;
    pgbr-s3*) as_pg pgbackrest --config="$WORK/pgbr-s3.conf" --stanza=$STANZA --repo1-path="$2" stanza-create >/dev/null ;;
    pitr|pitr-async) as_pg "$WORK/bin/pitr" --repo "$2" init >/dev/null ;;
    pitr-s3*) as_pg $AWS "$WORK/bin/pitr" --repo "s3://$SW_BUCKET$2" $PITR_S3 init >/dev/null ;;
  esac
}

# The archiver: archive_command for each ready file in order (sh -c, as PostgreSQL runs it),
# .ready renamed .done on success, a failure retried after 1 s (PostgreSQL retries three times,
# then waits); prints the wall seconds until the last file is acknowledged.
cat >"$WORK/archiver.sh" <<'EOF'
#!/bin/bash
set -e
walDir=$1 cmd=$2
cd "$walDir"
t0=${EPOCHREALTIME/./}
for ready in $(ls archive_status | grep '\.ready$' | sort); do
  f=${ready%.ready}
  c=${cmd//%p/$walDir/$f}
  c=${c//%f/$f}
  tries=0
  until sh -c "$c"; do
    tries=$((tries + 1))
    [ $tries -lt 5 ] || { echo "archive_command failed for $f: $c" >&2; exit 1; }
    sleep 1
  done
  mv "archive_status/$ready" "archive_status/$f.done"
done
t1=${EPOCHREALTIME/./}
echo "$(( (10#$t1 - 10#$t0) / 1000 ))"
EOF
chmod 755 "$WORK/archiver.sh"

log "$SEGMENTS segments ($SEG_BYTES bytes) x $REPEAT runs; tools: ${TOOLS[*]}"
n=${#TOOLS[@]}
for r in $(seq "$REPEAT"); do
  for ((k = 0; k < n; k++)); do
    t=${TOOLS[$(( (r + k) % n ))]}
    # pgBackRest async wants the WAL inside pg1-path (and reads its pg_control): a data
    # directory of its own for each run, holding the cluster's pg_control and the ready WAL.
    fake=$WORK/wal-$r-$t
    wal=$fake/pg_wal
    rm -rf "$fake" "$WORK"/pgbackrest/spool/*
    mkdir -p "$wal/archive_status" "$fake/global"
    cp "$PGDATA/PG_VERSION" "$fake/"
    cp "$PGDATA/global/pg_control" "$fake/global/"
    cp "$WORK"/segments/* "$wal/"
    for f in "$WORK"/segments/*; do : >"$wal/archive_status/${f##*/}.ready"; done
    chown -R postgres: "$fake"
    repo=$(repo_of "$t" "$r")
    new_repo "$t" "$repo"
    sync
    ms=$(as_pg $AWS "$WORK/archiver.sh" "$wal" "$(cmd_of "$t" "$repo" "$fake")") || die "$t: archiving failed"
    echo "$ms" >>"$WORK/out/$t"
    [ "$(ls "$wal/archive_status" | grep -c '\.done$')" = "$SEGMENTS" ] || die "$t: not every segment acknowledged"
    case $t in
      pitr|pitr-async) got=$(as_pg "$WORK/bin/pitr" --repo "$repo" --json info | grep -c '"segments": '"$SEGMENTS") ;;
      pitr-s3*) got=$(as_pg $AWS "$WORK/bin/pitr" --repo "s3://$SW_BUCKET$repo" $PITR_S3 --json info | grep -c '"segments": '"$SEGMENTS") ;;
      cp) got=$(( $(ls "$repo" | wc -l) == SEGMENTS )) ;;
      *) got=1 ;;
    esac
    [ "$got" -ge 1 ] || die "$t: the repository does not list the $SEGMENTS segments"
    log "run $r: $t $ms ms"
    # Let a lingering worker (pitr's push-ahead, pgBackRest's async process) exit before the next tool.
    sleep 2
    rm -rf "$fake"
  done
done

# ---------------------------------------------------------------- report
declare -A MED
for t in "${TOOLS[@]}"; do MED[$t]=$(median <"$WORK/out/$t"); done
printf '\nBacklog drain: %s segments of 16 MB (%s bytes) of pgbench WAL, PostgreSQL 15, pgBackRest %s (zst), %s CPUs\n' \
  "$SEGMENTS" "$SEG_BYTES" "$PGBR_VERSION" "$(nproc)"
printf 'load average: before %s, after %s; median of %s runs (all runs in ms)\n' "$LOAD_BEFORE" "$(cut -d' ' -f1-3 /proc/loadavg)" "$REPEAT"
printf '%-15s %9s %9s  %s\n' tool "ms" "seg/s" runs
for t in "${TOOLS[@]}"; do
  awk -v t="$t" -v m="${MED[$t]}" -v n="$SEGMENTS" -v runs="$(tr '\n' ' ' <"$WORK/out/$t")" \
    'BEGIN { printf "%-15s %9d %9.1f  %s\n", t, m, n * 1000 / m, runs }'
done
ratio() { awk -v a="${MED[$1]}" -v b="${MED[$2]}" 'BEGIN { printf "%.2fx", b / a }'; }
printf '\nratios (speed of the first over the second; target: pitr async >= 2x pgBackRest async):\n'
if [ "$WHERE" != s3 ]; then
  printf '  local: pitr-async/pgbr-async %s, pitr-async/pgbr %s, pitr-async/cp %s, pitr-async/pitr %s\n' \
    "$(ratio pitr-async pgbr-async)" "$(ratio pitr-async pgbr)" "$(ratio pitr-async cp)" "$(ratio pitr-async pitr)"
fi
if [ "$WHERE" != local ]; then
  printf '  s3:    pitr-s3-async/pgbr-s3-async %s, pitr-s3-async/pgbr-s3 %s, pitr-s3-async/pitr-s3 %s\n' \
    "$(ratio pitr-s3-async pgbr-s3-async)" "$(ratio pitr-s3-async pgbr-s3)" "$(ratio pitr-s3-async pitr-s3)"
fi
