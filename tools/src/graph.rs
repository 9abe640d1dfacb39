//! The forward ONNX graph of a resolved spec ([`crate::spec::Network`]): one place that turns layers
//! into nodes, shared by `ditac build` (inference models), `ditac train-artifacts` (the forward half
//! of the training graph and the eval model) and the tests.
//!
//! Initializers keep PyTorch's key names (`"0.weight"`, `"1.thetas"`), so parameters go back and
//! forth between ONNX models, checkpoints and state dicts by name. One exception in shape: a
//! per-layer θ is stored `[d]` (ops.md), where PyTorch holds `[1, d]`; loading accepts both.

use crate::model::{ditac_attrs, Attr, ElemType, ModelBuilder, DITAC_DOMAIN};
use crate::onnx::DITAC;
use crate::params::{Params, Tensor};
use crate::spec::{Layer, Network, PriorSettings, ResolvedLayer};
use anyhow::{bail, Result};
use ditac::basis;
use ditac::core::rng::{XorShift64, GOLDEN};
use ditac::prior;

/// The names one layer's nodes read and write.
#[derive(Debug, Clone)]
pub struct LayerNodes {
    /// Name of the layer's input value.
    pub input: String,
    /// Name of the layer's output value.
    pub output: String,
    /// Initializer names of its parameters, in [`ResolvedLayer::params`] order.
    pub params: Vec<String>,
    /// The node's name (`<prefix>.<type>`).
    pub node_name: String,
}

/// What [`emit_forward`] wrote.
#[derive(Debug, Clone)]
pub struct Forward {
    pub input: String,
    pub output: String,
    pub layers: Vec<LayerNodes>,
}

/// The shape an ONNX initializer of this parameter has (θ `[1, d]` → `[d]`).
pub fn onnx_shape(layer: &ResolvedLayer, key_index: usize) -> Vec<usize> {
    let p = &layer.params[key_index];
    match &layer.layer {
        Layer::Ditac(d) if !d.per_channel && key_index == 0 => vec![p.shape[1]],
        Layer::Prelu { num_parameters, .. } if layer.in_shape.len() > 1 => {
            // Slope broadcast over [N, C, H, W]: [C, 1, 1].
            let mut s = vec![*num_parameters];
            s.extend(std::iter::repeat_n(1, layer.in_shape.len() - 1));
            s
        }
        _ => p.shape.clone(),
    }
}

/// Checks that `params` holds every parameter of `net` with the right shape; returns, per parameter
/// in network order, its values.
pub fn check_params<'p>(net: &Network, params: &'p Params) -> Result<Vec<&'p Tensor>> {
    let mut out = Vec::new();
    for layer in &net.layers {
        for (i, p) in layer.params.iter().enumerate() {
            let t = params.get(&p.key)?;
            let onnx = onnx_shape(layer, i);
            let ok = t.shape == p.shape
                || t.shape == onnx
                || (t.data.len() == p.len() && matches!(layer.layer, Layer::Prelu { .. }));
            if !ok {
                bail!(
                    "tensor \"{}\" has shape {:?}: layer {} ({}) expects {:?}",
                    p.key,
                    t.shape,
                    layer.index,
                    layer.layer.kind(),
                    p.shape
                );
            }
            if let Some(i) = t.data.iter().position(|v| !v.is_finite()) {
                bail!(
                    "tensor \"{}\" has a non-finite value {} at index {i}",
                    p.key,
                    t.data[i]
                );
            }
            out.push(t);
        }
        if let (Some(at), [_, b]) = (&layer.attrs, layer.params.as_slice()) {
            // An explicit B: a basis of this tessellation's constraint null space.
            let t = params.get(&b.key)?;
            basis::explicit(
                at.tess(),
                at.zero_boundary(),
                &t.data,
                b.shape[0],
                b.shape[1],
            )
            .map_err(|e| anyhow::anyhow!("tensor \"{}\": {e}", b.key))?;
        }
    }
    Ok(out)
}

/// A seeded xorshift64 stream of uniforms in [-1, 1). Kept rather than `rand`: the weights of the
/// committed `models/ditac_mlp*` (`ditac build --seed 7`) were drawn from this stream.
struct Uniform(XorShift64);
impl Uniform {
    fn next(&mut self) -> f32 {
        self.0.unit_f32() * 2.0 - 1.0
    }
}

/// Initial parameters as PyTorch initialises them (Linear and Conv2d: weights and biases uniform in
/// ±1/√fan_in; PReLU 0.25) and θ drawn from the reference's prior (ditac.md §9, each layer's
/// `lambda_smooth_init`, `lambda_var_init`; unset: the reference's 5 and 2), all from `seed`.
pub fn init_params(net: &Network, seed: u64) -> Result<Params> {
    init_params_with(net, seed, &PriorSettings::default())
}

