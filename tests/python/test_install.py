"""ditac works where it is installed, by each way in.

The repository is cloned into an empty folder (nothing beside it) and installed three ways, each into a
fresh virtualenv with the `[cpu]` extra (PyPI's onnxruntime):
  - tree:  `pip install ./tools/python` from the clone (what `pip install "git+…#subdirectory=tools/python"` does);
  - sdist: `maturin sdist` of the clone, installed by pip;
  - wheel: `tools/build-wheel.sh` of the clone (the manylinux_2_28 release wheel), installed by pip.
Then the clone is deleted, and from a folder outside it, with no --plugin/--ort flag and none of
DITAC_PLUGIN, ORT_DYLIB_PATH or VIRTUAL_ENV set: ditac_onnx.get_library_path() is registered in
onnxruntime and gives the reference's figures; `ditac demo`, `ditac bench --size 65536`, a short
`ditac train` and `ditac triton` (the repository written, no server) run.

The three builds share one cargo target folder ($DITAC_INSTALL_TARGET, else the repository's target/),
so the dependencies compile once; the clone's own two crates compile once per source path (tree and
wheel: the clone; sdist: pip's unpacked copy). Build times are printed (`pytest -s`).

Also: resolving the package's requirements beside onnxruntime-gpu installs no second ONNX Runtime.

Run: .venv/bin/python -m pytest -s tests/python/test_install.py (needs git, Rust, and maturin, ziglang,
cargo-zigbuild in .venv: tools/setup.sh; PyPI for the venvs' onnxruntime, onnx and numpy, and
crates.io when the target folder lacks the dependencies). DITAC_SKIP_INSTALL=1 skips it.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ORACLE, ROOT
from test_package import RUN_ORACLE

if os.environ.get("DITAC_SKIP_INSTALL") == "1":
    pytest.skip("DITAC_SKIP_INSTALL=1", allow_module_level=True)

KINDS = ["tree", "sdist", "wheel"]
# What the commands must not be told: the lookup rule alone finds the plugin and ONNX Runtime.
HIDDEN = ("DITAC_PLUGIN", "ORT_DYLIB_PATH", "VIRTUAL_ENV", "DITAC_BIN", "PYTHONPATH", "CARGO_TARGET_DIR")
TIMES = {}


def sh(cmd, cwd=None, env=None, timeout=3600):
    out = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{cmd}: exit {out.returncode}\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
    return out.stdout


def plain_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in HIDDEN}
    env.update(extra)
    return env


def timed(label, fn):
    t = time.monotonic()
    result = fn()
    TIMES[label] = time.monotonic() - t
    print(f"install: {label}: {TIMES[label]:.0f} s", file=sys.stderr)
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    base = tmp_path_factory.mktemp("install")
    clone = base / "empty" / "ditac"
    clone.parent.mkdir()
    sh(["git", "clone", "-q", "--no-hardlinks", ROOT, clone])
    target = Path(os.environ.get("DITAC_INSTALL_TARGET", ROOT / "target"))
    build_env = plain_env(CARGO_TARGET_DIR=str(target))
    venvs = {}

    def venv_with(kind, requirement):
        d = base / f"venv-{kind}"
        sh([sys.executable, "-m", "venv", d])
        py = d / "bin/python"
        # onnx only builds the reference-vector model of the test; the package does not need it.
        timed(f"{kind}: pip install", lambda: sh([py, "-m", "pip", "install", "-q", requirement, "onnx"], env=build_env))
        venvs[kind] = d

    venv_with("tree", f"{clone / 'tools/python'}[cpu]")
    sdist_dir = base / "sdist"
    timed("sdist: maturin sdist", lambda: sh([Path(sys.executable).parent / "maturin", "sdist", "--out", sdist_dir],
                                             cwd=clone / "tools/python", env=build_env))
    (sdist,) = sdist_dir.glob("ditac_onnx-*.tar.gz")
    venv_with("sdist", f"{sdist}[cpu]")
    wheel_dir = base / "wheel"
    timed("wheel: tools/build-wheel.sh", lambda: sh(["bash", clone / "tools/build-wheel.sh"],
                                                    env=dict(build_env, PYTHON=sys.executable, WHEEL_OUT=str(wheel_dir))))
    (wheel,) = wheel_dir.glob("ditac_onnx-*manylinux_2_28_x86_64.whl")
    venv_with("wheel", f"{wheel}[cpu]")
    # Nothing may come from the checkout once installed.
    shutil.rmtree(clone.parent)
    elsewhere = base / "elsewhere"
    elsewhere.mkdir()
    print("install: build and install times (s):", json.dumps({k: round(v) for k, v in TIMES.items()}), file=sys.stderr)
    return venvs, elsewhere


@pytest.mark.parametrize("kind", KINDS)
def test_library_in_onnxruntime_gives_the_reference(installed, kind):
    venvs, elsewhere = installed
    py = venvs[kind] / "bin/python"
    case = ORACLE / "t20_m5_5.json"
    out = sh([py, "-c", RUN_ORACLE, case], cwd=elsewhere, env=plain_env())
    got = np.array(json.loads(out))
    o = json.loads(case.read_text())
    want = np.array(o["points"]["act_eval"], np.float64)
    c = o["config"]
    fragile = np.array(["fragile" in t for t in o["points"]["tag"]])
    ok = np.abs(got - want) <= 1e-5 * np.maximum(np.abs(want), c["b"] - c["a"])
    assert (ok | fragile).all(), np.nonzero(~(ok | fragile))
    lib = sh([py, "-c", "import ditac_onnx; print(ditac_onnx.get_library_path())"], cwd=elsewhere, env=plain_env())
    assert Path(lib.strip()).is_relative_to(venvs[kind]), lib


SPEC = """
input = 2
[[layers]]
type = "linear"
out = 8
[[layers]]
type = "ditac"
a = -3.0
b = 3.0
[[layers]]
type = "linear"
out = 1
"""


@pytest.mark.parametrize("kind", KINDS)
def test_commands_outside_the_checkout(installed, kind, tmp_path):
    venvs, _ = installed
    venv = venvs[kind]
    ditac = venv / "bin/ditac"
    env = plain_env()

    def run(*args):
        return sh([ditac, *args], cwd=tmp_path, env=env, timeout=900)

    version = run("--version")
    assert version.startswith("ditac 0.") and "commit " in version and "C API level 17" in version, version
    demo = run("demo")
    first = demo.splitlines()[0]
    site = str(venv / "lib")
    # The runtime came from the venv's onnxruntime package, the plugin from the venv's ditac_onnx.
    assert f"from {site}" in first and "/onnxruntime/capi/libonnxruntime.so" in first, first
    assert f"plugin {site}" in first and first.endswith("/ditac_onnx/libditac.so"), first
    assert "DiTACLut model == DiTAC model bit for bit: yes" in demo, demo
    bench = json.loads(run("bench", "--size", "65536", "--json"))
    timed_ops = {r["op"] for r in bench["rows"] if r["median_ms"] > 0}
    assert {"gelu", "nearest", "grad"} <= timed_ops and bench["size"] == 65536, bench
    run("example-data", "regression", "-o", "data", "--train", "196", "--test", "98")
    (tmp_path / "net.toml").write_text(SPEC)
    train = run("train", "net.toml", "--data", "data/train.npz", "--test", "data/test.npz",
                "--steps", "20", "--batch", "49", "--quiet", "-o", "trained.onnx")
    assert (tmp_path / "trained.onnx").is_file(), train
    run("triton", "trained.onnx", "-o", "repo")
    copies = list((tmp_path / "repo").glob("*/libditac.so")) + list((tmp_path / "repo").glob("*/*/libditac.so"))
    plugin = Path(sh([venv / "bin/python", "-c", "import ditac_onnx; print(ditac_onnx.get_library_path())"],
                     cwd=tmp_path, env=env).strip())
    assert copies and all(c.read_bytes() == plugin.read_bytes() for c in copies), copies
    assert list((tmp_path / "repo").glob("*/config.pbtxt")), list((tmp_path / "repo").rglob("*"))


def test_requirements_beside_onnxruntime_gpu_bring_no_second_runtime(tmp_path):
    """pip resolves ditac-onnx together with onnxruntime-gpu (as in an environment that has it): the
    plan installs no `onnxruntime`; with the [gpu] extra neither; with [cpu] it is the one runtime."""

    def plan(*reqs):
        report = tmp_path / "report.json"
        sh([sys.executable, "-m", "pip", "install", "-q", "--dry-run", "--ignore-installed", "--report", report, *reqs],
           env=plain_env(), timeout=1800)
        return {i["metadata"]["name"].lower() for i in json.loads(report.read_text())["install"]}

    src = ROOT / "tools/python"
    beside_gpu = plan(str(src), "onnxruntime-gpu")
    assert "onnxruntime-gpu" in beside_gpu and "onnxruntime" not in beside_gpu, beside_gpu
    gpu = plan(f"{src}[gpu]")
    assert "onnxruntime-gpu" in gpu and "onnxruntime" not in gpu, gpu
    cpu = plan(f"{src}[cpu]")
    assert "onnxruntime" in cpu and "onnxruntime-gpu" not in cpu, cpu
