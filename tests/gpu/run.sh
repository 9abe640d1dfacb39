#!/usr/bin/env bash
# The GPU check of the DiTAC CUDA kernels (tests/gpu/README.md): on a machine with an NVIDIA GPU,
# builds (or takes a prebuilt) `gpu_check`, finds libnvrtc, times PyTorch's gelu, then runs the
# kernels through the plugin's glue against the CPU core and prints the timing table last.
# Optional: the real ONNX Runtime CUDA provider with the plugin, when one is installed.
#
#   bash tests/gpu/run.sh [--quick] [--max-log2 28]
#
# Environment: DITAC_GPU_CHECK (a prebuilt gpu_check binary), DITAC_NVRTC_DIR (folder holding
# libnvrtc.so*), PYTHON (default python3), OUT (where logs go; default a temporary folder).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUTDIR="${OUT:-$(mktemp -d)}"
mkdir -p "$OUTDIR"
PY="${PYTHON:-python3}"
MAXLOG=28
for ((i = 1; i <= $#; i++)); do
  if [ "${!i}" = "--max-log2" ]; then j=$((i + 1)); MAXLOG="${!j}"; fi
done

# 1. The check binary: built here when cargo exists, else a prebuilt one (carried).
BIN="${DITAC_GPU_CHECK:-}"
if [ -z "$BIN" ]; then
  if command -v cargo >/dev/null 2>&1; then
    echo "== cargo build --release --example gpu_check --lib" >&2
    cargo build --release --example gpu_check --lib --offline >&2 ||
      cargo build --release --example gpu_check --lib >&2 || exit 2
    BIN=target/release/examples/gpu_check
  elif [ -x target/release/examples/gpu_check ]; then
    echo "== no cargo here: using the prebuilt target/release/examples/gpu_check" >&2
    BIN=target/release/examples/gpu_check
  else
    echo "no cargo and no target/release/examples/gpu_check: build it on an x86-64 Linux machine" \
      "(cargo build --release --example gpu_check) and carry it, or set DITAC_GPU_CHECK" >&2
    exit 2
  fi
fi

# 2. libnvrtc (NVRTC compiles ops/cuda/ditac.cu at the first launch): the loader path, the
#    CUDA toolkit, or a pip package (nvidia-cuda-nvrtc, which PyTorch and CuPy install).
if [ -z "${DITAC_NVRTC_DIR:-}" ]; then
  DITAC_NVRTC_DIR=$("$PY" - <<'PYEOF' 2>/dev/null
import glob, os, site, sys
bases = list(sys.path)
try:
    bases += site.getsitepackages()
except Exception:
    pass
found = []
for b in bases:
    for pat in ("nvidia/*/lib/libnvrtc.so*", "nvidia/cuda_nvrtc/lib/libnvrtc.so*"):
        found += glob.glob(os.path.join(b, pat))
found += glob.glob("/usr/local/cuda*/lib64/libnvrtc.so*")
found += glob.glob("/usr/local/cuda*/targets/x86_64-linux/lib/libnvrtc.so*")
found = [f for f in found if "builtins" not in f and ".alt." not in f]
print(os.path.dirname(sorted(found)[-1]) if found else "")
PYEOF
)
fi
if [ -n "${DITAC_NVRTC_DIR:-}" ]; then
  export LD_LIBRARY_PATH="$DITAC_NVRTC_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
echo "== libnvrtc from: ${DITAC_NVRTC_DIR:-the loader path}" >&2
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >&2

# 3. PyTorch's gelu at the same sizes (CUDA events), when torch is importable.
TORCH_JSON="$OUTDIR/torch_gelu.json"
if "$PY" -c "import torch; assert torch.cuda.is_available()" >/dev/null 2>&1; then
  echo "== torch gelu timing" >&2
  "$PY" tests/gpu/torch_gelu.py 20 "$MAXLOG" "$TORCH_JSON" >&2 || rm -f "$TORCH_JSON"
else
  echo "== torch with CUDA not importable: no gelu column" >&2
fi
[ -f "$TORCH_JSON" ] && export DITAC_TORCH_TIMES="$TORCH_JSON"

# 4. The ONNX Runtime CUDA provider with the plugin (only where onnxruntime-gpu is installed).
PLUGIN="${DITAC_PLUGIN:-target/release/libditac.so}"
if [ -f "$PLUGIN" ]; then
  echo "== ONNX Runtime CUDA provider" >&2
  "$PY" tests/gpu/ort_cuda.py "$PLUGIN" 2>&1 | tee "$OUTDIR/ort_cuda.log" >&2
fi

# 5. Correctness, then timing; the table is printed last.
echo "== $BIN" >&2
"$BIN" "$@" 2>&1 | tee "$OUTDIR/gpu_check.log"
rc=${PIPESTATUS[0]}
echo "(logs in $OUTDIR; gpu_check exit status $rc)"
exit "$rc"
