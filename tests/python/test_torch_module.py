"""ditac_onnx.torch.DiTAC, the trainable drop-in for the authors' module, against the reference vectors
(forward in train and eval mode, the straight-through x-gradient, θ's gradient with each regulariser,
the eval table, θ's draw from the prior, P), against the stand-ins of the authors' module
(ditac_standin.py: loading their checkpoints, convert), its state_dict, its export through the plugin,
autocast, and CUDA (skipped without a GPU).

Run in .venv-torch (tools/setup.sh): .venv-torch/bin/python -m pytest tests/python/test_torch_module.py
Needs target/release/libditac.so (or DITAC_PLUGIN) and target/release/ditac (the stand-ins' tables);
the reference vectors: DITAC_ORACLE_DIR, else tests/data/oracle (tests that need them skip without).
"""

import copy
import io
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed here (tools/setup.sh puts it in .venv-torch)")
from torch import nn  # noqa: E402

from conftest import ORACLE, PLUGIN, ROOT  # noqa: E402
# The module finds the library through DITAC_PLUGIN in a source checkout (no packaged library).
os.environ["DITAC_PLUGIN"] = str(PLUGIN)
sys.path.insert(0, str(ROOT / "tools/python"))
import ditac_onnx.torch as dt  # noqa: E402
from ditac_onnx.torch import DiTAC  # noqa: E402
import ditac_standin as standin  # noqa: E402

if not PLUGIN.exists():
    pytest.skip(f"{PLUGIN} not found: run `cargo build --release` first", allow_module_level=True)

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA GPU on this machine: the CUDA tests need one")


def oracle_dir():
    return ORACLE if (ORACLE / "index.json").is_file() else None


def oracle_configs():
    d = oracle_dir()
    if d is None:
        return [pytest.param(None, marks=pytest.mark.skip(
            reason="reference vectors not found: set DITAC_ORACLE_DIR or add tests/data/oracle"))]
    return [c["name"] for c in json.loads((d / "index.json").read_text())["configs"]]


CONFIGS = oracle_configs()


def load(name):
    return json.loads((oracle_dir() / f"{name}.json").read_text())


def arr(v):
    """JSON numbers (non-finite ones as strings) to float64."""
    return np.array(v, dtype=object).astype(np.float64)


def module_for(o, **kw):
    """Our module with the config's settings and θ, in the reference's basis B."""
    c = o["config"]
    m = DiTAC(
        "gelu_cpab", c["tess"], c["a"], c["b"], basis=torch.tensor(o["B"], dtype=torch.float32),
        lambda_smooth=c["lambda_smooth"], lambda_smooth_init=c["lambda_smooth_init"],
        lambda_var=c["lambda_var"], lambda_var_init=c["lambda_var_init"],
        lambda_reg_loss=c["lambda_reg_loss"], **kw,
    )
    with torch.no_grad():
        m.thetas.copy_(torch.tensor(o["theta"], dtype=torch.float32).reshape(1, -1))
        m.precision_mat.copy_(torch.tensor(o["precision_mat"], dtype=torch.float32))
    return m


def points(o):
    """The oracle points without the rounding ties (tagged fragile): x and a mask of kept points."""
    p = o["points"]
    keep = np.array(["fragile" not in t for t in p["tag"]])
    return torch.tensor(arr(p["x"]), dtype=torch.float32), keep


def assert_close(got, want, rel, abs_, what):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    bad = ~(np.abs(got - want) <= rel * np.abs(want) + abs_)
    assert not bad.any(), f"{what}: {bad.sum()} of {bad.size} differ, worst at {np.argmax(np.abs(got - want))}: " \
        f"got {got[bad][:4]}, want {want[bad][:4]}"


# -- against the reference vectors ---------------------------------------------------------------


@pytest.mark.parametrize("name", CONFIGS)
def test_forward_and_x_gradient_train_mode(name):
    o = load(name)
    m = module_for(o).train()
    x, keep = points(o)
    x.requires_grad_(True)
    y = m(x)
    y.backward(torch.ones_like(y))
    w = o["config"]["b"] - o["config"]["a"]
    p = o["points"]
    # ../oracle README: LUT path about 1e-5 relative / 1e-5·(b−a) absolute.
    assert_close(y.detach().numpy()[keep], arr(p["act_lut"])[keep], 1e-5, 1e-5 * w, "act_lut")
    assert_close(x.grad.numpy()[keep], arr(p["dact_dx_lut"])[keep], 1e-5, 1e-5 * w, "dact_dx_lut")


