//! AVX2 + FMA (8 lanes): masks are vectors of all-ones lanes, selects are `blendv`, tails go
//! through buffers, compaction through a table of permutations, small per-cell tables sit in two
//! registers.

use super::Lanes;
use std::arch::x86_64::*;

/// The AVX2 + FMA token.
#[derive(Clone, Copy)]
pub(in crate::core::kernels) struct Avx2(());

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

/// A per-cell f32 table: 16 entries or fewer in two registers (two `vpermps` and a blend), else
/// gathered.
#[derive(Clone, Copy)]
pub(in crate::core::kernels) struct Tab {
    p: *const f32,
    r: [__m256; 2],
}

/// A per-cell f64 table: gathered, or (16 entries or fewer) as two f32 tables hi + lo (hi the
/// value rounded to f32, lo the rest rounded: 48 bits, far below the f32 results' rounding).
#[derive(Clone, Copy)]
pub(in crate::core::kernels) struct TabD {
    p: *const f64,
    hi: [__m256; 2],
    lo: [__m256; 2],
}

impl Avx2 {
    #[inline(always)]
    fn pick(self, r: &[__m256; 2], idx: __m256i) -> __m256 {
        // SAFETY: the token: AVX2 runs here.
        unsafe {
            let hi = _mm256_castsi256_ps(_mm256_cmpgt_epi32(idx, _mm256_set1_epi32(7)));
            _mm256_blendv_ps(
                _mm256_permutevar8x32_ps(r[0], idx),
                _mm256_permutevar8x32_ps(r[1], idx),
                hi,
            )
        }
    }
}

// SAFETY: the vector types are plain data; 8 lanes; the memory methods do what they state.
unsafe impl Lanes for Avx2 {
    const LANES: usize = 8;
    type F = __m256;
    type I = __m256i;
    type M = __m256;
    type D = __m256d;
    type Tab = Tab;
    type TabD = TabD;

