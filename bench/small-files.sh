#!/usr/bin/env bash
# Many-small-files backup benchmark: `pitr backup` of a data directory holding FILES small
# relation files (default 1,000,000 of 8 KB) against the same bytes in large files (1 GB
# relation segments), in one run on one PostgreSQL 15 cluster: wall time, MB/s, peak RSS
# (VmHWM, from /usr/bin/time -v) of pitr, and the same for `cp -a` + sync (and pgBackRest 2.45
# zst process-max 2 with --pgbackrest).
#
# Usage: bench/small-files.sh [--files N] [--file-size BYTES] [--pgbackrest] [--keep] [--workdir DIR]
#
# The cluster: initdb (no data checksums: the small files are 8 KB pieces of a real table and
# would fail page verification with their block numbers), pgbench -i -s 10 for real data; then
# FILES relation files named 1xxxxxxx in the postgres database's directory (base/5), made by
# `split` from the pgbench_accounts bytes repeated (orphan files PostgreSQL never opens, as
# a backup sees the relation files of a database with many tables), then the same bytes as
# relation segments 2000000, 2000000.1, ... of at most 1 GB. Each backup is a full backup into
# a fresh repository; the page cache is dropped before each.
# Making 1M files takes minutes and 8 GB of disk; --files 200000 (1.6 GB) is the quick setting.
# Targets (issue 14): pitr's peak RSS <= 150 MB with FILES files, and MB/s with small files
# >= 0.8x MB/s with the same bytes in large files.
# Environment: PITR_BIN (use this binary, skip the build), PGBIN (PostgreSQL 15 bin dir),
# BENCH_PORT (server port, default 25447).
set -euo pipefail

FILES=1000000
FILE_SIZE=8192
PGBR=0
KEEP=0
WORKPARENT=${TMPDIR:-/tmp}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PORT=${BENCH_PORT:-25447}
STANZA=bench

usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case $1 in
    --files) FILES=$2; shift 2 ;;
    --file-size) FILE_SIZE=$2; shift 2 ;;
    --pgbackrest) PGBR=1; shift ;;
    --workdir) WORKPARENT=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "small-files.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || die "run as root (PostgreSQL and the tools run as the postgres OS user)"
id postgres >/dev/null 2>&1 || die "no postgres OS user (install postgresql-15)"
[ -x "$PGBIN/pgbench" ] || die "no PostgreSQL 15 with pgbench in $PGBIN"
[ -x /usr/bin/time ] || { apt-get install -y -qq time >/dev/null 2>&1 || die "/usr/bin/time missing (apt-get install time)"; }
[ $PGBR = 0 ] || ensure_pgbackrest
REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
ensure_pitr_bin "$REPO_ROOT"

