//! AVX2 + FMA kernels (8 lanes): the table forward (bit for bit the scalar body), the backward and
//! the exact mode's vector paths.

use super::exact::FAST_NODES;
use super::*;
use crate::core::erf::{ERF_P, ERF_Q};
use std::arch::x86_64::*;

/// `[f(0), …, f(n − 1)]` written as a loop: unlike `std::array::from_fn`'s closure, the body is
/// compiled with the enclosing function's target features (a closure that is not inlined loses
/// them and turns every intrinsic into a call).
macro_rules! each {
    ($n:expr, $h:ident => $e:expr) => {{
        // SAFETY: the element types (vectors, masks, arrays of them) are valid all-zero.
        let mut out = [unsafe { std::mem::zeroed() }; $n];
        for $h in 0..$n {
            out[$h] = $e;
        }
        out
    }};
}

/// The erf's numerator and denominator polynomials in x² on |x| (`a`), `erf::ERF_P` and
/// `erf::ERF_Q` by fused Horner steps as the scalar `erf_f32` takes them (P without its factor
/// |x|): what the exact lane erf and the backward's fast Φ share.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn erf_pq8n<const N: usize>(a: [__m256; N]) -> ([__m256; N], [__m256; N]) {
    let x2: [__m256; N] = std::array::from_fn(|i| _mm256_mul_ps(a[i], a[i]));
    (horner8n(x2, &ERF_P), horner8n(x2, &ERF_Q))
}

/// k[0]·y^(n−1) + … + k[n − 1] at y = `x2` (n = k.len()) on N vectors, one fused multiply-add
/// per step; each constant is broadcast once for all N.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn horner8n<const N: usize>(x2: [__m256; N], k: &[f32]) -> [__m256; N] {
    let c = _mm256_set1_ps;
    let (k0, k1) = (c(k[0]), c(k[1]));
    let mut p: [__m256; N] = std::array::from_fn(|i| _mm256_fmadd_ps(x2[i], k0, k1));
    for &kk in &k[2..] {
        let kv = c(kk);
        for i in 0..N {
            p[i] = _mm256_fmadd_ps(x2[i], p[i], kv);
        }
    }
    p
}

/// The lane form of `erf_f32`, operation for operation (fused multiply-adds, a true division):
/// bit-identical to the scalar form, so the plugin on every path, its scalar fallback and a
/// lowered standard-ops graph (`ditac lower`) give the same bits.
#[cfg(test)]
#[inline]
#[target_feature(enable = "avx2,fma")]
pub fn erf8(x: __m256) -> __m256 {
    erf8n([x])[0]
}

/// `erf8` on N vectors at once, step by step: each constant is loaded once for all N (the
/// loop is bound by loads otherwise), and the lanes see the very same operations.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub fn erf8n<const N: usize>(x: [__m256; N]) -> [__m256; N] {
    let c = _mm256_set1_ps;
    // The scalar form is odd operation by operation (x² is the same for ±x, p and the
    // quotient change sign exactly with x, and so does the clamp), so each lane is computed
    // on |x| and x's sign put back at the end (an `or`: the result on |x| is +0 or positive,
    // or NaN). The scalar clamp of x to [−4, 4] only changes lanes with |x| > 4, which the
    // last blend sets to ±1 (NaN stays NaN without it), and the lower bound of the
    // quotient's clamp is never reached on |x| (the quotient is ≥ +0 there): both are left
    // out. Bit for bit the scalar `erf_f32` for every float (checked exhaustively).
    let sign = c(-0.0);
    let a: [__m256; N] = std::array::from_fn(|i| _mm256_andnot_ps(sign, x[i]));
    let (mut p, q) = erf_pq8n(a);
    for i in 0..N {
        p[i] = _mm256_mul_ps(a[i], p[i]);
    }
    let (one, lim) = (c(1.0), c(3.92));
    std::array::from_fn(|i| {
        let r = _mm256_div_ps(p[i], q[i]);
        // min returns its second operand (r) when one is NaN, as `clamp`.
        let r = _mm256_min_ps(one, r);
        let big = _mm256_cmp_ps::<_CMP_GE_OQ>(a[i], lim);
        let r = _mm256_blendv_ps(r, one, big);
        _mm256_or_ps(r, _mm256_and_ps(x[i], sign))
    })
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn phi8(v: __m256) -> __m256 {
    phi8n([v])[0]
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn phi8n<const N: usize>(v: [__m256; N]) -> [__m256; N] {
    let c = _mm256_set1_ps;
    let s = c(std::f32::consts::FRAC_1_SQRT_2);
    let e: [__m256; N] = erf8n(std::array::from_fn(|i| _mm256_mul_ps(v[i], s)));
    let h = c(0.5);
    std::array::from_fn(|i| _mm256_mul_ps(h, _mm256_add_ps(c(1.0), e[i])))
}

/// Φ on N vectors for the backward, where bit-identity with the scalar form is not asked
/// for: the erf's polynomials with fused multiply-adds and p/q through the reciprocal
/// estimate and one Newton step (q ≤ −0.0143, far from 0): within an ulp or two of
/// `phi8n`, at a fraction of the division's cost.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn phi8n_fast<const N: usize>(v: [__m256; N]) -> [__m256; N] {
    let c = _mm256_set1_ps;
    let (s, sign) = (c(std::f32::consts::FRAC_1_SQRT_2), c(-0.0));
    let x: [__m256; N] = std::array::from_fn(|i| _mm256_mul_ps(v[i], s));
    let a: [__m256; N] = std::array::from_fn(|i| _mm256_andnot_ps(sign, x[i]));
    let (p, q) = erf_pq8n(a);
    let (one, lim, h) = (c(1.0), c(3.92), c(0.5));
    std::array::from_fn(|i| {
        let y0 = _mm256_rcp_ps(q[i]);
        let y1 = _mm256_fmadd_ps(_mm256_fnmadd_ps(q[i], y0, one), y0, y0);
        let r = _mm256_mul_ps(_mm256_mul_ps(a[i], p[i]), y1);
        let r = _mm256_min_ps(one, r);
        let big = _mm256_cmp_ps::<_CMP_GE_OQ>(a[i], lim);
        let r = _mm256_blendv_ps(r, one, big);
        let e = _mm256_or_ps(r, _mm256_and_ps(x[i], sign));
        _mm256_fmadd_ps(e, h, h)
    })
}

/// exp(a) for a ≤ 0 or NaN (Cephes' expf polynomial, ≤ 2 ulp); exactly 0 below −87. N
/// vectors at once (constants loaded once for all).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn exp_neg8n<const N: usize>(a: [__m256; N]) -> [__m256; N] {
    let c = _mm256_set1_ps;
    let lim = c(-87.0);
    let tiny: [__m256; N] = std::array::from_fn(|i| _mm256_cmp_ps::<_CMP_LT_OQ>(a[i], lim));
    let a: [__m256; N] = std::array::from_fn(|i| _mm256_max_ps(lim, a[i]));
    let l2e = c(std::f32::consts::LOG2_E);
    let n: [__m256; N] = std::array::from_fn(|i| {
        _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
            a[i], l2e,
        ))
    });
    let (c1, c2) = (c(0.693_359_4), c(-2.121_944_4e-4));
    let r: [__m256; N] =
        std::array::from_fn(|i| _mm256_fnmadd_ps(n[i], c2, _mm256_fnmadd_ps(n[i], c1, a[i])));
    let mut p = [c(1.987_569_1e-4); N];
    for k in [
        1.398_2e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ] {
        let kv = c(k);
        for i in 0..N {
            p[i] = _mm256_fmadd_ps(p[i], r[i], kv);
        }
    }
    let (one, bias) = (c(1.0), _mm256_set1_epi32(127));
    std::array::from_fn(|i| {
        let e = _mm256_add_ps(_mm256_fmadd_ps(p[i], _mm256_mul_ps(r[i], r[i]), r[i]), one);
        let pow2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n[i]),
            bias,
        )));
        _mm256_andnot_ps(tiny[i], _mm256_mul_ps(e, pow2))
    })
}

