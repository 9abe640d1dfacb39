//! The kernels, in safe Rust over the math core: attributes are read and validated once at kernel
//! creation; the warps (one `Activation` per θ/table row) are built at creation when θ (or the
//! table, and B) is a constant initializer, otherwise at run time and cached by content; the
//! elementwise work is split into fixed chunks run on ORT's intra-op thread pool.

use std::sync::{Arc, Mutex, MutexGuard};

use half::f16;
use half::slice::HalfFloatSliceExt;

use super::ffi::{KernelContext, KernelInfo, TensorView};
use super::{Elem, Ep, OpKind, OpSpec, PResult, PluginError};
use crate::core::kernels::{
    table_backward, table_forward_channels, Channels, GradTables, TableKernel,
};
use crate::core::real::Real;
use crate::core::{basis, channel_layout, Activation, Attrs, Basis, BasisKind};

/// Elements per task of the thread pool (forward; the backward may use larger chunks, see
/// [`GRAD_BUDGET`]). The partition depends on shapes only, never on the thread count, so results
/// (the dθ sums included) are identical with any number of threads.
pub const CHUNK: usize = 1 << 16;
/// Upper bound on the f64 partial sums of dθ held at once (chunks × C × d).
pub const GRAD_BUDGET: usize = 1 << 20;
/// Per-channel rows with fewer contiguous elements than this go through the one-pass channel
/// kernel (every element finds its row); longer runs call the one-row kernel run by run.
const SHORT_RUN: usize = 256;
/// float16 tensors are computed in f32 through stack buffers of this many elements.
const CONV_BLOCK: usize = 1024;

/// A kernel instance: immutable after creation except for its content-keyed cache.
pub trait Kernel: Send + Sync {
    fn compute(&self, ctx: &KernelContext) -> PResult<()>;
}

/// A tensor element type `T` and the precision it is computed in.
pub trait Element: Copy + Send + Sync + 'static {
    type R: Real;
    fn forward(act: &Activation<Self::R>, x: &[Self], y: &mut [Self]);
    fn backward(
        act: &Activation<Self::R>,
        dy: &[Self],
        x: &[Self],
        dx: &mut [Self],
        dtheta: &mut [f64],
    );
    /// The one-pass per-channel forward through concatenated f32 tables (false: not available
    /// for this type).
    fn forward_tables(k: &TableKernel, n: usize, ch: Channels, x: &[Self], y: &mut [Self]) -> bool;
    /// The one-pass per-channel backward (dθ: C·d sums).
    #[allow(clippy::too_many_arguments)]
    fn backward_tables(
        k: &TableKernel,
        g: &GradTables,
        n: usize,
        ch: Channels,
        dy: &[Self],
        x: &[Self],
        dx: &mut [Self],
        dtheta: &mut [f64],
    ) -> bool;
}

impl Element for f32 {
    type R = f32;
    fn forward(act: &Activation<f32>, x: &[f32], y: &mut [f32]) {
        act.forward(x, y)
    }
    fn backward(act: &Activation<f32>, dy: &[f32], x: &[f32], dx: &mut [f32], dt: &mut [f64]) {
        act.backward(dy, x, dx, dt)
    }
    fn forward_tables(k: &TableKernel, n: usize, ch: Channels, x: &[f32], y: &mut [f32]) -> bool {
        table_forward_channels(k, n, ch, x, y);
        true
    }
    fn backward_tables(
        k: &TableKernel,
        g: &GradTables,
        n: usize,
        ch: Channels,
        dy: &[f32],
        x: &[f32],
        dx: &mut [f32],
        dtheta: &mut [f64],
    ) -> bool {
        table_backward(k, g, n, ch, dy, x, dx, dtheta);
        true
    }
}

