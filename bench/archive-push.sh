#!/usr/bin/env bash
# archive-push benchmark: pitr vs pgBackRest 2.45 vs cp+fsync, one process per WAL segment
# (the way PostgreSQL's archiver calls archive_command), on real 16 MB segments from pgbench.
#
# Usage: bench/archive-push.sh [--segments N] [--repeat N] [--scale N] [--json] [--keep]
#                              [--workdir DIR] [--drop-caches] [--reuse WORKDIR]
#                              [--order interleaved|blocks]
# --reuse: measure again with the cluster and segments of a work directory kept by --keep
# (skips the several minutes of WAL generation; repositories are recreated).
# Environment: CARGO_TARGET_DIR (where pitr is built), PITR_BIN (use this binary, skip the
# build), PGBIN (PostgreSQL 15 bin dir), BENCH_PORT (server port, default 25433).
# Self-contained and idempotent: installs pgbackrest with apt if missing, builds pitr, creates a
# throwaway PostgreSQL 15 cluster in a fresh temporary directory, removes it all at the end.
# See bench/README.md for what is measured and the fairness notes.
set -euo pipefail

SEGMENTS=64
REPEAT=5
SCALE=10
JSON=0
KEEP=0
DROP_CACHES=0
REUSE=
ORDER=interleaved
WORKPARENT=${TMPDIR:-/tmp}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PORT=${BENCH_PORT:-25433}
STANZA=bench

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case $1 in
    --segments) SEGMENTS=$2; shift 2 ;;
    --repeat) REPEAT=$2; shift 2 ;;
    --scale) SCALE=$2; shift 2 ;;
    --workdir) WORKPARENT=$2; shift 2 ;;
    --json) JSON=1; shift ;;
    --keep) KEEP=1; shift ;;
    --drop-caches) DROP_CACHES=1; shift ;;
    --order) ORDER=$2; shift 2 ;;
    --reuse) REUSE=$(cd "$2" && pwd); KEEP=1; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "archive-push.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || die "run as root (PostgreSQL and the timed loops run as the postgres OS user via runuser)"
id postgres >/dev/null 2>&1 || die "no postgres OS user (install postgresql-15)"
[ -x "$PGBIN/initdb" ] && [ -x "$PGBIN/pgbench" ] || die "no PostgreSQL 15 with pgbench in $PGBIN"
"$PGBIN/postgres" --version | grep -q ' 15\.' || die "$PGBIN is not PostgreSQL 15 (pgBackRest 2.45 supports up to 15)"

REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)

# ---------------------------------------------------------------- tools
ensure_pgbackrest
[ "$PGBR_VERSION" = 2.45 ] || log "warning: pgBackRest $PGBR_VERSION (the target is stated against 2.45)"

ensure_pitr_bin "$REPO_ROOT"
[ -x "$PITR_BIN" ] || die "no pitr binary at $PITR_BIN"

# ---------------------------------------------------------------- work directory
if [ -n "$REUSE" ]; then
  WORK=$REUSE
  [ -f "$WORK/pgdata/PG_VERSION" ] && [ -d "$WORK/segments" ] || die "$WORK is not a work directory kept by --keep"
else
  WORK=$(mktemp -d "$WORKPARENT/pitr-bench.XXXXXX")
fi
chmod 755 "$WORK"
PGDATA=$WORK/pgdata
SOCK=$WORK/sock
STAGE=$WORK/staging      # archive_command target while generating WAL
SEGDIR=$WORK/segments    # the SEGMENTS segments that are pushed
BIN=$WORK/bin            # copies of the binaries, reachable by the postgres user
PGBR_CONF=$WORK/pgbackrest.conf
RESULTS=$WORK/results.txt
mkdir -p "$SOCK" "$STAGE" "$SEGDIR" "$BIN"
cp "$PITR_BIN" "$BIN/pitr"
chown -R postgres: "$WORK"

