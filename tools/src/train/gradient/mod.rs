//! The reverse-mode rules of training graphs, one per op type, for specs and ONNX models alike (a
//! spec is first written as its forward ONNX graph). ONNX Runtime cannot differentiate a custom op,
//! so every rule writes its backward with standard ops, and DiTAC's is `ai.ditac.DiTACGrad`.
//!
//! The rules live per op family ([`elementwise`], [`linear`], [`convolution`], [`pooling`],
//! [`normalisation`], [`shape`], [`ditac`]); each family registers its ops in the one [`Registry`],
//! keyed by (domain, op type), as tract registers its ops. Adding an op's backward is one function
//! and one `insert` line in its family's `register`. [`emit_backward`] walks a graph in reverse and
//! calls them.
//!
//! Rules see every value's shape ([`Shapes`], at some batch size): broadcasting and layouts need
//! them.

pub mod convolution;
pub mod ditac;
pub mod elementwise;
pub mod linear;
pub mod normalisation;
pub mod pooling;
pub mod shape;

use crate::model::{Attr, ModelBuilder};
use crate::transform::node_label;
use anyhow::{anyhow, bail, Context, Result};
use onnx_protobuf::{GraphProto, NodeProto};
use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;

/// Every value's shape, and whether it is float.
pub type Shapes = HashMap<String, (bool, Vec<usize>)>;

/// The gradients a rule writes: (input index, gradient value) for the inputs it was asked for.
pub type Grads = Vec<(usize, String)>;

/// The backward of one op: writes nodes into the builder, returns the inputs' gradients.
pub type Rule = fn(&mut ModelBuilder, &NodeGrad) -> Result<Grads>;

/// The rules by (domain, op type); `""` is the default domain.
#[derive(Default)]
pub struct Registry {
    rules: HashMap<(&'static str, &'static str), Rule>,
}

impl Registry {
    pub fn insert(&mut self, domain: &'static str, op: &'static str, rule: Rule) {
        self.rules.insert((domain, op), rule);
    }

    pub fn get(&self, domain: &str, op: &str) -> Option<Rule> {
        let domain = if domain == "ai.onnx" { "" } else { domain };
        self.rules.get(&(domain, op)).copied()
    }

    /// The covered op types, sorted (for messages).
    pub fn covered(&self) -> String {
        let mut ops: Vec<&str> = self.rules.keys().map(|(_, op)| *op).collect();
        ops.sort_unstable();
        ops.join(", ")
    }
}

/// Every family's rules.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut r = Registry::default();
        elementwise::register(&mut r);
        linear::register(&mut r);
        convolution::register(&mut r);
        pooling::register(&mut r);
        normalisation::register(&mut r);
        shape::register(&mut r);
        ditac::register(&mut r);
        r
    })
}

/// Ops whose outputs carry no gradient (shapes, constants, comparisons).
const NO_GRADIENT: &[&str] = &[
    "Shape",
    "Size",
    "Constant",
    "ConstantOfShape",
    "Equal",
    "Greater",
    "Less",
    "GreaterOrEqual",
    "LessOrEqual",
    "Not",
    "And",
    "Or",
    "ArgMax",
    "ArgMin",
    "Range",
];

/// What a rule sees of the node it differentiates.
pub struct NodeGrad<'a> {
    pub node: &'a NodeProto,
    /// The gradient of the node's first output.
    pub dy: &'a str,
    /// The prefix of every name the rule writes.
    prefix: &'a str,
    want: &'a dyn Fn(usize) -> bool,
    shapes: &'a Shapes,
    /// The graph's default-domain opset.
    pub opset: i64,
}