impl Element for f64 {
    type R = f64;
    fn forward(act: &Activation<f64>, x: &[f64], y: &mut [f64]) {
        act.forward(x, y)
    }
    fn backward(act: &Activation<f64>, dy: &[f64], x: &[f64], dx: &mut [f64], dt: &mut [f64]) {
        act.backward(dy, x, dx, dt)
    }
    fn forward_tables(_: &TableKernel, _: usize, _: Channels, _: &[f64], _: &mut [f64]) -> bool {
        false
    }
    fn backward_tables(
        _: &TableKernel,
        _: &GradTables,
        _: usize,
        _: Channels,
        _: &[f64],
        _: &[f64],
        _: &mut [f64],
        _: &mut [f64],
    ) -> bool {
        false
    }
}

impl Element for f16 {
    type R = f32;
    fn forward(act: &Activation<f32>, x: &[f16], y: &mut [f16]) {
        let mut xb = [0f32; CONV_BLOCK];
        let mut yb = [0f32; CONV_BLOCK];
        for (xc, yc) in x.chunks(CONV_BLOCK).zip(y.chunks_mut(CONV_BLOCK)) {
            let n = xc.len();
            xc.convert_to_f32_slice(&mut xb[..n]);
            act.forward(&xb[..n], &mut yb[..n]);
            yc.convert_from_f32_slice(&yb[..n]);
        }
    }
    fn backward(act: &Activation<f32>, dy: &[f16], x: &[f16], dx: &mut [f16], dt: &mut [f64]) {
        let mut gb = [0f32; CONV_BLOCK];
        let mut xb = [0f32; CONV_BLOCK];
        let mut ob = [0f32; CONV_BLOCK];
        for ((gc, xc), oc) in dy
            .chunks(CONV_BLOCK)
            .zip(x.chunks(CONV_BLOCK))
            .zip(dx.chunks_mut(CONV_BLOCK))
        {
            let n = xc.len();
            gc.convert_to_f32_slice(&mut gb[..n]);
            xc.convert_to_f32_slice(&mut xb[..n]);
            act.backward(&gb[..n], &xb[..n], &mut ob[..n], dt);
            oc.convert_from_f32_slice(&ob[..n]);
        }
    }
    fn forward_tables(k: &TableKernel, n: usize, ch: Channels, x: &[f16], y: &mut [f16]) -> bool {
        let mut xb = [0f32; CONV_BLOCK];
        let mut yb = [0f32; CONV_BLOCK];
        let mut start = ch.start;
        for (xc, yc) in x.chunks(CONV_BLOCK).zip(y.chunks_mut(CONV_BLOCK)) {
            let m = xc.len();
            xc.convert_to_f32_slice(&mut xb[..m]);
            table_forward_channels(k, n, Channels { start, ..ch }, &xb[..m], &mut yb[..m]);
            yc.convert_from_f32_slice(&yb[..m]);
            start += m;
        }
        true
    }
    fn backward_tables(
        k: &TableKernel,
        g: &GradTables,
        n: usize,
        ch: Channels,
        dy: &[f16],
        x: &[f16],
        dx: &mut [f16],
        dtheta: &mut [f64],
    ) -> bool {
        let mut gb = [0f32; CONV_BLOCK];
        let mut xb = [0f32; CONV_BLOCK];
        let mut ob = [0f32; CONV_BLOCK];
        let mut start = ch.start;
        for ((gc, xc), oc) in dy
            .chunks(CONV_BLOCK)
            .zip(x.chunks(CONV_BLOCK))
            .zip(dx.chunks_mut(CONV_BLOCK))
        {
            let m = xc.len();
            gc.convert_to_f32_slice(&mut gb[..m]);
            xc.convert_to_f32_slice(&mut xb[..m]);
            let c = Channels { start, ..ch };
            table_backward(k, g, n, c, &gb[..m], &xb[..m], &mut ob[..m], dtheta);
            oc.convert_from_f32_slice(&ob[..m]);
            start += m;
        }
        true
    }
}

