"""DiTAC in PyTorch: a trainable module, and the export of models holding it (or the authors'
module) to ONNX, one ``ai.ditac::DiTAC`` node per module.

``DiTAC`` is a drop-in for the authors' ``ditac.DiTAC`` (same constructor, parameters and state_dict
keys, same forward and gradients) whose tables come from this package's library: it installs with
pip and trains on the CPU or CUDA without compiling anything. ``convert`` swaps the authors' modules
of a model for it (θ and B copied).

``export`` writes each DiTAC module as a ``DiTAC`` node carrying the module's own θ and its own basis B
(``basis = "explicit"``: the reference's ``qr`` basis depends on the training machine's BLAS for some
sizes, so B always travels with θ). Our ``DiTAC`` exports natively. The authors' module cannot be
traced (it integrates through a compiled CUDA extension), so ``export`` swaps each of those, for the
duration of the export, for a stand-in whose forward the exporter writes as the node. Modules are
recognised by their structure (``thetas``, ``tess``, ``a``, ``b`` and ``T.params.B``), never by
importing the authors' package.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

try:
    import torch
    from torch import nn
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "ditac_onnx.torch needs PyTorch (and onnx, onnxscript for its exporter): "
        "pip install 'ditac-onnx[torch]'"
    ) from e

DOMAIN = "ai.ditac"
OPSET = 1
BATCH = "batch"
PROTOBUF_LIMIT = (1 << 31) - 1

__all__ = ["DiTAC", "convert", "export", "find_ditac_modules", "DitacLayer"]


from ._torch_module import DiTAC  # noqa: E402  (after the torch import check)


@dataclass(frozen=True)
class DitacLayer:
    """One reference DiTAC module as it is exported."""

    path: str  # the module's name in the model (``act1``, ``features.3``)
    tess: int
    d: int
    a: float
    b: float
    zero_boundary: int
    lut_size: int
    theta: "torch.Tensor"  # float32 [d], on the CPU
    B: "torch.Tensor"  # float32 [2·tess, d], on the CPU

    def attributes(self) -> dict[str, Any]:
        return dict(
            a=self.a,
            b=self.b,
            tess=self.tess,
            zero_boundary=self.zero_boundary,
            basis="explicit",
            variant="ditac",
            lut_size=self.lut_size,
            interpolation="nearest",
        )


def _looks_like_ditac(m: nn.Module) -> bool:
    return isinstance(getattr(m, "thetas", None), torch.Tensor) and all(
        hasattr(m, k) for k in ("tess", "a", "b")
    )


def _describe(path: str, m: nn.Module) -> DitacLayer:
    where = f"DiTAC module '{path}' ({type(m).__name__})"
    kind = getattr(m, "cpab_act_type", "gelu_cpab")
    if kind != "gelu_cpab":
        raise ValueError(f"{where}: cpab_act_type {kind!r}: only 'gelu_cpab' is the reference's DiTAC")
    tess, a, b = m.tess, m.a, m.b
    if isinstance(tess, bool) or not isinstance(tess, numbers.Integral) or tess < 1:
        raise ValueError(f"{where}: tess = {tess!r}: expected a positive int")
    for name, v in (("a", a), ("b", b)):
        if not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
            raise ValueError(f"{where}: {name} = {v!r}: expected a finite number")
    if not float(a) < float(b):
        raise ValueError(f"{where}: a = {a}, b = {b}: expected a < b")
    tess = int(tess)
    zero_boundary = int(bool(getattr(m, "zero_bndry", True)))
    d = tess - 1 if zero_boundary else tess + 1
    theta = m.thetas.detach()
    if tuple(theta.shape) not in ((1, d), (d,)):
        raise ValueError(
            f"{where}: thetas has shape {list(theta.shape)}: tess {tess} "
            f"({'with' if zero_boundary else 'without'} zero boundary) expects [1, {d}]"
        )
    params = getattr(getattr(m, "T", None), "params", None)
    B = getattr(params, "B", None)
    if not isinstance(B, torch.Tensor):
        raise ValueError(
            f"{where}: no basis tensor at T.params.B: θ only means something in the basis it was trained "
            "in, and that B is not in the state_dict; rebuild the module as it was trained "
            "(the same tess and basis) before exporting"
        )
    B = B.detach()
    if tuple(B.shape) != (2 * tess, d):
        raise ValueError(f"{where}: T.params.B has shape {list(B.shape)}: expected [{2 * tess}, {d}]")
    theta = theta.to("cpu", torch.float32).reshape(d).contiguous()
    B = B.to("cpu", torch.float32).contiguous()
    for name, t in (("thetas", theta), ("T.params.B", B)):
        if not torch.isfinite(t).all():
            raise ValueError(f"{where}: {name} has non-finite values")
    lut_size = int(getattr(m, "steps", 2048))
    if lut_size < 2:
        raise ValueError(f"{where}: steps = {lut_size}: expected at least 2 table nodes")
    return DitacLayer(path, tess, d, float(a), float(b), zero_boundary, lut_size, theta, B)


def find_ditac_modules(model: nn.Module) -> list[tuple[str, nn.Module, DitacLayer]]:
    """The reference DiTAC modules of ``model`` (outermost first; not those nested inside one)."""
    found: list[tuple[str, nn.Module, DitacLayer]] = []
    inside: list[str] = []
    for path, m in model.named_modules():
        if any(path.startswith(p + ".") for p in inside):
            continue
        if _looks_like_ditac(m):
            if not path:
                raise ValueError("the model itself is a DiTAC module: wrap it (nn.Sequential(module))")
            found.append((path, m, _describe(path, m)))
            inside.append(path)
    return found


def _from_reference(m: nn.Module, layer: DitacLayer, regulariser: str) -> DiTAC:
    """Our module with the authors' module ``m``'s settings, θ, B and P, on its device and in its mode."""
    defaults = dict(lambda_smooth=5.0, lambda_smooth_init=5.0, lambda_var=2.0, lambda_var_init=2.0, lambda_reg_loss=0.1)
    lambdas = {k: float(getattr(m, k, v)) for k, v in defaults.items()}
    # Building draws a θ from the prior; the generator is left as it was (θ is copied anyway).
    with torch.random.fork_rng(devices=[]):
        new = DiTAC(
            "gelu_cpab", layer.tess, layer.a, layer.b, basis=layer.B, regulariser=regulariser,
            steps=layer.lut_size, **lambdas,
        )
    with torch.no_grad():
        new.thetas.copy_(layer.theta.reshape(1, -1))
        P = getattr(m, "precision_mat", None)
        if isinstance(P, torch.Tensor) and tuple(P.shape) == (layer.d, layer.d):
            new.precision_mat.copy_(P.detach().to("cpu", torch.float32))
    new.thetas.requires_grad_(m.thetas.requires_grad)
    new.to(m.thetas.device)
    return new.train(m.training)


def convert(model: nn.Module, *, regulariser: str = "reference") -> nn.Module:
    """Replaces every authors' DiTAC module of ``model`` (recognised by structure, as ``export`` does)
    by a ``DiTAC`` of this package with the same settings, θ, basis B (their ``T.params.B``) and
    regulariser matrix P (their ``precision_mat``), on the same device and in the same train/eval mode;
    their ``lambda_*`` attributes are used where they have them, else the authors' defaults. Returns
    the model (changed in place), or the new module when ``model`` is itself one. Rebuild an
    optimiser afterwards: the θ parameters are new objects."""
    if _looks_like_ditac(model) and not isinstance(model, DiTAC):
        return _from_reference(model, _describe("(model)", model), regulariser)
    for path, m, layer in find_ditac_modules(model):
        if not isinstance(m, DiTAC):
            _set_submodule(model, path, _from_reference(m, layer, regulariser))
    return model


def _eval_forward(x: "torch.Tensor", table: "torch.Tensor", a: float, b: float) -> "torch.Tensor":
    """The reference's eval forward (ditac.md §6) from its table: what the ONNX node computes, here
    only so that tracing sees real values."""
    n = table.numel()
    inside = (x >= a) & (x <= b)
    u = ((x - a) / (b - a)).clamp(0.0, 1.0)
    idx = torch.round(u * (n - 1)).to(torch.int64)
    warped = table.to(x.dtype)[idx] * (b - a) + a
    phi = 0.5 * (1.0 + torch.erf(x * (1.0 / math.sqrt(2.0))))
    return torch.where(inside, warped, x) * phi


@torch.library.custom_op("ditac_onnx::ditac", mutates_args=())
def _ditac_op(
    x: torch.Tensor,
    theta: torch.Tensor,
    B: torch.Tensor,
    table: torch.Tensor,
    a: float,
    b: float,
    tess: int,
    zero_boundary: int,
    lut_size: int,
) -> torch.Tensor:
    return _eval_forward(x, table, a, b)


@_ditac_op.register_fake
def _ditac_op_fake(x, theta, B, table, a, b, tess, zero_boundary, lut_size):
    return torch.empty_like(x)


def _register_onnx_schema() -> None:
    """Declares ``ai.ditac::DiTAC`` to onnx (process-wide, once): PyTorch's exporter builds a node only
    for an op with a schema (it takes the output count from it)."""
    from onnx import defs

    if defs.has("DiTAC", OPSET, DOMAIN):
        return
    S = defs.OpSchema
    A = S.AttrType
    attrs = [
        S.Attribute("a", A.FLOAT, "left end of the warped interval"),
        S.Attribute("b", A.FLOAT, "right end of the warped interval"),
        S.Attribute("tess", A.INT, "cells of the tessellation"),
        S.Attribute("zero_boundary", A.INT, "1: zero velocity at the ends"),
        S.Attribute("basis", A.STRING, "qr, rref, sparse or explicit (B given)"),
        S.Attribute("variant", A.STRING, "ditac, leaky or ge"),
        S.Attribute("alpha", A.FLOAT, "leaky variant's slope"),
        S.Attribute("lut_size", A.INT, "table nodes (0: exact)"),
        S.Attribute("interpolation", A.STRING, "nearest or linear"),
        S.Attribute("channel_axis", A.INT, "axis of a per-channel θ"),
    ]
    defs.register_schema(
        S(
            "DiTAC",
            DOMAIN,
            OPSET,
            doc="DiTAC activation (the ai.ditac plugin's operator)",
            inputs=[
                S.FormalParameter("X", "T"),
                S.FormalParameter("theta", "tensor(float)"),
                S.FormalParameter("B", "tensor(float)", param_option=S.FormalParameterOption.Optional),
            ],
            outputs=[S.FormalParameter("Y", "T")],
            type_constraints=[("T", ["tensor(float)", "tensor(float16)"], "input and output type")],
            attributes=attrs,
        )
    )


def _onnx_translation():
    """The dynamo exporter's translation of ``ditac_onnx::ditac``: one ai.ditac DiTAC node (the table
    input is for eager values only and is left out)."""
    import onnxscript

    _register_onnx_schema()
    opset = onnxscript.values.Opset(DOMAIN, OPSET)

    def ditac(x, theta, B, table, a: float, b: float, tess: int, zero_boundary: int, lut_size: int):
        return opset.DiTAC(
            x,
            theta,
            B,
            a=a,
            b=b,
            tess=tess,
            zero_boundary=zero_boundary,
            basis="explicit",
            variant="ditac",
            lut_size=lut_size,
            interpolation="nearest",
        )

    return ditac


class _DitacFunction(torch.autograd.Function):
    """The TorchScript exporter's form: ``symbolic`` writes the DiTAC node."""

    @staticmethod
    def forward(ctx, x, theta, B, table, a, b, tess, zero_boundary, lut_size):
        return _eval_forward(x, table, a, b)

    @staticmethod
    def symbolic(g, x, theta, B, table, a, b, tess, zero_boundary, lut_size):
        return g.op(
            f"{DOMAIN}::DiTAC",
            x,
            theta,
            B,
            a_f=a,
            b_f=b,
            tess_i=tess,
            zero_boundary_i=zero_boundary,
            basis_s="explicit",
            variant_s="ditac",
            lut_size_i=lut_size,
            interpolation_s="nearest",
        ).setType(x.type())


