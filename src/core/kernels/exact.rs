//! Exact mode (`lut_size = 0`): the closed-form warp per element, vectorised where the CPU allows.

use super::scalar::outer_scalar;
use super::{has_avx2, BLOCK};
use crate::core::config::Variant;

/// The exact (closed-form) warp in float32, vectorised for the trajectories that stay in their
/// cell (ψ(u, 1) of difw from per-cell constants: the integrator's bits) or cross one boundary
/// (vector log and exp: within a few ulp); the others (more crossings, a slope below eps, a result
/// or a hit time within 1e-4 of a boundary) go through `fallback`, the scalar integrator. Per cell
/// c, pairs of floats (gathered 64 bits a lane): `eta_lb` = (exp(a_c) rounded to f32, the lower
/// bound of a settled result, +∞ where |a_c| < eps), `ab` = (a_c, b_c), `xud` = (right(c),
/// left(c)) reached leaving up / down (NaN where impossible or |a_c| < eps), `tud` = the hit time
/// in the next cell up / down from there (NaN where none), `aboa` = (a_c, b_c/a_c, NaN where
/// |a_c| < eps); `ub` the upper bound of a settled result and `k1` = (b_c/a_c)·(eta − 1) in f64.
#[derive(Clone, Copy)]
pub struct ExactKernel<'a> {
    pub lo: f32,
    pub hi: f32,
    pub add_in: f32,
    pub mul_in: f32,
    pub add_out: f32,
    pub mul_out: f32,
    pub eta_lb: &'a [f32],
    pub ub: &'a [f32],
    pub k1: &'a [f64],
    pub ab: &'a [f32],
    pub xud: &'a [f32],
    pub tud: &'a [f32],
    pub aboa: &'a [f32],
    pub variant: Variant,
    pub alpha: f32,
}

/// y = act(x) in exact mode; `fallback(x)` is x̃ for an in-range x through the scalar integrator.
pub fn exact_forward(k: &ExactKernel, x: &[f32], y: &mut [f32], fallback: &dyn Fn(f32) -> f32) {
    assert_eq!(x.len(), y.len());
    let nc = k.ub.len();
    assert!(nc >= 1 && k.k1.len() == nc);
    assert!([k.eta_lb, k.ab, k.xud, k.tud, k.aboa]
        .iter()
        .all(|v| v.len() == 2 * nc));
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2 and FMA are present; the per-cell tables have nc entries (checked above).
        unsafe { super::avx2::exact(k, x, y, fallback) };
        return;
    }
    let mut wb = [0f32; BLOCK];
    for (xc, yc) in x.chunks(BLOCK).zip(y.chunks_mut(BLOCK)) {
        let m = xc.len();
        for (w, &xi) in wb[..m].iter_mut().zip(xc) {
            *w = if xi >= k.lo && xi <= k.hi {
                fallback(xi)
            } else {
                xi
            };
        }
        outer_scalar(k.variant, k.alpha, xc, &wb[..m], yc);
    }
}
