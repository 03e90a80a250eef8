#!/usr/bin/env bash
# Runs every cargo fuzz target of fuzz/ for SECONDS each (default 20).
# Longer runs: `bash scripts/fuzz.sh 3600`, or one target: `bash scripts/fuzz.sh 600 pop3_reply`.
# FUZZ_RUNS=N runs N inputs per target with a fixed seed instead: what CI does, so that a
# commit's fuzz step passes or fails the same way every time (new finds come from long runs).
#
# Each run starts from fuzz/regressions/<target> (inputs that once failed: they must pass
# first), the corpus of real messages (tests/corpora) for the mail targets, and the working corpus
# fuzz/corpus/<target> (kept between runs, not committed). A failure leaves its input in
# fuzz/artifacts/<target>/ and fails the script; minimise it (`cargo fuzz tmin`), fix the
# code, add the input to fuzz/regressions/<target>/ and a unit test next to the fix.
#
# cargo fuzz passes -Z flags (sanitizer coverage, AddressSanitizer), which the stable
# toolchain accepts with RUSTC_BOOTSTRAP=1: no nightly toolchain to install.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-20}
only=${2:-}
CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi
export RUSTC_BOOTSTRAP=1
corpora=$PWD/tests/corpora

cd fuzz
targets=$(cargo fuzz list)
[ -n "$only" ] && targets=$only
cargo fuzz build -O 2>&1 | tail -n 1
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for target in $targets; do
  mkdir -p "corpus/$target" "regressions/$target"
  seeds=("regressions/$target")
  case $target in
    mime_summary | bounce_report | router_headers | route)
      seeds+=("$corpora/bounces" "$corpora/not-bounces") ;;
  esac
  # -timeout: an input taking over 10 s is a hang; -rss_limit_mb: a leak or blow-up. A
  # stranger's message must be read in bounded work: 2 s for the route and the report analysis.
  timeout=10
  case $target in route | bounce_report) timeout=2 ;; esac
  corpus=corpus/$target
  if [ -n "${FUZZ_RUNS:-}" ]; then
    # An empty working corpus: only committed inputs and the fixed seed decide the run.
    corpus=$(mktemp -d)
    budget=(-runs="$FUZZ_RUNS" -seed=1)
    printf '\n==> fuzz %s: %s inputs, seed 1\n' "$target" "$FUZZ_RUNS"
  else
    budget=(-max_total_time="$seconds")
    printf '\n==> fuzz %s for %ss\n' "$target" "$seconds"
  fi
  status=0
  cargo fuzz run -O "$target" "$corpus" "${seeds[@]}" -- \
    "${budget[@]}" -timeout="$timeout" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1 ||
    status=$?
  [ "$corpus" = "corpus/$target" ] || rm -rf "$corpus"
  # libFuzzer's progress lines are noise; its summary and any failure are shown.
  grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)|panicked|ERROR|SUMMARY|Test unit written' "$log" || true
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$log"
    echo "fuzz target $target failed (exit $status; input in fuzz/artifacts/$target)"
    exit 1
  fi
done