/// The normal density φ(x) = exp(−x²/2)/√(2π) on N vectors.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn pdf8n<const N: usize>(x: [__m256; N]) -> [__m256; N] {
    let c = _mm256_set1_ps;
    let cst = c((std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2 * 0.5) as f32);
    let (neg, h) = (c(-0.0), c(0.5));
    let a: [__m256; N] =
        std::array::from_fn(|i| _mm256_mul_ps(_mm256_xor_ps(_mm256_mul_ps(x[i], x[i]), neg), h));
    let e = exp_neg8n(a);
    std::array::from_fn(|i| _mm256_mul_ps(cst, e[i]))
}

struct Consts {
    lo: __m256,
    hi: __m256,
    add_in: __m256,
    mul_in: __m256,
    scale: __m256,
    alpha: __m256,
    n_last: __m256i,
    n_last1: __m256i,
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn consts(k: &TableKernel, n: usize) -> Consts {
    let c = _mm256_set1_ps;
    Consts {
        lo: c(k.lo),
        hi: c(k.hi),
        add_in: c(k.add_in),
        mul_in: c(k.mul_in),
        scale: c(k.scale),
        alpha: c(k.alpha),
        n_last: _mm256_set1_epi32(n as i32 - 1),
        n_last1: _mm256_set1_epi32(n as i32 - 2),
    }
}

/// In-range mask, node index (row offset added) and right weight of 8 elements: `locate`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn locate8<const LINEAR: bool>(c: &Consts, xv: __m256, off: __m256i) -> (__m256, __m256i, __m256) {
    let inr = _mm256_and_ps(
        _mm256_cmp_ps::<_CMP_GE_OQ>(xv, c.lo),
        _mm256_cmp_ps::<_CMP_LE_OQ>(xv, c.hi),
    );
    let u = _mm256_mul_ps(_mm256_add_ps(xv, c.add_in), c.mul_in);
    // Out-of-range lanes (and NaN, ±∞) may give any p: the clamped index stays in the row
    // (a float too large or NaN converts to i32::MIN, clamped to 0), and their node is
    // blended away by the callers.
    let p = _mm256_mul_ps(u, c.scale);
    let zero = _mm256_setzero_si256();
    if LINEAR {
        // Truncation instead of floor: they differ only for negative p, which the clamp
        // to 0 makes the same (p ≥ 2^31 and NaN give i32::MIN either way).
        let i = _mm256_cvttps_epi32(p);
        let i = _mm256_min_epi32(_mm256_max_epi32(i, zero), c.n_last1);
        let f = _mm256_sub_ps(p, _mm256_cvtepi32_ps(i));
        (inr, _mm256_add_epi32(i, off), f)
    } else {
        // Conversion in the current rounding mode (round half to even, as the scalar
        // round-half-even by ±2^23 in the same mode), one instruction instead of round +
        // truncate: the same integer for every p below 2^31.
        let i = _mm256_cvtps_epi32(p);
        let i = _mm256_min_epi32(_mm256_max_epi32(i, zero), c.n_last);
        (inr, _mm256_add_epi32(i, off), _mm256_setzero_ps())
    }
}

/// Gathers 8 pairs of floats (64 bits each, at pair index `idx`): (first, second) by lane.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn gather_pairs(p: *const f32, idx: __m256i) -> (__m256, __m256) {
    let p = p as *const f64;
    let lo = _mm256_castpd_ps(_mm256_i32gather_pd::<8>(p, _mm256_castsi256_si128(idx)));
    let hi = _mm256_castpd_ps(_mm256_i32gather_pd::<8>(
        p,
        _mm256_extracti128_si256::<1>(idx),
    ));
    // lo = a0 b0 a1 b1 | a2 b2 a3 b3, hi = a4 b4 a5 b5 | a6 b6 a7 b7
    let a = _mm256_shuffle_ps::<0b10_00_10_00>(lo, hi); // a0 a1 a4 a5 | a2 a3 a6 a7
    let b = _mm256_shuffle_ps::<0b11_01_11_01>(lo, hi);
    let fix =
        |v: __m256| _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)));
    (fix(a), fix(b))
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn lanes<const V: u8, const LINEAR: bool>(
    c: &Consts,
    xt: *const f32,
    pairs: *const f32,
    xv: __m256,
    off: __m256i,
) -> __m256 {
    let (inr, i, f) = locate8::<LINEAR>(c, xv, off);
    let w = if LINEAR {
        // x0 + f·(x1 − x0), with x1 − x0 from the pair table (the same bits).
        let (x0, dd) = gather_pairs(pairs, i);
        _mm256_blendv_ps(xv, _mm256_add_ps(x0, _mm256_mul_ps(f, dd)), inr)
    } else {
        // Out-of-range lanes keep x (masked off: no load, no blend).
        _mm256_mask_i32gather_ps::<4>(xv, xt, i, inr)
    };
    match V {
        0 => _mm256_mul_ps(w, phi8(xv)),
        1 => _mm256_mul_ps(w, phi8(w)),
        _ => {
            let pos = _mm256_cmp_ps::<_CMP_GE_OQ>(w, _mm256_setzero_ps());
            _mm256_blendv_ps(_mm256_mul_ps(c.alpha, w), w, pos)
        }
    }
}

