#!/usr/bin/env bash
# End-to-end timings with the real monitoring stack (Debian's prometheus + prometheus-alertmanager):
# runs the two e2e stories RUNS times (default 5) and prints each run's figure lines.
# Usage: bash tests/bench/e2e.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-5}
command -v prometheus >/dev/null && command -v prometheus-alertmanager >/dev/null || {
  echo "install prometheus and prometheus-alertmanager first (bash tests/run.sh does)" >&2; exit 1; }
cargo build --locked --tests -q
rm -f target/e2e-timings.txt
for i in $(seq "$runs"); do
  echo "run $i/$runs" >&2
  cargo test --locked -q --test tests -- e2e::a_bad_deploy e2e::the_built_in_evaluator >/dev/null
done
cat target/e2e-timings.txt