as_pg() { runuser -u postgres -- "$@"; }
pg_running() { [ -f "$PGDATA/postmaster.pid" ]; }
cleanup() {
  local rc=$?
  if pg_running; then as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate stop >/dev/null 2>&1 || true; fi
  if [ $KEEP = 1 ] || [ $rc != 0 ]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

FSTYPE=$(stat -f -c %T "$WORK")
FSDEV=$(df -P "$WORK" | awk 'NR==2 {print $1}')
case $FSTYPE in tmpfs|ramfs) log "warning: $WORK is on $FSTYPE: fsync costs nothing there; use --workdir on a disk" ;; esac
log "work directory $WORK ($FSTYPE on $FSDEV)"

psql_pg() { psql -X -q -At -h "$SOCK" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }

# ---------------------------------------------------------------- real WAL from pgbench
if [ -n "$REUSE" ]; then
  SEGMENTS=$(ls "$SEGDIR" | wc -l)
  log "reusing the cluster and the $SEGMENTS segments of $WORK"
  as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$WORK/postgres.log" -o "-p $PORT -k $SOCK" -w start >/dev/null
else
log "initdb (PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}'), 16 MB segments)"
as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres -A trust --locale=C -E UTF8 --wal-segsize=16 >/dev/null
cat >>"$PGDATA/postgresql.conf" <<EOF
# pitr bench
port = $PORT
listen_addresses = ''
unix_socket_directories = '$SOCK'
wal_level = replica
archive_mode = on
archive_command = 'test ! -f $STAGE/%f && cp %p $STAGE/%f.tmp && mv $STAGE/%f.tmp $STAGE/%f'
# does not change the WAL produced, only makes generating it cheaper on a shared machine
fsync = off
synchronous_commit = off
EOF
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$WORK/postgres.log" -w start >/dev/null

log "pgbench -i -s $SCALE"
PGHOST=$SOCK PGPORT=$PORT PGUSER=postgres "$PGBIN/pgbench" -i -q -s "$SCALE" postgres >/dev/null 2>&1
psql_pg -c 'CHECKPOINT' >/dev/null
psql_pg -c 'SELECT pg_switch_wal()' >/dev/null
# Segments from here on hold only the pgbench TPC-B-like load (not the bulk load of -i).
FIRST=$(psql_pg -c 'SELECT pg_walfile_name(pg_current_wal_insert_lsn())')
log "collecting $SEGMENTS completed segments from $FIRST on (pgbench -c 4 -j 2)"

load_segments() {
  find "$STAGE" -maxdepth 1 -type f -regextype posix-extended -regex '.*/[0-9A-F]{24}' -printf '%f\n' |
    sort | awk -v first="$FIRST" '$0 >= first'
}
t_load=$SECONDS
while [ "$(load_segments | wc -l)" -lt "$SEGMENTS" ]; do
  [ $((SECONDS - t_load)) -lt 1800 ] || die "pgbench did not produce $SEGMENTS segments in 30 min"
  PGHOST=$SOCK PGPORT=$PORT PGUSER=postgres "$PGBIN/pgbench" -n -c 4 -j 2 -T 10 postgres >/dev/null 2>&1
done
log "WAL generated in $((SECONDS - t_load)) s"
mapfile -t chosen < <(load_segments)
for s in "${chosen[@]:0:$SEGMENTS}"; do
  [ "$(stat -c %s "$STAGE/$s")" = 16777216 ] || die "$s is not 16 MB"
  cp "$STAGE/$s" "$SEGDIR/$s"