/// `lanes` on two vectors at once (the outer function's erf shares its constants).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn lanes2<const V: u8, const LINEAR: bool>(
    c: &Consts,
    xt: *const f32,
    pairs: *const f32,
    xv: [__m256; 2],
    off: [__m256i; 2],
) -> [__m256; 2] {
    let w: [__m256; 2] = std::array::from_fn(|h| {
        let (inr, i, f) = locate8::<LINEAR>(c, xv[h], off[h]);
        if LINEAR {
            let (x0, dd) = gather_pairs(pairs, i);
            _mm256_blendv_ps(xv[h], _mm256_add_ps(x0, _mm256_mul_ps(f, dd)), inr)
        } else {
            _mm256_mask_i32gather_ps::<4>(xv[h], xt, i, inr)
        }
    });
    match V {
        0 => {
            let p = phi8n(xv);
            [_mm256_mul_ps(w[0], p[0]), _mm256_mul_ps(w[1], p[1])]
        }
        1 => {
            let p = phi8n(w);
            [_mm256_mul_ps(w[0], p[0]), _mm256_mul_ps(w[1], p[1])]
        }
        _ => std::array::from_fn(|h| {
            let pos = _mm256_cmp_ps::<_CMP_GE_OQ>(w[h], _mm256_setzero_ps());
            _mm256_blendv_ps(_mm256_mul_ps(c.alpha, w[h]), w[h], pos)
        }),
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn fwd<const V: u8, const LINEAR: bool>(
    k: &TableKernel,
    n: usize,
    x: &[f32],
    y: &mut [f32],
    offs: Option<&[u32]>,
) {
    let c = consts(k, n);
    let len = x.len();
    let main = len - len % 8;
    let (xp, yp, xt, pairs) = (x.as_ptr(), y.as_mut_ptr(), k.xt.as_ptr(), k.pairs.as_ptr());
    let mut j = 0;
    match offs {
        None => {
            let zero = _mm256_setzero_si256();
            while j + 16 <= main {
                let xv = [_mm256_loadu_ps(xp.add(j)), _mm256_loadu_ps(xp.add(j + 8))];
                let v = lanes2::<V, LINEAR>(&c, xt, pairs, xv, [zero; 2]);
                _mm256_storeu_ps(yp.add(j), v[0]);
                _mm256_storeu_ps(yp.add(j + 8), v[1]);
                j += 16;
            }
            while j < main {
                let v = lanes::<V, LINEAR>(&c, xt, pairs, _mm256_loadu_ps(xp.add(j)), zero);
                _mm256_storeu_ps(yp.add(j), v);
                j += 8;
            }
        }
        Some(o) => {
            let op = o.as_ptr() as *const __m256i;
            while j + 16 <= main {
                let off = [
                    _mm256_loadu_si256(op.add(j / 8)),
                    _mm256_loadu_si256(op.add(j / 8 + 1)),
                ];
                let xv = [_mm256_loadu_ps(xp.add(j)), _mm256_loadu_ps(xp.add(j + 8))];
                let v = lanes2::<V, LINEAR>(&c, xt, pairs, xv, off);
                _mm256_storeu_ps(yp.add(j), v[0]);
                _mm256_storeu_ps(yp.add(j + 8), v[1]);
                j += 16;
            }
            while j < main {
                let off = _mm256_loadu_si256(op.add(j / 8));
                let v = lanes::<V, LINEAR>(&c, xt, pairs, _mm256_loadu_ps(xp.add(j)), off);
                _mm256_storeu_ps(yp.add(j), v);
                j += 8;
            }
        }
    }
    // The tail through the same lanes (padded), so that a result never depends on where an
    // element falls in a slice.
    let rem = len - main;
    if rem > 0 {
        let mut xb = [0f32; 8];
        let mut ob = [0u32; 8];
        let mut yb = [0f32; 8];
        xb[..rem].copy_from_slice(&x[main..]);
        if let Some(o) = offs {
            ob[..rem].copy_from_slice(&o[main..]);
        }
        let off = _mm256_loadu_si256(ob.as_ptr() as *const __m256i);
        let v = lanes::<V, LINEAR>(&c, xt, pairs, _mm256_loadu_ps(xb.as_ptr()), off);
        _mm256_storeu_ps(yb.as_mut_ptr(), v);
        y[main..].copy_from_slice(&yb[..rem]);
    }
}

/// The forward of `dispatch_scalar`, 8 lanes at a time (the tail through the scalar body).
///
/// # Safety
/// AVX2 must be available; `k.xt` must hold every row the offsets name (n nodes each).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn forward(k: &TableKernel, n: usize, x: &[f32], y: &mut [f32], offs: Option<&[u32]>) {
    match (k.variant, k.linear) {
        (Variant::Ditac, false) => fwd::<0, false>(k, n, x, y, offs),
        (Variant::Ditac, true) => fwd::<0, true>(k, n, x, y, offs),
        (Variant::Ge, false) => fwd::<1, false>(k, n, x, y, offs),
        (Variant::Ge, true) => fwd::<1, true>(k, n, x, y, offs),
        (Variant::Leaky, false) => fwd::<2, false>(k, n, x, y, offs),
        (Variant::Leaky, true) => fwd::<2, true>(k, n, x, y, offs),
    }
}

/// The outer function on 8 lanes: x̃·Φ(x), x̃·Φ(x̃) or LeakyReLU(x̃) (`av` the slope), as the
/// scalar `outer` computes it.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn outer8(variant: Variant, av: __m256, x: __m256, w: __m256) -> __m256 {
    match variant {
        Variant::Ditac => _mm256_mul_ps(w, phi8(x)),
        Variant::Ge => _mm256_mul_ps(w, phi8(w)),
        Variant::Leaky => {
            let pos = _mm256_cmp_ps::<_CMP_GE_OQ>(w, _mm256_setzero_ps());
            _mm256_blendv_ps(_mm256_mul_ps(av, w), w, pos)
        }
    }
}

/// `outer_scalar` on 8 lanes at a time (the tail padded).
///
/// # Safety
/// AVX2 and FMA must be available.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn outer(variant: Variant, alpha: f32, x: &[f32], w: &[f32], y: &mut [f32]) {
    let len = x.len();
    let av = _mm256_set1_ps(alpha);
    let mut j = 0;
    while j < len {
        let rem = (len - j).min(8);
        let mut xb = [0f32; 8];
        let mut wb = [0f32; 8];
        xb[..rem].copy_from_slice(&x[j..j + rem]);
        wb[..rem].copy_from_slice(&w[j..j + rem]);
        let xv = _mm256_loadu_ps(xb.as_ptr());
        let wv = _mm256_loadu_ps(wb.as_ptr());
        let v = outer8(variant, av, xv, wv);
        let mut yb = [0f32; 8];
        _mm256_storeu_ps(yb.as_mut_ptr(), v);
        y[j..j + rem].copy_from_slice(&yb[..rem]);
        j += rem;
    }
}

/// log(x) for positive normal x (Cephes' logf polynomial, about 1 ulp).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn log8(x: __m256) -> __m256 {
    let c = _mm256_set1_ps;
    let xi = _mm256_castps_si256(x);
    let mut e = _mm256_sub_epi32(_mm256_srli_epi32::<23>(xi), _mm256_set1_epi32(127));
    let mut m = _mm256_castsi256_ps(_mm256_or_si256(
        _mm256_and_si256(xi, _mm256_set1_epi32(0x007f_ffff)),
        _mm256_set1_epi32(0x3f80_0000),
    ));
    let big = _mm256_cmp_ps::<_CMP_GT_OQ>(m, c(std::f32::consts::SQRT_2));
    m = _mm256_blendv_ps(m, _mm256_mul_ps(m, c(0.5)), big);
    e = _mm256_sub_epi32(e, _mm256_castps_si256(big)); // big lanes are −1: e + 1
    let ef = _mm256_cvtepi32_ps(e);
    let f = _mm256_sub_ps(m, c(1.0));
    let f2 = _mm256_mul_ps(f, f);
    let mut p = c(7.037_683_6e-2);
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
        p = _mm256_fmadd_ps(p, f, c(k));
    }
    let mut y = _mm256_mul_ps(_mm256_mul_ps(p, f), f2);
    y = _mm256_fmadd_ps(ef, c(-2.121_944_4e-4), y);
    y = _mm256_fnmadd_ps(f2, c(0.5), y);
    _mm256_fmadd_ps(ef, c(0.693_359_4), _mm256_add_ps(f, y))
}

