#!/usr/bin/env bash
# Builds the release wheel of `ditac-onnx` (tools/python) into target/wheels/ (or $WHEEL_OUT) through
# the same build backend as `pip install ./tools/python` (tools/python/ditac_onnx/_build_backend.py:
# maturin's one cargo run builds the `ditac` command and, as its dependency, the plugin; both go into
# the wheel), here with zig linking both against glibc 2.28, so that the wheel is manylinux_2_28
# (maturin checks the command's symbols against that policy). Needs maturin, ziglang and
# cargo-zigbuild (PyPI) in $PYTHON's environment (tools/setup.sh venv puts them in .venv). Extra
# arguments go to maturin.
# Usage: build-wheel.sh [x86_64|aarch64] [maturin options]: the architecture (default x86_64;
# aarch64 is cross-built by zig, which brings its own glibc stubs: no cross toolchain needed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$PWD/.venv/bin/python}"
OUT="${WHEEL_OUT:-$PWD/target/wheels}"
ARCH=x86_64
case "${1:-}" in
  x86_64 | aarch64) ARCH="$1"; shift ;;
esac
GLIBC=2.28
export PATH="$(dirname "$PY"):$PATH"
export MATURIN_PEP517_ARGS="--zig --target $ARCH-unknown-linux-gnu --compatibility manylinux_${GLIBC/./_} $*"
echo "build-wheel: ditac-onnx for $ARCH, glibc $GLIBC (maturin $MATURIN_PEP517_ARGS)" >&2
"$PY" -m pip wheel -v --no-build-isolation --no-deps --wheel-dir "$OUT" tools/python >&2
