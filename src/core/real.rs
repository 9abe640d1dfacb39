//! The float types the math runs in: f32 (float and float16 tensors) and f64 (double tensors).
//! Plain IEEE arithmetic: the hit-time logic of the integrator compares against +∞, so nothing here
//! may assume finite values (no fast-math).

use std::fmt::Debug;
use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub, SubAssign};

pub trait Real:
    Copy
    + Debug
    + PartialOrd
    + Send
    + Sync
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
{
    const ZERO: Self;
    const ONE: Self;
    const HALF: Self;
    /// difw's `eps`: FLT_EPSILON, in both precisions (the reference only has a float build).
    const EPS: Self;
    const INFINITY: Self;
    const FRAC_1_SQRT_2: Self;
    /// 1/sqrt(2π), for the normal density.
    const FRAC_1_SQRT_2PI: Self;

    fn from_f64(v: f64) -> Self;
    fn from_usize(v: usize) -> Self;
    fn to_f64(self) -> f64;
    fn abs(self) -> Self;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn floor(self) -> Self;
    fn erf(self) -> Self;
    fn is_nan(self) -> bool;
    /// Round half to even, as `torch.round`.
    fn round_ties_even(self) -> Self;
    /// Saturating conversion to an index (NaN → 0).
    fn to_index(self) -> usize;
    /// The slices as float32, when R is f32 (for the vectorised kernels).
    fn as_f32_io<'a>(x: &'a [Self], y: &'a mut [Self]) -> Option<(&'a [f32], &'a mut [f32])>;
    /// The slice as float32, when R is f32.
    fn as_f32(x: &[Self]) -> Option<&[f32]>;
}

macro_rules! impl_real {
    ($t:ty, $erf:path, $io:expr, $one:expr) => {
        impl Real for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const HALF: Self = 0.5;
            const EPS: Self = f32::EPSILON as $t;
            const INFINITY: Self = <$t>::INFINITY;
            const FRAC_1_SQRT_2: Self = std::f64::consts::FRAC_1_SQRT_2 as $t;
            const FRAC_1_SQRT_2PI: Self =
                (std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2 * 0.5) as $t;
            #[inline(always)]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            #[inline(always)]
            fn from_usize(v: usize) -> Self {
                v as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline(always)]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline(always)]
            fn floor(self) -> Self {
                <$t>::floor(self)
            }
            #[inline(always)]
            fn erf(self) -> Self {
                $erf(self)
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            #[inline(always)]
            fn round_ties_even(self) -> Self {
                <$t>::round_ties_even(self)
            }
            #[inline(always)]
            fn to_index(self) -> usize {
                self as usize
            }
            #[inline(always)]
            fn as_f32_io<'a>(
                x: &'a [Self],
                y: &'a mut [Self],
            ) -> Option<(&'a [f32], &'a mut [f32])> {
                $io(x, y)
            }
            #[inline(always)]
            fn as_f32(x: &[Self]) -> Option<&[f32]> {
                $one(x)
            }
        }
    };
}

impl_real!(f32, super::erf::erf_f32, |x, y| Some((x, y)), Some);
impl_real!(f64, libm::erf, |_, _| None, |_| None);

/// Standard normal CDF Φ(x) = 0.5·(1 + erf(x/√2)), in the reference's op order.
#[inline(always)]
pub fn normal_cdf<R: Real>(x: R) -> R {
    R::HALF * (R::ONE + (x * R::FRAC_1_SQRT_2).erf())
}

/// Standard normal density φ(x).
#[inline(always)]
pub fn normal_pdf<R: Real>(x: R) -> R {
    R::FRAC_1_SQRT_2PI * (-(x * x) * R::HALF).exp()
}