/// exp(a) for |a| < 87 (Cephes' expf polynomial, about 1 ulp).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn exp8(a: __m256) -> __m256 {
    let c = _mm256_set1_ps;
    let a = _mm256_min_ps(c(87.0), _mm256_max_ps(c(-87.0), a));
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        a,
        c(std::f32::consts::LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(n, c(0.693_359_4), a);
    let r = _mm256_fnmadd_ps(n, c(-2.121_944_4e-4), r);
    let mut p = c(1.987_569_1e-4);
    for k in [
        1.398_2e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ] {
        p = _mm256_fmadd_ps(p, r, c(k));
    }
    let e = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), c(1.0));
    let pow2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(127),
    )));
    _mm256_mul_ps(e, pow2)
}

/// A per-cell f32 table of the exact path: 16 entries or fewer in two registers (looked up with
/// two `vpermps` and a blend), else gathered.
struct Tab8 {
    p: *const f32,
    r: [__m256; 2],
}

impl Tab8 {
    /// SAFETY (caller): `v` has at least 16 entries (the per-cell arrays are padded to 16).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn new<const SMALL: bool>(v: &[f32]) -> Tab8 {
        Tab8 {
            p: v.as_ptr(),
            r: if SMALL {
                [
                    _mm256_loadu_ps(v.as_ptr()),
                    _mm256_loadu_ps(v.as_ptr().add(8)),
                ]
            } else {
                [_mm256_setzero_ps(); 2]
            },
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn get<const SMALL: bool>(&self, idx: __m256i) -> __m256 {
        if SMALL {
            let hi = _mm256_castsi256_ps(_mm256_cmpgt_epi32(idx, _mm256_set1_epi32(7)));
            _mm256_blendv_ps(
                _mm256_permutevar8x32_ps(self.r[0], idx),
                _mm256_permutevar8x32_ps(self.r[1], idx),
                hi,
            )
        } else {
            _mm256_i32gather_ps::<4>(self.p, idx)
        }
    }
}

/// A per-cell f64 table: gathered, or (16 entries or fewer) as two f32 tables hi + lo (hi the
/// value rounded to f32, lo the rest rounded: 48 bits, far below the f32 results' rounding).
struct TabD8 {
    p: *const f64,
    hi: Tab8,
    lo: Tab8,
}

impl TabD8 {
    /// SAFETY (caller): `v` has at least 16 entries; `buf` holds the split parts.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn new<const SMALL: bool>(v: &[f64], buf: &mut [[f32; 16]; 2]) -> TabD8 {
        if SMALL {
            for (i, &x) in v[..16].iter().enumerate() {
                let h = x as f32;
                buf[0][i] = h;
                buf[1][i] = (x - h as f64) as f32;
            }
        }
        TabD8 {
            p: v.as_ptr(),
            hi: Tab8::new::<SMALL>(&buf[0]),
            lo: Tab8::new::<SMALL>(&buf[1]),
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn get<const SMALL: bool>(&self, idx: __m256i) -> [__m256d; 2] {
        if SMALL {
            let (h, l) = (
                widen(self.hi.get::<SMALL>(idx)),
                widen(self.lo.get::<SMALL>(idx)),
            );
            [_mm256_add_pd(h[0], l[0]), _mm256_add_pd(h[1], l[1])]
        } else {
            [
                _mm256_i32gather_pd::<8>(self.p, _mm256_castsi256_si128(idx)),
                _mm256_i32gather_pd::<8>(self.p, _mm256_extracti128_si256::<1>(idx)),
            ]
        }
    }
}

/// The cumulative crossing time at index `idx` of the up array (`up` lanes) or of the down one.
/// (A function, not a closure: closures do not inherit the target features, and are not inlined.)
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn cum8<const SMALL: bool>(
    fl: &Flow8,
    idx: __m256i,
    up: __m256,
    base: __m256i,
) -> [__m256d; 2] {
    if SMALL {
        let (g_up, g_dn) = (fl.cum_up.get::<SMALL>(idx), fl.cum_dn.get::<SMALL>(idx));
        // the all-ones mask widens to a negative NaN: blendv reads the sign
        let m = widen(up);
        [
            _mm256_blendv_pd(g_dn[0], g_up[0], m[0]),
            _mm256_blendv_pd(g_dn[1], g_up[1], m[1]),
        ]
    } else {
        fl.cum_up.get::<false>(_mm256_add_epi32(idx, base))
    }
}

/// The tables of the exact path.
struct Flow8 {
    a: Tab8,
    b: Tab8,
    inv_a: Tab8,
    right: Tab8,
    left: Tab8,
    eta: Tab8,
    boa: Tab8,
    ent_up: Tab8,
    ent_dn: Tab8,
    k1: TabD8,
    /// The whole `cum` (gathered with the down array's offset), or its up half.
    cum_up: TabD8,
    cum_dn: TabD8,
    /// The same in f32, for the search (the whole array when gathered).
    cum32_up: Tab8,
    cum32_dn: Tab8,
    dn_base: i32,
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn widen(v: __m256) -> [__m256d; 2] {
    [
        _mm256_cvtps_pd(_mm256_castps256_ps128(v)),
        _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v)),
    ]
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn narrow(v: [__m256d; 2]) -> __m256 {
    _mm256_set_m128(_mm256_cvtpd_ps(v[1]), _mm256_cvtpd_ps(v[0]))
}

/// x̃ of N vectors of 8 lanes in exact mode (x itself outside [a, b]), as `avx512::warp16n`:
/// difw's closed-form integration at a cost that does not depend on the number of cells crossed
/// (one hit time, a binary search of the last cell in the cumulative crossing times, one ψ; see
/// `FlowTables`), the per-cell constants gathered.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn warp8n<const SMALL: bool, const N: usize>(
    k: &ExactKernel,
    fl: &Flow8,
    xv: [__m256; N],
) -> [__m256; N] {
    let f = &k.flow;
    let c = _mm256_set1_ps;
    let sign = c(-0.0);
    let (eps, zero, one) = (c(f32::EPSILON), _mm256_setzero_ps(), c(1.0));
    let zeroi = _mm256_setzero_si256();
    let inr: [__m256; N] = each!(N, h => {
        _mm256_and_ps(
            _mm256_cmp_ps::<_CMP_GE_OQ>(xv[h], c(k.lo)),
            _mm256_cmp_ps::<_CMP_LE_OQ>(xv[h], c(k.hi)),
        )
    });
    let u: [__m256; N] =
        each!(N, h => _mm256_mul_ps(_mm256_add_ps(xv[h], c(k.add_in)), c(k.mul_in)));
    let nc = f.nc as i32;
    let last = _mm256_set1_epi32(nc - 1);
    let ci: [__m256i; N] = each!(N, h => {
        let fl = _mm256_floor_ps(_mm256_mul_ps(u[h], c(nc as f32)));
        let i = _mm256_min_epi32(_mm256_max_epi32(_mm256_cvttps_epi32(fl), zeroi), last);
        _mm256_and_si256(i, _mm256_castps_si256(inr[h]))
    });
    let a0: [__m256; N] = each!(N, h => fl.a.get::<SMALL>(ci[h]));
    let b0: [__m256; N] = each!(N, h => fl.b.get::<SMALL>(ci[h]));
    let v: [__m256; N] = each!(N, h => _mm256_add_ps(_mm256_mul_ps(a0[h], u[h]), b0[h]));
    let up: [__m256; N] = each!(N, h => _mm256_cmp_ps::<_CMP_GT_OQ>(v[h], zero));
    let xc: [__m256; N] = each!(N, h => _mm256_blendv_ps(fl.left.get::<SMALL>(ci[h]), fl.right.get::<SMALL>(ci[h]), up[h]));
    let vc: [__m256; N] = each!(N, h => _mm256_add_ps(_mm256_mul_ps(a0[h], xc[h]), b0[h]));
    let small_a: [__m256; N] =
        each!(N, h => _mm256_cmp_ps::<_CMP_LT_OQ>(_mm256_andnot_ps(sign, a0[h]), eps));
    let mut th: [__m256; N] = each!(N, h => {
        _mm256_mul_ps(log8(_mm256_div_ps(vc[h], v[h])), fl.inv_a.get::<SMALL>(ci[h]))
    });
    for h in 0..N {
        if _mm256_movemask_ps(small_a[h]) != 0 {
            let th_lin = _mm256_div_ps(_mm256_sub_ps(xc[h], u[h]), b0[h]);
            th[h] = _mm256_blendv_ps(th[h], th_lin, small_a[h]);
        }
    }
    let upi: [__m256i; N] = each!(N, h => _mm256_castps_si256(up[h]));
    let cross: [__m256; N] = each!(N, h => {
        let at_last = _mm256_castsi256_ps(_mm256_cmpeq_epi32(ci[h], last));
        let at_first = _mm256_castsi256_ps(_mm256_cmpeq_epi32(ci[h], zeroi));
        let edge = _mm256_blendv_ps(at_first, at_last, up[h]);
        let vc_up = _mm256_cmp_ps::<_CMP_GT_OQ>(vc[h], zero);
        let mut ok = _mm256_andnot_ps(edge, inr[h]);
        ok = _mm256_andnot_ps(_mm256_cmp_ps::<_CMP_LT_OQ>(_mm256_andnot_ps(sign, v[h]), eps), ok);
        ok = _mm256_andnot_ps(_mm256_cmp_ps::<_CMP_LT_OQ>(_mm256_andnot_ps(sign, vc[h]), eps), ok);
        ok = _mm256_andnot_ps(_mm256_xor_ps(vc_up, up[h]), ok);
        _mm256_and_ps(ok, _mm256_cmp_ps::<_CMP_LE_OQ>(th[h], one))
    });
    // Settled in the first cell: ψ(u, 1) = f32(f64(eta·u) + k1), or u + b where |a| < eps.
    let stay: [__m256; N] = each!(N, h => {
        let eu = widen(_mm256_mul_ps(fl.eta.get::<SMALL>(ci[h]), u[h]));
        let k1 = fl.k1.get::<SMALL>(ci[h]);
        let st = narrow([_mm256_add_pd(eu[0], k1[0]), _mm256_add_pd(eu[1], k1[1])]);
        _mm256_blendv_ps(st, _mm256_add_ps(u[h], b0[h]), small_a[h])
    });
    // Crossing lanes: entered cell j at time th; j's index in the up array, or mirrored (+ the
    // down array's offset) in the down one.
    let base: [__m256i; N] =
        each!(N, h => _mm256_andnot_si256(upi[h], _mm256_set1_epi32(fl.dn_base)));
    let target: [[__m256d; 2]; N] = each!(N, h => {
        let j = _mm256_blendv_epi8(
            _mm256_sub_epi32(_mm256_set1_epi32(nc), ci[h]),
            _mm256_add_epi32(ci[h], _mm256_set1_epi32(1)),
            upi[h],
        );
        let gj = cum8::<SMALL>(fl, j, up[h], base[h]);
        let t1 = widen(_mm256_sub_ps(one, th[h]));
        [_mm256_add_pd(gj[0], t1[0]), _mm256_add_pd(gj[1], t1[1])]
    });
    // The last cell: the largest index whose entry time is ≤ target (binary search, in f32).
    let target32: [__m256; N] = each!(N, h => narrow(target[h]));
    let mut pos = [zeroi; N];
    let mut step = (f.span / 2) as i32;
    while step > 0 {
        let sv = _mm256_set1_epi32(step);
        for h in 0..N {
            let cand = _mm256_add_epi32(pos[h], sv);
            let g = if SMALL {
                _mm256_blendv_ps(
                    fl.cum32_dn.get::<SMALL>(cand),
                    fl.cum32_up.get::<SMALL>(cand),
                    up[h],
                )
            } else {
                fl.cum32_up.get::<false>(_mm256_add_epi32(cand, base[h]))
            };
            let le = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(g, target32[h]));
            pos[h] = _mm256_blendv_epi8(pos[h], cand, le);
        }
        step /= 2;
    }
    let trem: [__m256; N] = each!(N, h => {
        let gc = cum8::<SMALL>(fl, pos[h], up[h], base[h]);
        let t = narrow([
            _mm256_sub_pd(target[h][0], gc[0]),
            _mm256_sub_pd(target[h][1], gc[1]),
        ]);
        // 0 in the lanes that do not cross: their garbage would make subnormals below (slow)
        _mm256_and_ps(cross[h], t)
    });
    let cf: [__m256i; N] =
        each!(N, h => _mm256_blendv_epi8(_mm256_sub_epi32(last, pos[h]), pos[h], upi[h]));
    let a1: [__m256; N] = each!(N, h => fl.a.get::<SMALL>(cf[h]));
    let xe: [__m256; N] = each!(N, h => _mm256_blendv_ps(fl.ent_dn.get::<SMALL>(cf[h]), fl.ent_up.get::<SMALL>(cf[h]), up[h]));
    let ones = _mm256_set1_pd(1.0);
    each!(N, h => {
        let eta = exp8(_mm256_mul_ps(trem[h], a1[h]));
        let (ew, bw, xw) = (
            widen(_mm256_mul_ps(eta, xe[h])),
            widen(fl.boa.get::<SMALL>(cf[h])),
            widen(eta),
        );
        let psi = narrow(each!(2, i => {
            _mm256_fmadd_pd(bw[i], _mm256_sub_pd(xw[i], ones), ew[i])
        }));
        let lin = _mm256_add_ps(xe[h], _mm256_mul_ps(trem[h], fl.b.get::<SMALL>(cf[h])));
        let small1 = _mm256_cmp_ps::<_CMP_LT_OQ>(_mm256_andnot_ps(sign, a1[h]), eps);
        let moved = _mm256_blendv_ps(psi, lin, small1);
        let val = _mm256_blendv_ps(stay[h], moved, cross[h]);
        let xt = _mm256_mul_ps(_mm256_add_ps(val, c(k.add_out)), c(k.mul_out));
        _mm256_blendv_ps(xv[h], xt, inr[h])
    })
}