WORK=$(mktemp -d "$WORKPARENT/pitr-bench-small.XXXXXX")
chmod 755 "$WORK"
PGDATA=$WORK/pgdata
SOCK=$WORK/sock
mkdir -p "$SOCK" "$WORK/bin" "$WORK/out"
cp "$PITR_BIN" "$WORK/bin/pitr"
chown -R postgres: "$WORK"
as_pg() { runuser -u postgres -- "$@"; }
cleanup() {
  local rc=$?
  [ -f "$PGDATA/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate stop >/dev/null 2>&1
  if [ $KEEP = 1 ] || [ $rc != 0 ]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
psql_pg() { psql -X -q -At -h "$SOCK" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

log "initdb + pgbench -i -s 10 (PostgreSQL 15)"
as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres -A trust --locale=C -E UTF8 >/dev/null
cat >>"$PGDATA/postgresql.conf" <<EOF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$SOCK'
wal_level = replica
archive_mode = on
archive_command = '$WORK/bin/pitr --repo $WORK/repo-current archive-push --no-async %p'
max_wal_size = 1GB
EOF
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$WORK/postgres.log" -w start >/dev/null
PGHOST=$SOCK PGPORT=$PORT PGUSER=postgres "$PGBIN/pgbench" -i -q -s 10 postgres >/dev/null 2>&1
psql_pg -c CHECKPOINT >/dev/null
DB_DIR=$PGDATA/base/$(psql_pg -c "SELECT oid FROM pg_database WHERE datname = 'postgres'")
ACCOUNTS=$PGDATA/$(psql_pg -c "SELECT pg_relation_filepath('pgbench_accounts')")
TOTAL=$((FILES * FILE_SIZE))

# The source bytes: pgbench_accounts repeated up to TOTAL bytes (in a file outside PGDATA).
log "$FILES files of $FILE_SIZE bytes ($TOTAL bytes) from $ACCOUNTS"
t0=$(now)
# (head ends the loop with SIGPIPE: the pipeline's status is not an error.)
{ while cat "$ACCOUNTS"; do :; done 2>/dev/null | head -c "$TOTAL" >"$WORK/source"; } || true
[ "$(stat -c %s "$WORK/source")" = "$TOTAL" ] || die "could not make $TOTAL bytes of source data"
# Small files: split in the database directory, named 1 followed by 7+ digits (relation file names).
digits=$(( ${#FILES} > 7 ? ${#FILES} : 7 ))
(cd "$DB_DIR" && split -b "$FILE_SIZE" -d -a "$digits" "$WORK/source" 1)
chown -R postgres: "$DB_DIR"
MADE=$(find "$DB_DIR" -maxdepth 1 -regextype posix-extended -regex '.*/1[0-9]{7,}' | wc -l)
[ "$MADE" = "$FILES" ] || die "made $MADE small files, wanted $FILES"
log "small files made in $(since "$t0") s"

declare -A SECS RSS BYTES STORED
PGDATA_BYTES() { du -sb --exclude=pg_wal "$PGDATA" | cut -f1; }
measure() { # name command...
  local name=$1; shift
  sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
  local t0; t0=$(now)
  /usr/bin/time -v -o "$WORK/out/$name.time" "$@" >"$WORK/out/$name.log" 2>&1 || { cat "$WORK/out/$name.log" >&2; die "$name failed"; }
  sync
  SECS[$name]=$(since "$t0")
  RSS[$name]=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$WORK/out/$name.time")
  log "$name: ${SECS[$name]} s, peak RSS ${RSS[$name]} KB (load $(cut -d' ' -f1 /proc/loadavg))"
}
backups() { # variant (small|large)
  local v=$1 repo=$WORK/repo-$1
  BYTES[$v]=$(PGDATA_BYTES)
  as_pg "$WORK/bin/pitr" --repo "$repo" init >/dev/null
  rm -f "$WORK/repo-current" && ln -s "$repo" "$WORK/repo-current"
  measure "pitr-$v" runuser -u postgres -- "$WORK/bin/pitr" --repo "$repo" backup -h "$SOCK" -p "$PORT" -U postgres
  STORED[pitr-$v]=$(du -sb "$repo" | cut -f1)
  measure "cp-$v" runuser -u postgres -- cp -a "$PGDATA" "$WORK/out/cp-$v"
  rm -rf "$WORK/out/cp-$v"
  if [ $PGBR = 1 ]; then
    write_pgbackrest_conf "$WORK/pgbr-$v.conf" "$WORK" "$STANZA" "$PGDATA" "$PORT" "$SOCK" \
      process-max=2 start-fast=y archive-check=n "repo1-path=$WORK/pgbr-repo-$v"
    as_pg pgbackrest --config="$WORK/pgbr-$v.conf" --stanza=$STANZA stanza-create >/dev/null
    measure "pgbr-$v" runuser -u postgres -- pgbackrest --config="$WORK/pgbr-$v.conf" --stanza=$STANZA --type=full backup
    STORED[pgbr-$v]=$(du -sb "$WORK/pgbr-repo-$v" | cut -f1)
    rm -rf "$WORK/pgbr-repo-$v"
  fi
  rm -rf "$repo"
}
backups small

# The same bytes as 1 GB relation segments.
t0=$(now)
find "$DB_DIR" -maxdepth 1 -regextype posix-extended -regex '.*/1[0-9]{7,}' -delete
(cd "$DB_DIR" && split -b $((1 << 30)) -d -a 4 "$WORK/source" big. &&
  for f in big.*; do n=$((10#${f#big.})); if [ $n = 0 ]; then mv "$f" 2000000; else mv "$f" "2000000.$n"; fi; done)
chown -R postgres: "$DB_DIR"
rm -f "$WORK/source"
log "large files made in $(since "$t0") s"
backups large

# ---------------------------------------------------------------- report
mbs() { awk -v b="${BYTES[$2]}" -v s="${SECS[$1]}" 'BEGIN { printf "%.1f", b / 1048576 / s }'; }
printf '\nbackup of %s files of %s bytes vs the same %s bytes in 1 GB files, PostgreSQL 15, %s CPUs\n' \
  "$FILES" "$FILE_SIZE" "$TOTAL" "$(nproc)"
printf 'load average: before %s, after %s; data directory without pg_wal: small %s, large %s bytes\n' \
  "$LOAD_BEFORE" "$(cut -d' ' -f1-3 /proc/loadavg)" "${BYTES[small]}" "${BYTES[large]}"
printf '%-12s %10s %10s %12s %14s\n' run seconds MB/s peak_RSS_MB stored_bytes
tools=(pitr cp); [ $PGBR = 0 ] || tools+=(pgbr)
for t in "${tools[@]}"; do
  for v in small large; do
    printf '%-12s %10s %10s %12s %14s\n' "$t-$v" "${SECS[$t-$v]}" "$(mbs "$t-$v" "$v")" \
      "$(awk -v k="${RSS[$t-$v]}" 'BEGIN { printf "%.1f", k / 1024 }')" "${STORED[$t-$v]:--}"
  done
done
printf '\npitr small/large throughput: %s (target >= 0.8); pitr peak RSS with %s files: %s MB (target <= 150)\n' \
  "$(awk -v a="$(mbs pitr-small small)" -v b="$(mbs pitr-large large)" 'BEGIN { printf "%.2f", a / b }')" \
  "$FILES" "$(awk -v k="${RSS[pitr-small]}" 'BEGIN { printf "%.1f", k / 1024 }')"
