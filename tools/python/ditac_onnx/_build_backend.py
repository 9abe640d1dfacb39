"""The PEP 517 build backend of ditac-onnx: maturin, plus the plugin library from the same cargo run.

maturin (``bindings = "bin"``) builds and packs the ``ditac`` command; the plugin, ``libditac.so``, is
package data it does not pack. But building the command builds the plugin too: the ``ditac`` crate is
the command's dependency, and cargo builds every crate type a library declares (``cdylib`` and ``rlib``)
even for a dependency, into ``<target>/<profile>/deps/libditac.so``. So every way of making the package
(``pip install ./tools/python``, pip on the sdist, ``tools/build-wheel.sh``) runs maturin — one cargo
invocation, in maturin's own configuration (zig, glibc version, target) — and then adds that
``libditac.so`` to the wheel as ``ditac_onnx/libditac.so``. Nothing is compiled twice.

Loaded by path (``backend-path``), not as part of the package; the wheel leaves this file out.
"""

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import maturin
from maturin import (  # the hooks this backend passes through unchanged
    build_sdist,
    get_requires_for_build_editable,
    get_requires_for_build_sdist,
    get_requires_for_build_wheel,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

__all__ = [
    "build_editable",
    "build_sdist",
    "build_wheel",
    "get_requires_for_build_editable",
    "get_requires_for_build_sdist",
    "get_requires_for_build_wheel",
    "prepare_metadata_for_build_editable",
    "prepare_metadata_for_build_wheel",
]

PACKAGE = Path(__file__).resolve().parent
IN_WHEEL = "ditac_onnx/libditac.so"


def _say(msg):
    print(f"ditac-onnx build: {msg}", file=sys.stderr, flush=True)


def _option(args, name):
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def _plugin_of_last_build(config_settings):
    """``libditac.so`` as maturin's cargo run left it: ``<target dir>/[<triple>/]<profile>/deps/``."""
    args = maturin.get_maturin_pep517_args(config_settings)
    text = Path("pyproject.toml").read_text()
    manifest = Path(re.search(r'^manifest-path\s*=\s*"([^"]+)"', text, re.M).group(1)).resolve()
    meta = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--no-deps", "--format-version", "1", "--manifest-path", str(manifest)],
            check=True, capture_output=True, text=True,
        ).stdout
    )
    profile = _option(args, "--profile") or ("dev" if "--debug" in args else "release")
    folder = Path(meta["target_directory"]) / (_option(args, "--target") or "")
    lib = folder / ("debug" if profile == "dev" else profile) / "deps" / "libditac.so"
    if not lib.is_file():
        raise FileNotFoundError(
            f"{lib} is missing after the build (cargo found the plugin crate up to date but its library "
            "gone): run `cargo clean -p ditac` and build again"
        )
    return lib


def _digest(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _add_to_wheel(wheel, lib):
    """Rewrites ``wheel`` with ``lib`` as ditac_onnx/libditac.so, listed in RECORD."""
    data = lib.read_bytes()
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        record_name = next(n for n in src.namelist() if n.endswith(".dist-info/RECORD"))
        for item in src.infolist():
            if item.filename not in (record_name, IN_WHEEL):
                dst.writestr(item, src.read(item.filename))
        info = zipfile.ZipInfo(IN_WHEEL, date_time=(1980, 1, 1, 0, 0, 0))
        info.external_attr = 0o755 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        dst.writestr(info, data)
        record = [line for line in src.read(record_name).decode().splitlines() if line and not line.startswith(IN_WHEEL + ",")]
        record.insert(len(record) - 1, f"{IN_WHEEL},{_digest(data)},{len(data)}")
        dst.writestr(src.getinfo(record_name), "\n".join(record) + "\n")
    os.replace(tmp, wheel)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name = maturin.build_wheel(wheel_directory, config_settings, metadata_directory)
    lib = _plugin_of_last_build(config_settings)
    _add_to_wheel(Path(wheel_directory) / name, lib)
    _say(f"{lib} -> {name}:{IN_WHEEL}")
    return name


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    name = maturin.build_editable(wheel_directory, config_settings, metadata_directory)
    # An editable install imports ditac_onnx from this folder: the library goes beside it.
    lib = _plugin_of_last_build(config_settings)
    shutil.copyfile(lib, PACKAGE / "libditac.so.tmp")
    os.replace(PACKAGE / "libditac.so.tmp", PACKAGE / "libditac.so")
    _say(f"{lib} -> {PACKAGE / 'libditac.so'}")
    return name
