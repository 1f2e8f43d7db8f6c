#!/usr/bin/env bash
# Seeds the fuzz corpora from the WAL fixtures of crates/pitr-pg/tests/fixtures.
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for f in ../crates/pitr-pg/tests/fixtures/*/0*.zst; do
  v=$(basename "$(dirname "$f")")
  zstd -q -d "$f" -o "$tmp/$v-$(basename "$f" .zst)"
done
cargo run -q --example make_seeds -- "$tmp" corpus
