//! Network descriptions ("specs") for `ditac build`, `ditac train-artifacts` and `ditac train`.
//!
//! A spec is a short TOML or JSON file: the per-sample input shape and a list of layers.
//!
//! ```toml
//! name = "regression"
//! input = 2                # features; or [C, H, W] for images
//!
//! [[layers]]
//! type = "linear"          # alias "dense"
//! out = 32
//!
//! [[layers]]
//! type = "ditac"           # every ops.md attribute, ops.md defaults
//! a = -3.0
//! b = 3.0
//! tess = 10
//! per_channel = false      # true: θ is [C, d], one row per channel (axis 1)
//! # basis = "explicit"     # B [2·tess, d] from the parameters, key "<prefix>.B" (the basis θ was
//! #                        # trained in: the reference module's `T.params.B`)
//! lambda_smooth = 5.0      # training only: the reference's prior settings (also lambda_var,
//!                          # lambda_smooth_init, lambda_var_init, lambda_reg_loss)
//!
//! [[layers]]
//! type = "linear"
//! out = 1
//! ```
//!
//! Parameters use PyTorch's key names and layouts, as an `nn.Sequential` state dict would: a layer's
//! prefix is its `name` if given, else its index in `layers` (`"0.weight"`, `"0.bias"`, `"1.thetas"`).
//! Linear weights are `[out, in]`, conv2d weights `[out, in, k, k]`, DiTAC's `thetas` is `[1, d]`
//! (the reference's shape) or `[C, d]` per channel, PReLU's `weight` is `[num_parameters]`.

use anyhow::{bail, Context, Result};
use ditac::basis::BasisKind;
use ditac::config::{AttrSet, AttrValues, Attrs};
use serde::Deserialize;
use std::path::Path;

/// A network description as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Graph name (defaults to the file stem).
    #[serde(default)]
    pub name: Option<String>,
    /// Per-sample input shape (without the batch axis): a number of features or `[C, H, W]`.
    pub input: InputShape,
    /// The layers, first to last.
    pub layers: Vec<Layer>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum InputShape {
    Features(usize),
    Shape(Vec<usize>),
}

impl InputShape {
    pub fn dims(&self) -> Vec<usize> {
        match self {
            InputShape::Features(n) => vec![*n],
            InputShape::Shape(s) => s.clone(),
        }
    }
}

fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}
fn leaky_default() -> f32 {
    0.01
}

/// One layer. `name` (optional everywhere) sets the parameter key prefix.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Layer {
    #[serde(alias = "dense")]
    Linear {
        #[serde(default)]
        name: Option<String>,
        out: usize,
        #[serde(default = "yes")]
        bias: bool,
    },
    Conv2d {
        #[serde(default)]
        name: Option<String>,
        out: usize,
        kernel: usize,
        #[serde(default = "one")]
        stride: usize,
        #[serde(default)]
        padding: usize,
        #[serde(default = "yes")]
        bias: bool,
    },
    Flatten {
        #[serde(default)]
        name: Option<String>,
    },
    Ditac(DitacLayer),
    Relu {
        #[serde(default)]
        name: Option<String>,
    },
    Gelu {
        #[serde(default)]
        name: Option<String>,
    },
    Tanh {
        #[serde(default)]
        name: Option<String>,
    },
    Sigmoid {
        #[serde(default)]
        name: Option<String>,
    },
    LeakyRelu {
        #[serde(default)]
        name: Option<String>,
        #[serde(default = "leaky_default")]
        slope: f32,
    },
    Prelu {
        #[serde(default)]
        name: Option<String>,
        /// 1 (one slope shared, PyTorch's default) or the channel count.
        #[serde(default = "one")]
        num_parameters: usize,
    },
}

