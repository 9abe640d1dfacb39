#!/usr/bin/env bash
# The GPU check of the DiTAC CUDA kernels (tests/gpu/README.md): on a machine with an NVIDIA GPU,
# builds (or takes the carried) `gpu_check`, uses the kernels tests/gpu/prepare.sh compiled and
# carried (else NVRTC), runs the kernels through the plugin's glue against the CPU core —
# correctness first, then timing, then PyTorch's gelu beside it — then compute-sanitizer on
# small cases.
# Optional: the real ONNX Runtime CUDA provider with the plugin, when one is installed.
#
#   bash tests/gpu/run.sh [--quick] [--max-log2 28]
#
# Environment: DITAC_GPU_CHECK (a prebuilt gpu_check binary), DITAC_CUDA_CACHE (compiled
# kernels; default target/gpu-carry/kernels when there), DITAC_NVRTC_DIR (folder holding
# libnvrtc.so*), DITAC_GPU_SANITIZER=0 (no compute-sanitizer pass), PYTHON (default python3),
# OUT (where logs go; default a temporary folder).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUTDIR="${OUT:-$(mktemp -d)}"
mkdir -p "$OUTDIR"
PY="${PYTHON:-python3}"
MAXLOG=28
for ((i = 1; i <= $#; i++)); do
  if [ "${!i}" = "--max-log2" ]; then j=$((i + 1)); MAXLOG="${!j}"; fi
done

# 1. The check binary: the one tests/gpu/prepare.sh built and carried (no device time spent
#    building), else built here when cargo exists, else a prebuilt one.
BIN="${DITAC_GPU_CHECK:-}"
if [ -z "$BIN" ] && [ -d target/gpu-carry ] && [ -x target/release/examples/gpu_check ]; then
  echo "== the carried target/release/examples/gpu_check (tests/gpu/prepare.sh)" >&2
  BIN=target/release/examples/gpu_check
fi
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

# 2. The kernels: carried (tests/gpu/prepare.sh), else compiled here by libnvrtc — from the
#    loader path, the CUDA toolkit, or a pip package (nvidia-cuda-nvrtc, which PyTorch installs).
if [ -z "${DITAC_CUDA_CACHE:-}" ] && [ -d target/gpu-carry/kernels ]; then
  export DITAC_CUDA_CACHE="$PWD/target/gpu-carry/kernels"
fi
echo "== compiled kernels from: ${DITAC_CUDA_CACHE:-the default cache} ($(ls "${DITAC_CUDA_CACHE:-/nonexistent}" 2>/dev/null | wc -l) files)" >&2
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

# 3. Correctness first (every case; nothing else has run yet if the time runs out).
echo "== $BIN --skip-timing (correctness)" >&2
"$BIN" --skip-timing "$@" 2>&1 | tee "$OUTDIR/gpu_check.log"
rc=${PIPESTATUS[0]}

# 4. Then timing at the goals' sizes (the table; its gelu column stays empty on a first run).
TIMES_JSON="$OUTDIR/ditac_times.json"
if [ "$rc" -ne 2 ]; then
  echo "== $BIN --timing-only" >&2
  "$BIN" --timing-only --times-json "$TIMES_JSON" "$@" 2>&1 | tee "$OUTDIR/gpu_timing.log"
  trc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] && [ "$trc" -ne 0 ] && rc=$trc
fi

# 5. Then PyTorch's gelu at the same sizes (CUDA events), when torch is importable, beside DiTAC's.
if "$PY" -c "import torch; assert torch.cuda.is_available()" >/dev/null 2>&1; then
  echo "== torch gelu timing" >&2
  "$PY" tests/gpu/torch_gelu.py 20 "$MAXLOG" "$OUTDIR/torch_gelu.json" "$TIMES_JSON" |
    tee "$OUTDIR/torch_gelu.log"
else
  echo "== torch with CUDA not importable: no gelu comparison" >&2
fi

# 6. The ONNX Runtime CUDA provider with the plugin (only where onnxruntime-gpu is installed).
PLUGIN="${DITAC_PLUGIN:-target/release/libditac.so}"
if [ -f "$PLUGIN" ] && [ "$rc" -ne 2 ]; then
  echo "== ONNX Runtime CUDA provider" >&2
  "$PY" tests/gpu/ort_cuda.py "$PLUGIN" 2>&1 | tee "$OUTDIR/ort_cuda.log" >&2
fi

# 7. compute-sanitizer on the small cases (memcheck, racecheck, synccheck; 60 s each at most): the
#    machine's own, or the carried wheel's (tests/gpu/prepare.sh), unpacked into $OUTDIR.
san_rc=0
if [ "${DITAC_GPU_SANITIZER:-1}" != 0 ] && [ "$rc" -ne 2 ]; then
  SAN=$(command -v compute-sanitizer 2>/dev/null || true)
  [ -z "$SAN" ] && SAN=$(ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | tail -1 || true)
  WHEEL=$(ls target/gpu-carry/nvidia_cuda_sanitizer_api-*.whl 2>/dev/null | tail -1 || true)
  if [ -z "$SAN" ] && [ -n "$WHEEL" ]; then
    "$PY" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
      "$WHEEL" "$OUTDIR/sanitizer" &&
      SAN=$(find "$OUTDIR/sanitizer" -type f -name compute-sanitizer -size +1M | head -1)
    [ -n "$SAN" ] && chmod +x "$SAN"
  fi
  if [ -z "$SAN" ]; then
    echo "== no compute-sanitizer (none installed, none carried: run tests/gpu/prepare.sh): skipped"
  else
    for tool in memcheck racecheck synccheck; do
      echo "== compute-sanitizer --tool $tool ($SAN)"
      timeout 60 "$SAN" --tool "$tool" --error-exitcode 3 --print-limit 20 "$BIN" --sanitize \
        >"$OUTDIR/sanitizer-$tool.log" 2>&1
      r=$?
      grep -E '^(FAIL|correctness:)|ERROR SUMMARY|=========' "$OUTDIR/sanitizer-$tool.log" | head -25
      echo "compute-sanitizer $tool: exit status $r$([ $r -eq 124 ] && echo ' (timed out after 60 s)')"
      [ $r -ne 0 ] && san_rc=1
    done
  fi
fi
echo "(logs in $OUTDIR; gpu_check exit status $rc; compute-sanitizer $([ $san_rc -eq 0 ] && echo clean or skipped || echo 'found errors'))"
[ "$rc" -ne 0 ] && exit "$rc"
exit "$san_rc"
