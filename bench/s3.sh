#!/usr/bin/env bash
# S3 benchmark: pitr with its repository on SeaweedFS vs pgBackRest 2.45 on the same SeaweedFS
# vs pitr with a local repository, in one run, on a pgbench cluster (PostgreSQL 15).
#
# Usage: bench/s3.sh [--segments N] [--scale N] [--repeat N] [--profile] [--keep] [--workdir DIR]
#
# Measures, for each of pitr-s3, pgbackrest-s3 and pitr-local:
#   push:    archive-push of N real 16 MB pgbench segments, one process per segment (as the
#            archiver calls it), interleaved segment by segment across the tools
#   backup:  full backup (pitr: zstd, all cores; pgBackRest: zst, process-max 2)
#   restore: restore of that backup into an empty directory
# each --repeat times (median), wall and CPU seconds, repository bytes, and the ratios
# pgBackRest/pitr (targets: pitr >= 2x pgBackRest's speed, repository <= 1.1x its size).
# --profile: after the pushes, where one push's time goes: `perf stat` (task clock, context
# switches) of 8 pushes by each tool into fresh repositories, of `pitr --version` (process
# start) and `strace -c -f` of one pitr push on S3 (needs perf and strace).
# SeaweedFS's S3 API runs over TLS with a certificate from a private CA made by openssl:
# pgBackRest (2.45 speaks S3 only over https) with repo1-storage-verify-tls=n, pitr with
# --s3-ca-file, both on the same https port.
# Environment: PITR_BIN (use this binary), PGBIN (PostgreSQL 15 bin dir), BENCH_PORT (25439),
# BENCH_S3_PORT (28300: SeaweedFS uses it and the next 7, and +10000 for three gRPC ports).
set -euo pipefail

SEGMENTS=32
SCALE=30
REPEAT=3
KEEP=0
PROFILE=0
WORKPARENT=${TMPDIR:-/tmp}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PORT=${BENCH_PORT:-25439}
STANZA=bench

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case $1 in
    --segments) SEGMENTS=$2; shift 2 ;;
    --scale) SCALE=$2; shift 2 ;;
    --repeat) REPEAT=$2; shift 2 ;;
    --workdir) WORKPARENT=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --profile) PROFILE=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "s3.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || die "run as root (PostgreSQL and the tools run as the postgres OS user)"
id postgres >/dev/null 2>&1 || die "no postgres OS user (install postgresql-15)"
[ -x "$PGBIN/pgbench" ] || die "no PostgreSQL 15 with pgbench in $PGBIN"
command -v curl >/dev/null || die "curl missing"
ensure_pgbackrest
[ "$PGBR_VERSION" = 2.45 ] || log "warning: pgBackRest $PGBR_VERSION (the target is stated against 2.45)"

REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
ensure_pitr_bin "$REPO_ROOT"

WORK=$(mktemp -d "$WORKPARENT/pitr-bench-s3.XXXXXX")
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
TIMEFORMAT='%R %U %S'
# timed FILE CMD...: appends "wall user sys" of CMD to FILE.
timed() { local f=$1; shift; { time "$@" >/dev/null 2>"$WORK/out/last.err"; } 2>>"$f" || { cat "$WORK/out/last.err" >&2; die "$* failed"; }; }
sum() { awk '{ w += $1; c += $2 + $3 } END { printf "%.3f %.3f", w, c }' "$1"; }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }

start_seaweedfs "$WORK/seaweedfs"
chown -R postgres: "$WORK"
# The credentials reach every pitr process (and PostgreSQL's archive_command) from the
# environment, the endpoint and CA from flags; pgBackRest reads them from its configuration.
AWS="env AWS_ACCESS_KEY_ID=$SW_KEY AWS_SECRET_ACCESS_KEY=$SW_SECRET"
# tool_cmd TOOL REPO: the command line of TOOL with its repository at REPO (a bucket prefix for
# pitr-s3, a directory for pitr-local, a repo1-path for pgbackrest-s3).
tool_cmd() {
  case $1 in
    pitr-s3) echo "$WORK/bin/pitr --repo s3://$SW_BUCKET/$2 --s3-endpoint $SW_HTTPS --s3-ca-file $SW_CA" ;;
    pitr-local) echo "$WORK/bin/pitr --repo $2" ;;
    pgbackrest-s3) echo "pgbackrest --config=$WORK/pgbackrest.conf --stanza=$STANZA --repo1-path=$2" ;;
  esac
}
# push_cmd TOOL: its archive-push subcommand, one file per process (pitr: --no-async, so that
# each call pushes its own file: the cost of one push is what is measured; bench/archive-async.sh
# measures the asynchronous drain).
push_cmd() { case $1 in pgbackrest-s3) echo archive-push ;; *) echo "archive-push --no-async" ;; esac; }
declare -A MAIN=([pitr-s3]=pitr [pitr-local]=$WORK/repo-pitr [pgbackrest-s3]=/pgbackrest)
TOOLS=(pitr-s3 pgbackrest-s3 pitr-local)
write_pgbackrest_conf "$WORK/pgbackrest.conf" "$WORK" "$STANZA" "$PGDATA" "$PORT" "$SOCK" \
  repo1-type=s3 repo1-path=/pgbackrest "repo1-s3-bucket=$SW_BUCKET" repo1-s3-endpoint=127.0.0.1 \
  "repo1-storage-port=$SW_HTTPS_PORT" repo1-s3-region=us-east-1 repo1-s3-uri-style=path \
  "repo1-s3-key=$SW_KEY" "repo1-s3-key-secret=$SW_SECRET" repo1-storage-verify-tls=n \
  process-max=2 start-fast=y
chmod 600 "$WORK/pgbackrest.conf"
# run_tool TOOL REPO ARGS...: TOOL on REPO as the postgres OS user, with the S3 credentials.
run_tool() { local t=$1 r=$2; shift 2; as_pg $AWS $(tool_cmd "$t" "$r") "$@"; }
# main TOOL ARGS...: TOOL on its main repository (the one the archiver feeds).
main() { local t=$1; shift; run_tool "$t" "${MAIN[$t]}" "$@"; }

log "initdb + pgbench -i -s $SCALE (PostgreSQL 15, data checksums), then $SEGMENTS segments of pgbench WAL"
as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres -A trust --locale=C -E UTF8 -k >/dev/null
main pitr-s3 init >/dev/null
main pitr-local init >/dev/null
cat >>"$PGDATA/postgresql.conf" <<EOF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$SOCK'
wal_level = replica
archive_mode = on
archive_command = 'cp %p $WORK/staging/%f'
max_wal_size = 1GB
EOF
as_pg $AWS "$PGBIN/pg_ctl" -D "$PGDATA" -l "$WORK/postgres.log" -w start >/dev/null
main pgbackrest-s3 stanza-create
PGHOST=$SOCK PGPORT=$PORT PGUSER=postgres "$PGBIN/pgbench" -i -q -s "$SCALE" postgres >/dev/null 2>&1
psql_pg -c 'SELECT pg_switch_wal()' >/dev/null
until [ "$(ls "$WORK/staging" | grep -c '^[0-9A-F]\{24\}$')" -ge $((SEGMENTS + 2)) ]; do
  PGHOST=$SOCK PGPORT=$PORT PGUSER=postgres "$PGBIN/pgbench" -n -c 4 -j 2 -T 5 postgres >/dev/null 2>&1
  psql_pg -c 'SELECT pg_switch_wal()' >/dev/null
  sleep 1
done
ls "$WORK/staging" | grep '^[0-9A-F]\{24\}$' | tail -n "$SEGMENTS" | while read -r s; do cp "$WORK/staging/$s" "$WORK/segments/"; done
chown -R postgres: "$WORK/segments"
# From now on the archiver feeds all three repositories (backups wait for their last segment).
cat >>"$PGDATA/postgresql.conf" <<EOF
archive_command = '$(tool_cmd pitr-s3 "${MAIN[pitr-s3]}") archive-push --no-async %p && $(tool_cmd pitr-local "${MAIN[pitr-local]}") archive-push --no-async %p && $(tool_cmd pgbackrest-s3 "${MAIN[pgbackrest-s3]}") archive-push %p'
EOF
psql_pg -c 'SELECT pg_reload_conf()' >/dev/null
DB_BYTES=$(( $(du -sb "$PGDATA" | cut -f1) - $(du -sb "$PGDATA/pg_wal" | cut -f1) ))