@pytest.mark.parametrize("name", CONFIGS)
def test_eval_mode_gives_the_train_output(name):
    o = load(name)
    c = o["config"]
    m = module_for(o).train()
    x, keep = points(o)
    with torch.no_grad():
        y_train = m(x)
    m.eval()
    assert m.lingrid_t.shape == (1, 2048)
    assert_close(m.lingrid_t.reshape(-1).numpy(), arr(o["lut"]["T_norm"]), 0, 1e-5, "lingrid_t")
    with torch.no_grad():
        y_eval = m(x)
    assert torch.equal(y_eval, y_train)
    assert_close(y_eval.numpy()[keep], arr(o["points"]["act_eval"])[keep], 1e-5, 1e-5 * (c["b"] - c["a"]), "act_eval")


@pytest.mark.parametrize("name", CONFIGS)
def test_special_inputs(name):
    o = load(name)
    s = o["special_inputs"]
    m = module_for(o).train()
    x = torch.tensor(arr(s["x"]), dtype=torch.float32, requires_grad=True)
    y = m(x)
    y.sum().backward()
    np.testing.assert_array_equal(y.detach().numpy(), arr(s["act_lut"]).astype(np.float32))
    np.testing.assert_array_equal(x.grad.numpy(), arr(s["dact_dx_lut"]).astype(np.float32))


@pytest.mark.parametrize("regulariser", ["reference", "intended", "none"])
@pytest.mark.parametrize("name", CONFIGS)
def test_theta_gradient(name, regulariser):
    """θ.grad for loss = Σ act over all points: the reference's own (quirk included), the intended prior's
    and the data term alone."""
    o = load(name)
    m = module_for(o, regulariser=regulariser).train()
    x = torch.tensor(arr(o["points"]["x"]), dtype=torch.float32)
    m(x).sum().backward()
    g = o["theta_grad_ones"]
    want = {
        "reference": arr(g["reference"]),
        "intended": arr(g["data_term_sum"]) + arr(g["proper_prior_grad"]),
        "none": arr(g["data_term_sum"]),
    }[regulariser]
    got = m.thetas.grad.reshape(-1).numpy()
    assert_close(got, want, 0, 2e-5 * np.abs(want).max(), f"θ gradient ({regulariser})")


@pytest.mark.parametrize("name", CONFIGS)
def test_theta_gradient_per_point(name):
    o = load(name)
    c = o["config"]
    m = module_for(o, regulariser="none").train()
    x, keep = points(o)
    want = arr(o["points"]["dact_dtheta_lut"])
    got = np.zeros_like(want)
    for i in np.flatnonzero(keep):
        m.thetas.grad = None
        m(x[i:i + 1]).sum().backward()
        got[i] = m.thetas.grad.reshape(-1).numpy()
    scale = np.abs(want[keep]).max()
    assert_close(got[keep], want[keep], 1e-4, 1e-5 * scale + 1e-6 * (c["b"] - c["a"]), "dact_dtheta_lut")


@pytest.mark.parametrize("name", CONFIGS)
def test_construction_draws_the_references_theta(name):
    """With the config's seed, the constructor draws the authors' θ (on the CPU: same generator, same
    distribution; the covariance agrees to float32 rounding), and builds their P and, for the
    machine-independent qr sizes, their B."""
    o = load(name)
    c = o["config"]
    kw = dict(lambda_smooth=c["lambda_smooth"], lambda_smooth_init=c["lambda_smooth_init"],
              lambda_var=c["lambda_var"], lambda_var_init=c["lambda_var_init"], lambda_reg_loss=c["lambda_reg_loss"])
    ref_B = arr(o["B"])
    machine_dependent = c["tess"] == 6 or c["tess"] >= 20
    basis = torch.tensor(ref_B, dtype=torch.float32) if machine_dependent else c["basis"]
    torch.manual_seed(c["seed"])
    m = DiTAC("gelu_cpab", c["tess"], c["a"], c["b"], basis, **kw)
    if not machine_dependent:
        assert_close(m.B.numpy(), ref_B, 0, 1e-7, "B")
    P = arr(o["precision_mat"])
    assert_close(m.precision_mat.numpy(), P, 0, 1e-4 * np.abs(P).max(), "precision_mat")
    if c["theta_mode"] == "prior_sample":
        th = arr(o["theta"])
        assert_close(m.thetas.detach().reshape(-1).numpy(), th, 0, 1e-4 * np.abs(th).max(), "θ")


# -- regulariser, state_dict, checkpoints ----------------------------------------------------------


