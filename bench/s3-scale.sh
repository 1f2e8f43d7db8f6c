#!/usr/bin/env bash
# S3 at scale: `pitr info`, restore planning (`restore --dry-run`) and `expire` on a repository
# on SeaweedFS holding N archived WAL segments (100,000 by default) and three backups.
# Target: each under 5 s on S3; with --local (the repository a local directory), under 1 s.
#
# Usage: bench/s3-scale.sh [--segments N] [--jobs N] [--local] [--keep] [--workdir DIR]
#
# How the repository is made (PostgreSQL 15, 1 MB WAL segments): the real archiver archives
# a few segments and a first backup is taken; the server stops; the `populate_wal` example
# stores N segments after the last archived one through pitr's repository API, exactly as
# archive-push stores them (zstd frames of real WAL pages: a real segment of the cluster with
# each page header's address rewritten); `pg_resetwal -l` moves the server past them, and two
# more backups follow, archived by the real archiver. So the WAL of timeline 1 has no gap from
# the first backup to the last, over N + a few segments.
# Timed: info (text and --json), restore --dry-run (to the latest point, then to a time
# before the second backup), expire --retain-full 1 --dry-run, then expire --retain-full 1
# (which deletes the first two backups and the N + a few segments before the third).
# Environment: PITR_BIN, PGBIN (PostgreSQL 15 bin dir), BENCH_PORT (25441), BENCH_S3_PORT
# (28320).
set -euo pipefail

SEGMENTS=100000
JOBS=64
KEEP=0
LOCAL=0
WORKPARENT=${TMPDIR:-/tmp}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PORT=${BENCH_PORT:-25441}
export BENCH_S3_PORT=${BENCH_S3_PORT:-28320}

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case $1 in
    --segments) SEGMENTS=$2; shift 2 ;;
    --jobs) JOBS=$2; shift 2 ;;
    --local) LOCAL=1; shift ;;
    --workdir) WORKPARENT=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "s3-scale.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || die "run as root (PostgreSQL and pitr run as the postgres OS user)"
[ -x "$PGBIN/pg_resetwal" ] || die "no PostgreSQL 15 in $PGBIN"
command -v curl >/dev/null || die "curl missing"

REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
if [ -z "${PITR_BIN:-}" ] || [ ! -x "$TARGET_DIR/release/examples/populate_wal" ]; then
  log "cargo build --release -p pitr --bin pitr --example populate_wal"
  (cd "$REPO_ROOT" && cargo build --release -q -p pitr --bin pitr --example populate_wal) || die "cargo build failed"
fi
PITR_BIN=${PITR_BIN:-$TARGET_DIR/release/pitr}

