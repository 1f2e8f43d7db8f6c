#!/usr/bin/env bash
# Generates the fixtures of crates/pitr-pg/tests/fixtures/walnames/: WAL written after a base
# backup in which relations are created, renamed, truncated and dropped, so that their names
# exist only in the WAL (heap records on pg_class and pg_namespace).
#
# For each major version it inits a throw-away cluster with 1 MB segments, archives its WAL
# with `cp`, takes a base backup with pg_basebackup (its checkpoint makes the first change of
# each catalog page after it a full-page image), then runs:
#
#   CREATE SCHEMA ventas; CREATE TABLE ventas.nueva (PRIMARY KEY, TOAST); INSERT …
#   ALTER TABLE ventas.nueva RENAME TO renombrada   (pg_class UPDATE, often prefix/suffix)
#   TRUNCATE ventas.renombrada                      (pg_class UPDATE: new relfilenode)
#   BEGIN; CREATE TABLE efimera …; DROP TABLE efimera; COMMIT   (one transaction)
#   DROP TABLE ventas.renombrada
#
# and stores:
#
#   walnames/pg<major>/<segment>.zst  the archived segments from the backup's start on (zstd)
#   walnames/pg<major>/meta.txt       facts from SQL: oids, file numbers, xids, settings
#
# Full-page images: 14 compresses them with pglz (`on`), 15 with lz4, 17 with zstd; 16 and 18
# keep them plain. 16 runs with wal_level = logical (catalog changes also log NEW_CID).
#
# Usage: scripts/gen-walnames-fixtures.sh [major ...]   (default: 14 15 16 17 18)
# Needs: root (runs the server as the postgres user), zstd, /opt/pitr-pg/<major>/bindir
# (see scripts/install-test-deps.sh).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT="$ROOT/crates/pitr-pg/tests/fixtures/walnames"
PITR_PG_ROOT=${PITR_PG_ROOT:-/opt/pitr-pg}
WORK=${WORK:-/tmp/pitr-walnamesfix}

log() { printf 'gen-walnames-fixtures: %s\n' "$*" >&2; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

gen() {
  local major=$1 bindir
  bindir=$(cat "$PITR_PG_ROOT/$major/bindir")
  local dir="$WORK/pg$major" port=$((25600 + major))
  local data="$dir/data" arch="$dir/archive" sock="$dir/sock"
  log "PostgreSQL $major, port $port"
  rm -rf "$dir"
  mkdir -p "$data" "$arch" "$sock"
  chown -R postgres: "$dir"
  chmod 700 "$data"
  as_pg "$bindir/initdb" -D "$data" --locale=C -E UTF8 -U postgres --wal-segsize=1 \
    >"$dir/initdb.log" 2>&1
  local compression=off wal_level=replica
  case $major in 14) compression=on ;; 15) compression=lz4 ;; 17) compression=zstd ;; esac
  case $major in 16) wal_level=logical ;; esac
  cat >>"$data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$sock'
