//! Exact mode (`lut_size = 0`): the kernel's description ([`ExactKernel`]) and the tables its vector
//! paths read ([`FlowTables`], [`FastTable`]); the paths themselves are `lanes/flow.rs` and the
//! scalar `scalar::exact`.

use crate::core::config::Variant;
use crate::core::cpa::Field;
use crate::core::real::Real;

/// The exact (closed-form) warp in float32 with its outer function. On the vector paths every
/// trajectory is evaluated in vector form at a cost independent of the number of cells it
/// crosses (see [`FlowTables`]); the scalar path runs `fallback`, the integrator, per element.
#[derive(Clone, Copy)]
pub struct ExactKernel<'a> {
    pub lo: f32,
    pub hi: f32,
    pub add_in: f32,
    pub mul_in: f32,
    pub add_out: f32,
    pub mul_out: f32,
    /// The tables of the vector paths.
    pub flow: FlowTables<'a>,
    /// [`FastTable::pairs`] (empty: every element takes the constant-cost path).
    pub fast: &'a [f32],
    pub variant: Variant,
    pub alpha: f32,
}

/// Per-cell tables of the constant-cost exact path (AVX2, AVX-512): every trajectory, whatever the
/// number of cells it crosses, costs one hit time (a log), a search of its last cell in the
/// cumulative crossing times (log2 `span` steps) and one ψ (an exp). Per-cell arrays hold `nc`
/// values padded to `pad` = max(nc, 16) entries (so that 16 cells fit one register each);
/// `cum` holds two monotone arrays of `span_pad` = max(span, 16) f64 each: `up` then `down`.
#[derive(Clone, Copy)]
pub struct FlowTables<'a> {
    pub nc: usize,
    /// The smallest power of two ≥ nc.
    pub span: usize,
    pub a: &'a [f32],
    pub b: &'a [f32],
    /// 1/a_c in f32 (the hit time's division by a_c as a product: within an ulp).
    pub inv_a: &'a [f32],
    /// right(c) and left(c): the boundaries a trajectory leaving cell c reaches.
    pub right: &'a [f32],
    pub left: &'a [f32],
    /// exp(a_c) in double rounded to f32, and k1 = f64(b_c/a_c)·(f64(eta) − 1): ψ(u, 1) in c.
    pub eta: &'a [f32],
    pub k1: &'a [f64],
    /// b_c/a_c in f32 (difw's `b / a`).
    pub boa: &'a [f32],
    /// Where a trajectory enters cell c moving up (right(c − 1)) and moving down (left(c + 1)).
    pub ent_up: &'a [f32],
    pub ent_dn: &'a [f32],
    /// Up: G[k] = Σ_{i<k} (time to cross cell i entered from below), k < nc, +∞ from nc on; a
    /// trajectory that enters cell j moving up at time s is in cell k (≥ j) at time 1 iff
    /// G[k] ≤ G[j] + (1 − s) < G[k + 1]. Down: the same on mirrored cells m = nc − 1 − c.
    /// Crossings that never happen (a velocity that changes sign at a boundary or vanishes, the
    /// domain's ends) count as 4 (more than any time left), so the arrays stay finite and sorted.
    pub cum: &'a [f64],
    /// `cum` rounded to f32: the search compares in f32 (16 lanes at once); an index off by one
    /// where two entries round together only moves the end point by a time of an f32 ulp along a
    /// continuous flow (the remaining time itself is taken from `cum`).
    pub cum_f32: &'a [f32],
}

/// The owned arrays of [`FlowTables`], built from a field's per-cell coefficients.
#[derive(Debug, Clone, Default)]
pub struct FlowCells {
    nc: usize,
    span: usize,
    a: Vec<f32>,
    b: Vec<f32>,
    inv_a: Vec<f32>,
    right: Vec<f32>,
    left: Vec<f32>,
    eta: Vec<f32>,
    k1: Vec<f64>,
    boa: Vec<f32>,
    ent_up: Vec<f32>,
    ent_dn: Vec<f32>,
    cum: Vec<f64>,
    cum_f32: Vec<f32>,
}

impl FlowCells {
    /// A crossing that never completes: longer than any time left (≤ 1).
    const NEVER: f64 = 4.0;

    pub fn new<R: Real>(field: &Field<R>) -> Self {
        let nc = field.nc();
        let coef = field.coefficients();
        let f = |v: R| v.to_f64() as f32;
        let pad = nc.max(16);
        let span = nc.next_power_of_two();
        let span_pad = span.max(16);
        let mut t = FlowCells {
            nc,
            span,
            ..Default::default()
        };
        for c in 0..pad {
            let i = c.min(nc - 1);
            let (ai, bi) = (f(coef[2 * i]), f(coef[2 * i + 1]));
            let eta = (ai as f64).exp() as f32;
            t.a.push(ai);
            t.b.push(bi);
            t.inv_a.push(1.0 / ai);
            t.eta.push(eta);
            t.boa.push(bi / ai);
            t.k1.push((bi / ai) as f64 * (eta as f64 - 1.0));
            let (r, l) = field.boundaries(i);
            t.right.push(f(r));
            t.left.push(f(l));
            t.ent_up.push(if i > 0 {
                f(field.boundaries(i - 1).0)
            } else {
                f32::NAN
            });
            t.ent_dn.push(if i + 1 < nc {
                f(field.boundaries(i + 1).1)
            } else {
                f32::NAN
            });
        }
        let cross = |v: Option<R>| match v {
            Some(s) if s.to_f64() >= 0.0 && s.to_f64() < Self::NEVER => s.to_f64() as f32 as f64,
            _ => Self::NEVER,
        };
        let mut up = vec![f64::INFINITY; span_pad];
        let mut dn = vec![f64::INFINITY; span_pad];
        up[0] = 0.0;
        dn[0] = 0.0;
        for k in 1..nc {
            // cell k − 1 entered from below (cell 0 never is: its term is unused)
            let tc = if k == 1 {
                0.0
            } else {
                cross(field.entry_time(k - 1, false))
            };
            up[k] = up[k - 1] + tc;
            // mirrored: cell nc − k entered from above (cell nc − 1 never is)
            let tc = if k == 1 {
                0.0
            } else {
                cross(field.entry_time(nc - k, true))
            };
            dn[k] = dn[k - 1] + tc;
        }
        t.cum = up;
        t.cum.extend(dn);
        t.cum_f32 = t.cum.iter().map(|&v| v as f32).collect();
        t
    }

