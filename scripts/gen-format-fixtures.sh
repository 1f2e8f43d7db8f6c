#!/usr/bin/env bash
# Generates the real-bytes fixtures that pitr-pg's format tests read, for each PostgreSQL
# major version installed by scripts/install-test-deps.sh (14-18):
#
#   crates/pitr-pg/tests/fixtures/formats/pg<major>/
#     pg_control.running            global/pg_control of a running primary (in production)
#     pg_controldata.running.txt    pg_controldata's view of that file (the oracle)
#     pg_control.shutdown           global/pg_control after a clean shutdown
#     pg_controldata.shutdown.txt
#     pg_control.standby            global/pg_control of a standby shut down in recovery
#     pg_controldata.standby.txt
#     backup_label                  written by pg_basebackup -Fp -Xnone
#     backup_history                the .backup history file of that backup (archived)
#     backup_label.sql              returned by pg_backup_stop / pg_stop_backup
#     tablespace_map                returned with it (tablespace paths with a space and a '\')
#     page.0, page.1                blocks 0 and 1 of a user table (data checksums on)
#     pages.txt                     block numbers and page LSNs (pageinspect when available)
#     backup_label.incremental      PG17+: pg_basebackup --incremental's backup_label
#
# Clusters are created with data checksums (-k) under a throwaway directory owned by the
# postgres OS user and listen only on a Unix socket. Run as root; safe to run again.
# Usage: scripts/gen-format-fixtures.sh [MAJOR...]
set -euo pipefail

