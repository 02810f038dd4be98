#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what it needs, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v git >/dev/null 2>&1 || need_apt+=(git)
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)            # throwaway certificates for the HTTPS tests
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)      # end-to-end tests (tests/e2e.rs)
command -v prometheus-alertmanager >/dev/null 2>&1 || need_apt+=(prometheus-alertmanager)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "tests/run.sh: installing ${need_apt[*]} with apt-get" >&2
  if [ "$(id -u)" -eq 0 ]; then apt-get update -qq && apt-get install -y -qq "${need_apt[@]}"
  else sudo apt-get update -qq && sudo apt-get install -y -qq "${need_apt[@]}"; fi
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "tests/run.sh: cargo not found; install Rust (https://rustup.rs), 1.89 or newer" >&2
  exit 1
fi

cargo build --locked --all-targets
cargo test --locked