/// A DiTAC layer: every ops.md attribute, with the ops.md defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DitacLayer {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub a: Option<f32>,
    #[serde(default)]
    pub b: Option<f32>,
    #[serde(default)]
    pub tess: Option<i64>,
    #[serde(default)]
    pub zero_boundary: Option<bool>,
    #[serde(default)]
    pub basis: Option<String>,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default)]
    pub alpha: Option<f32>,
    #[serde(default)]
    pub lut_size: Option<i64>,
    #[serde(default)]
    pub interpolation: Option<String>,
    /// θ per channel (`[C, d]`, channel axis 1) instead of one θ for the layer.
    #[serde(default)]
    pub per_channel: bool,
    /// Training only (the reference's constructor arguments, ditac.md §8–§10): the smoothness
    /// prior's length scale and variance, the initial θ prior's, and the prior's weight. Unset:
    /// the `train` flags' values, whose defaults are the reference's.
    #[serde(default)]
    pub lambda_smooth: Option<f64>,
    #[serde(default)]
    pub lambda_var: Option<f64>,
    #[serde(default)]
    pub lambda_smooth_init: Option<f64>,
    #[serde(default)]
    pub lambda_var_init: Option<f64>,
    #[serde(default)]
    pub lambda_reg_loss: Option<f64>,
}

/// The prior settings of a DiTAC layer (the reference's names; ditac.md §8 regulariser, §9 initial
/// θ).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PriorSettings {
    /// Length scale and variance of the regulariser's precision matrix P.
    pub lambda_smooth: f64,
    pub lambda_var: f64,
    /// Length scale and variance of the covariance the initial θ is drawn from.
    pub lambda_smooth_init: f64,
    pub lambda_var_init: f64,
    /// The regulariser's weight λ (0: none).
    pub lambda_reg_loss: f64,
}

impl Default for PriorSettings {
    /// The reference constructor's defaults: 5, 2, 5, 2, 0.1.
    fn default() -> Self {
        PriorSettings {
            lambda_smooth: 5.0,
            lambda_var: 2.0,
            lambda_smooth_init: 5.0,
            lambda_var_init: 2.0,
            lambda_reg_loss: 0.1,
        }
    }
}

impl PriorSettings {
    /// Checks that the length scales and variances are positive and λ is ≥ 0 (all finite).
    pub fn validate(&self) -> Result<()> {
        for (name, v, zero_ok) in [
            ("lambda_smooth", self.lambda_smooth, false),
            ("lambda_var", self.lambda_var, false),
            ("lambda_smooth_init", self.lambda_smooth_init, false),
            ("lambda_var_init", self.lambda_var_init, false),
            ("lambda_reg_loss", self.lambda_reg_loss, true),
        ] {
            if !v.is_finite() || v < 0.0 || (v == 0.0 && !zero_ok) {
                let want = if zero_ok { "≥ 0" } else { "> 0" };
                bail!("{name} = {v}: expected a finite number {want}");
            }
        }
        Ok(())
    }
}

impl DitacLayer {
    /// The ops.md attributes this layer sets (validated).
    pub fn attrs(&self) -> Result<Attrs> {
        // `zero_boundary` is a bool in specs; `channel_axis` is not in specs (per-channel θ is
        // along axis 1).
        let given = AttrValues {
            a: self.a,
            b: self.b,
            tess: self.tess,
            zero_boundary: self.zero_boundary.map(i64::from),
            basis: self.basis.clone(),
            variant: self.variant.clone(),
            alpha: self.alpha,
            lut_size: self.lut_size,
            interpolation: self.interpolation.clone(),
            channel_axis: None,
        };
        // basis "explicit": B comes from the parameters (`<layer>.B`), see `crate::graph`.
        Ok(Attrs::read(&given, AttrSet::Warp)?)
    }

    /// This layer's prior settings: its own where set, else `defaults` (validated).
    pub fn prior(&self, defaults: &PriorSettings) -> Result<PriorSettings> {
        let p = PriorSettings {
            lambda_smooth: self.lambda_smooth.unwrap_or(defaults.lambda_smooth),
            lambda_var: self.lambda_var.unwrap_or(defaults.lambda_var),
            lambda_smooth_init: self
                .lambda_smooth_init
                .unwrap_or(defaults.lambda_smooth_init),
            lambda_var_init: self.lambda_var_init.unwrap_or(defaults.lambda_var_init),
            lambda_reg_loss: self.lambda_reg_loss.unwrap_or(defaults.lambda_reg_loss),
        };
        p.validate()?;
        Ok(p)
    }
}