/// Vectors per step of the exact kernel.
const EXACT_N: usize = 4;

/// `exact_forward` 8 lanes at a time, every trajectory in vector form at a constant cost; an
/// in-range lane whose x̃ is not finite (never seen in the tests) goes through `fallback`.
///
/// # Safety
/// AVX2 and FMA must be available; the tables must have the layout `FlowTables` states.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn exact(k: &ExactKernel, x: &[f32], y: &mut [f32], fallback: &dyn Fn(f32) -> f32) {
    let fast = k.fast.len() == 2 * FAST_NODES;
    match (k.flow.nc <= 16, fast) {
        (true, true) => exact_fast::<true>(k, x, y, fallback),
        (false, true) => exact_fast::<false>(k, x, y, fallback),
        (true, false) => exact_impl::<true>(k, x, y, fallback),
        (false, false) => exact_impl::<false>(k, x, y, fallback),
    }
}

/// The outer function on N vectors of 8 lanes (the erf's constants loaded once for all N).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn outer8n<const N: usize>(
    variant: Variant,
    av: __m256,
    x: [__m256; N],
    w: [__m256; N],
) -> [__m256; N] {
    match variant {
        Variant::Ditac => {
            let p = phi8n(x);
            std::array::from_fn(|h| _mm256_mul_ps(w[h], p[h]))
        }
        Variant::Ge => {
            let p = phi8n(w);
            std::array::from_fn(|h| _mm256_mul_ps(w[h], p[h]))
        }
        Variant::Leaky => std::array::from_fn(|h| {
            let pos = _mm256_cmp_ps::<_CMP_GE_OQ>(w[h], _mm256_setzero_ps());
            _mm256_blendv_ps(_mm256_mul_ps(av, w[h]), w[h], pos)
        }),
    }
}

