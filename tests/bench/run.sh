#!/usr/bin/env bash
# Benchmark `metricops trace` against `git log --first-parent -G` on a synthetic
# GitOps repository. See tests/bench/README.md.
#
# Usage (from the repository root):   bash tests/bench/run.sh
#
# Environment:
#   COMMITS=100000 WORKLOADS=1000 SEED=1   generated repository parameters (cached)
#   METRICOPS_BIN=path                      binary to benchmark; when set, `cargo build` is skipped
#   WARMUP=2 MIN_RUNS=5                     hyperfine settings
#   STRICT=1                                exit 1 when a performance target is missed
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

COMMITS="${COMMITS:-100000}"
WORKLOADS="${WORKLOADS:-1000}"
SEED="${SEED:-1}"
WARMUP="${WARMUP:-2}"
MIN_RUNS="${MIN_RUNS:-5}"
STRICT="${STRICT:-0}"
OUT="target/bench"
REPO="$OUT/manifests.git"
QFILE="$REPO/metricops-bench.json"
# Targets: metricops mean time <= MAX_RATIO * git mean time, peak RSS <= MAX_RSS_MB.
# Peak RSS: 50 MB up to 20k commits (the culprit-search issue's target), 100 MB above.
MAX_RATIO="0.5"
if [ "$COMMITS" -le 20000 ]; then MAX_RSS_MB="${MAX_RSS_MB:-50}"; else MAX_RSS_MB="${MAX_RSS_MB:-100}"; fi

log() { printf '==> %s\n' "$*" >&2; }
die() { printf '\n*** BENCH FAILED: %s\n\n' "$*" >&2; exit 1; }

# --- tools -------------------------------------------------------------------
missing=()
command -v hyperfine >/dev/null 2>&1 || missing+=(hyperfine)
[ -x /usr/bin/time ] || missing+=(time)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing missing packages with apt-get: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- binary ------------------------------------------------------------------
if [ -n "${METRICOPS_BIN:-}" ]; then
  log "using METRICOPS_BIN=$METRICOPS_BIN (skipping cargo build)"
else
  METRICOPS_BIN="target/release/metricops"
  log "cargo build --release"
  cargo build --release
fi
[ -x "$METRICOPS_BIN" ] || die "metricops binary not found or not executable: $METRICOPS_BIN"

# --- repository (cached) -----------------------------------------------------
mkdir -p "$OUT"
params_ok() {
  [ -f "$QFILE" ] && python3 - "$QFILE" "$COMMITS" "$WORKLOADS" "$SEED" <<'EOF'
import json, sys
q = json.load(open(sys.argv[1]))
want = {"commits": int(sys.argv[2]), "workloads": int(sys.argv[3]), "seed": int(sys.argv[4])}
sys.exit(0 if q.get("format") == 1 and q.get("params") == want else 1)
EOF
}
if params_ok; then
  log "reusing cached $REPO (commits=$COMMITS workloads=$WORKLOADS seed=$SEED)"
else
  log "generating $REPO (commits=$COMMITS workloads=$WORKLOADS seed=$SEED)"
  python3 tests/bench/gen_repo.py --out "$REPO" --commits "$COMMITS" --workloads "$WORKLOADS" \
    --seed "$SEED" --force
fi
log "repository: $(du -sh "$REPO" | cut -f1), $(git -C "$REPO" rev-list --count HEAD) commits"

# Print one field of one question.
qget() {
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["questions"][sys.argv[2]][sys.argv[3]])' \
    "$QFILE" "$1" "$2"
}

# Escape POSIX ERE metacharacters (git -G uses extended regexps).
ere_escape() { printf '%s' "$1" | sed -e 's/[][\.^$*+?(){}|]/\\&/g'; }

# Extract "commit" from metricops' JSON output (fails if it is not JSON or lacks it).
json_commit() {
  python3 -c '
import json, sys
out = sys.stdin.read()
try:
    print(json.loads(out)["commit"])
except Exception as e:
    sys.exit(f"cannot read \"commit\" from metricops output ({e!r}): {out[:500]!r}")'
}

# Peak RSS in kB of one run of a command (stdout discarded).
peak_kb() {
  local f
  f="$(mktemp)"
  /usr/bin/time -f '%M' -o "$f" "$@" >/dev/null
  tail -n 1 "$f"
  rm -f "$f"
}

# Quote words for hyperfine --shell=none (POSIX shell-words splitting).
quote() { local a out=""; for a in "$@"; do out+="'${a//\'/\'\\\'\'}' "; done; printf '%s' "${out% }"; }