/// Creates the kernel of `spec` for the node described by `info`.
pub fn create(spec: OpSpec, info: &KernelInfo) -> PResult<Box<dyn Kernel>> {
    let prefix = format!("ai.ditac.{} node '{}'", spec.name(), info.node_name());
    // A DITAC_ISA that names no kernel path is a configuration error, reported at creation.
    crate::core::kernels::Isa::env_cap().map_err(|e| PluginError::invalid(e).in_node(&prefix))?;
    let k: PResult<Box<dyn Kernel>> = match (spec.ep, spec.elem) {
        (Ep::Cuda, _) => super::cuda::create(spec, info, &prefix),
        (Ep::Cpu, Elem::F32) => {
            ActKernel::<f32>::new(spec.kind, info, &prefix).map(|k| Box::new(k) as _)
        }
        (Ep::Cpu, Elem::F16) => {
            ActKernel::<f16>::new(spec.kind, info, &prefix).map(|k| Box::new(k) as _)
        }
        (Ep::Cpu, Elem::F64) => {
            ActKernel::<f64>::new(spec.kind, info, &prefix).map(|k| Box::new(k) as _)
        }
        (Ep::Cpu, Elem::BF16) => Err(PluginError::fail("bfloat16 is not a CPU type here")),
    };
    k.map_err(|e| e.in_node(&prefix))
}

fn basis_name(k: BasisKind) -> &'static str {
    match k {
        BasisKind::Qr => "qr",
        BasisKind::Rref => "rref",
        BasisKind::Sparse => "sparse",
        BasisKind::Explicit => "explicit",
    }
}

/// Reads the attributes the op uses (missing → ops.md default) and validates them.
pub fn read_attrs(info: &KernelInfo, kind: OpKind) -> PResult<Attrs> {
    let mut a = Attrs::default();
    if let Some(v) = info.attr_f32("a")? {
        a.a = v;
    }
    if let Some(v) = info.attr_f32("b")? {
        a.b = v;
    }
    if let Some(v) = info.attr_f32("alpha")? {
        a.alpha = v;
    }
    if let Some(v) = info.attr_string("variant")? {
        a.variant = v.parse()?;
    }
    if let Some(v) = info.attr_string("interpolation")? {
        a.interpolation = v.parse()?;
    }
    if let Some(v) = info.attr_i64("channel_axis")? {
        a.channel_axis = v;
    }
    if kind == OpKind::Lut {
        a.validate_interval()?;
        return Ok(a);
    }
    if let Some(v) = info.attr_i64("tess")? {
        a.tess = v;
    }
    if let Some(v) = info.attr_i64("zero_boundary")? {
        a.zero_boundary = v;
    }
    if let Some(v) = info.attr_i64("lut_size")? {
        a.lut_size = v;
    }
    if let Some(v) = info.attr_string("basis")? {
        a.basis = v.parse()?;
    }
    a.validate()?;
    Ok(a)
}

/// The warps of one θ (or table) tensor: one per row.
pub(crate) struct Warps<R: Real> {
    /// θ's (or the table's) shape: [n] (shared) or [C, n] (per channel).
    pub(crate) shape: Vec<usize>,
    /// C for a per-channel tensor.
    pub(crate) rows: Option<usize>,
    pub(crate) acts: Vec<Activation<R>>,
    /// Every row's f32 tables one after the other (per-channel θ or table in float32 precision).
    joined: Option<Joined>,
}

/// The tables of C rows, one after the other, for the one-pass channel kernels.
struct Joined {
    n: usize,
    xt: Vec<f32>,
    pairs: Vec<f32>,
    dt: Vec<f32>,
    xdt: Vec<f32>,
    dtheta: Vec<f32>,
    d: usize,
}