/// The constants of `exact_fast`.
struct Fast8 {
    lo: __m256,
    hi: __m256,
    add_in: __m256,
    mul_in: __m256,
    scale: __m256,
    last: __m256i,
    av: __m256,
    pairs: *const f32,
}

/// x̃ through the table on N vectors and the mask bits (8 per vector) of the in-range lanes
/// left to the constant-cost path; then y.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn fast8n<const N: usize>(
    c: &Fast8,
    variant: Variant,
    xv: [__m256; N],
) -> ([__m256; N], [i32; N]) {
    let zeroi = _mm256_setzero_si256();
    let mut w = [_mm256_setzero_ps(); N];
    let mut slow = [0; N];
    for h in 0..N {
        let inr = _mm256_and_ps(
            _mm256_cmp_ps::<_CMP_GE_OQ>(xv[h], c.lo),
            _mm256_cmp_ps::<_CMP_LE_OQ>(xv[h], c.hi),
        );
        let p = _mm256_mul_ps(
            _mm256_mul_ps(_mm256_add_ps(xv[h], c.add_in), c.mul_in),
            c.scale,
        );
        // NaN and out-of-range positions convert to i32::MIN or large: clamped, unused.
        let i = _mm256_min_epi32(_mm256_max_epi32(_mm256_cvttps_epi32(p), zeroi), c.last);
        let f = _mm256_sub_ps(p, _mm256_cvtepi32_ps(i));
        let (x0, dd) = gather_pairs(c.pairs, i);
        let wh = _mm256_fmadd_ps(f, dd, x0);
        slow[h] = _mm256_movemask_ps(_mm256_and_ps(inr, _mm256_cmp_ps::<_CMP_UNORD_Q>(wh, wh)));
        w[h] = _mm256_blendv_ps(xv[h], wh, inr);
    }
    (outer8n(variant, c.av, xv, w), slow)
}

