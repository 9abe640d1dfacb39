#!/usr/bin/env bash
# One-time, idempotent set-up used by `tools/demo.sh` and `tools/test.sh`:
#  - .ort/<version>/libonnxruntime.so : the C library of ONNX Runtime, taken from the PyPI wheel
#    (the only place it can be fetched from here); ORT_NEWEST is the default, ORT_OLDEST the
#    compatibility floor we test against.
#  - .venv/ : Python with onnxruntime, onnx, numpy and pytest for the Python-side tests.
#  - .venv-train/ : ONNX Runtime's training engine (below); .venv-triton/ : a Triton server (below).
set -euo pipefail
cd "$(dirname "$0")/.."
ORT_NEWEST="${ORT_NEWEST:-1.32.0}"
ORT_OLDEST="${ORT_OLDEST:-1.19.2}"
PY="${PYTHON:-python3}"

fetch_ort() {
  local ver="$1" dir=".ort/$1"
  [ -f "$dir/libonnxruntime.so" ] && return 0
  echo "setup: fetching libonnxruntime $ver from the PyPI wheel" >&2
  local tmp; tmp="$(mktemp -d)"
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    "onnxruntime==$ver" -d "$tmp"
  mkdir -p "$dir"
  "$PY" - "$tmp" "$dir" <<'PYEOF'
import sys, zipfile, glob, os
whl = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if "/capi/libonnxruntime.so" in n]
    if not names:
        sys.exit(f"no libonnxruntime.so in {whl}")
    with z.open(sorted(names, key=len)[-1]) as src, open(os.path.join(sys.argv[2], "libonnxruntime.so.tmp"), "wb") as dst:
        dst.write(src.read())
os.replace(os.path.join(sys.argv[2], "libonnxruntime.so.tmp"), os.path.join(sys.argv[2], "libonnxruntime.so"))
PYEOF
  rm -rf "$tmp"
}

fetch_ort "$ORT_NEWEST"
fetch_ort "$ORT_OLDEST"

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import onnxruntime, onnx, numpy, pytest" 2>/dev/null; then
  echo "setup: creating .venv with onnxruntime==$ORT_NEWEST, onnx, numpy, pytest" >&2
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "onnxruntime==$ORT_NEWEST" onnx numpy pytest
fi

# .venv-train/ : ONNX Runtime's last published training engine (PyPI onnxruntime-training-cpu 1.19.2,
# Python 3.11), for tests/python/test_training.py. A separate venv: it conflicts with `onnxruntime`.
if [ "${DITAC_SKIP_TRAINING_ENGINE:-0}" != "1" ] && { [ ! -x .venv-train/bin/python ] || \
   ! .venv-train/bin/python -c "import numpy, pytest; from onnxruntime.capi import _pybind_state as C; C.Module" 2>/dev/null; }; then
  echo "setup: creating .venv-train with onnxruntime-training-cpu==1.19.2, numpy<2, pytest" >&2
  "$PY" -m venv .venv-train
  .venv-train/bin/python -m pip install -q --upgrade pip
  .venv-train/bin/python -m pip install -q "onnxruntime-training-cpu==1.19.2" "numpy<2" pytest
fi

# .venv-triton/ : a real Triton Inference Server for tests/python/test_triton.py and
# tools/triton/serve.sh: PyPI's nvidia-pytriton 0.7.0 ships tritonserver 2.51.0 (the 24.10 release,
# CPU-capable, Python backend only) with its libraries; tritonclient for HTTP and gRPC; onnxruntime
# (for the Python-backend models and the in-process comparison), onnx, numpy<2 (tritonclient's
# bound, pinned so pip does not fetch numpy 2 first), pytest. About 150 MB of wheels.
if [ "${DITAC_SKIP_TRITON:-0}" != "1" ] && { [ ! -x .venv-triton/bin/python ] || \
   ! .venv-triton/bin/python -c "
import importlib.util, os, sys
import tritonclient.http, tritonclient.grpc, onnxruntime, onnx, numpy, pytest
server = os.path.join(os.path.dirname(importlib.util.find_spec('pytriton').origin), 'tritonserver/bin/tritonserver')
sys.exit(not os.access(server, os.X_OK))" 2>/dev/null; }; then
  echo "setup: creating .venv-triton with nvidia-pytriton==0.7.0, tritonclient[http,grpc], onnxruntime==$ORT_NEWEST, onnx, numpy<2, pytest" >&2
  "$PY" -m venv .venv-triton
  .venv-triton/bin/python -m pip install -q --upgrade pip
  .venv-triton/bin/python -m pip install -q "nvidia-pytriton==0.7.0" "tritonclient[http,grpc]==2.73.0" \
    "onnxruntime==$ORT_NEWEST" onnx "numpy<2" pytest
fi
