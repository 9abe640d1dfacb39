#!/usr/bin/env bash
# ops/cuda/ditac.cu executed on the CPU (tests/cuda_host/README.md): every kernel through the
# plugin's launch path, compared with the CPU core, twice — a plain build (every case) and an
# AddressSanitizer build (the quick cases; skipped with a message when the compiler has no
# libasan). Prints every case it ran; exits non-zero on any mismatch.
#
#   bash tests/cuda_host/run.sh            # both passes
#   bash tests/cuda_host/run.sh --no-asan  # the plain pass only
#
# Environment: DITAC_CUDA_SOURCE (another kernel source), CXX (default g++), DITAC_EMU_SEED.
set -euo pipefail
cd "$(dirname "$0")/../.."
CXX="${CXX:-g++}"
export CXX

echo "== CUDA kernels on the CPU emulator (${DITAC_CUDA_SOURCE:-ops/cuda/ditac.cu})"
cargo test --release --test cuda_emu -- --nocapture --test-threads=1

[ "${1:-}" = "--no-asan" ] && exit 0
LIBASAN=$("$CXX" -print-file-name=libasan.so 2>/dev/null || true)
if [ -z "$LIBASAN" ] || [ ! -e "$LIBASAN" ] || [ "$LIBASAN" = "libasan.so" ]; then
  echo "== no libasan for $CXX: the AddressSanitizer pass is skipped"
  exit 0
fi
# The test binary, not cargo, runs with libasan preloaded (the emulator library is instrumented).
BIN=$(cargo test --release --test cuda_emu --no-run 2>&1 |
  sed -n 's/.*(\(.*target\/[^)]*cuda_emu-[0-9a-f]*\)).*/\1/p' | tail -1)
[ -x "$BIN" ] || { echo "could not find the cuda_emu test binary" >&2; exit 1; }
echo "== the same kernels with AddressSanitizer (quick cases): $BIN"
DITAC_EMU_ASAN=1 DITAC_EMU_QUICK=1 ASAN_OPTIONS="detect_leaks=0:abort_on_error=0" \
  LD_PRELOAD="$LIBASAN" "$BIN" --nocapture --test-threads=1
