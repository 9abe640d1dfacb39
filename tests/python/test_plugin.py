"""End-to-end tests of the ai.ditac plugin in Python onnxruntime (register_custom_ops_library).

Run: cargo build --release --lib && .venv/bin/python -m pytest tests/python
The plugin is $DITAC_PLUGIN or target/release/libditac.so.
"""
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from conftest import PLUGIN, ROOT, oracle
CONFIGS = ["default_t10_m0.5_2", "t4_m3_3", "t10_m3_3", "t20_m5_5", "t10_m3_3_identity"]
LUT_REL = 1e-5
GRAD_REL = 1e-4


def num(v):
    return {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}.get(v, v) if isinstance(v, str) else v


def arr(v):
    return np.array([[num(x) for x in r] if isinstance(r, list) else num(r) for r in v], dtype=np.float32)


def options():
    if not PLUGIN.exists():
        pytest.fail(f"{PLUGIN} not found: run `cargo build --release --lib` first")
    so = ort.SessionOptions()
    so.register_custom_ops_library(str(PLUGIN))
    so.intra_op_num_threads = 1
    return so


def model(op, inputs, outputs, inits=(), **attrs):
    node = helper.make_node(op, [i[0] for i in inputs], [o[0] for o in outputs], domain="ai.ditac", name="act1", **attrs)
    g = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs if n and n not in {i.name for i in inits}],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
        initializer=list(inits),
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.ditac", 1)], ir_version=9)
    return m.SerializeToString()


def init(name, a):
    return helper.make_tensor(name, TensorProto.FLOAT, a.shape, a.flatten())


def session(bytes_, so=None):
    return ort.InferenceSession(bytes_, so or options(), providers=["CPUExecutionProvider"])


F = TensorProto.FLOAT


def ditac_model(o, op="DiTAC", lut_size=2048, theta_input=False, **extra):
    theta, B = arr(o["theta"]), arr(o["B"])
    c = o["config"]
    attrs = dict(a=float(c["a"]), b=float(c["b"]), tess=c["tess"], basis="explicit", lut_size=lut_size)
    attrs.update(extra)
    inits = [init("B", B)]
    if not theta_input:
        inits.append(init("theta", theta))
    ins = [("X", F, ["N"]), ("theta", F, [None]), ("B", F, list(B.shape))]
    outs = [("Y", F, ["N"])]
    if op == "DiTACGrad":
        ins = [("dY", F, ["N"])] + ins
        outs = [("dX", F, ["N"]), ("dtheta", F, list(theta.shape))]
    return model(op, ins, outs, inits, **attrs)


def close(got, want, rel, floor, skip=None):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    ok = np.abs(got - want) <= rel * np.maximum(np.abs(want), floor)
    ok |= np.isnan(want) & np.isnan(got)
    if skip is not None:
        ok |= skip
    bad = np.nonzero(~ok)[0]
    assert bad.size == 0, f"mismatch at {bad[:5]}: got {got[bad[:5]]}, want {want[bad[:5]]}"


def fragile(o):
    return np.array(["fragile" in t for t in o["points"]["tag"]])


@pytest.mark.parametrize("name", CONFIGS)
def test_ditac_nearest_and_exact(name):
    o = oracle(name)
    x = arr(o["points"]["x"])
    span = o["config"]["b"] - o["config"]["a"]
    y = session(ditac_model(o)).run(None, {"X": x})[0]
    close(y, arr(o["points"]["act_lut"]), LUT_REL, span, fragile(o))
    y = session(ditac_model(o, lut_size=0)).run(None, {"X": x})[0]
    close(y, arr(o["points"]["act_exact"]), LUT_REL, span)


@pytest.mark.parametrize("name", CONFIGS)
def test_lut_with_oracle_table(name):
    o = oracle(name)
    c = o["config"]
    t = arr(o["lut"]["T_norm"])
    m = model("DiTACLut", [("X", F, ["N"]), ("table", F, list(t.shape))], [("Y", F, ["N"])], [init("table", t)], a=float(c["a"]), b=float(c["b"]))
    y = session(m).run(None, {"X": arr(o["points"]["x"])})[0]
    close(y, arr(o["points"]["act_lut"]), LUT_REL, c["b"] - c["a"], fragile(o))


@pytest.mark.parametrize("name", CONFIGS)
def test_grad(name):
    o = oracle(name)
    x = arr(o["points"]["x"])
    dx, dth = session(ditac_model(o, "DiTACGrad")).run(None, {"X": x, "dY": np.ones_like(x)})
    close(dx, arr(o["points"]["dact_dx_lut"]), LUT_REL, 1.0, fragile(o))
    want = arr(o["theta_grad_ones"]["data_term_sum"])
    close(dth, want, GRAD_REL, max(1e-3, float(np.abs(want).max())))


