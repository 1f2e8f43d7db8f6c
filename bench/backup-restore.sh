#!/usr/bin/env bash
# backup / restore / replay benchmark: pitr vs pgBackRest 2.45 vs pg_basebackup vs cp, in one
# run, on a pgbench cluster (PostgreSQL 15, scale 50 by default).
#
# Usage: bench/backup-restore.sh [--scale N] [--segments N] [--keep] [--workdir DIR]
#
# Measures, each tool on the same cluster:
#   backup:  pitr backup (zstd, -j cores; copy, and --method replication) | pgbackrest backup (zst, process-max 2) |
#            pg_basebackup -Fp (plain) | pg_basebackup -Ft --compress=client-zstd | cp -a + sync
#   restore: pitr restore | pgbackrest restore (process-max 2) | tar -x of the zstd tarball |
#            cp -a of the plain copy + sync
#   replay:  recovery of N archived segments (64) from the plain base backup through
#            restore_command = cp | pitr archive-get (prefetching) | pgbackrest archive-get,
#            timed from pg_ctl start to the end of recovery (promotion), best of 2 rounds
# and prints seconds, MB/s (data directory size / seconds), stored size and ratios to pgBackRest
# (backup, restore) and to cp (replay).
# Environment: PITR_BIN (use this binary), PGBIN (PostgreSQL 15 bin dir), BENCH_PORT (25435).
set -euo pipefail

SCALE=50
SEGMENTS=64
KEEP=0
WORKPARENT=${TMPDIR:-/tmp}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PORT=${BENCH_PORT:-25435}
STANZA=bench

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case $1 in
    --scale) SCALE=$2; shift 2 ;;
    --segments) SEGMENTS=$2; shift 2 ;;
    --workdir) WORKPARENT=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "backup-restore.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || die "run as root (PostgreSQL and the tools run as the postgres OS user)"
id postgres >/dev/null 2>&1 || die "no postgres OS user (install postgresql-15)"
[ -x "$PGBIN/pgbench" ] || die "no PostgreSQL 15 with pgbench in $PGBIN"
command -v zstd >/dev/null || { apt-get install -y -qq zstd >/dev/null 2>&1 || die "zstd missing"; }
ensure_pgbackrest

REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
ensure_pitr_bin "$REPO_ROOT"

