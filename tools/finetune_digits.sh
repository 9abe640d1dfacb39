#!/usr/bin/env bash
# θ-only fine-tuning of a network that came without DiTAC: the digits CNN trained with GELU, its two
# GELU nodes patched to DiTAC with θ = 0 (the identity warp: DiTAC(x) = x·Φ(x) = GELU(x), up to the
# table), then `ditac train MODEL.onnx --trainable theta`. Prints test accuracy (and the test
# cross-entropy) before and after per seed, and which tensors changed.
#   bash tools/finetune_digits.sh [SEEDS] [STEPS]      (defaults: 1 2 3, 500)
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS="${1:-1 2 3}"
STEPS="${2:-500}"
BIN=target/release/ditac
PY=.venv/bin/python
OUT=out/finetune-digits
mkdir -p "$OUT"
COMMON=(--loss cross-entropy --optimizer adam --batch 64 --quiet --data models/digits/train.npz --test models/digits/test.npz)
# θ = 0, one row per channel (d = tess − 1 = 9).
"$PY" -c "import numpy as np; np.savez('$OUT/zero_theta.npz', **{'act1.thetas': np.zeros((8, 9), np.float32), 'act2.thetas': np.zeros((16, 9), np.float32)})"
printf '| seed | GELU network | patched, θ = 0 | θ-only fine-tuned (%s steps) | test cross-entropy, patched → tuned | tensors changed |\n| --- | --- | --- | --- | --- | --- |\n' "$STEPS"
for s in $SEEDS; do
  gelu=$("$BIN" train models/digits/gelu.toml "${COMMON[@]}" --steps 1500 --lr 3e-3 --seed "$s" -o "$OUT/gelu-$s.onnx" | sed -n 's/^test accuracy \([0-9.]*\).*/\1/p')
  "$BIN" patch "$OUT/gelu-$s.onnx" --params "$OUT/zero_theta.npz" --node act1.gelu=act1.thetas --node act2.gelu=act2.thetas \
    --a -3 --b 3 --tess 10 -o "$OUT/patched-$s.onnx" >/dev/null
  log=$("$BIN" train "$OUT/patched-$s.onnx" "${COMMON[@]}" --trainable theta --steps "$STEPS" --lr 3e-3 --seed "$s" -o "$OUT/tuned-$s.onnx")
  tuned=$(sed -n 's/^test accuracy \([0-9.]*\).*/\1/p' <<<"$log")
  "$PY" - "$s" "$gelu" "$tuned" "$OUT/patched-$s.onnx" "$OUT/tuned-$s.onnx" <<'PY'
import sys, numpy as np, onnx, onnxruntime as ort
from onnx import numpy_helper
seed, gelu, tuned, patched, after = sys.argv[1:6]
def scores(path):
    so = ort.SessionOptions(); so.register_custom_ops_library("target/release/libditac.so")
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    d = np.load("models/digits/test.npz")
    y = s.run(None, {s.get_inputs()[0].name: d["x"].astype(np.float32)})[0].astype(np.float64)
    t = d["y"].reshape(-1)
    logp = y - y.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    return float((y.argmax(1) == t).mean()), float(-logp[np.arange(len(t)), t].mean())
inits = lambda p: {t.name: numpy_helper.to_array(t) for t in onnx.load(p).graph.initializer}
a, b = inits(patched), inits(after)
changed = sorted(k for k in a if not np.array_equal(a[k], b[k]))
(acc0, ce0), (acc1, ce1) = scores(patched), scores(after)
assert abs(acc1 - float(tuned)) < 1e-4, (acc1, tuned)  # ditac prints 4 decimals
print(f"| {seed} | {float(gelu):.4f} | {acc0:.4f} | {acc1:.4f} | {ce0:.4f} → {ce1:.4f} | {', '.join(changed)} |")
PY
done
