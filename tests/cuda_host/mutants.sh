#!/usr/bin/env bash
# Evidence that the CPU emulation catches kernel bugs: every patch in tests/cuda_host/mutants/
# is a deliberate defect of ops/cuda/ditac.cu (a missing __syncthreads, a wrong shuffle offset,
# an off-by-one tail, a wrong channel index, a reduction slot mix-up, …). Each is applied to a
# temporary copy, which the emulator test runs through DITAC_CUDA_SOURCE (quick cases); the
# test must fail on every one. Prints, per mutant, the first failures the harness reported;
# exits non-zero when a mutant survives (or a patch no longer applies).
#
#   bash tests/cuda_host/mutants.sh [mutants/NAME.patch ...]
set -uo pipefail
cd "$(dirname "$0")/../.."
cargo test --release --test cuda_emu --no-run >/dev/null 2>&1 || {
  echo "cargo test --no-run failed" >&2
  exit 2
}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
PATCHES=("$@")
[ ${#PATCHES[@]} -eq 0 ] && PATCHES=(tests/cuda_host/mutants/*.patch)
survivors=0
for p in "${PATCHES[@]}"; do
  name=$(basename "$p" .patch)
  src="$TMP/$name.cu"
  if ! patch -s -o "$src" ops/cuda/ditac.cu "$p" >"$TMP/patch.log" 2>&1; then
    echo "MUTANT $name: the patch does not apply"; cat "$TMP/patch.log"
    survivors=$((survivors + 1))
    continue
  fi
  DITAC_CUDA_SOURCE="$src" DITAC_EMU_QUICK=1 \
    cargo test --release --test cuda_emu -- --nocapture >"$TMP/$name.log" 2>&1
  rc=$?
  if [ $rc -eq 0 ]; then
    echo "MUTANT $name: SURVIVED (the harness passed)"
    survivors=$((survivors + 1))
  else
    n=$(grep -c '^FAIL ' "$TMP/$name.log" || true)
    echo "MUTANT $name: caught ($(grep -o '[0-9]* cases, [0-9]* failures' "$TMP/$name.log" || echo "test aborted"))"
    grep -m 3 '^FAIL [^ ]*: ' "$TMP/$name.log" | cut -c1-200 | sed 's/^/    /'
    [ "$n" -eq 0 ] && tail -n 5 "$TMP/$name.log" | cut -c1-200 | sed 's/^/    /'
  fi
done
echo "$((${#PATCHES[@]} - survivors)) of ${#PATCHES[@]} mutants caught"
[ $survivors -eq 0 ]
