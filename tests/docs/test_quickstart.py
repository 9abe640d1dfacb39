"""The README's quickstart, run as written (as rustdoc runs documentation examples).

Every ``sh``/``bash``/``python`` block of README.md says in its info string whether it runs here:
``sh test`` / ``python test`` blocks run, in the order they appear, in one scratch folder that holds the
checkout's ``models/`` (and ``target/``, ``.ort/`` for the commands' default paths), with the built
``ditac`` first on the PATH and ``ditac_onnx`` importable (the package's Python files and the built
library, as an installed package lays them out). ``sh skip: REASON`` blocks are not run, and must give
the reason. The Rust block must be ``tools/examples/run_model.rs``, which the build compiles.

Needs the build (``cargo build --release``) and ONNX Runtime for Python (``.venv``); ``tools/test.sh``
runs it with ``ORT_DYLIB_PATH`` and ``DITAC_PLUGIN`` set.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
RUNNABLE = {"sh", "bash", "python"}
FENCE = re.compile(r"^```(\S*)[ \t]*(.*)$")


def blocks(path=README):
    """(line, language, info after the language, text) of each fenced block."""
    out, lines, i = [], path.read_text().splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m and m.group(1):
            start, body = i + 1, []
            i += 1
            while i < len(lines) and lines[i].rstrip() != "```":
                body.append(lines[i])
                i += 1
            out.append((start, m.group(1), m.group(2).strip(), "\n".join(body) + "\n"))
        i += 1
    return out


def runnable():
    return [b for b in blocks() if b[1] in RUNNABLE and b[2] == "test"]


def test_every_shell_and_python_block_says_whether_it_runs():
    unmarked = [
        f"README.md:{line}: ```{lang} {info}".rstrip()
        for line, lang, info, _ in blocks()
        if lang in RUNNABLE
        and info != "test"
        and not (info.startswith("skip:") and info[len("skip:"):].strip())
    ]
    assert not unmarked, "blocks that neither run ('test') nor say why not ('skip: REASON'):\n" + "\n".join(unmarked)
    assert runnable(), "no README block is marked to run"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A folder laid out as a user's: the example models, the built command and the package."""
    d = tmp_path_factory.mktemp("quickstart")
    plugin = Path(os.environ.get("DITAC_PLUGIN", ROOT / "target/release/libditac.so"))
    ditac = ROOT / "target/release/ditac"
    if not plugin.is_file() or not ditac.is_file():
        pytest.fail(f"build first (cargo build --release): {plugin} and {ditac} are needed")
    for name in ["models", "target", ".ort"]:
        if (ROOT / name).exists():
            (d / name).symlink_to(ROOT / name)
    pkg = d / "site" / "ditac_onnx"
    shutil.copytree(ROOT / "tools/python/ditac_onnx", pkg, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    (pkg / "libditac.so").symlink_to(plugin)
    env = dict(os.environ)
    env["PATH"] = f"{ditac.parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(d / "site")
    env.setdefault("ORT_DYLIB_PATH", str(ROOT / ".ort/1.32.0/libonnxruntime.so"))
    env.setdefault("DITAC_PLUGIN", str(plugin))
    return d, env


@pytest.mark.parametrize("block", runnable(), ids=lambda b: f"README.md:{b[0]}:{b[1]}")
def test_block_runs(block, scratch):
    line, lang, _, text = block
    d, env = scratch
    cmd = [sys.executable, "-c", text] if lang == "python" else ["bash", "-euo", "pipefail", "-c", text]
    r = subprocess.run(cmd, cwd=d, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (
        f"README.md:{line} ({lang}) failed with status {r.returncode}\n--- block\n{text}"
        f"--- stdout\n{r.stdout}--- stderr\n{r.stderr}"
    )


def test_the_rust_snippet_is_the_compiled_example():
    rust = [text for _, lang, _, text in blocks() if lang == "rust"]
    assert len(rust) == 1, f"expected one Rust block in README.md, found {len(rust)}"
    example = (ROOT / "tools/examples/run_model.rs").read_text()
    body = "".join(l + "\n" for l in example.splitlines() if not l.startswith("//!"))
    assert rust[0] == body, "README.md's Rust block differs from tools/examples/run_model.rs (less its //! lines)"
