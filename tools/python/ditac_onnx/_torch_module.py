"""``DiTAC``: a drop-in for the authors' ``ditac.DiTAC`` module that trains anywhere PyTorch runs.

The same constructor, attributes, parameter ``thetas`` [1, d] and state_dict keys as theirs (so their
checkpoints load), the same forward (the table of 2048 nodes, nearest node), the same gradients (the
straight-through x-gradient and their θ-gradient, regulariser included), computed from the tables of
the project's Rust core (``libditac.so``'s C API, ``_capi``) — nothing to compile. Also: B is a buffer
of the state_dict (θ never travels without its basis), ``basis`` may be a tensor, and the module builds
on the CPU as well as on CUDA.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import nn

from . import _capi

STEPS = 2048
REGULARISERS = ("reference", "intended", "none")


def _norm_constants(o_min: float, o_max: float, t_min: float, t_max: float) -> tuple[float, float]:
    """The reference's ``norm_data`` constants (computed in Python double): y = (x + add)·mul."""
    add = -(o_min - t_min * (o_max - o_min) / (t_max - t_min))
    mul = (t_max - t_min) / (o_max - o_min)
    return add, mul


def _phi(x: torch.Tensor) -> torch.Tensor:
    """Φ(x), the standard normal CDF."""
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _qr_is_machine_dependent(tess: int) -> bool:
    # ditac.md §3: with a zero boundary, the reference's qr B depends on the BLAS at tess 6 and ≥ 20.
    return tess == 6 or tess >= 20


class _Tables:
    """T̂ [n], dT̂/du [n] and dT̂/dθ [n, d] of one θ (float32, on the module's device)."""

    __slots__ = ("t", "dt", "dtheta", "key")

    def __init__(self, t, dt, dtheta, key):
        self.t, self.dt, self.dtheta, self.key = t, dt, dtheta, key


class _TableWarp(torch.autograd.Function):
    """T̂ at the nearest table node of u, with the reference's gradients (ditac.md §6, §8): for u the
    exact dT̂/du at that node (straight-through), for θ the sum of dT̂/dθ at the nodes, to which the
    module's regulariser adds its term (once per call, as the reference does)."""

    @staticmethod
    def forward(ctx, u, thetas, module):
        tables = module._grad_tables(u.device)
        idx = module._node_index(u)
        ctx.save_for_backward(idx, thetas)
        ctx.tables = tables
        ctx.module = module
        return tables.t[idx]

    @staticmethod
    def backward(ctx, grad):
        idx, thetas = ctx.saved_tensors
        tables = ctx.tables
        grad_u = grad_theta = None
        if ctx.needs_input_grad[0]:
            grad_u = grad * tables.dt[idx]
        if ctx.needs_input_grad[1]:
            n = tables.t.numel()
            # Σ_elements grad·dT̂/dθ(node): the gradient per node first (in double), then one product.
            per_node = torch.zeros(n, dtype=torch.float64, device=grad.device)
            per_node.index_add_(0, idx.reshape(-1), grad.reshape(-1).to(torch.float64))
            data = (per_node @ tables.dtheta.to(torch.float64)).to(torch.float32).reshape(thetas.shape)
            grad_theta = ctx.module._regularised(data, thetas)
        return grad_u, grad_theta, None