def test_regularisers_by_formula():
    torch.manual_seed(3)
    m = DiTAC(tess=8, a=-2.0, b=2.5)
    x = torch.randn(4, 33) * 2
    w = torch.randn(4, 33)
    grads = {}
    for reg in ("none", "reference", "intended"):
        m.regulariser = reg
        m.thetas.grad = None
        (m(x) * w).sum().backward()
        grads[reg] = m.thetas.grad.clone()
    g, th, P, lam, d = grads["none"], m.thetas.detach(), m.precision_mat, m.lambda_reg_loss, m.d
    torch.testing.assert_close(grads["reference"], d * g + 2 * lam * th * P.sum(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads["intended"], g + 2 * lam * th @ P, rtol=1e-5, atol=1e-6)
    # Once per call, as the reference: two calls add two regulariser terms.
    m.regulariser = "reference"
    m.thetas.grad = None
    ((m(x) * w).sum() + (m(x) * w).sum()).backward()
    torch.testing.assert_close(m.thetas.grad, 2 * grads["reference"], rtol=1e-5, atol=1e-6)


def test_state_dict_round_trip():
    torch.manual_seed(0)
    m1 = DiTAC(tess=12, a=-3.0, b=3.0, basis="rref")
    opt = torch.optim.Adam(m1.parameters(), lr=1e-2)
    x = torch.randn(256) * 2
    for _ in range(5):
        opt.zero_grad()
        (m1(x) - torch.sin(x)).square().mean().backward()
        opt.step()
    sd = m1.state_dict()
    assert set(sd) == {"thetas", "precision_mat", "B"}
    assert sd["thetas"].shape == (1, 11) and sd["B"].shape == (24, 11) and sd["precision_mat"].shape == (11, 11)
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    torch.manual_seed(1)
    m2 = DiTAC(tess=12, a=-3.0, b=3.0).eval()  # another basis and θ, eval table already built
    y_before = m2(x)
    m2.load_state_dict(torch.load(buf))
    assert torch.equal(m2.B, m1.B) and torch.equal(m2.thetas, m1.thetas)
    m1.eval()
    assert torch.equal(m2(x), m1(x)) and not torch.equal(m2(x), y_before)
    m1.train(), m2.train()
    assert torch.equal(m2(x), m1(x))
    assert [n for n, _ in m2.named_parameters()] == ["thetas", "precision_mat"]
    assert not m2.precision_mat.requires_grad


class StandInNet(nn.Module):
    """ditac_standin.MLP's structure with our modules in the authors' (given B)."""

    def __init__(self, ref):
        super().__init__()
        self.fc1, self.fc2, self.head = nn.Linear(4, 16), nn.Linear(16, 16), nn.Linear(16, 3)
        self.act1 = DiTAC(tess=6, a=-3.0, b=3.0, basis=ref.act1.T.params.B)
        self.act2 = DiTAC(tess=20, a=-2.0, b=2.5, basis=ref.act2.T.params.B)

    def forward(self, x):
        return self.head(self.act2(self.fc2(self.act1(self.fc1(x)))))


def near_tie(x, m):
    x = x.detach().double()
    pos = (x - m.a) / (m.b - m.a) * (m.steps - 1)
    return ((x >= m.a) & (x <= m.b) & ((pos - pos.floor() - 0.5).abs() < 2e-3)).numpy()


def ditac_io(model, x):
    """Per DiTAC module (ours or a stand-in): its input and output in an eval forward."""
    return standin.module_io(model, x, [(n, m) for n, m in model.named_modules() if hasattr(m, "thetas")])


def compare_layers(ours, theirs, x):
    """Our modules against the stand-ins', layer by layer, on the same inputs (near-tie elements
    left out: another op order may pick the neighbouring node there)."""
    _, got = ditac_io(ours, x)
    _, want = ditac_io(theirs, x)
    assert sorted(got) == sorted(want)
    for n in got:
        m = dict(ours.named_modules())[n]
        y = m(want[n][0])  # our module on the stand-in's input
        ties = near_tie(want[n][0], m)
        assert_close(y.detach().numpy()[~ties], want[n][1].numpy()[~ties], 1e-5, 1e-5 * (m.b - m.a), n)


def test_loading_an_authors_checkpoint():
    """Their state_dict (keys thetas, precision_mat; no B) loads strictly into our modules built with
    their B, and gives their eval output."""
    ref = standin.MLP()
    sd = ref.state_dict()
    assert {k for k in sd if k.startswith("act")} == {
        "act1.thetas", "act1.precision_mat", "act2.thetas", "act2.precision_mat"}
    ours = StandInNet(ref)
    ours.load_state_dict(sd)  # strict: B may be absent
    for n in ("act1", "act2"):
        assert torch.equal(getattr(ours, n).thetas, getattr(ref, n).thetas)
        assert torch.equal(getattr(ours, n).B, getattr(ref, n).T.params.B)
    ours.eval(), ref.eval()
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(2)) * 2.5
    compare_layers(ours, ref, x)
    # Any other key mismatch is still an error.
    bad = dict(sd)
    bad.pop("act1.thetas")
    with pytest.raises(RuntimeError, match="act1.thetas"):
        ours.load_state_dict(bad)


