#!/usr/bin/env bash
# The rollback history on the 100k-commit repository: `metricops history` and serve's
# /api/history and /ui. See tests/bench/README.md ("History").
#
# Usage (from the repository root):   bash tests/bench/history.sh
# Environment: METRICOPS_BIN (skips the build), REVERTS=500, RUNS=5, REQUESTS=20,
#              COMMITS=100000 WORKLOADS=1000 SEED=1 (the generated repository, cached as in run.sh)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
if [ -z "${METRICOPS_BIN:-}" ]; then
  cargo build --release --locked
fi
if [ ! -f target/bench/manifests.git/metricops-bench.json ]; then
  mkdir -p target/bench
  python3 tests/bench/gen_repo.py --out target/bench/manifests.git --commits "${COMMITS:-100000}" \
    --workloads "${WORKLOADS:-1000}" --seed "${SEED:-1}" --force
fi
python3 tests/bench/history.py
