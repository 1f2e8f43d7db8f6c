#!/usr/bin/env bash
# Generates the WAL fixtures of crates/pitr-pg/tests/fixtures/ from real PostgreSQL servers.
#
# For each major version it inits a throw-away cluster, archives its WAL with a plain
# `cp` archive_command, runs a fixed workload (DDL, inserts, updates, deletes, a TOASTed
# row, a 1.2 MB logical message that crosses page and segment boundaries, a subtransaction,
# an aborted transaction, two-phase commit and rollback, COPY (multi-insert), TRUNCATE, a
# restore point, a checkpoint, DROP TABLE and a WAL switch), then stores:
#
#   fixtures/<name>/<segment>.zst  the archived segments, zstd-compressed
#   fixtures/<name>/waldump.txt.zst  `pg_waldump` of those segments: the test oracle
#   fixtures/<name>/waldump-bkp.txt.zst  the same with --bkp-details (full-page images)
#   fixtures/<name>/waldump.err    what pg_waldump said at the end
#   fixtures/<name>/meta.txt       facts from SQL (oids, xids, LSNs) the tests cross-check
#
# <name> is pg<major> (1 MB segments, to keep fixtures small and prove nothing assumes
# 16 MB) plus pg17-16mb (default 16 MB segments, trimmed workload).
#
# Usage: scripts/gen-wal-fixtures.sh [major ...]   (default: 14 15 16 17 18 17-16mb)
#        scripts/gen-wal-fixtures.sh --oracle-only [major ...]   (re-run pg_waldump only)
# Needs: root (runs the server as the postgres user), zstd, /opt/pitr-pg/<major>/bindir
# (see scripts/install-test-deps.sh). LSNs, xids and times differ between runs; the tests
# only compare the decoder with the pg_waldump output stored next to the segments.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT="$ROOT/crates/pitr-pg/tests/fixtures"
PITR_PG_ROOT=${PITR_PG_ROOT:-/opt/pitr-pg}
WORK=${WORK:-/tmp/pitr-walfix}