impl NodeGrad<'_> {
    /// The name of input `i`.
    pub fn input(&self, i: usize) -> &str {
        self.node.input[i].as_str()
    }

    /// The name of the first output.
    pub fn output(&self) -> &str {
        self.node.output[0].as_str()
    }

    /// Whether input `i` needs a gradient.
    pub fn wants(&self, i: usize) -> bool {
        (self.want)(i)
    }

    /// A name for a value the rule writes: `<prefix>/<s>`.
    pub fn name(&self, s: &str) -> String {
        format!("{}/{s}", self.prefix)
    }

    /// The shape of value `v`.
    pub fn shape(&self, v: &str) -> Result<&[usize]> {
        self.shapes
            .get(v)
            .map(|s| s.1.as_slice())
            .ok_or_else(|| anyhow!("no shape for value \"{v}\""))
    }

    /// The shape of the first output.
    pub fn output_shape(&self) -> Result<Vec<usize>> {
        Ok(self.shape(self.output())?.to_vec())
    }

    /// Reduces `g` (shaped `gshape`, the broadcast result) to the shape of value `target`.
    pub fn unbroadcast(
        &self,
        m: &mut ModelBuilder,
        p: &str,
        g: &str,
        gshape: &[usize],
        target: &str,
    ) -> Result<String> {
        let ts = self.shape(target)?.to_vec();
        if ts == gshape {
            return Ok(g.to_string());
        }
        let r = gshape.len().saturating_sub(ts.len());
        let mut axes: Vec<i64> = (0..r as i64).collect();
        for (i, &d) in ts.iter().enumerate() {
            if d == 1 && gshape[r + i] != 1 {
                axes.push((r + i) as i64);
            }
        }
        let red = format!("{p}/unbroadcast_{target}");
        if axes.is_empty() {
            return Ok(g.to_string());
        }
        let ax = ints(m, &format!("{red}/axes"), &axes);
        // Only leading axes go: dropping them leaves the target's shape.
        let leading_only = axes.len() == r;
        m.node(
            "ReduceSum",
            "",
            &red,
            &[g, &ax],
            &[&red],
            &[("keepdims", Attr::Int(i64::from(!leading_only)))],
        );
        if leading_only {
            return Ok(red);
        }
        let sh = format!("{red}/shape");
        m.node("Shape", "", &sh, &[target], &[&sh], &[]);
        let out = format!("{red}/out");
        m.node("Reshape", "", &out, &[&red, &sh], &[&out], &[]);
        Ok(out)
    }
}

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

/// Writes one node `op(inputs) -> out` named `out`, and returns `out`.
pub(crate) fn op(m: &mut ModelBuilder, op: &str, inputs: &[&str], out: &str) -> String {
    m.node(op, "", out, inputs, &[out], &[]);
    out.to_string()
}

/// The sum of gradient contributions (one: itself).
fn sum(m: &mut ModelBuilder, p: &str, of: &str, parts: Vec<String>) -> String {
    if parts.len() == 1 {
        return parts.into_iter().next().unwrap();
    }
    let o = format!("{p}/d_{of}");
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    m.node("Sum", "", &o, &refs, &[&o], &[]);
    o
}