def test_special_inputs():
    o = oracle("t4_m3_3")
    x = np.array([np.nan, np.inf, -np.inf], np.float32)
    y = session(ditac_model(o)).run(None, {"X": x})[0]
    assert np.isnan(y[0]) and y[1] == np.inf and np.isnan(y[2])


def test_eight_threads_one_session():
    o = oracle("t10_m3_3")
    so = options()
    so.intra_op_num_threads = 2
    s = session(ditac_model(o, theta_input=True), so)
    rng = np.random.default_rng(0)
    x = rng.uniform(-4, 4, 200_000).astype(np.float32)
    thetas = [arr(o["theta"]) * k for k in (1.0, 0.5, 0.0, -1.0)]
    want = [s.run(None, {"X": x, "theta": t})[0] for t in thetas]

    def job(i):
        t = i % len(thetas)
        return t, s.run(None, {"X": x, "theta": thetas[t]})[0]

    with ThreadPoolExecutor(8) as ex:
        for t, y in ex.map(job, range(32)):
            assert np.array_equal(y, want[t])


BAD_ATTRS = [
    (dict(tess=0), "attribute 'tess' = 0"),
    (dict(a=5.0), "attribute 'a' = 5"),
    (dict(variant="relu"), "attribute 'variant'"),
    (dict(lut_size=1), "attribute 'lut_size' = 1"),
    (dict(basis="qr"), "input 'B'"),
]


@pytest.mark.parametrize("extra,needle", BAD_ATTRS)
def test_bad_attributes_fail_at_session_creation(extra, needle):
    o = oracle("t4_m3_3")
    with pytest.raises(Exception) as e:
        session(ditac_model(o, **extra))
    msg = str(e.value)
    assert "INVALID_ARGUMENT" in msg and needle in msg and "ai.ditac.DiTAC node 'act1'" in msg, msg


def test_bad_theta_at_run_time_then_valid_run():
    o = oracle("t4_m3_3")
    s = session(ditac_model(o, theta_input=True))
    x = arr(o["points"]["x"])
    with pytest.raises(Exception) as e:
        s.run(None, {"X": x, "theta": np.array([np.nan, 0, 0], np.float32)})
    assert "INVALID_ARGUMENT" in str(e.value) and "input 'theta'" in str(e.value)
    with pytest.raises(Exception) as e:
        s.run(None, {"X": x, "theta": np.zeros(5, np.float32)})
    assert "INVALID_ARGUMENT" in str(e.value) and "5 values per row: expected d = 3" in str(e.value)
    y = s.run(None, {"X": x, "theta": arr(o["theta"])})[0]
    close(y, arr(o["points"]["act_lut"]), LUT_REL, 6.0, fragile(o))


def test_lut_table_too_short():
    t = np.array([0.5], np.float32)
    m = model("DiTACLut", [("X", F, ["N"]), ("table", F, [1])], [("Y", F, ["N"])], [init("table", t)])
    with pytest.raises(Exception) as e:
        session(m)
    assert "INVALID_ARGUMENT" in str(e.value) and "input 'table'" in str(e.value)


def test_only_the_entry_points_are_exported():
    out = subprocess.run(["nm", "-D", "--defined-only", str(PLUGIN)], capture_output=True, text=True, check=True).stdout
    # ONNX Runtime's entry point and the C API of src/capi.rs (for ditac_onnx.torch).
    want = ["RegisterCustomOps", "ditac_basis", "ditac_capi_version", "ditac_init_covariance",
            "ditac_precision_matrix", "ditac_tables"]
    assert sorted(l.split()[2] for l in out.splitlines() if l.strip()) == want, out


@pytest.mark.parametrize("inputs", [["X", "theta", ""], ["X", "theta"]])
def test_omitted_b_and_shape_inference(inputs):
    th = helper.make_tensor("theta", F, [3], [0.2, -0.05, -0.7])
    n = helper.make_node("DiTAC", inputs, ["Y"], domain="ai.ditac", a=-3.0, b=3.0, tess=4)
    g = helper.make_graph([n], "g", [helper.make_tensor_value_info("X", F, ["N", 4])], [helper.make_tensor_value_info("Y", F, None)], initializer=[th])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.ditac", 1)], ir_version=9)
    s = session(m.SerializeToString())
    assert s.get_outputs()[0].shape == ["N", 4]
    y = s.run(None, {"X": np.zeros((2, 4), np.float32)})[0]
    assert y.shape == (2, 4) and np.all(np.isfinite(y)) and np.all(y == y[0, 0])


