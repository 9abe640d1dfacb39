//! AVX-512 kernels (F/BW/DQ/VL, 16 lanes): the table forward (bit for bit the scalar body, as the
//! AVX2 lanes), the backward and the exact mode. Masks replace blends, tails go through masked
//! loads and stores, and the dθ terms are compacted with `vcompressps`.

use super::exact::{ExactKernel, FAST_NODES};
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
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
fn erf_pq16n<const N: usize>(a: [__m512; N]) -> ([__m512; N], [__m512; N]) {
    let x2: [__m512; N] = std::array::from_fn(|i| _mm512_mul_ps(a[i], a[i]));
    (horner16n(x2, &ERF_P), horner16n(x2, &ERF_Q))
}

/// k[0]·y^(n−1) + … + k[n − 1] at y = `x2` (n = k.len()) on N vectors, one fused multiply-add
/// per step; each constant is broadcast once for all N.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
fn horner16n<const N: usize>(x2: [__m512; N], k: &[f32]) -> [__m512; N] {
    let c = _mm512_set1_ps;
    let (k0, k1) = (c(k[0]), c(k[1]));
    let mut p: [__m512; N] = std::array::from_fn(|i| _mm512_fmadd_ps(x2[i], k0, k1));
    for &kk in &k[2..] {
        let kv = c(kk);
        for i in 0..N {
            p[i] = _mm512_fmadd_ps(x2[i], p[i], kv);
        }
    }
    p
}

/// The lane form of `erf_f32` on N vectors, operation for operation (fused multiply-adds, a true
/// division), as `avx2::erf8n`: on |x| with x's sign put back, without the clamps that provably
/// change nothing. Bit for bit the scalar erf (tested on every 13th float, and on all of them with
/// `DITAC_EXHAUSTIVE=1`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
pub fn erf16n<const N: usize>(x: [__m512; N]) -> [__m512; N] {
    let c = _mm512_set1_ps;
    let sign = c(-0.0);
    let a: [__m512; N] = std::array::from_fn(|i| _mm512_andnot_ps(sign, x[i]));
    let (mut p, q) = erf_pq16n(a);
    for i in 0..N {
        p[i] = _mm512_mul_ps(a[i], p[i]);
    }
    let (one, lim) = (c(1.0), c(3.92));
    std::array::from_fn(|i| {
        let r = _mm512_div_ps(p[i], q[i]);
        // min returns its second operand (r) when one is NaN, as `clamp`.
        let r = _mm512_min_ps(one, r);
        let big = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(a[i], lim);
        let r = _mm512_mask_blend_ps(big, r, one);
        _mm512_or_ps(r, _mm512_and_ps(x[i], sign))
    })
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
fn phi16n<const N: usize>(v: [__m512; N]) -> [__m512; N] {
    let c = _mm512_set1_ps;
    let s = c(std::f32::consts::FRAC_1_SQRT_2);
    let e: [__m512; N] = erf16n(std::array::from_fn(|i| _mm512_mul_ps(v[i], s)));
    let h = c(0.5);
    std::array::from_fn(|i| _mm512_mul_ps(h, _mm512_add_ps(c(1.0), e[i])))
}

/// Φ for the backward (bit-identity not asked for): fused multiply-adds and p/q through the
/// 14-bit reciprocal estimate and one Newton step (q ≤ −0.0143, far from 0).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
fn phi16n_fast<const N: usize>(v: [__m512; N]) -> [__m512; N] {
    let c = _mm512_set1_ps;
    let (s, sign) = (c(std::f32::consts::FRAC_1_SQRT_2), c(-0.0));
    let x: [__m512; N] = std::array::from_fn(|i| _mm512_mul_ps(v[i], s));
    let a: [__m512; N] = std::array::from_fn(|i| _mm512_andnot_ps(sign, x[i]));
    let (p, q) = erf_pq16n(a);
    let (one, lim, h) = (c(1.0), c(3.92), c(0.5));
    std::array::from_fn(|i| {
        let y0 = _mm512_rcp14_ps(q[i]);
        let y1 = _mm512_fmadd_ps(_mm512_fnmadd_ps(q[i], y0, one), y0, y0);
        let r = _mm512_mul_ps(_mm512_mul_ps(a[i], p[i]), y1);
        let r = _mm512_min_ps(one, r);
        let big = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(a[i], lim);
        let r = _mm512_mask_blend_ps(big, r, one);
        let e = _mm512_or_ps(r, _mm512_and_ps(x[i], sign));
        _mm512_fmadd_ps(e, h, h)
    })
}

/// exp(a) (Cephes' expf polynomial, ≤ 2 ulp) for a in [−87, 87] (clamped there); `zero_below`
/// sets exactly 0 below −87 (the density's tail).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
fn exp16n<const N: usize>(a: [__m512; N], zero_below: bool) -> [__m512; N] {
    let c = _mm512_set1_ps;
    let (lo, hi) = (c(-87.0), c(87.0));
    let tiny: [__mmask16; N] = std::array::from_fn(|i| _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a[i], lo));
    let a: [__m512; N] = std::array::from_fn(|i| _mm512_min_ps(hi, _mm512_max_ps(lo, a[i])));
    let l2e = c(std::f32::consts::LOG2_E);
    let n: [__m512; N] = std::array::from_fn(|i| {
        _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
            a[i], l2e,
        ))
    });
    let (c1, c2) = (c(0.693_359_4), c(-2.121_944_4e-4));
    let r: [__m512; N] =
        std::array::from_fn(|i| _mm512_fnmadd_ps(n[i], c2, _mm512_fnmadd_ps(n[i], c1, a[i])));
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
            p[i] = _mm512_fmadd_ps(p[i], r[i], kv);
        }
    }
    let one = c(1.0);
    std::array::from_fn(|i| {
        let e = _mm512_add_ps(_mm512_fmadd_ps(p[i], _mm512_mul_ps(r[i], r[i]), r[i]), one);
        // e·2^n (n an integer in [−126, 126])
        let v = _mm512_scalef_ps(e, n[i]);
        if zero_below {
            _mm512_mask_blend_ps(tiny[i], v, _mm512_setzero_ps())
        } else {
            v
        }
    })
}

