//! The vector kernels, written once over a small lanes abstraction ([`Lanes`]) and instantiated per
//! instruction set: `math.rs` (erf, Φ and its fast form, exp, log, the normal density, the outer
//! functions), `table.rs` (the table forward and backward), `flow.rs` (the exact mode's warp and
//! its interpolation-table path). `avx2.rs`, `avx512.rs` and `neon.rs` hold only what differs
//! between instruction sets: registers, masks, gathers, compaction, partial loads and stores,
//! per-cell lookups; their entry points come from `instantiate!` (`macros.rs`).
//!
//! Every generic function is `#[inline(always)]` and every [`Lanes`] method too, so that a whole
//! kernel inlines into the `#[target_feature]` entry point that instantiates it and is compiled
//! with that instruction set (a function that is not inlined would lose the features and turn
//! every intrinsic into a call). Arrays of vectors are built with `each!` (a loop) rather than
//! `std::array::from_fn` for the same reason: a closure is a function of its own.
//!
//! # Adding an instruction set (say NEON: 4 lanes, no native gather)
//! One file, `lanes/neon.rs`, that
//! 1. defines a zero-sized token type and implements [`Lanes`] for it: the vector types, and each
//!    method with the semantics its doc states (an operation a set lacks is emulated: a gather as
//!    lane-by-lane loads, compaction lane by lane or by a table of permutations, `min`/`max` with
//!    x86's NaN rule through a compare and a select; the per-cell tables may ignore SMALL and
//!    always look up in memory);
//! 2. invokes `instantiate!(Token, "feature,list", exact_table_vectors = N)` for the entry points
//!    (`forward`, `outer`, `backward`, `exact`).
//!
//! Then this file gets a `mod neon;` line (under `cfg(target_arch)`), `kernels/mod.rs` an
//! [`Isa`](super::Isa) variant whose `supported` is `Token::detect().is_some()` and an arm in each
//! dispatch `match`, and the new file calls the erf tests of `math.rs` as `avx2.rs` does.
//! tests/kernels_simd.rs then checks the new set against the scalar reference (bit for bit where
//! the x86 sets are) once it is in `Isa::ALL`. No generic kernel changes.

#[macro_use]
mod macros;
pub(super) mod flow;
pub(super) mod math;
pub(super) mod table;

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(super) mod avx512;
#[cfg(target_arch = "aarch64")]
pub(super) mod neon;

/// The most lanes a [`Lanes`] type may have: the size of the per-vector buffers of tails and
/// compaction.
pub(super) const MAX_LANES: usize = 16;

/// One instruction set's vectors of float32 lanes, as a token: a value exists only where the CPU
/// runs the set ([`Lanes::detect`], or [`Lanes::new_unchecked`] inside a function compiled with
/// the set's target features), so the arithmetic methods are safe; the memory methods are
/// `unsafe` (raw pointers).
///
/// Semantics the generic kernels rely on (x86's, which a new set must reproduce where it
/// differs):
/// - comparisons are ordered and quiet (false for NaN); a mask has one bit of truth per lane;
/// - `min(a, b)` and `max(a, b)` return `b` when either operand is NaN;
/// - `trunc_i32` and `round_i32` may give any value for NaN and out-of-range lanes (the kernels
///   clamp the indices and mask those lanes away); `round_i32` rounds half to even;
/// - `fmadd` and `fnmadd` are fused (one rounding); `div` is the IEEE division;
/// - lane l of a mask is bit l of [`Lanes::bits`].
///
/// # Safety
/// `F`, `I`, `M`, `D` are plain data, valid all-zero (the kernels zero-initialise arrays of
/// them); `LANES ≤ MAX_LANES`; the memory methods read and write exactly what their docs say.
pub(super) unsafe trait Lanes: Copy {
    /// float32 lanes per vector.
    const LANES: usize;
    /// LANES float32.
    type F: Copy;
    /// LANES int32 (indices).
    type I: Copy;
    /// A mask of LANES lanes.
    type M: Copy;
    /// LANES / 2 float64: a widened half of an `F`.
    type D: Copy;
    /// A per-cell float32 table of the exact path (at least 16 entries): in registers when SMALL
    /// (16 cells or fewer), else looked up in memory.
    type Tab: Copy;
    /// A per-cell float64 table, as `Tab`.
    type TabD: Copy;

