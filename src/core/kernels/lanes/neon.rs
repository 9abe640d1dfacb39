//! NEON (AArch64 Advanced SIMD, 4 lanes): masks are vectors of all-ones lanes, selects are `bsl`;
//! what NEON lacks is emulated: gathers as lane-by-lane loads, compaction by a table of byte
//! shuffles (`tbl`), `min`/`max` with x86's NaN rule (a compare and a select: NEON's own return
//! NaN), small per-cell tables looked up from registers by `tbl` over 64 bytes (16 floats; 16
//! doubles in two lookups). `recip_estimate` is NEON's 8-bit estimate refined by one Newton step.

use super::Lanes;
use std::arch::aarch64::*;

/// The NEON token.
#[derive(Clone, Copy)]
pub(in crate::core::kernels) struct Neon(());

/// For each 4-bit mask, the bytes of its set lanes (4 a lane), in order, for `vqtbl1q_u8`; the
/// bytes past them are 0 (lane 0 again: written, not counted).
static COMPACT: [[u8; 16]; 16] = {
    let mut t = [[0u8; 16]; 16];
    let mut m = 0;
    while m < 16 {
        let (mut k, mut l) = (0, 0);
        while l < 4 {
            if m & (1 << l) != 0 {
                let mut b = 0;
                while b < 4 {
                    t[m][4 * k + b] = (4 * l + b) as u8;
                    b += 1;
                }
                k += 1;
            }
            l += 1;
        }
        m += 1;
    }
    t
};

/// A per-cell f32 table: 16 entries or fewer as 64 bytes in four registers (one `tbl`), else
/// looked up lane by lane.
#[derive(Clone, Copy)]
pub(in crate::core::kernels) struct Tab {
    p: *const f32,
    r: uint8x16x4_t,
}

/// A per-cell f64 table: 16 entries or fewer as 128 bytes in eight registers (`tbl` on the first
/// 64, `tbx` on the rest), else looked up lane by lane. The values are the f64 bits themselves.
#[derive(Clone, Copy)]
pub(in crate::core::kernels) struct TabD {
    p: *const f64,
    r: [uint8x16x4_t; 2],
}

impl Neon {
    /// The int32 lanes as an array.
    #[inline(always)]
    fn lanes_i(self, v: int32x4_t) -> [i32; 4] {
        let mut a = [0i32; 4];
        // SAFETY: the token: NEON runs here; 4 lanes into 4 slots.
        unsafe { vst1q_s32(a.as_mut_ptr(), v) };
        a
    }

    /// Four registers of 16 bytes from `p`.
    ///
    /// SAFETY (caller): 64 bytes readable at `p`.
    #[inline(always)]
    unsafe fn regs64(self, p: *const u8) -> uint8x16x4_t {
        uint8x16x4_t(
            vld1q_u8(p),
            vld1q_u8(p.add(16)),
            vld1q_u8(p.add(32)),
            vld1q_u8(p.add(48)),
        )
    }

    /// The byte indices of 4-byte entries `idx` (below 16: bytes below 64).
    #[inline(always)]
    fn bytes4(self, idx: int32x4_t) -> uint8x16_t {
        // SAFETY: the token: NEON runs here.
        unsafe {
            // byte k of lane l: 4·idx + k (idx·4 repeated in each byte, plus 0, 1, 2, 3)
            let b = vshlq_n_u32::<2>(vreinterpretq_u32_s32(idx));
            vreinterpretq_u8_u32(vmlaq_u32(
                vdupq_n_u32(0x0302_0100),
                b,
                vdupq_n_u32(0x0101_0101),
            ))
        }
    }

