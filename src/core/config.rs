//! The operator attributes of ops.md, their defaults, the one reader and the one validator. Every
//! source of attributes — ONNX Runtime's kernel info (plugin), a model's node, a spec layer, command
//! line flags (tools) — implements [`AttrSource`] and goes through [`Attrs::read`], so the same value
//! gets the same verdict and the same message everywhere.

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

/// Where attributes come from. A lookup gives `Ok(None)` when the attribute is absent, its value,
/// or [`WrongType`] when the source holds it with another type.
pub trait AttrSource {
    fn float(&self, name: &'static str) -> Result<Option<f32>, WrongType>;
    fn int(&self, name: &'static str) -> Result<Option<i64>, WrongType>;
    fn string(&self, name: &'static str) -> Result<Option<String>, WrongType>;
}

/// An attribute held with another type than asked for; the text says what it holds instead, as
/// far as the source can tell ("" when it cannot).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WrongType(pub String);

/// Attributes given as typed optional values — command line flags, the fields of a spec layer —
/// for [`Attrs::read`] (`None`: the ops.md default). Such a source never has a wrong type.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttrValues {
    pub a: Option<f32>,
    pub b: Option<f32>,
    pub tess: Option<i64>,
    pub zero_boundary: Option<i64>,
    pub basis: Option<String>,
    pub variant: Option<String>,
    pub alpha: Option<f32>,
    pub lut_size: Option<i64>,
    pub interpolation: Option<String>,
    pub channel_axis: Option<i64>,
}

impl AttrSource for AttrValues {
    fn float(&self, name: &'static str) -> Result<Option<f32>, WrongType> {
        Ok(match name {
            "a" => self.a,
            "b" => self.b,
            "alpha" => self.alpha,
            _ => None,
        })
    }
    fn int(&self, name: &'static str) -> Result<Option<i64>, WrongType> {
        Ok(match name {
            "tess" => self.tess,
            "zero_boundary" => self.zero_boundary,
            "lut_size" => self.lut_size,
            "channel_axis" => self.channel_axis,
            _ => None,
        })
    }
    fn string(&self, name: &'static str) -> Result<Option<String>, WrongType> {
        Ok(match name {
            "basis" => self.basis.clone(),
            "variant" => self.variant.clone(),
            "interpolation" => self.interpolation.clone(),
            _ => None,
        })
    }
}

/// Which attributes an op reads: `DiTAC` and `DiTACGrad` all of them, `DiTACLut` those of its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrSet {
    /// `DiTAC`, `DiTACGrad`: every attribute.
    Warp,
    /// `DiTACLut`: `a`, `b`, `variant`, `alpha`, `interpolation`, `channel_axis`.
    Table,
}

impl AttrSet {
    /// The attribute names of the set, in the order they are read (and checked).
    pub fn names(self) -> &'static [&'static str] {
        const TABLE: [&str; 6] = [
            "a",
            "b",
            "alpha",
            "variant",
            "interpolation",
            "channel_axis",
        ];
        const WARP: [&str; 10] = [
            "a",
            "b",
            "alpha",
            "variant",
            "interpolation",
            "channel_axis",
            "tess",
            "zero_boundary",
            "lut_size",
            "basis",
        ];
        match self {
            AttrSet::Warp => &WARP,
            AttrSet::Table => &TABLE,
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
    /// Reads the attributes of `set` from `src` (absent: the ops.md default) and validates them:
    /// the one reader every source goes through.
    pub fn read(src: &(impl AttrSource + ?Sized), set: AttrSet) -> Result<Attrs> {
        let at = Self::parse(src, set)?;
        at.validate_set(set)?;
        Ok(at)
    }

    /// Reads the attributes of `set` (types and names of strings checked), without the range checks
    /// of [`Attrs::validate_set`] (for showing what a model holds).
    pub fn parse(src: &(impl AttrSource + ?Sized), set: AttrSet) -> Result<Attrs> {
        fn get<T>(
            name: &'static str,
            ty: &'static str,
            r: Result<Option<T>, WrongType>,
        ) -> Result<Option<T>> {
            r.map_err(|w| DitacError::attr_type(name, ty, &w.0))
        }
        let float = |n| get(n, "float", src.float(n));
        let int = |n| get(n, "int", src.int(n));
        let string = |n| get(n, "string", src.string(n));
        let mut at = Attrs::default();
        if let Some(v) = float("a")? {
            at.a = v;
        }
        if let Some(v) = float("b")? {
            at.b = v;
        }
        if let Some(v) = float("alpha")? {
            at.alpha = v;
        }
        if let Some(v) = string("variant")? {
            at.variant = v.parse()?;
        }
        if let Some(v) = string("interpolation")? {
            at.interpolation = v.parse()?;
        }
        if let Some(v) = int("channel_axis")? {
            at.channel_axis = v;
        }
        if set == AttrSet::Table {
            return Ok(at);
        }
        if let Some(v) = int("tess")? {
            at.tess = v;
        }
        if let Some(v) = int("zero_boundary")? {
            at.zero_boundary = v;
        }
        if let Some(v) = int("lut_size")? {
            at.lut_size = v;
        }
        if let Some(v) = string("basis")? {
            at.basis = v.parse()?;
        }
        Ok(at)
    }

    /// The checks of the attributes `set` reads.
    pub fn validate_set(&self, set: AttrSet) -> Result<()> {
        match set {
            AttrSet::Warp => self.validate(),
            AttrSet::Table => self.validate_interval(),
        }
    }

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

    /// The error for `basis = "explicit"` without an input B.
    pub fn missing_basis(&self) -> DitacError {
        DitacError::attr(
            "basis",
            "\"explicit\"",
            "input 'B' (the basis, [2·tess, d]) to be given",
        )
    }

    /// The error for an input B next to a basis that is built, not given.
    pub fn basis_not_explicit(&self) -> DitacError {
        let name = match self.basis {
            BasisKind::Qr => "qr",
            BasisKind::Rref => "rref",
            BasisKind::Sparse => "sparse",
            BasisKind::Explicit => "explicit",
        };
        DitacError::input(
            "B",
            format!("is given but attribute 'basis' = \"{name}\": expected basis = \"explicit\" when B is given (or no input B)"),
        )
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Attributes as typed values by name (what a node holds).
    #[derive(Default)]
    struct Map(HashMap<&'static str, Value>);

    enum Value {
        F(f32),
        I(i64),
        S(&'static str),
    }

    impl Map {
        fn with(mut self, name: &'static str, v: Value) -> Self {
            self.0.insert(name, v);
            self
        }
        fn get<T>(
            &self,
            name: &str,
            pick: impl Fn(&Value) -> Option<T>,
        ) -> Result<Option<T>, WrongType> {
            match self.0.get(name) {
                None => Ok(None),
                Some(v) => pick(v).map(Some).ok_or(WrongType(String::new())),
            }
        }
    }

    impl AttrSource for Map {
        fn float(&self, name: &'static str) -> Result<Option<f32>, WrongType> {
            self.get(name, |v| match v {
                Value::F(f) => Some(*f),
                _ => None,
            })
        }
        fn int(&self, name: &'static str) -> Result<Option<i64>, WrongType> {
            self.get(name, |v| match v {
                Value::I(i) => Some(*i),
                _ => None,
            })
        }
        fn string(&self, name: &'static str) -> Result<Option<String>, WrongType> {
            self.get(name, |v| match v {
                Value::S(s) => Some(s.to_string()),
                _ => None,
            })
        }
    }

    fn err(m: Map, set: AttrSet) -> String {
        Attrs::read(&m, set).unwrap_err().to_string()
    }

    #[test]
    fn absent_attributes_take_the_ops_md_defaults() {
        assert_eq!(
            Attrs::read(&Map::default(), AttrSet::Warp).unwrap(),
            Attrs::default()
        );
        let m = Map::default()
            .with("tess", Value::I(6))
            .with("variant", Value::S("leaky"))
            .with("interpolation", Value::S("linear"))
            .with("a", Value::F(-1.0));
        let at = Attrs::read(&m, AttrSet::Warp).unwrap();
        assert_eq!(
            (at.tess, at.variant, at.interpolation, at.a),
            (6, Variant::Leaky, Interpolation::Linear, -1.0)
        );
    }

    #[test]
    fn one_set_of_messages() {
        let tess0 = || Map::default().with("tess", Value::I(0));
        assert_eq!(
            err(tess0(), AttrSet::Warp),
            "attribute 'tess' = 0: expected an integer in 1..=1024"
        );
        assert_eq!(
            err(Map::default().with("a", Value::I(1)), AttrSet::Warp),
            "attribute 'a' has no float value: expected an attribute of type float"
        );
        assert_eq!(
            err(
                Map::default().with("variant", Value::S("relu")),
                AttrSet::Table
            ),
            "attribute 'variant' = \"relu\": expected one of \"ditac\", \"leaky\", \"ge\""
        );
        assert_eq!(
            err(Map::default().with("a", Value::F(3.0)), AttrSet::Table),
            "attribute 'a' = 3: expected a < b (b = 2)"
        );
        // A table op neither reads nor checks the warp's attributes.
        assert_eq!(Attrs::read(&tess0(), AttrSet::Table).unwrap().tess, 10);
        // `parse` checks types and names, not ranges.
        assert_eq!(Attrs::parse(&tess0(), AttrSet::Warp).unwrap().tess, 0);
    }
}