def test_checkpoint_without_basis_at_a_machine_dependent_size_warns():
    m = DiTAC(tess=6, a=-3.0, b=3.0)
    sd = {"thetas": torch.zeros(1, 5), "precision_mat": torch.eye(5)}
    with pytest.warns(UserWarning, match="BLAS"):
        m.load_state_dict(sd)
    # Not when the module was given its training run's B.
    m.B.copy_(torch.from_numpy(standin.training_machine_basis(6, seed=1)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.load_state_dict(sd)
    m10 = DiTAC(tess=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m10.load_state_dict({"thetas": torch.zeros(1, 9), "precision_mat": torch.eye(9)})


def test_convert_swaps_the_authors_modules():
    ref = standin.MLP()
    state = torch.get_rng_state()
    conv = dt.convert(copy.deepcopy(ref))
    assert torch.equal(torch.get_rng_state(), state)
    for n in ("act1", "act2"):
        new, old = getattr(conv, n), getattr(ref, n)
        assert isinstance(new, DiTAC) and new.basis == "explicit"
        assert torch.equal(new.thetas, old.thetas) and torch.equal(new.B, old.T.params.B)
        assert torch.equal(new.precision_mat, old.precision_mat)
        assert (new.tess, new.a, new.b, new.steps) == (old.tess, old.a, old.b, old.steps)
    assert conv.training
    conv.eval(), ref.eval()
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(3)) * 2.5
    compare_layers(conv, ref, x)
    # The converted model trains.
    conv.train()
    conv(x).square().mean().backward()
    assert conv.act1.thetas.grad is not None and conv.act1.thetas.grad.abs().sum() > 0


# -- export ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dynamo", [pytest.param(True, id="dynamo"), pytest.param(False, id="torchscript")])
def test_export_natively(tmp_path, dynamo):
    pytest.importorskip("onnxscript", reason="onnxscript (PyTorch's ONNX exporter) is not installed here")
    import onnx
    import onnxruntime as ort

    torch.manual_seed(4)
    # Ours (qr and rref bases) beside a stand-in of the authors' module, which export swaps.
    model = nn.Sequential(nn.Linear(4, 16), DiTAC(tess=6, a=-3.0, b=3.0), nn.Linear(16, 16),
                          DiTAC(tess=20, a=-2.0, b=2.5, basis="rref"), nn.Linear(16, 16),
                          standin.ditac_layer(10, -2.5, 2.0, seed=3), nn.Linear(16, 3))
    x = torch.randn(8, 4)
    path = tmp_path / "m.onnx"
    layers = dt.export(model, (x,), path, dynamo=dynamo)
    assert [L.path for L in layers] == ["1", "3", "5"] and model.training
    assert isinstance(model[5], standin.StandInDiTAC)  # put back after the export
    g = onnx.load(path).graph
    nodes = [n for n in g.node if n.op_type == "DiTAC"]
    assert [n.name for n in nodes] == ["1", "3", "5"]
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in g.initializer}
    for n, m in zip(nodes, (model[1], model[3], model[5])):
        np.testing.assert_array_equal(inits[n.input[1]], m.thetas.detach().reshape(-1).numpy())
        np.testing.assert_array_equal(inits[n.input[2]], m.T.params.B.numpy())
    so = ort.SessionOptions()
    so.register_custom_ops_library(str(PLUGIN))
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    model.eval()
    x2 = torch.randn(64, 4, generator=torch.Generator().manual_seed(5)) * 2.5
    y, seen = ditac_io(model, x2)
    tie = np.zeros(64, bool)
    for n, (inp, _) in seen.items():
        tie |= near_tie(inp, dict(model.named_modules())[n]).reshape(64, -1).any(axis=1)
    assert (~tie).sum() >= 32
    y_ort = sess.run(None, {"x": x2.numpy()})[0]
    assert_close(y_ort[~tie], y.numpy()[~tie], 1e-5, 1e-5, "ONNX Runtime output")


# -- dtypes, autocast, CUDA, training -----------------------------------------------------------------


def test_half_inputs_and_autocast_cpu():
    torch.manual_seed(5)
    m = DiTAC(tess=10, a=-3.0, b=3.0)
    x = torch.randn(100) * 2
    for dtype in (torch.float16, torch.bfloat16):
        y = m(x.to(dtype))
        assert y.dtype == dtype
        assert torch.equal(y, m(x.to(dtype).float()).to(dtype))
    lin = nn.Linear(3, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = lin(torch.randn(16, 3))
        assert h.dtype == torch.bfloat16
        y = m(h)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert torch.isfinite(m.thetas.grad).all() and torch.isfinite(lin.weight.grad).all()


def test_errors():
    with pytest.raises(NotImplementedError):
        DiTAC("leaky_cpab")
    with pytest.raises(ValueError, match="cpab_act_type"):
        DiTAC("relu_cpab")
    with pytest.raises(ValueError, match="svd"):
        DiTAC(basis="svd")
    with pytest.raises(ValueError, match="expected \\[20, 9\\]"):
        DiTAC(tess=10, basis=torch.zeros(20, 8))
    with pytest.raises(ValueError, match="violates constraint"):
        DiTAC(tess=10, basis=torch.ones(20, 9))
    with pytest.raises(ValueError, match="a < b"):
        DiTAC(a=1.0, b=0.0)
    with pytest.raises(ValueError, match="regulariser"):
        DiTAC(regulariser="quirk")


def test_training_lowers_the_loss():
    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(2, 16), DiTAC(tess=10, a=-3.0, b=3.0), nn.Linear(16, 1))
    theta0 = model[1].thetas.detach().clone()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    x = torch.rand(512, 2) * 2 - 1
    y = torch.sin(3 * x[:, :1]) + x[:, 1:] ** 2
    losses = []
    for _ in range(300):
        loss = (model(x) - y).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0], (losses[0], losses[-1])
    assert not torch.equal(model[1].thetas, theta0)


