//! AVX-512 F/BW/DQ/VL (16 lanes): masks are mask registers, tails are masked loads and stores,
//! compaction is `vcompressps`, small per-cell tables sit in one register (`vpermps`).

use super::Lanes;
use std::arch::x86_64::*;

/// The AVX-512 token.
#[derive(Clone, Copy)]
pub(in crate::core::kernels) struct Avx512(());

/// A per-cell f32 table: in one register (16 cells or fewer) or in memory (gathered).
#[derive(Clone, Copy)]
pub(in crate::core::kernels) struct Tab {
    p: *const f32,
    r: __m512,
}

/// A per-cell f64 table (16 cells in two registers, looked up with `vpermt2pd`, or gathered).
#[derive(Clone, Copy)]
pub(in crate::core::kernels) struct TabD {
    p: *const f64,
    r: [__m512d; 2],
}

// SAFETY: the vector types are plain data; 16 lanes; the memory methods do what they state.
unsafe impl Lanes for Avx512 {
    const LANES: usize = 16;
    type F = __m512;
    type I = __m512i;
    type M = __mmask16;
    type D = __m512d;
    type Tab = Tab;
    type TabD = TabD;

    fn detect() -> Option<Self> {
        let ok = is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512dq")
            && is_x86_feature_detected!("avx512vl");
        ok.then_some(Avx512(()))
    }
    #[inline(always)]
    unsafe fn new_unchecked() -> Self {
        Avx512(())
    }

    one_intrinsic! {
        splat(v: f32) -> __m512 = _mm512_set1_ps;
        add(a: __m512, b: __m512) -> __m512 = _mm512_add_ps;
        sub(a: __m512, b: __m512) -> __m512 = _mm512_sub_ps;
        mul(a: __m512, b: __m512) -> __m512 = _mm512_mul_ps;
        div(a: __m512, b: __m512) -> __m512 = _mm512_div_ps;
        fmadd(a: __m512, b: __m512, c: __m512) -> __m512 = _mm512_fmadd_ps;
        fnmadd(a: __m512, b: __m512, c: __m512) -> __m512 = _mm512_fnmadd_ps;
        min(a: __m512, b: __m512) -> __m512 = _mm512_min_ps;
        max(a: __m512, b: __m512) -> __m512 = _mm512_max_ps;
        recip_estimate(a: __m512) -> __m512 = _mm512_rcp14_ps;
        floor(a: __m512) -> __m512 = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>;
        round(a: __m512) -> __m512 = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>;
        ldexp(e: __m512, n: __m512) -> __m512 = _mm512_scalef_ps;
        and(a: __m512, b: __m512) -> __m512 = _mm512_and_ps;
        or(a: __m512, b: __m512) -> __m512 = _mm512_or_ps;
        xor(a: __m512, b: __m512) -> __m512 = _mm512_xor_ps;
        lt(a: __m512, b: __m512) -> __mmask16 = _mm512_cmp_ps_mask::<_CMP_LT_OQ>;
        le(a: __m512, b: __m512) -> __mmask16 = _mm512_cmp_ps_mask::<_CMP_LE_OQ>;
        gt(a: __m512, b: __m512) -> __mmask16 = _mm512_cmp_ps_mask::<_CMP_GT_OQ>;
        ge(a: __m512, b: __m512) -> __mmask16 = _mm512_cmp_ps_mask::<_CMP_GE_OQ>;
        unord(a: __m512, b: __m512) -> __mmask16 = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>;
        isplat(v: i32) -> __m512i = _mm512_set1_epi32;
        iadd(a: __m512i, b: __m512i) -> __m512i = _mm512_add_epi32;
        isub(a: __m512i, b: __m512i) -> __m512i = _mm512_sub_epi32;
        imin(a: __m512i, b: __m512i) -> __m512i = _mm512_min_epi32;
        imax(a: __m512i, b: __m512i) -> __m512i = _mm512_max_epi32;
        iand(a: __m512i, b: __m512i) -> __m512i = _mm512_and_si512;
        ior(a: __m512i, b: __m512i) -> __m512i = _mm512_or_si512;
        ieq(a: __m512i, b: __m512i) -> __mmask16 = _mm512_cmpeq_epi32_mask;
        imaskz(m: __mmask16, v: __m512i) -> __m512i = _mm512_maskz_mov_epi32;
        trunc_i32(a: __m512) -> __m512i = _mm512_cvttps_epi32;
        round_i32(a: __m512) -> __m512i = _mm512_cvtps_epi32;
        to_f32(a: __m512i) -> __m512 = _mm512_cvtepi32_ps;
        bits_of(a: __m512) -> __m512i = _mm512_castps_si512;
        float_of_bits(a: __m512i) -> __m512 = _mm512_castsi512_ps;
        dsplat(v: f64) -> __m512d = _mm512_set1_pd;
        dadd(a: __m512d, b: __m512d) -> __m512d = _mm512_add_pd;
        dsub(a: __m512d, b: __m512d) -> __m512d = _mm512_sub_pd;
        dfmadd(a: __m512d, b: __m512d, c: __m512d) -> __m512d = _mm512_fmadd_pd;
    }

