#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60) with cargo fuzz on the nightly toolchain.
# Usage: bash tests/fuzz/run.sh [SECONDS] [TARGET...]
# Seeds: tests/fuzz/corpus/<target>/ (read only); the growing corpus: target/fuzz-corpus/<target>/;
# crashes: tests/fuzz/artifacts/<target>/ (the run fails and names them).
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(image_ref extract surgical_edit alert_payloads chatops config admission)
rustup toolchain list | grep -q nightly || { echo "needs the nightly toolchain: rustup toolchain install nightly" >&2; exit 1; }
command -v cargo-fuzz >/dev/null || { echo "installing cargo-fuzz (cargo install cargo-fuzz --locked)" >&2; cargo install cargo-fuzz --locked; }
status=0
for t in "${targets[@]}"; do
  mkdir -p "target/fuzz-corpus/$t"
  echo "== $t: ${secs}s" >&2
  if cargo +nightly fuzz run --fuzz-dir tests/fuzz "$t" "target/fuzz-corpus/$t" "tests/fuzz/corpus/$t" -- \
      -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
      >"target/fuzz-$t.log" 2>&1; then
    grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "target/fuzz-$t.log" | sed "s/^/   $t /" >&2
  else
    grep -E 'panicked at|^SUMMARY|^artifact_prefix|Test unit written' "target/fuzz-$t.log" | head -5 >&2
    echo "== $t: FAILED, see tests/fuzz/artifacts/$t/ and target/fuzz-$t.log" >&2
    status=1
  fi
done
exit $status
