#!/usr/bin/env bash
# Idempotent set-up, sized to what is asked: `bash tools/setup.sh [TIER...]` (default: every tier).
# Each tier says what it downloads before it does; a tier already in place downloads nothing.
#  - ort    : .ort/<ORT_NEWEST>/libonnxruntime.so, the C library of ONNX Runtime taken from the PyPI
#             wheel (all `tools/demo.sh` needs beside the build).
#  - ort-oldest : .ort/<ORT_OLDEST>/ the compatibility floor the Rust tests load.
#  - venv   : .venv/ with onnxruntime, onnx, numpy, pytest, maturin, ziglang, cargo-zigbuild,
#             auditwheel for the Python tests and the wheel.
#  - torch  : .venv-torch/ (PyTorch: about 3.1 GB of wheels) for the exporter tests.
#  - train  : .venv-train/ (onnxruntime-training-cpu 1.19.2) for the training-engine tests.
#  - triton : .venv-triton/ (nvidia-pytriton's tritonserver, about 150 MB) for the serving tests.
# `tools/test.sh` asks for every tier (DITAC_SKIP_TORCH, DITAC_SKIP_TRAINING_ENGINE and
# DITAC_SKIP_TRITON leave theirs out).
set -euo pipefail
cd "$(dirname "$0")/.."
# ORT_NEWEST is tools/src/runtime.rs's ORT_VERSION (the one definition; read from there).
ORT_NEWEST="${ORT_NEWEST:-$(sed -n 's/^pub const ORT_VERSION: &str = "\(.*\)";$/\1/p' tools/src/runtime.rs)}"
ORT_OLDEST="${ORT_OLDEST:-1.19.2}"
PY="${PYTHON:-python3}"
TIERS=("$@")
[ ${#TIERS[@]} -gt 0 ] || TIERS=(ort ort-oldest venv torch train triton)
want() { local t; for t in "${TIERS[@]}"; do [ "$t" = "$1" ] && return 0; done; return 1; }
for t in "${TIERS[@]}"; do
  case "$t" in ort|ort-oldest|venv|torch|train|triton) ;; *) echo "setup: unknown tier '$t' (ort, ort-oldest, venv, torch, train, triton)" >&2; exit 2 ;; esac
done
want torch || DITAC_SKIP_TORCH=1
want train || DITAC_SKIP_TRAINING_ENGINE=1
want triton || DITAC_SKIP_TRITON=1

# shellcheck source=tools/ort-wheel.sh
source tools/ort-wheel.sh
fetch_ort() {
  local ver="$1" dir=".ort/$1"
  [ -f "$dir/libonnxruntime.so" ] && return 0
  echo "setup: downloading PyPI's onnxruntime $ver wheel for its libonnxruntime.so (into .ort/$ver/)" >&2
  ort_from_wheel "$PY" "$ver" x86_64 "$dir"
}

# Disk, checked before anything large is written (a full disk mid-install leaves a half-made venv and
# an OSError that names no cause). Sizes measured on a clean clone: the Rust builds (target/ 2.2 GB,
# fuzz/target/ 1.6 GB), .venv 0.7 GB, .venv-train 0.3 GB, .venv-triton 0.5 GB; .venv-torch 5.8 GB
# installed, with its 3.1 GB of wheels held while they install.
free_gb() { df -Pk . | awk 'NR == 2 { printf "%d", $4 / 1048576 }'; }
need_gb=0
[ -d target/release ] || need_gb=$((need_gb + 3))
want venv && [ ! -d fuzz/target ] && need_gb=$((need_gb + 2))
want venv && [ ! -x .venv/bin/python ] && need_gb=$((need_gb + 1))
want train && [ ! -x .venv-train/bin/python ] && need_gb=$((need_gb + 1))
want triton && [ ! -x .venv-triton/bin/python ] && need_gb=$((need_gb + 1))
torch_gb=10
if [ "${DITAC_SKIP_TORCH:-0}" != "1" ] && [ ! -x .venv-torch/bin/python ] && \
   [ "$(free_gb)" -lt $((need_gb + torch_gb)) ]; then
  msg="$(free_gb) GB free on $(df -P . | awk 'NR == 2 { print $6 }'), and the PyTorch tier needs about ${torch_gb} GB beside the ${need_gb} GB the rest of the suite still needs"
  if [ "${DITAC_REQUIRE_TORCH:-0}" = "1" ]; then
    echo "setup: error: $msg (DITAC_REQUIRE_TORCH=1)" >&2
    exit 1
  fi
  echo "setup: SKIPPING .venv-torch and the exporter tests: $msg. Free some space and rerun, or set DITAC_REQUIRE_TORCH=1 to make this an error." >&2
  export DITAC_SKIP_TORCH=1
