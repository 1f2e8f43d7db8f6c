#!/usr/bin/env bash
# PostgreSQL's own archiving and recovery tests (its TAP suites), with pitr as archive_command and
# restore_command. They are the best outside check of an archive/restore command: every test that
# archives or restores through PostgreSQL::Test::Cluster (enable_archiving / enable_restoring)
# runs with `pitr archive-push` / `pitr archive-get` on a pitr repository per node.
#
# No compiling: Debian's postgresql-15 source package matches Debian's 15 binaries exactly. Its
# sources are fetched with a private apt source list (the system's apt setup is untouched), the
# test framework is copied and patched (scripts/pg-tap/), and each test runs with `prove` as the
# `postgres` OS user (the framework refuses root), PG_REGRESS=/bin/true (only --config-auth is
# called, a no-op on Unix).
#
# Usage: scripts/pg-tap.sh [TEST...]   (TEST like recovery/002_archiving; default: the list below)
# Environment: PITR_BIN (default target/debug/pitr, built first), PITR_TAP_DIR (work
# directory, default target/pg-tap), PITR_TAP_JOBS (tests run at once, default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

major=15
bindir=/usr/lib/postgresql/$major/bin
work=${PITR_TAP_DIR:-$root/target/pg-tap}
jobs=${PITR_TAP_JOBS:-2}
tests=(
  recovery/002_archiving recovery/003_recovery_targets recovery/004_timeline_switch
  recovery/010_logical_decoding_timelines recovery/020_archive_status
  recovery/023_pitr_prepared_xact recovery/024_archive_recovery
  recovery/025_stuck_on_old_timeline recovery/028_pitr_timelines
  recovery/043_no_contrecord_switch
  recovery/045_archive_restartpoint
  bin/pg_rewind/010_keep_recycled_wals bin/pg_basebackup/030_pg_recvlogical
  contrib/amcheck/005_pitr
)
[ $# -gt 0 ] && tests=("$@")

log() { printf 'pg-tap: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root: the tests run as the postgres OS user (runuser)"
id postgres >/dev/null 2>&1 || die "no postgres OS user; run scripts/install-test-deps.sh"
[ -x "$bindir/postgres" ] || die "no PostgreSQL $major at $bindir; run scripts/install-test-deps.sh"
command -v prove >/dev/null || die "prove (perl) is missing"
perl -MIPC::Run -e1 2>/dev/null || die "perl's IPC::Run is missing: apt-get install libipc-run-perl"

# --- the sources matching the installed binaries ---
version=$(dpkg-query -W -f='${Version}' postgresql-$major 2>/dev/null) ||
  die "postgresql-$major is not installed from Debian's packages"
upstream=${version%%-*}
src=$work/src/postgresql-$upstream
if [ ! -f "$src/src/test/perl/PostgreSQL/Test/Cluster.pm" ]; then
  log "fetching the source of postgresql-$major $version"
  apt=$work/apt
  mkdir -p "$apt/lists/partial" "$work/src"
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  {
    echo "deb-src $mirror bookworm main"
    echo "deb-src $mirror bookworm-updates main"
    echo "deb-src ${mirror%/debian}/debian-security bookworm-security main"
  } >"$apt/sources.list"
  aptopt=(-o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$apt/lists" -o APT::Sandbox::User=root)
  apt-get "${aptopt[@]}" update -qq
  (cd "$work/src" && apt-get "${aptopt[@]}" source --download-only -qq "postgresql-$major=$version")
  tar xjf "$work/src/postgresql-${major}_$upstream.orig.tar.bz2" -C "$work/src"
fi

# --- pitr, where the postgres user can run it ---
pitr=${PITR_BIN:-$root/target/debug/pitr}
if [ -z "${PITR_BIN:-}" ]; then cargo build --locked -q -p pitr; fi
[ -x "$pitr" ] || die "no pitr binary at $pitr"
run=$work/run
rm -rf "$run"
mkdir -p "$run/bin"
cp "$pitr" "$run/bin/pitr"

# --- the framework, patched: enable_archiving / enable_restoring use pitr ---
cp -r "$src/src/test/perl" "$run/perl"
perl scripts/pg-tap/patch-cluster.pl "$run/perl/PostgreSQL/Test/Cluster.pm"

# --- each test in a copy of its directory (three read the archive directly: adapted) ---
for t in "${tests[@]}"; do
  dir=${t%/*}
  case $dir in contrib/*) from=$src/$dir ;; bin/*) from=$src/src/$dir ;; *) from=$src/src/test/$dir ;; esac
  [ -d "$run/$dir" ] || { mkdir -p "$run/$dir" && cp -r "$from/." "$run/$dir/"; }
  [ -f "$run/$dir/t/${t##*/}.pl" ] || die "no test $t in postgresql $upstream"
done
perl scripts/pg-tap/adapt-tests.pl "$run"
chown -R postgres: "$run"

# run_one TEST: runs one test file; its output in $run/TEST.log
run_one() {
  local t=$1 dir=${1%/*} name=${1##*/}
  (cd "$run/$dir" && runuser -u postgres -- env -i \
    PATH="$bindir:$run/bin:/usr/bin:/bin" HOME=/var/lib/postgresql LANG=C.UTF-8 \
    PG_REGRESS=/bin/true PITR_TAP_BIN="$run/bin/pitr" TESTDIR="$run/$dir" \
    PITR_TAP_TRACE="$run/${t//\//_}.trace" \
    PG_TEST_EXTRA="" with_ssl=no \
    prove -I "$run/perl" -I "$run/$dir" "t/$name.pl") >"$run/${t//\//_}.log" 2>&1 || return 1
  # passing without pitr would prove nothing: the patched framework notes each pitr command
  [ -s "$run/${t//\//_}.trace" ] || { echo "no archive/restore command of this test ran pitr" >>"$run/${t//\//_}.log"; return 1; }
}

log "running ${#tests[@]} tests with pitr ($("$run/bin/pitr" --version)), $jobs at a time"
failed=()
pids=()
names=()
start=$SECONDS
for t in "${tests[@]}"; do
  while [ "${#pids[@]}" -ge "$jobs" ]; do
    if wait "${pids[0]}"; then log "ok      ${names[0]}"; else log "FAILED  ${names[0]}"; failed+=("${names[0]}"); fi
    pids=("${pids[@]:1}"); names=("${names[@]:1}")
  done
  run_one "$t" &
  pids+=($!); names+=("$t")
done
for i in "${!pids[@]}"; do
  if wait "${pids[$i]}"; then log "ok      ${names[$i]}"; else log "FAILED  ${names[$i]}"; failed+=("${names[$i]}"); fi
done

if [ ${#failed[@]} -ne 0 ]; then
  for t in "${failed[@]}"; do
    log "---- $t (tail of its output; nodes' logs under $run/${t%/*}/tmp_check/log)"
    tail -n 40 "$run/${t//\//_}.log" >&2
  done
  die "${#failed[@]} of ${#tests[@]} PostgreSQL TAP tests failed with pitr: ${failed[*]}"
fi
log "all ${#tests[@]} PostgreSQL $upstream TAP tests passed with pitr in $((SECONDS - start)) s"