WORK=$(mktemp -d "$WORKPARENT/pitr-bench-br.XXXXXX")
chmod 755 "$WORK"
PGDATA=$WORK/pgdata
SOCK=$WORK/sock
BIN=$WORK/bin
PGBR_CONF=$WORK/pgbackrest.conf
mkdir -p "$SOCK" "$BIN" "$WORK/wal-cp" "$WORK/repo-pgbackrest" "$WORK/out"
cp "$PITR_BIN" "$BIN/pitr"
chown -R postgres: "$WORK"
as_pg() { runuser -u postgres -- "$@"; }
cleanup() {
  local rc=$?
  for d in "$WORK"/pgdata "$WORK"/out/replay-*; do
    [ -f "$d/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1
  done
  if [ $KEEP = 1 ] || [ $rc != 0 ]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
psql_pg() { psql -X -q -At -h "$SOCK" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
size() { du -sb "$1" | cut -f1; }

write_pgbackrest_conf "$PGBR_CONF" "$WORK" "$STANZA" "$PGDATA" "$PORT" "$SOCK" process-max=2 start-fast=y
PGBR="pgbackrest --config=$PGBR_CONF --stanza=$STANZA"
PITR="$BIN/pitr --repo $WORK/repo-pitr"

log "initdb + pgbench -i -s $SCALE (PostgreSQL 15, data checksums)"
as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres -A trust --locale=C -E UTF8 -k >/dev/null
as_pg $PITR init >/dev/null
cat >>"$PGDATA/postgresql.conf" <<EOF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$SOCK'
wal_level = replica
archive_mode = on
archive_command = '$PITR archive-push %p && $PGBR archive-push %p && cp %p $WORK/wal-cp/%f'
max_wal_size = 1GB
EOF
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$WORK/postgres.log" -w start >/dev/null
as_pg $PGBR stanza-create >/dev/null
PGHOST=$SOCK PGPORT=$PORT PGUSER=postgres "$PGBIN/pgbench" -i -q -s "$SCALE" postgres >/dev/null 2>&1
psql_pg -c 'CHECKPOINT' >/dev/null
DB_BYTES=$(( $(size "$PGDATA") - $(size "$PGDATA/pg_wal") ))
log "data directory without pg_wal: $DB_BYTES bytes"

declare -A SECS BYTES REDO
run() { # name dest-size-path command...
  local name=$1 dest=$2; shift 2
  sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
  local t0; t0=$(now)
  "$@" >"$WORK/out/$name.log" 2>&1 || { cat "$WORK/out/$name.log" >&2; die "$name failed"; }
  sync
  SECS[$name]=$(since "$t0")
  BYTES[$name]=$([ -e "$dest" ] && size "$dest" || echo 0)
  log "$name: ${SECS[$name]} s, ${BYTES[$name]} bytes"
}

# ---------------------------------------------------------------- backups
run backup-pitr "$WORK/repo-pitr/main/backup" as_pg $PITR backup -h "$SOCK" -p "$PORT" -U postgres
# The same over the replication protocol (BASE_BACKUP) into the same repository (where its WAL is
# archived); its stored bytes are what it added.
run backup-pitr-replication "$WORK/repo-pitr/main/backup" as_pg $PITR backup --method replication -h "$SOCK" -p "$PORT" -U postgres
BYTES[backup-pitr-replication]=$((BYTES[backup-pitr-replication] - BYTES[backup-pitr]))
run backup-pgbackrest "$WORK/repo-pgbackrest/backup" as_pg $PGBR --type=full backup
run backup-basebackup-plain "$WORK/out/bb-plain" as_pg "$PGBIN/pg_basebackup" -h "$SOCK" -p "$PORT" -U postgres -D "$WORK/out/bb-plain" -Fp -X fetch -c fast
run backup-basebackup-zstd "$WORK/out/bb-tar" as_pg "$PGBIN/pg_basebackup" -h "$SOCK" -p "$PORT" -U postgres -D "$WORK/out/bb-tar" -Ft -X fetch -c fast --compress=client-zstd
run backup-cp "$WORK/out/cp-copy" as_pg cp -a "$PGDATA" "$WORK/out/cp-copy"

# ---------------------------------------------------------------- WAL to replay
START_WAL=$(psql_pg -c 'SELECT pg_walfile_name(pg_current_wal_lsn())')
log "pgbench until $SEGMENTS more segments are archived"
TARGET=$(printf '%s%08X' "${START_WAL:0:16}" $((16#${START_WAL:16:8} + SEGMENTS)))
until [ -f "$WORK/wal-cp/$TARGET" ]; do
  PGHOST=$SOCK PGPORT=$PORT PGUSER=postgres "$PGBIN/pgbench" -n -c 4 -j 2 -T 10 postgres >/dev/null 2>&1
  psql_pg -c 'SELECT pg_switch_wal()' >/dev/null
  sleep 1
done
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
log "WAL archived from $START_WAL to $TARGET; primary stopped"

# ---------------------------------------------------------------- restores
run restore-pitr "$WORK/out/r-pitr" as_pg $PITR restore --pgdata "$WORK/out/r-pitr"
run restore-pgbackrest "$WORK/out/r-pgbr" as_pg $PGBR --pg1-path="$WORK/out/r-pgbr" restore
as_pg mkdir -m 700 "$WORK/out/r-tar"
run restore-basebackup-zstd "$WORK/out/r-tar" as_pg tar -I zstd -xf "$WORK/out/bb-tar/base.tar.zst" -C "$WORK/out/r-tar"
run restore-cp "$WORK/out/r-cp" as_pg cp -a "$WORK/out/bb-plain" "$WORK/out/r-cp"

# ---------------------------------------------------------------- replay through restore_command
replay() { # name restore_command
  local name=$1 cmd=$2 dir=$WORK/out/replay-$1
  as_pg cp -a "$WORK/out/bb-plain" "$dir"
  cat >>"$dir/postgresql.auto.conf" <<EOF
restore_command = '$cmd'
recovery_target_action = 'promote'
port = $PORT
EOF
  as_pg touch "$dir/recovery.signal"
  sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
  local t0; t0=$(now)
  as_pg "$PGBIN/pg_ctl" -D "$dir" -l "$WORK/out/replay-$name.log" -w -t 3600 start >/dev/null
  until [ "$(psql_pg -c 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ]; do sleep 0.05; done
  local secs; secs=$(since "$t0")
  # Best of the rounds: a first-run outlier (writeback of the copy, a busy neighbour) is noise.
  if [ -z "${SECS[replay-$name]:-}" ] || awk -v a="$secs" -v b="${SECS[replay-$name]}" 'BEGIN { exit !(a < b) }'; then
    SECS[replay-$name]=$secs
  fi
  BYTES[replay-$name]=0
  grep -q "archive recovery complete\|selected new timeline" "$WORK/out/replay-$name.log" ||
    die "replay-$name did not end recovery"
  # Every tool must have replayed the same WAL: recovery ends at the end of the archive.
  REDO[$name]=$(grep -o 'redo done at [0-9A-F/]*' "$WORK/out/replay-$name.log" | awk '{print $4}')
  [ -n "${REDO[$name]}" ] && [ "${REDO[$name]}" = "${REDO[cp]}" ] ||
    die "replay-$name stopped at ${REDO[$name]:-?}, cp at ${REDO[cp]}: see $WORK/out/replay-$name.log"
  as_pg "$PGBIN/pg_ctl" -D "$dir" -m immediate -w stop >/dev/null
  log "replay-$name: $secs s"
  rm -rf "$dir"
}

for round in 1 2; do
  log "replay round $round"
  replay cp "cp $WORK/wal-cp/%f %p"
  replay pitr "$PITR archive-get %f %p"
  replay pgbackrest "$PGBR --pg1-path=$WORK/out/replay-pgbackrest archive-get %f \"%p\""
done

# ---------------------------------------------------------------- report
mb() { awk -v b="$DB_BYTES" -v s="$1" 'BEGIN { printf "%.1f", b / 1048576 / s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
printf '\nbackup / restore / replay: pgbench scale %s, data directory %s MB without pg_wal, PostgreSQL 15, pgBackRest %s, %s CPUs\n' \
  "$SCALE" $((DB_BYTES / 1048576)) "$PGBR_VERSION" "$(nproc)"
printf '%-28s %9s %9s %14s %11s %11s\n' step seconds MB/s stored_bytes speed/pgbr size/pgbr
for k in backup-pitr backup-pitr-replication backup-pgbackrest backup-basebackup-plain backup-basebackup-zstd backup-cp; do
  printf '%-28s %9s %9s %14s %11s %11s\n' "$k" "${SECS[$k]}" "$(mb "${SECS[$k]}")" "${BYTES[$k]}" \
    "$(ratio "${SECS[backup-pgbackrest]}" "${SECS[$k]}")" "$(ratio "${BYTES[$k]}" "${BYTES[backup-pgbackrest]}")"
done
for k in restore-pitr restore-pgbackrest restore-basebackup-zstd restore-cp; do
  printf '%-28s %9s %9s %14s %11s\n' "$k" "${SECS[$k]}" "$(mb "${SECS[$k]}")" - \
    "$(ratio "${SECS[restore-pgbackrest]}" "${SECS[$k]}")"
done
printf '%-28s %9s %9s %14s %11s\n' step seconds segs/s "" time/cp
for k in replay-cp replay-pitr replay-pgbackrest; do
  printf '%-28s %9s %9s %14s %11s\n' "$k" "${SECS[$k]}" \
    "$(awk -v n="$SEGMENTS" -v s="${SECS[$k]}" 'BEGIN { printf "%.1f", n / s }')" "" \
    "$(ratio "${SECS[$k]}" "${SECS[replay-cp]}")"
done
printf '\ntargets: backup >= 2x pgBackRest MB/s at <= 1.1x its size; restore >= 2x pgBackRest; replay within 1.10x of cp\n'
