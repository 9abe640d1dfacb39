//! The portable scalar kernels: the reference every SIMD path is checked against, and the
//! fallback where a CPU has no vector path.

use super::exact::ExactKernel;
use super::params::{GradTables, TableKernel, BLOCK};
use crate::core::config::Variant;
use crate::core::erf::erf_f32;

#[inline(always)]
pub(super) fn phi(x: f32) -> f32 {
    0.5 * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// Round half to even for 0 ≤ v < 2^24 (NaN-free), as `torch.round`: adding and removing 2^23
/// rounds in the FPU's default mode; from 2^23 on every float is already an integer. Written
/// with arithmetic and a select because `roundeven` is a library call on the baseline target.
#[inline(always)]
pub(super) fn round_half_even(v: f32) -> f32 {
    const TWO23: f32 = 8_388_608.0;
    let r = (v + TWO23) - TWO23;
    if v < TWO23 {
        r
    } else {
        v
    }
}

/// The node of an element: (left or nearest node index, weight of the right node) and whether the
/// element is in [a, b]. Out of range: node 0, weight 0.
#[inline(always)]
pub(super) fn locate<const LINEAR: bool>(
    k: &TableKernel,
    xi: f32,
    n_last: i32,
) -> (bool, i32, f32) {
    let inr = (xi >= k.lo) & (xi <= k.hi);
    let u = (xi + k.add_in) * k.mul_in;
    if LINEAR {
        let p = if inr { u * k.scale } else { 0.0 };
        let i = (p.floor() as i32).max(0).min(n_last - 1);
        (inr, i, p - i as f32)
    } else {
        let p = if inr {
            round_half_even(u * k.scale)
        } else {
            0.0
        };
        (inr, (p as i32).max(0).min(n_last), 0.0)
    }
}

/// y of one element; `off` is the first node of its row in `k.xt`.
#[inline(always)]
pub(super) fn elem<const V: u8, const LINEAR: bool>(
    k: &TableKernel,
    xi: f32,
    off: usize,
    n_last: i32,
) -> f32 {
    let xt = k.xt;
    let (inr, i, f) = locate::<LINEAR>(k, xi, n_last);
    let i = off + i as usize;
    let warped = if LINEAR {
        // SAFETY: off + n − 1 < xt.len() (checked by the callers), 0 ≤ i − off ≤ n − 2.
        let (x0, x1) = unsafe { (*xt.get_unchecked(i), *xt.get_unchecked(i + 1)) };
        x0 + f * (x1 - x0)
    } else {
        // SAFETY: as above, 0 ≤ i − off ≤ n − 1.
        unsafe { *xt.get_unchecked(i) }
    };
    let w = if inr { warped } else { xi };
    match V {
        0 => w * phi(xi),
        1 => w * phi(w),
        _ => {
            if w >= 0.0 {
                w
            } else {
                k.alpha * w
            }
        }
    }
}

/// The scalar forward over a slice whose elements all use the row at `off` (the reference).
#[inline(always)]
pub(super) fn body<const V: u8, const LINEAR: bool>(
    k: &TableKernel,
    n: usize,
    x: &[f32],
    y: &mut [f32],
    offs: Option<&[u32]>,
) {
    let n_last = n as i32 - 1;
    match offs {
        None => {
            for (yo, &xi) in y.iter_mut().zip(x) {
                *yo = elem::<V, LINEAR>(k, xi, 0, n_last);
            }
        }
        Some(o) => {
            for ((yo, &xi), &off) in y.iter_mut().zip(x).zip(o) {
                *yo = elem::<V, LINEAR>(k, xi, off as usize, n_last);
            }
        }
    }
}

pub(super) fn dispatch_scalar(
    k: &TableKernel,
    n: usize,
    x: &[f32],
    y: &mut [f32],
    offs: Option<&[u32]>,
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has FMA.
        return unsafe { dispatch_scalar_fma(k, n, x, y, offs) };
    }
    dispatch_scalar_body(k, n, x, y, offs)
}

/// The same code compiled with FMA, so that erf's `mul_add` is one instruction rather than a
/// call to libm's `fmaf` (the same bits either way: it is correctly rounded).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn dispatch_scalar_fma(
    k: &TableKernel,
    n: usize,
    x: &[f32],
    y: &mut [f32],
    offs: Option<&[u32]>,
) {
    dispatch_scalar_body(k, n, x, y, offs)
}

