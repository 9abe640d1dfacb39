//! The activation (ditac.md §6, §11): forward and backward over slices, for one warp
//! (one θ row or one table row). Channels are the caller's business: it hands each run of
//! elements that shares a row to the matching `Activation`.

use super::basis::Basis;
use super::config::{validate_theta, Attrs, Interpolation, Variant};
use super::cpa::{Field, MAX_SLOPE};
use super::error::{DitacError, Result};
use super::kernels::{
    exact_forward_on, table_backward, Channels, ExactKernel, FastTable, FlowCells, GradTables, Isa,
    TableKernel, FAST_NODES,
};
use super::real::{normal_cdf, normal_pdf, Real};
use super::table::Table;

/// How T̂ is evaluated.
#[derive(Debug, Clone)]
enum Mode<R: Real> {
    /// A table of n nodes; `xt` holds x̃ in original units at each node, computed from T̂ in the
    /// reference's op order, so a gather gives the reference's value bit for bit.
    Table {
        interp: Interpolation,
        scale: R,
        xt: Vec<R>,
        /// (x̃_i, x̃_{i+1} − x̃_i) per node (the last with 0): one 64-bit gather per lane for
        /// linear interpolation.
        lin: Vec<R>,
        /// (x̃_i, dT̂/du_i) per node, when built with gradients.
        xdt: Vec<R>,
        table: Table<R>,
    },
    /// The closed form at every element.
    Exact {
        field: Field<R>,
        /// Per-cell constants of the vectorised float32 path (see `ExactKernel`).
        cells: Box<FlowCells>,
        /// The vector paths' interpolation table, checked against the closed form (float32 warps
        /// only: the f64 warp has no vector path).
        fast: Option<Box<FastTable>>,
    },
}

/// One warp with its interval, variant and evaluation mode.
#[derive(Debug, Clone)]
pub struct Activation<R: Real> {
    lo: R,
    hi: R,
    add_in: R,
    mul_in: R,
    add_out: R,
    mul_out: R,
    variant: Variant,
    alpha: R,
    mode: Mode<R>,
}

/// A table warp's parts, as a device kernel needs them (see `Activation::table_parts`).
#[derive(Debug, Clone, Copy)]
pub struct TableParts<'a, R> {
    pub lo: R,
    pub hi: R,
    pub add_in: R,
    pub mul_in: R,
    pub mul_out: R,
    /// n − 1
    pub scale: R,
    pub variant: Variant,
    pub alpha: R,
    pub linear: bool,
    /// x̃ at the nodes, original units (n values).
    pub xt: &'a [R],
    /// dT̂/du at the nodes (n values; empty without gradients).
    pub dt: &'a [R],
    /// dT̂/dθ at the nodes (n×d row-major; empty without gradients).
    pub dtheta: &'a [R],
    pub d: usize,
}

/// Where x falls: outside [a,b] (identity), or inside with its normalised coordinate.
#[derive(Clone, Copy)]
struct Warped<R> {
    /// x̃
    xt: R,
    /// dx̃/dx
    dxt: R,
}

impl<R: Real> Activation<R> {
    fn with_mode(attrs: &Attrs, mode: Mode<R>) -> Self {
        // The reference's `norm_data` constants, computed in double and cast to the tensor type.
        let (a, b) = (attrs.a as f64, attrs.b as f64);
        let add_in = -(a - 0.0 * (b - a) / (1.0 - 0.0));
        let mul_in = (1.0 - 0.0) / (b - a);
        let add_out = -(0.0 - a * (1.0 - 0.0) / (b - a));
        let mul_out = (b - a) / (1.0 - 0.0);
        let mut act = Activation {
            lo: R::from_f64(a),
            hi: R::from_f64(b),
            add_in: R::from_f64(add_in),
            mul_in: R::from_f64(mul_in),
            add_out: R::from_f64(add_out),
            mul_out: R::from_f64(mul_out),
            variant: attrs.variant,
            alpha: R::from_f64(attrs.alpha as f64),
            mode,
        };
        if let Mode::Table {
            xt,
            lin,
            xdt,
            table,
            ..
        } = &mut act.mode
        {
            *xt = table
                .t
                .iter()
                .map(|&t| (t + act.add_out) * act.mul_out)
                .collect();
            *lin = (0..xt.len())
                .flat_map(|i| {
                    let d = if i + 1 < xt.len() {
                        xt[i + 1] - xt[i]
                    } else {
                        R::ZERO
                    };
                    [xt[i], d]
                })
                .collect();
            if table.has_grad() {
                *xdt = xt
                    .iter()
                    .zip(&table.dt)
                    .flat_map(|(&x, &d)| [x, d])
                    .collect();
            }
        }
        act
    }