    pub fn tables(&self) -> FlowTables<'_> {
        FlowTables {
            nc: self.nc,
            span: self.span,
            a: &self.a,
            b: &self.b,
            inv_a: &self.inv_a,
            right: &self.right,
            left: &self.left,
            eta: &self.eta,
            k1: &self.k1,
            boa: &self.boa,
            ent_up: &self.ent_up,
            ent_dn: &self.ent_dn,
            cum: &self.cum,
            cum_f32: &self.cum_f32,
        }
    }
}

/// Nodes of the exact mode's interpolation table ([`FastTable`]).
pub const FAST_NODES: usize = 8192;

/// How far an interval's linear interpolant may be from the closed form, relative to
/// max(b − a, |x̃|): 2^-23, a float32 ulp at 1 (the float32 integrator itself is off by 2.7e-7 and more).
pub const FAST_TOL: f64 = 1.192_092_895_507_812_5e-7;

/// The fast path of the exact mode's vector kernels: x̃ in original units at [`FAST_NODES`]
/// nodes of [0, 1], from the closed form in f64, as (x̃_i, x̃_{i+1} − x̃_i) pairs (the last node
/// with 0) for linear interpolation — one 64-bit gather per lane, as the linear table mode.
/// Every interval is checked when it is built: the interpolant must be within [`FAST_TOL`] of
/// the closed form at three inner points (the interpolation error of a smooth T̂ peaks inside,
/// h²·|T̂''|/8), and must hold no kink of T̂ (T̂ is C¹ but its curvature jumps where a trajectory
/// starts or ends on a cell boundary, or where it is clamped to [0, 1]). An interval that fails
/// holds a NaN difference: its elements take the constant-cost path (`FlowTables`), so the
/// result stays the closed form's value within float32 rounding for any θ.
#[derive(Debug, Clone, Default)]
pub struct FastTable {
    pairs: Vec<f32>,
    slow: usize,
}

impl FastTable {
    /// The table of the warp `field` (in f64: the same θ and basis as the float32 field) on
    /// [a, b] (the reference's float64 constants).
    pub fn build(field: &Field<f64>, a: f64, b: f64) -> Self {
        let n = FAST_NODES;
        let (span, add_out) = (b - a, a / (b - a));
        let orig = |t: f64| (t + add_out) * span;
        let node = |i: usize| i as f64 / (n - 1) as f64;
        let tt: Vec<f64> = (0..n).map(|i| field.transform(node(i))).collect();
        let xt: Vec<f64> = tt.iter().map(|&t| orig(t)).collect();
        let nc = field.nc();
        // Kinks: cell boundaries (and the ends, where the flow is clamped) where a trajectory
        // starts or ends; a margin far above eps's nudges.
        let margin = 1e-6;
        let kink_in = |lo: f64, hi: f64| {
            let (lo, hi) = (lo.min(hi) - margin, lo.max(hi) + margin);
            (0..=nc).any(|k| {
                let c = k as f64 / nc as f64;
                lo < c && c < hi
            })
        };
        let mut pairs = Vec::with_capacity(2 * n);
        let mut slow = 0;
        for i in 0..n - 1 {
            let x0 = xt[i] as f32;
            let dd = (xt[i + 1] - x0 as f64) as f32;
            let (g0, g1) = (node(i), node(i + 1));
            let smooth = x0.is_finite()
                && dd.is_finite()
                && !kink_in(g0, g1)
                && !kink_in(tt[i], tt[i + 1])
                && [0.25, 0.5, 0.75].iter().all(|&q| {
                    let truth = orig(field.transform(g0 + q * (g1 - g0)));
                    let lin = xt[i] + q * (xt[i + 1] - xt[i]);
                    (truth - lin).abs() <= FAST_TOL * span.abs().max(truth.abs())
                });
            if !smooth {
                slow += 1;
            }
            pairs.extend([x0, if smooth { dd } else { f32::NAN }]);
        }
        pairs.extend([xt[n - 1] as f32, 0.0]);
        FastTable { pairs, slow }
    }

    /// The (x̃_i, x̃_{i+1} − x̃_i) pairs, NaN differences on the intervals left to the
    /// constant-cost path.
    pub fn pairs(&self) -> &[f32] {
        &self.pairs
    }

    /// How many of the FAST_NODES − 1 intervals take the constant-cost path.
    pub fn slow_intervals(&self) -> usize {
        self.slow
    }
}
