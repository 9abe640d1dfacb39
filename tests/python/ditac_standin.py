"""Stand-ins for the reference's DiTAC module (docs/ditac.md, "The reference module"), for exporter tests.

Same structure as the authors' `ditac.DiTAC` as a trained model holds it: `thetas` [1, d] parameter,
`precision_mat` [d, d] frozen parameter, `tess`, `a`, `b`, `zero_bndry`, `steps`, `cpab_act_type`,
`T.params.B` (the basis, outside the state_dict) and `lingrid_t` (the eval table, rebuilt by
`train(False)`). Nothing of the authors' code: the table comes from this project's math (`ditac freeze`
of a DiTAC node with this θ and B), and the eval forward is the reference's, written out here.
"""

import math
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from conftest import DITAC
STEPS = 2048


def run_ditac(*args):
    if not DITAC.exists():
        raise FileNotFoundError(f"{DITAC} not found: run `cargo build --release` first")
    out = subprocess.run([str(DITAC), *map(str, args)], capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"ditac {' '.join(map(str, args))}: {out.stderr}")
    return out.stdout


def project_qr_basis(tess):
    """The project's deterministic `qr` basis B [2·tess, tess − 1] (zero boundary)."""
    import json

    return np.array(json.loads(run_ditac("basis", "--tess", tess)), dtype=np.float64)


def training_machine_basis(tess, seed):
    """A basis as another BLAS may have produced it: the same null space, another orthonormal frame
    (the reference's `qr` B at tess 6 and ≥ 20 differs between machines in exactly this way)."""
    B = project_qr_basis(tess)
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((B.shape[1], B.shape[1])))
    return (B @ q).astype(np.float32)


def project_table(theta, B, tess):
    """T̂ at the 2048 table nodes (the reference's `lingrid_t`), by this project's math: `ditac freeze`
    of one DiTAC node with θ and an explicit B."""
    node = helper.make_node(
        "DiTAC", ["X", "theta", "B"], ["Y"], domain="ai.ditac", name="act",
        tess=int(tess), basis="explicit", lut_size=STEPS,
    )
    g = helper.make_graph(
        [node], "table",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N"])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N"])],
        initializer=[
            numpy_helper.from_array(np.asarray(theta, np.float32).reshape(-1), "theta"),
            numpy_helper.from_array(np.asarray(B, np.float32), "B"),
        ],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.ditac", 1)], ir_version=9)
    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d) / "m.onnx", Path(d) / "lut.onnx"
        onnx.save(m, src)
        run_ditac("freeze", src, "-o", dst)
        frozen = onnx.load(dst)
    (lut,) = [n for n in frozen.graph.node if n.op_type == "DiTACLut"]
    (table,) = [t for t in frozen.graph.initializer if t.name == lut.input[1]]
    return numpy_helper.to_array(table).reshape(-1)


class _Params:
    def __init__(self, B, tess):
        self.B, self.nc, self.xmin, self.xmax = B, tess, 0, 1


class _Transformer:
    def __init__(self, B, tess):
        self.params = _Params(B, tess)


class StandInDiTAC(nn.Module):
    """The reference module's structure and eval forward (ditac.md §6, §7)."""

    def __init__(self, tess, a, b, theta, B, device="cpu"):
        super().__init__()
        self.cpab_act_type = "gelu_cpab"
        self.tess, self.a, self.b = int(tess), float(a), float(b)
        self.zero_bndry = True
        self.basis = "qr"
        self.d = self.tess - 1
        self.steps = STEPS
        self.thetas = nn.Parameter(torch.tensor(np.asarray(theta, np.float32).reshape(1, self.d), device=device))
        self.precision_mat = nn.Parameter(torch.eye(self.d, device=device), requires_grad=False)
        self.T = _Transformer(torch.tensor(B, dtype=torch.float32, device=device), self.tess)
        self.lingrid_t = None

    def train(self, mode=True):
        super().train(mode)
        if not mode:
            table = project_table(self.thetas.detach().cpu().numpy(), self.T.params.B.cpu().numpy(), self.tess)
            self.lingrid_t = torch.tensor(table, device=self.thetas.device).reshape(1, -1)
        return self

    def forward(self, x):
        if self.training or self.lingrid_t is None:
            raise RuntimeError("stand-in DiTAC: eval mode only (its training path is the reference's CUDA code)")
        shape = x.shape
        x = x.reshape(-1)
        inside = (x >= self.a) & (x <= self.b)
        u = (torch.where(inside, x, torch.zeros_like(x)) - self.a) / (self.b - self.a)
        idx = torch.round(u * (self.steps - 1)).long().clamp(0, self.steps - 1)
        warped = self.lingrid_t.reshape(-1)[idx] * (self.b - self.a) + self.a
        phi = 0.5 * (1 + torch.erf(x / math.sqrt(2)))
        return (torch.where(inside, warped, x) * phi).reshape(shape)


def ditac_layer(tess, a, b, seed, device="cpu"):
    rng = np.random.default_rng(seed)
    B = training_machine_basis(tess, seed)
    theta = rng.standard_normal(tess - 1).astype(np.float32) * 0.8
    return StandInDiTAC(tess, a, b, theta, B, device=device)


class MLP(nn.Module):
    def __init__(self, device="cpu"):
        super().__init__()
        self.fc1 = nn.Linear(4, 16)
        self.act1 = ditac_layer(6, -3.0, 3.0, seed=1, device=device)
        self.fc2 = nn.Linear(16, 16)
        self.act2 = ditac_layer(20, -2.0, 2.5, seed=2, device=device)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.act2(self.fc2(self.act1(self.fc1(x)))))


def cnn(device="cpu"):
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        ditac_layer(20, -3.0, 3.0, seed=3, device=device),
        nn.Conv2d(4, 4, 3, stride=2),
        ditac_layer(6, -2.5, 2.0, seed=4, device=device),
        nn.Flatten(),
        nn.Linear(16, 5),
    )


def module_io(model, x, modules):
    """The eval output of ``model`` on ``x`` and, per (name, module) of ``modules``, that module's
    input and output in the same forward (forward hooks, removed afterwards)."""
    seen = {}
    hooks = [m.register_forward_hook(lambda _m, i, o, n=n: seen.__setitem__(n, (i[0], o)))
             for n, m in modules]
    try:
        with torch.no_grad():
            y = model(x)
    finally:
        for h in hooks:
            h.remove()
    return y, seen
