"""The model tools (`ditac build/patch/freeze/lower/inspect/plot`) from Python: onnx.checker, ONNX
Runtime with the plugin (and without it, for lowered models), an independent numpy computation of a
built network, external data written by `onnx.save_model`, and bad input.

Run: cargo build --release && .venv/bin/python -m pytest tests/python/test_tools.py
"""
import json
import os
import subprocess

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import DITAC, PLUGIN, oracle

# Named tolerances.
BUILD_REL = 1e-5  # the built network vs numpy (Gemm sums in another order)
LOWER_ONNX_ERF = 1e-6  # lower --erf onnx vs the plugin, relative to max(|y|, 1)


def ditac(*args, stdin=None, check=True):
    if not DITAC.exists():
        pytest.fail(f"{DITAC} not found: run `cargo build --release` first")
    r = subprocess.run([str(DITAC), *map(str, args)], input=stdin, capture_output=True, text=True)
    if check:
        assert r.returncode == 0, f"ditac {args}: {r.stderr}"
    return r


def with_plugin():
    so = ort.SessionOptions()
    so.register_custom_ops_library(str(PLUGIN))
    so.intra_op_num_threads = 1
    return so


def close_to_plugin(got, want):
    """A lowered graph is the plugin's arithmetic operation by operation (its AVX2 kernels
    included): the same bits, NaN where NaN."""
    assert np.array_equal(got, want, equal_nan=True)
    return True


def run(path, x, plugin=True):
    so = with_plugin() if plugin else ort.SessionOptions()
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x})[0]


SPEC = """
name = "mlp"
input = 3
[[layers]]
type = "linear"
out = 8
[[layers]]
type = "ditac"
name = "act1"
a = -2.0
b = 2.0
tess = 6
interpolation = "linear"
[[layers]]
type = "linear"
name = "fc2"
out = 4
[[layers]]
type = "ditac"
name = "act2"
variant = "ge"
lut_size = 0
per_channel = true
[[layers]]
type = "tanh"
[[layers]]
type = "linear"
name = "head"
out = 2
"""


def known_weights():
    rng = np.random.default_rng(42)
    f = lambda *s: rng.uniform(-0.8, 0.8, s).astype(np.float32)  # noqa: E731
    return {
        "0.weight": f(8, 3), "0.bias": f(8),
        "act1.thetas": rng.normal(0, 1.0, (1, 5)).astype(np.float32),
        "fc2.weight": f(4, 8), "fc2.bias": f(4),
        "act2.thetas": rng.normal(0, 1.0, (4, 9)).astype(np.float32),
        "head.weight": f(2, 4), "head.bias": f(2),
    }


def ditac_eval(x, theta, **attrs):
    """The activation on x through `ditac eval` (the math core, no ONNX graph)."""
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in attrs.items()]
    th = ",".join(repr(float(v)) for v in theta)
    r = ditac("eval", f"--theta={th}", *flags, stdin=" ".join(repr(float(v)) for v in x.ravel()))
    return np.array([float(v) for v in json.loads(r.stdout)["y"]], np.float32).reshape(x.shape)