done
chown -R postgres: "$SEGDIR"
chmod 0600 "$SEGDIR"/*
rm -rf "$STAGE"
fi
SEG_FIRST=$(ls "$SEGDIR" | head -1)
SEG_LAST=$(ls "$SEGDIR" | tail -1)
SEG_COUNT=$(ls "$SEGDIR" | wc -l)
[ "$SEG_COUNT" = "$SEGMENTS" ] || die "expected $SEGMENTS segments, have $SEG_COUNT"
SEG_BYTES=$(du -sb "$SEGDIR" | cut -f1)
# Sanity: real WAL, not zero-filled preallocated files.
SEG_RECORDS=$({ "$PGBIN/pg_waldump" --stats -p "$SEGDIR" "$SEG_FIRST" "$SEG_LAST" 2>/dev/null || true; } | awk '/^Total/ {print $2; exit}')
[ -n "$SEG_RECORDS" ] && [ "$SEG_RECORDS" -gt 0 ] || die "pg_waldump finds no WAL records in the segments"
log "segments $SEG_FIRST .. $SEG_LAST: $SEG_COUNT files, $SEG_BYTES bytes, ${SEG_RECORDS:-?} WAL records"

# ---------------------------------------------------------------- repositories
write_pgbackrest_conf "$PGBR_CONF" "$WORK" "$STANZA" "$PGDATA" "$PORT" "$SOCK"
rm -rf "$WORK"/repo-* "$WORK/verify"
as_pg mkdir -p "$WORK/repo-pgbackrest"
log "pgbackrest stanza-create (server running)"
as_pg pgbackrest --config="$PGBR_CONF" --stanza=$STANZA stanza-create >/dev/null
as_pg cp -a "$WORK/repo-pgbackrest" "$WORK/repo-pgbackrest.empty"
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -w stop >/dev/null
log "server stopped; pushing from $SEGDIR"

# name|label|pitr compression (empty for non-pitr)
TOOLS=(
  "cp|cp + fsync (dd conv=fsync)|"
  "pgbackrest|pgBackRest $PGBR_VERSION archive-push (zst, default level 3)|"
  "pitr|pitr archive-push (default: zstd)|"
  "pitr-lz4|pitr archive-push --compress lz4|lz4"
  "pitr-zstd3|pitr archive-push --compress zstd:3|zstd:3"
)

repo_of() { echo "$WORK/repo-$1"; }
reset_repo() { # tool
  local r; r=$(repo_of "$1")
  rm -rf "$r"
  case $1 in
    cp) as_pg mkdir "$r" ;;
    pgbackrest) as_pg cp -a "$WORK/repo-pgbackrest.empty" "$r" ;;
    pitr*) as_pg "$BIN/pitr" init --repo "$r" >/dev/null ;;
  esac
}

# The timed loop: one process per segment, sequential, like PostgreSQL's archiver. Runs as the
# postgres user; the loop itself (bash fork+exec) is identical for every tool. Each push is timed
# on its own (wall clock from $EPOCHREALTIME, CPU of the child from the `times` builtin) and the
# times are summed per tool, so the loop's own bookkeeping is not counted.
# Order "blocks": all segments with one tool, then the next tool. Order "interleaved": segment by
# segment, every tool in turn (starting with a different tool for each segment), so a burst of
# load from other processes on a shared machine hits every tool alike.
cat >"$WORK/push-loop.sh" <<'EOF'
#!/bin/bash
set -e
segdir=$1 work=$2 conf=$3 bin=$4 stanza=$5 order=$6; shift 6
tools=("$@")   # name:compression
tf=$(mktemp)
declare -A wall_us cpu_ms
cpu_now() { # children CPU (user+sys) so far, in ms, into CPU_NOW
  times >"$tf"   # not in a pipe or $(...): a subshell would report its own (zero) times
  local self u s x
  { read -r self; read -r u s; } <"$tf"
  CPU_NOW=0
  for x in "$u" "$s"; do
    [[ $x =~ ^([0-9]+)m([0-9]+)\.([0-9]{3})s$ ]]
    CPU_NOW=$((CPU_NOW + 10#${BASH_REMATCH[1]} * 60000 + 10#${BASH_REMATCH[2]} * 1000 + 10#${BASH_REMATCH[3]}))
  done
}
push() { # name:compression file
  local name=${1%%:*} comp=${1#*:} f=$2 repo=$work/repo-${1%%:*} c0 t0 t1
  cpu_now; c0=$CPU_NOW
  t0=${EPOCHREALTIME/./}
  case $name in
    cp) dd if="$f" of="$repo/${f##*/}" bs=1M conv=fsync status=none ;;
    pgbackrest) pgbackrest --config="$conf" --stanza="$stanza" archive-push "$f" ;;
    pitr*) if [ -n "$comp" ]; then "$bin/pitr" --repo "$repo" --compress "$comp" archive-push "$f"
           else "$bin/pitr" --repo "$repo" archive-push "$f"; fi ;;
  esac
  t1=${EPOCHREALTIME/./}
  cpu_now
  wall_us[$name]=$(( ${wall_us[$name]:-0} + 10#$t1 - 10#$t0 ))
  cpu_ms[$name]=$(( ${cpu_ms[$name]:-0} + CPU_NOW - c0 ))
}
segs=("$segdir"/*)
n=${#tools[@]}
if [ "$order" = blocks ]; then
  for t in "${tools[@]}"; do for f in "${segs[@]}"; do push "$t" "$f"; done; done
else
  for i in "${!segs[@]}"; do
    for ((k = 0; k < n; k++)); do push "${tools[$(( (i + k) % n ))]}" "${segs[$i]}"; done
  done
fi
rm -f "$tf"
for t in "${tools[@]}"; do
  name=${t%%:*}
  printf '%s %d.%06d %d.%03d\n' "$name" $((wall_us[$name] / 1000000)) $((wall_us[$name] % 1000000)) \
    $((cpu_ms[$name] / 1000)) $((cpu_ms[$name] % 1000))
done
EOF
chmod 755 "$WORK/push-loop.sh"

prepare_cache() {
  sync
  if [ $DROP_CACHES = 1 ] && echo 3 2>/dev/null >/proc/sys/vm/drop_caches; then
    CACHE_MODE="dropped (echo 3 > /proc/sys/vm/drop_caches before each run)"
  else
    [ $DROP_CACHES = 1 ] && log "cannot drop the page cache here; warming it instead"
    cat "$SEGDIR"/* >/dev/null
    CACHE_MODE="warm (segments read once before each run; page cache not dropped)"
  fi
}

# run_loop REP TOOL-SPEC...: resets the tools' repositories, prepares the cache, runs the loop.
run_loop() {
  local rep=$1 spec tool secs cpu bytes out; shift
  for spec in "$@"; do reset_repo "${spec%%:*}"; done
  prepare_cache
  out=$(as_pg "$WORK/push-loop.sh" "$SEGDIR" "$WORK" "$PGBR_CONF" "$BIN" "$STANZA" "$ORDER" "$@") ||
    die "push loop failed ($*)"
  while read -r tool secs cpu; do
    bytes=$(du -sb "$(repo_of "$tool")" | cut -f1)
    echo "$tool $rep $secs $bytes $cpu" >>"$RESULTS"
    log "run $rep/$REPEAT $tool: $secs s (CPU user+sys $cpu s), repository $bytes bytes"
  done <<<"$out"
}

specs=()
for entry in "${TOOLS[@]}"; do
  IFS='|' read -r tool label comp <<<"$entry"
  specs+=("$tool:$comp")
done
: >"$RESULTS"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "order: $ORDER, $REPEAT repetitions"
for rep in $(seq 1 "$REPEAT"); do
  if [ "$ORDER" = blocks ]; then
    for spec in "${specs[@]}"; do run_loop "$rep" "$spec"; done
  else
    run_loop "$rep" "${specs[@]}"
  fi
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- correctness (not timed)
verify_segs=("$SEG_FIRST" "$(ls "$SEGDIR" | sed -n "$(( (SEG_COUNT + 1) / 2 ))p")" "$SEG_LAST")
VERIFY_DIR=$WORK/verify
as_pg mkdir -p "$VERIFY_DIR"
VERIFIED=0
for entry in "${TOOLS[@]}"; do
  IFS='|' read -r tool label comp <<<"$entry"
  [ "$tool" = cp ] && continue
  for s in "${verify_segs[@]}"; do
    rm -f "$VERIFY_DIR/$s"
    case $tool in
      pgbackrest) as_pg pgbackrest --config="$PGBR_CONF" --stanza=$STANZA archive-get "$s" "$VERIFY_DIR/$s" >/dev/null ;;
      pitr*) as_pg "$BIN/pitr" --repo "$(repo_of "$tool")" archive-get "$s" "$VERIFY_DIR/$s" ;;
    esac
    cmp -s "$SEGDIR/$s" "$VERIFY_DIR/$s" || die "$tool: $s restored differs from the original"
    VERIFIED=$((VERIFIED + 1))
  done
  case $tool in
    pitr*)
      info=$(as_pg "$BIN/pitr" --repo "$(repo_of "$tool")" info --json)
      grep -q "\"segments\": $SEGMENTS," <<<"$info" && grep -q '"gaps": \[\]' <<<"$info" &&
        grep -q "\"first\": \"$SEG_FIRST\"" <<<"$info" && grep -q "\"last\": \"$SEG_LAST\"" <<<"$info" ||
        die "$tool: pitr info --json does not report $SEGMENTS segments $SEG_FIRST..$SEG_LAST without gaps: $info"
      ;;
  esac
done
log "correctness: $VERIFIED segments fetched back (first, middle, last per repository) and identical (cmp); pitr info --json lists all $SEGMENTS, no gaps"

# ---------------------------------------------------------------- report
# median wall seconds and CPU seconds per tool, repository bytes of the last run
summary=$(awk '
  function median(str,   n, a, i, j, v) {
    n = split(substr(str, 2), a, " ")
    for (i = 2; i <= n; i++) { v = a[i] + 0; j = i - 1; while (j > 0 && a[j] + 0 > v) { a[j+1] = a[j]; j-- } a[j+1] = v }
    return (n % 2) ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
  }
  { secs[$1] = secs[$1] " " sprintf("%.3f", $3); bytes[$1] = $4; cpu[$1] = cpu[$1] " " $5 }
  END { for (t in secs) printf "%s|%.3f|%s|%.3f|%s\n", t, median(secs[t]), bytes[t], median(cpu[t]), substr(secs[t], 2) }' "$RESULTS")
get() { # tool field(2=secs,3=bytes,4=cpu,5=runs)
  awk -F'|' -v t="$1" -v f="$2" '$1 == t {print $f}' <<<"$summary"
}
PGBR_SECS=$(get pgbackrest 2)
PGBR_BYTES=$(get pgbackrest 3)
PGBR_CPU=$(get pgbackrest 4)

# row: tool|label|secs|segs/s|bytes|speed ratio|size ratio|size/original|cpu|cpu ratio|runs
rows=()
for entry in "${TOOLS[@]}"; do
  IFS='|' read -r tool label comp <<<"$entry"
  secs=$(get "$tool" 2) bytes=$(get "$tool" 3) cpu=$(get "$tool" 4) runs=$(get "$tool" 5)
  row=$(awk -v n="$SEGMENTS" -v s="$secs" -v b="$bytes" -v c="$cpu" -v ps="$PGBR_SECS" -v pb="$PGBR_BYTES" \
    -v pc="$PGBR_CPU" -v orig="$SEG_BYTES" \
    'BEGIN { printf "%.3f|%.1f|%s|%.2f|%.3f|%.3f|%.3f|%.2f", s, n / s, b, ps / s, b / pb, b / orig, c, (c > 0 ? pc / c : 0) }')
  rows+=("$tool|$label|$row|$runs")
done

pitr_row=$(printf '%s\n' "${rows[@]}" | awk -F'|' '$1 == "pitr"')
IFS='|' read -r _ _ _ _ _ SPEED_RATIO SIZE_RATIO _ _ CPU_RATIO _ <<<"$pitr_row"
VERDICT=$(awk -v s="$SPEED_RATIO" -v z="$SIZE_RATIO" -v c="$CPU_RATIO" 'BEGIN {
  ok_s = (s >= 2.0); ok_z = (z <= 1.1)
  printf "%s: pitr (default) is %.2fx pgBackRest segments/s (target >= 2x: %s) with a repository %.3fx its size (target <= 1.1x: %s); CPU time per segment %.2fx less",
    (ok_s && ok_z) ? "PASS" : "MISS", s, ok_s ? "met" : "missed", z, ok_z ? "met" : "missed", c }')
PITR_VERSION=$("$BIN/pitr" --version | awk '{print $2}')
PG_VERSION=$("$PGBIN/postgres" --version | awk '{print $3}')

if [ $JSON = 1 ]; then
  {
    printf '{\n  "segments": %s, "segment_bytes_total": %s, "first_segment": "%s", "last_segment": "%s", "wal_records": %s,\n' \
      "$SEGMENTS" "$SEG_BYTES" "$SEG_FIRST" "$SEG_LAST" "$SEG_RECORDS"
    printf '  "repeat": %s, "order": "%s", "statistic": "median", "cache": "%s",\n' "$REPEAT" "$ORDER" "$CACHE_MODE"
    printf '  "machine": {"cpus": %s, "kernel": "%s", "filesystem": "%s", "loadavg_before": "%s", "loadavg_after": "%s"},\n' \
      "$(nproc)" "$(uname -r)" "$FSTYPE" "$LOAD_BEFORE" "$LOAD_AFTER"
    printf '  "versions": {"pitr": "%s", "pgbackrest": "%s", "postgresql": "%s"},\n' "$PITR_VERSION" "$PGBR_VERSION" "$PG_VERSION"
    printf '  "results": [\n'
    sep=""
    for r in "${rows[@]}"; do
      IFS='|' read -r tool label secs rate bytes sr zr orig cpu cr runs <<<"$r"
      printf '%s    {"tool": "%s", "label": "%s", "seconds": %s, "segments_per_s": %s, "repo_bytes": %s, "speed_vs_pgbackrest": %s, "size_vs_pgbackrest": %s, "size_vs_original": %s, "cpu_seconds": %s, "cpu_vs_pgbackrest": %s, "runs_seconds": [%s]}' \
        "$sep" "$tool" "$label" "$secs" "$rate" "$bytes" "$sr" "$zr" "$orig" "$cpu" "$cr" "$(sed 's/ /, /g' <<<"$runs")"
      sep=$',\n'
    done
    printf '\n  ],\n  "verified_segments": %s,\n  "target_met": %s,\n  "verdict": "%s"\n}\n' \
      "$VERIFIED" "$([[ $VERDICT == PASS* ]] && echo true || echo false)" "$VERDICT"
  }
else
  echo
  echo "archive-push: $SEGMENTS real 16 MB WAL segments from pgbench ($SEG_FIRST..$SEG_LAST, $SEG_BYTES bytes, $SEG_RECORDS records)"
  echo "one process per segment, sequential, order $ORDER; median of $REPEAT runs; $(nproc) CPUs; $FSTYPE on $FSDEV"
  echo "page cache: $CACHE_MODE; load average before/after: $LOAD_BEFORE / $LOAD_AFTER"
  echo "pitr $PITR_VERSION, pgBackRest $PGBR_VERSION, PostgreSQL $PG_VERSION"
  echo
  printf '%-52s %8s %7s %11s %10s %9s %9s %7s %8s  %s\n' tool seconds "segs/s" "repo bytes" "speed/pgbr" "size/pgbr" "size/orig" "CPU s" "CPU/pgbr" "runs (s)"
  for r in "${rows[@]}"; do
    IFS='|' read -r tool label secs rate bytes sr zr orig cpu cr runs <<<"$r"
    printf '%-52s %8s %7s %11s %9sx %8sx %9s %7s %7sx  %s\n' "$label" "$secs" "$rate" "$bytes" "$sr" "$zr" "$orig" "$cpu" "$cr" "$runs"
  done
  echo
  echo "speed/pgbr = pgBackRest seconds / tool seconds (higher is faster); CPU/pgbr likewise for CPU time"
  echo "$VERDICT"
fi
