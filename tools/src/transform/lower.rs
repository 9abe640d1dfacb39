//! `lower`: every `DiTAC` / `DiTACLut` node becomes standard ONNX operators (default domain, opset
//! ≥ 12), so the model runs in any ONNX runtime without the plugin.
//!
//! The table x̃ at the nodes (original units, exactly the values the plugin's kernel gathers) becomes
//! an initializer (`[n]`, or `[C·n]` with a per-channel index offset), and the kernel's arithmetic is
//! written out in its order, one float32 operation per node:
//!
//! ```text
//! inr = (x >= a) and (x <= b)
//! p   = Where(inr, ((x + add_in) · mul_in) · (n − 1), 0)
//! nearest: i = Clip(Round(p), 0, n − 1)                 (Round is round-half-even, as torch.round)
//! linear:  i = Clip(Floor(p), 0, n − 2), f = p − i,   x̃ = x̃[i] + f · (x̃[i+1] − x̃[i])
//! x̃   = Where(inr, Gather(table, i + c·n), x)
//! y   = x̃ · Φ(x) ("ditac"), x̃ · Φ(x̃) ("ge"), LeakyRelu(x̃, alpha) ("leaky")
//! ```
//!
//! Φ(v) = 0.5 · (1 + erf(v / √2)). With [`ErfMode::Plugin`] (the default) erf is the plugin's own
//! rational approximation written out in Mul/Add/Div/Clip/Where (its fused multiply-adds as float64
//! Mul/Add between Casts, which gives the same bits on every float32), and the lowered model
//! reproduces the plugin bit for bit in ONNX Runtime (tested). With [`ErfMode::Onnx`] it is the standard `Erf`
//! operator (a smaller graph; each runtime's erf differs from the plugin's by up to ~5e-7 absolute,
//! so y differs by up to ~3e-7·|x̃|). float16 tensors are cast to float and back (the plugin computes
//! them in float). The exact path (`lut_size = 0`) has no table: it is lowered only when asked, through
//! a linear table of `exact_lut` nodes (an approximation; see ops/README.md).

use super::{
    elem_type, fresh_name, is_ditac_node, make_node, make_tensor_f32, make_tensor_f64,
    make_tensor_i64, node_label, node_warps, prune_unused, rank,
};
use crate::model::{attribute, Attr, DEFAULT_OPSET, DITAC_DOMAIN};
use crate::onnx::DITAC_GRAD;
use anyhow::{anyhow, bail, Result};
use ditac::config::{Interpolation, Variant};
use ditac::core::erf::{ERF_P, ERF_Q};
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::{GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto};
use protobuf::Enum;
use std::collections::BTreeSet;
use std::path::Path;

/// How Φ's erf is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErfMode {
    /// The plugin's float32 rational approximation, operator by operator (bit-identical in ORT).
    #[default]
    Plugin,
    /// The standard `Erf` operator.
    Onnx,
}

impl std::str::FromStr for ErfMode {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "plugin" => Ok(ErfMode::Plugin),
            "onnx" => Ok(ErfMode::Onnx),
            o => bail!("--erf \"{o}\": expected \"plugin\" or \"onnx\""),
        }
    }
}

/// Options of [`lower_model_with`].
#[derive(Debug, Clone, Default)]
pub struct LowerOptions {
    pub erf: ErfMode,
    /// Lower `DiTAC` nodes with `lut_size = 0` through a linear table of this many nodes (else
    /// they are an error).
    pub exact_lut: Option<i64>,
}

/// The lowest default-domain opset the lowered operators need (GreaterOrEqual, Clip with inputs).
pub const MIN_OPSET: i64 = 12;

/// Lowers every `DiTAC`/`DiTACLut` node of `model` with the default options; external data, if any,
/// is read relative to the current folder.
pub fn lower_model(model: &ModelProto) -> Result<ModelProto> {
    let mut m = model.clone();
    lower_in_place(&mut m, Path::new("."), &LowerOptions::default())?;
    Ok(m)
}

/// [`lower_model`] with options and the folder of the model's external data.
pub fn lower_model_with(model: &ModelProto, dir: &Path, opts: &LowerOptions) -> Result<ModelProto> {
    let mut m = model.clone();
    lower_in_place(&mut m, dir, opts)?;
    Ok(m)
}

