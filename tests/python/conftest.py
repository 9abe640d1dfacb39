"""What every Python test file shares: the repository's paths (the built plugin and command, ONNX
Runtime's C library, the reference vectors), each overridable by the environment variable that
tools/test.sh sets, and the fixtures built on them. Test files import the constants
(`from conftest import ROOT, PLUGIN`); pytest puts this folder on sys.path.
"""
import json
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# ONNX Runtime's version, from its one definition (tools/src/runtime.rs).
ORT_VERSION = re.search(r'pub const ORT_VERSION: &str = "([^"]+)"', (ROOT / "tools/src/runtime.rs").read_text()).group(1)
PLUGIN = Path(os.environ.get("DITAC_PLUGIN", ROOT / "target/release/libditac.so"))
DITAC = Path(os.environ.get("DITAC_BIN", ROOT / "target/release/ditac"))
ORT_LIB = Path(os.environ.get("ORT_DYLIB_PATH", ROOT / ".ort" / ORT_VERSION / "libonnxruntime.so"))
# The reference's figures, kept in the repository (tests/data/oracle/README.md says where from).
ORACLE = Path(os.environ.get("DITAC_ORACLE_DIR", ROOT / "tests/data/oracle"))


def oracle(name):
    """One reference-vector file (`name` without .json), parsed."""
    return json.loads((ORACLE / f"{name}.json").read_text())


@pytest.fixture
def plugin_path():
    """The built plugin, or a failure saying how to build it."""
    if not PLUGIN.exists():
        pytest.fail(f"{PLUGIN} not found: run `cargo build --release --lib` first")
    return PLUGIN
