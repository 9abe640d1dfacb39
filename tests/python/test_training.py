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
import os
import pathlib
import subprocess

import numpy as np
import pytest

C = pytest.importorskip("onnxruntime.capi._pybind_state")
if not hasattr(C, "Module"):
    pytest.skip("this onnxruntime has no training API (use .venv-train)", allow_module_level=True)

ROOT = pathlib.Path(__file__).resolve().parents[2]
DITAC = ROOT / "target" / "release" / "ditac"
PLUGIN = pathlib.Path(os.environ.get("DITAC_PLUGIN", ROOT / "target" / "release" / "libditac.so"))
ORT_LIB = pathlib.Path(os.environ.get("ORT_DYLIB_PATH", ROOT / ".ort" / "1.32.0" / "libonnxruntime.so"))
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
    losses = []
    for idx in ref["batches"][:STEPS]:
        fetches = C.OrtValueVector()
        module.train_step([x[idx], y[idx]], fetches)
        losses.append(float(fetches[0].numpy()))
        opt.optimizer_step()
        module.lazy_reset_grad()
    ours = np.array(ref["loss"][:STEPS])
    theirs = np.array(losses)
    rel = np.abs(theirs - ours) / np.abs(ours)
    print(f"loss step 1: {ours[0]:.6f} (portable) {theirs[0]:.6f} (ORT 1.19.2); "
          f"step {STEPS}: {ours[-1]:.6f} / {theirs[-1]:.6f}; max relative difference {rel.max():.2e}")
    assert rel.max() < 0.01, (rel.max(), int(rel.argmax()))
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
    losses = []
    for _ in range(150):
        idx = rng.choice(len(x), 98, replace=False)
        f = C.OrtValueVector()
        module.train_step([x[idx], y[idx]], f)
        losses.append(float(f[0].numpy()))
        opt.optimizer_step()
        module.lazy_reset_grad()
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
    losses = []
    for idx in ref["batches"][:steps]:
        f = C.OrtValueVector()
        module.train_step([x[idx], y[idx]], f)
        losses.append(float(f[0].numpy()))
        opt.optimizer_step()
        module.lazy_reset_grad()
    ours, theirs = np.array(ref["loss"][:steps]), np.array(losses)
    rel = np.abs(theirs - ours) / np.abs(ours)
    print(f"model artifacts: loss step 1 {ours[0]:.6f} / {theirs[0]:.6f}, step {steps} "
          f"{ours[-1]:.6f} / {theirs[-1]:.6f}; max relative difference {rel.max():.2e}")
    assert rel.max() < 0.01, (rel.max(), int(rel.argmax()))
    assert theirs[-5:].mean() < 0.7 * theirs[:5].mean(), "the loss falls"
