#!/usr/bin/env bash
# Incremental backup benchmark: pitr's block-level incrementals vs pgBackRest's (bundles +
# block incremental) vs PostgreSQL 17's pg_basebackup --incremental + pg_combinebackup, in one
# run, on a pgbench cluster with about 1% of pgbench_accounts' pages changed between backups.
#
# Usage: bench/incremental.sh [--scale N] [--rounds N] [--keep] [--workdir DIR]
#
# One PostgreSQL 17 cluster (summarize_wal = on, data checksums) archives through pitr and,
# when pgBackRest supports the major, pgBackRest. Each tool takes a full backup, then ROUNDS (6)
# times: ~1% of the accounts' pages updated (one row in every 100th page), an incremental
# backup by each tool. Then each restores the last incremental (pitr and pgBackRest: restore
# from the chain; PostgreSQL: pg_combinebackup of the chain) and the full alone.
# Prints per tool: full and mean incremental seconds and stored bytes; the targets:
#   incremental stored size / compressed size of what changed <= 1.2 (the reference: the
#     relation blocks and files pg_basebackup --incremental sent, tar | zstd -1);
#   incremental time / full time <= 0.3;
#   restore speed of full + ROUNDS incrementals / restore speed of the full alone >= 0.8
#     (speed = data directory bytes / second).
# Environment: PITR_BIN (use this binary), PGBIN (PostgreSQL bin dir, default
# /opt/pitr-pg/17/bindir's; pgBackRest 2.45 does not support 17: run again with
# PGBIN=/usr/lib/postgresql/15/bin for pitr vs pgBackRest, without pg_basebackup --incremental),
# BENCH_PORT (25437). Run as root on a quiet machine; the
# figures are only comparable within one run (quote `uptime` with them).
set -euo pipefail

SCALE=50
ROUNDS=6
KEEP=0
WORKPARENT=${TMPDIR:-/tmp}
PGBIN=${PGBIN:-$(cat /opt/pitr-pg/17/bindir 2>/dev/null || echo /usr/lib/postgresql/17/bin)}
PORT=${BENCH_PORT:-25437}
STANZA=bench

usage() { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case $1 in
    --scale) SCALE=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --workdir) WORKPARENT=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "incremental.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || die "run as root (PostgreSQL and the tools run as the postgres OS user)"
[ -x "$PGBIN/pgbench" ] || die "no PostgreSQL with pgbench in $PGBIN"
HAVE_PGB=0; [ -x "$PGBIN/pg_combinebackup" ] && HAVE_PGB=1
command -v zstd >/dev/null || { apt-get install -y -qq zstd >/dev/null 2>&1 || die "zstd missing"; }
ensure_pgbackrest
REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
ensure_pitr_bin "$REPO_ROOT"

