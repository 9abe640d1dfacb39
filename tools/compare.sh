#!/usr/bin/env bash
# DiTAC vs GELU vs ReLU vs PReLU: the same network with each activation, the same data, steps, batch,
# optimizer, learning rate and seeds; prints a Markdown table of test MSE (or accuracy).
#   bash tools/compare.sh [STEPS] [SEEDS] [SET]
#   SET mlp   (default): models/regression/spec.toml and compare/*.toml, 2 → 32 → act → 32 → act → 1,
#                        AdamW lr 3e-3, seeds 0 1 2
#   SET paper:           models/regression/paper/*.toml, the paper's 2 → 50 → act → 1 on the authors'
#                        own target (`example-data paper-regression`, 98 000 training points — one
#                        fresh point per sample of the 10 000 batches, as their fresh draws — and
#                        2000 test points, written to out/paper-regression once), torch's Adam lr 5e-3
#                        (the authors' regression_example), seeds 1 2 3
#   SET paper-ours:      the same networks and training on models/regression's data
#   SET digits:          models/digits/*.toml, a small CNN on scikit-learn's 8×8 digits, cross-entropy,
#                        torch's Adam lr 3e-3, batch 64, seeds 1 2 3 (test accuracy)
# Environment: LR, OPT (optimizer), FLAGS (extra `ditac train` flags for every run).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${1:-10000}"
SET="${3:-mlp}"
DATA=models/regression; BATCH=98; LOSS=mse; METRIC=MSE
case "$SET" in
  digits) SEEDS="${2:-1 2 3}"; LR="${LR:-3e-3}"; OPT="${OPT:-adam}"; DATA=models/digits; BATCH=64; LOSS=cross-entropy; METRIC=accuracy
       SPECS="models/digits/ditac.toml models/digits/gelu.toml models/digits/relu.toml models/digits/prelu.toml" ;;
  mlp) SEEDS="${2:-0 1 2}"; LR="${LR:-3e-3}"; OPT="${OPT:-adamw}"
       SPECS="models/regression/spec.toml models/regression/compare/gelu.toml models/regression/compare/relu.toml models/regression/compare/prelu.toml" ;;
  paper|paper-ours) SEEDS="${2:-1 2 3}"; LR="${LR:-5e-3}"; OPT="${OPT:-adam}"
       if [ "$SET" = paper ]; then DATA=out/paper-regression; fi
       SPECS="models/regression/paper/ditac.toml models/regression/paper/gelu.toml models/regression/paper/relu.toml models/regression/paper/prelu.toml" ;;
  *) echo "unknown set $SET: expected mlp, paper, paper-ours or digits" >&2; exit 2 ;;
esac
BIN=target/release/ditac
[ -x "$BIN" ] && [ -f target/release/libditac.so ] || cargo build --release
if [ "$DATA" = out/paper-regression ] && [ ! -f "$DATA/train.npz" ]; then
  "$BIN" example-data paper-regression --train 98000 --test 2000 -o "$DATA" >/dev/null
fi
OUT=out/compare-$SET
mkdir -p "$OUT"
echo "set $SET: $STEPS steps, batch $BATCH, --optimizer $OPT --lr $LR ${FLAGS:-}; $(lscpu | sed -n 's/^Model name: *//p'), load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '| activation | parameters | test %s (mean over seeds %s) | per seed | seconds per run |\n| --- | --- | --- | --- | --- |\n' "$METRIC" "$SEEDS"
for spec in $SPECS; do
  name=$(basename "$spec" .toml); [ "$name" = spec ] && name=ditac
  mses=(); secs=(); params=""
  for s in $SEEDS; do
    # shellcheck disable=SC2086
    log=$("$BIN" train "$spec" --data "$DATA/train.npz" --test "$DATA/test.npz" --loss "$LOSS" \
      --steps "$STEPS" --batch "$BATCH" --optimizer "$OPT" --lr "$LR" --seed "$s" --quiet ${FLAGS:-} -o "$OUT/$name-$s.onnx")
    mses+=("$(sed -n 's/^test \(MSE\|accuracy\) \([0-9.e-]*\).*/\2/p' <<<"$log")")
    secs+=("$(sed -n 's/^trained .* in \([0-9.]*\) s.*/\1/p' <<<"$log")")
  done
  params=$("$BIN" train-artifacts "$spec" --loss "$LOSS" -o "$OUT/art-$name" | sed -n 's/.*tensors, \([0-9]*\) values.*/\1/p')
  python3 - "$name" "$params" "${mses[*]}" "${secs[*]}" "$METRIC" <<'PY'
import sys, statistics as st
name, params, mses, secs = sys.argv[1], sys.argv[2], [float(v) for v in sys.argv[3].split()], [float(v) for v in sys.argv[4].split()]
label = {"ditac": "DiTAC", "gelu": "GELU", "relu": "ReLU", "prelu": "PReLU"}[name]
fmt = (lambda v: f"{v:.4f}") if sys.argv[5] == "accuracy" else (lambda v: f"{v:.2e}")
print(f"| {label} | {params} | {fmt(st.mean(mses))} | {', '.join(fmt(m) for m in mses)} | {st.mean(secs):.1f} |")
PY
done