    /// The byte indices of 8-byte entries `idx` for the lanes of half `H` (0: lanes 0, 1; 1:
    /// lanes 2, 3).
    #[inline(always)]
    fn bytes8<const H: u8>(self, idx: int32x4_t) -> uint8x16_t {
        // SAFETY: the token: NEON runs here; the shuffle constant is 16 bytes.
        unsafe {
            let b = vreinterpretq_u8_u32(vshlq_n_u32::<3>(vreinterpretq_u32_s32(idx)));
            // the low byte of lane 2H, then of lane 2H + 1, each repeated 8 times
            let s = if H == 0 { [0u8, 4] } else { [8, 12] };
            let rep: [u8; 16] = [
                s[0], s[0], s[0], s[0], s[0], s[0], s[0], s[0], s[1], s[1], s[1], s[1], s[1], s[1],
                s[1], s[1],
            ];
            let k: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7];
            vaddq_u8(vqtbl1q_u8(b, vld1q_u8(rep.as_ptr())), vld1q_u8(k.as_ptr()))
        }
    }

    /// Two f64 lanes of a 16-entry table in registers.
    #[inline(always)]
    fn pick8(self, r: &[uint8x16x4_t; 2], bytes: uint8x16_t) -> float64x2_t {
        // SAFETY: the token: NEON runs here.
        unsafe {
            // bytes ≥ 64 give 0 from `tbl`; those lanes are taken from the second 64 bytes by
            // `tbx` (bytes − 64; the first half's become ≥ 192 there and are left alone).
            let lo = vqtbl4q_u8(r[0], bytes);
            let v = vqtbx4q_u8(lo, r[1], vsubq_u8(bytes, vdupq_n_u8(64)));
            vreinterpretq_f64_u8(v)
        }
    }
}

// SAFETY: the vector types are plain data (valid all-zero); 4 lanes; the memory methods read and
// write what they state.
unsafe impl Lanes for Neon {
    const LANES: usize = 4;
    type F = float32x4_t;
    type I = int32x4_t;
    type M = uint32x4_t;
    type D = float64x2_t;
    type Tab = Tab;
    type TabD = TabD;

    fn detect() -> Option<Self> {
        std::arch::is_aarch64_feature_detected!("neon").then_some(Neon(()))
    }
    #[inline(always)]
    unsafe fn new_unchecked() -> Self {
        Neon(())
    }

    one_intrinsic! {
        splat(v: f32) -> float32x4_t = vdupq_n_f32;
        add(a: float32x4_t, b: float32x4_t) -> float32x4_t = vaddq_f32;
        sub(a: float32x4_t, b: float32x4_t) -> float32x4_t = vsubq_f32;
        mul(a: float32x4_t, b: float32x4_t) -> float32x4_t = vmulq_f32;
        div(a: float32x4_t, b: float32x4_t) -> float32x4_t = vdivq_f32;
        floor(a: float32x4_t) -> float32x4_t = vrndmq_f32;
        round(a: float32x4_t) -> float32x4_t = vrndnq_f32;
        abs(a: float32x4_t) -> float32x4_t = vabsq_f32;
        lt(a: float32x4_t, b: float32x4_t) -> uint32x4_t = vcltq_f32;
        le(a: float32x4_t, b: float32x4_t) -> uint32x4_t = vcleq_f32;
        gt(a: float32x4_t, b: float32x4_t) -> uint32x4_t = vcgtq_f32;
        ge(a: float32x4_t, b: float32x4_t) -> uint32x4_t = vcgeq_f32;
        select(m: uint32x4_t, t: float32x4_t, f: float32x4_t) -> float32x4_t = vbslq_f32;
        mand(a: uint32x4_t, b: uint32x4_t) -> uint32x4_t = vandq_u32;
        mand_not(a: uint32x4_t, b: uint32x4_t) -> uint32x4_t = vbicq_u32;
        mxor(a: uint32x4_t, b: uint32x4_t) -> uint32x4_t = veorq_u32;
        mselect(m: uint32x4_t, t: uint32x4_t, f: uint32x4_t) -> uint32x4_t = vbslq_u32;
        isplat(v: i32) -> int32x4_t = vdupq_n_s32;
        iadd(a: int32x4_t, b: int32x4_t) -> int32x4_t = vaddq_s32;
        isub(a: int32x4_t, b: int32x4_t) -> int32x4_t = vsubq_s32;
        imin(a: int32x4_t, b: int32x4_t) -> int32x4_t = vminq_s32;
        imax(a: int32x4_t, b: int32x4_t) -> int32x4_t = vmaxq_s32;
        iand(a: int32x4_t, b: int32x4_t) -> int32x4_t = vandq_s32;
        ior(a: int32x4_t, b: int32x4_t) -> int32x4_t = vorrq_s32;
        ieq(a: int32x4_t, b: int32x4_t) -> uint32x4_t = vceqq_s32;
        iselect(m: uint32x4_t, t: int32x4_t, f: int32x4_t) -> int32x4_t = vbslq_s32;
        // toward zero, saturating (NaN: 0)
        trunc_i32(a: float32x4_t) -> int32x4_t = vcvtq_s32_f32;
        // to nearest, half to even, saturating
        round_i32(a: float32x4_t) -> int32x4_t = vcvtnq_s32_f32;
        to_f32(a: int32x4_t) -> float32x4_t = vcvtq_f32_s32;
        bits_of(a: float32x4_t) -> int32x4_t = vreinterpretq_s32_f32;
        float_of_bits(a: int32x4_t) -> float32x4_t = vreinterpretq_f32_s32;
        dsplat(v: f64) -> float64x2_t = vdupq_n_f64;
        dadd(a: float64x2_t, b: float64x2_t) -> float64x2_t = vaddq_f64;
        dsub(a: float64x2_t, b: float64x2_t) -> float64x2_t = vsubq_f64;
    }

