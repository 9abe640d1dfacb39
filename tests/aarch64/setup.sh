# Set-up of the aarch64 tier (sourced: by tests/aarch64/run.sh, and by tools/setup.sh when it
# wants the tier ready). `aarch64_setup` makes, idempotently:
#  - the emulator and the target's C libraries, from Debian (apt-get, as root):
#    qemu-user-static (qemu-aarch64-static), libc6-arm64-cross (the loader and glibc under
#    /usr/aarch64-linux-gnu), libstdc++6-arm64-cross (libonnxruntime.so needs libstdc++);
#  - the Rust standard library for aarch64-unknown-linux-gnu (`rustup target add`, ~30 MB);
#  - .ort/aarch64/<version>/libonnxruntime.so, from PyPI's onnxruntime manylinux aarch64 wheel.
# The linker is zig (cargo-zigbuild, in .venv as for the x86-64 wheel): no cross gcc.
# Returns 1 with the reason on stderr when something cannot be had (no root or no apt-get for a
# missing package, no rustup, no network): the tier is then skipped and says why.
# Needs: the repository root as the working directory; $PY (default .venv/bin/python) with pip.

# shellcheck source=tools/ort-wheel.sh
source tools/ort-wheel.sh

AARCH64_TARGET=aarch64-unknown-linux-gnu
AARCH64_SYSROOT=/usr/aarch64-linux-gnu
# ONNX Runtime's version: tools/src/runtime.rs's ORT_VERSION (its one definition), as tools/setup.sh.
AARCH64_ORT_VERSION="${AARCH64_ORT_VERSION:-${ORT_NEWEST:-$(sed -n 's/^pub const ORT_VERSION: &str = "\(.*\)";$/\1/p' tools/src/runtime.rs)}}"
AARCH64_ORT_DIR=".ort/aarch64/$AARCH64_ORT_VERSION"
# qemu's -L root: the target's libraries (lib -> /usr/aarch64-linux-gnu/lib) and an ARM
# /proc/cpuinfo. qemu 7.2 passes the host's x86 /proc/cpuinfo through, on which ONNX Runtime's
# cpuinfo finds no ARM core and dereferences NULL at start-up (SIGSEGV); qemu opens a path under
# its -L root first where one exists there.
AARCH64_QEMU_ROOT="target/aarch64-qemu-root"

# The emulator's path (Debian 12 names it qemu-aarch64-static, later releases also qemu-aarch64).
aarch64_qemu() {
  command -v qemu-aarch64-static || command -v qemu-aarch64
}

aarch64_have_system() {
  aarch64_qemu >/dev/null && [ -e "$AARCH64_SYSROOT/lib/ld-linux-aarch64.so.1" ] &&
    [ -e "$AARCH64_SYSROOT/lib/libstdc++.so.6" ]
}

aarch64_setup() {
  local py="${PY:-$PWD/.venv/bin/python}"
  if ! aarch64_have_system; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
      echo "aarch64: qemu-user-static, libc6-arm64-cross and libstdc++6-arm64-cross are not installed, and apt-get cannot install them here (needs root and Debian/Ubuntu)" >&2
      return 1
    fi
    echo "aarch64: installing qemu-user-static libc6-arm64-cross libstdc++6-arm64-cross (apt-get, ~60 MB)" >&2
    local pkgs="qemu-user-static libc6-arm64-cross libstdc++6-arm64-cross"
    # shellcheck disable=SC2086
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $pkgs >/dev/null 2>&1; then
      DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 || true
      # shellcheck disable=SC2086
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $pkgs >&2 || {
        echo "aarch64: apt-get could not install $pkgs" >&2
        return 1
      }
    fi
    aarch64_have_system || {
      echo "aarch64: the emulator or $AARCH64_SYSROOT/lib is still missing after apt-get" >&2
      return 1
    }
  fi
  if ! rustup target list --installed 2>/dev/null | grep -qx "$AARCH64_TARGET"; then
    command -v rustup >/dev/null || {
      echo "aarch64: the Rust target $AARCH64_TARGET is missing and there is no rustup to add it" >&2
      return 1
    }
    echo "aarch64: rustup target add $AARCH64_TARGET (the aarch64 standard library, ~30 MB)" >&2
    rustup target add "$AARCH64_TARGET" >&2 || return 1
  fi
  [ -x "$(dirname "$py")/cargo-zigbuild" ] && "$py" -c "import ziglang" 2>/dev/null || {
    echo "aarch64: cargo-zigbuild and ziglang are missing from $(dirname "$py") (tools/setup.sh installs them)" >&2
    return 1
  }
  mkdir -p "$AARCH64_QEMU_ROOT/proc"
  ln -sfn "$AARCH64_SYSROOT/lib" "$AARCH64_QEMU_ROOT/lib"
  local p ncpu
  ncpu="$(nproc)"
  for ((p = 0; p < ncpu; p++)); do
    # a Neoverse N1 (AWS Graviton2)
    printf 'processor\t: %d\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: 0xd0c\nCPU revision\t: 1\n\n' "$p"
  done >"$AARCH64_QEMU_ROOT/proc/cpuinfo"
  if [ ! -f "$AARCH64_ORT_DIR/libonnxruntime.so" ]; then
    echo "aarch64: fetching libonnxruntime $AARCH64_ORT_VERSION for aarch64 from the PyPI wheel" >&2
    ort_from_wheel "$py" "$AARCH64_ORT_VERSION" aarch64 "$AARCH64_ORT_DIR" || return 1
  fi
}
