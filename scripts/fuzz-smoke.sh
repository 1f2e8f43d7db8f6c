#!/usr/bin/env bash
# A short fuzzing run of every target in fuzz/ (libFuzzer through cargo-fuzz), for CI: each
# target runs for PITR_FUZZ_SECONDS (default 5) from the seeds in fuzz/corpus (when seed.sh has
# made them) into a scratch corpus, so the repository is not touched. A crash, a panic or a leak
# fails the run; libFuzzer leaves the input under fuzz/artifacts/<target>/ (reproduce with
# `cargo fuzz run <target> <file>`).
#
# The machine has one stable toolchain and no other can be fetched, so cargo-fuzz runs on it with
# RUSTC_BOOTSTRAP=1 (cargo-fuzz passes -Z flags to rustc). cargo-fuzz itself comes from crates.io
# when it is missing.
#
# Environment: PITR_FUZZ_SECONDS=N per target; PITR_FUZZ_TARGETS="a b" to run only some.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${PITR_FUZZ_SECONDS:-5}
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is missing: installing it from crates.io"
  cargo install --locked cargo-fuzz
fi

targets=${PITR_FUZZ_TARGETS:-$(cargo fuzz list)}
# One build for every target (release with debug assertions). Without AddressSanitizer: the
# fuzzed crates (pitr-pg, pitr-proto, pitr-repo) have no unsafe code, so what a fuzz run can find
# is a panic, an overflow or a runaway allocation, which libFuzzer catches without it; the build
# is shorter and each second runs about twice as many inputs.
sanitizer=(--sanitizer none)
cargo fuzz build -O "${sanitizer[@]}"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=()
for t in $targets; do
  mkdir -p "$scratch/$t"
  seeds=()
  [ -d "corpus/$t" ] && seeds=("corpus/$t")
  printf '%-18s ' "$t"
  if cargo fuzz run -O "${sanitizer[@]}" "$t" "$scratch/$t" "${seeds[@]}" -- \
      -max_total_time="$seconds" -max_len=70000 -print_final_stats=1 \
      >"$scratch/$t.log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$scratch/$t.log")
    echo "ok, ${runs:-?} inputs in ${seconds}s"
  else
    echo "FAILED"
    tail -40 "$scratch/$t.log"
    failed+=("$t")
  fi
done

if [ ${#failed[@]} -ne 0 ]; then
  echo "fuzz targets that failed: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
  exit 1
fi