/// [`init_params`] with `defaults` for the prior settings a layer leaves unset.
pub fn init_params_with(net: &Network, seed: u64, defaults: &PriorSettings) -> Result<Params> {
    let mut rng = Uniform(XorShift64(
        0x2545_F491_4F6C_DD1D ^ seed.wrapping_mul(GOLDEN) | 1,
    ));
    let mut out = Params::default();
    for layer in &net.layers {
        match &layer.layer {
            Layer::Linear { .. } | Layer::Conv2d { .. } => {
                let w = &layer.params[0];
                let fan_in: usize = w.shape[1..].iter().product();
                let bound = 1.0 / (fan_in as f32).sqrt();
                for p in &layer.params {
                    let data = (0..p.len()).map(|_| rng.next() * bound).collect();
                    out.insert(p.key.clone(), Tensor::new(p.shape.clone(), data));
                }
            }
            Layer::Prelu { .. } => {
                let p = &layer.params[0];
                out.insert(
                    p.key.clone(),
                    Tensor::new(p.shape.clone(), vec![0.25; p.len()]),
                );
            }
            Layer::Ditac(spec) => {
                let at = layer
                    .attrs
                    .as_ref()
                    .expect("resolved DiTAC layer has attrs");
                if let Some(b) = layer.params.get(1) {
                    bail!(
                        "layer {} (ditac): basis \"explicit\" takes B from the parameters (tensor \"{}\"): pass --params",
                        layer.index,
                        b.key
                    );
                }
                let settings = spec.prior(defaults)?;
                let p = &layer.params[0];
                let (rows, d) = (p.shape[0], p.shape[1]);
                let b = basis::build(at.tess(), at.zero_boundary(), at.basis)?;
                let cov = prior::init_covariance(
                    at.tess(),
                    &b,
                    settings.lambda_smooth_init,
                    settings.lambda_var_init,
                );
                let layer_seed = seed
                    .wrapping_mul(1_000_003)
                    .wrapping_add(layer.index as u64);
                let data = prior::sample_thetas(&cov, d, rows, layer_seed).concat();
                out.insert(p.key.clone(), Tensor::new(p.shape.clone(), data));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Writes the nodes of `net` into `m`, reading `input` and writing `output`. With `initializers`,
/// the parameters from `params` become initializers (in their ONNX shapes); without, the caller
/// declares them (as graph inputs of a training graph, say) under the same names.
pub fn emit_forward(
    net: &Network,
    params: Option<&Params>,
    m: &mut ModelBuilder,
    input: &str,
    output: &str,
) -> Result<Forward> {
    if let Some(p) = params {
        check_params(net, p)?;
    }
    let mut layers = Vec::new();
    let mut cur = input.to_string();
    let n = net.layers.len();
    for (li, layer) in net.layers.iter().enumerate() {
        let out = if li + 1 == n {
            output.to_string()
        } else {
            format!("{}.out", layer.prefix)
        };
        let node_name = format!("{}.{}", layer.prefix, layer.layer.kind());
        let names: Vec<String> = layer.params.iter().map(|p| p.key.clone()).collect();
        if let Some(params) = params {
            for (i, key) in names.iter().enumerate() {
                let shape = onnx_shape(layer, i);
                m.initializer_f32(key, &shape, &params.get(key)?.data);
            }
        }
        let ins: Vec<&str> = std::iter::once(cur.as_str())
            .chain(names.iter().map(String::as_str))
            .collect();
        let o = [out.as_str()];
        match &layer.layer {
            Layer::Linear { .. } => {
                m.node(
                    "Gemm",
                    "",
                    &node_name,
                    &ins,
                    &o,
                    &[("transB", Attr::Int(1))],
                );
            }
            Layer::Conv2d {
                kernel,
                stride,
                padding,
                ..
            } => {
                let (k, s, p) = (*kernel as i64, *stride as i64, *padding as i64);
                m.node(
                    "Conv",
                    "",
                    &node_name,
                    &ins,
                    &o,
                    &[
                        ("kernel_shape", Attr::Ints(vec![k, k])),
                        ("strides", Attr::Ints(vec![s, s])),
                        ("pads", Attr::Ints(vec![p, p, p, p])),
                    ],
                );
            }
            Layer::Flatten { .. } => {
                m.node(
                    "Flatten",
                    "",
                    &node_name,
                    &ins,
                    &o,
                    &[("axis", Attr::Int(1))],
                );
            }
            Layer::Ditac(_) => {
                let at = layer
                    .attrs
                    .as_ref()
                    .expect("resolved DiTAC layer has attrs");
                let attrs = ditac_attrs(at);
                m.node(DITAC, DITAC_DOMAIN, &node_name, &ins, &o, &attrs);
            }
            Layer::Relu { .. } => {
                m.node("Relu", "", &node_name, &ins, &o, &[]);
            }
            Layer::Gelu { .. } => {
                m.node("Gelu", "", &node_name, &ins, &o, &[]);
            }
            Layer::Tanh { .. } => {
                m.node("Tanh", "", &node_name, &ins, &o, &[]);
            }
            Layer::Sigmoid { .. } => {
                m.node("Sigmoid", "", &node_name, &ins, &o, &[]);
            }
            Layer::LeakyRelu { slope, .. } => {
                m.node(
                    "LeakyRelu",
                    "",
                    &node_name,
                    &ins,
                    &o,
                    &[("alpha", Attr::Float(*slope))],
                );
            }
            Layer::Prelu { .. } => {
                m.node("PRelu", "", &node_name, &ins, &o, &[]);
            }
        }
        if li + 1 < n {
            m.value(&out, ElemType::Float, &batch_dims(&layer.out_shape));
        }
        layers.push(LayerNodes {
            input: cur.clone(),
            output: out.clone(),
            params: names,
            node_name,
        });
        cur = out;
    }
    Ok(Forward {
        input: input.to_string(),
        output: output.to_string(),
        layers,
    })
}

/// `[-1, shape...]`: a symbolic batch axis in front of a per-sample shape.
pub fn batch_dims(shape: &[usize]) -> Vec<i64> {
    std::iter::once(-1)
        .chain(shape.iter().map(|&d| d as i64))
        .collect()
}

/// The complete inference model of `net` with `params`: input `x` `[N, input...]`, output `y`.
pub fn inference_model(net: &Network, params: &Params) -> Result<ModelBuilder> {
    let mut m = ModelBuilder::new(&net.name);
    m.input("x", ElemType::Float, &batch_dims(&net.input));
    m.output("y", ElemType::Float, &batch_dims(net.output()));
    emit_forward(net, Some(params), &mut m, "x", "y")?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Spec;

    fn net() -> Network {
        Spec::from_toml(
            "input = 2\n[[layers]]\ntype = \"linear\"\nout = 4\n[[layers]]\ntype = \"ditac\"\n\
             [[layers]]\ntype = \"prelu\"\nnum_parameters = 4\n[[layers]]\ntype = \"linear\"\nout = 1\n",
        )
        .unwrap()
        .resolve()
        .unwrap()
    }

    #[test]
    fn init_then_emit() {
        let net = net();
        let p = init_params(&net, 3).unwrap();
        assert_eq!(p, init_params(&net, 3).unwrap(), "seeded");
        assert_ne!(p, init_params(&net, 4).unwrap());
        let w = &p.get("0.weight").unwrap().data;
        assert!(w.iter().all(|v| v.abs() <= 1.0 / 2f32.sqrt()));
        let m = inference_model(&net, &p).unwrap().build();
        let ops: Vec<_> = m.graph.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["Gemm", "DiTAC", "PRelu", "Gemm"]);
        let theta = m
            .graph
            .initializer
            .iter()
            .find(|t| t.name == "1.thetas")
            .unwrap();
        assert_eq!(theta.dims, vec![9]);
    }

    #[test]
    fn initial_theta_follows_the_layer_prior_settings() {
        // Σ_init scales with λ_var_init², so with the same seed θ scales with λ_var_init: the
        // layer's own setting wins over the defaults, and the defaults apply where it has none.
        let spec = |extra: &str| {
            Spec::from_toml(&format!(
                "input = 2\n[[layers]]\ntype = \"ditac\"\n{extra}\n[[layers]]\ntype = \"ditac\"\n"
            ))
            .unwrap()
            .resolve()
            .unwrap()
        };
        let base = init_params(&spec(""), 5).unwrap();
        let own = init_params(&spec("lambda_var_init = 4.0"), 5).unwrap();
        let defaults = PriorSettings {
            lambda_var_init: 1.0,
            ..PriorSettings::default()
        };
        let flagged = init_params_with(&spec("lambda_var_init = 4.0"), 5, &defaults).unwrap();
        let th = |p: &Params, k: &str| p.get(k).unwrap().data.clone();
        for (a, b) in th(&base, "0.thetas").iter().zip(th(&own, "0.thetas")) {
            assert!((2.0 * a - b).abs() <= 1e-5 * b.abs().max(1e-3), "{a} {b}");
        }
        assert_eq!(th(&base, "1.thetas"), th(&own, "1.thetas"));
        assert_eq!(th(&flagged, "0.thetas"), th(&own, "0.thetas"));
        for (a, b) in th(&base, "1.thetas").iter().zip(th(&flagged, "1.thetas")) {
            assert!((0.5 * a - b).abs() <= 1e-5 * b.abs().max(1e-3), "{a} {b}");
        }
        let err =
            Spec::from_toml("input = 2\n[[layers]]\ntype = \"ditac\"\nlambda_smooth = -1.0\n")
                .unwrap()
                .resolve()
                .unwrap_err();
        assert!(
            format!("{err:#}").contains("lambda_smooth = -1: expected a finite number > 0"),
            "{err:#}"
        );
    }

    #[test]
    fn wrong_shape_is_named() {
        let net = net();
        let mut p = init_params(&net, 3).unwrap();
        p.insert("0.weight", Tensor::new(vec![2, 4], vec![0.0; 8]));
        let msg = format!("{:#}", check_params(&net, &p).unwrap_err());
        assert!(
            msg.contains("\"0.weight\"") && msg.contains("[4, 2]"),
            "{msg}"
        );
    }
}