def numpy_forward(w, x):
    h = x @ w["0.weight"].T + w["0.bias"]
    h = ditac_eval(h, w["act1.thetas"][0], a=-2.0, b=2.0, tess=6, interpolation="linear")
    h = h @ w["fc2.weight"].T + w["fc2.bias"]
    h = np.stack([ditac_eval(h[:, c], w["act2.thetas"][c], variant="ge", lut_size=0) for c in range(4)], 1)
    h = np.tanh(h)
    return h @ w["head.weight"].T + w["head.bias"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("built")
    (d / "mlp.toml").write_text(SPEC)
    w = known_weights()
    np.savez(d / "w.npz", **w)
    # act1 (tess 6) holds a θ for this project's qr basis (the math below is ours), not a reference-trained one.
    ditac("build", d / "mlp.toml", "--params", d / "w.npz", "--allow-machine-dependent-qr", "-o", d / "mlp.onnx")
    return d, w


def inputs(n=256, seed=0):
    return np.random.default_rng(seed).uniform(-3, 3, (n, 3)).astype(np.float32)


def test_build_matches_independent_numpy(built):
    d, w = built
    m = onnx.load(d / "mlp.onnx")
    onnx.checker.check_model(m, full_check=True)
    assert {(o.domain, o.version) for o in m.opset_import} >= {("ai.ditac", 1)}
    shapes = {v.name: [x.dim_value or x.dim_param for x in v.type.tensor_type.shape.dim] for v in m.graph.value_info}
    assert shapes["act1.out"] == ["act1.out_d0", 8] and shapes["act2.out"] == ["act2.out_d0", 4]
    x = inputs()
    y = run(d / "mlp.onnx", x)
    want = numpy_forward(w, x)
    err = np.abs(y - want) / np.maximum(np.abs(want), 1.0)
    assert err.max() <= BUILD_REL, err.max()


def test_freeze_is_bit_identical_and_lower_runs_without_plugin(built):
    d, _ = built
    x = inputs(4096, 1)
    x[:3, 0] = [np.nan, np.inf, -np.inf]
    y = run(d / "mlp.onnx", x)
    # act2 is exact (lut_size 0): freeze leaves it, lower needs a table for it.
    r = ditac("freeze", d / "mlp.onnx", "-o", d / "frozen.onnx")
    assert "act1.ditac: DiTACLut" in r.stdout and "act2.ditac left as DiTAC" in r.stderr
    onnx.checker.check_model(onnx.load(d / "frozen.onnx"), full_check=True)
    assert np.array_equal(run(d / "frozen.onnx", x), y, equal_nan=True)
    r = ditac("lower", d / "mlp.onnx", "-o", d / "never.onnx", check=False)
    assert r.returncode == 2 and "--exact-lut" in r.stderr and not (d / "never.onnx").exists()


def test_lower_matches_the_plugin(tmp_path):
    spec = SPEC.replace("lut_size = 0", "lut_size = 1024")
    (tmp_path / "m.toml").write_text(spec)
    ditac("build", tmp_path / "m.toml", "--seed", "3", "-o", tmp_path / "m.onnx")
    for extra, name in [((), "low.onnx"), (("--erf", "onnx"), "low_erf.onnx")]:
        ditac("lower", tmp_path / "m.onnx", *extra, "-o", tmp_path / name)
        m = onnx.load(tmp_path / name)
        onnx.checker.check_model(m, full_check=True)
        assert not any(n.domain == "ai.ditac" for n in m.graph.node)
    x = np.random.default_rng(2).normal(0, 2, (20000, 3)).astype(np.float32)
    x[:3, 1] = [np.nan, np.inf, -np.inf]
    y = run(tmp_path / "m.onnx", x)
    assert close_to_plugin(run(tmp_path / "low.onnx", x, plugin=False), y)
    ye = run(tmp_path / "low_erf.onnx", x, plugin=False)
    ok = np.isfinite(y)
    assert np.array_equal(np.isnan(ye), np.isnan(y))
    assert (np.abs(ye - y)[ok] / np.maximum(np.abs(y[ok]), 1)).max() <= LOWER_ONNX_ERF


def test_external_data_from_onnx_save_model(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    (tmp_path / "m.toml").write_text(SPEC.replace("lut_size = 0", "lut_size = 256"))
    ditac("build", tmp_path / "m.toml", "--seed", "4", "--save-params", tmp_path / "p.npz", "-o", tmp_path / "m.onnx")
    m = onnx.load(tmp_path / "m.onnx")
    onnx.save_model(m, src / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                    location="m.data", size_threshold=0)
    before = (src / "m.onnx").read_bytes(), (src / "m.data").read_bytes()
    x = inputs(512, 3)
    y = run(tmp_path / "m.onnx", x)
    # A placeholder to patch: act1 as a Relu.
    ph = onnx.load(src / "m.onnx", load_external_data=False)
    node = next(n for n in ph.graph.node if n.name == "act1.ditac")
    node.op_type, node.domain = "Relu", ""
    del node.input[1:]
    del node.attribute[:]
    onnx.save_model(ph, src / "placeholder.onnx")
    # (act1's θ is this project's fresh one, for its own qr basis.)
    ditac("patch", src / "placeholder.onnx", "--params", tmp_path / "p.npz", "--node", "act1.ditac=act1.thetas",
          "--a", "-2", "--b", "2", "--interpolation", "linear", "--allow-machine-dependent-qr",
          "-o", out / "patched.onnx")
    ditac("freeze", src / "m.onnx", "-o", out / "frozen.onnx")
    ditac("lower", src / "m.onnx", "-o", out / "lowered.onnx")
    # Small enough for one file: the outputs hold their weights, and need no data file beside them.
    assert not (out / "m.data").exists()
    ditac("freeze", src / "m.onnx", "--keep-external-data", "-o", tmp_path / "frozen_ext.onnx")
    assert (tmp_path / "m.data").read_bytes() == before[1]
    assert ((src / "m.onnx").read_bytes(), (src / "m.data").read_bytes()) == before
    for name, plugin in [("patched.onnx", True), ("frozen.onnx", True), ("lowered.onnx", False)]:
        onnx.checker.check_model(str(out / name))
        assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in onnx.load(out / name, load_external_data=False).graph.initializer)
        assert os.path.getsize(out / name) < os.path.getsize(tmp_path / "m.onnx") + 50_000
        got = run(out / name, x, plugin)
        assert np.array_equal(got, y) if plugin else close_to_plugin(got, y), name
    assert np.array_equal(run(tmp_path / "frozen_ext.onnx", x), y)


def test_inspect_json(built):
    d, _ = built
    v = json.loads(ditac("inspect", "--json", d / "mlp.onnx").stdout)
    assert {"domain": "ai.ditac", "version": 1} in v["opset_import"]
    n1, n2 = v["ditac_nodes"]
    assert n1["name"] == "act1.ditac" and n1["theta"]["shape"] == [5] and n1["table_size"] == 2048
    assert n1["attributes"]["interpolation"] == "linear" and n1["attributes"]["a"] == -2.0
    assert n2["theta"]["shape"] == [4, 9] and n2["channels"] == 4 and n2["table_size"] == 0


def test_plot(built, tmp_path):
    d, _ = built
    ditac("plot", d / "mlp.onnx", "-o", tmp_path / "plots", "--png")
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert names == ["act1.ditac.png", "act1.ditac.svg", "act2.ditac.png", "act2.ditac.svg"]
    import xml.dom.minidom
    xml.dom.minidom.parse(str(tmp_path / "plots" / "act2.ditac.svg"))


BAD = [
    (["freeze", "{d}/missing.onnx", "-o", "{o}"], "cannot read"),
    (["lower", "{d}/mlp.toml", "-o", "{o}"], "is not an ONNX model"),
    (["build", "{d}/w.npz", "-o", "{o}"], "spec"),
    (["build", "{d}/mlp.toml", "--params", "{d}/mlp.toml", "-o", "{o}"], "neither a safetensors"),
    (["patch", "{d}/mlp.onnx", "--params", "{d}/w.npz", "--node", "nope=act1.thetas", "-o", "{o}"], "no node named 'nope'"),
    (["patch", "{d}/mlp.onnx", "--params", "{d}/w.npz", "--node", "4.tanh=nokey", "-o", "{o}"], 'no tensor "nokey"'),
    (["patch", "{d}/mlp.onnx", "--params", "{d}/w.npz", "--node", "4.tanh=0.weight", "--tess", "5", "-o", "{o}"], "expects d = 4"),
    (["patch", "{d}/mlp.onnx", "--params", "{d}/mlp.onnx", "--node", "4.tanh=act1.thetas", "-o", "{o}"], "neither a safetensors"),
]


@pytest.mark.parametrize("args,needle", BAD)
def test_bad_input(built, tmp_path, args, needle):
    d, _ = built
    before = (d / "mlp.onnx").read_bytes()
    out = tmp_path / "out.onnx"
    r = ditac(*[a.format(d=d, o=out) for a in args], check=False)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("ditac: error: ") and r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []
    assert (d / "mlp.onnx").read_bytes() == before


def test_float16_and_zero_valued_attributes(tmp_path):
    """A model written by onnx.helper (float16 X, per-channel θ, a = 0.0 and channel_axis = -1): zero
    scalars survive our rewrite (onnx-protobuf is proto3), and freeze/lower match the plugin bit for bit."""
    from onnx import TensorProto, helper, numpy_helper

    theta = np.random.default_rng(5).normal(0, 1, (4, 9)).astype(np.float32)
    node = helper.make_node("DiTAC", ["x", "theta"], ["h"], domain="ai.ditac", name="act",
                            a=0.0, b=3.0, channel_axis=-1, interpolation="linear")
    concat = helper.make_node("Concat", ["h", "h"], ["y"], axis=0, name="cat")
    g = helper.make_graph([node, concat], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["M", 4])],
                          initializer=[numpy_helper.from_array(theta, "theta")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.ditac", 1)], ir_version=9)
    onnx.save_model(m, tmp_path / "m.onnx")
    ditac("freeze", tmp_path / "m.onnx", "-o", tmp_path / "f.onnx")
    ditac("lower", tmp_path / "m.onnx", "-o", tmp_path / "l.onnx")
    f = onnx.load(tmp_path / "f.onnx")
    attrs = {a.name: helper.get_attribute_value(a) for a in f.graph.node[0].attribute}
    assert attrs["a"] == 0.0 and f.graph.node[0].attribute[0].HasField("f")
    assert {a.name: helper.get_attribute_value(a) for a in f.graph.node[1].attribute} == {"axis": 0}
    x = np.random.default_rng(6).uniform(-1, 4, (1000, 4)).astype(np.float16)
    y = run(tmp_path / "m.onnx", x)
    assert y.dtype == np.float16 and y.shape == (2000, 4)
    # a = 0 reached the plugin (not the default -0.5): the frozen table model agrees only if it did,
    # and inspect reads it back.
    assert json.loads(ditac("inspect", "--json", tmp_path / "l.onnx").stdout)["ditac_nodes"] == []
    assert json.loads(ditac("inspect", "--json", tmp_path / "f.onnx").stdout)["ditac_nodes"][0]["attributes"]["a"] == 0.0
    assert np.array_equal(run(tmp_path / "f.onnx", x), y)
    assert close_to_plugin(run(tmp_path / "l.onnx", x, plugin=False), y)


def test_freeze_with_tables_from_elsewhere(tmp_path):
    """--tables: tables keyed by node name (here: the reference's lingrid_t of the oracle, as [1, n])."""
    from onnx import TensorProto, helper, numpy_helper

    o = oracle("t10_m3_3")
    c = o["config"]
    theta = np.array(o["theta"], np.float32)
    B = np.array(o["B"], np.float32)
    node = helper.make_node("DiTAC", ["x", "theta", "B"], ["y"], domain="ai.ditac", name="act",
                            a=float(c["a"]), b=float(c["b"]), tess=c["tess"], basis="explicit")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"])],
                          initializer=[numpy_helper.from_array(theta, "theta"), numpy_helper.from_array(B, "B")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.ditac", 1)], ir_version=9)
    onnx.save_model(m, tmp_path / "m.onnx")
    lingrid = np.array(o["lut"]["T_norm"], np.float32)[None, :]
    np.savez(tmp_path / "tables.npz", act=lingrid)
    ditac("freeze", tmp_path / "m.onnx", "--tables", tmp_path / "tables.npz", "-o", tmp_path / "f.onnx")
    f = onnx.load(tmp_path / "f.onnx")
    assert [n.op_type for n in f.graph.node] == ["DiTACLut"] and [i.name for i in f.graph.initializer] == ["act.table"]
    assert np.array_equal(numpy_helper.to_array(f.graph.initializer[0]), lingrid[0])
    ditac("freeze", tmp_path / "m.onnx", "-o", tmp_path / "ours.onnx")
    x = np.array([float(v) if not isinstance(v, str) else np.nan for v in o["points"]["x"]], np.float32)
    x = x[np.isfinite(x)]
    y_ref, y_ours = run(tmp_path / "f.onnx", x), run(tmp_path / "ours.onnx", x)
    assert np.array_equal(run(tmp_path / "m.onnx", x), y_ours)
    # The reference's table and ours agree to the oracle's tolerance.
    assert np.max(np.abs(y_ref - y_ours) / np.maximum(np.abs(y_ours), 6.0)) <= 1e-5


def test_lower_per_channel_without_declared_rank_and_exact_lut(tmp_path):
    """channel_axis = 1 on a value whose rank the graph does not declare: the channel offsets are shaped
    at run time. An exact node (lut_size 0) lowers only with --exact-lut, as an approximation."""
    from onnx import TensorProto, helper, numpy_helper

    theta = np.random.default_rng(7).normal(0, 1, (3, 9)).astype(np.float32)
    for lut, name in [(2048, "m.onnx"), (0, "exact.onnx")]:
        nodes = [helper.make_node("Identity", ["x"], ["h"], name="id"),
                 helper.make_node("DiTAC", ["h", "theta"], ["y"], domain="ai.ditac", name="act",
                                  a=-2.0, b=2.0, lut_size=lut)]
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(theta, "theta")])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.ditac", 1)], ir_version=9)
        onnx.save_model(m, tmp_path / name)
    ditac("lower", tmp_path / "m.onnx", "-o", tmp_path / "l.onnx")
    x = np.random.default_rng(8).normal(0, 1.5, (5, 3, 7, 2)).astype(np.float32)
    assert close_to_plugin(run(tmp_path / "l.onnx", x, plugin=False), run(tmp_path / "m.onnx", x))
    x2 = x.reshape(5, 3, 14)
    assert close_to_plugin(run(tmp_path / "l.onnx", x2, plugin=False), run(tmp_path / "m.onnx", x2))
    r = ditac("lower", tmp_path / "exact.onnx", "-o", tmp_path / "le.onnx", check=False)
    assert r.returncode == 2 and "--exact-lut" in r.stderr
    ditac("lower", tmp_path / "exact.onnx", "--exact-lut", "65536", "-o", tmp_path / "le.onnx")
    err = np.abs(run(tmp_path / "le.onnx", x, plugin=False) - run(tmp_path / "exact.onnx", x))
    assert err.max() <= 1e-5, err.max()