WORK=$(mktemp -d "$WORKPARENT/pitr-bench-s3scale.XXXXXX")
chmod 755 "$WORK"
PGDATA=$WORK/pgdata
SOCK=$WORK/sock
mkdir -p "$SOCK" "$WORK/bin" "$WORK/out"
cp "$PITR_BIN" "$WORK/bin/pitr"
cp "$TARGET_DIR/release/examples/populate_wal" "$WORK/bin/"
as_pg() { runuser -u postgres -- "$@"; }
cleanup() {
  local rc=$?
  [ -f "$PGDATA/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate stop >/dev/null 2>&1
  [ $LOCAL = 1 ] || stop_seaweedfs
  if [ $KEEP = 1 ] || [ $rc != 0 ]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
psql_pg() { psql -X -q -At -h "$SOCK" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }

[ $LOCAL = 1 ] || start_seaweedfs "$WORK/seaweedfs"
chown -R postgres: "$WORK"
if [ $LOCAL = 1 ]; then
  URL=$WORK/repo
  AWS=env
else
  URL=s3://$SW_BUCKET/scale
  AWS="env AWS_ACCESS_KEY_ID=$SW_KEY AWS_SECRET_ACCESS_KEY=$SW_SECRET AWS_ENDPOINT_URL=$SW_HTTP AWS_REGION=us-east-1"
fi
PITR="$WORK/bin/pitr --repo $URL"
pitr() { as_pg $AWS $PITR "$@"; }
backup() { pitr backup -h "$SOCK" -p "$PORT" -U postgres >/dev/null; }
# wait_archived: switches WAL and waits until the segment closed is in the repository.
wait_archived() {
  local seg; seg=$(psql_pg -c 'SELECT pg_walfile_name(pg_switch_wal())')
  for _ in $(seq 600); do
    [ "$(psql_pg -c 'SELECT last_archived_wal FROM pg_stat_archiver')" \> "$seg" ] ||
      [ "$(psql_pg -c 'SELECT last_archived_wal FROM pg_stat_archiver')" = "$seg" ] && { echo "$seg"; return; }
    sleep 0.1
  done
  die "$seg not archived"
}

log "initdb (1 MB segments), archiving into $URL; first backup"
as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres -A trust --locale=C -E UTF8 --wal-segsize=1 >/dev/null
pitr init >/dev/null
cat >>"$PGDATA/postgresql.conf" <<EOF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$SOCK'
wal_level = replica
archive_mode = on
archive_command = '$PITR archive-push %p'
EOF
as_pg $AWS "$PGBIN/pg_ctl" -D "$PGDATA" -l "$WORK/postgres.log" -w start >/dev/null
psql_pg -c 'CREATE TABLE t AS SELECT g FROM generate_series(1, 10000) g' >/dev/null
backup
psql_pg -c 'INSERT INTO t SELECT generate_series(1, 10000)' >/dev/null
wait_archived >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
LAST=$(pitr --json info | grep -o '"last": *"[0-9A-F]\{24\}"' | head -1 | grep -o '[0-9A-F]\{24\}')
log "last segment archived by PostgreSQL: $LAST"
pitr archive-get "$LAST" "$WORK/template" && chown postgres: "$WORK/template"

log "storing $SEGMENTS segments after $LAST ($JOBS at a time)"
t0=$(now)
read -r END _ _ < <(as_pg $AWS "$WORK/bin/populate_wal" "$URL" main "$WORK/template" "$LAST" "$SEGMENTS" "$JOBS")
log "stored up to $END in $(since "$t0") s"
NEXT=$(printf '%s%08X' "${END:0:16}" $((16#${END:16:8} + 1)))
[ "${#NEXT}" = 24 ] && [ $((16#${END:16:8})) -lt 4095 ] || NEXT=$(printf '%s%08X%08X' "${END:0:8}" $((16#${END:8:8} + 1)) 0)
as_pg "$PGBIN/pg_resetwal" -l "$NEXT" "$PGDATA" >/dev/null
as_pg $AWS "$PGBIN/pg_ctl" -D "$PGDATA" -l "$WORK/postgres.log" -w start >/dev/null
log "server moved to $NEXT; second and third backups"
backup
psql_pg -c 'INSERT INTO t SELECT generate_series(1, 10000)' >/dev/null
wait_archived >/dev/null
MIDDLE=$(psql_pg -c 'SELECT now()')
psql_pg -c 'INSERT INTO t SELECT generate_series(1, 100)' >/dev/null
backup
wait_archived >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null

declare -A SECS
timed() { # name command...
  local name=$1; shift
  local t0; t0=$(now)
  "$@" >"$WORK/out/$name.out" 2>&1 || { cat "$WORK/out/$name.out" >&2; die "$name failed"; }
  SECS[$name]=$(since "$t0")
  log "$name: ${SECS[$name]} s"
}
timed info pitr info
timed info-json pitr --json info
SEGS=$(grep -o '"segments": *[0-9]*' "$WORK/out/info-json.out" | head -1 | grep -o '[0-9]*$')
grep -q '"gaps": *\[\]' "$WORK/out/info-json.out" || die "info reports a gap: $WORK/out/info-json.out"
timed restore-plan-latest pitr restore --dry-run --pgdata "$WORK/restored"
timed restore-plan-time pitr restore --dry-run --pgdata "$WORK/restored" --target-time "$MIDDLE"
timed expire-dry-run pitr expire --retain-full 1 --dry-run
timed expire pitr --json expire --retain-full 1
WAL_DELETED=$(grep -o '"wal_files": *[0-9]*' "$WORK/out/expire.out" | grep -o '[0-9]*$')
timed info-after pitr info

WHERE="S3 at scale (SeaweedFS, http)"; LIMIT=5
[ $LOCAL = 1 ] && { WHERE="At scale, local repository ($URL)"; LIMIT=1; }
printf '\n%s: %s archived segments of 1 MB on timeline 1 (%s generated), 3 backups, PostgreSQL 15, %s CPUs, load %s\n' "$WHERE" \
  "$SEGS" "$SEGMENTS" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
for k in info info-json restore-plan-latest restore-plan-time expire-dry-run expire info-after; do
  printf '%-22s %8s s\n' "$k" "${SECS[$k]}"
done
printf 'expire removed %s WAL files\ntarget: info, restore planning and expire each under %s s\n' "$WAL_DELETED" "$LIMIT"