impl<R: Real> Warps<R> {
    fn join(acts: &[Activation<R>]) -> Option<Joined> {
        if acts.len() < 2 {
            return None;
        }
        let (k0, g0) = acts[0].table_kernel()?;
        let n = k0.xt.len();
        let d = g0.map_or(0, |g| g.d);
        let mut j = Joined {
            n,
            xt: Vec::with_capacity(n * acts.len()),
            pairs: Vec::with_capacity(2 * n * acts.len()),
            dt: Vec::new(),
            xdt: Vec::new(),
            dtheta: Vec::new(),
            d,
        };
        for a in acts {
            let (k, g) = a.table_kernel()?;
            if k.xt.len() != n {
                return None;
            }
            j.xt.extend_from_slice(k.xt);
            j.pairs.extend_from_slice(k.pairs);
            if let Some(g) = g {
                j.dt.extend_from_slice(g.dt);
                j.xdt.extend_from_slice(g.xdt);
                j.dtheta.extend_from_slice(g.dtheta);
            }
        }
        Some(j)
    }

    /// The joined kernel (row 0's parameters, every row's nodes) and its gradient tables.
    fn joined_kernel(&self) -> Option<(TableKernel<'_>, Option<GradTables<'_>>, usize)> {
        let j = self.joined.as_ref()?;
        let (mut k, g) = self.acts[0].table_kernel()?;
        k.xt = &j.xt;
        k.pairs = &j.pairs;
        let g = g.map(|g| GradTables {
            dt: &j.dt,
            xdt: &j.xdt,
            dtheta: &j.dtheta,
            d: j.d,
            mul_out: g.mul_out,
        });
        Some((k, g, j.n))
    }
}

type Cache<R> = Mutex<Option<(Vec<u32>, Arc<Warps<R>>)>>;

/// `DiTAC`, `DiTACLut` or `DiTACGrad` for one element type.
pub(crate) struct ActKernel<E: Element> {
    prefix: String,
    kind: OpKind,
    attrs: Attrs,
    x_idx: usize,
    dy_idx: Option<usize>,
    p_idx: usize,
    b_idx: Option<usize>,
    /// The basis when known at creation (a named construction, or a constant explicit B).
    basis: Option<Arc<Basis>>,
    /// The warps when θ (or the table) is a constant initializer.
    fixed: Option<Arc<Warps<E::R>>>,
    /// The last run-time warps, keyed on the bits and shapes of θ (or the table) and B.
    cache: Cache<E::R>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn fmt_shape(s: &[usize]) -> String {
    let v: Vec<String> = s.iter().map(|d| d.to_string()).collect();
    format!("[{}]", v.join(", "))
}

impl<E: Element> ActKernel<E> {
    pub(crate) fn new(kind: OpKind, info: &KernelInfo, prefix: &str) -> PResult<Self> {
        let attrs = read_attrs(info, kind)?;
        let (x_idx, dy_idx, p_idx, b_idx) = match kind {
            OpKind::Ditac => (0, None, 1, Some(2)),
            OpKind::Lut => (0, None, 1, None),
            OpKind::Grad => (1, Some(0), 2, Some(3)),
        };
        let mut basis = None;
        if let Some(bi) = b_idx {
            let b_const = info.constant_input_f32(bi)?;
            if attrs.basis == BasisKind::Explicit {
                if info.input_count()? <= bi {
                    return Err(Self::missing_b());
                }
                if let Some(b) = b_const {
                    basis = Some(Arc::new(explicit_basis(&attrs, &b.shape, &b.data)?));
                }
            } else {
                if b_const.is_some() {
                    return Err(Self::b_not_explicit(&attrs));
                }
                basis = Some(basis::build(
                    attrs.tess(),
                    attrs.zero_boundary(),
                    attrs.basis,
                )?);
            }
        }
        let mut k = ActKernel {
            prefix: prefix.to_string(),
            kind,
            attrs,
            x_idx,
            dy_idx,
            p_idx,
            b_idx,
            basis,
            fixed: None,
            cache: Mutex::new(None),
        };
        if let Some(p) = info.constant_input_f32(p_idx)? {
            if kind == OpKind::Lut || k.basis.is_some() {
                let w = k.build(&p.shape, &p.data, k.basis.as_deref())?;
                k.fixed = Some(Arc::new(w));
            }
        }
        Ok(k)
    }