/// The normal density φ(x) = exp(−x²/2)/√(2π) on N vectors.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
fn pdf16n<const N: usize>(x: [__m512; N]) -> [__m512; N] {
    let c = _mm512_set1_ps;
    let cst = c((std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2 * 0.5) as f32);
    let (neg, h) = (c(-0.0), c(0.5));
    let a: [__m512; N] =
        std::array::from_fn(|i| _mm512_mul_ps(_mm512_xor_ps(_mm512_mul_ps(x[i], x[i]), neg), h));
    let e = exp16n(a, true);
    std::array::from_fn(|i| _mm512_mul_ps(cst, e[i]))
}

struct Consts {
    lo: __m512,
    hi: __m512,
    add_in: __m512,
    mul_in: __m512,
    scale: __m512,
    alpha: __m512,
    n_last: __m512i,
    n_last1: __m512i,
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
fn consts(k: &TableKernel, n: usize) -> Consts {
    let c = _mm512_set1_ps;
    Consts {
        lo: c(k.lo),
        hi: c(k.hi),
        add_in: c(k.add_in),
        mul_in: c(k.mul_in),
        scale: c(k.scale),
        alpha: c(k.alpha),
        n_last: _mm512_set1_epi32(n as i32 - 1),
        n_last1: _mm512_set1_epi32(n as i32 - 2),
    }
}

/// In-range mask, node index (row offset added) and right weight of 16 elements: `locate`, as
/// `avx2::locate8` (the same conversions, so the same nodes).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
fn locate16<const LINEAR: bool>(
    c: &Consts,
    xv: __m512,
    off: __m512i,
) -> (__mmask16, __m512i, __m512) {
    let inr =
        _mm512_cmp_ps_mask::<_CMP_GE_OQ>(xv, c.lo) & _mm512_cmp_ps_mask::<_CMP_LE_OQ>(xv, c.hi);
    let u = _mm512_mul_ps(_mm512_add_ps(xv, c.add_in), c.mul_in);
    let p = _mm512_mul_ps(u, c.scale);
    let zero = _mm512_setzero_si512();
    if LINEAR {
        let i = _mm512_cvttps_epi32(p);
        let i = _mm512_min_epi32(_mm512_max_epi32(i, zero), c.n_last1);
        let f = _mm512_sub_ps(p, _mm512_cvtepi32_ps(i));
        (inr, _mm512_add_epi32(i, off), f)
    } else {
        // Round half to even in the current mode, as the scalar ±2^23 rounding.
        let i = _mm512_cvtps_epi32(p);
        let i = _mm512_min_epi32(_mm512_max_epi32(i, zero), c.n_last);
        (inr, _mm512_add_epi32(i, off), _mm512_setzero_ps())
    }
}

/// Gathers 16 pairs of floats (64 bits each, at pair index `idx`): (first, second) by lane.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn gather_pairs(p: *const f32, idx: __m512i) -> (__m512, __m512) {
    let p = p as *const f64;
    let lo = _mm512_castpd_ps(_mm512_i32gather_pd::<8>(_mm512_castsi512_si256(idx), p));
    let hi = _mm512_castpd_ps(_mm512_i32gather_pd::<8>(
        _mm512_extracti64x4_epi64::<1>(idx),
        p,
    ));
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    (
        _mm512_permutex2var_ps(lo, even, hi),
        _mm512_permutex2var_ps(lo, odd, hi),
    )
}

/// The table forward on N vectors (the outer function's erf shares its constants).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn lanes<const V: u8, const LINEAR: bool, const N: usize>(
    c: &Consts,
    xt: *const f32,
    pairs: *const f32,
    xv: [__m512; N],
    off: [__m512i; N],
) -> [__m512; N] {
    let w: [__m512; N] = std::array::from_fn(|h| {
        let (inr, i, f) = locate16::<LINEAR>(c, xv[h], off[h]);
        if LINEAR {
            // x0 + f·(x1 − x0), with x1 − x0 from the pair table (the same bits).
            let (x0, dd) = gather_pairs(pairs, i);
            _mm512_mask_blend_ps(inr, xv[h], _mm512_add_ps(x0, _mm512_mul_ps(f, dd)))
        } else {
            // Out-of-range lanes keep x (masked off: no load).
            _mm512_mask_i32gather_ps::<4>(xv[h], inr, i, xt)
        }
    });
    match V {
        0 => {
            let p = phi16n(xv);
            std::array::from_fn(|h| _mm512_mul_ps(w[h], p[h]))
        }
        1 => {
            let p = phi16n(w);
            std::array::from_fn(|h| _mm512_mul_ps(w[h], p[h]))
        }
        _ => std::array::from_fn(|h| {
            let pos = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(w[h], _mm512_setzero_ps());
            _mm512_mask_blend_ps(pos, _mm512_mul_ps(c.alpha, w[h]), w[h])
        }),
    }
}

/// The mask of the first `rem` lanes (rem ≤ 16).
#[inline(always)]
fn head_mask(rem: usize) -> __mmask16 {
    ((1u32 << rem) - 1) as __mmask16
}