    /// The token, where the CPU runs the set.
    fn detect() -> Option<Self>;
    /// The token without a check.
    ///
    /// # Safety
    /// The CPU must run the set (the caller is compiled with its features, or checked them).
    unsafe fn new_unchecked() -> Self;

    // float32 arithmetic
    fn splat(self, v: f32) -> Self::F;
    fn add(self, a: Self::F, b: Self::F) -> Self::F;
    fn sub(self, a: Self::F, b: Self::F) -> Self::F;
    fn mul(self, a: Self::F, b: Self::F) -> Self::F;
    fn div(self, a: Self::F, b: Self::F) -> Self::F;
    /// a·b + c, fused.
    fn fmadd(self, a: Self::F, b: Self::F, c: Self::F) -> Self::F;
    /// c − a·b, fused.
    fn fnmadd(self, a: Self::F, b: Self::F, c: Self::F) -> Self::F;
    fn min(self, a: Self::F, b: Self::F) -> Self::F;
    fn max(self, a: Self::F, b: Self::F) -> Self::F;
    /// The reciprocal estimate (12 bits or better; the backward's Φ refines it with one Newton
    /// step, so its last bits differ between sets, as they did before).
    fn recip_estimate(self, a: Self::F) -> Self::F;
    fn floor(self, a: Self::F) -> Self::F;
    /// To the nearest integer, half to even.
    fn round(self, a: Self::F) -> Self::F;
    /// e·2^n for n integral in [−126, 126] (one rounding).
    fn ldexp(self, e: Self::F, n: Self::F) -> Self::F;
    /// Bitwise operations on the float lanes.
    fn and(self, a: Self::F, b: Self::F) -> Self::F;
    fn or(self, a: Self::F, b: Self::F) -> Self::F;
    fn xor(self, a: Self::F, b: Self::F) -> Self::F;
    /// |a| (the sign bit cleared).
    fn abs(self, a: Self::F) -> Self::F;

    // comparisons and selection
    fn lt(self, a: Self::F, b: Self::F) -> Self::M;
    fn le(self, a: Self::F, b: Self::F) -> Self::M;
    fn gt(self, a: Self::F, b: Self::F) -> Self::M;
    fn ge(self, a: Self::F, b: Self::F) -> Self::M;
    /// Lanes where either operand is NaN.
    fn unord(self, a: Self::F, b: Self::F) -> Self::M;
    /// `t` where `m`, else `f`.
    fn select(self, m: Self::M, t: Self::F, f: Self::F) -> Self::F;
    /// `v` where `m`, else +0.
    fn maskz(self, m: Self::M, v: Self::F) -> Self::F;

    // masks
    fn mand(self, a: Self::M, b: Self::M) -> Self::M;
    /// a and not b.
    fn mand_not(self, a: Self::M, b: Self::M) -> Self::M;
    fn mxor(self, a: Self::M, b: Self::M) -> Self::M;
    /// `t` where `m`, else `f`.
    fn mselect(self, m: Self::M, t: Self::M, f: Self::M) -> Self::M;
    /// The first `n` lanes (n ≤ LANES).
    fn head(self, n: usize) -> Self::M;
    /// Lane l's truth as bit l.
    fn bits(self, m: Self::M) -> u32;
    fn any(self, m: Self::M) -> bool;

