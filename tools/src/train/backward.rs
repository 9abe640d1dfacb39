//! The reverse-mode half of a training graph: for every layer of a [`Network`], the nodes that take
//! the gradient of the loss with respect to the layer's output to the gradients with respect to its
//! input and its parameters. Everything is written with standard ONNX ops, except DiTAC, whose
//! backward is `ai.ditac.DiTACGrad` (ONNX Runtime cannot differentiate a custom op).
//!
//! Names follow ONNX Runtime's generator: the gradient of value `v` is `v_grad`, the gradient of
//! parameter `0.weight` is `0.weight_grad`.

use crate::graph::{Forward, LayerNodes};
use crate::model::{ditac_attrs, Attr, ModelBuilder, DITAC_DOMAIN};
use crate::spec::{Layer, Network, ResolvedLayer};
use anyhow::{bail, Result};

/// A float scalar initializer named `name`.
pub(crate) fn scalar(m: &mut ModelBuilder, name: &str, v: f32) -> String {
    m.initializer_f32(name, &[], &[v]);
    name.to_string()
}

/// A 1-D int64 initializer named `name`.
pub(crate) fn ints(m: &mut ModelBuilder, name: &str, v: &[i64]) -> String {
    m.initializer_i64(name, &[v.len()], v);
    name.to_string()
}

/// The layer types the backward writer knows.
pub const DIFFERENTIABLE: &str =
    "linear, conv2d, flatten, ditac, relu, gelu, tanh, sigmoid, leaky_relu, prelu";

/// Checks that every layer of `net` has a backward; the error names the first layer that has none.
/// The gradient's name of parameter `k` (ORT's generator: `<param>_grad`).
fn gname(k: &str) -> String {
    format!("{k}_grad")
}

/// A bias's gradient: dY summed over `axes` (every axis but the channel one).
fn bias_grad(m: &mut ModelBuilder, p: &str, dy: &str, b: &str, axes: &[i64]) -> (String, String) {
    let suffix: String = axes.iter().map(|a| a.to_string()).collect();
    let axes = ints(m, &format!("{p}/axes{suffix}"), axes);
    let gb = gname(b);
    m.node(
        "ReduceSum",
        "",
        &format!("{p}/db"),
        &[dy, &axes],
        &[&gb],
        &[("keepdims", Attr::Int(0))],
    );
    (b.to_string(), gb)
}

pub fn check_differentiable(net: &Network) -> Result<()> {
    for l in &net.layers {
        if let Layer::Ditac(_) = &l.layer {
            let at = l.attrs.as_ref().expect("resolved DiTAC layer has attrs");
            if at.basis == ditac::BasisKind::Explicit {
                bail!(
                    "spec: layer {} (ditac): basis \"explicit\" cannot be trained from a spec",
                    l.index
                );
            }
        }
    }
    Ok(())
}

/// Writes the backward of `net` (whose forward `fwd` is already in `m`), starting from the gradient
/// `dy` of the loss with respect to the network's output. Returns, per parameter key in network
/// order, the name of its gradient value (shape: the parameter's ONNX shape).
pub fn emit_backward(
    net: &Network,
    fwd: &Forward,
    m: &mut ModelBuilder,
    dy: &str,
) -> Result<Vec<(String, String)>> {
    check_differentiable(net)?;
    let mut grads: Vec<(String, String)> = Vec::new();
    let mut g = dy.to_string();
    for (li, (layer, nodes)) in net.layers.iter().zip(&fwd.layers).enumerate().rev() {
        // The network input needs no gradient.
        let need_dx = li > 0;
        let dx = format!("{}_grad", nodes.input);
        let mut pg = emit_layer(layer, nodes, m, &g, need_dx.then_some(dx.as_str()))?;
        pg.reverse();
        grads.extend(pg);
        g = dx;
    }
    grads.reverse();
    Ok(grads)
}