/// Lowers in place (no copy of the weights); returns the names of the lowered nodes.
pub fn lower_in_place(
    model: &mut ModelProto,
    dir: &Path,
    opts: &LowerOptions,
) -> Result<Vec<String>> {
    // 0: no default-domain import (one is added below).
    let v = crate::onnx::default_opset(model);
    if v > 0 && v < MIN_OPSET {
        bail!("the model imports the default ONNX domain at opset {v}: lowering needs opset {MIN_OPSET} or later (GreaterOrEqual, Clip with min/max inputs)");
    }
    let g = model
        .graph
        .as_mut()
        .ok_or_else(|| anyhow!("the model has no graph"))?;
    let mut taken = BTreeSet::new();
    fresh_name(g, &mut taken, "");
    let mut candidates = BTreeSet::new();
    let mut lowered = Vec::new();
    let mut new_nodes: Vec<NodeProto> = Vec::with_capacity(g.node.len());
    let old = std::mem::take(&mut g.node);
    let mut result = Ok(());
    for node in old {
        if !is_ditac_node(&node) {
            new_nodes.push(node);
            continue;
        }
        if result.is_err() {
            new_nodes.push(node);
            continue;
        }
        // Lookups need the graph's other nodes (Constant θ): look in both lists.
        g.node = new_nodes;
        let r = lower_node(g, &node, dir, opts, &mut taken);
        new_nodes = std::mem::take(&mut g.node);
        match r {
            Ok((nodes, inits, consts)) => {
                new_nodes.extend(nodes);
                g.initializer.extend(inits);
                candidates.extend(consts);
                lowered.push(node_label(&node));
            }
            Err(e) => {
                result = Err(e);
                new_nodes.push(node);
            }
        }
    }
    g.node = new_nodes;
    result?;
    prune_unused(g, &candidates);
    let any_ditac = g.node.iter().any(|n| n.domain == DITAC_DOMAIN);
    if !any_ditac {
        model.opset_import.retain(|o| o.domain != DITAC_DOMAIN);
    }
    if v == 0 {
        let mut o = OperatorSetIdProto::new();
        o.version = DEFAULT_OPSET;
        model.opset_import.push(o);
    }
    Ok(lowered)
}

struct Emit<'a> {
    prefix: String,
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    taken: &'a mut BTreeSet<String>,
    g: &'a GraphProto,
}

impl Emit<'_> {
    fn name(&mut self, what: &str) -> String {
        let base = format!("{}/{what}", self.prefix);
        fresh_name(self.g, self.taken, &base)
    }
    fn op(&mut self, op: &str, inputs: &[&str], attrs: &[(&str, Attr)]) -> String {
        let out = self.name(&op.to_ascii_lowercase());
        self.op_to(op, inputs, &out, attrs);
        out
    }
    fn op_to(&mut self, op: &str, inputs: &[&str], out: &str, attrs: &[(&str, Attr)]) {
        let mut n = make_node(op, out, inputs, &[out]);
        n.attribute = attrs.iter().map(|(k, v)| attribute(k, v)).collect();
        self.nodes.push(n);
    }
    fn scalar(&mut self, what: &str, v: f32) -> String {
        let name = self.name(what);
        self.inits.push(make_tensor_f32(&name, &[], &[v]));
        name
    }
    /// A float32 constant held as float64 (exactly the same value).
    fn scalar_f64(&mut self, what: &str, v: f32) -> String {
        let name = self.name(what);
        self.inits
            .push(make_tensor_f64(&name, &[], &[f64::from(v)]));
        name
    }
    /// Φ(v) = 0.5·(1 + erf(v/√2)), as the plugin's float kernel computes it.
    fn phi(&mut self, v: &str, mode: ErfMode) -> String {
        let c = self.scalar("frac_1_sqrt_2", std::f32::consts::FRAC_1_SQRT_2);
        let s = self.op("Mul", &[v, &c], &[]);
        let e = match mode {
            ErfMode::Onnx => self.op("Erf", &[&s], &[]),
            ErfMode::Plugin => {
                // ditac::core::erf::erf_f32, operation by operation. Its Horner steps are fused
                // multiply-adds, which ONNX has no operator for: each is computed in float64
                // (x²·p exact, one rounding of the sum) and cast back, as
                // `erf_f32_unfused`, which gives erf_f32's bits on every float32.
                let (m4, p4) = (self.scalar("m4", -4.0), self.scalar("p4", 4.0));
                let x = self.op("Clip", &[&s, &m4, &p4], &[]);
                let x2 = self.op("Mul", &[&x, &x], &[]);
                let to_f64 = [("to", Attr::Int(DataType::DOUBLE as i64))];
                let to_f32 = [("to", Attr::Int(DataType::FLOAT as i64))];
                let x2d = self.op("Cast", &[&x2], &to_f64);
                let horner = |e: &mut Self, coef: &[f32]| -> String {
                    let mut pd = e.scalar_f64("c", coef[0]);
                    let mut p = String::new();
                    for (i, &k) in coef.iter().enumerate().skip(1) {
                        let ck = e.scalar_f64("c", k);
                        let m = e.op("Mul", &[&x2d, &pd], &[]);
                        let sum = e.op("Add", &[&m, &ck], &[]);
                        p = e.op("Cast", &[&sum], &to_f32);
                        if i + 1 < coef.len() {
                            pd = e.op("Cast", &[&p], &to_f64);
                        }
                    }
                    p
                };
                let p = horner(self, &ERF_P);
                let p = self.op("Mul", &[&x, &p], &[]);
                let q = horner(self, &ERF_Q);
                let r = self.op("Div", &[&p, &q], &[]);
                let (m1, p1) = (self.scalar("m1", -1.0), self.scalar("p1", 1.0));
                let r = self.op("Clip", &[&r, &m1, &p1], &[]);
                let ax = self.op("Abs", &[&x], &[]);
                let lim = self.scalar("c", 3.92);
                let big = self.op("GreaterOrEqual", &[&ax, &lim], &[]);
                let sg = self.op("Sign", &[&x], &[]);
                self.op("Where", &[&big, &sg, &r], &[])
            }
        };
        let one = self.scalar("one", 1.0);
        let half = self.scalar("half", 0.5);
        let t = self.op("Add", &[&e, &one], &[]);
        self.op("Mul", &[&t, &half], &[])
    }
}