#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn fwd<const V: u8, const LINEAR: bool>(
    k: &TableKernel,
    n: usize,
    x: &[f32],
    y: &mut [f32],
    offs: Option<&[u32]>,
) {
    let c = consts(k, n);
    let len = x.len();
    let (xp, yp, xt, pairs) = (x.as_ptr(), y.as_mut_ptr(), k.xt.as_ptr(), k.pairs.as_ptr());
    let op = offs.map(|o| o.as_ptr() as *const i32);
    let zero = _mm512_setzero_si512();
    let load_off = |j: usize, m: __mmask16| match op {
        Some(p) => _mm512_maskz_loadu_epi32(m, p.add(j)),
        None => zero,
    };
    let mut j = 0;
    while j + 32 <= len {
        let full = 0xffff;
        let xv = [_mm512_loadu_ps(xp.add(j)), _mm512_loadu_ps(xp.add(j + 16))];
        let off = [load_off(j, full), load_off(j + 16, full)];
        let v = lanes::<V, LINEAR, 2>(&c, xt, pairs, xv, off);
        _mm512_storeu_ps(yp.add(j), v[0]);
        _mm512_storeu_ps(yp.add(j + 16), v[1]);
        j += 32;
    }
    // The rest through the same lanes, masked, so that a result never depends on where an element
    // falls in a slice (masked-off lanes are zeros: never loaded, never stored).
    while j < len {
        let m = head_mask((len - j).min(16));
        let xv = _mm512_maskz_loadu_ps(m, xp.add(j));
        let v = lanes::<V, LINEAR, 1>(&c, xt, pairs, [xv], [load_off(j, m)]);
        _mm512_mask_storeu_ps(yp.add(j), m, v[0]);
        j += 16;
    }
}

/// The table forward of `dispatch_scalar`, 16 lanes at a time.
///
/// # Safety
/// AVX-512 F/BW/DQ/VL must be available; `k.xt` must hold every row the offsets name.
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
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

/// The outer function on N vectors of 16 lanes: x̃·Φ(x), x̃·Φ(x̃) or LeakyReLU(x̃) (`av` the
/// slope).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
fn outer16n<const N: usize>(
    variant: Variant,
    av: __m512,
    x: [__m512; N],
    w: [__m512; N],
) -> [__m512; N] {
    match variant {
        Variant::Ditac => {
            let p = phi16n(x);
            std::array::from_fn(|h| _mm512_mul_ps(w[h], p[h]))
        }
        Variant::Ge => {
            let p = phi16n(w);
            std::array::from_fn(|h| _mm512_mul_ps(w[h], p[h]))
        }
        Variant::Leaky => std::array::from_fn(|h| {
            let pos = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(w[h], _mm512_setzero_ps());
            _mm512_mask_blend_ps(pos, _mm512_mul_ps(av, w[h]), w[h])
        }),
    }
}

/// `outer_scalar` 16 lanes at a time (the tail masked).
///
/// # Safety
/// AVX-512 F/BW/DQ/VL must be available.
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
pub unsafe fn outer(variant: Variant, alpha: f32, x: &[f32], w: &[f32], y: &mut [f32]) {
    let len = x.len().min(w.len()).min(y.len());
    let av = _mm512_set1_ps(alpha);
    let mut j = 0;
    while j < len {
        let m = head_mask((len - j).min(16));
        let xv = _mm512_maskz_loadu_ps(m, x.as_ptr().add(j));
        let wv = _mm512_maskz_loadu_ps(m, w.as_ptr().add(j));
        _mm512_mask_storeu_ps(
            y.as_mut_ptr().add(j),
            m,
            outer16n(variant, av, [xv], [wv])[0],
        );
        j += 16;
    }
}

/// `grad_elem` on N vectors: dX, s, the node and the right weight (all but dX meaningful only in
/// range) and the in-range mask.
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn grad_lanes<const V: u8, const LINEAR: bool, const N: usize>(
    c: &Consts,
    pairs: *const f32,
    xdt: *const f32,
    mul_out: __m512,
    xv: [__m512; N],
    gv: [__m512; N],
    off: [__m512i; N],
) -> (
    [__m512; N],
    [__m512; N],
    [__m512i; N],
    [__m512; N],
    [__mmask16; N],
) {
    let one = _mm512_set1_ps(1.0);
    let mut inr = [0; N];
    let mut idx = [_mm512_setzero_si512(); N];
    let mut fr = [_mm512_setzero_ps(); N];
    let mut w = [_mm512_setzero_ps(); N];
    let mut dxt = [_mm512_setzero_ps(); N];
    for h in 0..N {
        let (m, i, f) = locate16::<LINEAR>(c, xv[h], off[h]);
        let (wh, dh) = if LINEAR {
            let (x0, dd) = gather_pairs(pairs, i);
            // (x1 − x0)·scale·mul_in, in the scalar order
            let dxt = _mm512_mul_ps(_mm512_mul_ps(dd, c.scale), c.mul_in);
            (_mm512_add_ps(x0, _mm512_mul_ps(f, dd)), dxt)
        } else {
            gather_pairs(xdt, i)
        };
        inr[h] = m;
        idx[h] = i;
        fr[h] = f;
        w[h] = _mm512_mask_blend_ps(m, xv[h], wh);
        dxt[h] = _mm512_mask_blend_ps(m, one, dh);
    }
    let zero = _mm512_setzero_ps();
    let (gr, direct): ([__m512; N], [__m512; N]) = match V {
        0 => {
            let p = phi16n_fast(xv);
            let d = pdf16n(xv);
            (p, std::array::from_fn(|h| _mm512_mul_ps(w[h], d[h])))
        }
        1 => {
            let p = phi16n_fast(w);
            let d = pdf16n(w);
            (
                std::array::from_fn(|h| _mm512_add_ps(p[h], _mm512_mul_ps(w[h], d[h]))),
                [zero; N],
            )
        }
        _ => (
            std::array::from_fn(|h| {
                let pos = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(w[h], zero);
                _mm512_mask_blend_ps(pos, c.alpha, one)
            }),
            [zero; N],
        ),
    };
    let d = std::array::from_fn(|h| {
        _mm512_mul_ps(
            gv[h],
            _mm512_add_ps(_mm512_mul_ps(gr[h], dxt[h]), direct[h]),
        )
    });
    let s = std::array::from_fn(|h| _mm512_mul_ps(_mm512_mul_ps(gv[h], gr[h]), mul_out));
    (d, s, idx, fr, inr)
}

