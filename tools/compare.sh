#!/usr/bin/env bash
# DiTAC vs GELU vs ReLU vs PReLU on the regression example: the same 2 → 32 → 32 → 1 network, the
# same data, steps, batch, learning rate and seeds; prints a Markdown table of test MSE.
#   bash tools/compare.sh [STEPS] [SEEDS]      (defaults: 10000 steps, seeds 0 1 2)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${1:-10000}"
SEEDS="${2:-0 1 2}"
LR="${LR:-3e-3}"
BIN=target/release/ditac
[ -x "$BIN" ] && [ -f target/release/libditac.so ] || cargo build --release
OUT=out/compare
mkdir -p "$OUT"
printf '| activation | parameters | test MSE (mean over seeds %s) | per seed | seconds per run |\n| --- | --- | --- | --- | --- |\n' "$SEEDS"
for spec in models/regression/spec.toml models/regression/compare/gelu.toml models/regression/compare/relu.toml models/regression/compare/prelu.toml; do
  name=$(basename "$spec" .toml); [ "$name" = spec ] && name=ditac
  mses=(); secs=(); params=""
  for s in $SEEDS; do
    log=$("$BIN" train "$spec" --data models/regression/train.npz --test models/regression/test.npz \
      --steps "$STEPS" --batch 98 --lr "$LR" --seed "$s" --quiet -o "$OUT/$name-$s.onnx")
    mses+=("$(sed -n 's/^test MSE \([0-9.e-]*\).*/\1/p' <<<"$log")")
    secs+=("$(sed -n 's/^trained .* in \([0-9.]*\) s.*/\1/p' <<<"$log")")
  done
  params=$("$BIN" train-artifacts "$spec" -o "$OUT/art-$name" | sed -n 's/.*tensors, \([0-9]*\) values.*/\1/p')
  python3 - "$name" "$params" "${mses[*]}" "${secs[*]}" <<'PY'
import sys, statistics as st
name, params, mses, secs = sys.argv[1], sys.argv[2], [float(v) for v in sys.argv[3].split()], [float(v) for v in sys.argv[4].split()]
label = {"ditac": "DiTAC", "gelu": "GELU", "relu": "ReLU", "prelu": "PReLU"}[name]
print(f"| {label} | {params} | {st.mean(mses):.2e} | {', '.join(f'{m:.2e}' for m in mses)} | {st.mean(secs):.1f} |")
PY
done
