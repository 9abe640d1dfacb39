#!/usr/bin/env bash
# The aarch64 tier: builds for aarch64-unknown-linux-gnu (zig as the linker, glibc 2.28 as the
# wheel) and runs under qemu user-mode emulation:
#  1. the math core: the library's unit tests (the NEON erf against the scalar one included),
#     tests/core_reference.rs (reference vectors), core_properties.rs, kernels_simd.rs (NEON
#     against the scalar reference, bit for bit where the x86 paths are);
#  2. sessions through the aarch64 plugin in the aarch64 libonnxruntime.so: plugin_sessions.rs
#     (reference vectors through ORT), `ditac example-models` (byte for byte the committed
#     models/), `ditac demo` (its own checks, then its outputs against those of the x86-64 build
#     within its tolerance), on NEON and again capped to the scalar path (DITAC_ISA=scalar);
#  3. `ditac bench` once, small (figures under emulation mean nothing: it is run so that it keeps
#     running there).
# Set-up (qemu, the cross C libraries, the Rust target, the aarch64 ONNX Runtime) is
# tests/aarch64/setup.sh; where it cannot be had the tier is skipped with the reason
# (DITAC_REQUIRE_AARCH64=1: an error instead). The two tests that sweep the float32s (the erf's
# forms bit for bit) take every 1301st float under emulation instead of every 13th
# (DITAC_SWEEP_STEP; 5 minutes otherwise).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=tests/aarch64/setup.sh
source tests/aarch64/setup.sh
start=$SECONDS
if ! aarch64_setup; then
  if [ "${DITAC_REQUIRE_AARCH64:-0}" = 1 ]; then
    echo "aarch64 tier: FAILED: set-up impossible (above), and DITAC_REQUIRE_AARCH64=1" >&2
    exit 1
  fi
  echo "aarch64 tier: SKIPPED: set-up impossible here (reason above)" >&2
  exit 0
fi
export PATH="$PWD/.venv/bin:$PATH"
QEMU="$(aarch64_qemu) -L $PWD/$AARCH64_QEMU_ROOT"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="$QEMU"
ZTARGET="$AARCH64_TARGET.2.28"
OUT="target/$AARCH64_TARGET/release"
ORT_ARM="$PWD/$AARCH64_ORT_DIR/libonnxruntime.so"
export DITAC_SWEEP_STEP="${DITAC_SWEEP_STEP:-1301}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
step() { echo "== aarch64 ($((SECONDS - start)) s): $*" >&2; }

step "build (cargo zigbuild --target $ZTARGET): the plugin, ditac, the tests"
cargo zigbuild --release --target "$ZTARGET" -p ditac --lib
cargo zigbuild --release --target "$ZTARGET" -p ditac-tools --bin ditac
cargo-zigbuild test --release --target "$ZTARGET" --no-run -p ditac --lib \
  --test core_reference --test core_properties --test kernels_simd
# (with the environment the run has: ort's build script reads ORT_DYLIB_PATH)
export ORT_DYLIB_PATH="$ORT_ARM" DITAC_PLUGIN="$PWD/$OUT/libditac.so"
cargo-zigbuild test --release --target "$ZTARGET" --no-run -p ditac-tools --test plugin_sessions

step "the math core under qemu: lib unit tests, core_reference, core_properties, kernels_simd"
cargo-zigbuild test --release --target "$ZTARGET" -p ditac --lib \
  --test core_reference --test core_properties --test kernels_simd

step "sessions under qemu: plugin_sessions through the aarch64 plugin and ONNX Runtime"
cargo-zigbuild test --release --target "$ZTARGET" -p ditac-tools --test plugin_sessions

step "ditac example-models under qemu: byte for byte models/"
$QEMU "$OUT/ditac" example-models -o "$TMP/models" --spec models/ditac_mlp.toml >/dev/null
for f in ditac_mlp.onnx ditac_mlp_lut.onnx ditac_mlp_lowered.onnx ditac_mlp.npz; do
  cmp "$TMP/models/$f" "models/$f" || {
    echo "aarch64: ditac example-models made a different models/$f" >&2
    exit 1
  }
done

step "ditac demo: x86-64 (the baseline), then aarch64 under qemu against it (NEON, then scalar)"
export ORT_DYLIB_PATH="$PWD/.ort/$AARCH64_ORT_VERSION/libonnxruntime.so" DITAC_PLUGIN="$PWD/target/release/libditac.so"
cargo build --release -p ditac --lib -p ditac-tools --bin ditac
target/release/ditac demo --repeats 0 --save "$TMP/demo-x86_64.json" >/dev/null
for isa in neon scalar; do
  DITAC_ISA=$isa $QEMU "$OUT/ditac" demo --plugin "$OUT/libditac.so" --ort "$ORT_ARM" --repeats 0 \
    --against "$TMP/demo-x86_64.json" | sed -n '/^checks/,$p'
done

step "ditac bench under qemu (it runs; the figures mean nothing under emulation)"
$QEMU "$OUT/ditac" bench --plugin "$OUT/libditac.so" --ort "$ORT_ARM" --size 64K \
  --threads 1 --repeats 1 --ops identity,nearest,linear,exact,grad >/dev/null

step "passed in $((SECONDS - start)) s"