/// Stores the lanes of `mask` (s in f64, node, right weight), in order, at the pointers; returns
/// how many. Writes 16 lanes: 16 entries from each pointer must be within the buffers.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn compact<const LINEAR: bool>(
    mask: __mmask16,
    s: __m512,
    i: __m512i,
    f: __m512,
    sb: *mut f64,
    ib: *mut u32,
    fb: *mut f32,
) -> usize {
    let s = _mm512_maskz_compress_ps(mask, s);
    _mm512_storeu_pd(sb, _mm512_cvtps_pd(_mm512_castps512_ps256(s)));
    _mm512_storeu_pd(sb.add(8), _mm512_cvtps_pd(_mm512_extractf32x8_ps::<1>(s)));
    _mm512_storeu_si512(ib as *mut __m512i, _mm512_maskz_compress_epi32(mask, i));
    if LINEAR {
        _mm512_storeu_ps(fb, _mm512_maskz_compress_ps(mask, f));
    }
    mask.count_ones() as usize
}

/// `grad_elem` 16 lanes at a time; writes dX, and s, the node and the right weight of the
/// in-range elements only, in order, at the start of sb/ib/fb; returns how many.
///
/// # Safety
/// AVX-512 F/BW/DQ/VL must be available; the tables must hold every row the offsets name.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
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
    let len = x.len();
    assert!(sb.len() >= len && ib.len() >= len && fb.len() >= len);
    assert!(dy.len() == len && dx.len() == len);
    let (pairs, xdt) = (k.pairs.as_ptr(), g.xdt.as_ptr());
    let (sp, ip, fp) = (sb.as_mut_ptr(), ib.as_mut_ptr(), fb.as_mut_ptr());
    let mul_out = _mm512_set1_ps(g.mul_out);
    let op = offs.map(|o| o.as_ptr() as *const i32);
    let load_off = |j: usize, m: __mmask16| match op {
        Some(p) => _mm512_maskz_loadu_epi32(m, p.add(j)),
        None => _mm512_setzero_si512(),
    };
    let mut j = 0;
    // cur ≤ j: the 16 lanes `compact` writes for elements j.. stay below j + 16 ≤ len.
    let mut cur = 0;
    while j + 32 <= len {
        // x and dY ahead, both cache lines of the step (two streams in, one out: the hardware
        // prefetcher alone falls behind at sizes beyond the caches; a prefetch never faults).
        for ahead in [512, 528] {
            _mm_prefetch::<_MM_HINT_T0>(x.as_ptr().wrapping_add(j + ahead) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(dy.as_ptr().wrapping_add(j + ahead) as *const i8);
        }
        let off = [load_off(j, 0xffff), load_off(j + 16, 0xffff)];
        let xv = [
            _mm512_loadu_ps(x.as_ptr().add(j)),
            _mm512_loadu_ps(x.as_ptr().add(j + 16)),
        ];
        let gv = [
            _mm512_loadu_ps(dy.as_ptr().add(j)),
            _mm512_loadu_ps(dy.as_ptr().add(j + 16)),
        ];
        let (d, s, i, f, inr) = grad_lanes::<V, LINEAR, 2>(&c, pairs, xdt, mul_out, xv, gv, off);
        for h in 0..2 {
            _mm512_storeu_ps(dx.as_mut_ptr().add(j + 16 * h), d[h]);
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
        j += 32;
    }
    while j < len {
        let rem = (len - j).min(16);
        let m = head_mask(rem);
        let xv = _mm512_maskz_loadu_ps(m, x.as_ptr().add(j));
        let gv = _mm512_maskz_loadu_ps(m, dy.as_ptr().add(j));
        let (d, s, i, f, inr) =
            grad_lanes::<V, LINEAR, 1>(&c, pairs, xdt, mul_out, [xv], [gv], [load_off(j, m)]);
        _mm512_mask_storeu_ps(dx.as_mut_ptr().add(j), m, d[0]);
        // Padding lanes are not terms; the compacted lanes go through a buffer of 16.
        let (mut ts, mut ti, mut tf) = ([0f64; 16], [0u32; 16], [0f32; 16]);
        let got = compact::<LINEAR>(
            inr[0] & m,
            s[0],
            i[0],
            f[0],
            ts.as_mut_ptr(),
            ti.as_mut_ptr(),
            tf.as_mut_ptr(),
        );
        sb[cur..cur + got].copy_from_slice(&ts[..got]);
        ib[cur..cur + got].copy_from_slice(&ti[..got]);
        if LINEAR {
            fb[cur..cur + got].copy_from_slice(&tf[..got]);
        }
        cur += got;
        j += rem;
    }
    cur
}

/// A per-cell f32 table: in one register (16 cells or fewer, looked up with `vpermps`) or in
/// memory (gathered).
struct Tab {
    p: *const f32,
    r: __m512,
}

impl Tab {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
    unsafe fn new<const SMALL: bool>(v: &[f32]) -> Tab {
        Tab {
            p: v.as_ptr(),
            // SAFETY (caller): the per-cell arrays have at least 16 entries.
            r: if SMALL {
                _mm512_loadu_ps(v.as_ptr())
            } else {
                _mm512_setzero_ps()
            },
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
    unsafe fn get<const SMALL: bool>(&self, idx: __m512i) -> __m512 {
        if SMALL {
            _mm512_permutexvar_ps(idx, self.r)
        } else {
            _mm512_i32gather_ps::<4>(idx, self.p)
        }
    }
}

/// 16 f32 lanes as two halves of 8 f64.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
fn widen(v: __m512) -> [__m512d; 2] {
    [
        _mm512_cvtps_pd(_mm512_castps512_ps256(v)),
        _mm512_cvtps_pd(_mm512_extractf32x8_ps::<1>(v)),
    ]
}

/// Two halves of 8 f64 rounded to 16 f32 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
fn narrow(v: [__m512d; 2]) -> __m512 {
    _mm512_insertf32x8::<1>(
        _mm512_castps256_ps512(_mm512_cvtpd_ps(v[0])),
        _mm512_cvtpd_ps(v[1]),
    )
}

/// A per-cell f64 table (16 cells in two registers, looked up with `vpermt2pd`, or gathered).
struct TabD {
    p: *const f64,
    r: [__m512d; 2],
}

impl TabD {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
    unsafe fn new<const SMALL: bool>(v: &[f64]) -> TabD {
        TabD {
            p: v.as_ptr(),
            r: if SMALL {
                [
                    _mm512_loadu_pd(v.as_ptr()),
                    _mm512_loadu_pd(v.as_ptr().add(8)),
                ]
            } else {
                [_mm512_setzero_pd(); 2]
            },
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
    unsafe fn get<const SMALL: bool>(&self, idx: __m512i) -> [__m512d; 2] {
        let h = [
            _mm512_castsi512_si256(idx),
            _mm512_extracti64x4_epi64::<1>(idx),
        ];
        std::array::from_fn(|i| {
            if SMALL {
                _mm512_permutex2var_pd(self.r[0], _mm512_cvtepi32_epi64(h[i]), self.r[1])
            } else {
                _mm512_i32gather_pd::<8>(h[i], self.p)
            }
        })
    }
}

/// log(x) for positive normal x (Cephes' logf polynomial, about 1 ulp), as `avx2::log8`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
fn log16(x: __m512) -> __m512 {
    let c = _mm512_set1_ps;
    let xi = _mm512_castps_si512(x);
    let e = _mm512_sub_epi32(_mm512_srli_epi32::<23>(xi), _mm512_set1_epi32(127));
    let m = _mm512_castsi512_ps(_mm512_or_si512(
        _mm512_and_si512(xi, _mm512_set1_epi32(0x007f_ffff)),
        _mm512_set1_epi32(0x3f80_0000),
    ));
    let big = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(m, c(std::f32::consts::SQRT_2));
    let m = _mm512_mask_mul_ps(m, big, m, c(0.5));
    let e = _mm512_mask_add_epi32(e, big, e, _mm512_set1_epi32(1));
    let ef = _mm512_cvtepi32_ps(e);
    let f = _mm512_sub_ps(m, c(1.0));
    let f2 = _mm512_mul_ps(f, f);
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
        p = _mm512_fmadd_ps(p, f, c(k));
    }
    let mut y = _mm512_mul_ps(_mm512_mul_ps(p, f), f2);
    y = _mm512_fmadd_ps(ef, c(-2.121_944_4e-4), y);
    y = _mm512_fnmadd_ps(f2, c(0.5), y);
    _mm512_fmadd_ps(ef, c(0.693_359_4), _mm512_add_ps(f, y))
}

/// The cumulative crossing time at index `idx` of the up array (`up` lanes) or of the down one.
/// (A function, not a closure: closures do not inherit the target features, and are not inlined.)
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn cum16<const SMALL: bool>(f: &Flow, idx: __m512i, up: __mmask16) -> [__m512d; 2] {
    if SMALL {
        let (g_up, g_dn) = (f.cum_up.get::<SMALL>(idx), f.cum_dn.get::<SMALL>(idx));
        [
            _mm512_mask_blend_pd(up as __mmask8, g_dn[0], g_up[0]),
            _mm512_mask_blend_pd((up >> 8) as __mmask8, g_dn[1], g_up[1]),
        ]
    } else {
        let base = _mm512_maskz_mov_epi32(!up, _mm512_set1_epi32(f.dn_base));
        f.cum_up.get::<false>(_mm512_add_epi32(idx, base))
    }
}

/// `cum16` in f32 (one lookup for 16 lanes).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn cum16_f32<const SMALL: bool>(f: &Flow, idx: __m512i, up: __mmask16) -> __m512 {
    if SMALL {
        _mm512_mask_blend_ps(
            up,
            f.cum32_dn.get::<SMALL>(idx),
            f.cum32_up.get::<SMALL>(idx),
        )
    } else {
        let base = _mm512_maskz_mov_epi32(!up, _mm512_set1_epi32(f.dn_base));
        f.cum32_up.get::<false>(_mm512_add_epi32(idx, base))
    }
}

/// The constants of the exact path.
struct Flow {
    a: Tab,
    b: Tab,
    inv_a: Tab,
    right: Tab,
    left: Tab,
    eta: Tab,
    boa: Tab,
    ent_up: Tab,
    ent_dn: Tab,
    k1: TabD,
    cum_up: TabD,
    cum_dn: TabD,
    /// The same in f32, for the search (the whole array when gathered).
    cum32_up: Tab,
    cum32_dn: Tab,
    /// The offset of the down array in `cum` (gathered path).
    dn_base: i32,
    span: i32,
    nc: i32,
}

/// x̃ of N vectors of 16 lanes in exact mode (x itself outside [a, b]): difw's closed-form
/// integration at a cost that does not depend on the number of cells crossed (see `FlowTables`).
/// The N vectors go through each step together: one vector is a chain of ~300 cycles of latency
/// (log, search, exp), which the core only overlaps across vectors written side by side.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn warp16n<const SMALL: bool, const N: usize>(
    k: &ExactKernel,
    f: &Flow,
    xv: [__m512; N],
) -> [__m512; N] {
    let c = _mm512_set1_ps;
    let eps = c(f32::EPSILON);
    let (zero, zeroi, one) = (_mm512_setzero_ps(), _mm512_setzero_si512(), c(1.0));
    let (lo, hi) = (c(k.lo), c(k.hi));
    let inr: [__mmask16; N] = each!(N, h => {
        _mm512_cmp_ps_mask::<_CMP_GE_OQ>(xv[h], lo) & _mm512_cmp_ps_mask::<_CMP_LE_OQ>(xv[h], hi)
    });
    let (add_in, mul_in, ncf) = (c(k.add_in), c(k.mul_in), c(f.nc as f32));
    let u: [__m512; N] = each!(N, h => _mm512_mul_ps(_mm512_add_ps(xv[h], add_in), mul_in));
    // cell_of: clamp(floor(u·nc), 0, nc − 1); out-of-range lanes: cell 0, unused
    let last = _mm512_set1_epi32(f.nc - 1);
    let ci: [__m512i; N] = each!(N, h => {
        let fl = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(u[h], ncf),
        );
        let i = _mm512_min_epi32(_mm512_max_epi32(_mm512_cvttps_epi32(fl), zeroi), last);
        _mm512_maskz_mov_epi32(inr[h], i)
    });
    let a0: [__m512; N] = each!(N, h => f.a.get::<SMALL>(ci[h]));
    let b0: [__m512; N] = each!(N, h => f.b.get::<SMALL>(ci[h]));
    // The first step, in difw's float32 operations: v, the boundary ahead, its velocity.
    let v: [__m512; N] = each!(N, h => _mm512_add_ps(_mm512_mul_ps(a0[h], u[h]), b0[h]));
    let up: [__mmask16; N] = each!(N, h => _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v[h], zero));
    let xc: [__m512; N] = each!(N, h => {
        _mm512_mask_blend_ps(
            up[h],
            f.left.get::<SMALL>(ci[h]),
            f.right.get::<SMALL>(ci[h]),
        )
    });
    let vc: [__m512; N] = each!(N, h => _mm512_add_ps(_mm512_mul_ps(a0[h], xc[h]), b0[h]));
    let small_a: [__mmask16; N] =
        each!(N, h => _mm512_cmp_ps_mask::<_CMP_LT_OQ>(_mm512_abs_ps(a0[h]), eps));
    let q: [__m512; N] = each!(N, h => _mm512_div_ps(vc[h], v[h]));
    let lg: [__m512; N] = each!(N, h => log16(q[h]));
    let mut th: [__m512; N] = each!(N, h => _mm512_mul_ps(lg[h], f.inv_a.get::<SMALL>(ci[h])));
    // (xc − u)/b where |a| < eps (rare: only then the division)
    for h in 0..N {
        if small_a[h] != 0 {
            let th_lin = _mm512_div_ps(_mm512_sub_ps(xc[h], u[h]), b0[h]);
            th[h] = _mm512_mask_mov_ps(th[h], small_a[h], th_lin);
        }
    }
    let cross: [__mmask16; N] = each!(N, h => {
        let edge = (up[h] & _mm512_cmpeq_epi32_mask(ci[h], last))
            | (!up[h] & _mm512_cmpeq_epi32_mask(ci[h], zeroi));
        let vc_up = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(vc[h], zero);
        let can = !edge
            & !_mm512_cmp_ps_mask::<_CMP_LT_OQ>(_mm512_abs_ps(v[h]), eps)
            & !_mm512_cmp_ps_mask::<_CMP_LT_OQ>(_mm512_abs_ps(vc[h]), eps)
            & !(vc_up ^ up[h]);
        inr[h] & can & _mm512_cmp_ps_mask::<_CMP_LE_OQ>(th[h], one)
    });
    // Settled in the first cell: ψ(u, 1) = f32(f64(eta·u) + k1) (the integrator's bits), or
    // u + b where |a| < eps.
    let stay: [__m512; N] = each!(N, h => {
        let eu = widen(_mm512_mul_ps(f.eta.get::<SMALL>(ci[h]), u[h]));
        let k1 = f.k1.get::<SMALL>(ci[h]);
        let st = narrow([_mm512_add_pd(eu[0], k1[0]), _mm512_add_pd(eu[1], k1[1])]);
        _mm512_mask_blend_ps(small_a[h], st, _mm512_add_ps(u[h], b0[h]))
    });
    // Crossing lanes (computed for every vector: nearly every vector has one): entered cell j
    // at time th, j's index in the up array, or mirrored in the down array.
    let t1: [[__m512d; 2]; N] = each!(N, h => widen(_mm512_sub_ps(one, th[h])));
    let (onei, ncv) = (_mm512_set1_epi32(1), _mm512_set1_epi32(f.nc));
    let target: [[__m512d; 2]; N] = each!(N, h => {
        let j = _mm512_mask_blend_epi32(
            up[h],
            _mm512_sub_epi32(ncv, ci[h]),
            _mm512_add_epi32(ci[h], onei),
        );
        let gj = cum16::<SMALL>(f, j, up[h]);
        [
            _mm512_add_pd(gj[0], t1[h][0]),
            _mm512_add_pd(gj[1], t1[h][1]),
        ]
    });
    // The last cell: the largest index whose entry time is ≤ target (binary search, in f32).
    let target32: [__m512; N] = each!(N, h => narrow(target[h]));
    let mut pos = [zeroi; N];
    let mut step = f.span / 2;
    while step > 0 {
        let sv = _mm512_set1_epi32(step);
        for h in 0..N {
            let cand = _mm512_add_epi32(pos[h], sv);
            let g = cum16_f32::<SMALL>(f, cand, up[h]);
            let le = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(g, target32[h]);
            pos[h] = _mm512_mask_mov_epi32(pos[h], le, cand);
        }
        step /= 2;
    }
    let trem: [__m512; N] = each!(N, h => {
        let gc = cum16::<SMALL>(f, pos[h], up[h]);
        let t = narrow([
            _mm512_sub_pd(target[h][0], gc[0]),
            _mm512_sub_pd(target[h][1], gc[1]),
        ]);
        // 0 in the lanes that do not cross: their garbage would make subnormals below (slow)
        _mm512_maskz_mov_ps(cross[h], t)
    });
    let cf: [__m512i; N] =
        each!(N, h => _mm512_mask_blend_epi32(up[h], _mm512_sub_epi32(last, pos[h]), pos[h]));
    let a1: [__m512; N] = each!(N, h => f.a.get::<SMALL>(cf[h]));
    let xe: [__m512; N] = each!(N, h => {
        _mm512_mask_blend_ps(
            up[h],
            f.ent_dn.get::<SMALL>(cf[h]),
            f.ent_up.get::<SMALL>(cf[h]),
        )
    });
    // ψ(xe, trem) in the last cell: f32(f64(eta·xe) + f64(b/a)·(f64(eta) − 1)), eta = exp(trem·a)
    let eta = exp16n::<N>(each!(N, h => _mm512_mul_ps(trem[h], a1[h])), false);
    let ones = _mm512_set1_pd(1.0);
    let (add_out, mul_out) = (c(k.add_out), c(k.mul_out));
    each!(N, h => {
        let (ew, bw, xw) = (
            widen(_mm512_mul_ps(eta[h], xe[h])),
            widen(f.boa.get::<SMALL>(cf[h])),
            widen(eta[h]),
        );
        let psi = narrow(each!(2, i => {
            _mm512_fmadd_pd(bw[i], _mm512_sub_pd(xw[i], ones), ew[i])
        }));
        let lin = _mm512_add_ps(xe[h], _mm512_mul_ps(trem[h], f.b.get::<SMALL>(cf[h])));
        let small1 = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(_mm512_abs_ps(a1[h]), eps);
        let val = _mm512_mask_mov_ps(stay[h], cross[h], _mm512_mask_blend_ps(small1, psi, lin));
        let xt = _mm512_mul_ps(_mm512_add_ps(val, add_out), mul_out);
        _mm512_mask_blend_ps(inr[h], xv[h], xt)
    })
}

