#!/usr/bin/env bash
# Prepares the GPU check here, on any x86-64 Linux machine (no GPU needed), so that a lent GPU's
# minutes go to the check alone (tests/gpu/README.md):
#   * builds target/release/examples/gpu_check and target/release/libditac.so;
#   * compiles ops/cuda/ditac.cu for the GPUs' architectures (cubin and PTX) with NVRTC 13.0 from
#     PyPI into target/gpu-carry/kernels — the GPU machine reads them through DITAC_CUDA_CACHE
#     and compiles nothing (it needs no NVRTC at all);
#   * fetches PyPI's compute-sanitizer wheel (14 MB) into target/gpu-carry (unpacked on the GPU machine
#     when it has no compute-sanitizer of its own).
# CUDA 13.0, the oldest CUDA 13: a driver runs code from its own or an older toolkit, not a newer.
#
#   bash tests/gpu/prepare.sh [--arch 80,90,100,120]
#
# Downloads (once; kept in target/): nvidia-cuda-nvrtc 13.0.88 (90 MB, into
# target/gpu-nvrtc, not carried), nvidia-cuda-sanitizer-api 13.0.85 (14 MB, carried).
# Prints the device tool's carry list and command at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
ARCHS=80,90,100,120
[ "${1:-}" = "--arch" ] && ARCHS="$2"
NVRTC_VERSION=13.0.88
SANITIZER_VERSION=13.0.85
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] && PY=.venv/bin/python
CARRY=target/gpu-carry

echo "== cargo build --release --lib --example gpu_check"
cargo build --release --lib --example gpu_check

fetch() { # fetch PACKAGE==VERSION DIR: the wheel into DIR (no dependencies, binary only)
  mkdir -p "$2"
  if ! ls "$2"/"$(echo "${1%%==*}" | tr - _)"-"${1##*==}"-*.whl >/dev/null 2>&1; then
    echo "== downloading $1 from PyPI into $2"
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$2" "$1"
  fi
}

# NVRTC 13.0 (unpacked here only).
fetch "nvidia-cuda-nvrtc==$NVRTC_VERSION" target/gpu-nvrtc
if [ ! -d target/gpu-nvrtc/unpacked ]; then
  "$PY" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
    target/gpu-nvrtc/nvidia_cuda_nvrtc-"$NVRTC_VERSION"-*.whl target/gpu-nvrtc/unpacked
fi
LIBNVRTC=$(find target/gpu-nvrtc/unpacked -name 'libnvrtc.so*' ! -name '*builtins*' | sort | head -1)
[ -n "$LIBNVRTC" ] || { echo "no libnvrtc.so in the nvidia-cuda-nvrtc wheel" >&2; exit 2; }

echo "== compiling the kernels for sm_{$ARCHS} into $CARRY/kernels"
rm -rf "$CARRY/kernels"
LD_LIBRARY_PATH="$(dirname "$LIBNVRTC")" DITAC_CUDA_SOURCE= \
  target/release/examples/gpu_check --precompile "$CARRY/kernels" --arch "$ARCHS"

fetch "nvidia-cuda-sanitizer-api==$SANITIZER_VERSION" "$CARRY"

echo
echo "carried: $(du -sh "$CARRY" target/release/examples/gpu_check target/release/libditac.so | awk '{print $2 " " $1}' | paste -sd, -)"
cat <<MSG
On the GPU machine (device tool), one call:
  carry:   ["target/release/examples/gpu_check", "target/release/libditac.so", "$CARRY"]
  command: PYTHONUNBUFFERED=1 bash tests/gpu/run.sh 2>&1 | tee \$OUT/gpu.log
  timeout_s: 420
MSG
