//! Closed-form integration of a 1-D CPA velocity field on Ω = [0,1] (difw's
//! `integrate_closed_form_trace`) and its analytic derivatives (`derivative_phi_x`,
//! `derivative_phi_theta`), in the reference's operation order (ditac.md §4, §5).

use super::real::Real;

/// A CPA velocity field: `nc` cells, `a = [a_0, b_0, a_1, b_1, …]` (slope, intercept per cell).
#[derive(Debug, Clone)]
pub struct Field<R: Real> {
    nc: usize,
    a: Vec<R>,
    /// Basis in the field's precision, row-major D×d (only needed for dT/dθ).
    basis: Vec<R>,
    d: usize,
    /// Whether results are kept in [0, 1] (see `pin_zero_boundary`).
    zero_boundary: bool,
}

/// The largest |slope| (per unit of the normalised domain) a velocity field may have: over the unit
/// time the flow grows distances by up to e^slope, which must stay well inside float32's range
/// (e^64 ≈ 6e27; float32 overflows at e^88.7).
pub const MAX_SLOPE: f64 = 64.0;

/// A velocity field whose flow cannot be represented (see `Field::check_representable`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FieldError {
    pub cell: usize,
    pub slope: f64,
    pub intercept: f64,
}

/// The end state of a trajectory: its value at time 1, the time left in the final cell and that cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trace<R> {
    pub value: R,
    pub t_rem: R,
    pub cell: usize,
}

impl<R: Real> Field<R> {
    /// A = B·θ with B row-major (2·nc)×d. The product is summed in f64 and rounded once.
    pub fn new(nc: usize, basis_f32: &[f32], d: usize, theta: &[f32]) -> Self {
        assert!(nc >= 1 && basis_f32.len() == 2 * nc * d && theta.len() == d);
        let a = (0..2 * nc)
            .map(|r| {
                let row = &basis_f32[r * d..(r + 1) * d];
                let s: f64 = row
                    .iter()
                    .zip(theta)
                    .map(|(&b, &t)| b as f64 * t as f64)
                    .sum();
                R::from_f64(s)
            })
            .collect();
        let basis = basis_f32.iter().map(|&v| R::from_f64(v as f64)).collect();
        Field {
            nc,
            a,
            basis,
            d,
            zero_boundary: false,
        }
    }

    /// Makes the velocity exactly zero at both ends of Ω (v(0) = b_0 = 0, v(1) = a_last + b_last = 0)
    /// and keeps every result of the flow in [0, 1]. B·θ satisfies these constraints only up to
    /// the rounding of B (about 1e-8 per unit of θ); the flow amplifies that residue by e^slope,
    /// so without pinning a steep field moves the end points (T(0) = 6 for max|θ| ≈ 150).
    pub fn pin_zero_boundary(&mut self) {
        let last = 2 * (self.nc - 1);
        self.a[1] = R::ZERO;
        self.a[last + 1] = -self.a[last];
        // The same for dA/dθ = B, so that dT̂/dθ at the ends is exactly zero too.
        let d = self.d;
        self.basis[d..2 * d].fill(R::ZERO);
        for k in 0..d {
            self.basis[(last + 1) * d + k] = -self.basis[last * d + k];
        }
        self.zero_boundary = true;
    }

    /// Checks that the flow of this field is representable: every coefficient finite and every
    /// slope within ±`MAX_SLOPE` (so e^slope, the flow's growth over the unit time, is finite).
    pub fn check_representable(&self) -> Result<(), FieldError> {
        for c in 0..self.nc {
            let (slope, intercept) = (self.a[2 * c].to_f64(), self.a[2 * c + 1].to_f64());
            if !slope.is_finite() || !intercept.is_finite() || slope.abs() > MAX_SLOPE {
                return Err(FieldError {
                    cell: c,
                    slope,
                    intercept,
                });
            }
        }
        Ok(())
    }