/// Vectors per step of the exact kernel.
const EXACT_N: usize = 4;

#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn exact_impl<const SMALL: bool>(
    k: &ExactKernel,
    x: &[f32],
    y: &mut [f32],
    fallback: &dyn Fn(f32) -> f32,
) {
    let t = &k.flow;
    let f = Flow {
        a: Tab::new::<SMALL>(t.a),
        b: Tab::new::<SMALL>(t.b),
        inv_a: Tab::new::<SMALL>(t.inv_a),
        right: Tab::new::<SMALL>(t.right),
        left: Tab::new::<SMALL>(t.left),
        eta: Tab::new::<SMALL>(t.eta),
        boa: Tab::new::<SMALL>(t.boa),
        ent_up: Tab::new::<SMALL>(t.ent_up),
        ent_dn: Tab::new::<SMALL>(t.ent_dn),
        k1: TabD::new::<SMALL>(t.k1),
        cum_up: TabD::new::<SMALL>(t.cum),
        cum_dn: TabD::new::<SMALL>(&t.cum[t.cum.len() / 2..]),
        cum32_up: Tab::new::<SMALL>(t.cum_f32),
        cum32_dn: Tab::new::<SMALL>(&t.cum_f32[t.cum_f32.len() / 2..]),
        dn_base: (t.cum.len() / 2) as i32,
        span: t.span as i32,
        nc: t.nc as i32,
    };
    let av = _mm512_set1_ps(k.alpha);
    let len = x.len();
    let mut j = 0;
    // N vectors at a time, the rest one (masked) vector at a time.
    while j + 16 * EXACT_N <= len {
        let xv: [__m512; EXACT_N] =
            std::array::from_fn(|h| _mm512_loadu_ps(x.as_ptr().add(j + 16 * h)));
        let w = warp16n::<SMALL, EXACT_N>(k, &f, xv);
        let p = outer16n(k.variant, av, xv, w);
        for h in 0..EXACT_N {
            let w1 = safety_net(k, xv[h], w[h], 0xffff, &x[j + 16 * h..], fallback);
            let v = if w1.1 {
                outer16n(k.variant, av, [xv[h]], [w1.0])[0]
            } else {
                p[h]
            };
            _mm512_storeu_ps(y.as_mut_ptr().add(j + 16 * h), v);
        }
        j += 16 * EXACT_N;
    }
    while j < len {
        let m = head_mask((len - j).min(16));
        let xv = _mm512_maskz_loadu_ps(m, x.as_ptr().add(j));
        let w = warp16n::<SMALL, 1>(k, &f, [xv])[0];
        let w = safety_net(k, xv, w, m, &x[j..], fallback).0;
        _mm512_mask_storeu_ps(
            y.as_mut_ptr().add(j),
            m,
            outer16n(k.variant, av, [xv], [w])[0],
        );
        j += 16;
    }
}

