//! The elementary functions of the kernels on N vectors at once (each constant broadcast once for
//! all N, and the N dependency chains side by side): erf (bit for bit the scalar `erf_f32`), Φ and
//! its fast form, exp, log, the normal density, and the outer functions.

use super::Lanes;
use crate::core::config::Variant;
use crate::core::erf::{ERF_P, ERF_Q};

/// k[0]·y^(n−1) + … + k[n − 1] at y = `x2` (n = k.len()), one fused multiply-add per step.
#[inline(always)]
fn horner<S: Lanes, const N: usize>(s: S, x2: [S::F; N], k: &[f32]) -> [S::F; N] {
    let (k0, k1) = (s.splat(k[0]), s.splat(k[1]));
    let mut p = each!(N, i => s.fmadd(x2[i], k0, k1));
    for &kk in &k[2..] {
        let kv = s.splat(kk);
        for i in 0..N {
            p[i] = s.fmadd(x2[i], p[i], kv);
        }
    }
    p
}

/// The erf's numerator and denominator polynomials in x² on |x| (`a`), `ERF_P` and `ERF_Q` by
/// fused Horner steps as the scalar `erf_f32` takes them (P without its factor |x|).
#[inline(always)]
fn erf_pq<S: Lanes, const N: usize>(s: S, a: [S::F; N]) -> ([S::F; N], [S::F; N]) {
    let x2 = each!(N, i => s.mul(a[i], a[i]));
    (horner(s, x2, &ERF_P), horner(s, x2, &ERF_Q))
}

/// The quotient p/q clamped to 1, set to 1 from |x| ≥ 3.92 on, with x's sign put back; `a` = |x|.
#[inline(always)]
fn erf_finish<S: Lanes>(s: S, x: S::F, a: S::F, r: S::F) -> S::F {
    let (one, sign) = (s.splat(1.0), s.splat(-0.0));
    // min returns its second operand (r) when one is NaN, as `clamp`.
    let r = s.min(one, r);
    let r = s.select(s.ge(a, s.splat(3.92)), one, r);
    s.or(r, s.and(x, sign))
}

/// The lane form of `erf_f32`, operation for operation (fused multiply-adds, a true division):
/// bit-identical to the scalar form, so the plugin on every path, its scalar fallback and a
/// lowered standard-ops graph (`ditac lower`) give the same bits.
///
/// The scalar form is odd operation by operation (x² is the same for ±x, p and the quotient
/// change sign exactly with x, and so does the clamp), so each lane is computed on |x| and x's
/// sign put back at the end (an `or`: the result on |x| is +0 or positive, or NaN). The scalar
/// clamp of x to [−4, 4] only changes lanes with |x| > 4, which the last select sets to ±1 (NaN
/// stays NaN without it), and the lower bound of the quotient's clamp is never reached on |x|
/// (the quotient is ≥ +0 there): both are left out. Checked on every float32 (`erf_is_erf_f32`).
#[inline(always)]
pub(super) fn erf<S: Lanes, const N: usize>(s: S, x: [S::F; N]) -> [S::F; N] {
    let a = each!(N, i => s.abs(x[i]));
    let (p, q) = erf_pq(s, a);
    let p = each!(N, i => s.mul(a[i], p[i]));
    each!(N, i => erf_finish(s, x[i], a[i], s.div(p[i], q[i])))
}

/// Φ(v) = ½(1 + erf(v/√2)), bit for bit the scalar `phi`.
#[inline(always)]
pub(super) fn phi<S: Lanes, const N: usize>(s: S, v: [S::F; N]) -> [S::F; N] {
    let r = s.splat(std::f32::consts::FRAC_1_SQRT_2);
    let e = erf(s, each!(N, i => s.mul(v[i], r)));
    let (h, one) = (s.splat(0.5), s.splat(1.0));
    each!(N, i => s.mul(h, s.add(one, e[i])))
}

/// Φ for the backward, where bit-identity with the scalar form is not asked for: the erf's
/// polynomials with fused multiply-adds and p/q through the reciprocal estimate and one Newton
/// step (q ≤ −0.0143, far from 0): within an ulp or two of `phi`, at a fraction of the division's
/// cost.
#[inline(always)]
pub(super) fn phi_fast<S: Lanes, const N: usize>(s: S, v: [S::F; N]) -> [S::F; N] {
    let r = s.splat(std::f32::consts::FRAC_1_SQRT_2);
    let x = each!(N, i => s.mul(v[i], r));
    let a = each!(N, i => s.abs(x[i]));
    let (p, q) = erf_pq(s, a);
    let (one, h) = (s.splat(1.0), s.splat(0.5));
    each!(N, i => {
        let y0 = s.recip_estimate(q[i]);
        let y1 = s.fmadd(s.fnmadd(q[i], y0, one), y0, y0);
        let e = erf_finish(s, x[i], a[i], s.mul(s.mul(a[i], p[i]), y1));
        s.fmadd(e, h, h)
    })
}