    // int32
    fn isplat(self, v: i32) -> Self::I;
    fn iadd(self, a: Self::I, b: Self::I) -> Self::I;
    fn isub(self, a: Self::I, b: Self::I) -> Self::I;
    fn imin(self, a: Self::I, b: Self::I) -> Self::I;
    fn imax(self, a: Self::I, b: Self::I) -> Self::I;
    fn iand(self, a: Self::I, b: Self::I) -> Self::I;
    fn ior(self, a: Self::I, b: Self::I) -> Self::I;
    /// Logical shift right by `k` bits (a constant where the kernels call it: an immediate shift
    /// once inlined).
    fn ishr(self, a: Self::I, k: u32) -> Self::I;
    fn ieq(self, a: Self::I, b: Self::I) -> Self::M;
    /// `t` where `m`, else `f`.
    fn iselect(self, m: Self::M, t: Self::I, f: Self::I) -> Self::I;
    /// `v` where `m`, else 0.
    fn imaskz(self, m: Self::M, v: Self::I) -> Self::I;
    /// Conversion toward zero.
    fn trunc_i32(self, a: Self::F) -> Self::I;
    /// Conversion to the nearest, half to even.
    fn round_i32(self, a: Self::F) -> Self::I;
    fn to_f32(self, a: Self::I) -> Self::F;
    /// The float lanes' bits as integers, and back.
    fn bits_of(self, a: Self::F) -> Self::I;
    fn float_of_bits(self, a: Self::I) -> Self::F;

    // float64 halves
    fn dsplat(self, v: f64) -> Self::D;
    fn dadd(self, a: Self::D, b: Self::D) -> Self::D;
    fn dsub(self, a: Self::D, b: Self::D) -> Self::D;
    /// a·b + c, fused.
    fn dfmadd(self, a: Self::D, b: Self::D, c: Self::D) -> Self::D;
    /// The lanes widened: the first half, then the second.
    fn widen(self, a: Self::F) -> [Self::D; 2];
    /// Two halves rounded back to float32 lanes.
    fn narrow(self, a: [Self::D; 2]) -> Self::F;
    /// `t` where `m` (the mask of the float32 lanes the halves come from), else `f`.
    fn dselect(self, m: Self::M, t: [Self::D; 2], f: [Self::D; 2]) -> [Self::D; 2];

    // memory
    /// Reads LANES floats at `p`.
    unsafe fn load(self, p: *const f32) -> Self::F;
    /// Reads the first `n` floats at `p` (n ≤ LANES, nothing beyond); the other lanes are 0.
    unsafe fn load_head(self, p: *const f32, n: usize) -> Self::F;
    /// Writes LANES floats at `p`.
    unsafe fn store(self, p: *mut f32, v: Self::F);
    /// Writes the first `n` lanes at `p` (nothing beyond).
    unsafe fn store_head(self, p: *mut f32, n: usize, v: Self::F);
    /// Reads LANES (or the first `n`, the rest 0) u32 at `p` as int32.
    unsafe fn iload(self, p: *const u32) -> Self::I;
    unsafe fn iload_head(self, p: *const u32, n: usize) -> Self::I;
    /// `base[idx]` in the lanes of `m`, `src` in the others (which read nothing).
    unsafe fn gather_masked(
        self,
        src: Self::F,
        base: *const f32,
        idx: Self::I,
        m: Self::M,
    ) -> Self::F;
    /// The pairs `(p[2·idx], p[2·idx + 1])`, one 64-bit read per lane: (first, second) by lane.
    unsafe fn gather_pairs(self, p: *const f32, idx: Self::I) -> (Self::F, Self::F);
    /// A hint that `p` will be read soon (never faults).
    fn prefetch(self, p: *const f32);
    /// Writes the lanes of `m`, in order, at the start of `sb` (s widened to f64), `ib` and (when
    /// LINEAR) `fb`; returns how many. May write LANES entries at each pointer.
    #[allow(clippy::too_many_arguments)]
    unsafe fn compact<const LINEAR: bool>(
        self,
        m: Self::M,
        s: Self::F,
        i: Self::I,
        f: Self::F,
        sb: *mut f64,
        ib: *mut u32,
        fb: *mut f32,
    ) -> usize;

    // per-cell tables of the exact path
    /// SAFETY (caller): `v` has at least 16 entries, and outlives the table.
    unsafe fn tab<const SMALL: bool>(self, v: &[f32]) -> Self::Tab;
    /// `v[idx]`; idx within the table (below 16 when SMALL).
    unsafe fn tab_get<const SMALL: bool>(self, t: &Self::Tab, idx: Self::I) -> Self::F;
    unsafe fn tabd<const SMALL: bool>(self, v: &[f64]) -> Self::TabD;
    unsafe fn tabd_get<const SMALL: bool>(self, t: &Self::TabD, idx: Self::I) -> [Self::D; 2];
}