/// A safety net, never taken in the tests: an in-range lane (of `m`) whose x̃ is not finite (an
/// overflow in b/a, say) goes through the integrator. Returns x̃ and whether a lane changed.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn safety_net(
    k: &ExactKernel,
    xv: __m512,
    w: __m512,
    m: __mmask16,
    x: &[f32],
    fallback: &dyn Fn(f32) -> f32,
) -> (__m512, bool) {
    let c = _mm512_set1_ps;
    let inr = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(xv, c(k.lo))
        & _mm512_cmp_ps_mask::<_CMP_LE_OQ>(xv, c(k.hi));
    let bad = inr & m & !_mm512_cmp_ps_mask::<_CMP_LT_OQ>(_mm512_abs_ps(w), c(f32::INFINITY));
    if bad == 0 {
        return (w, false);
    }
    let mut wb = [0f32; 16];
    _mm512_storeu_ps(wb.as_mut_ptr(), w);
    for (l, wl) in wb.iter_mut().enumerate() {
        if bad & (1 << l) != 0 {
            *wl = fallback(x[l]);
        }
    }
    (_mm512_loadu_ps(wb.as_ptr()), true)
}

/// Exact mode, 16 lanes at a time, every trajectory in vector form at a constant cost (see
/// `FlowTables`); the per-cell tables sit in registers when there are 16 cells or fewer.
///
/// # Safety
/// AVX-512 F/BW/DQ/VL must be available; the tables must have the layout `FlowTables` states.
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
pub unsafe fn exact(k: &ExactKernel, x: &[f32], y: &mut [f32], fallback: &dyn Fn(f32) -> f32) {
    let fast = k.fast.len() == 2 * FAST_NODES;
    match (k.flow.nc <= 16, fast) {
        (true, true) => exact_fast::<true>(k, x, y, fallback),
        (false, true) => exact_fast::<false>(k, x, y, fallback),
        (true, false) => exact_impl::<true>(k, x, y, fallback),
        (false, false) => exact_impl::<false>(k, x, y, fallback),
    }
}