/// exp(a) (Cephes' expf polynomial, ≤ 2 ulp) for a in [−87, 87] (clamped there). `nonpositive`:
/// a ≤ 0 or NaN (the density's exponent), exactly 0 below −87, no upper clamp needed.
#[inline(always)]
pub(super) fn exp<S: Lanes, const N: usize>(s: S, a: [S::F; N], nonpositive: bool) -> [S::F; N] {
    let (lo, hi) = (s.splat(-87.0), s.splat(87.0));
    let tiny = each!(N, i => s.lt(a[i], lo));
    let a = each!(N, i => {
        let a = s.max(lo, a[i]);
        if nonpositive {
            a
        } else {
            s.min(hi, a)
        }
    });
    let l2e = s.splat(std::f32::consts::LOG2_E);
    let n = each!(N, i => s.round(s.mul(a[i], l2e)));
    let (c1, c2) = (s.splat(0.693_359_4), s.splat(-2.121_944_4e-4));
    let r = each!(N, i => s.fnmadd(n[i], c2, s.fnmadd(n[i], c1, a[i])));
    let mut p = [s.splat(1.987_569_1e-4); N];
    for k in [
        1.398_2e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ] {
        let kv = s.splat(k);
        for i in 0..N {
            p[i] = s.fmadd(p[i], r[i], kv);
        }
    }
    let one = s.splat(1.0);
    each!(N, i => {
        let e = s.add(s.fmadd(p[i], s.mul(r[i], r[i]), r[i]), one);
        // e·2^n (n an integer in [−126, 126])
        let v = s.ldexp(e, n[i]);
        if nonpositive {
            s.select(tiny[i], s.splat(0.0), v)
        } else {
            v
        }
    })
}

/// log(x) for positive normal x (Cephes' logf polynomial, about 1 ulp).
#[inline(always)]
pub(super) fn log<S: Lanes, const N: usize>(s: S, x: [S::F; N]) -> [S::F; N] {
    each!(N, h => {
        let xi = s.bits_of(x[h]);
        let e = s.isub(s.ishr(xi, 23), s.isplat(127));
        let m = s.float_of_bits(s.ior(s.iand(xi, s.isplat(0x007f_ffff)), s.isplat(0x3f80_0000)));
        let big = s.gt(m, s.splat(std::f32::consts::SQRT_2));
        let m = s.select(big, s.mul(m, s.splat(0.5)), m);
        let e = s.iselect(big, s.iadd(e, s.isplat(1)), e);
        let ef = s.to_f32(e);
        let f = s.sub(m, s.splat(1.0));
        let f2 = s.mul(f, f);
        let mut p = s.splat(7.037_683_6e-2);
        for k in [
            -1.151_461e-1,
            1.167_699_9e-1,
            -1.242_014_1e-1,
            1.424_932_3e-1,
            -1.666_805_8e-1,
            2.000_071_4e-1,
            -2.499_999_4e-1,
            3.333_333e-1,
        ] {
            p = s.fmadd(p, f, s.splat(k));
        }
        let mut y = s.mul(s.mul(p, f), f2);
        y = s.fmadd(ef, s.splat(-2.121_944_4e-4), y);
        y = s.fnmadd(f2, s.splat(0.5), y);
        s.fmadd(ef, s.splat(0.693_359_4), s.add(f, y))
    })
}

/// The normal density φ(x) = exp(−x²/2)/√(2π).
#[inline(always)]
pub(super) fn pdf<S: Lanes, const N: usize>(s: S, x: [S::F; N]) -> [S::F; N] {
    let c = (std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2 * 0.5) as f32;
    let (neg, h) = (s.splat(-0.0), s.splat(0.5));
    let a = each!(N, i => s.mul(s.xor(s.mul(x[i], x[i]), neg), h));
    let e = exp(s, a, true);
    let c = s.splat(c);
    each!(N, i => s.mul(c, e[i]))
}

/// LeakyReLU(w) with slope `alpha`.
#[inline(always)]
pub(super) fn leaky<S: Lanes>(s: S, alpha: S::F, w: S::F) -> S::F {
    s.select(s.ge(w, s.splat(0.0)), w, s.mul(alpha, w))
}