def test_import_without_torch():
    """`import ditac_onnx` and its C API binding work without torch; ditac_onnx.torch says what to install."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import ditac_onnx, ditac_onnx._capi as c\n"
        "assert c.basis(10).shape == (20, 9)\n"
        "try:\n    import ditac_onnx.torch\nexcept ImportError as e:\n    print('ImportError', e)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT / "tools/python"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "ImportError" in out.stdout and "pip install" in out.stdout


@needs_cuda
def test_cuda_matches_cpu():
    torch.manual_seed(7)
    cpu = DiTAC(tess=10, a=-3.0, b=3.0)
    gpu = copy.deepcopy(cpu).cuda()
    assert gpu.thetas.is_cuda and gpu.B.is_cuda and gpu.precision_mat.is_cuda
    x = torch.randn(4096) * 2
    xc, xg = x.clone().requires_grad_(True), x.cuda().requires_grad_(True)
    yc, yg = cpu(xc), gpu(xg)
    w = torch.randn(4096)
    (yc * w).sum().backward()
    (yg * w.cuda()).sum().backward()
    torch.testing.assert_close(yg.cpu(), yc, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(xg.grad.cpu(), xc.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gpu.thetas.grad.cpu(), cpu.thetas.grad, rtol=1e-4, atol=1e-5)
    cpu.eval(), gpu.eval()
    assert gpu.lingrid_t.is_cuda
    torch.testing.assert_close(gpu(x.cuda()).cpu(), cpu(x), rtol=1e-5, atol=1e-6)


@needs_cuda
def test_cuda_autocast_and_state_dict():
    torch.manual_seed(8)
    model = nn.Sequential(nn.Linear(2, 32), DiTAC(tess=10, a=-3.0, b=3.0), nn.Linear(32, 1)).cuda()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    x = torch.rand(256, 2, device="cuda") * 2 - 1
    y = torch.sin(3 * x[:, :1])
    first = None
    for _ in range(50):
        with torch.autocast("cuda", dtype=torch.float16):
            out = model(x)
            assert out.dtype == torch.float16
            loss = (out.float() - y).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < first
    sd = {k: v.cpu() for k, v in model.state_dict().items()}
    back = nn.Sequential(nn.Linear(2, 32), DiTAC(tess=10, a=-3.0, b=3.0), nn.Linear(32, 1))
    back.load_state_dict(sd)
    model.eval(), back.eval()
    with torch.no_grad():
        torch.testing.assert_close(back(x.cpu()), model(x).cpu(), rtol=1e-4, atol=1e-5)