impl Layer {
    pub fn name(&self) -> Option<&str> {
        match self {
            Layer::Linear { name, .. }
            | Layer::Conv2d { name, .. }
            | Layer::Flatten { name }
            | Layer::Relu { name }
            | Layer::Gelu { name }
            | Layer::Tanh { name }
            | Layer::Sigmoid { name }
            | Layer::LeakyRelu { name, .. }
            | Layer::Prelu { name, .. } => name.as_deref(),
            Layer::Ditac(d) => d.name.as_deref(),
        }
    }

    /// The layer's type as written in specs.
    pub fn kind(&self) -> &'static str {
        match self {
            Layer::Linear { .. } => "linear",
            Layer::Conv2d { .. } => "conv2d",
            Layer::Flatten { .. } => "flatten",
            Layer::Ditac(_) => "ditac",
            Layer::Relu { .. } => "relu",
            Layer::Gelu { .. } => "gelu",
            Layer::Tanh { .. } => "tanh",
            Layer::Sigmoid { .. } => "sigmoid",
            Layer::LeakyRelu { .. } => "leaky_relu",
            Layer::Prelu { .. } => "prelu",
        }
    }
}

/// A parameter a layer owns: its PyTorch key and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSpec {
    pub key: String,
    pub shape: Vec<usize>,
}

