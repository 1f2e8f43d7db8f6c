#!/usr/bin/env bash
# pitr's one test command, for developers and CI alike:
#   1. installs PostgreSQL 14-18 for the integration tests (scripts/install-test-deps.sh, when root),
#   2. checks formatting (cargo fmt --check),
#   3. lints every crate and test (cargo clippy -D warnings),
#   4. runs every test in the workspace (cargo nextest if installed, else cargo test),
#   5. as root: builds, installs, checks and purges the Debian package (scripts/test-deb.sh),
#   6. runs PostgreSQL 15's own archiving/recovery TAP tests with pitr (scripts/pg-tap.sh; as root),
#   7. fuzzes every parser briefly (scripts/fuzz-smoke.sh: cargo-fuzz, a few seconds per target).
# Every step runs even if an earlier one failed (except a failed install); the exit status is
# non-zero if any step failed, and a summary at the end names them.
#
# Environment: PITR_SKIP_INSTALL=1 skips step 1; PITR_SKIP_TAP=1 skips step 6; PITR_SKIP_FUZZ=1 skips step 7; PITR_TEST_PG=14,17 narrows the PostgreSQL majors
# tested; extra arguments are passed to the test runner (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-auto}
# Keep panics readable in CI logs: the harness's messages carry what matters.
export RUST_BACKTRACE=${RUST_BACKTRACE:-0}

failed=()
summary=()

# step NAME COMMAND...: runs one step with a header and its duration, records failure.
step() {
  local name=$1; shift
  printf '\n==> %s\n    $ %s\n' "$name" "$*"
  local start=$SECONDS status=0
  "$@" || status=$?
  local took=$((SECONDS - start))
  if [ $status = 0 ]; then
    summary+=("ok      ${took}s  $name")
  else
    summary+=("FAILED  ${took}s  $name (exit $status)")
    failed+=("$name")
  fi
  return 0
}

print_summary() {
  printf '\n==> summary\n'
  printf '    %s\n' "${summary[@]}"
}

if [ "${PITR_SKIP_INSTALL:-0}" = 1 ]; then
  printf '==> skipping test dependency install (PITR_SKIP_INSTALL=1)\n'
elif [ "$(id -u)" = 0 ] || sudo -n true 2>/dev/null; then
  step "install test dependencies (PostgreSQL 14-18)" scripts/install-test-deps.sh
  if [ ${#failed[@]} -ne 0 ]; then
    print_summary
    printf '\ntest dependencies could not be installed; not running the tests\n' >&2
    exit 1
  fi
else
  printf '==> not root and no sudo: using the PostgreSQL already installed (see scripts/install-test-deps.sh)\n'
fi

step "format" cargo fmt --all --check
step "lint" cargo clippy --locked --workspace --all-targets -- -D warnings

if cargo nextest --version >/dev/null 2>&1; then
  profile=default
  [ "${CI:-}" = true ] && profile=ci
  step "tests (cargo nextest, profile $profile)" \
    cargo nextest run --locked --workspace --no-fail-fast --profile "$profile" "$@"
  # nextest does not run doctests
  step "doctests" cargo test --locked --workspace --doc
else
  printf '\n(cargo-nextest not installed: using cargo test)\n'
  step "tests (cargo test)" cargo test --locked --workspace --no-fail-fast "$@"
fi

if [ "$(id -u)" = 0 ]; then
  step "Debian package (scripts/test-deb.sh)" scripts/test-deb.sh
fi
if [ "$(id -u)" = 0 ] && [ "${PITR_SKIP_TAP:-0}" != 1 ]; then
  step "PostgreSQL's TAP tests with pitr (scripts/pg-tap.sh)" scripts/pg-tap.sh
else
  printf '\n==> skipping PostgreSQL'"'"'s TAP tests (they need root to run as postgres; PITR_SKIP_TAP=1 skips them)\n'
fi

if [ "${PITR_SKIP_FUZZ:-0}" != 1 ]; then
  step "fuzz smoke (scripts/fuzz-smoke.sh)" scripts/fuzz-smoke.sh
fi

print_summary
if [ ${#failed[@]} -ne 0 ]; then
  printf '\n%d step(s) failed: %s\n' "${#failed[@]}" "$(IFS=,; echo "${failed[*]}")" >&2
  exit 1
fi
printf '\nall checks passed\n'