type Lowered = (Vec<NodeProto>, Vec<TensorProto>, Vec<String>);

fn lower_node(
    g: &GraphProto,
    node: &NodeProto,
    dir: &Path,
    opts: &LowerOptions,
    taken: &mut BTreeSet<String>,
) -> Result<Lowered> {
    let label = node_label(node);
    if node.op_type == DITAC_GRAD {
        bail!("node '{label}': DiTACGrad (a training op) cannot be lowered");
    }
    super::check_node_io(node)?;
    let x_in = node.input[0].clone();
    let y_out = node.output[0].clone();
    let exact = opts.exact_lut.map(|n| (n, Interpolation::Linear));
    let w = node_warps(g, node, dir, exact)?.ok_or_else(|| {
        anyhow!(
            "node '{label}': input '{}' is not a constant: only a constant θ or table can be lowered",
            node.input.get(1).map_or("", String::as_str)
        )
    })?;
    let Some(joined) = w.warps.joined() else {
        bail!("node '{label}': lut_size = 0 (the exact closed form) has no table to lower: pass --exact-lut N to lower it through an N-node linear table (an approximation)");
    };
    let ty = elem_type(g, &x_in);
    let f16 = match ty.and_then(DataType::from_i32) {
        None | Some(DataType::FLOAT) => false,
        Some(DataType::FLOAT16) => true,
        Some(other) => {
            bail!("node '{label}': input X is {other:?}: lower handles float and float16 tensors")
        }
    };
    // What the table kernel reads: the constants of every row (row 0's) and x̃ at the nodes of
    // every row, channel after channel. A lowering that applies them in the kernel's order
    // reproduces its results.
    let k = &joined.kernel;
    let consts = [k.lo, k.hi, k.add_in, k.mul_in, k.scale];
    let (n, rows, table) = (joined.nodes, joined.channels, k.xt);
    let prefix = if node.name.is_empty() {
        y_out.clone()
    } else {
        node.name.clone()
    };
    let mut e = Emit {
        prefix,
        nodes: Vec::new(),
        inits: Vec::new(),
        taken,
        g,
    };
    let x = if f16 {
        e.op(
            "Cast",
            &[&x_in],
            &[("to", Attr::Int(DataType::FLOAT as i64))],
        )
    } else {
        x_in.clone()
    };
    let [lo, hi, add_in, mul_in, scale] = consts;
    let tname = e.name("table");
    e.inits.push(make_tensor_f32(&tname, &[n * rows], table));
    let lo = e.scalar("a", lo);
    let hi = e.scalar("b", hi);
    let ge = e.op("GreaterOrEqual", &[&x, &lo], &[]);
    let le = e.op("LessOrEqual", &[&x, &hi], &[]);
    let inr = e.op("And", &[&ge, &le], &[]);
    let add_in = e.scalar("add_in", add_in);
    let mul_in = e.scalar("mul_in", mul_in);
    let scale = e.scalar("n_minus_1", scale);
    let zero = e.scalar("zero", 0.0);
    let t = e.op("Add", &[&x, &add_in], &[]);
    let u = e.op("Mul", &[&t, &mul_in], &[]);
    let ps = e.op("Mul", &[&u, &scale], &[]);
    let p = e.op("Where", &[&inr, &ps, &zero], &[]);
    let linear = w.attrs.interpolation == Interpolation::Linear;
    let (idx_f, frac) = if linear {
        let fl = e.op("Floor", &[&p], &[]);
        let top = e.scalar("n_minus_2", (n - 2) as f32);
        let i = e.op("Clip", &[&fl, &zero, &top], &[]);
        let f = e.op("Sub", &[&p, &i], &[]);
        (i, Some(f))
    } else {
        let r = e.op("Round", &[&p], &[]);
        let top = e.scalar("n_minus_1", (n - 1) as f32);
        (e.op("Clip", &[&r, &zero, &top], &[]), None)
    };
    let mut idx = e.op(
        "Cast",
        &[&idx_f],
        &[("to", Attr::Int(DataType::INT64 as i64))],
    );
    if w.warps.per_channel() {
        let ax = w.attrs.channel_axis;
        let offs: Vec<i64> = (0..rows).map(|c| (c * n) as i64).collect();
        let oname = e.name("channel_offset");
        // The offsets c·n broadcast along the channel axis: shape [C, 1, …, 1] with one 1 per axis
        // after it. Known when the axis is negative or X's rank is declared; else built at run time
        // from X's shape.
        let trailing = if ax < 0 {
            Some((-ax - 1) as usize)
        } else {
            match rank(g, &x_in) {
                Some(r) if (ax as usize) < r => Some(r - 1 - ax as usize),
                Some(r) => bail!("node '{label}': channel_axis = {ax} for an input of rank {r}"),
                None => None,
            }
        };
        let offsets = match trailing {
            Some(t) => {
                let mut dims = vec![rows];
                dims.extend(std::iter::repeat_n(1, t));
                e.inits.push(make_tensor_i64(&oname, &dims, &offs));
                oname
            }
            None => {
                e.inits.push(make_tensor_i64(&oname, &[rows], &offs));
                let shape = e.op("Shape", &[&x], &[]);
                let r = e.op("Shape", &[&shape], &[]);
                let axp1 = e.name("axis_plus_1");
                e.inits.push(make_tensor_i64(&axp1, &[1], &[ax + 1]));
                let t = e.op("Sub", &[&r, &axp1], &[]);
                let ones = e.name("ones");
                let mut value = make_tensor_i64("value", &[1], &[1]);
                value.name = "value".into();
                let mut cos = make_node("ConstantOfShape", &ones, &[&t], &[&ones]);
                let mut va = onnx_protobuf::AttributeProto::new();
                va.name = "value".into();
                va.type_ = onnx_protobuf::attribute_proto::AttributeType::TENSOR.into();
                va.t = Some(value).into();
                cos.attribute.push(va);
                e.nodes.push(cos);
                let c = e.name("channels");
                e.inits.push(make_tensor_i64(&c, &[1], &[rows as i64]));
                let target = e.op("Concat", &[&c, &ones], &[("axis", Attr::Int(0))]);
                e.op("Reshape", &[&oname, &target], &[])
            }
        };
        idx = e.op("Add", &[&idx, &offsets], &[]);
    }
    let warped = match frac {
        None => e.op("Gather", &[&tname, &idx], &[]),
        Some(f) => {
            let one = make_tensor_i64(&e.name("one_i64"), &[], &[1]);
            let one_name = one.name.clone();
            e.inits.push(one);
            let idx1 = e.op("Add", &[&idx, &one_name], &[]);
            let x0 = e.op("Gather", &[&tname, &idx], &[]);
            let x1 = e.op("Gather", &[&tname, &idx1], &[]);
            let dlt = e.op("Sub", &[&x1, &x0], &[]);
            let fd = e.op("Mul", &[&f, &dlt], &[]);
            e.op("Add", &[&x0, &fd], &[])
        }
    };
    let w_val = e.op("Where", &[&inr, &warped, &x], &[]);
    let out = if f16 {
        e.name("y_float")
    } else {
        y_out.clone()
    };
    match w.attrs.variant {
        Variant::Ditac => {
            let ph = e.phi(&x, opts.erf);
            e.op_to("Mul", &[&w_val, &ph], &out, &[]);
        }
        Variant::Ge => {
            let ph = e.phi(&w_val, opts.erf);
            e.op_to("Mul", &[&w_val, &ph], &out, &[]);
        }
        Variant::Leaky => {
            e.op_to(
                "LeakyRelu",
                &[&w_val],
                &out,
                &[("alpha", Attr::Float(w.attrs.alpha))],
            );
        }
    }
    if f16 {
        e.op_to(
            "Cast",
            &[&out],
            &y_out,
            &[("to", Attr::Int(DataType::FLOAT16 as i64))],
        );
    }
    // The last node writes Y; name it after the original node so that it stays findable.
    if let Some(last) = e.nodes.last_mut() {
        last.name = label.clone();
    }
    Ok((e.nodes, e.inits, w.consts))
}