    pub fn nc(&self) -> usize {
        self.nc
    }
    pub fn d(&self) -> usize {
        self.d
    }
    /// The per-cell coefficients A (slope, intercept interleaved).
    pub fn coefficients(&self) -> &[R] {
        &self.a
    }

    #[inline(always)]
    fn cell_of(&self, u: R) -> usize {
        // clamp(floor(u·nc), 0, nc−1); NaN lands in cell 0 (the caller never passes NaN).
        let c = (u * R::from_usize(self.nc)).floor();
        if c.partial_cmp(&R::ZERO) != Some(std::cmp::Ordering::Greater) {
            0
        } else {
            c.to_index().min(self.nc - 1)
        }
    }

    #[inline(always)]
    fn right(&self, c: usize) -> R {
        R::from_usize(c + 1) / R::from_usize(self.nc) + R::EPS
    }
    #[inline(always)]
    fn left(&self, c: usize) -> R {
        R::from_usize(c) / R::from_usize(self.nc) - R::EPS
    }

    /// Exact solution inside one affine cell, as difw's CPU build evaluates it: exp in double
    /// rounded to the field's precision, and `eta − 1.0` with the sum in double.
    #[inline(always)]
    fn psi(u: R, t: R, a: R, b: R) -> R {
        if a.abs() < R::EPS {
            u + t * b
        } else {
            let eta = exp_d(t * a);
            R::from_f64((eta * u).to_f64() + (b / a).to_f64() * (eta.to_f64() - 1.0))
        }
    }

    /// Hit time of the boundary the trajectory moves to, and that boundary and the next cell.
    #[inline(always)]
    fn hit_time(&self, u: R, c: usize, a: R, b: R) -> (R, R, usize) {
        let v = a * u + b;
        if v.abs() < R::EPS {
            return (R::INFINITY, R::ZERO, c);
        }
        let up = v > R::ZERO;
        let cc = if up {
            if c + 1 >= self.nc {
                return (R::INFINITY, R::ZERO, c);
            }
            c + 1
        } else {
            if c == 0 {
                return (R::INFINITY, R::ZERO, c);
            }
            c - 1
        };
        let xc = if up { self.right(c) } else { self.left(c) };
        let vc = a * xc + b;
        if vc.abs() < R::EPS {
            return (R::INFINITY, xc, cc);
        }
        if (v > R::ZERO) != (vc > R::ZERO) {
            return (R::INFINITY, xc, cc);
        }
        if xc == R::ZERO || xc == R::ONE {
            return (R::INFINITY, xc, cc);
        }
        let t = if a.abs() < R::EPS {
            (xc - u) / b
        } else {
            (vc / v).ln() / a
        };
        (t, xc, cc)
    }

    /// T̂(u): the time-1 flow from u, with the time left in the last cell and that cell.
    #[inline]
    pub fn trace(&self, u: R) -> Trace<R> {
        let tr = self.trace_unclamped(u);
        if self.zero_boundary {
            // The exact flow of a zero-boundary field maps [0, 1] onto itself; rounding in ψ near
            // a steep field's fixed points may not.
            let value = if tr.value < R::ZERO {
                R::ZERO
            } else if tr.value > R::ONE {
                R::ONE
            } else {
                tr.value
            };
            Trace { value, ..tr }
        } else {
            tr
        }
    }

