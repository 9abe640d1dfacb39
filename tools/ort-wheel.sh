# ort_from_wheel PY VERSION ARCH DIR: ONNX Runtime's C library, libonnxruntime.so, taken from PyPI's
# `onnxruntime==VERSION` wheel for ARCH (x86_64 or aarch64; the only place it can be fetched from
# here) into DIR, written under a temporary name and renamed, so DIR never holds half a library.
# Returns 1 with the reason on stderr when pip cannot fetch the wheel or it holds no library.
# Sourced by tools/setup.sh (the x86-64 runtimes) and tests/aarch64/setup.sh (the aarch64 one).
ort_from_wheel() {
  local py="$1" ver="$2" arch="$3" dir="$4" tmp
  tmp="$(mktemp -d)"
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
    --platform "manylinux_2_28_$arch" --platform "manylinux_2_27_$arch" \
    --platform "manylinux_2_17_$arch" "onnxruntime==$ver" -d "$tmp" >&2 || {
    rm -rf "$tmp"
    echo "pip could not download onnxruntime==$ver for $arch" >&2
    return 1
  }
  mkdir -p "$dir"
  "$py" - "$tmp" "$dir" <<'PYEOF' || { rm -rf "$tmp"; return 1; }
import glob, os, sys, zipfile
whl = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if "/capi/libonnxruntime.so" in n]
    if not names:
        sys.exit(f"no libonnxruntime.so in {whl}")
    tmp = os.path.join(sys.argv[2], "libonnxruntime.so.tmp")
    with z.open(sorted(names, key=len)[-1]) as src, open(tmp, "wb") as dst:
        dst.write(src.read())
os.replace(tmp, os.path.join(sys.argv[2], "libonnxruntime.so"))
PYEOF
  rm -rf "$tmp"
}