/// The outer function: x̃·Φ(x), x̃·Φ(x̃) or LeakyReLU(x̃) (`alpha` the slope), as the scalar
/// `outer` computes it (V: 0, 1, 2 for Ditac, Ge, Leaky).
#[inline(always)]
pub(super) fn outer<S: Lanes, const V: u8, const N: usize>(
    s: S,
    alpha: S::F,
    x: [S::F; N],
    w: [S::F; N],
) -> [S::F; N] {
    match V {
        0 => {
            let p = phi(s, x);
            each!(N, h => s.mul(w[h], p[h]))
        }
        1 => {
            let p = phi(s, w);
            each!(N, h => s.mul(w[h], p[h]))
        }
        _ => each!(N, h => leaky(s, alpha, w[h])),
    }
}

/// [`outer`] with the variant chosen at run time.
#[inline(always)]
pub(super) fn outer_of<S: Lanes, const N: usize>(
    s: S,
    variant: Variant,
    alpha: S::F,
    x: [S::F; N],
    w: [S::F; N],
) -> [S::F; N] {
    match variant {
        Variant::Ditac => outer::<S, 0, N>(s, alpha, x, w),
        Variant::Ge => outer::<S, 1, N>(s, alpha, x, w),
        Variant::Leaky => outer::<S, 2, N>(s, alpha, x, w),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::core::erf::erf_f32;

    /// The lane erf gives the scalar erf's bits (NaN for NaN) on every float32 (with
    /// `DITAC_EXHAUSTIVE=1`), else on every 13th float below 8 in magnitude (both signs; see
    /// `sweep_step`), a sample beyond, ±∞ and NaNs. Run for each instruction set by its file's
    /// tests.
    pub(in crate::core::kernels) fn erf_is_erf_f32<S: Lanes>(s: S) {
        let all = std::env::var_os("DITAC_EXHAUSTIVE").is_some();
        let step = crate::core::erf::sweep_step(if cfg!(debug_assertions) { 40_009 } else { 13 });
        let end: u64 = if all { 1 << 32 } else { 0x4100_0000 };
        let l = S::LANES;
        let check = |bits: &[u32]| {
            let xs: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
            let mut out = vec![0f32; l];
            // SAFETY: LANES values in and out.
            unsafe { s.store(out.as_mut_ptr(), erf(s, [s.load(xs.as_ptr())])[0]) };
            for (o, &v) in out.iter().zip(&xs) {
                let want = erf_f32(v);
                assert!(
                    o.to_bits() == want.to_bits() || (o.is_nan() && want.is_nan()),
                    "{v:e} ({:08x}): {o:e} vs {want:e}",
                    v.to_bits()
                );
            }
        };
        let mut b = 0u64;
        let mut lanes = vec![0u32; l];
        while b < end {
            for (i, v) in lanes.iter_mut().enumerate() {
                *v = (b + i as u64 * step).min(end - 1) as u32;
            }
            check(&lanes);
            if !all {
                check(&lanes.iter().map(|v| v | 0x8000_0000).collect::<Vec<_>>());
            }
            b += l as u64 * step;
        }
        // beyond 8: a sample, ±∞ and NaNs
        let mut b = 0x4100_0000u64;
        while b < 0x8000_0000 {
            let v: Vec<u32> = (0..l as u32)
                .map(|i| (b as u32 + i * 1_234_567) | (i & 1) << 31)
                .collect();
            check(&v);
            b += l as u64 * 1_234_567;
        }
        let special = [
            0x7f80_0000,
            0xff80_0000,
            0x7fc0_0000,
            0xffc0_0000,
            0x7f80_0001,
            0,
            0x8000_0000,
            0x4000_0000,
        ];
        for c in special.chunks(l.min(8)) {
            let mut v = vec![0u32; l];
            v[..c.len()].copy_from_slice(c);
            check(&v);
        }
    }

    /// The lane erf is within 6e-7 of `erf_f32` and 5e-7 of the true erf, and equal from 3.92 on.
    pub(in crate::core::kernels) fn erf_is_accurate<S: Lanes>(s: S) {
        let l = S::LANES;
        let mut xs: Vec<f32> = (-5000..5000).map(|i| i as f32 * 1e-3).collect();
        xs.extend([
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            3.92,
            -3.92,
            4.0,
        ]);
        while !xs.len().is_multiple_of(l) {
            xs.push(1.0);
        }
        for c in xs.chunks(l) {
            let mut out = vec![0f32; l];
            // SAFETY: LANES values in and out.
            unsafe { s.store(out.as_mut_ptr(), erf(s, [s.load(c.as_ptr())])[0]) };
            for (o, &v) in out.iter().zip(c) {
                let want = erf_f32(v);
                let exact = libm::erf(v as f64);
                assert!(
                    (o.is_nan() && want.is_nan())
                        || ((o - want).abs() <= 6e-7 && (*o as f64 - exact).abs() <= 5e-7),
                    "{v}: {o} vs {want}"
                );
                if v.abs() >= 3.92 {
                    assert_eq!(*o, want, "{v}");
                }
            }
        }
    }
}
