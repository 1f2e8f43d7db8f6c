#!/usr/bin/env bash
# Generates the catalog fixtures of crates/pitr-pg/tests/fixtures/catalog/ from real servers.
#
# For each major version it inits a throw-away cluster, creates schemas, tables (with TOAST
# and indexes), renames one, truncates one (a new relfilenode, the old pg_class row version
# stays behind as a dead tuple), creates a second database, checkpoints, and copies the catalog
# files pitr reads from a base backup to name relations that no longer exist:
#
#   pg<major>/pg_class.zst        base/<postgres db oid>/1259, the pg_class heap (zstd)
#   pg<major>/pg_namespace.zst    base/<postgres db oid>/2615
#   pg<major>/pg_database.zst     global/1262
#   pg<major>/pg_filenode.map     base/<postgres db oid>/pg_filenode.map (mapped catalogs)
#   pg<major>/global.pg_filenode.map  global/pg_filenode.map
#   pg<major>/*.txt               the oracle, from SQL on the same server: live rows of
#                                 pg_class, pg_namespace, pg_database, the relation mapper's
#                                 view (pg_relation_filenode of mapped catalogs), and the
#                                 column layout of pg_class (attlen, attalign) to check offsets
#
# Usage: scripts/gen-catalog-fixtures.sh [major ...]   (default: 14 15 16 17 18)
# Needs: root (runs the server as the postgres user), zstd, /opt/pitr-pg/<major>/bindir.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT="$ROOT/crates/pitr-pg/tests/fixtures/catalog"
PITR_PG_ROOT=${PITR_PG_ROOT:-/opt/pitr-pg}
WORK=${WORK:-/tmp/pitr-catfix}

log() { printf 'gen-catalog-fixtures: %s\n' "$*" >&2; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

gen() {
  local major=$1 bindir
  bindir=$(cat "$PITR_PG_ROOT/$major/bindir")
  local dir="$WORK/pg$major" port=$((25500 + major))
  local data="$dir/data" sock="$dir/sock"
  log "PostgreSQL $major, port $port"
  rm -rf "$dir"
  mkdir -p "$data" "$sock"
  chown -R postgres: "$dir"
  chmod 700 "$data"
  as_pg "$bindir/initdb" -D "$data" --locale=C -E UTF8 -U postgres >"$dir/initdb.log"
  cat >>"$data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$sock'
port = $port
autovacuum = off
fsync = off
CONF
  as_pg "$bindir/pg_ctl" -D "$data" -l "$dir/server.log" -w start >/dev/null
  trap 'as_pg "$bindir/pg_ctl" -D "$data" -m immediate stop >/dev/null 2>&1 || true' RETURN
  local psql=("$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h "$sock" -p "$port" -U postgres -At)
  sql() { local db=$1; shift; local a=(); local s; for s in "$@"; do a+=(-c "$s"); done; "${psql[@]}" -d "$db" "${a[@]}"; }

  sql postgres "CREATE SCHEMA shop" \
    "CREATE TABLE shop.orders (id int PRIMARY KEY, note text)" \
    "CREATE INDEX orders_note ON shop.orders (note)" \
    "CREATE TABLE public.a_table_with_a_rather_long_name_of_exactly_sixty_three_chars_x (id int)" \
    "CREATE TABLE public.renamed_from (id int)" \
    "ALTER TABLE public.renamed_from RENAME TO renamed_to" \
    "CREATE TABLE public.truncated (id int)" \
    "INSERT INTO public.truncated VALUES (1)" \
    "TRUNCATE public.truncated" \
    "CREATE UNLOGGED TABLE public.unlogged_t (id int)" \
    "CREATE VIEW public.v AS SELECT 1 AS one" \
    "CREATE SEQUENCE public.seq" \
    "CREATE DATABASE appdb"
  sql appdb "CREATE TABLE app_t (id int)"
  sql postgres "CHECKPOINT"

  local db_oid
  db_oid=$(sql postgres "SELECT oid FROM pg_database WHERE datname = 'postgres'")
  local dest="$OUT/pg$major"
  rm -rf "$dest"
  mkdir -p "$dest"
  zstd -q -19 -f "$data/base/$db_oid/1259" -o "$dest/pg_class.zst"
  zstd -q -19 -f "$data/base/$db_oid/2615" -o "$dest/pg_namespace.zst"
  zstd -q -19 -f "$data/global/1262" -o "$dest/pg_database.zst"
  cp "$data/base/$db_oid/pg_filenode.map" "$dest/pg_filenode.map"
  cp "$data/global/pg_filenode.map" "$dest/global.pg_filenode.map"
  sql postgres "SELECT oid, relname, relnamespace, relfilenode, relkind, reltablespace FROM pg_class ORDER BY oid" >"$dest/pg_class.txt"
  sql postgres "SELECT oid, nspname FROM pg_namespace ORDER BY oid" >"$dest/pg_namespace.txt"
  sql postgres "SELECT oid, datname FROM pg_database ORDER BY oid" >"$dest/pg_database.txt"
  sql postgres "SELECT oid, pg_relation_filenode(oid) FROM pg_class WHERE relfilenode = 0 AND relisshared = false AND pg_relation_filenode(oid) IS NOT NULL ORDER BY oid" >"$dest/relmap.txt"
  sql postgres "SELECT oid, pg_relation_filenode(oid) FROM pg_class WHERE relfilenode = 0 AND relisshared AND pg_relation_filenode(oid) IS NOT NULL ORDER BY oid" >"$dest/global.relmap.txt"
  sql postgres "SELECT attnum, attname, attlen, attalign, attnotnull FROM pg_attribute WHERE attrelid = 'pg_class'::regclass AND attnum > 0 ORDER BY attnum" >"$dest/pg_class.attrs.txt"
  printf 'major=%s\nversion=%s\ndb_oid=%s\n' "$major" "$("$bindir/postgres" --version)" "$db_oid" >"$dest/meta.txt"
  chmod 644 "$dest"/*
  log "pg$major: $(du -sh "$dest" | cut -f1)"
}

versions=("$@")
[ ${#versions[@]} -eq 0 ] && versions=(14 15 16 17 18)
for v in "${versions[@]}"; do gen "$v"; done
rm -rf "$WORK"