/// Exact mode through the checked interpolation table (`FastTable`), as `avx512::exact_fast`:
/// the in-range lanes of intervals left to the constant-cost path are collected per block and
/// go through `exact_impl` together.
#[target_feature(enable = "avx2,fma")]
unsafe fn exact_fast<const SMALL: bool>(
    k: &ExactKernel,
    x: &[f32],
    y: &mut [f32],
    fallback: &dyn Fn(f32) -> f32,
) {
    let c = _mm256_set1_ps;
    let cs = Fast8 {
        lo: c(k.lo),
        hi: c(k.hi),
        add_in: c(k.add_in),
        mul_in: c(k.mul_in),
        scale: c((FAST_NODES - 1) as f32),
        last: _mm256_set1_epi32(FAST_NODES as i32 - 2),
        av: c(k.alpha),
        pairs: k.fast.as_ptr(),
    };
    let mut sx = [0f32; BLOCK];
    let mut sy = [0f32; BLOCK];
    let mut sp = [0u32; BLOCK];
    for (xc, yc) in x.chunks(BLOCK).zip(y.chunks_mut(BLOCK)) {
        let len = xc.len();
        let mut cnt = 0;
        let mut collect = |slow: i32, j: usize, cnt: &mut usize| {
            let mut bits = slow;
            while bits != 0 {
                let l = bits.trailing_zeros() as usize;
                sx[*cnt] = xc[j + l];
                sp[*cnt] = (j + l) as u32;
                *cnt += 1;
                bits &= bits - 1;
            }
        };
        let mut j = 0;
        while j + 16 <= len {
            // x ahead, as `avx512::exact_fast`.
            _mm_prefetch::<_MM_HINT_T0>(xc.as_ptr().wrapping_add(j + 512) as *const i8);
            let xv = [
                _mm256_loadu_ps(xc.as_ptr().add(j)),
                _mm256_loadu_ps(xc.as_ptr().add(j + 8)),
            ];
            let (v, slow) = fast8n::<2>(&cs, k.variant, xv);
            _mm256_storeu_ps(yc.as_mut_ptr().add(j), v[0]);
            _mm256_storeu_ps(yc.as_mut_ptr().add(j + 8), v[1]);
            collect(slow[0], j, &mut cnt);
            collect(slow[1], j + 8, &mut cnt);
            j += 16;
        }
        // The tail through buffers, 8 lanes at a time.
        while j < len {
            let take = (len - j).min(8);
            let mut xb = [0f32; 8];
            xb[..take].copy_from_slice(&xc[j..j + take]);
            let (v, slow) = fast8n::<1>(&cs, k.variant, [_mm256_loadu_ps(xb.as_ptr())]);
            let mut yb = [0f32; 8];
            _mm256_storeu_ps(yb.as_mut_ptr(), v[0]);
            yc[j..j + take].copy_from_slice(&yb[..take]);
            collect(slow[0] & ((1 << take) - 1), j, &mut cnt);
            j += 8;
        }
        if cnt > 0 {
            exact_impl::<SMALL>(k, &sx[..cnt], &mut sy[..cnt], fallback);
            for q in 0..cnt {
                yc[sp[q] as usize] = sy[q];
            }
        }
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn exact_impl<const SMALL: bool>(
    k: &ExactKernel,
    x: &[f32],
    y: &mut [f32],
    fallback: &dyn Fn(f32) -> f32,
) {
    let t = &k.flow;
    let half = t.cum.len() / 2;
    let mut bufs = [[[0f32; 16]; 2]; 3];
    let [b_k1, b_up, b_dn] = &mut bufs;
    let fl = Flow8 {
        a: Tab8::new::<SMALL>(t.a),
        b: Tab8::new::<SMALL>(t.b),
        inv_a: Tab8::new::<SMALL>(t.inv_a),
        right: Tab8::new::<SMALL>(t.right),
        left: Tab8::new::<SMALL>(t.left),
        eta: Tab8::new::<SMALL>(t.eta),
        boa: Tab8::new::<SMALL>(t.boa),
        ent_up: Tab8::new::<SMALL>(t.ent_up),
        ent_dn: Tab8::new::<SMALL>(t.ent_dn),
        k1: TabD8::new::<SMALL>(t.k1, b_k1),
        cum_up: TabD8::new::<SMALL>(t.cum, b_up),
        cum_dn: TabD8::new::<SMALL>(&t.cum[half..], b_dn),
        cum32_up: Tab8::new::<SMALL>(t.cum_f32),
        cum32_dn: Tab8::new::<SMALL>(&t.cum_f32[half..]),
        dn_base: half as i32,
    };
    let av = _mm256_set1_ps(k.alpha);
    let (lo, hi) = (_mm256_set1_ps(k.lo), _mm256_set1_ps(k.hi));
    let (sign, inf) = (_mm256_set1_ps(-0.0), _mm256_set1_ps(f32::INFINITY));
    let len = x.len();
    let mut j = 0;
    while j < len {
        let take = (len - j).min(8 * EXACT_N);
        // Full steps straight from x and to y, the last one through buffers.
        let mut xb = [0f32; 8 * EXACT_N];
        let full = take == 8 * EXACT_N;
        if !full {
            xb[..take].copy_from_slice(&x[j..j + take]);
        }
        let src = if full { x.as_ptr().add(j) } else { xb.as_ptr() };
        let xv: [__m256; EXACT_N] = each!(EXACT_N, h => _mm256_loadu_ps(src.add(8 * h)));
        let mut w = warp8n::<SMALL, EXACT_N>(k, &fl, xv);
        for h in 0..EXACT_N {
            // An in-range lane whose x̃ is not finite goes through the integrator (never seen in
            // the tests).
            let inr = _mm256_and_ps(
                _mm256_cmp_ps::<_CMP_GE_OQ>(xv[h], lo),
                _mm256_cmp_ps::<_CMP_LE_OQ>(xv[h], hi),
            );
            let finite = _mm256_cmp_ps::<_CMP_LT_OQ>(_mm256_andnot_ps(sign, w[h]), inf);
            let bad = _mm256_movemask_ps(_mm256_andnot_ps(finite, inr));
            if bad != 0 {
                let mut wb = [0f32; 8];
                let mut xs = [0f32; 8];
                _mm256_storeu_ps(wb.as_mut_ptr(), w[h]);
                _mm256_storeu_ps(xs.as_mut_ptr(), xv[h]);
                for l in 0..8 {
                    if bad & (1 << l) != 0 {
                        wb[l] = fallback(xs[l]);
                    }
                }
                w[h] = _mm256_loadu_ps(wb.as_ptr());
            }
        }
        for h in 0..EXACT_N.min(take.div_ceil(8)) {
            let v = outer8(k.variant, av, xv[h], w[h]);
            let n = (take - 8 * h).min(8);
            if n == 8 {
                _mm256_storeu_ps(y.as_mut_ptr().add(j + 8 * h), v);
            } else {
                let mut yb = [0f32; 8];
                _mm256_storeu_ps(yb.as_mut_ptr(), v);
                y[j + 8 * h..j + 8 * h + n].copy_from_slice(&yb[..n]);
            }
        }
        j += take;
    }
}

/// Lane indices of the set bits of each 8-bit mask, in order (for `_mm256_permutevar8x32`).
static COMPACT: [[u32; 8]; 256] = {
    let mut t = [[0u32; 8]; 256];
    let mut m = 0;
    while m < 256 {
        let (mut k, mut l) = (0, 0);
        while l < 8 {
            if m & (1 << l) != 0 {
                t[m][k] = l as u32;
                k += 1;
            }
            l += 1;
        }
        m += 1;
    }
    t
};

/// Stores the lanes of `mask` (s, node, right weight), in order, at `cur`; returns how many.
/// Writes 8 lanes: `cur + 8` must be within the buffers.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn compact<const LINEAR: bool>(
    mask: __m256,
    s: __m256,
    i: __m256i,
    f: __m256,
    sb: *mut f64,
    ib: *mut u32,
    fb: *mut f32,
) -> usize {
    let m = _mm256_movemask_ps(mask) as usize;
    let perm = _mm256_loadu_si256(COMPACT.get_unchecked(m).as_ptr() as *const __m256i);
    let s = _mm256_permutevar8x32_ps(s, perm);
    _mm256_storeu_pd(sb, _mm256_cvtps_pd(_mm256_castps256_ps128(s)));
    _mm256_storeu_pd(sb.add(4), _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(s)));
    _mm256_storeu_si256(ib as *mut __m256i, _mm256_permutevar8x32_epi32(i, perm));
    if LINEAR {
        _mm256_storeu_ps(fb, _mm256_permutevar8x32_ps(f, perm));
    }
    m.count_ones() as usize
}

