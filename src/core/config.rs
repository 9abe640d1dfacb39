//! The operator attributes of ops.md, their defaults and their validation. Shared by the plugin
//! (which reads them from the node) and the tools (which read them from flags or specs).

use super::basis::{theta_len, BasisKind};
use super::error::{DitacError, Result};

/// The largest tessellation the ops accept.
pub const MAX_TESS: i64 = 1024;
/// The largest lookup table (nodes).
pub const MAX_LUT: i64 = 1 << 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// x̃·Φ(x) (the reference).
    Ditac,
    /// LeakyReLU(x̃) with slope `alpha`.
    Leaky,
    /// x̃·Φ(x̃).
    Ge,
}

impl std::str::FromStr for Variant {
    type Err = DitacError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "ditac" => Ok(Variant::Ditac),
            "leaky" => Ok(Variant::Leaky),
            "ge" => Ok(Variant::Ge),
            other => Err(DitacError::attr(
                "variant",
                format!("\"{other}\""),
                "one of \"ditac\", \"leaky\", \"ge\"",
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpolation {
    /// The reference's round-half-even nearest node.
    Nearest,
    /// Linear interpolation between the two neighbouring nodes.
    Linear,
}

impl std::str::FromStr for Interpolation {
    type Err = DitacError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "nearest" => Ok(Interpolation::Nearest),
            "linear" => Ok(Interpolation::Linear),
            other => Err(DitacError::attr(
                "interpolation",
                format!("\"{other}\""),
                "one of \"nearest\", \"linear\"",
            )),
        }
    }
}

/// Every attribute of the `ai.ditac` ops, with the defaults of ops.md.
#[derive(Debug, Clone, PartialEq)]
pub struct Attrs {
    pub a: f32,
    pub b: f32,
    pub tess: i64,
    pub zero_boundary: i64,
    pub basis: BasisKind,
    pub variant: Variant,
    pub alpha: f32,
    pub lut_size: i64,
    pub interpolation: Interpolation,
    pub channel_axis: i64,
}

impl Default for Attrs {
    fn default() -> Self {
        Attrs {
            a: -0.5,
            b: 2.0,
            tess: 10,
            zero_boundary: 1,
            basis: BasisKind::Qr,
            variant: Variant::Ditac,
            alpha: 0.01,
            lut_size: 2048,
            interpolation: Interpolation::Nearest,
            channel_axis: 1,
        }
    }
}

impl Attrs {
    /// Checks the interval, `alpha` and the table attributes (what `DiTACLut` uses).
    pub fn validate_interval(&self) -> Result<()> {
        if !self.a.is_finite() {
            return Err(DitacError::attr("a", self.a, "a finite number"));
        }
        if !self.b.is_finite() {
            return Err(DitacError::attr("b", self.b, "a finite number"));
        }
        if self.a >= self.b {
            return Err(DitacError::attr(
                "a",
                self.a,
                format!("a < b (b = {})", self.b),
            ));
        }
        // The ops normalise by b − a and scale back by it, in float32.
        let width = self.b as f64 - self.a as f64;
        if !(width as f32).is_finite() || !((1.0 / width) as f32).is_finite() {
            return Err(DitacError::attr(
                "b",
                self.b,
                format!(
                    "b − a = {width:.3e} (a = {}) and 1/(b − a) representable in float32 \
                     (b − a ≤ {:e})",
                    self.a,
                    f32::MAX
                ),
            ));
        }
        if !self.alpha.is_finite() {
            return Err(DitacError::attr("alpha", self.alpha, "a finite number"));
        }
        Ok(())
    }

    /// Checks every attribute `DiTAC` and `DiTACGrad` use.
    pub fn validate(&self) -> Result<()> {
        self.validate_interval()?;
        if !(1..=MAX_TESS).contains(&self.tess) {
            return Err(DitacError::attr(
                "tess",
                self.tess,
                format!("an integer in 1..={MAX_TESS}"),
            ));
        }
        if self.zero_boundary != 0 && self.zero_boundary != 1 {
            return Err(DitacError::attr(
                "zero_boundary",
                self.zero_boundary,
                "0 or 1",
            ));
        }
        if self.lut_size != 0 && !(2..=MAX_LUT).contains(&self.lut_size) {
            return Err(DitacError::attr(
                "lut_size",
                self.lut_size,
                format!("0 (exact) or an integer in 2..={MAX_LUT}"),
            ));
        }
        if self.tess == 1 && self.zero_boundary == 1 {
            // d = 0: a valid (identity) warp; nothing to check.
        }
        Ok(())
    }

    pub fn tess(&self) -> usize {
        self.tess as usize
    }
    pub fn zero_boundary(&self) -> bool {
        self.zero_boundary != 0
    }
    /// Number of parameters d of θ.
    pub fn theta_len(&self) -> usize {
        theta_len(self.tess(), self.zero_boundary())
    }
}

/// Checks θ: length d and finite values.
pub fn validate_theta(theta: &[f32], d: usize) -> Result<()> {
    if theta.len() != d {
        return Err(DitacError::input(
            "theta",
            format!("has {} values per row: expected d = {d}", theta.len()),
        ));
    }
    if let Some((i, v)) = theta.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(DitacError::input(
            "theta",
            format!("has a non-finite value {v} at index {i}: expected finite numbers"),
        ));
    }
    Ok(())
}
