"""Our training artifacts in a real ONNX Runtime training engine.

Runs with the PyPI wheel onnxruntime-training-cpu==1.19.2 (in .venv-train, made by tools/setup.sh;
it conflicts with the `onnxruntime` package of .venv). Without torch, `onnxruntime.training` does
not import, but `onnxruntime.capi._pybind_state` has Module, Optimizer and the checkpoint functions.
Skipped where that engine is not installed (the plain `onnxruntime` of .venv has no training API).

The engine trains the regression example from `ditac train-artifacts models/regression/spec.toml`
(no other flag) with the plugin loaded, on the same batches as `ditac train --engine portable`
(our path: the same graph in an inference session, AdamW in Rust), and the loss curves must agree
within 1% over the first 100 steps. Then ONNX Runtime's saved checkpoint goes back through our
reader (`--params CHECKPOINT`) and must reproduce the engine's parameters.
"""

import json
import subprocess

import numpy as np
import pytest

C = pytest.importorskip("onnxruntime.capi._pybind_state")
if not hasattr(C, "Module"):
    pytest.skip("this onnxruntime has no training API (use .venv-train)", allow_module_level=True)

from conftest import DITAC, ORT_LIB, PLUGIN, ROOT  # noqa: E402
SPEC = ROOT / "models" / "regression" / "spec.toml"
DATA = ROOT / "models" / "regression" / "train.npz"
STEPS = 100