    /// The warp of θ (one row) in the basis B (row-major (2·tess)×d). With `with_grad`, the tables
    /// of dT̂/du and dT̂/dθ are built too (needed by `backward`).
    pub fn from_theta(
        attrs: &Attrs,
        basis: &Basis,
        theta: &[f32],
        with_grad: bool,
    ) -> Result<Self> {
        attrs.validate()?;
        let d = attrs.theta_len();
        if basis.rows != 2 * attrs.tess() || basis.cols != d {
            return Err(DitacError::input(
                "B",
                format!(
                    "has shape [{}, {}]: expected [{}, {d}] (2·tess × d)",
                    basis.rows,
                    basis.cols,
                    2 * attrs.tess()
                ),
            ));
        }
        validate_theta(theta, d)?;
        let basis_f32 = basis.to_f32();
        let field = field_in::<R>(attrs, &basis_f32, d, theta);
        if let Err(e) = field.check_representable() {
            let max_theta = theta.iter().fold(0f32, |m, v| m.max(v.abs()));
            return Err(DitacError::input(
                "theta",
                format!(
                    "(max |θ| = {max_theta}) gives a velocity field with slope {} and intercept {} \
                     in cell {} (A = B·θ): expected finite values and |slope| ≤ {MAX_SLOPE} \
                     (the flow grows by e^|slope|)",
                    e.slope, e.intercept, e.cell
                ),
            ));
        }
        let mode = if attrs.lut_size == 0 {
            let fast = (std::mem::size_of::<R>() == 4).then(|| {
                Box::new(FastTable::build(
                    &field_in::<f64>(attrs, &basis_f32, d, theta),
                    f64::from(attrs.a),
                    f64::from(attrs.b),
                ))
            });
            Mode::Exact {
                cells: Box::new(FlowCells::new(&field)),
                field,
                fast,
            }
        } else {
            let n = attrs.lut_size as usize;
            Mode::Table {
                interp: attrs.interpolation,
                scale: R::from_usize(n - 1),
                xt: Vec::new(),
                lin: Vec::new(),
                xdt: Vec::new(),
                table: Table::build(&field, n, with_grad),
            }
        };
        Ok(Self::with_mode(attrs, mode))
    }

    /// The bytes one warp of `attrs` holds (its tables: T̂, x̃ and the interpolation pairs; with
    /// gradients also dT̂/du, dT̂/dθ and their pairs), for a θ row of `d` values or a table of
    /// `lut_size` nodes; None on overflow. What the memory budget (`core::budget`) is checked against
    /// before a warp is built.
    pub fn table_bytes(attrs: &Attrs, d: usize, with_grad: bool) -> Option<u128> {
        if attrs.lut_size == 0 {
            // Exact mode: per-cell constants (a few dozen bytes a cell), the basis, and the
            // interpolation table (float32 pairs, built through f64 nodes).
            let cells = u128::try_from(attrs.tess).ok()?;
            return cells
                .checked_mul(64 + 2 * d as u128 * std::mem::size_of::<R>() as u128)
                .map(|b| b + 4096 + FAST_NODES as u128 * (2 * 4 + 2 * 8));
        }
        let n = u128::try_from(attrs.lut_size).ok()?;
        let per_node = if with_grad { 4 + 3 + d as u128 } else { 4 };
        n.checked_mul(per_node)?
            .checked_mul(std::mem::size_of::<R>() as u128)
    }