    // SAFETY (every `unsafe` block below): the token: AVX-512 F/BW/DQ/VL run here.
    #[inline(always)]
    fn abs(self, a: __m512) -> __m512 {
        unsafe { _mm512_andnot_ps(_mm512_set1_ps(-0.0), a) }
    }

    #[inline(always)]
    fn select(self, m: __mmask16, t: __m512, f: __m512) -> __m512 {
        unsafe { _mm512_mask_blend_ps(m, f, t) }
    }
    #[inline(always)]
    fn maskz(self, m: __mmask16, v: __m512) -> __m512 {
        unsafe { _mm512_maskz_mov_ps(m, v) }
    }

    #[inline(always)]
    fn mand(self, a: __mmask16, b: __mmask16) -> __mmask16 {
        a & b
    }
    #[inline(always)]
    fn mand_not(self, a: __mmask16, b: __mmask16) -> __mmask16 {
        a & !b
    }
    #[inline(always)]
    fn mxor(self, a: __mmask16, b: __mmask16) -> __mmask16 {
        a ^ b
    }
    #[inline(always)]
    fn mselect(self, m: __mmask16, t: __mmask16, f: __mmask16) -> __mmask16 {
        (m & t) | (!m & f)
    }
    #[inline(always)]
    fn head(self, n: usize) -> __mmask16 {
        ((1u32 << n) - 1) as __mmask16
    }
    #[inline(always)]
    fn bits(self, m: __mmask16) -> u32 {
        m as u32
    }
    #[inline(always)]
    fn any(self, m: __mmask16) -> bool {
        m != 0
    }

