#!/usr/bin/env bash
# Builds the `ditac-onnx` wheel (tools/python) into target/wheels/ (or $WHEEL_OUT):
#  - libditac.so (package `ditac`) by cargo-zigbuild, linked against glibc 2.28, copied into the
#    Python package as data;
#  - the `ditac` binary (package `ditac-tools`) by maturin (`bindings = "bin"`), also through zig,
#    and the wheel tagged manylinux_2_28 (maturin checks the binary's symbols against that policy).
# Needs maturin, ziglang and cargo-zigbuild (PyPI) in $PYTHON's environment (tools/setup.sh puts
# them in .venv).
# Usage: build-wheel.sh [x86_64|aarch64] [maturin options]: the architecture (default x86_64;
# aarch64 is cross-built by zig, which brings its own glibc stubs: no cross toolchain needed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$PWD/.venv/bin/python}"
OUT="${WHEEL_OUT:-$PWD/target/wheels}"
BIN="$(dirname "$PY")"
ARCH=x86_64
case "${1:-}" in
  x86_64 | aarch64) ARCH="$1"; shift ;;
esac
TARGET=$ARCH-unknown-linux-gnu
GLIBC=2.28
export PATH="$BIN:$PATH"
echo "build-wheel: libditac.so for $TARGET, glibc $GLIBC" >&2
cargo zigbuild --release -p ditac --lib --target "$TARGET.$GLIBC"
cp "target/$TARGET/release/libditac.so" tools/python/ditac_onnx/libditac.so.tmp
mv tools/python/ditac_onnx/libditac.so.tmp tools/python/ditac_onnx/libditac.so
echo "build-wheel: the wheel (maturin, manylinux_$GLIBC)" >&2
cd tools/python
maturin build --release --zig --target "$TARGET" --compatibility "manylinux_${GLIBC/./_}" \
  --out "$OUT" "$@"