    #[inline(always)]
    fn trace_unclamped(&self, u: R) -> Trace<R> {
        let mut u = u;
        let mut c = self.cell_of(u);
        let mut t = R::ONE;
        if self.zero_boundary && (u == R::ZERO || u == R::ONE) {
            // A fixed point (the pinned ends): ψ's cancellation, e^a·u − (e^a − 1)·u, loses u
            // once e^a exceeds 2^53.
            return Trace {
                value: u,
                t_rem: t,
                cell: c,
            };
        }
        // The loop ends through `thit > t` in at most nc−1 crossings (v keeps its sign); the bound
        // only guards against a non-IEEE build, where difw would return garbage: we return ψ.
        for _ in 0..=self.nc {
            let (a, b) = (self.a[2 * c], self.a[2 * c + 1]);
            let (thit, xc, cc) = self.hit_time(u, c, a, b);
            // `thit > t`, or NaN: difw's `s*thit > s*t` test.
            if thit.partial_cmp(&t) != Some(std::cmp::Ordering::Less) && thit != t {
                return Trace {
                    value: Self::psi(u, t, a, b),
                    t_rem: t,
                    cell: c,
                };
            }
            u = xc;
            c = cc;
            t -= thit;
        }
        let (a, b) = (self.a[2 * c], self.a[2 * c + 1]);
        Trace {
            value: Self::psi(u, t, a, b),
            t_rem: t,
            cell: c,
        }
    }

    /// The hit time of a trajectory entering cell c at its boundary (from below: at right(c−1);
    /// from above: at left(c+1)) with the full time ahead: what `trace` computes for that step.
    /// None where the cell cannot be entered that way.
    pub fn entry_time(&self, c: usize, from_above: bool) -> Option<R> {
        let u = if from_above {
            if c + 1 >= self.nc {
                return None;
            }
            self.left(c + 1)
        } else {
            if c == 0 || c >= self.nc {
                return None;
            }
            self.right(c - 1)
        };
        Some(self.hit_time(u, c, self.a[2 * c], self.a[2 * c + 1]).0)
    }

    /// The boundaries a trajectory leaving cell c reaches: (right(c), left(c)).
    pub fn boundaries(&self, c: usize) -> (R, R) {
        (self.right(c), self.left(c))
    }

    /// T̂(u) only.
    #[inline]
    pub fn transform(&self, u: R) -> R {
        self.trace(u).value
    }

    /// dT̂/du at u (difw `derivative_phi_x`, in its operation order).
    pub fn d_du(&self, u0: R, tr: &Trace<R>) -> R {
        let c0 = self.cell_of(u0);
        let cm = tr.cell;
        if c0 == cm {
            // The full time 1: no boundary was crossed.
            return exp_d(self.a[2 * c0]);
        }
        let (a0, b0) = (self.a[2 * c0], self.a[2 * c0 + 1]);
        let dthit_dx = R::from_f64(1.0 / (a0 * u0 + b0).to_f64());
        // The last boundary crossed: right(cm−1) moving right, left(cm+1) moving left.
        let xm = if cm > c0 {
            self.right(cm - 1)
        } else {
            self.left(cm + 1)
        };
        let (am, bm) = (self.a[2 * cm], self.a[2 * cm + 1]);
        let dpsi_dt = R::from_f64(exp_d(tr.t_rem * am).to_f64() * (am * xm + bm).to_f64());
        dpsi_dt * dthit_dx
    }