class _ExportDiTAC(nn.Module):
    """Stands in for one reference module during an export."""

    def __init__(self, layer: DitacLayer, table: "torch.Tensor", device, dynamo: bool):
        super().__init__()
        self.layer = layer
        self.dynamo = dynamo
        self.register_buffer("thetas", layer.theta.clone().to(device))
        self.register_buffer("B", layer.B.clone().to(device))
        self.register_buffer("table", table.to(device, torch.float32))

    def forward(self, x):
        L = self.layer
        args = (x, self.thetas, self.B, self.table, L.a, L.b, L.tess, L.zero_boundary, L.lut_size)
        if self.dynamo:
            return torch.ops.ditac_onnx.ditac(*args)
        return _DitacFunction.apply(*args)


def _table_of(m: nn.Module, layer: DitacLayer) -> "torch.Tensor":
    """The module's eval table (``lingrid_t``) when it has one, else the identity warp: the values the
    exporter traces with only (the ONNX node builds its own table from θ and B)."""
    t = getattr(m, "lingrid_t", None)
    if isinstance(t, torch.Tensor) and t.numel() == layer.lut_size:
        return t.detach().reshape(-1).to("cpu", torch.float32)
    return torch.linspace(0.0, 1.0, layer.lut_size)


def _set_submodule(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    parent._modules[name] = new


@contextlib.contextmanager
def _swapped(model: nn.Module, found, dynamo: bool) -> Iterator[None]:
    """Swaps the authors' DiTAC modules for export stand-ins (ours export as they are) and puts the
    model in eval mode; restores both."""
    training = {m: m.training for m in model.modules()}
    done: list[tuple[str, nn.Module]] = []
    try:
        for path, m, layer in found:
            if isinstance(m, DiTAC):
                # Its eval table, for the values traced (tracing may run on fake tensors).
                m.prep_for_eval()
                continue
            device = m.thetas.device
            _set_submodule(model, path, _ExportDiTAC(layer, _table_of(m, layer), device, dynamo))
            done.append((path, m))
        # The stand-ins are in place, so the reference modules' own train(False) (which rebuilds
        # their table on CUDA) is never called.
        for m in model.modules():
            m.training = False
        yield
    finally:
        for path, m in reversed(done):
            _set_submodule(model, path, m)
        for m, flag in training.items():
            m.training = flag


def _tensors(args) -> list["torch.Tensor"]:
    return [a for a in args if isinstance(a, torch.Tensor)]


def export(
    model: nn.Module,
    args,
    path: str | os.PathLike,
    *,
    dynamo: bool = True,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_batch: bool = True,
    opset_version: int | None = None,
    **export_kwargs,
) -> list[DitacLayer]:
    """Exports ``model`` (with example inputs ``args``) to ``path``: one self-contained ONNX file in
    which each reference DiTAC module is one ``ai.ditac::DiTAC`` node with its own θ and B.

    ``dynamo=True`` is PyTorch's default exporter (torch.export + onnxscript); ``dynamo=False`` the
    TorchScript one, where this torch still has it. With ``dynamic_batch`` (default) every input's
    and output's first axis is the named dim ``"batch"`` (give a batch larger than 1). The model is
    left as it was (modules, parameters and train/eval flags). Other keyword arguments go to
    ``torch.onnx.export``. Returns the exported DiTAC layers.
    """
    args = tuple(args) if isinstance(args, (tuple, list)) else (args,)
    if not _tensors(args):
        raise ValueError("args: expected the example inputs (at least one tensor)")
    found = find_ditac_modules(model)
    if not found:
        raise ValueError(
            "no DiTAC module in the model (recognised by structure: thetas, tess, a, b and T.params.B)"
        )
    for key in ("f", "external_data", "custom_translation_table", "dynamic_shapes", "dynamic_axes"):
        if key in export_kwargs:
            raise TypeError(f"export() sets {key} itself")
    path = os.fspath(path)
    n_in = len(args)
    if input_names is None:
        input_names = ["x"] if n_in == 1 else [f"x{i}" for i in range(n_in)]
    with _swapped(model, found, dynamo):
        with torch.no_grad():
            out = model(*args)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        if output_names is None:
            output_names = ["y"] if len(outs) == 1 else [f"y{i}" for i in range(len(outs))]
        common = dict(
            input_names=list(input_names),
            output_names=list(output_names),
            opset_version=opset_version,
            **export_kwargs,
        )
        if dynamo:
            dyn = None
            if dynamic_batch:
                batch = torch.export.Dim(BATCH)
                dyn = tuple({0: batch} if isinstance(a, torch.Tensor) and a.dim() > 0 else None for a in args)
            program = torch.onnx.export(
                model,
                args,
                dynamo=True,
                dynamic_shapes=dyn,
                custom_translation_table={torch.ops.ditac_onnx.ditac.default: _onnx_translation()},
                **common,
            )
            proto = program.model_proto
        else:
            import io

            axes = None
            if dynamic_batch:
                axes = {n: {0: BATCH} for n in list(input_names) + list(output_names)}
            buf = io.BytesIO()
            torch.onnx.export(
                model,
                args,
                buf,
                dynamo=False,
                dynamic_axes=axes,
                custom_opsets={DOMAIN: OPSET},
                **common,
            )
            import onnx

            proto = onnx.load_from_string(buf.getvalue())
    layers = [layer for _, _, layer in found]
    _finish(proto, layers, path)
    return layers


def _finish(proto, layers: list[DitacLayer], path: str) -> None:
    """Checks the exported graph (one DiTAC node per module, with that module's θ and B), gives each
    node its own θ and B initializers and the module's name, and writes one self-contained file."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    g = proto.graph
    inits = {t.name: t for t in g.initializer}
    for t in g.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            raise RuntimeError(f"initializer {t.name!r} was written as external data")
    nodes = [n for n in g.node if n.domain == DOMAIN and n.op_type == "DiTAC"]
    if len(nodes) != len(layers):
        raise RuntimeError(
            f"the exporter wrote {len(nodes)} DiTAC nodes for {len(layers)} DiTAC modules: "
            "a module must be called once per forward"
        )
    uses: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1

    def values(name: str) -> np.ndarray:
        if name in inits:
            return numpy_helper.to_array(inits[name])
        for n in g.node:  # a Constant the exporter folded θ or B into
            if n.op_type == "Constant" and n.output and n.output[0] == name:
                return numpy_helper.to_array(n.attribute[0].t)
        raise RuntimeError(f"DiTAC input {name!r} is not a constant: θ and B must be initializers")

    taken = {t.name for t in g.initializer} | {o for n in g.node for o in n.output}
    names = {n.name for n in g.node}
    remaining = list(layers)
    for node in nodes:
        theta, B = values(node.input[1]), values(node.input[2])
        same = [
            L
            for L in remaining
            if theta.shape == (L.d,)
            and np.array_equal(theta, L.theta.numpy())
            and np.array_equal(B, L.B.numpy())
        ]
        # Equal θ and B in two modules: prefer the one the initializer is named after.
        named = [L for L in same if node.input[1].startswith(L.path + ".")]
        match = (named or same or [None])[0]
        if match is None:
            raise RuntimeError(f"DiTAC node {node.name!r}: its θ and B are not those of any DiTAC module")
        remaining.remove(match)
        # Own initializers, named after the module (the exporter may share equal tensors).
        for k, (suffix, arr) in ((1, ("thetas", match.theta)), (2, ("B", match.B))):
            want = f"{match.path}.{suffix}"
            cur = node.input[k]
            if cur == want and uses.get(cur, 0) == 1 and cur in inits:
                continue
            name = want
            i = 1
            while name in taken:
                name = f"{want}_{i}"
                i += 1
            taken.add(name)
            g.initializer.append(numpy_helper.from_array(arr.numpy(), name))
            node.input[k] = name
        if match.path not in names:
            names.discard(node.name)
            node.name = match.path
            names.add(node.name)
        del node.attribute[:]
        node.attribute.extend(onnx.helper.make_attribute(k, v) for k, v in match.attributes().items())
    # Drop what no node reads any more (the stand-ins' tables, replaced θ/B).
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    if not any(o.domain == DOMAIN for o in proto.opset_import):
        proto.opset_import.append(onnx.helper.make_opsetid(DOMAIN, OPSET))
    size = proto.ByteSize()
    if size > PROTOBUF_LIMIT:
        raise RuntimeError(
            f"the exported model is {size} bytes: one ONNX file holds at most 2 GiB "
            "(export without ditac_onnx, keeping the weights in external data, and use `ditac patch`)"
        )
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(proto.SerializeToString())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