    // SAFETY (every `unsafe` block below): the token: NEON runs here.
    #[inline(always)]
    fn fmadd(self, a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
        unsafe { vfmaq_f32(c, a, b) }
    }
    #[inline(always)]
    fn fnmadd(self, a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
        unsafe { vfmsq_f32(c, a, b) }
    }
    #[inline(always)]
    fn min(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // x86's rule: b unless a < b (b when either is NaN, and for ±0)
        unsafe { vbslq_f32(vcltq_f32(a, b), a, b) }
    }
    #[inline(always)]
    fn max(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        unsafe { vbslq_f32(vcgtq_f32(a, b), a, b) }
    }
    #[inline(always)]
    fn recip_estimate(self, a: float32x4_t) -> float32x4_t {
        // the 8-bit estimate and one Newton step (vrecps: 2 − a·y): about 16 bits
        unsafe {
            let y = vrecpeq_f32(a);
            vmulq_f32(y, vrecpsq_f32(a, y))
        }
    }
    #[inline(always)]
    fn ldexp(self, e: float32x4_t, n: float32x4_t) -> float32x4_t {
        // 2^n built in the exponent field (exact for n in [−126, 126]), then one product.
        unsafe {
            let pow2 = vshlq_n_s32::<23>(vaddq_s32(vcvtnq_s32_f32(n), vdupq_n_s32(127)));
            vmulq_f32(e, vreinterpretq_f32_s32(pow2))
        }
    }
    #[inline(always)]
    fn and(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        unsafe {
            vreinterpretq_f32_u32(vandq_u32(
                vreinterpretq_u32_f32(a),
                vreinterpretq_u32_f32(b),
            ))
        }
    }
    #[inline(always)]
    fn or(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        unsafe {
            vreinterpretq_f32_u32(vorrq_u32(
                vreinterpretq_u32_f32(a),
                vreinterpretq_u32_f32(b),
            ))
        }
    }
    #[inline(always)]
    fn xor(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        unsafe {
            vreinterpretq_f32_u32(veorq_u32(
                vreinterpretq_u32_f32(a),
                vreinterpretq_u32_f32(b),
            ))
        }
    }
    #[inline(always)]
    fn unord(self, a: float32x4_t, b: float32x4_t) -> uint32x4_t {
        unsafe { vmvnq_u32(vandq_u32(vceqq_f32(a, a), vceqq_f32(b, b))) }
    }
    #[inline(always)]
    fn maskz(self, m: uint32x4_t, v: float32x4_t) -> float32x4_t {
        unsafe { vreinterpretq_f32_u32(vandq_u32(m, vreinterpretq_u32_f32(v))) }
    }
    #[inline(always)]
    fn head(self, n: usize) -> uint32x4_t {
        let lane: [u32; 4] = [0, 1, 2, 3];
        unsafe { vcltq_u32(vld1q_u32(lane.as_ptr()), vdupq_n_u32(n as u32)) }
    }
    #[inline(always)]
    fn bits(self, m: uint32x4_t) -> u32 {
        let weight: [u32; 4] = [1, 2, 4, 8];
        unsafe { vaddvq_u32(vandq_u32(m, vld1q_u32(weight.as_ptr()))) }
    }
    #[inline(always)]
    fn any(self, m: uint32x4_t) -> bool {
        unsafe { vmaxvq_u32(m) != 0 }
    }