WORK=$(mktemp -d "$WORKPARENT/pitr-bench-incr.XXXXXX")
chmod 755 "$WORK"
PGDATA=$WORK/pgdata
SOCK=$WORK/sock
BIN=$WORK/bin
PGBR_CONF=$WORK/pgbackrest.conf
mkdir -p "$SOCK" "$BIN" "$WORK/repo-pgbackrest" "$WORK/out" "$WORK/pgb"
cp "$PITR_BIN" "$BIN/pitr"
chown -R postgres: "$WORK"
as_pg() { runuser -u postgres -- "$@"; }
cleanup() {
  local rc=$?
  [ -f "$PGDATA/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate stop >/dev/null 2>&1
  if [ $KEEP = 1 ] || [ $rc != 0 ]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
psql_pg() { psql_bin -X -q -At -h "$SOCK" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }
psql_bin() { "$PGBIN/psql" "$@"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
size() { du -sb "$1" | cut -f1; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }
timed() { # name command...: seconds into SECS[name]
  local name=$1; shift
  drop_caches
  local t0; t0=$(now)
  "$@" >"$WORK/out/$name.log" 2>&1 || { cat "$WORK/out/$name.log" >&2; die "$name failed"; }
  sync
  SECS[$name]=$(since "$t0")
  log "$name: ${SECS[$name]} s"
}
declare -A SECS BYTES

write_pgbackrest_conf "$PGBR_CONF" "$WORK" "$STANZA" "$PGDATA" "$PORT" "$SOCK" \
  process-max=2 start-fast=y repo1-bundle=y repo1-block=y beta=y
PGBR="pgbackrest --config=$PGBR_CONF --stanza=$STANZA"
PITR="$BIN/pitr --repo $WORK/repo-pitr"

MAJOR=$("$PGBIN/postgres" --version | sed -E 's/.* ([0-9]+)[.0-9]*.*$/\1/')
log "initdb + pgbench -i -s $SCALE (PostgreSQL $MAJOR, data checksums, summarize_wal)"
as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres -A trust --locale=C -E UTF8 -k >/dev/null
as_pg $PITR init >/dev/null
cat >>"$PGDATA/postgresql.conf" <<EOF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$SOCK'
wal_level = replica
$([ $HAVE_PGB = 1 ] && echo 'summarize_wal = on')
archive_mode = on
archive_command = '$PITR archive-push %p && { ! test -f $WORK/pgbr-on || $PGBR archive-push %p; }'
max_wal_size = 2GB
autovacuum = off
EOF
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$WORK/postgres.log" -w start >/dev/null
PGBR_ON=0
if as_pg $PGBR stanza-create >"$WORK/out/stanza.log" 2>&1; then
  PGBR_ON=1; as_pg touch "$WORK/pgbr-on"
else
  log "pgBackRest $PGBR_VERSION cannot back up PostgreSQL $MAJOR: left out ($(tail -1 "$WORK/out/stanza.log"))"
fi
PGHOST=$SOCK PGPORT=$PORT PGUSER=postgres "$PGBIN/pgbench" -i -q -s "$SCALE" postgres >/dev/null 2>&1
psql_pg -c 'VACUUM (FREEZE, ANALYZE)' -c 'CHECKPOINT' >/dev/null
DB_BYTES=$(( $(size "$PGDATA") - $(size "$PGDATA/pg_wal") ))
PAGES=$(psql_pg -c "SELECT relpages FROM pg_class WHERE relname = 'pgbench_accounts'")
log "data directory without pg_wal: $DB_BYTES bytes; pgbench_accounts: $PAGES pages"

pitr_stored() { # label: bytes the backup stored itself
  python3 -c 'import json,sys; m=json.load(open(sys.argv[1]))["body"]; print(sum(f["stored_size"] for f in m["files"] if f.get("stored_in") is None))' \
    "$WORK/repo-pitr/main/backup/$1/backup.json"
}
pitr_last() { ls "$WORK/repo-pitr/main/backup" | sort | tail -1; }
pgbr_last_size() { # bytes of the newest pgBackRest backup directory
  size "$WORK/repo-pgbackrest/backup/$STANZA/$(ls "$WORK/repo-pgbackrest/backup/$STANZA" | grep -E '^[0-9]{8}-[0-9]{6}F' | sort | tail -1)"
}
PITR_BACKUP="$PITR backup -h $SOCK -p $PORT -U postgres"

# ---------------------------------------------------------------- full backups
timed full-pitr as_pg $PITR_BACKUP --type full
PITR_FULL=$(pitr_last); BYTES[full-pitr]=$(pitr_stored "$PITR_FULL")
if [ $PGBR_ON = 1 ]; then
  timed full-pgbackrest as_pg $PGBR --type=full backup
  BYTES[full-pgbackrest]=$(pgbr_last_size)
fi
[ $HAVE_PGB = 1 ] && timed full-pg_basebackup as_pg "$PGBIN/pg_basebackup" -h "$SOCK" -p "$PORT" -U postgres -D "$WORK/pgb/0" -Fp -X none -c fast
[ $HAVE_PGB = 1 ] && BYTES[full-pg_basebackup]=$(size "$WORK/pgb/0")

# ---------------------------------------------------------------- rounds: 1% of pages, incrementals
for r in $(seq 1 "$ROUNDS"); do
  psql_pg -c "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 6100 = $((r * 13))" >/dev/null
  timed "incr$r-pitr" as_pg $PITR_BACKUP --type incr
  BYTES[incr$r-pitr]=$(pitr_stored "$(pitr_last)")
  if [ $PGBR_ON = 1 ]; then
    before=$(size "$WORK/repo-pgbackrest/backup")
    timed "incr$r-pgbackrest" as_pg $PGBR --type=incr backup
    BYTES[incr$r-pgbackrest]=$(( $(size "$WORK/repo-pgbackrest/backup") - before ))
  fi
  if [ $HAVE_PGB = 1 ]; then
    timed "incr$r-pg_basebackup" as_pg "$PGBIN/pg_basebackup" -h "$SOCK" -p "$PORT" -U postgres \
      -D "$WORK/pgb/$r" -Fp -X none -c fast --incremental="$WORK/pgb/$((r - 1))/backup_manifest"
    BYTES[incr$r-pg_basebackup]=$(size "$WORK/pgb/$r")
    # What changed, compressed as pitr compresses (zstd -1): everything this incremental sent.
    BYTES[incr$r-changed-zstd]=$(tar -C "$WORK/pgb/$r" --exclude=./backup_manifest -cf - . | zstd -1 -q -c | wc -c)
  fi
  log "round $r: changed (zstd) ${BYTES[incr$r-changed-zstd]:--}, pitr ${BYTES[incr$r-pitr]}, pg_basebackup ${BYTES[incr$r-pg_basebackup]:--}, pgbackrest ${BYTES[incr$r-pgbackrest]:--}"
done
psql_pg -c 'SELECT pg_switch_wal()' >/dev/null
sleep 2
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
PITR_LAST=$(pitr_last)

# ---------------------------------------------------------------- restores
restore_pitr() { as_pg $PITR restore --pgdata "$1" --backup "$2" --archive-mode off; }
timed restore-full-pitr restore_pitr "$WORK/out/r-full-pitr" "$PITR_FULL"
BYTES[restore-full-pitr]=$(size "$WORK/out/r-full-pitr"); rm -rf "$WORK/out/r-full-pitr"
timed restore-chain-pitr restore_pitr "$WORK/out/r-chain-pitr" "$PITR_LAST"
BYTES[restore-chain-pitr]=$(size "$WORK/out/r-chain-pitr"); rm -rf "$WORK/out/r-chain-pitr"
if [ $PGBR_ON = 1 ]; then
  PGBR_FULL=$(ls "$WORK/repo-pgbackrest/backup/$STANZA" | grep -E '^[0-9]{8}-[0-9]{6}F$' | head -1)
  timed restore-full-pgbackrest as_pg $PGBR --pg1-path="$WORK/out/r-full-pgbr" --set="$PGBR_FULL" restore
  BYTES[restore-full-pgbackrest]=$(size "$WORK/out/r-full-pgbr"); rm -rf "$WORK/out/r-full-pgbr"
  timed restore-chain-pgbackrest as_pg $PGBR --pg1-path="$WORK/out/r-chain-pgbr" restore
  BYTES[restore-chain-pgbackrest]=$(size "$WORK/out/r-chain-pgbr"); rm -rf "$WORK/out/r-chain-pgbr"
fi
if [ $HAVE_PGB = 1 ]; then
  timed restore-full-pg_basebackup as_pg cp -a "$WORK/pgb/0" "$WORK/out/r-full-pgb"
  BYTES[restore-full-pg_basebackup]=$(size "$WORK/out/r-full-pgb"); rm -rf "$WORK/out/r-full-pgb"
  CHAIN=(); for r in $(seq 0 "$ROUNDS"); do CHAIN+=("$WORK/pgb/$r"); done
  timed restore-chain-pg_basebackup as_pg "$PGBIN/pg_combinebackup" -o "$WORK/out/r-chain-pgb" "${CHAIN[@]}"
  BYTES[restore-chain-pg_basebackup]=$(size "$WORK/out/r-chain-pgb"); rm -rf "$WORK/out/r-chain-pgb"
fi

# ---------------------------------------------------------------- report
mean() { # prefix suffix: mean over rounds of ARR[incr<r>-suffix] for arr SECS|BYTES
  local arr=$1 suffix=$2 sum=0 r v
  for r in $(seq 1 "$ROUNDS"); do
    eval "v=\${$arr[incr$r-$suffix]}"
    sum=$(awk -v a="$sum" -v b="$v" 'BEGIN { printf "%.6f", a + b }')
  done
  awk -v s="$sum" -v n="$ROUNDS" 'BEGIN { printf "%.3f", s / n }'
}
div() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.2f", a / b }'; }
printf '\nincremental backups: pgbench scale %s (%s MB without pg_wal, accounts %s pages), ~1%% of the accounts pages changed per round, %s rounds, PostgreSQL %s, pgBackRest %s, %s CPUs, load %s\n' \
  "$SCALE" $((DB_BYTES / 1048576)) "$PAGES" "$ROUNDS" "$MAJOR" "$PGBR_VERSION" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
CHANGED=0
if [ $HAVE_PGB = 1 ]; then
  CHANGED=$(mean BYTES changed-zstd)
  printf 'compressed size of what changed per round (pg_basebackup --incremental output, tar | zstd -1): %.0f bytes\n' "$CHANGED"
else
  printf 'no pg_basebackup --incremental on PostgreSQL %s: no reference for the size of what changed (incr/chg "-")\n' "$MAJOR"
fi
printf '%-14s %9s %13s %9s %13s %10s %10s %12s %12s %10s\n' tool full_s full_bytes incr_s incr_bytes incr/chg incr/full restore_full restore_chain chain/full
tools=(pitr); [ $PGBR_ON = 1 ] && tools+=(pgbackrest); [ $HAVE_PGB = 1 ] && tools+=(pg_basebackup)
for t in "${tools[@]}"; do
  is=$(mean SECS "$t"); ib=$(mean BYTES "$t")
  sf=$(awk -v b="${BYTES[restore-full-$t]}" -v s="${SECS[restore-full-$t]}" 'BEGIN { printf "%.1f", b / 1048576 / s }')
  sc=$(awk -v b="${BYTES[restore-chain-$t]}" -v s="${SECS[restore-chain-$t]}" 'BEGIN { printf "%.1f", b / 1048576 / s }')
  printf '%-14s %9s %13s %9s %13.0f %10s %10s %10sMB/s %10sMB/s %10s\n' "$t" "${SECS[full-$t]}" "${BYTES[full-$t]}" "$is" "$ib" \
    "$(div "$ib" "$CHANGED")" "$(div "$is" "${SECS[full-$t]}")" "$sf" "$sc" "$(div "$sc" "$sf")"
done
# How pitr's incrementals found their changed pages (WAL summaries on 17+, else every page's LSN).
printf '\npitr incrementals: %s\n' "$(cat "$WORK"/out/incr*-pitr.log | grep -o 'changed pages [a-z]* [^:(]*' | sed 's/ [0-9]*\/[0-9A-F]* to [0-9]*\/[0-9A-F]*//' | sort | uniq -c | tr -s ' ' | paste -sd ';' -)"
printf '\ntargets (pitr): incr/chg <= 1.2, incr/full (time) <= 0.3, chain/full (restore speed) >= 0.8\n'
printf '(pg_basebackup: restore_full is cp -a of the plain full backup, restore_chain is pg_combinebackup of the chain; its backups are not compressed)\n'