/// The backward of one layer. `dx`: the name to write the input gradient to (None: not needed).
/// Returns (param key, gradient name) in the layer's parameter order.
fn emit_layer(
    layer: &ResolvedLayer,
    nodes: &LayerNodes,
    m: &mut ModelBuilder,
    dy: &str,
    dx: Option<&str>,
) -> Result<Vec<(String, String)>> {
    let p = format!("{}.{}_grad", layer.prefix, layer.layer.kind());
    let x = nodes.input.as_str();
    let y = nodes.output.as_str();
    let mut out = Vec::new();
    match &layer.layer {
        Layer::Linear { .. } => {
            // y = x Wᵀ + b: dx = dy W, dW = dyᵀ x, db = Σ_n dy.
            let w = &nodes.params[0];
            if let Some(dx) = dx {
                m.node("Gemm", "", &format!("{p}/dx"), &[dy, w], &[dx], &[]);
            }
            let gw = gname(w);
            m.node(
                "Gemm",
                "",
                &format!("{p}/dW"),
                &[dy, x],
                &[&gw],
                &[("transA", Attr::Int(1))],
            );
            out.push((w.clone(), gw));
            if let Some(b) = nodes.params.get(1) {
                out.push(bias_grad(m, &p, dy, b, &[0]));
            }
        }
        Layer::Conv2d {
            kernel,
            stride,
            padding,
            ..
        } => {
            let (k, s, pad) = (*kernel as i64, *stride as i64, *padding as i64);
            let (h, wd) = (layer.in_shape[1] as i64, layer.in_shape[2] as i64);
            let (ho, wo) = (layer.out_shape[1] as i64, layer.out_shape[2] as i64);
            let w = &nodes.params[0];
            if let Some(dx) = dx {
                // The adjoint of a strided convolution: ConvTranspose with the same weights; the
                // output padding restores rows the forward's stride skipped.
                let oph = h + 2 * pad - k - (ho - 1) * s;
                let opw = wd + 2 * pad - k - (wo - 1) * s;
                m.node(
                    "ConvTranspose",
                    "",
                    &format!("{p}/dx"),
                    &[dy, w],
                    &[dx],
                    &[
                        ("kernel_shape", Attr::Ints(vec![k, k])),
                        ("strides", Attr::Ints(vec![s, s])),
                        ("pads", Attr::Ints(vec![pad, pad, pad, pad])),
                        ("output_padding", Attr::Ints(vec![oph, opw])),
                    ],
                );
            }
            // dW[o,c,i,j] = Σ_n Σ_{u,v} dy[n,o,u,v]·x[n,c,u·s+i−p,v·s+j−p]: a convolution of xᵀ
            // ([C,N,H,W]) with dyᵀ ([O,N,Ho,Wo]) as the kernel, dilated by the stride; rows past k
            // (when the stride does not divide) are sliced off.
            let xt = format!("{p}/xT");
            let dyt = format!("{p}/dyT");
            let perm = Attr::Ints(vec![1, 0, 2, 3]);
            m.node(
                "Transpose",
                "",
                &xt,
                &[x],
                &[&xt],
                &[("perm", perm.clone())],
            );
            m.node(
                "Transpose",
                "",
                &dyt,
                &[dy],
                &[&dyt],
                &[("perm", perm.clone())],
            );
            let full = format!("{p}/dWfull");
            m.node(
                "Conv",
                "",
                &full,
                &[&xt, &dyt],
                &[&full],
                &[
                    ("kernel_shape", Attr::Ints(vec![ho, wo])),
                    ("dilations", Attr::Ints(vec![s, s])),
                    ("pads", Attr::Ints(vec![pad, pad, pad, pad])),
                ],
            );
            let kh = h + 2 * pad - s * (ho - 1);
            let kw = wd + 2 * pad - s * (wo - 1);
            let sliced = if kh != k || kw != k {
                let st = ints(m, &format!("{p}/starts"), &[0, 0]);
                let en = ints(m, &format!("{p}/ends"), &[k, k]);
                let ax = ints(m, &format!("{p}/axes23"), &[2, 3]);
                let o = format!("{p}/dWslice");
                m.node("Slice", "", &o, &[&full, &st, &en, &ax], &[&o], &[]);
                o
            } else {
                full
            };
            let gw = gname(w);
            m.node(
                "Transpose",
                "",
                &format!("{p}/dW"),
                &[&sliced],
                &[&gw],
                &[("perm", perm)],
            );
            out.push((w.clone(), gw));
            if let Some(b) = nodes.params.get(1) {
                out.push(bias_grad(m, &p, dy, b, &[0, 2, 3]));
            }
        }
        Layer::Flatten { .. } => {
            if let Some(dx) = dx {
                let shape = format!("{p}/shape");
                m.node("Shape", "", &shape, &[x], &[&shape], &[]);
                m.node("Reshape", "", &format!("{p}/dx"), &[dy, &shape], &[dx], &[]);
            }
        }
        Layer::Ditac(_) => {
            let at = layer
                .attrs
                .as_ref()
                .expect("resolved DiTAC layer has attrs");
            let th = &nodes.params[0];
            let gth = format!("{p}/dtheta");
            let dxn = dx
                .map(str::to_owned)
                .unwrap_or_else(|| format!("{p}/dx_unused"));
            m.node(
                "DiTACGrad",
                DITAC_DOMAIN,
                &format!("{p}/DiTACGrad"),
                &[dy, x, th],
                &[&dxn, &gth],
                &ditac_attrs(at),
            );
            // The smoothness prior's share is added by the loss writer.
            out.push((th.clone(), gth));
        }
        Layer::Relu { .. } => {
            if let Some(dx) = dx {
                let zero = scalar(m, &format!("{p}/zero"), 0.0);
                let pos = format!("{p}/pos");
                m.node("Greater", "", &pos, &[x, &zero], &[&pos], &[]);
                m.node(
                    "Where",
                    "",
                    &format!("{p}/dx"),
                    &[&pos, dy, &zero],
                    &[dx],
                    &[],
                );
            }
        }
        Layer::LeakyRelu { slope, .. } => {
            if let Some(dx) = dx {
                let zero = scalar(m, &format!("{p}/zero"), 0.0);
                let a = scalar(m, &format!("{p}/slope"), *slope);
                let pos = format!("{p}/pos");
                let neg = format!("{p}/neg");
                m.node("Greater", "", &pos, &[x, &zero], &[&pos], &[]);
                m.node("Mul", "", &neg, &[dy, &a], &[&neg], &[]);
                m.node(
                    "Where",
                    "",
                    &format!("{p}/dx"),
                    &[&pos, dy, &neg],
                    &[dx],
                    &[],
                );
            }
        }
        Layer::Prelu { .. } => {
            // y = x (x > 0), s·x otherwise: dx = dy or s·dy; ds = Σ over the broadcast axes of
            // dy·x where x ≤ 0.
            let s = &nodes.params[0];
            let zero = scalar(m, &format!("{p}/zero"), 0.0);
            let pos = format!("{p}/pos");
            m.node("Greater", "", &pos, &[x, &zero], &[&pos], &[]);
            if let Some(dx) = dx {
                let neg = format!("{p}/neg");
                m.node("Mul", "", &neg, &[dy, s], &[&neg], &[]);
                m.node(
                    "Where",
                    "",
                    &format!("{p}/dx"),
                    &[&pos, dy, &neg],
                    &[dx],
                    &[],
                );
            }
            let dyx = format!("{p}/dyx");
            let masked = format!("{p}/dyx_neg");
            m.node("Mul", "", &dyx, &[dy, x], &[&dyx], &[]);
            m.node("Where", "", &masked, &[&pos, &zero, &dyx], &[&masked], &[]);
            let rank = layer.in_shape.len() as i64 + 1;
            let per_channel =
                matches!(layer.layer, Layer::Prelu { num_parameters, .. } if num_parameters > 1);
            let axes: Vec<i64> = (0..rank).filter(|&a| !(per_channel && a == 1)).collect();
            let axes = ints(m, &format!("{p}/axes"), &axes);
            let red = format!("{p}/ds_reduced");
            m.node(
                "ReduceSum",
                "",
                &red,
                &[&masked, &axes],
                &[&red],
                &[("keepdims", Attr::Int(0))],
            );
            let shape: Vec<i64> = crate::graph::onnx_shape(layer, 0)
                .iter()
                .map(|&d| d as i64)
                .collect();
            let shape = ints(m, &format!("{p}/shape"), &shape);
            let gs = gname(s);
            m.node(
                "Reshape",
                "",
                &format!("{p}/ds"),
                &[&red, &shape],
                &[&gs],
                &[],
            );
            out.push((s.clone(), gs));
        }
        Layer::Tanh { .. } => {
            if let Some(dx) = dx {
                // dx = dy·(1 − y²)
                let one = scalar(m, &format!("{p}/one"), 1.0);
                let (yy, d) = (format!("{p}/yy"), format!("{p}/deriv"));
                m.node("Mul", "", &yy, &[y, y], &[&yy], &[]);
                m.node("Sub", "", &d, &[&one, &yy], &[&d], &[]);
                m.node("Mul", "", &format!("{p}/dx"), &[dy, &d], &[dx], &[]);
            }
        }
        Layer::Sigmoid { .. } => {
            if let Some(dx) = dx {
                // dx = dy·y·(1 − y)
                let one = scalar(m, &format!("{p}/one"), 1.0);
                let (om, d) = (format!("{p}/one_minus_y"), format!("{p}/deriv"));
                m.node("Sub", "", &om, &[&one, y], &[&om], &[]);
                m.node("Mul", "", &d, &[y, &om], &[&d], &[]);
                m.node("Mul", "", &format!("{p}/dx"), &[dy, &d], &[dx], &[]);
            }
        }
        Layer::Gelu { .. } => {
            if let Some(dx) = dx {
                // GELU(x) = x·Φ(x): dx = dy·(Φ(x) + x·φ(x)), Φ(x) = (1 + erf(x/√2))/2,
                // φ(x) = exp(−x²/2)/√(2π).
                let inv_sqrt2 = scalar(
                    m,
                    &format!("{p}/inv_sqrt2"),
                    std::f32::consts::FRAC_1_SQRT_2,
                );
                let half = scalar(m, &format!("{p}/half"), 0.5);
                let one = scalar(m, &format!("{p}/one"), 1.0);
                let neg_half = scalar(m, &format!("{p}/neg_half"), -0.5);
                let inv_sqrt_2pi = scalar(
                    m,
                    &format!("{p}/inv_sqrt_2pi"),
                    (0.5 / std::f64::consts::PI).sqrt() as f32,
                );
                let n = |s: &str| format!("{p}/{s}");
                m.node("Mul", "", &n("xs"), &[x, &inv_sqrt2], &[&n("xs")], &[]);
                m.node("Erf", "", &n("erf"), &[&n("xs")], &[&n("erf")], &[]);
                m.node(
                    "Add",
                    "",
                    &n("erf1"),
                    &[&n("erf"), &one],
                    &[&n("erf1")],
                    &[],
                );
                m.node(
                    "Mul",
                    "",
                    &n("cdf"),
                    &[&n("erf1"), &half],
                    &[&n("cdf")],
                    &[],
                );
                m.node("Mul", "", &n("xx"), &[x, x], &[&n("xx")], &[]);
                m.node(
                    "Mul",
                    "",
                    &n("e_arg"),
                    &[&n("xx"), &neg_half],
                    &[&n("e_arg")],
                    &[],
                );
                m.node("Exp", "", &n("e"), &[&n("e_arg")], &[&n("e")], &[]);
                m.node(
                    "Mul",
                    "",
                    &n("pdf"),
                    &[&n("e"), &inv_sqrt_2pi],
                    &[&n("pdf")],
                    &[],
                );
                m.node("Mul", "", &n("xpdf"), &[x, &n("pdf")], &[&n("xpdf")], &[]);
                m.node(
                    "Add",
                    "",
                    &n("deriv"),
                    &[&n("cdf"), &n("xpdf")],
                    &[&n("deriv")],
                    &[],
                );
                m.node("Mul", "", &n("dx"), &[dy, &n("deriv")], &[dx], &[]);
            }
        }
    }
    Ok(out)
}
