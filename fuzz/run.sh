#!/usr/bin/env bash
# Runs every cargo-fuzz target for a while: `bash fuzz/run.sh SECONDS` (each target SECONDS of
# wall time) or `bash fuzz/run.sh --runs N` (N executions each). Needs a nightly toolchain and
# cargo-fuzz (`cargo install cargo-fuzz --locked`). Prints per target the executions and whether it
# found a crash; exits non-zero on the first crash (the input is left in fuzz/artifacts/<target>/).
set -euo pipefail
cd "$(dirname "$0")/.."
limit=(-max_total_time="${1:-20}")
if [ "${1:-}" = "--runs" ]; then
  limit=(-runs="$2")
fi
targets=(attrs table onnx safetensors npz spec)
if [ -n "${DITAC_FUZZ_TARGETS:-}" ]; then
  read -r -a targets <<<"$DITAC_FUZZ_TARGETS"
fi
cargo +nightly fuzz build -O
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  seeds=()
  [ -d "fuzz/seeds/$t" ] && seeds=("fuzz/seeds/$t")
  # -rss_limit_mb: an allocation beyond the tools' budget would be a finding, not a slow run.
  log=$(cargo +nightly fuzz run -O "$t" "fuzz/corpus/$t" "${seeds[@]}" -- \
    "${limit[@]}" -rss_limit_mb=3072 -malloc_limit_mb=2048 -timeout=30 -print_final_stats=1 2>&1) || {
    echo "$log" | tail -40
    echo "fuzz $t: CRASH (see fuzz/artifacts/$t/)"
    exit 1
  }
  runs=$(echo "$log" | sed -n 's/^stat::number_of_executed_units: *//p' | tail -1)
  echo "fuzz $t: ${runs:-?} executions, 0 crashes"
done