class DiTAC(nn.Module):
    """DiTAC(x) = T_θ(x)·Φ(x) inside [a, b], x·Φ(x) outside: the authors' activation, trainable.

    Arguments, in the authors' order and with their defaults: ``cpab_act_type`` ("gelu_cpab", the only
    type they implement), ``tess`` (cells; d = tess − 1 parameters), ``a``, ``b`` (the warped interval),
    ``basis`` ("qr", "rref", "sparse", or a tensor B [2·tess, d]: the basis a θ was trained in),
    ``lambda_smooth``, ``lambda_smooth_init``, ``lambda_var``, ``lambda_var_init`` (the regulariser's and
    the initial θ's priors) and ``lambda_reg_loss`` (the regulariser's weight). Keyword only:
    ``regulariser`` — "reference" (default: what the authors' code applies, θ's gradient
    d·g + 2λ·θ⊙colsum(P)), "intended" (g + 2λ·Pθ, the gradient of λ·θᵀPθ) or "none" (g) — and
    ``steps`` (table nodes, 2048 as theirs).

    θ is drawn from the authors' prior with torch's generator, as theirs is (on the CPU the same seed
    gives their θ). The input may have any shape and floating dtype: the math runs in float32 (autocast
    is turned off inside) and the result has the input's dtype.
    """

    def __init__(
        self,
        cpab_act_type: str = "gelu_cpab",
        tess: int = 10,
        a: float = -0.5,
        b: float = 2.0,
        basis="qr",
        lambda_smooth: float = 5.0,
        lambda_smooth_init: float = 5.0,
        lambda_var: float = 2.0,
        lambda_var_init: float = 2.0,
        lambda_reg_loss: float = 0.1,
        *,
        regulariser: str = "reference",
        steps: int = STEPS,
    ):
        super().__init__()
        if cpab_act_type == "leaky_cpab":
            raise NotImplementedError("cpab_act_type 'leaky_cpab' is not implemented (nor is it by the authors)")
        if cpab_act_type != "gelu_cpab":
            raise ValueError(f"cpab_act_type {cpab_act_type!r}: expected 'gelu_cpab'")
        if isinstance(tess, bool) or not isinstance(tess, int) or tess < 2:
            raise ValueError(f"tess = {tess!r}: expected an int ≥ 2")
        a, b = float(a), float(b)
        if not (math.isfinite(a) and math.isfinite(b) and a < b):
            raise ValueError(f"a = {a}, b = {b}: expected finite a < b")
        if regulariser not in REGULARISERS:
            raise ValueError(f"regulariser {regulariser!r}: expected one of {REGULARISERS}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
            raise ValueError(f"steps = {steps!r}: expected an int ≥ 2")
        self.cpab_act_type = cpab_act_type
        self.tess, self.a, self.b = tess, a, b
        self.zero_bndry = True
        self.d = tess - 1
        self.steps = steps
        self.lambda_smooth, self.lambda_var = float(lambda_smooth), float(lambda_var)
        self.lambda_smooth_init, self.lambda_var_init = float(lambda_smooth_init), float(lambda_var_init)
        self.lambda_reg_loss = float(lambda_reg_loss)
        self.regulariser = regulariser
        if isinstance(basis, str):
            if basis == "svd":
                raise ValueError(
                    "basis 'svd': LAPACK's SVD frame cannot be rebuilt reliably; pass the training run's B "
                    "as a tensor (basis=B, [2·tess, tess − 1])"
                )
            B = torch.from_numpy(_capi.basis(tess, basis))
            self.basis = basis
        else:
            B = torch.as_tensor(np.asarray(basis.detach().cpu() if isinstance(basis, torch.Tensor) else basis))
            B = B.to(torch.float32).contiguous()
            if tuple(B.shape) != (2 * tess, self.d):
                raise ValueError(f"basis has shape {list(B.shape)}: expected [{2 * tess}, {self.d}] (2·tess × d)")
            self.basis = "explicit"
        # The prior checks B (L·B ≈ 0) on the way.
        P = _capi.precision_matrix(B.numpy(), tess, self.lambda_smooth, self.lambda_var)
        cov = _capi.init_covariance(B.numpy(), tess, self.lambda_smooth_init, self.lambda_var_init)
        # difw's sample_transformation_with_prior: MultivariateNormal(0, Σ_init).sample((1,)) in float32.
        cov = torch.from_numpy(cov).to(torch.float32)
        theta = torch.distributions.MultivariateNormal(torch.zeros(self.d), cov).sample((1,))
        self.thetas = nn.Parameter(theta.reshape(1, self.d))
        self.precision_mat = nn.Parameter(torch.from_numpy(P).to(torch.float32), requires_grad=False)
        self.register_buffer("B", B)
        self.lingrid_t = None
        self._train_cache: _Tables | None = None
        self._eval_key = None

    # -- the authors' structure ------------------------------------------------------------------

    @property
    def T(self):
        """The authors' transformer as far as readers of a trained module use it: ``T.params`` with
        ``B``, ``nc``, ``xmin``, ``xmax``."""

        class _Params:
            pass

        class _T:
            pass

        p = _Params()
        p.B, p.nc, p.xmin, p.xmax, p.D, p.d = self.B, self.tess, 0, 1, 2 * self.tess, self.d
        t = _T()
        t.params = p
        return t

    def extra_repr(self) -> str:
        return (
            f"tess={self.tess}, a={self.a}, b={self.b}, basis={self.basis!r}, steps={self.steps}, "
            f"regulariser={self.regulariser!r}"
        )

    def train(self, mode: bool = True):
        super().train(mode)
        if not mode:
            self.prep_for_eval()
        return self

    @torch.no_grad()
    def prep_for_eval(self):
        """Builds the eval table ``lingrid_t`` [1, steps] (T̂ at the nodes) from the current θ, as the
        authors' ``train(False)`` does."""
        t = self._tables(with_grad=False)[0]
        self.lingrid_t = t.to(self.thetas.device).reshape(1, -1)
        self._eval_key = self._key()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        # The authors' checkpoints have no B: it stays the one this module was built with.
        has_b = prefix + "B" in state_dict
        start = len(missing_keys)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
        if not has_b:
            missing_keys[start:] = [k for k in missing_keys[start:] if k != prefix + "B"]
            if (
                prefix + "thetas" in state_dict
                and self.basis == "qr"
                and _qr_is_machine_dependent(self.tess)
                and torch.equal(self.B.detach().cpu(), torch.from_numpy(_capi.basis(self.tess, "qr")))
            ):
                warnings.warn(
                    f"{prefix}thetas loaded without a basis: for tess {self.tess} the authors' qr basis "
                    "depends on the training machine's BLAS, so θ may mean another warp here; build the "
                    "module with basis=<that machine's T.params.B>",
                    stacklevel=2,
                )

    # -- tables -----------------------------------------------------------------------------------

    def _key(self):
        th, B = self.thetas, self.B
        return (th.data_ptr(), th._version, th.device, B.data_ptr(), B._version, self.steps)

    def _tables(self, with_grad: bool):
        """(T̂, dT̂/du, dT̂/dθ) on the CPU for the current θ and B, from the Rust core."""
        theta = self.thetas.detach().to("cpu", torch.float32).contiguous().reshape(-1)
        B = self.B.detach().to("cpu", torch.float32).contiguous()
        if theta.numel() != self.d:
            raise ValueError(f"thetas has {theta.numel()} values: tess {self.tess} expects [1, {self.d}]")
        n = self.steps
        t = torch.empty(n, dtype=torch.float32)
        dt = dth = None
        if with_grad:
            dt = torch.empty(n, dtype=torch.float32)
            dth = torch.empty(n, self.d, dtype=torch.float32)
        _capi.tables_into(
            self.tess, True, B.data_ptr(), self.d, theta.data_ptr(), n, t.data_ptr(),
            dt.data_ptr() if with_grad else None, dth.data_ptr() if with_grad else None,
        )
        return t, dt, dth

    def _grad_tables(self, device) -> _Tables:
        key = self._key()
        cache = self._train_cache
        if cache is None or cache.key != key or cache.t.device != device:
            t, dt, dth = self._tables(with_grad=True)
            cache = _Tables(t.to(device), dt.to(device), dth.to(device), key)
            self._train_cache = cache
        return cache

    def _node_index(self, u: torch.Tensor) -> torch.Tensor:
        # Nearest node, ties to even (torch.round), as the reference; clamped (the reference indexes
        # out of bounds when 0 ∉ [a, b]; those elements' results are discarded anyway).
        return torch.round(u * (self.steps - 1)).to(torch.int64).clamp_(0, self.steps - 1)

    def _regularised(self, data: torch.Tensor, thetas: torch.Tensor) -> torch.Tensor:
        """θ's gradient from the data term ``data`` [1, d], with the regulariser's term (ditac.md §8)."""
        lam = self.lambda_reg_loss
        P = self.precision_mat.detach().to(data.device, torch.float32)
        th = thetas.detach()
        if self.regulariser == "reference":
            # Their backward returns grad + λ·2·P.mul(θ): an elementwise product that broadcasts to
            # [d, d], which autograd sums back to θ's [1, d] — d·g + 2λ·θ⊙colsum(P).
            return (data + lam * 2 * P.mul(th)).sum(0, keepdim=True)
        if self.regulariser == "intended":
            return data + 2 * lam * (th @ (0.5 * (P + P.T)))
        return data

    def regularisation_loss(self) -> torch.Tensor:
        """λ·θᵀPθ (with the graph to θ): the paper's prior term, for logging. The regulariser's gradient
        already enters through the backward (``regulariser``); adding this to the loss would count it
        twice."""
        th = self.thetas
        return self.lambda_reg_loss * (th @ self.precision_mat @ th.T).reshape(())

    # -- forward ----------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_floating_point(x):
            raise TypeError(f"DiTAC: expected a floating-point input, got {x.dtype}")
        if torch.onnx.is_in_onnx_export():
            return self._export_forward(x)
        dtype = x.dtype
        with torch.autocast(device_type=x.device.type, enabled=False):
            y = self._gelu_cpab(x.to(torch.float32))
        return y.to(dtype)

    def _gelu_cpab(self, x: torch.Tensor) -> torch.Tensor:
        """The reference's ``gelu_cpab``, op by op (ditac.md §2, §6)."""
        shape = x.shape
        data = x.reshape(-1)
        a, b = self.a, self.b
        inside = (data >= a) & (data <= b)
        x_m = torch.where(inside, data, torch.zeros_like(data))
        add_in, mul_in = _norm_constants(a, b, 0.0, 1.0)
        u = (x_m + add_in) * mul_in
        if self.training:
            t = _TableWarp.apply(u, self.thetas, self)
        else:
            if self.lingrid_t is None or self._eval_key != self._key():
                # Built by eval(); rebuilt here when θ or B changed since (the authors' table would go
                # stale), or when the module was never put in eval mode through train(False).
                self.prep_for_eval()
            t = self.lingrid_t.reshape(-1).to(u.device)[self._node_index(u)]
        add_out, mul_out = _norm_constants(0.0, 1.0, a, b)
        y = (t + add_out) * mul_out
        out = torch.where(inside, y, data)
        return (out * _phi(data)).reshape(shape)

    def _export_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Under torch.onnx.export: one ``ai.ditac::DiTAC`` node with θ [d] and B."""
        from . import torch as exporter

        if self.lingrid_t is None:
            # Tracing may run on fake tensors, which have no data for the tables: export() builds
            # them before it traces.
            raise RuntimeError("DiTAC: export with ditac_onnx.torch.export (it prepares the module)")
        args = (
            x, self.thetas.reshape(-1), self.B, self.lingrid_t.reshape(-1).to(x.device),
            self.a, self.b, self.tess, 1, self.steps,
        )
        if torch.jit.is_tracing():
            return exporter._DitacFunction.apply(*args)
        return torch.ops.ditac_onnx.ditac(*args)
