#!/usr/bin/env bash
# Times torchvision's ConvNeXt-T with its 18 GELUs as DiTAC (θ = 0, [a, b] = [−3, 3], tess 10,
# nearest, 2048 nodes: `ditac patch`) against the same network with `Gelu`, through
# `ditac bench --model` (1 and 2 threads; then the AVX2 path with DITAC_ISA=avx2).
# Needs .venv-torch (tools/setup.sh); installs torchvision 0.29.2 and Pillow (about 10 MB, no other
# dependencies) into target/bench/py the first time. Extra arguments go to `ditac bench`
# (e.g. --repeats 41).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -x .venv-torch/bin/python ] || { echo "convnext_t.sh: .venv-torch is missing: run tools/setup.sh" >&2; exit 1; }
OUT=target/bench
PY=.venv-torch/bin/python
if ! PYTHONPATH=$OUT/py $PY -c "import torchvision" 2>/dev/null; then
  echo "convnext_t.sh: installing torchvision 0.29.2 and Pillow into $OUT/py" >&2
  $PY -m pip install -q --no-deps --target "$OUT/py" "torchvision==0.29.2" "pillow>=10,<14"
fi
cargo build --release -q
PYTHONPATH=$OUT/py $PY tools/bench/export_convnext_t.py "$OUT"
args=()
while read -r n; do args+=(--node "$n"); done < "$OUT/patch_nodes.txt"
target/release/ditac patch "$OUT/convnext_t.onnx" --params "$OUT/theta0.npz" "${args[@]}" \
  --a=-3 --b 3 --tess 10 -o "$OUT/convnext_t_ditac.onnx" > /dev/null
target/release/ditac bench --model "$OUT/convnext_t_ditac.onnx" --threads 1,2 --repeats 21 "$@"
DITAC_ISA=avx2 target/release/ditac bench --model "$OUT/convnext_t_ditac.onnx" --threads 1,2 --repeats 21 "$@"