PITR_PG_ROOT=${PITR_PG_ROOT:-/opt/pitr-pg}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT_BASE="$ROOT/crates/pitr-pg/tests/fixtures/formats"
majors=("$@")
[ ${#majors[@]} -eq 0 ] && majors=(14 15 16 17 18)

log() { printf 'gen-format-fixtures: %s\n' "$*" >&2; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

WORK=$(mktemp -d /tmp/pitr-fixtures.XXXXXX)
chmod 755 "$WORK"
[ "$(id -u)" = 0 ] && chown postgres: "$WORK"
running=()
cleanup() {
  for d in "${running[@]}"; do
    [ -f "$d/postmaster.pid" ] && as_pg "$BIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1 || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

for major in "${majors[@]}"; do
  BIN=$(cat "$PITR_PG_ROOT/$major/bindir")
  W="$WORK/$major"
  as_pg mkdir -p "$W/sock" "$W/archive"
  PGDATA="$W/data"
  OUT="$OUT_BASE/pg$major"
  mkdir -p "$OUT"
  log "PostgreSQL $major ($BIN)"

  as_pg "$BIN/initdb" -k --locale=C -E UTF8 -U postgres -D "$PGDATA" >/dev/null
  cat >>"$PGDATA/postgresql.conf" <<EOF
listen_addresses = ''
port = 5432
unix_socket_directories = '$W/sock'
wal_level = replica
max_wal_senders = 4
archive_mode = on
archive_command = 'cp %p $W/archive/%f'
EOF
  as_pg "$BIN/pg_ctl" -D "$PGDATA" -l "$W/primary.log" -w start >/dev/null
  running+=("$PGDATA")
  psql() { "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$W/sock" -p 5432 -U postgres -d postgres "$@"; }

  as_pg mkdir -p "$W/ts dir" "$W/ts\\back"
  psql -c "create tablespace fixture_ts location '$W/ts dir'"
  psql -c "create tablespace fixture_ts2 location '$W/ts\\back'"
  psql -c "create table fixture (id int primary key, v text)"
  psql -c "insert into fixture select g, repeat(md5(g::text), 3) from generate_series(1, 200) g"
  psql -c "checkpoint"
  relpath=$(psql -At -c "select pg_relation_filepath('fixture')")

  as_pg "$BIN/pg_basebackup" -h "$W/sock" -p 5432 -U postgres -D "$W/bb" -Fp -Xnone \
    --label "fixture backup" --checkpoint=fast --no-manifest \
    -T "$W/ts dir=$W/bb ts" -T "$W/ts\\back=$W/bb ts2"
  cp "$W/bb/backup_label" "$OUT/backup_label"
  # pg_basebackup waited for the archiver, so the backup history file is in the archive.
  hist=$(ls "$W"/archive/*.backup | head -n 1)
  cp "$hist" "$OUT/backup_history"
  # The SQL API hands out the backup_label and the tablespace_map (pg_basebackup -Fp remaps
  # tablespaces instead of writing a map); both columns are fetched as hex to keep every byte.
  if [ "$major" -ge 15 ]; then
    start="select pg_backup_start('fixture sql backup', true)"
    stop="select encode(convert_to(labelfile, 'UTF8'), 'hex'), encode(convert_to(spcmapfile, 'UTF8'), 'hex') from pg_backup_stop(false)"
  else
    start="select pg_start_backup('fixture sql backup', true, false)"
    stop="select encode(convert_to(labelfile, 'UTF8'), 'hex'), encode(convert_to(spcmapfile, 'UTF8'), 'hex') from pg_stop_backup(false, false)"
  fi
  psql -At -F ' ' -c "$start" -c "$stop" >"$W/stop.txt"
  tail -n 1 "$W/stop.txt" | cut -d' ' -f1 | xxd -r -p >"$OUT/backup_label.sql"
  tail -n 1 "$W/stop.txt" | cut -d' ' -f2 | xxd -r -p >"$OUT/tablespace_map"

  dd if="$PGDATA/$relpath" of="$OUT/page.0" bs=8192 count=1 skip=0 status=none
  dd if="$PGDATA/$relpath" of="$OUT/page.1" bs=8192 count=1 skip=1 status=none
  {
    echo "# relation $relpath: block|page LSN (pageinspect, when installed)"
    if psql -c "create extension if not exists pageinspect" 2>/dev/null; then
      psql -At -c "select b, (page_header(get_raw_page('fixture', b))).lsn \
        from generate_series(0, 1) b"
    fi
  } >"$OUT/pages.txt"

  # PG17+: an incremental backup on top of a full one (needs WAL summaries).
  if [ "$major" -ge 17 ]; then
    psql -c "alter system set summarize_wal = on" -c "select pg_reload_conf()" >/dev/null
    as_pg "$BIN/pg_basebackup" -h "$W/sock" -p 5432 -U postgres -D "$W/full" -Fp -Xnone \
      --checkpoint=fast -T "$W/ts dir=$W/full ts" -T "$W/ts\\back=$W/full ts2"
    psql -c "insert into fixture select g, 'x' from generate_series(1001, 1100) g"
    as_pg "$BIN/pg_basebackup" -h "$W/sock" -p 5432 -U postgres -D "$W/incr" -Fp -Xnone \
      --checkpoint=fast --incremental="$W/full/backup_manifest" --label "fixture incremental" \
      -T "$W/ts dir=$W/incr ts" -T "$W/ts\\back=$W/incr ts2"
    cp "$W/incr/backup_label" "$OUT/backup_label.incremental"
  fi

  cp "$PGDATA/global/pg_control" "$OUT/pg_control.running"
  "$BIN/pg_controldata" -D "$PGDATA" >"$OUT/pg_controldata.running.txt"

  # A standby built from a streamed backup, stopped while in recovery.
  as_pg "$BIN/pg_basebackup" -h "$W/sock" -p 5432 -U postgres -D "$W/standby" -Fp -Xstream \
    --checkpoint=fast --no-manifest -T "$W/ts dir=$W/standby ts" \
    -T "$W/ts\\back=$W/standby ts2"
  as_pg touch "$W/standby/standby.signal"
  cat >>"$W/standby/postgresql.conf" <<EOF
port = 5433
EOF
  as_pg "$BIN/pg_ctl" -D "$W/standby" -l "$W/standby.log" -w start >/dev/null
  running+=("$W/standby")
  as_pg "$BIN/pg_ctl" -D "$W/standby" -m fast -w stop >/dev/null
  cp "$W/standby/global/pg_control" "$OUT/pg_control.standby"
  "$BIN/pg_controldata" -D "$W/standby" >"$OUT/pg_controldata.standby.txt"

  as_pg "$BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
  cp "$PGDATA/global/pg_control" "$OUT/pg_control.shutdown"
  "$BIN/pg_controldata" -D "$PGDATA" >"$OUT/pg_controldata.shutdown.txt"
  "$BIN/postgres" --version >"$OUT/VERSION"
done
log "fixtures written under $OUT_BASE"