def ditac(*args):
    r = subprocess.run([str(DITAC), *map(str, args)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def engine(art):
    state = C.load_checkpoint(str(art / "checkpoint"))
    dev = C.OrtDevice(C.OrtDevice.cpu(), C.OrtDevice.default_memory(), 0)
    so = C.SessionOptions()
    so.register_custom_ops_library(str(PLUGIN))
    so.intra_op_num_threads = 1
    module = C.Module(str(art / "training_model.onnx"), state, str(art / "eval_model.onnx"), dev, so)
    opt = C.Optimizer(str(art / "optimizer_model.onnx"), state, dev, so)
    return state, module, opt


def train_steps(module, opt, x, y, batches):
    """One step of ORT's training engine per batch of row indices; the losses."""
    losses = []
    for idx in batches:
        f = C.OrtValueVector()
        module.train_step([x[idx], y[idx]], f)
        losses.append(float(f[0].numpy()))
        opt.optimizer_step()
        module.lazy_reset_grad()
    return np.array(losses)


def assert_replays(ref, theirs, steps, label):
    """ORT's losses over the portable path's batches within 1 % of the portable path's."""
    ours = np.array(ref["loss"][:steps])
    rel = np.abs(theirs - ours) / np.abs(ours)
    print(f"{label}: loss step 1 {ours[0]:.6f} (portable) / {theirs[0]:.6f} (ORT 1.19.2), "
          f"step {steps} {ours[-1]:.6f} / {theirs[-1]:.6f}; max relative difference {rel.max():.2e}")
    assert rel.max() < 0.01, (rel.max(), int(rel.argmax()))


def test_ort_119_engine_trains_our_artifacts_like_the_portable_path(tmp_path):
    art = tmp_path / "artifacts"
    ditac("train-artifacts", SPEC, "-o", art)
    log = tmp_path / "loss.json"
    ditac(
        "train", SPEC, "--data", DATA, "-o", tmp_path / "m.onnx", "--steps", STEPS,
        "--loss-log", log, "--engine", "portable", "--quiet",
        "--plugin", PLUGIN, "--ort", ORT_LIB,
    )
    ref = json.loads(log.read_text())
    assert ref["batch"] == 98 and len(ref["loss"]) == STEPS

    state, module, opt = engine(art)
    assert state.get_property("ditac.loss") == "mse"
    opt.set_learning_rate(ref["lr"])
    data = np.load(DATA)
    x, y = data["x"].astype(np.float32), data["y"].astype(np.float32)
    theirs = train_steps(module, opt, x, y, ref["batches"][:STEPS])
    assert_replays(ref, theirs, STEPS, "spec artifacts")
    assert theirs[-10:].mean() < 0.9 * theirs[:10].mean(), "the loss falls"

    # ORT's checkpoint back through our reader: the parameters ORT trained.
    ckpt = tmp_path / "ort_checkpoint"
    C.save_checkpoint(state, str(ckpt), False)
    again = tmp_path / "again"
    ditac("train-artifacts", SPEC, "-o", again, "--params", ckpt)
    state2 = C.load_checkpoint(str(again / "checkpoint"))
    names = list(state.parameter_names())
    assert sorted(names) == sorted(state2.parameter_names())
    for n in names:
        a = state.get_parameter(n).data
        b = state2.get_parameter(n).data
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=n)


def test_ort_119_eval_step_and_gmm_cross_entropy(tmp_path):
    art = tmp_path / "gmm"
    ditac("train-artifacts", ROOT / "models" / "gmm" / "spec.toml", "-o", art, "--loss", "cross-entropy")
    state, module, opt = engine(art)
    opt.set_learning_rate(3e-3)
    data = np.load(ROOT / "models" / "gmm" / "train.npz")
    x, y = data["x"].astype(np.float32), data["y"].astype(np.int64).reshape(-1)
    rng = np.random.default_rng(0)
    losses = train_steps(module, opt, x, y, [rng.choice(len(x), 98, replace=False) for _ in range(150)])
    assert losses[-1] < 0.8 * losses[0], losses[::20]
    f = C.OrtValueVector()
    module.eval_step([x[:200], y[:200]], f)
    assert np.isfinite(f[0].numpy())


def test_ort_119_engine_trains_the_artifacts_of_an_onnx_model(tmp_path):
    """`train-artifacts MODEL.onnx`: a CNN with per-channel DiTAC built as an ONNX model (Conv, DiTAC,
    Flatten, Gemm), all weights trainable, cross-entropy, torch's Adam (AdamWOptimizer mode 0).
    ONNX Runtime 1.19.2's engine follows `ditac train MODEL.onnx --engine portable` on the same
    batches."""
    model = tmp_path / "cnn.onnx"
    ditac("build", ROOT / "models" / "digits" / "ditac.toml", "-o", model, "--seed", "1")
    flags = ["--loss", "cross-entropy", "--optimizer", "adam", "--trainable", "all",
             "--plugin", PLUGIN, "--ort", ORT_LIB]
    art = tmp_path / "artifacts"
    ditac("train-artifacts", model, "-o", art, *flags)
    data_path = ROOT / "models" / "digits" / "train.npz"
    log = tmp_path / "loss.json"
    steps = 40
    ditac("train", model, "--data", data_path, "-o", tmp_path / "trained.onnx", "--steps", steps,
          "--batch", 64, "--lr", 3e-3, "--loss-log", log, "--engine", "portable", "--quiet", *flags)
    ref = json.loads(log.read_text())

    state, module, opt = engine(art)
    assert state.get_property("ditac.optimizer") == "adam"
    opt.set_learning_rate(ref["lr"])
    data = np.load(data_path)
    x, y = data["x"].astype(np.float32), data["y"].astype(np.int64).reshape(-1)
    theirs = train_steps(module, opt, x, y, ref["batches"][:steps])
    assert_replays(ref, theirs, steps, "model artifacts")
    assert theirs[-5:].mean() < 0.7 * theirs[:5].mean(), "the loss falls"


def test_ort_119_engine_runs_the_backward_of_every_covered_op(tmp_path):
    """An ONNX model with the ops whose backward needs more than a matrix product (MaxPool through
    its Indices and ScatterElements-add, AveragePool and GlobalAveragePool through ConvTranspose,
    a grouped Conv, LayerNormalization, Gelu, Erf, Div/Sub with broadcasting, Transpose, Reshape)
    and a per-channel DiTAC: its artifacts run in ONNX Runtime 1.19.2's training engine and follow
    the portable path."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    init = lambda name, *shape: numpy_helper.from_array(
        (0.4 * rng.standard_normal(shape)).astype(np.float32), name)
    n = lambda op, ins, outs, name, **kw: helper.make_node(op, ins, outs, name=name, **kw)
    ditac_attrs = dict(a=-3.0, b=3.0, tess=10, domain="ai.ditac")
    nodes = [
        n("Conv", ["x", "c1.weight", "c1.bias"], ["a1"], "c1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        n("DiTAC", ["a1", "act.thetas"], ["a2"], "act", **ditac_attrs),
        n("MaxPool", ["a2"], ["a3"], "mp", kernel_shape=[2, 2], strides=[2, 2]),
        n("Conv", ["a3", "g.weight"], ["a4"], "g", kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=2),
        n("AveragePool", ["a4"], ["a5"], "ap", kernel_shape=[2, 2], strides=[1, 1]),
        n("Gelu", ["a5"], ["a6"], "gelu"),
        n("GlobalAveragePool", ["a6"], ["a7"], "gap"),
        n("Reshape", ["a7", "shape2"], ["a8"], "rs"),
        n("LayerNormalization", ["a8", "ln.weight", "ln.bias"], ["a9"], "ln"),
        n("Sub", ["a9", "shift"], ["a10"], "sub"),
        n("Div", ["a10", "two"], ["a11"], "div"),
        n("Erf", ["a11"], ["a12"], "erf"),
        n("Transpose", ["fc.weight"], ["fcT"], "tr", perm=[1, 0]),
        n("MatMul", ["a12", "fcT"], ["a13"], "fc"),
        n("Add", ["a13", "fc.bias"], ["y"], "fcb"),
    ]
    inits = [
        init("c1.weight", 4, 1, 3, 3), init("c1.bias", 4), init("act.thetas", 4, 9),
        init("g.weight", 6, 2, 3, 3), init("ln.weight", 6), init("ln.bias", 6),
        init("fc.weight", 10, 6), init("fc.bias", 10),
        numpy_helper.from_array(np.array([-1, 6], np.int64), "shape2"),
        numpy_helper.from_array(np.full([6], 0.1, np.float32), "shift"),
        numpy_helper.from_array(np.array(2.0, np.float32), "two"),
    ]
    g = helper.make_graph(
        nodes, "ops", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("ai.ditac", 1)])
    model.ir_version = 9
    path = tmp_path / "ops.onnx"
    path.write_bytes(model.SerializeToString())

    flags = ["--loss", "cross-entropy", "--plugin", PLUGIN, "--ort", ORT_LIB]
    art = tmp_path / "artifacts"
    ditac("train-artifacts", path, "-o", art, *flags)
    data_path = ROOT / "models" / "digits" / "train.npz"
    log = tmp_path / "loss.json"
    steps = 30
    ditac("train", path, "--data", data_path, "-o", tmp_path / "trained.onnx", "--steps", steps,
          "--batch", 32, "--lr", 3e-3, "--loss-log", log, "--engine", "portable", "--quiet", *flags)
    ref = json.loads(log.read_text())
    state, module, opt = engine(art)
    opt.set_learning_rate(ref["lr"])
    data = np.load(data_path)
    x, y = data["x"].astype(np.float32), data["y"].astype(np.int64).reshape(-1)
    theirs = train_steps(module, opt, x, y, ref["batches"][:steps])
    assert_replays(ref, theirs, steps, "covered ops")
    assert theirs[-5:].mean() < theirs[:5].mean(), "the loss falls"