    fn missing_b() -> PluginError {
        PluginError::invalid(
            "attribute 'basis' = \"explicit\": expected input 'B' (the basis, [2·tess, d]) to be given",
        )
    }

    fn b_not_explicit(attrs: &Attrs) -> PluginError {
        PluginError::invalid(format!(
            "input 'B' is given but attribute 'basis' = \"{}\": expected basis = \"explicit\" when B is given (or no input B)",
            basis_name(attrs.basis)
        ))
    }

    fn param_name(&self) -> &'static str {
        if self.kind == OpKind::Lut {
            "table"
        } else {
            "theta"
        }
    }

    /// One `Activation` per row of θ (or the table).
    fn build(&self, shape: &[usize], data: &[f32], basis: Option<&Basis>) -> PResult<Warps<E::R>> {
        let name = self.param_name();
        let expected = if self.kind == OpKind::Lut {
            "[n] or [C, n] (n ≥ 2 nodes)".to_string()
        } else {
            format!("[d] or [C, d] with d = {}", self.attrs.theta_len())
        };
        let (rows, n) = match shape.len() {
            1 => (None, shape[0]),
            2 => (Some(shape[0]), shape[1]),
            _ => {
                return Err(PluginError::invalid(format!(
                    "input '{name}' has shape {}: expected {expected}",
                    fmt_shape(shape)
                )))
            }
        };
        if rows == Some(0) {
            return Err(PluginError::invalid(format!(
                "input '{name}' has shape {}: expected {expected} with C ≥ 1",
                fmt_shape(shape)
            )));
        }
        let with_grad = self.kind == OpKind::Grad;
        let acts = (0..rows.unwrap_or(1))
            .map(|r| {
                let row = &data[r * n..(r + 1) * n];
                match basis {
                    Some(b) => Activation::<E::R>::from_theta(&self.attrs, b, row, with_grad),
                    None => Activation::<E::R>::from_table(&self.attrs, row),
                }
                .map_err(|e| {
                    let e = PluginError::from(e);
                    match rows {
                        Some(_) => PluginError::invalid(format!("{} (row {r})", e.msg)),
                        None => e,
                    }
                })
            })
            .collect::<PResult<Vec<_>>>()?;
        Ok(Warps {
            shape: shape.to_vec(),
            rows,
            joined: Warps::join(&acts),
            acts,
        })
    }

    /// Whether `w` are the warps built at creation (θ or the table a constant initializer).
    pub(crate) fn is_fixed(&self, w: &Arc<Warps<E::R>>) -> bool {
        self.fixed.as_ref().is_some_and(|f| Arc::ptr_eq(f, w))
    }

    pub(crate) fn kind(&self) -> OpKind {
        self.kind
    }

    /// Input indices: (X, dY).
    pub(crate) fn data_inputs(&self) -> (usize, Option<usize>) {
        (self.x_idx, self.dy_idx)
    }

    /// (C, inner) for X of `shape` with the warps `w`, checking that θ's (or the table's) rows
    /// match X's channels.
    pub(crate) fn layout(&self, shape: &[usize], w: &Warps<E::R>) -> PResult<(usize, usize)> {
        let n: usize = shape.iter().product();
        match w.rows {
            None => Ok((1, n)),
            Some(rows) => {
                let (_, c, inner) = channel_layout(shape, self.attrs.channel_axis)?;
                if rows != c {
                    return Err(PluginError::invalid(format!(
                        "input '{}' has {rows} rows: expected C = X.shape[channel_axis] = {c} (attribute 'channel_axis' = {}, X has shape {})",
                        self.param_name(),
                        self.attrs.channel_axis,
                        fmt_shape(shape)
                    )));
                }
                Ok((c, inner))
            }
        }
    }