def test_patch_with_the_reference_basis(tmp_path):
    """tess 20: θ travels with the reference's own B (--basis explicit --basis-key); the patched model
    gives the reference's activation."""
    from onnx import TensorProto, helper

    o = oracle("t20_m5_5")
    c = o["config"]
    num = lambda v: {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}.get(v, v) if isinstance(v, str) else v  # noqa: E731
    np.savez(tmp_path / "p.npz", thetas=np.array(o["theta"], np.float32)[None, :], B=np.array(o["B"], np.float32))
    g = helper.make_graph([helper.make_node("Gelu", ["x"], ["y"], name="placeholder")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"])])
    onnx.save_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)], ir_version=9), tmp_path / "m.onnx")
    r = ditac("patch", tmp_path / "m.onnx", "--params", tmp_path / "p.npz", "--node", "placeholder=thetas",
              "--basis", "explicit", "-o", tmp_path / "p.onnx", check=False)
    assert r.returncode == 2 and "--basis-key" in r.stderr
    # Without B, the default qr is refused: at tess 20 the reference's qr depends on the machine.
    r = ditac("patch", tmp_path / "m.onnx", "--params", tmp_path / "p.npz", "--node", "placeholder=thetas",
              "-o", tmp_path / "p.onnx", check=False)
    assert r.returncode == 2 and "tess 20 with a zero boundary is machine-dependent" in r.stderr, r.stderr
    assert not (tmp_path / "p.onnx").exists()
    ditac("patch", tmp_path / "m.onnx", "--params", tmp_path / "p.npz", "--node", "placeholder=thetas:B",
          "--a", c["a"], "--b", c["b"], "-o", tmp_path / "p_node.onnx")
    ditac("patch", tmp_path / "m.onnx", "--params", tmp_path / "p.npz", "--node", "placeholder=thetas",
          "--basis", "explicit", "--basis-key", "B", "--a", c["a"], "--b", c["b"], "-o", tmp_path / "p.onnx")
    m = onnx.load(tmp_path / "p.onnx")
    onnx.checker.check_model(m, full_check=True)
    assert list(m.graph.node[0].input) == ["x", "thetas", "B"]
    x = np.array([num(v) for v in o["points"]["x"]], np.float32)
    want = np.array([num(v) for v in o["points"]["act_lut"]], np.float32)
    fragile = np.array(["fragile" in t for t in o["points"]["tag"]])
    y = run(tmp_path / "p.onnx", x)
    np.testing.assert_array_equal(run(tmp_path / "p_node.onnx", x), y)
    ok = np.isfinite(want) & ~fragile
    assert np.max(np.abs(y[ok] - want[ok]) / np.maximum(np.abs(want[ok]), c["b"] - c["a"])) <= 1e-5