/// `grad_elem` on 8 lanes at a time; writes dX, and s, the node and the right weight of the
/// in-range elements only, in order, at the start of sb/ib/fb; returns how many.
///
/// # Safety
/// AVX2 must be available; the tables must hold every row the offsets name.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn backward<const V: u8, const LINEAR: bool>(
    k: &TableKernel,
    g: &GradTables,
    n: usize,
    x: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    offs: Option<&[u32]>,
    sb: &mut [f64],
    ib: &mut [u32],
    fb: &mut [f32],
) -> usize {
    let c = consts(k, n);
    let cs = _mm256_set1_ps;
    let len = x.len();
    assert!(sb.len() >= len && ib.len() >= len && fb.len() >= len);
    let (pairs, xdt) = (k.pairs.as_ptr(), g.xdt.as_ptr());
    let (sp, ip, fp) = (sb.as_mut_ptr(), ib.as_mut_ptr(), fb.as_mut_ptr());
    let one = cs(1.0);
    let mul_out = cs(g.mul_out);
    let mut j = 0;
    // cur ≤ j: the 8 lanes `compact` writes for elements j.. stay below j + 8 ≤ len.
    let mut cur = 0;
    // Two vectors per step while 16 elements remain.
    while j + 16 <= len {
        // x and dY ahead (one cache line per step of 16), as `avx512::backward`.
        _mm_prefetch::<_MM_HINT_T0>(x.as_ptr().wrapping_add(j + 512) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(dy.as_ptr().wrapping_add(j + 512) as *const i8);
        let off = match offs {
            Some(o) => [
                _mm256_loadu_si256(o.as_ptr().add(j) as *const __m256i),
                _mm256_loadu_si256(o.as_ptr().add(j + 8) as *const __m256i),
            ],
            None => [_mm256_setzero_si256(); 2],
        };
        let xv = [
            _mm256_loadu_ps(x.as_ptr().add(j)),
            _mm256_loadu_ps(x.as_ptr().add(j + 8)),
        ];
        let gv = [
            _mm256_loadu_ps(dy.as_ptr().add(j)),
            _mm256_loadu_ps(dy.as_ptr().add(j + 8)),
        ];
        let (d, s, i, f, inr) =
            grad_lanes::<V, LINEAR, 2>(&c, pairs, xdt, one, mul_out, xv, gv, off);
        for h in 0..2 {
            _mm256_storeu_ps(dx.as_mut_ptr().add(j + 8 * h), d[h]);
            cur += compact::<LINEAR>(
                inr[h],
                s[h],
                i[h],
                f[h],
                sp.add(cur),
                ip.add(cur),
                fp.add(cur),
            );
        }
        j += 16;
    }
    while j < len {
        let rem = (len - j).min(8);
        let mut xb = [0f32; 8];
        let mut gb = [0f32; 8];
        let mut ob = [0u32; 8];
        // The rest through the same lanes, padded.
        xb[..rem].copy_from_slice(&x[j..j + rem]);
        gb[..rem].copy_from_slice(&dy[j..j + rem]);
        if let Some(o) = offs {
            ob[..rem].copy_from_slice(&o[j..j + rem]);
        }
        let off = _mm256_loadu_si256(ob.as_ptr() as *const __m256i);
        let xv = _mm256_loadu_ps(xb.as_ptr());
        let gv = _mm256_loadu_ps(gb.as_ptr());
        let (d, s, i, f, inr) =
            grad_lanes::<V, LINEAR, 1>(&c, pairs, xdt, one, mul_out, [xv], [gv], [off]);
        let mut t = [[0f32; 8]; 2];
        let mut ts = [0f64; 8];
        let mut ti = [0u32; 8];
        _mm256_storeu_ps(t[0].as_mut_ptr(), d[0]);
        dx[j..j + rem].copy_from_slice(&t[0][..rem]);
        // Padding lanes are not terms.
        let live = _mm256_castsi256_ps(_mm256_cmpgt_epi32(
            _mm256_set1_epi32(rem as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        ));
        let mask = _mm256_and_ps(inr[0], live);
        let got = compact::<LINEAR>(
            mask,
            s[0],
            i[0],
            f[0],
            ts.as_mut_ptr(),
            ti.as_mut_ptr(),
            t[1].as_mut_ptr(),
        );
        sb[cur..cur + got].copy_from_slice(&ts[..got]);
        ib[cur..cur + got].copy_from_slice(&ti[..got]);
        if LINEAR {
            fb[cur..cur + got].copy_from_slice(&t[1][..got]);
        }
        cur += got;
        j += rem;
    }
    cur
}

/// `grad_elem` on N vectors: dX, s, the node and the right weight (all but dX meaningful
/// only in range) and the in-range mask.
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn grad_lanes<const V: u8, const LINEAR: bool, const N: usize>(
    c: &Consts,
    pairs: *const f32,
    xdt: *const f32,
    one: __m256,
    mul_out: __m256,
    xv: [__m256; N],
    gv: [__m256; N],
    off: [__m256i; N],
) -> (
    [__m256; N],
    [__m256; N],
    [__m256i; N],
    [__m256; N],
    [__m256; N],
) {
    let mut inr = [_mm256_setzero_ps(); N];
    let mut idx = [_mm256_setzero_si256(); N];
    let mut fr = [_mm256_setzero_ps(); N];
    let mut w = [_mm256_setzero_ps(); N];
    let mut dxt = [_mm256_setzero_ps(); N];
    for h in 0..N {
        let (m, i, f) = locate8::<LINEAR>(c, xv[h], off[h]);
        let (wh, dh) = if LINEAR {
            let (x0, dd) = gather_pairs(pairs, i);
            // (x1 − x0)·scale·mul_in, in the scalar order
            let dxt = _mm256_mul_ps(_mm256_mul_ps(dd, c.scale), c.mul_in);
            (_mm256_add_ps(x0, _mm256_mul_ps(f, dd)), dxt)
        } else {
            gather_pairs(xdt, i)
        };
        inr[h] = m;
        idx[h] = i;
        fr[h] = f;
        w[h] = _mm256_blendv_ps(xv[h], wh, m);
        dxt[h] = _mm256_blendv_ps(one, dh, m);
    }
    let zero = _mm256_setzero_ps();
    let (gr, direct): ([__m256; N], [__m256; N]) = match V {
        0 => {
            let p = phi8n_fast(xv);
            let d = pdf8n(xv);
            (p, std::array::from_fn(|h| _mm256_mul_ps(w[h], d[h])))
        }
        1 => {
            let p = phi8n_fast(w);
            let d = pdf8n(w);
            (
                std::array::from_fn(|h| _mm256_add_ps(p[h], _mm256_mul_ps(w[h], d[h]))),
                [zero; N],
            )
        }
        _ => (
            std::array::from_fn(|h| {
                let pos = _mm256_cmp_ps::<_CMP_GE_OQ>(w[h], zero);
                _mm256_blendv_ps(c.alpha, one, pos)
            }),
            [zero; N],
        ),
    };
    let d = std::array::from_fn(|h| {
        _mm256_mul_ps(
            gv[h],
            _mm256_add_ps(_mm256_mul_ps(gr[h], dxt[h]), direct[h]),
        )
    });
    let s = std::array::from_fn(|h| _mm256_mul_ps(_mm256_mul_ps(gv[h], gr[h]), mul_out));
    (d, s, idx, fr, inr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::erf::erf_f32;

    #[test]
    fn erf8_is_as_accurate_as_erf_f32() {
        if !Isa::Avx2.supported() {
            return;
        }
        use std::arch::x86_64::*;
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
        while !xs.len().is_multiple_of(8) {
            xs.push(1.0);
        }
        for c in xs.chunks(8) {
            let mut out = [0f32; 8];
            // SAFETY: AVX2 checked above; 8 values in and out.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), erf8(_mm256_loadu_ps(c.as_ptr()))) };
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

    /// The lane erf gives the scalar erf's bits (NaN for NaN) on every float32 (with
    /// `DITAC_EXHAUSTIVE=1`), else on every 13th float below 8 in magnitude and a sample beyond.
    #[test]
    fn erf8_is_erf_f32_bit_for_bit() {
        if !Isa::Avx2.supported() {
            return;
        }
        use std::arch::x86_64::*;
        let all = std::env::var_os("DITAC_EXHAUSTIVE").is_some();
        let step: u64 = if all {
            1
        } else if cfg!(debug_assertions) {
            40_009
        } else {
            13
        };
        let end: u64 = if all { 1 << 32 } else { 0x4100_0000 };
        let check = |bits: &[u32; 8]| {
            let xs = bits.map(f32::from_bits);
            let mut out = [0f32; 8];
            // SAFETY: AVX2 checked above; 8 values in and out.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), erf8(_mm256_loadu_ps(xs.as_ptr()))) };
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
        let mut lanes = [0u32; 8];
        while b < end {
            for (l, v) in lanes.iter_mut().enumerate() {
                *v = (b + l as u64 * step).min(end - 1) as u32;
            }
            check(&lanes);
            if !all {
                check(&lanes.map(|v| v | 0x8000_0000));
            }
            b += 8 * step;
        }
        // beyond 8: a sample, ±∞ and NaNs
        let mut b = 0x4100_0000u64;
        while b < 0x8000_0000 {
            check(&[0, 1, 2, 3, 4, 5, 6, 7].map(|l| (b as u32 + l * 1_234_567) | (l & 1) << 31));
            b += 8 * 1_234_567;
        }
        check(&[
            0x7f80_0000,
            0xff80_0000,
            0x7fc0_0000,
            0xffc0_0000,
            0x7f80_0001,
            0,
            0x8000_0000,
            0x4000_0000,
        ]);
    }
}