    /// dT̂/dθ_k at u for k = 0..d, written to `out` (difw `derivative_phi_theta`): the per-cell
    /// terms in double, the running sum and the final combination in the field's precision.
    pub fn d_dtheta(&self, u0: R, tr: &Trace<R>, out: &mut [R]) {
        let d = self.d;
        debug_assert_eq!(out.len(), d);
        let c0 = self.cell_of(u0);
        let cm = tr.cell;
        let eps = R::EPS;
        for v in out.iter_mut() {
            *v = R::ZERO; // holds the running −Σ ∂t_hit/∂θ until the end
        }
        let mut x = u0;
        let mut c = c0;
        while c != cm {
            let (af, bf) = (self.a[2 * c], self.a[2 * c + 1]);
            let (xc, next) = if cm > c {
                (self.right(c), c + 1)
            } else {
                (self.left(c), c - 1)
            };
            let ra = &self.basis[2 * c * d..(2 * c + 1) * d];
            let rb = &self.basis[(2 * c + 1) * d..(2 * c + 2) * d];
            let (a, b, xd, xcd) = (af.to_f64(), bf.to_f64(), x.to_f64(), xc.to_f64());
            if af.abs() < eps {
                let tmp = (xd - xcd) / (b * b);
                for k in 0..d {
                    out[k] = R::from_f64(out[k].to_f64() - tmp * rb[k].to_f64());
                }
            } else {
                let tmp1 = ((a * xcd + b) / (a * xd + b)).ln() / (a * a);
                let tmp2 = (xd - xcd) / (a * (a * xd + b) * (a * xcd + b));
                for k in 0..d {
                    let (ak, bk) = (ra[k].to_f64(), rb[k].to_f64());
                    out[k] = R::from_f64(out[k].to_f64() - (-ak * tmp1 + (bk * a - ak * b) * tmp2));
                }
            }
            x = xc;
            c = next;
        }
        let (af, bf) = (self.a[2 * cm], self.a[2 * cm + 1]);
        let ra = &self.basis[2 * cm * d..(2 * cm + 1) * d];
        let rb = &self.basis[(2 * cm + 1) * d..(2 * cm + 2) * d];
        let t = tr.t_rem;
        let (a, b, xd, td) = (af.to_f64(), bf.to_f64(), x.to_f64(), t.to_f64());
        if af.abs() < eps {
            let dpsi_dt = bf;
            for k in 0..d {
                let dpsi_dk = R::from_f64(td * (xd * ra[k].to_f64() + rb[k].to_f64()));
                out[k] = dpsi_dk + dpsi_dt * out[k];
            }
        } else {
            let dpsi_dt = R::from_f64(exp_d(t * af).to_f64() * (af * x + bf).to_f64());
            let e = (td * a).exp();
            let tmp1 = td * e * (xd + b / a);
            let tmp2 = (e - 1.0) / (a * a);
            for k in 0..d {
                let (ak, bk) = (ra[k].to_f64(), rb[k].to_f64());
                let dpsi_dk = R::from_f64(ak * tmp1 + tmp2 * (bk * a - ak * b));
                out[k] = dpsi_dk + dpsi_dt * out[k];
            }
        }
    }
}

/// exp evaluated in double and rounded to R: difw's CPU build calls its double `fmath_exp` on
/// float arguments.
#[inline(always)]
fn exp_d<R: Real>(x: R) -> R {
    R::from_f64(x.to_f64().exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(nc: usize, a: &[f64]) -> Field<f64> {
        // Identity basis: θ = A directly.
        let dd = 2 * nc;
        let mut b = vec![0.0f32; dd * dd];
        for i in 0..dd {
            b[i * dd + i] = 1.0;
        }
        let th: Vec<f32> = a.iter().map(|&v| v as f32).collect();
        Field::new(nc, &b, dd, &th)
    }

    #[test]
    fn zero_field_is_identity() {
        let f = field(3, &[0.0; 6]);
        for &u in &[0.0, 0.1, 0.5, 0.99, 1.0] {
            assert_eq!(f.transform(u), u);
        }
    }

    #[test]
    fn single_cell_matches_exact_flow() {
        // v(u) = 0.5u + 0.25 on one cell: u(t) = e^{0.5}(u + 0.5) − 0.5
        let f = field(1, &[0.5, 0.25]);
        let u = 0.3;
        let want = (0.5f64).exp() * (u + 0.5) - 0.5;
        assert!((f.transform(u) - want).abs() < 1e-12);
    }

    #[test]
    fn crossing_cells_is_continuous_flow() {
        // Constant velocity 0.3 in both cells of a 2-cell field: T(u) = u + 0.3 (extrapolated).
        let f = field(2, &[0.0, 0.3, 0.0, 0.3]);
        let tr = f.trace(0.4);
        assert_eq!(tr.cell, 1);
        assert!((tr.value - 0.7).abs() < 1e-6);
    }
}
