//! A branch-free float32 erf (the rational approximation Eigen and XLA use, |x| clamped to 4).
//! Absolute error ≤ 4.5e-7 (≤ 7 ulp); beyond |x| = 3.92, where float32 erf is ±1, it returns
//! exactly ±1 (so Φ(−∞) = 0 and −∞·Φ(−∞) is NaN, as the reference gives).
//!
//! The Horner steps are fused multiply-adds (one rounding each) and the quotient a true division:
//! IEEE operations with one correct result, so the scalar form, the AVX2 and AVX-512 lanes and the
//! CUDA kernel give the same bits on every machine. Fused, the vector lanes take one instruction
//! per step instead of two, which is what bounds the table forward (ops/README § Kernels). A
//! lowered standard-ops graph, which has no fused multiply-add, computes each step in float64 and
//! rounds it back ([`erf_f32_unfused`]): the same bits on every float32 (checked exhaustively).

#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    erf_with(x, |x2, p, c| x2.mul_add(p, c))
}

/// The rational approximation with its Horner steps `step(x², p, c)` = x²·p + c.
#[inline(always)]
fn erf_with(x: f32, step: impl Fn(f32, f32, f32) -> f32) -> f32 {
    let x = x.clamp(-4.0, 4.0); // NaN stays NaN; the bounds are constants, so no panic path
    let x2 = x * x;
    let mut p = step(x2, ERF_P[0], ERF_P[1]);
    for &k in &ERF_P[2..] {
        p = step(x2, p, k);
    }
    let p = x * p;
    let mut q = step(x2, ERF_Q[0], ERF_Q[1]);
    for &k in &ERF_Q[2..] {
        q = step(x2, q, k);
    }
    let r = (p / q).clamp(-1.0, 1.0);
    if x.abs() >= 3.92 {
        1.0f32.copysign(x)
    } else {
        r
    }
}

/// The numerator's coefficients in x², highest first (p(x) = x·P(x²)).
pub const ERF_P: [f32; 7] = [
    -2.726_142_3e-10,
    2.770_681_4e-8,
    -2.101_024e-6,
    -5.692_506_4e-5,
    -7.349_906_3e-4,
    -2.954_6e-3,
    -1.609_603_3e-2,
];

/// The denominator's coefficients in x², highest first.
pub const ERF_Q: [f32; 5] = [
    -1.456_607_2e-5,
    -2.133_740_6e-4,
    -1.682_827e-3,
    -7.373_329_2e-3,
    -1.426_474e-2,
];

/// One Horner step as a graph without fused multiply-add computes it: x²·p exactly in float64
/// (two float32 significands fit), plus c rounded in float64, then rounded to float32. Rounding
/// twice could differ from the single rounding of `mul_add` only on a float64 result that lies
/// exactly halfway between two float32s; no float32 input of the erf meets one.
#[inline(always)]
pub fn horner_step_f64(x2: f32, p: f32, c: f32) -> f32 {
    (f64::from(x2) * f64::from(p) + f64::from(c)) as f32
}

/// [`erf_f32`] the way `ditac lower` writes it (each step through [`horner_step_f64`]):
/// bit for bit the same function (tested on every float32 with `DITAC_EXHAUSTIVE=1`).
pub fn erf_f32_unfused(x: f32) -> f32 {
    erf_with(x, horner_step_f64)
}

/// The stride of the tests that sweep the float32s: 1 with `DITAC_EXHAUSTIVE=1`, else
/// `DITAC_SWEEP_STEP` (odd, so that every low bit pattern is met; set larger under emulation:
/// tests/aarch64/run.sh), else `default`.
#[cfg(test)]
pub(crate) fn sweep_step(default: u64) -> u64 {
    if std::env::var_os("DITAC_EXHAUSTIVE").is_some() {
        return 1;
    }
    std::env::var("DITAC_SWEEP_STEP")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&s| s >= 1)
        .map_or(default, |s| s | 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_to_libm() {
        let mut worst = 0.0f64;
        let mut i = -6.0f32;
        while i <= 6.0 {
            let (got, want) = (erf_f32(i) as f64, libm::erf(i as f64));
            worst = worst.max((got - want).abs());
            i += 1.0 / 4096.0;
        }
        assert!(worst < 5e-7, "max abs error {worst}");
        assert_eq!(erf_f32(f32::INFINITY), 1.0);
        assert_eq!(erf_f32(f32::NEG_INFINITY), -1.0);
        assert_eq!(erf_f32(0.0), 0.0);
    }

    /// The lowered graph's form is the same function: on every 13th float32 (every one with
    /// `DITAC_EXHAUSTIVE=1`; see [`sweep_step`]), both signs, NaN and the infinities.
    #[test]
    fn unfused_form_gives_the_same_bits() {
        let step = sweep_step(13) as usize;
        let mut bad = Vec::new();
        for b in (0..=f32::INFINITY.to_bits())
            .step_by(step)
            .chain([0x7fc0_0000])
        {
            for x in [f32::from_bits(b), -f32::from_bits(b)] {
                let (f, u) = (erf_f32(x), erf_f32_unfused(x));
                if f.to_bits() != u.to_bits() && bad.len() < 5 {
                    bad.push((x, f, u));
                }
            }
        }
        assert!(
            bad.is_empty(),
            "fused vs unfused (x, fused, unfused): {bad:?}"
        );
    }
}