hf_mean_ms() {
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"]; print("%.1f" % (r[int(sys.argv[2])]["mean"] * 1000))' "$1" "$2"
}

rows=()
all_met=1
for q in old recent; do
  image="$(qget "$q" image)"
  path="$(qget "$q" path)"
  version="$(qget "$q" version)"
  expected="$(qget "$q" expected_commit)"
  behind="$(qget "$q" commits_after)"
  rx="$(ere_escape "$version")"
  log "question '$q': $image:$version in $path (set $behind first-parent commits before HEAD), expected $expected"

  m_cmd=("$METRICOPS_BIN" trace --repo "$REPO" --image "$image" --path "$path" --json)
  g_cmd=(git -C "$REPO" log --first-parent -1 --format=%H "-G$rx" -- "$path")

  # Correctness first: both must name the expected commit.
  if ! m_out="$("${m_cmd[@]}")"; then
    die "[$q] metricops exited non-zero: ${m_cmd[*]}"
  fi
  m_commit="$(printf '%s' "$m_out" | json_commit)" || die "[$q] metricops printed no usable JSON"
  [ "$m_commit" = "$expected" ] || die "[$q] metricops answered $m_commit, expected $expected"
  g_commit="$("${g_cmd[@]}")" || die "[$q] git log exited non-zero"
  [ "$g_commit" = "$expected" ] || die "[$q] git log answered '$g_commit', expected $expected"
  log "[$q] both answered $expected"

  # Timing. --shell=none: hyperfine splits each command with shell-words rules.
  hyperfine --shell=none --warmup "$WARMUP" --min-runs "$MIN_RUNS" --style basic \
    --export-json "$OUT/trace-$q.json" --export-markdown "$OUT/trace-$q.md" \
    --command-name "metricops trace ($q)" "$(quote "${m_cmd[@]}")" \
    --command-name "git log -G ($q)" "$(quote "${g_cmd[@]}")"
  m_ms="$(hf_mean_ms "$OUT/trace-$q.json" 0)"
  g_ms="$(hf_mean_ms "$OUT/trace-$q.json" 1)"

  # Memory.
  m_kb="$(peak_kb "${m_cmd[@]}")"
  g_kb="$(peak_kb "${g_cmd[@]}")"

  row="$(python3 - "$q" "$m_ms" "$g_ms" "$m_kb" "$g_kb" "$MAX_RATIO" "$MAX_RSS_MB" <<'EOF'
import sys
q, m_ms, g_ms, m_kb, g_kb, max_ratio, max_mb = sys.argv[1:]
m_ms, g_ms, m_mb, g_mb = float(m_ms), float(g_ms), int(m_kb) / 1024, int(g_kb) / 1024
ratio = m_ms / g_ms if g_ms > 0 else float("inf")
ok_t, ok_m = ratio <= float(max_ratio), m_mb <= float(max_mb)
print(f"{q}|{m_ms:.1f}|{g_ms:.1f}|{ratio:.3f}|{m_mb:.1f}|{g_mb:.1f}|"
      f"{'yes' if ok_t else 'NO'}|{'yes' if ok_m else 'NO'}")
EOF
)"
  rows+=("$row")
  case "$row" in *NO*) all_met=0 ;; esac
done

# --- summary -----------------------------------------------------------------
{
  echo
  echo "metricops trace benchmark: $COMMITS first-parent commits, $WORKLOADS workloads, seed $SEED"
  echo "targets: ratio (metricops/git mean) <= $MAX_RATIO, metricops peak RSS <= $MAX_RSS_MB MB"
  echo
  fmt='| %-8s | %17s | %11s | %7s | %17s | %11s | %9s | %8s |\n'
  printf "$fmt" question "metricops mean ms" "git mean ms" ratio "metricops peak MB" "git peak MB" "ratio met" "peak met"
  printf "$fmt" :------- ----------------: ----------: ------: ----------------: ----------: --------: -------:
  for row in "${rows[@]}"; do
    IFS='|' read -r q m_ms g_ms ratio m_mb g_mb ok_t ok_m <<<"$row"
    printf "$fmt" "$q" "$m_ms" "$g_ms" "$ratio" "$m_mb" "$g_mb" "$ok_t" "$ok_m"
  done
  echo
} | tee "$OUT/summary.md"

if [ "$all_met" -eq 1 ]; then
  log "all targets met (details: $OUT/trace-*.json, $OUT/trace-*.md, $OUT/summary.md)"
else
  log "some targets NOT met (details: $OUT/trace-*.json, $OUT/trace-*.md, $OUT/summary.md)"
  [ "$STRICT" = "1" ] && exit 1
fi
exit 0