    #[inline(always)]
    fn ishr(self, a: int32x4_t, k: u32) -> int32x4_t {
        // a shift by a negative count shifts right (logical on the unsigned lanes)
        unsafe {
            vreinterpretq_s32_u32(vshlq_u32(
                vreinterpretq_u32_s32(a),
                vdupq_n_s32(-(k as i32)),
            ))
        }
    }
    #[inline(always)]
    fn imaskz(self, m: uint32x4_t, v: int32x4_t) -> int32x4_t {
        unsafe { vandq_s32(v, vreinterpretq_s32_u32(m)) }
    }

    #[inline(always)]
    fn dfmadd(self, a: float64x2_t, b: float64x2_t, c: float64x2_t) -> float64x2_t {
        unsafe { vfmaq_f64(c, a, b) }
    }
    #[inline(always)]
    fn widen(self, a: float32x4_t) -> [float64x2_t; 2] {
        unsafe { [vcvt_f64_f32(vget_low_f32(a)), vcvt_high_f64_f32(a)] }
    }
    #[inline(always)]
    fn narrow(self, a: [float64x2_t; 2]) -> float32x4_t {
        unsafe { vcvt_high_f32_f64(vcvt_f32_f64(a[0]), a[1]) }
    }
    #[inline(always)]
    fn dselect(self, m: uint32x4_t, t: [float64x2_t; 2], f: [float64x2_t; 2]) -> [float64x2_t; 2] {
        // each all-ones (all-zero) 32-bit lane sign-extends to an all-ones (all-zero) 64-bit one
        unsafe {
            let m = vreinterpretq_s32_u32(m);
            let lo = vreinterpretq_u64_s64(vmovl_s32(vget_low_s32(m)));
            let hi = vreinterpretq_u64_s64(vmovl_high_s32(m));
            [vbslq_f64(lo, t[0], f[0]), vbslq_f64(hi, t[1], f[1])]
        }
    }

    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> float32x4_t {
        vld1q_f32(p)
    }
    #[inline(always)]
    unsafe fn load_head(self, p: *const f32, n: usize) -> float32x4_t {
        let mut b = [0f32; 4];
        std::ptr::copy_nonoverlapping(p, b.as_mut_ptr(), n);
        vld1q_f32(b.as_ptr())
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: float32x4_t) {
        vst1q_f32(p, v)
    }
    #[inline(always)]
    unsafe fn store_head(self, p: *mut f32, n: usize, v: float32x4_t) {
        let mut b = [0f32; 4];
        vst1q_f32(b.as_mut_ptr(), v);
        std::ptr::copy_nonoverlapping(b.as_ptr(), p, n);
    }
    #[inline(always)]
    unsafe fn iload(self, p: *const u32) -> int32x4_t {
        vreinterpretq_s32_u32(vld1q_u32(p))
    }
    #[inline(always)]
    unsafe fn iload_head(self, p: *const u32, n: usize) -> int32x4_t {
        let mut b = [0u32; 4];
        std::ptr::copy_nonoverlapping(p, b.as_mut_ptr(), n);
        vreinterpretq_s32_u32(vld1q_u32(b.as_ptr()))
    }
    #[inline(always)]
    unsafe fn gather_masked(
        self,
        src: float32x4_t,
        base: *const f32,
        idx: int32x4_t,
        m: uint32x4_t,
    ) -> float32x4_t {
        let (i, bits) = (self.lanes_i(idx), self.bits(m));
        let mut v = [0f32; 4];
        vst1q_f32(v.as_mut_ptr(), src);
        for (l, vl) in v.iter_mut().enumerate() {
            if bits & (1 << l) != 0 {
                *vl = *base.offset(i[l] as isize);
            }
        }
        vld1q_f32(v.as_ptr())
    }
    #[inline(always)]
    unsafe fn gather_pairs(self, p: *const f32, idx: int32x4_t) -> (float32x4_t, float32x4_t) {
        let i = self.lanes_i(idx);
        let pair = |l: usize| vld1_f32(p.offset(2 * i[l] as isize));
        // a0 b0 a1 b1 and a2 b2 a3 b3, then the even and the odd floats
        let lo = vcombine_f32(pair(0), pair(1));
        let hi = vcombine_f32(pair(2), pair(3));
        (vuzp1q_f32(lo, hi), vuzp2q_f32(lo, hi))
    }
    #[inline(always)]
    fn prefetch(self, p: *const f32) {
        // SAFETY: `prfm` is a hint: it never faults, whatever the address.
        unsafe {
            std::arch::asm!(
                "prfm pldl1keep, [{p}]",
                p = in(reg) p,
                options(nostack, preserves_flags, readonly)
            )
        }
    }
    #[inline(always)]
    unsafe fn compact<const LINEAR: bool>(
        self,
        m: uint32x4_t,
        s: float32x4_t,
        i: int32x4_t,
        f: float32x4_t,
        sb: *mut f64,
        ib: *mut u32,
        fb: *mut f32,
    ) -> usize {
        let m = self.bits(m) as usize;
        let perm = vld1q_u8(COMPACT.get_unchecked(m).as_ptr());
        let shuf = |v: uint8x16_t| vqtbl1q_u8(v, perm);
        let s = vreinterpretq_f32_u8(shuf(vreinterpretq_u8_f32(s)));
        vst1q_f64(sb, vcvt_f64_f32(vget_low_f32(s)));
        vst1q_f64(sb.add(2), vcvt_high_f64_f32(s));
        vst1q_u32(ib, vreinterpretq_u32_u8(shuf(vreinterpretq_u8_s32(i))));
        if LINEAR {
            vst1q_f32(fb, vreinterpretq_f32_u8(shuf(vreinterpretq_u8_f32(f))));
        }
        m.count_ones() as usize
    }