    /// The warps for this run: constant, cached (same content), or built now.
    pub(crate) fn warps(&self, ctx: &KernelContext) -> PResult<Arc<Warps<E::R>>> {
        let b_in = match self.b_idx {
            Some(i) => ctx.input::<f32>(i)?,
            None => None,
        };
        if b_in.is_some() && self.attrs.basis != BasisKind::Explicit {
            return Err(Self::b_not_explicit(&self.attrs));
        }
        if let Some(w) = &self.fixed {
            return Ok(w.clone());
        }
        let p = ctx.input::<f32>(self.p_idx)?.ok_or_else(|| {
            PluginError::invalid(format!("input '{}' is missing", self.param_name()))
        })?;
        let key = cache_key(&p, b_in.as_ref());
        if let Some((k, w)) = &*lock(&self.cache) {
            if *k == key {
                return Ok(w.clone());
            }
        }
        let owned;
        let basis = match (self.kind, &self.basis) {
            (OpKind::Lut, _) => None,
            (_, Some(b)) => Some(&**b),
            (_, None) => {
                let b = b_in.as_ref().ok_or_else(Self::missing_b)?;
                owned = explicit_basis(&self.attrs, &b.shape, b.data)?;
                Some(&owned)
            }
        };
        let w = Arc::new(self.build(&p.shape, p.data, basis)?);
        *lock(&self.cache) = Some((key, w.clone()));
        Ok(w)
    }

    fn run(&self, ctx: &KernelContext) -> PResult<()> {
        let x = ctx
            .input::<E>(self.x_idx)?
            .ok_or_else(|| PluginError::invalid("input 'X' is missing"))?;
        let w = self.warps(ctx)?;
        let (c, inner) = self.layout(&x.shape, &w)?;
        match self.dy_idx {
            None => {
                let y = ctx.output::<E>(0, &x.shape)?;
                forward::<E>(ctx, &w, x.data, y, c, inner)
            }
            Some(gi) => {
                let dy = ctx
                    .input::<E>(gi)?
                    .ok_or_else(|| PluginError::invalid("input 'dY' is missing"))?;
                if dy.shape != x.shape {
                    return Err(PluginError::invalid(format!(
                        "input 'dY' has shape {}: expected the shape of X {}",
                        fmt_shape(&dy.shape),
                        fmt_shape(&x.shape)
                    )));
                }
                let dx = ctx.output::<E>(0, &x.shape)?;
                let dth = ctx.output::<f32>(1, &w.shape)?;
                backward::<E>(ctx, &w, dy.data, x.data, dx, dth, c, inner)
            }
        }
    }
}

impl<E: Element> Kernel for ActKernel<E> {
    fn compute(&self, ctx: &KernelContext) -> PResult<()> {
        self.run(ctx).map_err(|e| e.in_node(&self.prefix))
    }
}

/// B given as a tensor: rank 2, then the core's checks (shape [2·tess, d], finite, L·B ≈ 0).
fn explicit_basis(attrs: &Attrs, shape: &[usize], data: &[f32]) -> PResult<Basis> {
    if shape.len() != 2 {
        return Err(PluginError::invalid(format!(
            "input 'B' has shape {}: expected [{}, {}] (2·tess × d)",
            fmt_shape(shape),
            2 * attrs.tess(),
            attrs.theta_len()
        )));
    }
    Ok(basis::explicit(
        attrs.tess(),
        attrs.zero_boundary(),
        data,
        shape[0],
        shape[1],
    )?)
}

/// Shapes and bit patterns of θ (or the table) and B: equal keys ⇒ identical warps.
fn cache_key(p: &TensorView<'_, f32>, b: Option<&TensorView<'_, f32>>) -> Vec<u32> {
    let mut key = Vec::with_capacity(p.len() + 8 + b.map_or(0, |b| b.len()));
    for t in std::iter::once(p).chain(b) {
        key.push(t.shape.len() as u32);
        key.extend(t.shape.iter().map(|&d| d as u32));
        key.extend(t.data.iter().map(|v| v.to_bits()));
    }
    key
}