log() { printf 'gen-wal-fixtures: %s\n' "$*" >&2; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# oracle BINDIR SEGDIR DEST FIRST LAST: pg_waldump of the segments FIRST..LAST, plain and
# with --bkp-details (image hole and compression), zstd-compressed into DEST. TZ=UTC makes
# its timestamps comparable with ours; stderr (the end-of-WAL message) is kept too.
oracle() {
  local bindir=$1 segdir=$2 dest=$3 first=$4 last=$5 tmp
  tmp=$(mktemp -d)
  (cd "$segdir" && TZ=UTC "$bindir/pg_waldump" -p "$segdir" "$first" "$last" \
    >"$tmp/waldump.txt" 2>"$dest/waldump.err") || true
  (cd "$segdir" && TZ=UTC "$bindir/pg_waldump" --bkp-details -p "$segdir" "$first" "$last" \
    >"$tmp/waldump-bkp.txt" 2>/dev/null) || true
  zstd -q -19 -f "$tmp/waldump.txt" -o "$dest/waldump.txt.zst"
  zstd -q -19 -f "$tmp/waldump-bkp.txt" -o "$dest/waldump-bkp.txt.zst"
  rm -rf "$tmp"
}

# regen_oracle NAME: recomputes the oracle files from the committed segments of NAME.
regen_oracle() {
  local name=$1 major=${1%%-*} dest="$OUT/pg$1" tmp bindir
  bindir=$(cat "$PITR_PG_ROOT/$major/bindir")
  tmp=$(mktemp -d)
  local f segs=()
  for f in "$dest"/*.zst; do
    f=$(basename "$f" .zst)
    [[ $f =~ ^[0-9A-F]{24}$ ]] || continue
    zstd -q -d "$dest/$f.zst" -o "$tmp/$f"
    segs+=("$f")
  done
  oracle "$bindir" "$tmp" "$dest" "${segs[0]}" "${segs[-1]}"
  chmod 644 "$dest"/*
  rm -rf "$tmp"
  log "pg$name: oracle regenerated"
}

gen() {
  local name=$1 major=${1%%-*} segmb=1 full=1
  if [ "$name" = 17-16mb ]; then segmb=16 full=0; fi
  local bindir
  bindir=$(cat "$PITR_PG_ROOT/$major/bindir")
  local dir="$WORK/$name" port=$((25400 + major + (segmb > 1 ? 10 : 0)))
  local data="$dir/data" arch="$dir/archive" sock="$dir/sock"
  log "PostgreSQL $major ($name): ${segmb} MB segments, port $port"

  rm -rf "$dir"
  mkdir -p "$data" "$arch" "$sock"
  chown -R postgres: "$dir"
  chmod 700 "$data"
  as_pg "$bindir/initdb" -D "$data" --locale=C -E UTF8 -U postgres \
    --wal-segsize="$segmb" >"$dir/initdb.log"

  # Compressed full-page images: 14 only knows pglz (`on`, the old BKPIMAGE bits); 15 and
  # 17 exercise lz4/zstd (the PG15+ BKPIMAGE_COMPRESS_* bits); 18 keeps images plain.
  local compression=pglz wal_level=replica
  case $major in 14) compression=on ;; 15) compression=lz4 ;; 17) compression=zstd ;; 18) compression=off ;; esac
  # wal_level=logical adds heap TRUNCATE records (replica logs a TRUNCATE as new files only).
  case $name in 15 | 16 | 17) wal_level=logical ;; esac
  cat >>"$data/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$sock'
port = $port
wal_level = $wal_level
archive_mode = on
archive_command = 'cp %p $arch/%f'
max_prepared_transactions = 5
autovacuum = off
checkpoint_timeout = 1h
max_wal_size = 1GB
wal_compression = $compression
fsync = off
timezone = 'UTC'
EOF
  as_pg "$bindir/pg_ctl" -D "$data" -l "$dir/server.log" -w start >/dev/null
  trap 'as_pg "$bindir/pg_ctl" -D "$data" -m immediate stop >/dev/null 2>&1 || true' RETURN

  local psql=("$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h "$sock" -p "$port" -U postgres -d postgres -At)
  # sql STMT...: one session, one -c per statement (so each result is printed).
  sql() { local a=(); local s; for s in "$@"; do a+=(-c "$s"); done; "${psql[@]}" "${a[@]}"; }

  # The 16 MB variant starts on a fresh segment so that initdb's WAL is not committed.
  [ "$segmb" -gt 1 ] && sql "SELECT pg_switch_wal() IS NOT NULL" "SELECT txid_current() IS NOT NULL"
  local start_lsn start_seg
  start_lsn=$(sql "SELECT pg_current_wal_lsn()")
  start_seg=$(sql "SELECT pg_walfile_name(pg_current_wal_lsn())")

  sql "CREATE TABLE t (id int PRIMARY KEY, v text)"
  sql "INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 200) g"
  sql "UPDATE t SET v = v || ' updated' WHERE id % 10 = 0"
  sql "DELETE FROM t WHERE id > 190"
  # An incompressible 22 kB value stored out of line: TOAST chunk inserts.
  sql "ALTER TABLE t ALTER COLUMN v SET STORAGE EXTERNAL"
  sql "INSERT INTO t VALUES (1000, (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 700) g))"
  # Subtransactions: one released, one rolled back; then a plain rollback.
  sql "BEGIN" "INSERT INTO t VALUES (2000, 'top')" "SAVEPOINT s1" "INSERT INTO t VALUES (2001, 'sub1')" \
    "SAVEPOINT s2" "INSERT INTO t VALUES (2002, 'sub2')" "ROLLBACK TO s2" "RELEASE s1" "COMMIT"
  sql "BEGIN" "INSERT INTO t VALUES (3000, 'aborted')" "ROLLBACK"
  # Two-phase commit, committed and rolled back.
  local xid_2pc
  xid_2pc=$(sql "BEGIN" "INSERT INTO t VALUES (4000, '2pc')" "SELECT txid_current()" \
    "PREPARE TRANSACTION 'pitr_gid_commit'")
  sql "COMMIT PREPARED 'pitr_gid_commit'"
  sql "BEGIN" "INSERT INTO t VALUES (4001, '2pc-rollback')" "PREPARE TRANSACTION 'pitr_gid_rollback'"
  sql "ROLLBACK PREPARED 'pitr_gid_rollback'"
  # COPY writes HEAP2 MULTI_INSERT records.
  sql "CREATE TABLE t2 (id int, v text)"
  seq 1 300 | sed 's/$/\tcopied/' | "${psql[@]}" -c "COPY t2 FROM STDIN"
  if [ "$full" = 1 ]; then
    # One 1.2 MB record: crosses many pages and, with 1 MB segments, a segment boundary.
    sql "SELECT pg_logical_emit_message(true, 'pitr', repeat(md5('pitr'), 40000)) IS NOT NULL"
  fi
  sql "TRUNCATE t2"
  sql "CHECKPOINT"
  local rp_lsn
  rp_lsn=$(sql "SELECT pg_create_restore_point('before_drop')")
  local t_node t_toast db_oid xid_drop
  t_node=$(sql "SELECT pg_relation_filenode('t')")
  t_toast=$(sql "SELECT pg_relation_filenode(reltoastrelid) FROM pg_class WHERE relname = 't'")
  db_oid=$(sql "SELECT oid FROM pg_database WHERE datname = 'postgres'")
  xid_drop=$(sql "BEGIN" "SELECT txid_current()" "DROP TABLE t" "COMMIT")
  sql "INSERT INTO t2 VALUES (1, 'after drop')"
  local end_lsn end_seg
  end_lsn=$(sql "SELECT pg_current_wal_lsn()")
  end_seg=$(sql "SELECT pg_walfile_name(pg_current_wal_lsn())")
  sql "SELECT pg_switch_wal() IS NOT NULL"
  # Wait for the archiver to copy the switched segment.
  local i
  for i in $(seq 1 100); do
    [ -f "$arch/$end_seg" ] && break
    sleep 0.1
  done
  [ -f "$arch/$end_seg" ] || { log "segment $end_seg was not archived"; exit 1; }

  local dest="$OUT/pg$name"
  rm -rf "$dest"
  mkdir -p "$dest"
  local segs=()
  local f
  for f in $(ls "$arch" | sort); do
    [[ $f =~ ^[0-9A-F]{24}$ ]] || continue
    [[ $f < "$start_seg" || $f > "$end_seg" ]] && continue
    segs+=("$f")
  done
  oracle "$bindir" "$arch" "$dest" "${segs[0]}" "${segs[-1]}"
  for f in "${segs[@]}"; do
    zstd -q -19 -f "$arch/$f" -o "$dest/$f.zst"
  done
  chmod 644 "$dest"/*
  cat >"$dest/meta.txt" <<EOF
major=$major
version=$("$bindir/postgres" --version)
seg_size_mb=$segmb
wal_compression=$compression
wal_level=$wal_level
start_lsn=$start_lsn
end_lsn=$end_lsn
first_segment=${segs[0]}
last_segment=${segs[-1]}
restore_point_lsn=$rp_lsn
db_oid=$db_oid
t_filenode=$t_node
t_toast_filenode=$t_toast
xid_2pc=$xid_2pc
xid_drop=$xid_drop
EOF
  log "pg$name: ${#segs[@]} segments, $(du -sh "$dest" | cut -f1)"
}

oracle_only=0
if [ "${1:-}" = --oracle-only ]; then oracle_only=1; shift; fi
majors=("$@")
[ ${#majors[@]} -eq 0 ] && majors=(14 15 16 17 18 17-16mb)
mkdir -p "$WORK"
chown postgres: "$WORK" 2>/dev/null || true
for m in "${majors[@]}"; do
  if [ $oracle_only = 1 ]; then regen_oracle "$m"; else gen "$m"; fi
done
