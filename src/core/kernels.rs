//! Branch-free float32 table kernels, written once and compiled twice: for the baseline target
//! and, chosen at run time, for AVX2 (where the compiler turns the gathers and selects of the
//! loop into vector instructions). No fused multiply-add is used, so both give the same bits.

use super::config::Variant;
use super::erf::erf_f32;

/// What a table forward needs, in the precision of the data.
#[derive(Clone, Copy)]
pub struct TableKernel<'a> {
    pub lo: f32,
    pub hi: f32,
    pub add_in: f32,
    pub mul_in: f32,
    pub scale: f32,
    /// x̃ at the nodes, in original units.
    pub xt: &'a [f32],
    pub variant: Variant,
    pub alpha: f32,
    pub linear: bool,
}

#[inline(always)]
fn phi(x: f32) -> f32 {
    0.5 * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// Round half to even for 0 ≤ v < 2^24 (NaN-free), as `torch.round`: adding and removing 2^23
/// rounds in the FPU's default mode; from 2^23 on every float is already an integer. Written
/// with arithmetic and a select because `roundeven` is a library call on the baseline target.
#[inline(always)]
fn round_half_even(v: f32) -> f32 {
    const TWO23: f32 = 8_388_608.0;
    let r = (v + TWO23) - TWO23;
    if v < TWO23 {
        r
    } else {
        v
    }
}

#[inline(always)]
fn body<const V: u8, const LINEAR: bool>(k: &TableKernel, x: &[f32], y: &mut [f32]) {
    let n_last = k.xt.len() as i32 - 1;
    let xt = k.xt;
    for (yo, &xi) in y.iter_mut().zip(x) {
        let inr = (xi >= k.lo) & (xi <= k.hi);
        let u = (xi + k.add_in) * k.mul_in;
        let warped = if LINEAR {
            let p = if inr { u * k.scale } else { 0.0 };
            let i = (p.floor() as i32).max(0).min(n_last - 1);
            let f = p - i as f32;
            // SAFETY: 0 ≤ i ≤ n−2 by the clamp.
            let (x0, x1) = unsafe {
                (
                    *xt.get_unchecked(i as usize),
                    *xt.get_unchecked(i as usize + 1),
                )
            };
            x0 + f * (x1 - x0)
        } else {
            let p = if inr {
                round_half_even(u * k.scale)
            } else {
                0.0
            };
            let i = (p as i32).max(0).min(n_last);
            // SAFETY: 0 ≤ i ≤ n−1 by the clamp.
            unsafe { *xt.get_unchecked(i as usize) }
        };
        let w = if inr { warped } else { xi };
        *yo = match V {
            0 => w * phi(xi),
            1 => w * phi(w),
            _ => {
                if w >= 0.0 {
                    w
                } else {
                    k.alpha * w
                }
            }
        };
    }
}

#[inline(always)]
fn dispatch(k: &TableKernel, x: &[f32], y: &mut [f32]) {
    match (k.variant, k.linear) {
        (Variant::Ditac, false) => body::<0, false>(k, x, y),
        (Variant::Ditac, true) => body::<0, true>(k, x, y),
        (Variant::Ge, false) => body::<1, false>(k, x, y),
        (Variant::Ge, true) => body::<1, true>(k, x, y),
        (Variant::Leaky, false) => body::<2, false>(k, x, y),
        (Variant::Leaky, true) => body::<2, true>(k, x, y),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dispatch_avx2(k: &TableKernel, x: &[f32], y: &mut [f32]) {
    dispatch(k, x, y)
}

/// y = act(x) through the table, on the fastest path this CPU has.
pub fn table_forward(k: &TableKernel, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len());
    assert!(k.xt.len() >= 2);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        unsafe { dispatch_avx2(k, x, y) };
        return;
    }
    dispatch(k, x, y)
}

/// The same kernel without run-time dispatch (for tests comparing the two paths).
pub fn table_forward_baseline(k: &TableKernel, x: &[f32], y: &mut [f32]) {
    dispatch(k, x, y)
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