/// Calls `f(channel, start, end)` for each run of elements of [start, start+len) that share a
/// channel, for a layout of `c` channels of `inner` contiguous elements.
fn for_runs(
    start: usize,
    len: usize,
    c: usize,
    inner: usize,
    mut f: impl FnMut(usize, usize, usize),
) {
    let end = start + len;
    let mut i = start;
    while i < end {
        let blk = i / inner;
        let e = end.min((blk + 1) * inner);
        f(blk % c, i, e);
        i = e;
    }
}

pub(crate) fn forward<E: Element>(
    ctx: &KernelContext,
    w: &Warps<E::R>,
    x: &[E],
    y: &mut [E],
    c: usize,
    inner: usize,
) -> PResult<()> {
    if x.is_empty() {
        return Ok(());
    }
    let joined = if c > 1 && inner < SHORT_RUN {
        w.joined_kernel()
    } else {
        None
    };
    let chunks: Vec<Mutex<&mut [E]>> = y.chunks_mut(CHUNK).map(Mutex::new).collect();
    ctx.parallel_for(chunks.len(), &|t| {
        let mut ys = lock(&chunks[t]);
        let start = t * CHUNK;
        if let Some((k, _, n)) = &joined {
            let ch = Channels { start, c, inner };
            if E::forward_tables(k, *n, ch, &x[start..start + ys.len()], &mut ys) {
                return Ok(());
            }
        }
        for_runs(start, ys.len(), c, inner, |ch, s, e| {
            E::forward(&w.acts[ch], &x[s..e], &mut ys[s - start..e - start])
        });
        Ok(())
    })
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<E: Element>(
    ctx: &KernelContext,
    w: &Warps<E::R>,
    dy: &[E],
    x: &[E],
    dx: &mut [E],
    dtheta: &mut [f32],
    c: usize,
    inner: usize,
) -> PResult<()> {
    dtheta.fill(0.0);
    let n = x.len();
    if n == 0 {
        return Ok(());
    }
    let per = dtheta.len();
    let d = per / c.max(1);
    // Bound the partial sums (chunks × C × d); the chunking depends on shapes only.
    let max_chunks = (GRAD_BUDGET / per.max(1)).max(1);
    let chunk = CHUNK.max(n.div_ceil(max_chunks));
    let joined = match w.joined_kernel() {
        Some((k, Some(g), n)) if c > 1 && inner < SHORT_RUN => Some((k, g, n)),
        _ => None,
    };
    let chunks: Vec<Mutex<(&mut [E], Vec<f64>)>> = dx
        .chunks_mut(chunk)
        .map(|s| Mutex::new((s, Vec::new())))
        .collect();
    ctx.parallel_for(chunks.len(), &|t| {
        let mut g = lock(&chunks[t]);
        let (dxs, part) = &mut *g;
        *part = vec![0f64; per];
        let start = t * chunk;
        if let Some((k, g, n)) = &joined {
            let ch = Channels { start, c, inner };
            let e = start + dxs.len();
            if E::backward_tables(k, g, *n, ch, &dy[start..e], &x[start..e], dxs, part) {
                return Ok(());
            }
        }
        for_runs(start, dxs.len(), c, inner, |ch, s, e| {
            E::backward(
                &w.acts[ch],
                &dy[s..e],
                &x[s..e],
                &mut dxs[s - start..e - start],
                &mut part[ch * d..(ch + 1) * d],
            )
        });
        Ok(())
    })?;
    // Fixed-order reduction: deterministic for any thread count.
    let mut acc = vec![0f64; per];
    for m in &chunks {
        let g = lock(m);
        for (a, p) in acc.iter_mut().zip(&g.1) {
            *a += p;
        }
    }
    for (o, a) in dtheta.iter_mut().zip(&acc) {
        *o = *a as f32;
    }
    Ok(())
}