    #[inline(always)]
    unsafe fn tab<const SMALL: bool>(self, v: &[f32]) -> Tab {
        Tab {
            p: v.as_ptr(),
            r: if SMALL {
                self.regs64(v.as_ptr() as *const u8)
            } else {
                std::mem::zeroed()
            },
        }
    }
    #[inline(always)]
    unsafe fn tab_get<const SMALL: bool>(self, t: &Tab, idx: int32x4_t) -> float32x4_t {
        if SMALL {
            vreinterpretq_f32_u8(vqtbl4q_u8(t.r, self.bytes4(idx)))
        } else {
            let i = self.lanes_i(idx);
            let v = [
                *t.p.offset(i[0] as isize),
                *t.p.offset(i[1] as isize),
                *t.p.offset(i[2] as isize),
                *t.p.offset(i[3] as isize),
            ];
            vld1q_f32(v.as_ptr())
        }
    }
    #[inline(always)]
    unsafe fn tabd<const SMALL: bool>(self, v: &[f64]) -> TabD {
        TabD {
            p: v.as_ptr(),
            r: if SMALL {
                let b = v.as_ptr() as *const u8;
                [self.regs64(b), self.regs64(b.add(64))]
            } else {
                std::mem::zeroed()
            },
        }
    }
    #[inline(always)]
    unsafe fn tabd_get<const SMALL: bool>(self, t: &TabD, idx: int32x4_t) -> [float64x2_t; 2] {
        if SMALL {
            [
                self.pick8(&t.r, self.bytes8::<0>(idx)),
                self.pick8(&t.r, self.bytes8::<1>(idx)),
            ]
        } else {
            let i = self.lanes_i(idx);
            let at = |l: usize| *t.p.offset(i[l] as isize);
            let (lo, hi) = ([at(0), at(1)], [at(2), at(3)]);
            [vld1q_f64(lo.as_ptr()), vld1q_f64(hi.as_ptr())]
        }
    }
}

instantiate!(Neon, "neon", exact_table_vectors = 2);

#[cfg(test)]
mod tests {
    use super::super::math::tests::{erf_is_accurate, erf_is_erf_f32};
    use super::*;

    #[test]
    fn erf4_is_as_accurate_as_erf_f32() {
        match Neon::detect() {
            Some(s) => erf_is_accurate(s),
            None => println!("skipped: no NEON on this CPU"),
        }
    }

    #[test]
    fn erf4_is_erf_f32_bit_for_bit() {
        match Neon::detect() {
            Some(s) => erf_is_erf_f32(s),
            None => println!("skipped: no NEON on this CPU"),
        }
    }
}
