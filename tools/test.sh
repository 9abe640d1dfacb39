#!/usr/bin/env bash
# The whole test suite: set-up (ONNX Runtime from PyPI, Python packages), the plugin build, every
# Rust test (unit, property, reference vectors, CLI, sessions through the real plugin), and the
# Python tests through `onnxruntime` (the ditac-onnx wheel built and installed in a fresh venv
# included), the PyTorch exporter in .venv-torch, our training artifacts in ONNX Runtime's 1.19.2
# training engine (.venv-train), and DiTAC models behind a real Triton server (.venv-triton).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
ort_version="$(sed -n 's/^pub const ORT_VERSION: &str = "\(.*\)";$/\1/p' tools/src/runtime.rs)"
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$PWD/.ort/$ort_version/libonnxruntime.so}"
export DITAC_PLUGIN="${DITAC_PLUGIN:-$PWD/target/release/libditac.so}"
echo "== cargo fmt --check, cargo clippy" >&2
cargo fmt --check
cargo clippy --release --all-targets -- -D warnings
echo "== cargo build --release" >&2
cargo build --release --all-targets
echo "== cargo test --release" >&2
cargo test --release --no-fail-fast
# ops/cuda/ditac.cu executed on the CPU (tests/cuda_host/README.md): every kernel through the
# plugin's launch path against the CPU core, plain and with AddressSanitizer (~40 s), then the
# deliberate kernel defects of tests/cuda_host/mutants/, each of which must fail it (~2 min).
echo "== CUDA kernels on the CPU emulator" >&2
bash tests/cuda_host/run.sh
bash tests/cuda_host/mutants.sh
# NVRTC (no GPU): ops/cuda/ditac.cu compiles for sm_80, sm_90, sm_100 and to PTX; the disk cache
# skips a second compile; kernels precompiled for a GPU machine (tests/gpu/prepare.sh) are used
# with no compilation. The ignored tests of src/cuda/tests.rs, one process each (they set
# environment variables), with libnvrtc from the PyTorch venv's CUDA wheels (~2 min); skipped with
# a message without it.
LIBNVRTC=$(find .venv-torch -name 'libnvrtc.so.*' ! -name '*builtins*' 2>/dev/null | sort | tail -1 || true)
if [ -n "$LIBNVRTC" ]; then
  echo "== NVRTC compiles the CUDA kernels ($LIBNVRTC)" >&2
  nvrtc_cache=$(mktemp -d)
  for t in nvrtc_compiles_the_kernels nvrtc_disk_cache_skips_the_second_compile \
    precompiled_images_are_used_without_compiling; do
    LD_LIBRARY_PATH="$(dirname "$LIBNVRTC")" DITAC_TEST_NVRTC=1 DITAC_CUDA_CACHE="$nvrtc_cache" \
      cargo test --release -p ditac --lib "cuda::tests::$t" -- --ignored --exact
  done
  rm -rf "$nvrtc_cache"
else
  echo "== SKIPPED: the NVRTC compile tests (no libnvrtc in .venv-torch)" >&2
fi
if [ -d tests/python ] && ls tests/python/test_*.py >/dev/null 2>&1; then
  echo "== pytest tests/python" >&2
  .venv/bin/python -m pytest -q tests/python --ignore=tests/python/test_install.py
fi
# The install tier: a clone of HEAD, installed by `pip install ./tools/python`, from its sdist and as
# the release wheel (tools/build-wheel.sh), each in a fresh venv, then used from outside with the clone
# deleted. Downloads from PyPI into three fresh venvs: maturin (pip's build isolation), onnxruntime
# (the [cpu] extra), onnx and numpy; and resolves (metadata only) onnxruntime-gpu beside the package.
# The builds share target/, so only the clone's two crates compile again. DITAC_SKIP_INSTALL=1 skips it.
if [ "${DITAC_SKIP_INSTALL:-0}" != "1" ]; then
  echo "== pytest tests/python/test_install.py (ditac installed three ways, used outside the checkout)" >&2
  .venv/bin/python -m pytest -q -s tests/python/test_install.py
fi
# The documentation kept true: the README's quickstart blocks run as written (tests/docs/test_quickstart.py),
# and every repository path and environment variable the documents name exists (tests/docs/test_paths.py).
echo "== pytest tests/docs (the README's quickstart runs; named paths and variables exist)" >&2
.venv/bin/python -m pytest -q tests/docs/test_quickstart.py
.venv/bin/python -m pytest -q tests/docs/test_paths.py
if [ -x .venv-torch/bin/python ]; then
  echo "== pytest tests/python/test_export.py test_torch_module.py (PyTorch's exporters, ditac_onnx.torch.DiTAC)" >&2
  .venv-torch/bin/python -m pytest -q tests/python/test_export.py tests/python/test_torch_module.py
else
  echo "== SKIPPED: tests/python/test_export.py, test_torch_module.py (no .venv-torch: tools/setup.sh said why above)" >&2
fi
if [ -x .venv-train/bin/python ]; then
  echo "== pytest tests/python/test_training.py (ONNX Runtime 1.19.2 training engine)" >&2
  .venv-train/bin/python -m pytest -q tests/python/test_training.py
fi
if [ "${DITAC_SKIP_TRITON:-0}" != "1" ]; then
  echo "== pytest tests/python/test_triton.py (tritonserver 2.51 from PyPI's nvidia-pytriton)" >&2
  DITAC_REQUIRE_TRITON=1 .venv-triton/bin/python -m pytest -q tests/python/test_triton.py
fi
# aarch64: the plugin and ditac cross-built, their tests and sessions run under qemu (NEON kernels
# against the scalar reference, the aarch64 ONNX Runtime); set-up in tests/aarch64/setup.sh,
# skipped with the reason where qemu cannot be installed. DITAC_SKIP_AARCH64=1 skips it.
if [ "${DITAC_SKIP_AARCH64:-0}" != "1" ]; then
  echo "== tests/aarch64/run.sh (aarch64 under qemu)" >&2
  bash tests/aarch64/run.sh
fi
# The ort::training::Trainer engine of `ditac train` (feature `training`): no reachable libonnxruntime
# has the training API, so it is compiled (type-checked) here and run where such a library exists.
echo "== cargo check --release -p ditac-tools --features training --bin ditac" >&2
cargo check --release -p ditac-tools --features training --bin ditac
# A short run of every fuzz target (fuzz/README.md; the long runs are separate). Needs a nightly
# toolchain; cargo-fuzz is installed from crates.io when missing (1–4 minutes, measured). The fuzz
# crate's own build (every dependency with sanitizer coverage) takes several minutes more.
# DITAC_FUZZ_SECONDS=0 skips it.
fuzz_seconds="${DITAC_FUZZ_SECONDS:-20}"
if [ "$fuzz_seconds" != 0 ] && rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "== fuzz: every target for ${fuzz_seconds} s" >&2
  command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
  bash fuzz/run.sh "$fuzz_seconds"
fi