port = $port
wal_level = $wal_level
archive_mode = on
archive_command = 'cp %p $arch/%f'
autovacuum = off
checkpoint_timeout = 1h
max_wal_size = 1GB
wal_compression = $compression
fsync = off
timezone = 'UTC'
CONF
  as_pg "$bindir/pg_ctl" -D "$data" -l "$dir/server.log" -w start >/dev/null
  trap 'as_pg "$bindir/pg_ctl" -D "$data" -m immediate stop >/dev/null 2>&1 || true' RETURN
  local psql=("$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h "$sock" -p "$port" -U postgres -d postgres -At)
  sql() { local a=(); local s; for s in "$@"; do a+=(-c "$s"); done; "${psql[@]}" "${a[@]}"; }

  # Something to back up, then the backup (its start is where the fixture begins).
  sql "CREATE TABLE vieja (id int)" "INSERT INTO vieja VALUES (1)"
  as_pg "$bindir/pg_basebackup" -h "$sock" -p "$port" -U postgres -D "$dir/backup" -X none -c fast \
    2>"$dir/basebackup.log"
  local backup_start start_seg
  backup_start=$(sed -n 's/^START WAL LOCATION: \([0-9A-F/]*\) .*/\1/p' "$dir/backup/backup_label")
  start_seg=$(sed -n 's/^START WAL LOCATION: .*(file \([0-9A-F]*\))$/\1/p' "$dir/backup/backup_label")

  sql "CREATE SCHEMA ventas"
  sql "CREATE TABLE ventas.nueva (id int PRIMARY KEY, v text)"
  sql "INSERT INTO ventas.nueva SELECT g, 'fila ' || g FROM generate_series(1, 100) g"
  local ns_oid nueva_oid nueva_node toast_oid toast_node
  ns_oid=$(sql "SELECT oid FROM pg_namespace WHERE nspname = 'ventas'")
  nueva_oid=$(sql "SELECT 'ventas.nueva'::regclass::oid")
  nueva_node=$(sql "SELECT pg_relation_filenode('ventas.nueva')")
  toast_oid=$(sql "SELECT reltoastrelid FROM pg_class WHERE oid = 'ventas.nueva'::regclass")
  toast_node=$(sql "SELECT pg_relation_filenode(reltoastrelid) FROM pg_class WHERE oid = 'ventas.nueva'::regclass")
  sql "ALTER TABLE ventas.nueva RENAME TO renombrada"
  sql "TRUNCATE ventas.renombrada"
  local truncated_node
  truncated_node=$(sql "SELECT pg_relation_filenode('ventas.renombrada')")
  local efimera
  efimera=$(sql "BEGIN" "CREATE TABLE efimera (id int, t text)" \
    "SELECT txid_current() || '|' || oid || '|' || relfilenode FROM pg_class WHERE relname = 'efimera'" \
    "DROP TABLE efimera" "COMMIT")
  local xid_drop
  xid_drop=$(sql "BEGIN" "SELECT txid_current()" "DROP TABLE ventas.renombrada" "COMMIT")
  local db_oid class_node end_seg
  db_oid=$(sql "SELECT oid FROM pg_database WHERE datname = 'postgres'")
  class_node=$(sql "SELECT pg_relation_filenode('pg_class')")
  end_seg=$(sql "SELECT pg_walfile_name(pg_current_wal_lsn())")
  sql "SELECT pg_switch_wal() IS NOT NULL" >/dev/null
  local i
  for i in $(seq 1 100); do
    [ -f "$arch/$end_seg" ] && break
    sleep 0.1
  done
  [ -f "$arch/$end_seg" ] || { log "segment $end_seg was not archived"; exit 1; }

  local dest="$OUT/pg$major"
  rm -rf "$dest"
  mkdir -p "$dest"
  local f n=0
  for f in $(ls "$arch" | sort); do
    [[ $f =~ ^[0-9A-F]{24}$ ]] || continue
    [[ $f < "$start_seg" || $f > "$end_seg" ]] && continue
    zstd -q -19 -f "$arch/$f" -o "$dest/$f.zst"
    n=$((n + 1))
  done
  cat >"$dest/meta.txt" <<EOF
major=$major
version=$("$bindir/postgres" --version)
wal_compression=$compression
wal_level=$wal_level
backup_start_lsn=$backup_start
db_oid=$db_oid
pg_class_filenode=$class_node
ventas_oid=$ns_oid
nueva_oid=$nueva_oid
nueva_filenode=$nueva_node
nueva_toast_oid=$toast_oid
nueva_toast_filenode=$toast_node
renombrada_truncated_filenode=$truncated_node
efimera_xid=$(cut -d'|' -f1 <<<"$efimera")
efimera_oid=$(cut -d'|' -f2 <<<"$efimera")
efimera_filenode=$(cut -d'|' -f3 <<<"$efimera")
xid_drop=$xid_drop
EOF
  chmod 644 "$dest"/*
  log "pg$major: $n segments, $(du -sh "$dest" | cut -f1)"
}

versions=("$@")
[ ${#versions[@]} -eq 0 ] && versions=(14 15 16 17 18)
mkdir -p "$WORK"
chown postgres: "$WORK" 2>/dev/null || true
for v in "${versions[@]}"; do gen "$v"; done
rm -rf "$WORK"