    /// A warp given by its table T̂(g_i) (the `DiTACLut` form; forward only).
    pub fn from_table(attrs: &Attrs, values: &[f32]) -> Result<Self> {
        attrs.validate_interval()?;
        if values.len() < 2 {
            return Err(DitacError::input(
                "table",
                format!("has {} nodes: expected at least 2", values.len()),
            ));
        }
        if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(DitacError::input(
                "table",
                format!("has a non-finite value {v} at node {i}: expected finite numbers"),
            ));
        }
        let t = values.iter().map(|&v| R::from_f64(v as f64)).collect();
        let n = values.len();
        Ok(Self::with_mode(
            attrs,
            Mode::Table {
                interp: attrs.interpolation,
                scale: R::from_usize(n - 1),
                xt: Vec::new(),
                lin: Vec::new(),
                xdt: Vec::new(),
                table: Table::from_values(t),
            },
        ))
    }

    /// T̂ at the nodes (normalised domain), when this warp has a table.
    pub fn table_values(&self) -> Option<&[R]> {
        match &self.mode {
            Mode::Table { table, .. } => Some(&table.t),
            Mode::Exact { .. } => None,
        }
    }

    /// The constants and tables of a table warp (None for the exact closed form).
    pub fn table_parts(&self) -> Option<TableParts<'_, R>> {
        match &self.mode {
            Mode::Table {
                interp,
                scale,
                xt,
                table,
                ..
            } => Some(TableParts {
                lo: self.lo,
                hi: self.hi,
                add_in: self.add_in,
                mul_in: self.mul_in,
                mul_out: self.mul_out,
                scale: *scale,
                variant: self.variant,
                alpha: self.alpha,
                linear: *interp == Interpolation::Linear,
                xt,
                dt: &table.dt,
                dtheta: &table.dtheta,
                d: table.d,
            }),
            Mode::Exact { .. } => None,
        }
    }

    /// Whether `backward` can run (θ-based with gradient tables, or exact).
    pub fn has_grad(&self) -> bool {
        match &self.mode {
            Mode::Table { table, .. } => table.has_grad(),
            Mode::Exact { .. } => true,
        }
    }

    #[inline(always)]
    fn in_range(&self, x: R) -> bool {
        self.lo <= x && x <= self.hi
    }

    #[inline(always)]
    fn normalise(&self, x: R) -> R {
        (x + self.add_in) * self.mul_in
    }

    /// Nearest node (round half to even), clamped into the table.
    #[inline(always)]
    fn nearest(u: R, scale: R, n: usize) -> usize {
        (u * scale).round_ties_even().to_index().min(n - 1)
    }

    /// Left node and weight of the right one for linear interpolation.
    #[inline(always)]
    fn bracket(u: R, scale: R, n: usize) -> (usize, R) {
        let p = u * scale;
        let i = p.floor().to_index().min(n - 2);
        (i, p - R::from_usize(i))
    }

    /// x̃ (and, with `grad`, dx̃/dx) for an in-range x.
    #[inline(always)]
    fn warp_in(&self, x: R, grad: bool) -> Warped<R> {
        let u = self.normalise(x);
        match &self.mode {
            Mode::Table {
                interp,
                scale,
                xt,
                table,
                ..
            } => match interp {
                Interpolation::Nearest => {
                    let i = Self::nearest(u, *scale, xt.len());
                    Warped {
                        xt: xt[i],
                        dxt: if grad { table.dt[i] } else { R::ONE },
                    }
                }
                Interpolation::Linear => {
                    let (i, f) = Self::bracket(u, *scale, xt.len());
                    let (x0, x1) = (xt[i], xt[i + 1]);
                    Warped {
                        xt: x0 + f * (x1 - x0),
                        dxt: (x1 - x0) * *scale * self.mul_in,
                    }
                }
            },
            Mode::Exact { field, .. } => {
                let tr = field.trace(u);
                Warped {
                    xt: (tr.value + self.add_out) * self.mul_out,
                    dxt: if grad { field.d_du(u, &tr) } else { R::ONE },
                }
            }
        }
    }

    #[inline(always)]
    fn warp(&self, x: R, grad: bool) -> Warped<R> {
        if self.in_range(x) {
            self.warp_in(x, grad)
        } else {
            Warped { xt: x, dxt: R::ONE }
        }
    }

    /// The outer function: y, ∂y/∂x̃ and the direct ∂y/∂x.
    #[inline(always)]
    fn outer(&self, x: R, xt: R) -> (R, R, R) {
        match self.variant {
            Variant::Ditac => {
                let p = normal_cdf(x);
                (xt * p, p, xt * normal_pdf(x))
            }
            Variant::Leaky => {
                if xt >= R::ZERO {
                    (xt, R::ONE, R::ZERO)
                } else {
                    (self.alpha * xt, self.alpha, R::ZERO)
                }
            }
            Variant::Ge => {
                let p = normal_cdf(xt);
                (xt * p, p + xt * normal_pdf(xt), R::ZERO)
            }
        }
    }

    #[inline(always)]
    fn apply(&self, x: R, xt: R) -> R {
        match self.variant {
            Variant::Ditac => xt * normal_cdf(x),
            Variant::Leaky => {
                if xt >= R::ZERO {
                    xt
                } else {
                    self.alpha * xt
                }
            }
            Variant::Ge => xt * normal_cdf(xt),
        }
    }

    /// The float32 table kernel of this warp (and its gradient tables when built with them), when
    /// R is f32 and the warp has a table.
    pub fn table_kernel(&self) -> Option<(TableKernel<'_>, Option<GradTables<'_>>)> {
        let Mode::Table {
            interp,
            scale,
            xt,
            lin,
            xdt,
            table,
        } = &self.mode
        else {
            return None;
        };
        let xt32 = R::as_f32(xt)?;
        let k = TableKernel {
            lo: self.lo.to_f64() as f32,
            hi: self.hi.to_f64() as f32,
            add_in: self.add_in.to_f64() as f32,
            mul_in: self.mul_in.to_f64() as f32,
            scale: scale.to_f64() as f32,
            xt: xt32,
            pairs: R::as_f32(lin)?,
            variant: self.variant,
            alpha: self.alpha.to_f64() as f32,
            linear: *interp == Interpolation::Linear,
        };
        let g = if table.has_grad() {
            Some(GradTables {
                dt: R::as_f32(&table.dt)?,
                xdt: R::as_f32(xdt)?,
                dtheta: R::as_f32(&table.dtheta)?,
                d: table.d,
                mul_out: self.mul_out.to_f64() as f32,
            })
        } else {
            None
        };
        Some((k, g))
    }

    /// The exact mode's interpolation table (float32 warps in exact mode only).
    pub fn fast_table(&self) -> Option<&FastTable> {
        match &self.mode {
            Mode::Exact { fast, .. } => fast.as_deref(),
            Mode::Table { .. } => None,
        }
    }

    /// y = act(x), elementwise, on the kernels' active path ([`Isa::active`]). `x` and `y` have
    /// the same length.
    pub fn forward(&self, x: &[R], y: &mut [R]) {
        self.forward_on(Isa::active(), x, y)
    }

    /// [`Activation::forward`] on the kernel path `isa` (or the best below it this CPU has).
    pub fn forward_on(&self, isa: Isa, x: &[R], y: &mut [R]) {
        assert_eq!(x.len(), y.len());
        if let Some((k, _)) = self.table_kernel() {
            if let Some((x32, y32)) = R::as_f32_io(x, y) {
                crate::core::kernels::table_forward_on(isa, &k, x32, y32);
                return;
            }
        }
        if let (Mode::Exact { cells, fast, .. }, Some((x32, y32))) =
            (&self.mode, R::as_f32_io(x, y))
        {
            let f = |v: R| v.to_f64() as f32;
            let k = ExactKernel {
                lo: f(self.lo),
                hi: f(self.hi),
                add_in: f(self.add_in),
                mul_in: f(self.mul_in),
                add_out: f(self.add_out),
                mul_out: f(self.mul_out),
                flow: cells.tables(),
                fast: fast.as_deref().map_or(&[], FastTable::pairs),
                variant: self.variant,
                alpha: f(self.alpha),
            };
            let fallback = |xi: f32| self.warp(R::from_f64(xi as f64), false).xt.to_f64() as f32;
            exact_forward_on(isa, &k, x32, y32, &fallback);
            return;
        }
        self.forward_reference(x, y)
    }

    /// The scalar reference of `forward` (f64 arithmetic for double, no kernels).
    pub fn forward_reference(&self, x: &[R], y: &mut [R]) {
        assert_eq!(x.len(), y.len());
        for (yo, &xi) in y.iter_mut().zip(x) {
            let w = self.warp(xi, false);
            *yo = self.apply(xi, w.xt);
        }
    }

    /// x̃ = T(x) in original units (the warp alone, without the outer function).
    pub fn warp_only(&self, x: &[R], out: &mut [R]) {
        for (o, &xi) in out.iter_mut().zip(x) {
            *o = self.warp(xi, false).xt;
        }
    }

    /// dX = dY·dy/dx, and dθ += Σ dY·dy/dθ (accumulated in f64 into `dtheta`, length d).
    /// Panics if the warp was built without gradients (`has_grad`).
    pub fn backward(&self, dy: &[R], x: &[R], dx: &mut [R], dtheta: &mut [f64]) {
        assert!(
            self.has_grad(),
            "backward needs a warp built with gradients"
        );
        assert!(dy.len() == x.len() && dx.len() == x.len());
        if let Some((k, Some(g))) = self.table_kernel() {
            if let (Some(dy32), Some((x32, dx32))) = (R::as_f32(dy), R::as_f32_io(x, dx)) {
                table_backward(
                    &k,
                    &g,
                    k.xt.len(),
                    Channels::single(),
                    dy32,
                    x32,
                    dx32,
                    dtheta,
                );
                return;
            }
        }
        self.backward_reference(dy, x, dx, dtheta)
    }

    /// The scalar reference of `backward`: element by element, dθ summed in element order.
    pub fn backward_reference(&self, dy: &[R], x: &[R], dx: &mut [R], dtheta: &mut [f64]) {
        assert!(
            self.has_grad(),
            "backward needs a warp built with gradients"
        );
        assert!(dy.len() == x.len() && dx.len() == x.len());
        let mut row = vec![R::ZERO; dtheta.len()];
        for i in 0..x.len() {
            let (xi, gi) = (x[i], dy[i]);
            let w = self.warp(xi, true);
            let (_, g, direct) = self.outer(xi, w.xt);
            dx[i] = gi * (g * w.dxt + direct);
            if self.in_range(xi) && !dtheta.is_empty() {
                self.node_dtheta(xi, &mut row);
                let s = (gi * g * self.mul_out).to_f64();
                for (acc, &r) in dtheta.iter_mut().zip(&row) {
                    *acc += s * r.to_f64();
                }
            }
        }
    }

    /// dT̂/dθ at the point (or node(s)) x uses, on the normalised domain; x must be in range.
    fn node_dtheta(&self, x: R, out: &mut [R]) {
        let u = self.normalise(x);
        match &self.mode {
            Mode::Table {
                interp,
                scale,
                table,
                ..
            } => {
                let d = table.d;
                match interp {
                    Interpolation::Nearest => {
                        let i = Self::nearest(u, *scale, table.n);
                        out.copy_from_slice(&table.dtheta[i * d..(i + 1) * d]);
                    }
                    Interpolation::Linear => {
                        let (i, f) = Self::bracket(u, *scale, table.n);
                        let (r0, r1) = (
                            &table.dtheta[i * d..(i + 1) * d],
                            &table.dtheta[(i + 1) * d..(i + 2) * d],
                        );
                        for k in 0..d {
                            out[k] = r0[k] + f * (r1[k] - r0[k]);
                        }
                    }
                }
            }
            Mode::Exact { field, .. } => {
                let tr = field.trace(u);
                field.d_dtheta(u, &tr, out);
            }
        }
    }

    /// dy/dx and dy/dθ of one element (dy/dθ written to `dtheta`, zero outside [a,b]).
    pub fn element_grad(&self, x: R, dtheta: &mut [R]) -> R {
        let w = self.warp(x, true);
        let (_, g, direct) = self.outer(x, w.xt);
        if self.in_range(x) {
            self.node_dtheta(x, dtheta);
            for v in dtheta.iter_mut() {
                *v = g * self.mul_out * *v;
            }
        } else {
            dtheta.iter_mut().for_each(|v| *v = R::ZERO);
        }
        g * w.dxt + direct
    }
}

/// The velocity field of θ (A = B·θ) in precision T, its ends pinned to zero velocity when the
/// attributes ask for a zero boundary.
fn field_in<T: Real>(attrs: &Attrs, basis_f32: &[f32], d: usize, theta: &[f32]) -> Field<T> {
    let mut field = Field::<T>::new(attrs.tess(), basis_f32, d, theta);
    if attrs.zero_boundary() {
        field.pin_zero_boundary();
    }
    field
}

/// The (outer, C, inner) layout of a tensor of `shape` around `channel_axis` (negative counts
/// from the end): element i belongs to channel (i / inner) % C.
pub fn channel_layout(shape: &[usize], channel_axis: i64) -> Result<(usize, usize, usize)> {
    let r = shape.len() as i64;
    let ax = if channel_axis < 0 {
        channel_axis + r
    } else {
        channel_axis
    };
    if !(0..r).contains(&ax) {
        return Err(DitacError::attr(
            "channel_axis",
            channel_axis,
            format!("an axis of X, which has rank {r} (in -{r}..{r})"),
        ));
    }
    let ax = ax as usize;
    let outer = shape[..ax].iter().product();
    let inner = shape[ax + 1..].iter().product();
    Ok((outer, shape[ax], inner))
}
