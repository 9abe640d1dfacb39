"""The PEP 517 build backend of ditac-onnx: maturin, after the plugin library is built into the package.

maturin (``bindings = "bin"``) builds and packs the ``ditac`` command, but the plugin — the ``ditac``
crate's cdylib, ``libditac.so`` — is package data it does not build. So every way of making the
package (``pip install tools/python``, pip on the sdist, ``tools/build-wheel.sh``) first runs ONE cargo
build of the plugin and the command together, in the target folder and profile that maturin uses,
copies ``libditac.so`` into ``ditac_onnx/``, and then hands over to maturin, whose own cargo run finds
every crate already compiled. With ``--zig`` in maturin's arguments (build-wheel.sh: a
manylinux_2_28 wheel), that build is ``cargo zigbuild`` for the same glibc.

Loaded by path (``backend-path``), not as part of the package; the wheel leaves this file out.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import maturin
from maturin import (  # noqa: F401 (the hooks this backend passes through unchanged)
    build_sdist,
    get_requires_for_build_editable,
    get_requires_for_build_sdist,
    get_requires_for_build_wheel,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

PACKAGE = Path(__file__).resolve().parent


def _say(msg):
    print(f"ditac-onnx build: {msg}", file=sys.stderr, flush=True)


def _maturin_option(args, name):
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def _build_plugin(config_settings):
    """One cargo build of the plugin and the command; libditac.so copied into the package."""
    args = maturin.get_maturin_pep517_args(config_settings)
    # The manifest maturin builds (tools/Cargo.toml in the checkout; rewritten in the sdist).
    text = Path("pyproject.toml").read_text()
    manifest = Path(re.search(r'^manifest-path\s*=\s*"([^"]+)"', text, re.M).group(1)).resolve()
    meta = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--no-deps", "--format-version", "1", "--manifest-path", str(manifest)],
            check=True, capture_output=True, text=True,
        ).stdout
    )
    target_dir = Path(meta["target_directory"])
    profile = _maturin_option(args, "--profile") or "release"
    target = _maturin_option(args, "--target")
    cargo = ["cargo", "build"]
    if "--zig" in args:
        # cargo-zigbuild reads the glibc version from the target's suffix; maturin from --compatibility.
        compat = _maturin_option(args, "--compatibility") or _maturin_option(args, "--manylinux") or ""
        glibc = re.search(r"(\d+)[._](\d+)$", compat)
        target = target or "x86_64-unknown-linux-gnu"
        cargo = ["cargo", "zigbuild", "--target", target + (f".{glibc[1]}.{glibc[2]}" if glibc else "")]
    elif target:
        cargo += ["--target", target]
    cargo += [
        "--profile", profile, "--manifest-path", str(manifest),
        "-p", "ditac", "-p", "ditac-tools", "--lib", "--bin", "ditac",
    ]
    _say(" ".join(cargo) + f" (target folder {target_dir})")
    subprocess.run(cargo, check=True)
    out = target_dir / (target or "") / ("debug" if profile == "dev" else profile) / "libditac.so"
    tmp = PACKAGE / "libditac.so.tmp"
    shutil.copyfile(out, tmp)
    os.replace(tmp, PACKAGE / "libditac.so")
    _say(f"{out} -> {PACKAGE / 'libditac.so'}")


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _build_plugin(config_settings)
    return maturin.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    _build_plugin(config_settings)
    return maturin.build_editable(wheel_directory, config_settings, metadata_directory)