UNNAMED_DIM_CHILD = r"""
import sys, numpy as np, onnxruntime as ort
from onnx import helper, TensorProto as T
node = helper.make_node("DiTAC", ["X", "theta"], ["H"], domain="ai.ditac", tess=4)
relu = helper.make_node("Relu", ["H"], ["Y"])
g = helper.make_graph([node, relu], "g", [helper.make_tensor_value_info("X", T.FLOAT, [None, 3])],
    [helper.make_tensor_value_info("Y", T.FLOAT, None)],
    initializer=[helper.make_tensor("theta", T.FLOAT, [3], [0.1, -0.2, 0.3])])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.ditac", 1)], ir_version=9)
so = ort.SessionOptions()
so.register_custom_ops_library(sys.argv[1])
s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
print(s.get_outputs()[0].shape)
for n in (5, 2):
    print(s.run(None, {"X": np.zeros((n, 3), np.float32)})[0].shape)
"""


def test_unnamed_input_dim_stays_unknown():
    # ORT turns an unnamed unknown dim copied to an output into the concrete value -1 and then warns
    # on every run ("Expected shape from model of {-1,3} does not match actual shape ..."), on stderr.
    if not PLUGIN.exists():
        pytest.fail(f"{PLUGIN} not found: run `cargo build --release --lib` first")
    out = subprocess.run([sys.executable, "-c", UNNAMED_DIM_CHILD, str(PLUGIN)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split("\n")
    assert "-1" not in lines[0], out.stdout
    assert lines[1:3] == ["(5, 3)", "(2, 3)"], out.stdout
    assert "does not match actual shape" not in out.stderr, out.stderr


ISA_SCRIPT = r"""
import sys, numpy as np, onnxruntime as ort
from onnx import TensorProto, helper
so = ort.SessionOptions()
so.register_custom_ops_library(sys.argv[1])
so.intra_op_num_threads = 1
th = np.array([0.8, -0.5, 0.3, 1.1, -0.9, 0.4, 0.2, -0.7, 0.6], np.float32)
outs = []
for lut in (2048, 0):
    node = helper.make_node("DiTAC", ["X", "theta"], ["Y"], domain="ai.ditac", name="act1", lut_size=lut)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None])],
                          initializer=[helper.make_tensor("theta", TensorProto.FLOAT, [9], th)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.ditac", 1)], ir_version=9)
    try:
        s = ort.InferenceSession(m.SerializeToString(), so)
    except Exception as e:
        print("ERROR", e)
        sys.exit(0)
    x = np.random.default_rng(3).normal(0, 2, 10007).astype(np.float32)
    outs.append(s.run(None, {"X": x})[0])
np.save(sys.argv[2], np.concatenate(outs))
"""


def test_every_kernel_path_through_ort(tmp_path):
    """DITAC_ISA picks the kernel path in a fresh process: the table forward gives the same bits on
    every path, exact mode the same up to float32 rounding; a value naming no path is an error."""
    script = tmp_path / "isa.py"
    script.write_text(ISA_SCRIPT)
    results = {}
    for isa in ["scalar", "avx2", "avx512"]:
        out = tmp_path / f"{isa}.npy"
        env = dict(os.environ, DITAC_ISA=isa)
        r = subprocess.run([os.sys.executable, str(script), str(PLUGIN), str(out)], env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert "ERROR" not in r.stdout, r.stdout
        results[isa] = np.load(out)
    ref = results["scalar"]
    for isa, y in results.items():
        n = 10007
        assert np.array_equal(y[:n].view(np.uint32), ref[:n].view(np.uint32)), isa
        np.testing.assert_allclose(y[n:], ref[n:], rtol=2e-6, atol=2e-6, err_msg=isa)
    env = dict(os.environ, DITAC_ISA="sse9")
    r = subprocess.run([os.sys.executable, str(script), str(PLUGIN), str(tmp_path / "x.npy")], env=env, capture_output=True, text=True)
    assert "ERROR" in r.stdout and 'DITAC_ISA="sse9"' in r.stdout, r.stdout + r.stderr


def test_plugin_stays_loaded_across_register_and_release_cycles():
    """onnxruntime unloads a custom-op library when the last SessionOptions that registered it goes;
    the plugin is linked with -z nodelete, so it stays mapped (its statics are never orphaned) and
    registering again reuses it. Run in a child process: this one may already hold the plugin."""
    code = f"""
import gc, numpy as np, onnxruntime as ort
from pathlib import Path
lib = {str(PLUGIN)!r}
def mapped():
    return sum(1 for l in Path('/proc/self/maps').read_text().splitlines() if l.endswith('libditac.so'))
for _ in range(20):
    so = ort.SessionOptions()
    so.register_custom_ops_library(lib)
    s = ort.InferenceSession({str(ROOT / 'models/ditac_mlp.onnx')!r}, so, providers=['CPUExecutionProvider'])
    s.run(None, {{'x': np.zeros((3, 2), np.float32)}})
    del s, so
    gc.collect()
    assert mapped() > 0, 'the plugin was unloaded'
print('ok', mapped())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok"), out.stdout