fi
if [ "$(free_gb)" -lt "$need_gb" ]; then
  echo "setup: error: $(free_gb) GB free on $(df -P . | awk 'NR == 2 { print $6 }'), and the builds and venvs still to be made need about ${need_gb} GB" >&2
  exit 1
fi

want ort && fetch_ort "$ORT_NEWEST"
want ort-oldest && fetch_ort "$ORT_OLDEST"

# maturin, ziglang, cargo-zigbuild and auditwheel build and check the ditac-onnx wheel
# (tools/build-wheel.sh, tests/python/test_package.py). auditwheel is run as its script, whose
# first line names the venv's python: a venv copied or moved from elsewhere fails here and is made
# again from scratch (--clear; pip alone would keep the stale script).
if want venv && { [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import onnxruntime, onnx, numpy, pytest, ziglang" 2>/dev/null \
   || ! .venv/bin/auditwheel --version >/dev/null 2>&1 \
   || [ ! -x .venv/bin/maturin ] || [ ! -x .venv/bin/cargo-zigbuild ]; }; then
  echo "setup: creating .venv, downloading from PyPI onnxruntime==$ORT_NEWEST, onnx, numpy, pytest, maturin, ziglang, cargo-zigbuild, auditwheel" >&2
  "$PY" -m venv --clear .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "onnxruntime==$ORT_NEWEST" onnx numpy pytest \
    "maturin>=1.16,<2" ziglang cargo-zigbuild auditwheel
fi

# .venv-torch/ : PyTorch (PyPI's wheel, with its CUDA libraries: about 3.1 GB to download, 5.8 GB
# installed, 4 minutes here) with onnxscript for tests/python/test_export.py (ditac_onnx.torch.export
# through PyTorch's own exporters). DITAC_SKIP_TORCH=1 leaves it out (the test then skips), as does a
# disk with too little room (above; DITAC_REQUIRE_TORCH=1 makes that an error). --no-cache-dir: the
# 3.1 GB of wheels are not kept after they install.
if [ "${DITAC_SKIP_TORCH:-0}" != "1" ] && { [ ! -x .venv-torch/bin/python ] || \
   ! .venv-torch/bin/python -c "import torch, onnxscript, onnx, onnxruntime, numpy, pytest" 2>/dev/null; }; then
  echo "setup: creating .venv-torch, downloading from PyPI torch (with its CUDA libraries), onnxscript, onnx, onnxruntime==$ORT_NEWEST, numpy, pytest (about 3.1 GB)" >&2
  "$PY" -m venv .venv-torch
  .venv-torch/bin/python -m pip install -q --upgrade pip
  .venv-torch/bin/python -m pip install -q --no-cache-dir torch onnxscript onnx "onnxruntime==$ORT_NEWEST" numpy pytest
fi

# .venv-train/ : ONNX Runtime's last published training engine (PyPI onnxruntime-training-cpu 1.19.2,
# Python 3.11), for tests/python/test_training.py. A separate venv: it conflicts with `onnxruntime`.
if [ "${DITAC_SKIP_TRAINING_ENGINE:-0}" != "1" ] && { [ ! -x .venv-train/bin/python ] || \
   ! .venv-train/bin/python -c "import numpy, pytest; from onnxruntime.capi import _pybind_state as C; C.Module" 2>/dev/null; }; then
  echo "setup: creating .venv-train, downloading from PyPI onnxruntime-training-cpu==1.19.2, numpy<2, pytest" >&2
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
  echo "setup: creating .venv-triton, downloading from PyPI nvidia-pytriton==0.7.0, tritonclient[http,grpc], onnxruntime==$ORT_NEWEST, onnx, numpy<2, pytest (about 150 MB)" >&2
  "$PY" -m venv .venv-triton
  .venv-triton/bin/python -m pip install -q --upgrade pip
  .venv-triton/bin/python -m pip install -q "nvidia-pytriton==0.7.0" "tritonclient[http,grpc]==2.73.0" \
    "onnxruntime==$ORT_NEWEST" onnx "numpy<2" pytest
fi