# Each run pushes the same segments into fresh repositories: pitr into a new prefix / directory,
# pgBackRest into a new repo1-path (stanza-create while the server runs).
log "archive-push: $SEGMENTS segments x $REPEAT runs, one process per segment, interleaved"
for r in $(seq "$REPEAT"); do
  declare -A PR=([pitr-s3]=push-pitr-$r [pitr-local]=$WORK/push-local-$r [pgbackrest-s3]=/push-pgbackrest-$r)
  run_tool pitr-s3 "${PR[pitr-s3]}" init >/dev/null
  run_tool pitr-local "${PR[pitr-local]}" init >/dev/null
  run_tool pgbackrest-s3 "${PR[pgbackrest-s3]}" stanza-create >/dev/null
  i=0
  for s in "$WORK"/segments/*; do
    # Start with a different tool for each segment, so load from elsewhere hits all alike.
    for k in 0 1 2; do
      t=${TOOLS[$(( (i + k) % 3 ))]}
      timed "$WORK/out/push-$t-$r" run_tool "$t" "${PR[$t]}" $(push_cmd "$t") "$s"
    done
    i=$((i + 1))
  done
done
declare -A PUSHB
PUSHB[pitr-s3]=$(s3_prefix_bytes push-pitr-1)
PUSHB[pgbackrest-s3]=$(s3_prefix_bytes push-pgbackrest-1)
PUSHB[pitr-local]=$(du -sb "$WORK/push-local-1" | cut -f1)

if [ $PROFILE = 1 ]; then
  log "profile: 8 pushes by each tool into fresh repositories under perf stat; strace -c of one pitr push on S3"
  declare -A PP=([pitr-s3]=prof-pitr [pitr-local]=$WORK/prof-local [pgbackrest-s3]=/prof-pgbackrest)
  run_tool pitr-s3 "${PP[pitr-s3]}" init >/dev/null
  run_tool pitr-local "${PP[pitr-local]}" init >/dev/null
  run_tool pgbackrest-s3 "${PP[pgbackrest-s3]}" stanza-create >/dev/null
  for t in "${TOOLS[@]}"; do
    for s in $(ls "$WORK"/segments/* | head -8); do
      as_pg $AWS perf stat -x, -e task-clock,context-switches,cpu-migrations,page-faults \
        -o "$WORK/out/perf-$t" --append $(tool_cmd "$t" "${PP[$t]}") $(push_cmd "$t") "$s" >/dev/null
    done
    awk -F, -v t="$t" '$3 ~ /^task-clock/ { ms += $1; n++ } $3 ~ /^context-switches/ { cs += $1 }
      $3 ~ /^page-faults/ { pf += $1 }
      END { printf "profile %-14s %6.1f ms CPU per push, %5.0f context switches, %6.0f page faults (%d pushes)\n", t, ms / n, cs / n, pf / n, n }' "$WORK/out/perf-$t"
  done
  for i in 1 2 3 4 5; do
    as_pg perf stat -x, -e task-clock -o "$WORK/out/perf-version" --append "$WORK/bin/pitr" --version >/dev/null
  done
  awk -F, '$3 ~ /^task-clock/ { ms += $1; n++ } END { printf "profile pitr --version      %6.1f ms CPU (process start)\n", ms / n }' "$WORK/out/perf-version"
  s=$(ls "$WORK"/segments/* | sed -n 9p)
  as_pg $AWS strace -f -c -o "$WORK/out/strace-push" $(tool_cmd pitr-s3 "${PP[pitr-s3]}") archive-push --no-async "$s" >/dev/null
  sed 's/^/profile strace: /' "$WORK/out/strace-push" | head -25
  # Which directories the push opens files in (certificate stores, configuration...).
  s=$(ls "$WORK"/segments/* | sed -n 10p)
  as_pg $AWS strace -f -e trace=openat -o "$WORK/out/strace-open" $(tool_cmd pitr-s3 "${PP[pitr-s3]}") archive-push --no-async "$s" >/dev/null
  grep -o 'openat([^"]*"[^"]*"' "$WORK/out/strace-open" | sed 's/.*"\(.*\)\/[^/]*"$/\1/' | sort | uniq -c | sort -rn | head -5 | sed 's/^/profile files opened in: /'
fi

log "backup: $REPEAT runs of each, alternating"
for r in $(seq "$REPEAT"); do
  for t in "${TOOLS[@]}"; do
    drop_caches
    case $t in
      pgbackrest-s3) timed "$WORK/out/backup-$t-$r" main $t --type=full backup ;;
      *) timed "$WORK/out/backup-$t-$r" main $t backup -h "$SOCK" -p "$PORT" -U postgres ;;
    esac
  done
done
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
declare -A REPOB
REPOB[pitr-s3]=$(s3_prefix_bytes pitr)
REPOB[pgbackrest-s3]=$(s3_prefix_bytes pgbackrest)
REPOB[pitr-local]=$(du -sb "$WORK/repo-pitr" | cut -f1)

log "restore of the last backup: $REPEAT runs of each, alternating"
for r in $(seq "$REPEAT"); do
  for t in "${TOOLS[@]}"; do
    rm -rf "$WORK/out/restored"
    drop_caches
    case $t in
      pgbackrest-s3) as_pg mkdir -m 700 "$WORK/out/restored"
        timed "$WORK/out/restore-$t-$r" main $t --pg1-path="$WORK/out/restored" restore ;;
      *) timed "$WORK/out/restore-$t-$r" main $t restore --pgdata "$WORK/out/restored" ;;
    esac
    [ -f "$WORK/out/restored/global/pg_control" ] || die "$t restored no pg_control"
  done
done
rm -rf "$WORK/out/restored"

# ---------------------------------------------------------------- report
printf '\nS3 (SeaweedFS over https): pgbench scale %s, data directory %s MB, %s segments of 16 MB, PostgreSQL 15, pgBackRest %s, %s CPUs, load %s\n' \
  "$SCALE" $((DB_BYTES / 1048576)) "$SEGMENTS" "$PGBR_VERSION" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-8s %-14s %9s %9s %14s %12s %10s   (median of %s runs)\n' step tool wall cpu bytes speed/pgbr size/pgbr "$REPEAT"
for what in push backup restore; do
  declare -A W C
  for t in "${TOOLS[@]}"; do
    W[$t]=$(for r in $(seq "$REPEAT"); do sum "$WORK/out/$what-$t-$r" | cut -d' ' -f1; done | median)
    C[$t]=$(for r in $(seq "$REPEAT"); do sum "$WORK/out/$what-$t-$r" | cut -d' ' -f2; done | median)
  done
  for t in "${TOOLS[@]}"; do
    case $what in push) b=${PUSHB[$t]} ;; backup) b=${REPOB[$t]} ;; *) b=- ;; esac
    base=${PUSHB[pgbackrest-s3]}; [ "$what" = push ] || base=${REPOB[pgbackrest-s3]}
    awk -v w="${W[$t]}" -v c="${C[$t]}" -v pw="${W[pgbackrest-s3]}" -v b="$b" -v pb="$base" \
      -v what="$what" -v t="$t" 'BEGIN {
        sz = (b == "-") ? "-" : sprintf("%.3fx", b / pb)
        printf "%-8s %-14s %9.3f %9.3f %14s %11.2fx %10s\n", what, t, w, c, b, pw / w, sz }'
  done
done
printf 'bytes: push = the pushed segments; backup = the whole repository (all WAL archived plus %s full backups)\n' "$REPEAT"
printf 'targets: pitr-s3 >= 2x pgbackrest-s3 speed for push, backup and restore; size <= 1.1x\n'