#[inline(always)]
fn dispatch_scalar_body(k: &TableKernel, n: usize, x: &[f32], y: &mut [f32], offs: Option<&[u32]>) {
    by_variant!(k.variant, k.linear, |V, L| body::<V, L>(k, n, x, y, offs))
}

/// The scalar reference of [`outer_forward`].
pub fn outer_scalar(variant: Variant, alpha: f32, x: &[f32], w: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has FMA.
        return unsafe { outer_scalar_fma(variant, alpha, x, w, y) };
    }
    outer_scalar_body(variant, alpha, x, w, y)
}

/// [`outer_scalar`] compiled with FMA (as `dispatch_scalar_fma`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn outer_scalar_fma(variant: Variant, alpha: f32, x: &[f32], w: &[f32], y: &mut [f32]) {
    outer_scalar_body(variant, alpha, x, w, y)
}

#[inline(always)]
fn outer_scalar_body(variant: Variant, alpha: f32, x: &[f32], w: &[f32], y: &mut [f32]) {
    for ((yo, &xi), &wi) in y.iter_mut().zip(x).zip(w) {
        *yo = match variant {
            Variant::Ditac => wi * phi(xi),
            Variant::Ge => wi * phi(wi),
            Variant::Leaky => {
                if wi >= 0.0 {
                    wi
                } else {
                    alpha * wi
                }
            }
        };
    }
}

/// Exact mode on the scalar path: every in-range element through `fallback` (the integrator, the
/// reference), then the outer function.
pub(super) fn exact(k: &ExactKernel, x: &[f32], y: &mut [f32], fallback: &dyn Fn(f32) -> f32) {
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

/// Standard normal density in f32, as the scalar reference (`normal_pdf`).
#[inline(always)]
pub(super) fn pdf(x: f32) -> f32 {
    let c = (std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2 * 0.5) as f32;
    c * (-(x * x) * 0.5).exp()
}

/// dX of one element and the weight s = dY·∂y/∂x̃·mul_out of its dθ term (0 out of range), with
/// its node and right weight, and whether it is in range.
#[inline(always)]
pub(super) fn grad_elem<const V: u8, const LINEAR: bool>(
    k: &TableKernel,
    g: &GradTables,
    xi: f32,
    gi: f32,
    off: usize,
    n_last: i32,
) -> (f32, f32, usize, f32, bool) {
    let (inr, i, f) = locate::<LINEAR>(k, xi, n_last);
    let i = off + i as usize;
    // SAFETY: as in `elem` (the gradient tables have the layout of xt).
    let (xt, dxt) = unsafe {
        if LINEAR {
            let (x0, x1) = (*k.xt.get_unchecked(i), *k.xt.get_unchecked(i + 1));
            (x0 + f * (x1 - x0), (x1 - x0) * k.scale * k.mul_in)
        } else {
            (*k.xt.get_unchecked(i), *g.dt.get_unchecked(i))
        }
    };
    let (xt, dxt) = if inr { (xt, dxt) } else { (xi, 1.0) };
    let (gr, direct) = match V {
        0 => (phi(xi), xt * pdf(xi)),
        1 => (phi(xt) + xt * pdf(xt), 0.0),
        _ => {
            if xt >= 0.0 {
                (1.0, 0.0)
            } else {
                (k.alpha, 0.0)
            }
        }
    };
    let dx = gi * (gr * dxt + direct);
    let s = if inr { gi * gr * g.mul_out } else { 0.0 };
    (dx, s, i, f, inr)
}

/// Adds s·dT̂/dθ(node) of one element to `acc` (its channel's d sums), directly.
#[inline(always)]
pub(super) fn add_direct<const LINEAR: bool>(
    g: &GradTables,
    acc: &mut [f64],
    node: usize,
    s: f64,
    f: f32,
) {
    let d = g.d;
    let sd = s;
    let r0 = &g.dtheta[node * d..(node + 1) * d];
    if LINEAR {
        let r1 = &g.dtheta[(node + 1) * d..(node + 2) * d];
        for k in 0..d {
            acc[k] += sd * (r0[k] + f * (r1[k] - r0[k])) as f64;
        }
    } else {
        for k in 0..d {
            acc[k] += sd * r0[k] as f64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_half_to_even() {
        for v in [
            0.0f32,
            0.5,
            1.5,
            2.5,
            2.4999998,
            1023.5,
            2046.5,
            8_388_607.5,
            8_388_609.0,
            16_777_215.0,
        ] {
            assert_eq!(round_half_even(v), v.round_ties_even(), "{v}");
        }
    }
}