impl ParamSpec {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A layer with its shapes worked out.
#[derive(Debug, Clone)]
pub struct ResolvedLayer {
    pub index: usize,
    /// Parameter key prefix: the layer's name or its index.
    pub prefix: String,
    pub layer: Layer,
    /// Validated attributes, for DiTAC layers.
    pub attrs: Option<Attrs>,
    /// Per-sample shapes (no batch axis).
    pub in_shape: Vec<usize>,
    pub out_shape: Vec<usize>,
    pub params: Vec<ParamSpec>,
}

/// A spec with every shape and parameter resolved.
#[derive(Debug, Clone)]
pub struct Network {
    pub name: String,
    pub input: Vec<usize>,
    pub layers: Vec<ResolvedLayer>,
}

impl Network {
    pub fn output(&self) -> &[usize] {
        self.layers.last().map_or(&self.input, |l| &l.out_shape)
    }
    pub fn params(&self) -> impl Iterator<Item = &ParamSpec> {
        self.layers.iter().flat_map(|l| l.params.iter())
    }
}

impl Spec {
    /// Reads a spec from TOML (`.toml`) or JSON (`.json`, or any file starting with `{`).
    pub fn load(path: &Path) -> Result<Spec> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read spec {}", path.display()))?;
        crate::output::record_input(path);
        let is_json =
            path.extension().is_some_and(|e| e == "json") || text.trim_start().starts_with('{');
        let spec: Spec = if is_json {
            serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| format!("spec {} is not a valid JSON spec", path.display()))?
        } else {
            toml::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{}", e.to_string().trim().replace('\n', " ")))
                .with_context(|| format!("spec {} is not a valid TOML spec", path.display()))?
        };
        let mut spec = spec;
        if spec.name.is_none() {
            spec.name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        }
        Ok(spec)
    }

    /// Parses a TOML spec from a string (tests and embedded specs).
    pub fn from_toml(text: &str) -> Result<Spec> {
        toml::from_str(text).map_err(|e| anyhow::anyhow!("invalid TOML spec: {e}"))
    }

    /// Works out every layer's shapes and parameters, checking that the layers fit together.
    pub fn resolve(&self) -> Result<Network> {
        let input = self.input.dims();
        if input.is_empty() || input.contains(&0) {
            bail!("spec: input shape {input:?} must be non-empty with positive sizes");
        }
        if self.layers.is_empty() {
            bail!("spec: `layers` is empty");
        }
        let mut shape = input.clone();
        let mut out = Vec::with_capacity(self.layers.len());
        let mut seen = std::collections::BTreeSet::new();
        let mut params_total = 0usize;
        crate::budget::product("spec: the input", &input)?;
        for (index, layer) in self.layers.iter().enumerate() {
            let prefix = layer
                .name()
                .map(str::to_owned)
                .unwrap_or_else(|| index.to_string());
            if !seen.insert(prefix.clone()) {
                bail!("spec: layer {index}: name \"{prefix}\" is used twice");
            }
            let at =
                |what: String| anyhow::anyhow!("spec: layer {index} ({}): {what}", layer.kind());
            let key = |p: &str| format!("{prefix}.{p}");
            let mut params = Vec::new();
            let mut attrs = None;
            let out_shape = match layer {
                Layer::Linear { out, bias, .. } => {
                    if shape.len() != 1 {
                        return Err(at(format!(
                            "expects a flat input of features, got shape {shape:?} (add a flatten layer)"
                        )));
                    }
                    if *out == 0 {
                        return Err(at("out must be positive".into()));
                    }
                    params.push(ParamSpec {
                        key: key("weight"),
                        shape: vec![*out, shape[0]],
                    });
                    if *bias {
                        params.push(ParamSpec {
                            key: key("bias"),
                            shape: vec![*out],
                        });
                    }
                    vec![*out]
                }
                Layer::Conv2d {
                    out,
                    kernel,
                    stride,
                    padding,
                    bias,
                    ..
                } => {
                    if shape.len() != 3 {
                        return Err(at(format!(
                            "expects a [C, H, W] input, got shape {shape:?}"
                        )));
                    }
                    if *out == 0 || *kernel == 0 || *stride == 0 {
                        return Err(at("out, kernel and stride must be positive".into()));
                    }
                    let (c, h, w) = (shape[0], shape[1], shape[2]);
                    let padded = |n: usize| padding.checked_mul(2).and_then(|p| p.checked_add(n));
                    let (Some(hp), Some(wp)) = (padded(h), padded(w)) else {
                        return Err(at(format!("padding {padding} is too large")));
                    };
                    if hp < *kernel || wp < *kernel {
                        return Err(at(format!(
                            "kernel {kernel} is larger than the padded input {h}x{w} (padding {padding})"
                        )));
                    }
                    let ho = (hp - kernel) / stride + 1;
                    let wo = (wp - kernel) / stride + 1;
                    params.push(ParamSpec {
                        key: key("weight"),
                        shape: vec![*out, c, *kernel, *kernel],
                    });
                    if *bias {
                        params.push(ParamSpec {
                            key: key("bias"),
                            shape: vec![*out],
                        });
                    }
                    vec![*out, ho, wo]
                }
                Layer::Flatten { .. } => vec![crate::budget::product(&prefix, &shape)?],
                Layer::Ditac(d) => {
                    let a = d.attrs().map_err(|e| at(format!("{e}")))?;
                    // Only the layer's own settings here; the flags' defaults are checked too.
                    d.prior(&PriorSettings {
                        lambda_reg_loss: 0.0,
                        ..PriorSettings::default()
                    })
                    .map_err(|e| at(format!("{e}")))?;
                    let rows = if d.per_channel { shape[0] } else { 1 };
                    params.push(ParamSpec {
                        key: key("thetas"),
                        shape: vec![rows, a.theta_len()],
                    });
                    if a.basis == BasisKind::Explicit {
                        // The basis θ was trained in, from the parameter file (the reference keeps it
                        // at the module's `T.params.B`, outside the state_dict).
                        params.push(ParamSpec {
                            key: key("B"),
                            shape: vec![2 * a.tess(), a.theta_len()],
                        });
                    }
                    attrs = Some(a);
                    shape.clone()
                }
                Layer::Prelu { num_parameters, .. } => {
                    if *num_parameters != 1 && *num_parameters != shape[0] {
                        return Err(at(format!(
                            "num_parameters = {num_parameters}: expected 1 or the channel count {}",
                            shape[0]
                        )));
                    }
                    params.push(ParamSpec {
                        key: key("weight"),
                        shape: vec![*num_parameters],
                    });
                    shape.clone()
                }
                Layer::LeakyRelu { slope, .. } => {
                    if !slope.is_finite() {
                        return Err(at(format!("slope = {slope}: expected a finite number")));
                    }
                    shape.clone()
                }
                Layer::Relu { .. }
                | Layer::Gelu { .. }
                | Layer::Tanh { .. }
                | Layer::Sigmoid { .. } => shape.clone(),
            };
            // Sizes checked before anything of that size is allocated (weights, activations).
            crate::budget::product(&format!("layer {prefix}: the output"), &out_shape)?;
            for p in &params {
                params_total = crate::budget::product(&format!("parameter {}", p.key), &p.shape)?
                    .checked_add(params_total)
                    .ok_or_else(|| anyhow::anyhow!("spec: the parameter count overflows"))?;
            }
            out.push(ResolvedLayer {
                index,
                prefix,
                layer: layer.clone(),
                attrs,
                in_shape: shape.clone(),
                out_shape: out_shape.clone(),
                params,
            });
            shape = out_shape;
        }
        crate::budget::check_values(
            &format!("spec: {params_total} parameters (float32)"),
            Some(params_total as u128),
            4,
        )?;
        Ok(Network {
            name: self.name.clone().unwrap_or_else(|| "ditac".into()),
            input,
            layers: out,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MLP: &str = r#"
        input = 2
        [[layers]]
        type = "dense"
        out = 16
        [[layers]]
        type = "ditac"
        a = -3.0
        b = 3.0
        per_channel = true
        [[layers]]
        type = "linear"
        name = "head"
        out = 1
    "#;

    #[test]
    fn resolves_shapes_and_pytorch_keys() {
        let net = Spec::from_toml(MLP).unwrap().resolve().unwrap();
        let keys: Vec<_> = net
            .params()
            .map(|p| (p.key.as_str(), p.shape.clone()))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("0.weight", vec![16, 2]),
                ("0.bias", vec![16]),
                ("1.thetas", vec![16, 9]),
                ("head.weight", vec![1, 16]),
                ("head.bias", vec![1]),
            ]
        );
        assert_eq!(net.output(), &[1]);
        let a = net.layers[1].attrs.as_ref().unwrap();
        assert_eq!((a.a, a.b, a.tess), (-3.0, 3.0, 10));
    }

    #[test]
    fn conv_shapes() {
        let s = Spec::from_toml(
            "input = [3, 8, 8]\n[[layers]]\ntype = \"conv2d\"\nout = 4\nkernel = 3\npadding = 1\n\
             [[layers]]\ntype = \"flatten\"\n[[layers]]\ntype = \"linear\"\nout = 2\n",
        )
        .unwrap();
        let net = s.resolve().unwrap();
        assert_eq!(net.layers[0].out_shape, vec![4, 8, 8]);
        assert_eq!(net.layers[2].params[0].shape, vec![2, 256]);
    }

    #[test]
    fn bad_specs_say_where() {
        let unknown =
            Spec::from_toml("input = 2\n[[layers]]\ntype = \"linear\"\nout = 1\nwidth = 3\n");
        assert!(format!("{:#}", unknown.unwrap_err()).contains("width"));
        let kind = Spec::from_toml("input = 2\n[[layers]]\ntype = \"swish\"\n");
        assert!(format!("{:#}", kind.unwrap_err()).contains("swish"));
        let tess = Spec::from_toml("input = 2\n[[layers]]\ntype = \"ditac\"\ntess = 0\n").unwrap();
        let msg = format!("{:#}", tess.resolve().unwrap_err());
        assert!(
            msg.contains("layer 0 (ditac)") && msg.contains("tess"),
            "{msg}"
        );
        let flat =
            Spec::from_toml("input = [3, 4, 4]\n[[layers]]\ntype = \"linear\"\nout = 1\n").unwrap();
        assert!(format!("{:#}", flat.resolve().unwrap_err()).contains("flatten"));
    }
}
