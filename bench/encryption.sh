#!/usr/bin/env bash
# Encryption cost: the same work into an unencrypted and an encrypted repository, interleaved,
# in one run: archive-push (one process per real 16 MB pgbench segment, as the archiver calls
# it; --no-async: each call pushes its own file, so what is measured is the cost of one push),
# full backup and restore (pgbench scale N, PostgreSQL 15). Prints wall and CPU seconds of
# each and the encrypted/plain ratio (target: at most 1.10).
#
# Usage: bench/encryption.sh [--segments N] [--scale N] [--repeat N] [--keep] [--workdir DIR]
# Environment: PITR_BIN (use this binary, skip the build), PGBIN (PostgreSQL bin dir, default
# /usr/lib/postgresql/15/bin), BENCH_PORT (default 25437). Run as root; PostgreSQL and pitr run
# as the postgres OS user.
set -euo pipefail

SEGMENTS=32
SCALE=20
REPEAT=3
KEEP=0
WORKPARENT=${TMPDIR:-/tmp}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PORT=${BENCH_PORT:-25437}

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case $1 in
    --segments) SEGMENTS=$2; shift 2 ;;
    --scale) SCALE=$2; shift 2 ;;
    --repeat) REPEAT=$2; shift 2 ;;
    --workdir) WORKPARENT=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "encryption.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || die "run as root (PostgreSQL and pitr run as the postgres OS user)"
[ -x "$PGBIN/pgbench" ] || die "no PostgreSQL with pgbench in $PGBIN"
REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
ensure_pitr_bin "$REPO_ROOT"

WORK=$(mktemp -d "$WORKPARENT/pitr-bench-enc.XXXXXX")
chmod 755 "$WORK"
PGDATA=$WORK/pgdata
SOCK=$WORK/sock
mkdir -p "$SOCK" "$WORK/staging" "$WORK/segments" "$WORK/bin" "$WORK/out"
cp "$PITR_BIN" "$WORK/bin/pitr"
openssl rand -hex 32 >"$WORK/repo.key"
chmod 600 "$WORK/repo.key"
chown -R postgres: "$WORK"
as_pg() { runuser -u postgres -- "$@"; }
cleanup() {
  local rc=$?
  [ -f "$PGDATA/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate stop >/dev/null 2>&1
  if [ $KEEP = 1 ] || [ $rc != 0 ]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
psql_pg() { psql -X -q -At -h "$SOCK" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }
PITR=$WORK/bin/pitr
KEY="--encryption-key-file $WORK/repo.key"
# pitr for variant $1 (plain|enc) and repository $2.
pitr_for() { if [ "$1" = enc ]; then echo "$PITR --repo $2 $KEY"; else echo "$PITR --repo $2"; fi; }
TIMEFORMAT='%R %U %S'
# timed FILE CMD...: appends "wall user sys" of CMD to FILE.
timed() { local f=$1; shift; { time "$@" >/dev/null 2>"$WORK/out/last.err"; } 2>>"$f" || { cat "$WORK/out/last.err" >&2; die "$* failed"; }; }
sum() { awk '{ w += $1; c += $2 + $3 } END { printf "%.3f %.3f", w, c }' "$1"; }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

log "initdb + pgbench -i -s $SCALE, then $SEGMENTS segments of pgbench WAL"
as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres -A trust --locale=C -E UTF8 -k >/dev/null
for v in plain enc; do as_pg $(pitr_for $v "$WORK/repo-$v") init >/dev/null; done
cat >>"$PGDATA/postgresql.conf" <<EOF2
port = $PORT
listen_addresses = ''
unix_socket_directories = '$SOCK'
wal_level = replica
archive_mode = on
archive_command = '$(pitr_for plain "$WORK/repo-plain") archive-push --no-async %p && $(pitr_for enc "$WORK/repo-enc") archive-push --no-async %p && cp %p $WORK/staging/%f'
max_wal_size = 1GB
EOF2
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$WORK/postgres.log" -w start >/dev/null
PGHOST=$SOCK PGPORT=$PORT PGUSER=postgres "$PGBIN/pgbench" -i -q -s "$SCALE" postgres >/dev/null 2>&1
until [ "$(ls "$WORK/staging" | grep -c '^[0-9A-F]\{24\}$')" -ge $((SEGMENTS + 2)) ]; do
  PGHOST=$SOCK PGPORT=$PORT PGUSER=postgres "$PGBIN/pgbench" -n -c 4 -j 2 -T 5 postgres >/dev/null 2>&1
  psql_pg -c 'SELECT pg_switch_wal()' >/dev/null
  sleep 1
done
ls "$WORK/staging" | grep '^[0-9A-F]\{24\}$' | tail -n "$SEGMENTS" | while read -r s; do cp "$WORK/staging/$s" "$WORK/segments/"; done
chown -R postgres: "$WORK/segments"

log "archive-push: $SEGMENTS segments x $REPEAT runs, interleaved segment by segment"
for r in $(seq "$REPEAT"); do
  for v in plain enc; do as_pg $(pitr_for $v "$WORK/push-$v-$r") init >/dev/null; done
  for s in "$WORK"/segments/*; do
    for v in plain enc; do timed "$WORK/out/push-$v-$r" as_pg $(pitr_for $v "$WORK/push-$v-$r") archive-push --no-async "$s"; done
  done
done

log "backup and restore: $REPEAT runs each, alternating"
for r in $(seq "$REPEAT"); do
  for v in plain enc; do
    sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
    timed "$WORK/out/backup-$v-$r" as_pg $(pitr_for $v "$WORK/repo-$v") backup -h "$SOCK" -p "$PORT" -U postgres
  done
done
for r in $(seq "$REPEAT"); do
  for v in plain enc; do
    rm -rf "$WORK/out/restored"
    sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
    timed "$WORK/out/restore-$v-$r" as_pg $(pitr_for $v "$WORK/repo-$v") restore --pgdata "$WORK/out/restored"
  done
done
rm -rf "$WORK/out/restored"

printf '%-12s %-6s %10s %10s   (median of %s runs; wall and CPU seconds)\n' what repo wall cpu "$REPEAT"
for what in push backup restore; do
  declare -A W C
  for v in plain enc; do
    W[$v]=$(for r in $(seq "$REPEAT"); do sum "$WORK/out/$what-$v-$r" | cut -d' ' -f1; done | median)
    C[$v]=$(for r in $(seq "$REPEAT"); do sum "$WORK/out/$what-$v-$r" | cut -d' ' -f2; done | median)
    printf '%-12s %-6s %10s %10s\n' "$what" "$v" "${W[$v]}" "${C[$v]}"
  done
  awk -v a="${W[enc]}" -v b="${W[plain]}" -v c="${C[enc]}" -v d="${C[plain]}" -v w="$what" \
    'BEGIN { printf "%-12s ratio  %10.3f %10.3f   (encrypted / plain)\n", w, a / b, c / d }'
done
printf 'repository sizes: plain %s bytes, encrypted %s bytes\n' "$(du -sb "$WORK/repo-plain" | cut -f1)" "$(du -sb "$WORK/repo-enc" | cut -f1)"