/// Exact mode through the checked interpolation table ([`FastTable`]): x̃ = x̃_i + f·(x̃_{i+1} −
/// x̃_i) with one 64-bit gather per lane; the in-range lanes of intervals left to the
/// constant-cost path (a NaN difference) are collected, in order, per block and go through
/// `exact_impl` together.
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn exact_fast<const SMALL: bool>(
    k: &ExactKernel,
    x: &[f32],
    y: &mut [f32],
    fallback: &dyn Fn(f32) -> f32,
) {
    let c = _mm512_set1_ps;
    let (lo, hi, add_in, mul_in) = (c(k.lo), c(k.hi), c(k.add_in), c(k.mul_in));
    let scale = c((FAST_NODES - 1) as f32);
    let last = _mm512_set1_epi32(FAST_NODES as i32 - 2);
    let (zeroi, av) = (_mm512_setzero_si512(), c(k.alpha));
    let lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let pairs = k.fast.as_ptr();
    // The slow lanes of a block: x, position; `compress` writes 16 lanes, hence the padding.
    let mut sx = [0f32; BLOCK + 16];
    let mut sy = [0f32; BLOCK + 16];
    let mut sp = [0u32; BLOCK + 16];
    for (xc, yc) in x.chunks(BLOCK).zip(y.chunks_mut(BLOCK)) {
        let len = xc.len();
        let mut cnt = 0;
        let mut j = 0;
        while j < len {
            // Full vectors unmasked (masked stores are slow on some cores), the tail masked.
            let full = len - j >= 16;
            let m = head_mask((len - j).min(16));
            // x ahead: the table's gathers miss L1 (64 KB) and would otherwise leave the stream
            // of x waiting at large sizes (a prefetch never faults, past the end included).
            _mm_prefetch::<_MM_HINT_T0>(xc.as_ptr().wrapping_add(j + 512) as *const i8);
            let xv = if full {
                _mm512_loadu_ps(xc.as_ptr().add(j))
            } else {
                _mm512_maskz_loadu_ps(m, xc.as_ptr().add(j))
            };
            let inr = m
                & _mm512_cmp_ps_mask::<_CMP_GE_OQ>(xv, lo)
                & _mm512_cmp_ps_mask::<_CMP_LE_OQ>(xv, hi);
            let p = _mm512_mul_ps(_mm512_mul_ps(_mm512_add_ps(xv, add_in), mul_in), scale);
            // NaN and out-of-range positions convert to i32::MIN or large: clamped, unused.
            let i = _mm512_min_epi32(_mm512_max_epi32(_mm512_cvttps_epi32(p), zeroi), last);
            let f = _mm512_sub_ps(p, _mm512_cvtepi32_ps(i));
            let (x0, dd) = gather_pairs(pairs, i);
            let w = _mm512_fmadd_ps(f, dd, x0);
            let slow = inr & _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(w, w);
            let w = _mm512_mask_blend_ps(inr, xv, w);
            let v = outer16n(k.variant, av, [xv], [w])[0];
            if full {
                _mm512_storeu_ps(yc.as_mut_ptr().add(j), v);
            } else {
                _mm512_mask_storeu_ps(yc.as_mut_ptr().add(j), m, v);
            }
            if slow != 0 {
                _mm512_storeu_ps(sx.as_mut_ptr().add(cnt), _mm512_maskz_compress_ps(slow, xv));
                let pos = _mm512_add_epi32(lane, _mm512_set1_epi32(j as i32));
                _mm512_storeu_si512(
                    sp.as_mut_ptr().add(cnt) as *mut __m512i,
                    _mm512_maskz_compress_epi32(slow, pos),
                );
                cnt += slow.count_ones() as usize;
            }
            j += 16;
        }
        if cnt > 0 {
            exact_impl::<SMALL>(k, &sx[..cnt], &mut sy[..cnt], fallback);
            for q in 0..cnt {
                yc[sp[q] as usize] = sy[q];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::erf::erf_f32;

    /// The lane erf gives the scalar erf's bits on every 13th float below 8 in magnitude (both
    /// signs), on all float32 with `DITAC_EXHAUSTIVE=1`, and on ±∞ and NaNs.
    #[test]
    fn erf16_is_erf_f32_bit_for_bit() {
        if !Isa::Avx512.supported() {
            println!("skipped: no AVX-512 on this CPU");
            return;
        }
        let all = std::env::var_os("DITAC_EXHAUSTIVE").is_some();
        let step: u64 = if all {
            1
        } else if cfg!(debug_assertions) {
            40_009
        } else {
            13
        };
        let end: u64 = if all { 1 << 32 } else { 0x4100_0000 };
        let check = |bits: &[u32; 16]| {
            let xs = bits.map(f32::from_bits);
            let mut out = [0f32; 16];
            // SAFETY: AVX-512 checked above; 16 values in and out.
            unsafe {
                _mm512_storeu_ps(out.as_mut_ptr(), erf16n([_mm512_loadu_ps(xs.as_ptr())])[0])
            };
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
        let mut lanes = [0u32; 16];
        while b < end {
            for (l, v) in lanes.iter_mut().enumerate() {
                *v = (b + l as u64 * step).min(end - 1) as u32;
            }
            check(&lanes);
            if !all {
                check(&lanes.map(|v| v | 0x8000_0000));
            }
            b += 16 * step;
        }
        let mut sp = [0u32; 16];
        sp[..8].copy_from_slice(&[
            0x7f80_0000,
            0xff80_0000,
            0x7fc0_0000,
            0xffc0_0000,
            0x7f80_0001,
            0,
            0x8000_0000,
            0x4000_0000,
        ]);
        check(&sp);
    }
}