/// The reverse pass over `graph`'s nodes, from `dy` (the gradient of value `output`), into `m`.
/// Returns each parameter's gradient value (in the parameter's shape up to a reshape); a parameter
/// that does not reach `output` has none.
pub fn emit_backward(
    m: &mut ModelBuilder,
    graph: &GraphProto,
    shapes: &Shapes,
    opset: i64,
    params: &[&str],
    output: &str,
    dy: &str,
) -> Result<HashMap<String, String>> {
    // Values that depend on a parameter (and so need a gradient).
    let mut needs: BTreeSet<String> = params.iter().map(|s| s.to_string()).collect();
    for n in &graph.node {
        if NO_GRADIENT.contains(&n.op_type.as_str()) {
            continue;
        }
        if n.input.iter().any(|i| needs.contains(i)) {
            for o in &n.output {
                if shapes.get(o).is_some_and(|s| s.0) || o == output {
                    needs.insert(o.clone());
                }
            }
        }
    }
    let mut contrib: HashMap<String, Vec<String>> = HashMap::new();
    contrib.insert(output.to_string(), vec![dy.to_string()]);
    for (ni, n) in graph.node.iter().enumerate().rev() {
        if NO_GRADIENT.contains(&n.op_type.as_str()) || !n.input.iter().any(|i| needs.contains(i)) {
            continue;
        }
        let Some(parts) = n.output.first().and_then(|o| contrib.remove(o)) else {
            continue;
        };
        let p = format!("grad{ni}");
        let dout = sum(m, &p, &n.output[0], parts);
        let want = |i: usize| n.input.get(i).is_some_and(|v| needs.contains(v));
        let at = || format!("node '{}' ({})", node_label(n), n.op_type);
        let rule = registry().get(&n.domain, &n.op_type).ok_or_else(|| {
            anyhow!(
                "op {} has no backward: the training graph covers {} (and shape-only ops)",
                n.op_type,
                registry().covered()
            )
        });
        let rule = rule.with_context(at)?;
        let ctx = NodeGrad {
            node: n,
            dy: &dout,
            prefix: &p,
            want: &want,
            shapes,
            opset,
        };
        let mut grads = rule(m, &ctx).with_context(at)?;
        // Only inputs that need a gradient (Reshape's shape, say, never does).
        grads.retain(|(i, _)| want(*i));
        for (i, gname) in grads {
            contrib.entry(n.input[i].clone()).or_default().push(gname);
        }
    }
    let mut out = HashMap::new();
    for p in params {
        if let Some(parts) = contrib.remove(*p) {
            let s = sum(m, &format!("{p}/sum"), p, parts);
            out.insert(p.to_string(), s);
        }
    }
    Ok(out)
}

/// Refuses `auto_pad` other than NOTSET (the rules read explicit pads).
pub(crate) fn check_no_auto_pad(n: &NodeProto) -> Result<()> {
    match crate::onnx::attr_string(n, "auto_pad")?.as_deref() {
        None | Some("NOTSET") => Ok(()),
        Some(other) => bail!(
            "{} with auto_pad = \"{other}\" has no backward here (export with explicit pads)",
            n.op_type
        ),
    }
}

/// ConvTranspose's output_padding that restores the rows a strided forward skipped.
pub(crate) fn output_padding(
    xs: &[usize],
    ys: &[usize],
    k: &[i64],
    s: &[i64],
    pads: &[i64],
    d: &[i64],
) -> Vec<i64> {
    (0..2)
        .map(|a| {
            let full = (ys[2 + a] as i64 - 1) * s[a] + d[a] * (k[a] - 1) + 1;
            xs[2 + a] as i64 + pads[a] + pads[a + 2] - full
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::inference_model;
    use crate::spec::Spec;

    #[test]
    fn every_op_a_spec_writes_has_a_rule() {
        let activations = [
            "relu",
            "gelu",
            "tanh",
            "sigmoid",
            "leaky_relu",
            "prelu",
            "ditac",
        ]
        .map(|t| format!("[[layers]]\ntype = \"{t}\"\n"))
        .concat();
        let net = Spec::from_toml(&format!(
            "input = [1, 4, 4]\n[[layers]]\ntype = \"conv2d\"\nout = 2\nkernel = 3\n{activations}\
             [[layers]]\ntype = \"flatten\"\n[[layers]]\ntype = \"linear\"\nout = 2\n"
        ))
        .unwrap()
        .resolve()
        .unwrap();
        let params = crate::graph::init_params(&net, 1).unwrap();
        let model = inference_model(&net, &params).unwrap().build();
        for n in &model.graph.node {
            assert!(
                registry().get(&n.domain, &n.op_type).is_some(),
                "{} has no rule",
                n.op_type
            );
        }
        assert!(registry().get("", "Softmax").is_none());
        assert!(registry().covered().contains("LayerNormalization"));
    }
}