    fn detect() -> Option<Self> {
        (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")).then_some(Avx2(()))
    }
    #[inline(always)]
    unsafe fn new_unchecked() -> Self {
        Avx2(())
    }

    one_intrinsic! {
        splat(v: f32) -> __m256 = _mm256_set1_ps;
        add(a: __m256, b: __m256) -> __m256 = _mm256_add_ps;
        sub(a: __m256, b: __m256) -> __m256 = _mm256_sub_ps;
        mul(a: __m256, b: __m256) -> __m256 = _mm256_mul_ps;
        div(a: __m256, b: __m256) -> __m256 = _mm256_div_ps;
        fmadd(a: __m256, b: __m256, c: __m256) -> __m256 = _mm256_fmadd_ps;
        fnmadd(a: __m256, b: __m256, c: __m256) -> __m256 = _mm256_fnmadd_ps;
        min(a: __m256, b: __m256) -> __m256 = _mm256_min_ps;
        max(a: __m256, b: __m256) -> __m256 = _mm256_max_ps;
        recip_estimate(a: __m256) -> __m256 = _mm256_rcp_ps;
        floor(a: __m256) -> __m256 = _mm256_floor_ps;
        round(a: __m256) -> __m256 = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>;
        and(a: __m256, b: __m256) -> __m256 = _mm256_and_ps;
        or(a: __m256, b: __m256) -> __m256 = _mm256_or_ps;
        xor(a: __m256, b: __m256) -> __m256 = _mm256_xor_ps;
        lt(a: __m256, b: __m256) -> __m256 = _mm256_cmp_ps::<_CMP_LT_OQ>;
        le(a: __m256, b: __m256) -> __m256 = _mm256_cmp_ps::<_CMP_LE_OQ>;
        gt(a: __m256, b: __m256) -> __m256 = _mm256_cmp_ps::<_CMP_GT_OQ>;
        ge(a: __m256, b: __m256) -> __m256 = _mm256_cmp_ps::<_CMP_GE_OQ>;
        unord(a: __m256, b: __m256) -> __m256 = _mm256_cmp_ps::<_CMP_UNORD_Q>;
        maskz(m: __m256, v: __m256) -> __m256 = _mm256_and_ps;
        mand(a: __m256, b: __m256) -> __m256 = _mm256_and_ps;
        isplat(v: i32) -> __m256i = _mm256_set1_epi32;
        iadd(a: __m256i, b: __m256i) -> __m256i = _mm256_add_epi32;
        isub(a: __m256i, b: __m256i) -> __m256i = _mm256_sub_epi32;
        imin(a: __m256i, b: __m256i) -> __m256i = _mm256_min_epi32;
        imax(a: __m256i, b: __m256i) -> __m256i = _mm256_max_epi32;
        iand(a: __m256i, b: __m256i) -> __m256i = _mm256_and_si256;
        ior(a: __m256i, b: __m256i) -> __m256i = _mm256_or_si256;
        round_i32(a: __m256) -> __m256i = _mm256_cvtps_epi32;
        to_f32(a: __m256i) -> __m256 = _mm256_cvtepi32_ps;
        bits_of(a: __m256) -> __m256i = _mm256_castps_si256;
        float_of_bits(a: __m256i) -> __m256 = _mm256_castsi256_ps;
        dsplat(v: f64) -> __m256d = _mm256_set1_pd;
        dadd(a: __m256d, b: __m256d) -> __m256d = _mm256_add_pd;
        dsub(a: __m256d, b: __m256d) -> __m256d = _mm256_sub_pd;
        dfmadd(a: __m256d, b: __m256d, c: __m256d) -> __m256d = _mm256_fmadd_pd;
    }

    // SAFETY (every `unsafe` block below): the token: AVX2 and FMA run here.
    #[inline(always)]
    fn ldexp(self, e: __m256, n: __m256) -> __m256 {
        // 2^n built in the exponent field (exact for n in [−126, 126]), then one product.
        unsafe {
            let pow2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
                _mm256_cvtps_epi32(n),
                _mm256_set1_epi32(127),
            )));
            _mm256_mul_ps(e, pow2)
        }
    }
    #[inline(always)]
    fn abs(self, a: __m256) -> __m256 {
        unsafe { _mm256_andnot_ps(_mm256_set1_ps(-0.0), a) }
    }

    #[inline(always)]
    fn select(self, m: __m256, t: __m256, f: __m256) -> __m256 {
        unsafe { _mm256_blendv_ps(f, t, m) }
    }
    #[inline(always)]
    fn mand_not(self, a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_andnot_ps(b, a) }
    }
    #[inline(always)]
    fn mxor(self, a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_xor_ps(a, b) }
    }
    #[inline(always)]
    fn mselect(self, m: __m256, t: __m256, f: __m256) -> __m256 {
        unsafe { _mm256_blendv_ps(f, t, m) }
    }
    #[inline(always)]
    fn head(self, n: usize) -> __m256 {
        unsafe {
            _mm256_castsi256_ps(_mm256_cmpgt_epi32(
                _mm256_set1_epi32(n as i32),
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            ))
        }
    }
    #[inline(always)]
    fn bits(self, m: __m256) -> u32 {
        unsafe { _mm256_movemask_ps(m) as u32 }
    }
    #[inline(always)]
    fn any(self, m: __m256) -> bool {
        self.bits(m) != 0
    }

    #[inline(always)]
    fn ishr(self, a: __m256i, k: u32) -> __m256i {
        unsafe { _mm256_srlv_epi32(a, _mm256_set1_epi32(k as i32)) }
    }
    #[inline(always)]
    fn ieq(self, a: __m256i, b: __m256i) -> __m256 {
        unsafe { _mm256_castsi256_ps(_mm256_cmpeq_epi32(a, b)) }
    }
    #[inline(always)]
    fn iselect(self, m: __m256, t: __m256i, f: __m256i) -> __m256i {
        unsafe { _mm256_blendv_epi8(f, t, _mm256_castps_si256(m)) }
    }
    #[inline(always)]
    fn imaskz(self, m: __m256, v: __m256i) -> __m256i {
        unsafe { _mm256_and_si256(v, _mm256_castps_si256(m)) }
    }
    #[inline(always)]
    fn trunc_i32(self, a: __m256) -> __m256i {
        unsafe { _mm256_cvttps_epi32(a) }
    }
    #[inline(always)]
    fn widen(self, a: __m256) -> [__m256d; 2] {
        unsafe {
            [
                _mm256_cvtps_pd(_mm256_castps256_ps128(a)),
                _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(a)),
            ]
        }
    }
    #[inline(always)]
    fn narrow(self, a: [__m256d; 2]) -> __m256 {
        unsafe { _mm256_set_m128(_mm256_cvtpd_ps(a[1]), _mm256_cvtpd_ps(a[0])) }
    }
    #[inline(always)]
    fn dselect(self, m: __m256, t: [__m256d; 2], f: [__m256d; 2]) -> [__m256d; 2] {
        // the all-ones lanes widen to a negative NaN: blendv reads the sign
        let m = self.widen(m);
        unsafe {
            [
                _mm256_blendv_pd(f[0], t[0], m[0]),
                _mm256_blendv_pd(f[1], t[1], m[1]),
            ]
        }
    }

    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> __m256 {
        _mm256_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn load_head(self, p: *const f32, n: usize) -> __m256 {
        let mut b = [0f32; 8];
        std::ptr::copy_nonoverlapping(p, b.as_mut_ptr(), n);
        _mm256_loadu_ps(b.as_ptr())
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: __m256) {
        _mm256_storeu_ps(p, v)
    }
    #[inline(always)]
    unsafe fn store_head(self, p: *mut f32, n: usize, v: __m256) {
        let mut b = [0f32; 8];
        _mm256_storeu_ps(b.as_mut_ptr(), v);
        std::ptr::copy_nonoverlapping(b.as_ptr(), p, n);
    }
    #[inline(always)]
    unsafe fn iload(self, p: *const u32) -> __m256i {
        _mm256_loadu_si256(p as *const __m256i)
    }
    #[inline(always)]
    unsafe fn iload_head(self, p: *const u32, n: usize) -> __m256i {
        let mut b = [0u32; 8];
        std::ptr::copy_nonoverlapping(p, b.as_mut_ptr(), n);
        _mm256_loadu_si256(b.as_ptr() as *const __m256i)
    }
    #[inline(always)]
    unsafe fn gather_masked(
        self,
        src: __m256,
        base: *const f32,
        idx: __m256i,
        m: __m256,
    ) -> __m256 {
        _mm256_mask_i32gather_ps::<4>(src, base, idx, m)
    }
    #[inline(always)]
    unsafe fn gather_pairs(self, p: *const f32, idx: __m256i) -> (__m256, __m256) {
        let p = p as *const f64;
        let lo = _mm256_castpd_ps(_mm256_i32gather_pd::<8>(p, _mm256_castsi256_si128(idx)));
        let hi = _mm256_castpd_ps(_mm256_i32gather_pd::<8>(
            p,
            _mm256_extracti128_si256::<1>(idx),
        ));
        // lo = a0 b0 a1 b1 | a2 b2 a3 b3, hi = a4 b4 a5 b5 | a6 b6 a7 b7
        let a = _mm256_shuffle_ps::<0b10_00_10_00>(lo, hi); // a0 a1 a4 a5 | a2 a3 a6 a7
        let b = _mm256_shuffle_ps::<0b11_01_11_01>(lo, hi);
        (
            _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(a))),
            _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(b))),
        )
    }
    #[inline(always)]
    fn prefetch(self, p: *const f32) {
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p as *const i8) }
    }
    #[inline(always)]
    unsafe fn compact<const LINEAR: bool>(
        self,
        m: __m256,
        s: __m256,
        i: __m256i,
        f: __m256,
        sb: *mut f64,
        ib: *mut u32,
        fb: *mut f32,
    ) -> usize {
        let m = self.bits(m) as usize;
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

    #[inline(always)]
    unsafe fn tab<const SMALL: bool>(self, v: &[f32]) -> Tab {
        Tab {
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
    #[inline(always)]
    unsafe fn tab_get<const SMALL: bool>(self, t: &Tab, idx: __m256i) -> __m256 {
        if SMALL {
            self.pick(&t.r, idx)
        } else {
            _mm256_i32gather_ps::<4>(t.p, idx)
        }
    }
    #[inline(always)]
    unsafe fn tabd<const SMALL: bool>(self, v: &[f64]) -> TabD {
        let (mut hi, mut lo) = ([0f32; 16], [0f32; 16]);
        if SMALL {
            for (i, &x) in v[..16].iter().enumerate() {
                hi[i] = x as f32;
                lo[i] = (x - hi[i] as f64) as f32;
            }
        }
        TabD {
            p: v.as_ptr(),
            hi: self.tab::<SMALL>(&hi).r,
            lo: self.tab::<SMALL>(&lo).r,
        }
    }
    #[inline(always)]
    unsafe fn tabd_get<const SMALL: bool>(self, t: &TabD, idx: __m256i) -> [__m256d; 2] {
        if SMALL {
            let (h, l) = (
                self.widen(self.pick(&t.hi, idx)),
                self.widen(self.pick(&t.lo, idx)),
            );
            [_mm256_add_pd(h[0], l[0]), _mm256_add_pd(h[1], l[1])]
        } else {
            [
                _mm256_i32gather_pd::<8>(t.p, _mm256_castsi256_si128(idx)),
                _mm256_i32gather_pd::<8>(t.p, _mm256_extracti128_si256::<1>(idx)),
            ]
        }
    }
}

instantiate!(Avx2, "avx2,fma", exact_table_vectors = 2);

#[cfg(test)]
mod tests {
    use super::super::math::tests::{erf_is_accurate, erf_is_erf_f32};
    use super::*;

    #[test]
    fn erf8_is_as_accurate_as_erf_f32() {
        match Avx2::detect() {
            Some(s) => erf_is_accurate(s),
            None => println!("skipped: no AVX2 on this CPU"),
        }
    }

    #[test]
    fn erf8_is_erf_f32_bit_for_bit() {
        match Avx2::detect() {
            Some(s) => erf_is_erf_f32(s),
            None => println!("skipped: no AVX2 on this CPU"),
        }
    }
}