    #[inline(always)]
    fn ishr(self, a: __m512i, k: u32) -> __m512i {
        unsafe { _mm512_srlv_epi32(a, _mm512_set1_epi32(k as i32)) }
    }
    #[inline(always)]
    fn iselect(self, m: __mmask16, t: __m512i, f: __m512i) -> __m512i {
        unsafe { _mm512_mask_blend_epi32(m, f, t) }
    }
    #[inline(always)]
    fn widen(self, a: __m512) -> [__m512d; 2] {
        unsafe {
            [
                _mm512_cvtps_pd(_mm512_castps512_ps256(a)),
                _mm512_cvtps_pd(_mm512_extractf32x8_ps::<1>(a)),
            ]
        }
    }
    #[inline(always)]
    fn narrow(self, a: [__m512d; 2]) -> __m512 {
        unsafe {
            _mm512_insertf32x8::<1>(
                _mm512_castps256_ps512(_mm512_cvtpd_ps(a[0])),
                _mm512_cvtpd_ps(a[1]),
            )
        }
    }
    #[inline(always)]
    fn dselect(self, m: __mmask16, t: [__m512d; 2], f: [__m512d; 2]) -> [__m512d; 2] {
        unsafe {
            [
                _mm512_mask_blend_pd(m as __mmask8, f[0], t[0]),
                _mm512_mask_blend_pd((m >> 8) as __mmask8, f[1], t[1]),
            ]
        }
    }

    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> __m512 {
        _mm512_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn load_head(self, p: *const f32, n: usize) -> __m512 {
        _mm512_maskz_loadu_ps(self.head(n), p)
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: __m512) {
        _mm512_storeu_ps(p, v)
    }
    #[inline(always)]
    unsafe fn store_head(self, p: *mut f32, n: usize, v: __m512) {
        _mm512_mask_storeu_ps(p, self.head(n), v)
    }
    #[inline(always)]
    unsafe fn iload(self, p: *const u32) -> __m512i {
        _mm512_loadu_si512(p as *const __m512i)
    }
    #[inline(always)]
    unsafe fn iload_head(self, p: *const u32, n: usize) -> __m512i {
        _mm512_maskz_loadu_epi32(self.head(n), p as *const i32)
    }
    #[inline(always)]
    unsafe fn gather_masked(
        self,
        src: __m512,
        base: *const f32,
        idx: __m512i,
        m: __mmask16,
    ) -> __m512 {
        _mm512_mask_i32gather_ps::<4>(src, m, idx, base)
    }
    #[inline(always)]
    unsafe fn gather_pairs(self, p: *const f32, idx: __m512i) -> (__m512, __m512) {
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
    #[inline(always)]
    fn prefetch(self, p: *const f32) {
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p as *const i8) }
    }
    #[inline(always)]
    unsafe fn compact<const LINEAR: bool>(
        self,
        m: __mmask16,
        s: __m512,
        i: __m512i,
        f: __m512,
        sb: *mut f64,
        ib: *mut u32,
        fb: *mut f32,
    ) -> usize {
        let s = _mm512_maskz_compress_ps(m, s);
        _mm512_storeu_pd(sb, _mm512_cvtps_pd(_mm512_castps512_ps256(s)));
        _mm512_storeu_pd(sb.add(8), _mm512_cvtps_pd(_mm512_extractf32x8_ps::<1>(s)));
        _mm512_storeu_si512(ib as *mut __m512i, _mm512_maskz_compress_epi32(m, i));
        if LINEAR {
            _mm512_storeu_ps(fb, _mm512_maskz_compress_ps(m, f));
        }
        m.count_ones() as usize
    }

    #[inline(always)]
    unsafe fn tab<const SMALL: bool>(self, v: &[f32]) -> Tab {
        Tab {
            p: v.as_ptr(),
            r: if SMALL {
                _mm512_loadu_ps(v.as_ptr())
            } else {
                _mm512_setzero_ps()
            },
        }
    }
    #[inline(always)]
    unsafe fn tab_get<const SMALL: bool>(self, t: &Tab, idx: __m512i) -> __m512 {
        if SMALL {
            _mm512_permutexvar_ps(idx, t.r)
        } else {
            _mm512_i32gather_ps::<4>(idx, t.p)
        }
    }
    #[inline(always)]
    unsafe fn tabd<const SMALL: bool>(self, v: &[f64]) -> TabD {
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
    #[inline(always)]
    unsafe fn tabd_get<const SMALL: bool>(self, t: &TabD, idx: __m512i) -> [__m512d; 2] {
        let h = [
            _mm512_castsi512_si256(idx),
            _mm512_extracti64x4_epi64::<1>(idx),
        ];
        if SMALL {
            [
                _mm512_permutex2var_pd(t.r[0], _mm512_cvtepi32_epi64(h[0]), t.r[1]),
                _mm512_permutex2var_pd(t.r[0], _mm512_cvtepi32_epi64(h[1]), t.r[1]),
            ]
        } else {
            [
                _mm512_i32gather_pd::<8>(h[0], t.p),
                _mm512_i32gather_pd::<8>(h[1], t.p),
            ]
        }
    }
}

instantiate!(
    Avx512,
    "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma",
    exact_table_vectors = 1
);

#[cfg(test)]
mod tests {
    use super::super::math::tests::{erf_is_accurate, erf_is_erf_f32};
    use super::*;

    #[test]
    fn erf16_is_erf_f32_bit_for_bit() {
        match Avx512::detect() {
            Some(s) => erf_is_erf_f32(s),
            None => println!("skipped: no AVX-512 on this CPU"),
        }
    }

    #[test]
    fn erf16_is_as_accurate_as_erf_f32() {
        match Avx512::detect() {
            Some(s) => erf_is_accurate(s),
            None => println!("skipped: no AVX-512 on this CPU"),
        }
    }
}
