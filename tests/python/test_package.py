"""The ditac-onnx wheel as users get it: built (tools/build-wheel.sh), checked for the glibc it needs
(auditwheel, objdump), installed with pip into a fresh virtualenv, and used from outside the source
tree: the library through onnxruntime, the `ditac` command, next to a package called `ditac` (the
authors' code has that import name), and — where .venv-torch exists — the PyTorch exporter.

Run: .venv/bin/python -m pytest tests/python/test_package.py (needs maturin, ziglang, cargo-zigbuild,
auditwheel in .venv: tools/setup.sh; and PyPI for the fresh venv's onnxruntime and numpy).
"""

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import ORACLE, ROOT

VENV_BIN = Path(sys.executable).parent
TORCH_PY = ROOT / ".venv-torch/bin/python"


def sh(cmd, cwd=None, env=None, timeout=1800):
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{cmd}: exit {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def cargo_version():
    text = (ROOT / "Cargo.toml").read_text()
    return re.search(r'\[workspace\.package\][^\[]*?version = "([^"]+)"', text).group(1)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    for tool in ("maturin", "cargo-zigbuild"):
        if not (VENV_BIN / tool).exists():
            pytest.fail(f"{VENV_BIN / tool} not found: run tools/setup.sh")
    out = tmp_path_factory.mktemp("wheels")
    env = dict(os.environ, PYTHON=sys.executable, WHEEL_OUT=str(out))
    sh(["bash", str(ROOT / "tools/build-wheel.sh")], cwd=ROOT, env=env)
    (whl,) = out.glob("ditac_onnx-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory):
    """A fresh virtualenv with the wheel and its [cpu] extra installed by pip (from PyPI: onnxruntime, numpy)."""
    d = tmp_path_factory.mktemp("venv") / "v"
    sh([sys.executable, "-m", "venv", str(d)])
    sh([str(d / "bin/python"), "-m", "pip", "install", "-q", f"{wheel}[cpu]"], timeout=900)
    return d


def test_wheel_is_manylinux_2_28(wheel, tmp_path):
    assert re.search(r"-py3-none-manylinux_2_28_x86_64\.whl$", wheel.name), wheel.name
    shown = sh([str(VENV_BIN / "auditwheel"), "show", str(wheel)])
    print(shown)
    flat = " ".join(shown.split())
    assert 'consistent with the following platform tag: "manylinux_2_28_x86_64"' in flat, shown
    names = zipfile.ZipFile(wheel).namelist()
    lib = [n for n in names if n.endswith("ditac_onnx/libditac.so")]
    exe = [n for n in names if re.search(r"\.data/scripts/ditac$", n)]
    assert lib and exe, names
    zipfile.ZipFile(wheel).extractall(tmp_path)
    for f in lib + exe:
        syms = sh(["objdump", "-T", str(tmp_path / f)])
        versions = {tuple(map(int, v.split("."))) for v in re.findall(r"GLIBC_([0-9.]+)", syms)}
        print(f, "needs GLIBC", ".".join(map(str, max(versions))))
        assert max(versions) <= (2, 28), (f, sorted(versions)[-3:])


def test_import_version_and_library(venv, tmp_path):
    py = str(venv / "bin/python")
    out = sh([py, "-c", "import ditac_onnx, json; print(json.dumps([ditac_onnx.__version__, ditac_onnx.get_library_path()]))"], cwd=tmp_path)
    version, lib = json.loads(out)
    assert version == cargo_version()
    assert Path(lib).is_file() and Path(lib).is_relative_to(venv), lib


RUN_ORACLE = r"""
import json, sys
import numpy as np, onnxruntime as ort
from onnx import TensorProto as T, helper, numpy_helper
import ditac_onnx
o = json.load(open(sys.argv[1]))
c = o["config"]
theta = np.array(o["theta"], np.float32).reshape(-1)
B = np.array(o["B"], np.float32)
node = helper.make_node("DiTAC", ["X", "theta", "B"], ["Y"], domain="ai.ditac", a=float(c["a"]), b=float(c["b"]),
                        tess=c["tess"], basis="explicit", lut_size=2048)
g = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", T.FLOAT, ["N"])],
                      [helper.make_tensor_value_info("Y", T.FLOAT, ["N"])],
                      initializer=[numpy_helper.from_array(theta, "theta"), numpy_helper.from_array(B, "B")])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.ditac", 1)], ir_version=9)
sess = ort.InferenceSession(m.SerializeToString(), ditac_onnx.session_options(), providers=["CPUExecutionProvider"])
x = np.array([v for v in o["points"]["x"]], np.float32)
print(json.dumps(sess.run(None, {"X": x})[0].tolist()))
"""


def test_session_options_run_the_reference_vectors(venv, tmp_path):
    """The installed library, through ditac_onnx.session_options(), gives the reference's eval output."""
    if not (ORACLE / "t20_m5_5.json").exists():
        pytest.skip(f"no reference vectors at {ORACLE}")
    py = str(venv / "bin/python")
    sh([py, "-m", "pip", "install", "-q", "onnx"], timeout=600)
    o = json.loads((ORACLE / "t20_m5_5.json").read_text())
    got = np.array(json.loads(sh([py, "-c", RUN_ORACLE, str(ORACLE / "t20_m5_5.json")], cwd=tmp_path)))
    want = np.array(o["points"]["act_eval"], np.float64)
    c = o["config"]
    tags = np.array(["fragile" in t for t in o["points"]["tag"]])
    ok = np.abs(got - want) <= 1e-5 * np.maximum(np.abs(want), c["b"] - c["a"])
    assert (ok | tags).all(), np.nonzero(~(ok | tags))


def test_ditac_command_beside_an_authors_ditac_package(venv, tmp_path):
    """The `ditac` command comes with the wheel; the authors' `ditac` package and ours share a path."""
    authors = tmp_path / "authors"
    (authors / "ditac").mkdir(parents=True)
    (authors / "ditac/__init__.py").write_text("class DiTAC:\n    pass\n")
    env = dict(os.environ, PYTHONPATH=str(authors), PATH=f"{venv / 'bin'}:{os.environ['PATH']}")
    py = str(venv / "bin/python")
    out = sh([py, "-c", "import ditac, ditac_onnx; print(ditac.DiTAC.__name__, ditac_onnx.__name__)"], cwd=tmp_path, env=env)
    assert out.split() == ["DiTAC", "ditac_onnx"]
    exe = venv / "bin/ditac"
    assert exe.is_file()
    B = json.loads(sh([str(exe), "basis", "--tess", "4"], cwd=tmp_path, env=env))
    assert np.array(B).shape == (8, 3)
    (tmp_path / "net.toml").write_text('input = 3\n[[layers]]\ntype = "linear"\nout = 4\n[[layers]]\ntype = "ditac"\n')
    sh([str(exe), "build", "net.toml", "--seed", "2", "-o", "net.onnx"], cwd=tmp_path, env=env)
    run = (
        "import numpy as np, onnxruntime as ort, ditac_onnx\n"
        "s = ort.InferenceSession('net.onnx', ditac_onnx.session_options())\n"
        "print(s.run(None, {'x': np.ones((5, 3), np.float32)})[0].shape)\n"
    )
    assert sh([py, "-c", run], cwd=tmp_path, env=env).strip() == "(5, 4)"


def test_torch_module_without_torch_says_what_to_install(venv, tmp_path):
    out = subprocess.run([str(venv / "bin/python"), "-c", "import ditac_onnx.torch"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode != 0 and "pip install 'ditac-onnx[torch]'" in out.stderr, out.stderr


EXPORT = r"""
import sys
import numpy as np, onnxruntime as ort, torch
import ditac_onnx, ditac_onnx.torch
import ditac_standin
assert ditac_onnx.__file__.startswith(sys.argv[1]), ditac_onnx.__file__
model = ditac_standin.MLP().eval()
x = torch.randn(16, 4) * 2
ditac_onnx.torch.export(model, (x,), "mlp.onnx")
sess = ort.InferenceSession("mlp.onnx", ditac_onnx.session_options())
with torch.no_grad():
    want = model(x).numpy()
print(float(np.abs(sess.run(None, {"x": x.numpy()})[0] - want).max()))
"""


def test_export_through_the_installed_package(wheel, tmp_path):
    """ditac_onnx.torch from the wheel, with PyTorch (.venv-torch's), outside the source tree."""
    if not TORCH_PY.exists():
        pytest.skip("no .venv-torch (tools/setup.sh; DITAC_SKIP_TORCH=1 leaves it out)")
    site = tmp_path / "site"
    sh([str(TORCH_PY), "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)])
    env = dict(
        os.environ,
        PYTHONPATH=f"{site}:{ROOT / 'tests/python'}",
        DITAC_BIN=str(site / "bin/ditac"),
    )
    diff = float(sh([str(TORCH_PY), "-c", EXPORT, str(site)], cwd=tmp_path, env=env).split()[-1])
    # Ties at table nodes can move a few outputs by a table step; everything else agrees to 1e-5.
    assert diff < 5e-2, diff


def test_without_onnxruntime_the_first_use_says_what_to_install(venv, tmp_path):
    """The package requires no runtime (extras [cpu]/[gpu]); where none is importable, the first use
    names both extras (onnxruntime hidden here by blocking its import)."""
    code = "import sys; sys.modules['onnxruntime'] = None\nimport ditac_onnx\nditac_onnx.session_options()"
    out = subprocess.run([str(venv / "bin/python"), "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode != 0, out.stdout
    assert "pip install 'ditac-onnx[cpu]'" in out.stderr and "'ditac-onnx[gpu]'" in out.stderr, out.stderr
