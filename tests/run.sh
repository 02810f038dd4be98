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
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-pip)  # schema checks (tests/kube_fixtures.rs)
command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)
command -v kubectl >/dev/null 2>&1 || need_apt+=(kubernetes-client)  # kubectl kustomize of deploy/kustomize (tests/deploy.rs)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)                    # the history page in a real browser (tests/history.rs)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "tests/run.sh: installing ${need_apt[*]} with apt-get" >&2
  if [ "$(id -u)" -eq 0 ]; then apt-get update -qq && apt-get install -y -qq "${need_apt[@]}"
  else sudo apt-get update -qq && sudo apt-get install -y -qq "${need_apt[@]}"; fi
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "tests/run.sh: cargo not found; install Rust (https://rustup.rs), 1.89 or newer" >&2
  exit 1
fi

# Schema checks of fixtures/kube (tests/kube_fixtures.rs): kubernetes-validate from PyPI, the Argo CD
# and Flux CRD schemas from npm (tests/schemas/package-lock.json, into tests/schemas/node_modules).
if ! python3 -c 'import kubernetes_validate' >/dev/null 2>&1; then
  echo "tests/run.sh: installing kubernetes-validate (PyPI) with pip" >&2
  python3 -m pip install --quiet kubernetes-validate==1.37.0 \
    || python3 -m pip install --quiet --break-system-packages kubernetes-validate==1.37.0
fi
# The Helm chart (tests/deploy.rs): Helm's own lint and template engine, from PyPI's helm-python-sdk
# (Helm 4's Go SDK; no helm binary, no cluster).
if ! python3 -c 'import helm_python' >/dev/null 2>&1; then
  echo "tests/run.sh: installing helm-python-sdk (PyPI) with pip" >&2
  python3 -m pip install --quiet helm-python-sdk==0.2.2 \
    || python3 -m pip install --quiet --break-system-packages helm-python-sdk==0.2.2
fi
if [ ! tests/schemas/node_modules/.package-lock.json -nt tests/schemas/package-lock.json ]; then
  echo "tests/run.sh: installing @kubernetes-models/argo-cd, flux-cd, cert-manager, prometheus-operator, js-yaml (npm) into tests/schemas/node_modules" >&2
  npm ci --prefix tests/schemas --no-audit --no-fund --loglevel=error
fi

# The history page driven in Debian's headless Chromium (tests/history.rs): playwright-core from npm
# (tests/ui/package-lock.json, into tests/ui/node_modules), no browser download of its own.
if [ ! tests/ui/node_modules/.package-lock.json -nt tests/ui/package-lock.json ]; then
  echo "tests/run.sh: installing playwright-core (npm) into tests/ui/node_modules" >&2
  npm ci --prefix tests/ui --no-audit --no-fund --loglevel=error
fi

cargo build --locked --all-targets
cargo test --locked
