//! Training graphs for an existing ONNX model with `ai.ditac` nodes (one exported from PyTorch and
//! patched, say), not only for a spec: the model's own nodes are the forward, and the backward is
//! written node by node in reverse with standard ops (and `DiTACGrad`). Covered ops: Gemm, MatMul,
//! Conv (grouped and depthwise, 2-D), Add, Sub, Mul, Div (with broadcasting), Relu, Gelu, Sigmoid,
//! Tanh, Erf, LayerNormalization, AveragePool, MaxPool, GlobalAveragePool, Reshape, Flatten,
//! Squeeze, Unsqueeze, Transpose, Identity and the `ai.ditac` ops; shape-only ops (Shape, Constant,
//! ...) carry no gradient. Any other op on a gradient path is an error naming it.
//!
//! Broadcasting and layouts need each value's shape: [`ModelNet::analyse`] runs the model once on
//! a probe batch of [`PROBE_BATCH`] samples and records them (the batch axis is the only symbolic
//! one the input may have).

use super::artifacts::optimizer_model;
use super::artifacts::{Artifacts, ParamInfo, BUFFER_SUFFIX, OUT_SUFFIX, RESET};
use super::backward::{ints, scalar};
use super::checkpoint::{Checkpoint, CkptTensor};
use super::loss::{emit_loss_for, layer_precision, target_input_for, ThetaPrior};
use super::TrainConfig;
use crate::model::{Attr, ElemType, ModelBuilder, DITAC_DOMAIN};
use crate::params::{Params, Tensor as PTensor};
use crate::transform::{constant_tensor, is_ditac_node, node_attrs, node_label, tensor_f32};
use anyhow::{anyhow, bail, Context, Result};
use onnx_protobuf::{AttributeProto, ModelProto, NodeProto, TensorProto};
use ort::session::Session;
use ort::value::Tensor;
use protobuf::Message;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

/// The batch size of the shape probe (3: unlikely to coincide with a real axis of size 1 or 2).
pub const PROBE_BATCH: usize = 3;

/// Which initializers are trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trainable {
    /// Only the θ of `ai.ditac` nodes: fine-tuning the activations of a trained network.
    Theta,
    /// θ and every weight: Gemm/MatMul/Conv weights and biases, LayerNormalization scale and bias,
    /// an Add's constant operand after a MatMul or Conv (a bias).
    All,
}

impl std::str::FromStr for Trainable {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "theta" => Ok(Trainable::Theta),
            "all" => Ok(Trainable::All),
            _ => bail!("unknown --trainable \"{s}\": expected theta or all"),
        }
    }
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

/// The op types with a backward here (for messages).
pub const COVERED: &str =
    "Gemm, MatMul, Conv, Add, Sub, Mul, Div, Relu, Gelu, Sigmoid, Tanh, Erf, \
     LayerNormalization, AveragePool, MaxPool, GlobalAveragePool, Reshape, Flatten, Squeeze, \
     Unsqueeze, Transpose, Identity, DiTAC";

/// An ONNX model prepared for training: its input and output, the shape of every value at the
/// probe batch, the trainable parameters with their values and the θ priors.
#[derive(Debug, Clone)]
pub struct ModelNet {
    pub model: ModelProto,
    pub input: String,
    pub output: String,
    /// Per-sample shapes (without the batch axis).
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
    /// Every value's shape at the probe batch, and whether it is float.
    pub shapes: HashMap<String, (bool, Vec<usize>)>,
    pub params: Vec<ParamInfo>,
    pub init: Params,
    pub priors: Vec<ThetaPrior>,
    /// The default-domain opset of the model.
    pub opset: i64,
}

fn attr<'n>(n: &'n NodeProto, name: &str) -> Option<&'n AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}
fn attr_i(n: &NodeProto, name: &str, default: i64) -> i64 {
    attr(n, name).map_or(default, |a| a.i)
}
fn attr_f(n: &NodeProto, name: &str, default: f32) -> f32 {
    attr(n, name).map_or(default, |a| a.f)
}
fn attr_ints(n: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(n, name).map(|a| a.ints.clone())
}
fn attr_s(n: &NodeProto, name: &str) -> Option<String> {
    attr(n, name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
}

impl ModelNet {
    /// Reads `model` (external data relative to `dir`), chooses the trainable initializers and
    /// probes the shapes with a session made by `open` (which registers the plugin).
    pub fn analyse(
        model: &ModelProto,
        dir: &Path,
        trainable: Trainable,
        cfg: &TrainConfig,
        open: &mut dyn FnMut(&[u8]) -> Result<Session>,
    ) -> Result<ModelNet> {
        let mut model = with_maxpool_indices(model);
        inline_external_data(&mut model, dir)?;
        let model = &model;
        let g = model.graph.as_ref().context("model without a graph")?;
        let inits: BTreeSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
        let inputs: Vec<_> = g
            .input
            .iter()
            .filter(|i| !inits.contains(i.name.as_str()))
            .collect();
        if inputs.len() != 1 || g.output.len() != 1 {
            bail!(
                "the model has {} inputs and {} outputs: training needs exactly one of each",
                inputs.len(),
                g.output.len()
            );
        }
        let opset = model
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map_or(0, |o| o.version);
        if opset < 13 {
            bail!("the model imports opset {opset}: training graphs need opset 13 or later");
        }
        let input = inputs[0].name.clone();
        let output = g.output[0].name.clone();
        // The input's per-sample shape: every axis but the first must be fixed.
        let dims: Vec<Option<usize>> = match inputs[0].type_.as_ref().and_then(|t| t.value.as_ref())
        {
            Some(onnx_protobuf::type_proto::Value::TensorType(t)) => t
                .shape
                .as_ref()
                .map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match &d.value {
                            Some(
                                onnx_protobuf::tensor_shape_proto::dimension::Value::DimValue(v),
                            ) if *v > 0 => Some(*v as usize),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            _ => bail!("input \"{input}\" is not a tensor"),
        };
        if dims.is_empty() || dims[1..].iter().any(Option::is_none) {
            bail!(
                "input \"{input}\" must have a shape [N, ...] with fixed sizes after the batch axis"
            );
        }
        let input_shape: Vec<usize> = dims[1..].iter().map(|d| d.unwrap()).collect();

        // Trainable initializers.
        let mut chosen: Vec<String> = Vec::new();
        let producer: HashMap<&str, &NodeProto> = g
            .node
            .iter()
            .flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n)))
            .collect();
        let mut push = |name: &str| {
            if inits.contains(name) && !chosen.iter().any(|c| c == name) {
                chosen.push(name.to_string());
            }
        };
        for n in &g.node {
            if is_ditac_node(n) && n.op_type == "DiTAC" {
                push(&n.input[1]);
            }
            if trainable == Trainable::All {
                match n.op_type.as_str() {
                    "Gemm" | "Conv" | "LayerNormalization" => {
                        n.input.iter().skip(1).for_each(|i| push(i));
                    }
                    "MatMul" => n.input.iter().for_each(|i| push(i)),
                    "Add" => {
                        let after_linear = n.input.iter().any(|i| {
                            producer
                                .get(i.as_str())
                                .is_some_and(|p| matches!(p.op_type.as_str(), "MatMul" | "Conv"))
                        });
                        if after_linear {
                            n.input.iter().for_each(|i| push(i));
                        }
                    }
                    _ => {}
                }
            }
        }
        if chosen.is_empty() {
            match trainable {
                Trainable::Theta => bail!(
                    "the model has no DiTAC θ initializer to train (--trainable theta): patch DiTAC \
                     in first (ditac patch), or train the weights with --trainable all"
                ),
                Trainable::All => {
                    bail!("the model has no trainable initializers (no DiTAC θ, no weights)")
                }
            }
        }
        let mut params = Vec::new();
        let mut init = Params::default();
        for name in &chosen {
            let t = g.initializer.iter().find(|t| &t.name == name).unwrap();
            let data = tensor_f32(t, dir).with_context(|| format!("initializer \"{name}\""))?;
            let shape: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
            init.insert(name.clone(), PTensor::new(shape.clone(), data));
            params.push(ParamInfo {
                key: name.clone(),
                shape,
            });
        }

        // The θ priors (the flags' settings: a model carries none).
        let mut priors = Vec::new();
        for n in g
            .node
            .iter()
            .filter(|n| is_ditac_node(n) && n.op_type == "DiTAC")
        {
            let key = &n.input[1];
            // One prior per θ, however many nodes share it.
            if !chosen.contains(key) || priors.iter().any(|p: &ThetaPrior| &p.key == key) {
                continue;
            }
            let (at, _) = node_attrs(n)?;
            let d = *init.get(key)?.shape.last().unwrap_or(&0);
            let precision = if at.basis == ditac::BasisKind::Explicit {
                let bname = n.input.get(2).filter(|b| !b.is_empty()).ok_or_else(|| {
                    anyhow!(
                        "node '{}': basis \"explicit\" without a B input",
                        node_label(n)
                    )
                })?;
                let bt = constant_tensor(g, bname)
                    .ok_or_else(|| anyhow!("node '{}': B is not a constant", node_label(n)))?;
                let data = tensor_f32(bt, dir)?;
                let rows = 2 * at.tess as usize;
                let b = ditac::basis::Basis {
                    rows,
                    cols: data.len() / rows.max(1),
                    data: data.iter().map(|&v| v as f64).collect(),
                };
                ditac::prior::precision_matrix(&b, cfg.prior.lambda_smooth, cfg.prior.lambda_var)
            } else {
                layer_precision(&at, &cfg.prior)?
            };
            priors.push(ThetaPrior {
                key: key.clone(),
                d,
                precision,
                settings: cfg.prior,
            });
        }

        // Probe: every value as an output, one run on PROBE_BATCH samples.
        let mut probe = model.clone();
        let pg = probe.graph.as_mut().unwrap();
        let mut names = Vec::new();
        for n in &pg.node {
            for o in &n.output {
                if !o.is_empty() && o != &output {
                    names.push(o.clone());
                }
            }
        }
        for o in &names {
            let mut v = onnx_protobuf::ValueInfoProto::new();
            v.name = o.clone();
            pg.output.push(v);
        }
        let mut session = open(&probe.write_to_bytes()?).context("probing the model's shapes")?;
        let mut xs = vec![PROBE_BATCH];
        xs.extend(&input_shape);
        let numel: usize = xs.iter().product();
        let x: Vec<f32> = (0..numel).map(|i| 0.5 * (i as f32 * 0.37).sin()).collect();
        let outs = session.run(vec![(
            input.clone(),
            ort::session::SessionInputValue::from(Tensor::from_array((xs, x))?),
        )])?;
        let mut shapes = HashMap::new();
        for (name, v) in outs.iter() {
            let float = v.dtype().tensor_type() == Some(ort::value::TensorElementType::Float32);
            if let Some(s) = v.dtype().tensor_shape() {
                shapes.insert(
                    name.to_string(),
                    (float, s.iter().map(|&d| d.max(0) as usize).collect()),
                );
            }
        }
        let mut ishape = vec![PROBE_BATCH];
        ishape.extend(&input_shape);
        shapes.insert(input.clone(), (true, ishape));
        for t in &g.initializer {
            shapes.insert(
                t.name.clone(),
                (
                    t.data_type == onnx_protobuf::tensor_proto::DataType::FLOAT as i32,
                    t.dims.iter().map(|&d| d as usize).collect(),
                ),
            );
        }
        let out_full = shapes
            .get(&output)
            .map(|s| s.1.clone())
            .context("the probe did not return the output")?;
        if out_full.first() != Some(&PROBE_BATCH) {
            bail!("output \"{output}\" has shape {out_full:?} for a batch of {PROBE_BATCH}: expected the batch first");
        }
        Ok(ModelNet {
            model: model.clone(),
            input,
            output,
            input_shape,
            output_shape: out_full[1..].to_vec(),
            shapes,
            params,
            init,
            priors,
            opset,
        })
    }

    /// The model with the trainable initializers set to `params` (the trained inference model).
    pub fn trained_model(&self, params: &Params) -> Result<ModelProto> {
        let mut m = self.model.clone();
        let g = m.graph.as_mut().unwrap();
        for t in g.initializer.iter_mut() {
            if let Ok(p) = params.get(&t.name) {
                if self.params.iter().any(|i| i.key == t.name) {
                    *t = crate::transform::make_tensor_f32(&t.name, &p.shape, &p.data);
                }
            }
        }
        Ok(m)
    }

    fn shape(&self, v: &str) -> Result<&[usize]> {
        self.shapes
            .get(v)
            .map(|s| s.1.as_slice())
            .ok_or_else(|| anyhow!("no shape for value \"{v}\""))
    }

    fn frozen_initializers(&self) -> Vec<TensorProto> {
        let g = self.model.graph.as_ref().unwrap();
        g.initializer
            .iter()
            .filter(|t| !self.params.iter().any(|p| p.key == t.name))
            .cloned()
            .collect()
    }

    /// Writes the forward (the model's nodes, reading `x`) into a new builder with the graph's
    /// inputs: `x`, `target`, the parameters (and, for training, their buffers).
    fn forward(&self, name: &str, cfg: &TrainConfig, training: bool) -> Result<ModelBuilder> {
        let mut m = ModelBuilder::new(name);
        m.opset("", self.opset);
        if training {
            m.opset("com.microsoft", 1);
        }
        m.input(
            "x",
            ElemType::Float,
            &crate::graph::batch_dims(&self.input_shape),
        );
        target_input_for(&self.output_shape, cfg.loss, &mut m)?;
        let dims = |s: &[usize]| s.iter().map(|&d| d as i64).collect::<Vec<_>>();
        for p in &self.params {
            m.input(&p.key, ElemType::Float, &dims(&p.shape));
        }
        if training {
            for p in &self.params {
                m.input(
                    &format!("{}{BUFFER_SUFFIX}", p.key),
                    ElemType::Float,
                    &dims(&p.shape),
                );
            }
            m.input(RESET, ElemType::Bool, &[1]);
        }
        if self.input != "x" {
            m.node(
                "Identity",
                "",
                "input/identity",
                &["x"],
                &[&self.input],
                &[],
            );
        }
        Ok(m)
    }

    /// Inserts the model's nodes, frozen initializers and opsets into `built` (after the nodes
    /// `m` wrote before them) and fixes the IR version.
    fn assemble(&self, mut built: ModelProto, pre: usize) -> ModelProto {
        let src = self.model.graph.as_ref().unwrap();
        let g = built.graph.as_mut().unwrap();
        let tail = g.node.split_off(pre);
        g.node.extend(src.node.iter().cloned());
        g.node.extend(tail);
        g.initializer.extend(self.frozen_initializers());
        for o in &self.model.opset_import {
            if !built.opset_import.iter().any(|b| b.domain == o.domain) {
                built.opset_import.push(o.clone());
            }
        }
        built.ir_version = built.ir_version.max(self.model.ir_version.min(10));
        built
    }

    /// The eval graph: forward and loss.
    pub fn eval_model(&self, cfg: &TrainConfig) -> Result<ModelProto> {
        let mut m = self.forward("eval", cfg, false)?;
        let pre = m.build().graph.node.len();
        emit_loss_for(
            &self.output_shape,
            &self.priors,
            &mut m,
            &self.output,
            cfg,
            false,
        )?;
        Ok(self.assemble(m.build(), pre))
    }

    /// The training graph (conventions of [`super::artifacts`]).
    pub fn training_model(&self, cfg: &TrainConfig) -> Result<ModelProto> {
        let mut m = self.forward("training", cfg, true)?;
        let pre = m.build().graph.node.len();
        let (dy, prior) = emit_loss_for(
            &self.output_shape,
            &self.priors,
            &mut m,
            &self.output,
            cfg,
            true,
        )?;
        let dy = dy.expect("loss gradient requested");
        let mut grads = self.emit_backward(&mut m, &dy)?;
        for pg in prior {
            let key = &pg.key;
            let data = grads
                .get(key)
                .cloned()
                .ok_or_else(|| anyhow!("θ \"{key}\" does not reach the loss"))?;
            let mut data = data;
            if pg.data_scale != 1.0 {
                let s = scalar(&mut m, &format!("{key}.prior/data_scale"), pg.data_scale);
                let scaled = format!("{key}.prior/data_scaled");
                m.node("Mul", "", &scaled, &[&data, &s], &[&scaled], &[]);
                data = scaled;
            }
            let total = format!("{key}.prior/total");
            m.node(
                "Add",
                "",
                &format!("{key}.prior/add"),
                &[&data, &pg.grad],
                &[&total],
                &[],
            );
            grads.insert(key.clone(), total);
        }
        for (i, p) in self.params.iter().enumerate() {
            let g = grads
                .get(&p.key)
                .ok_or_else(|| anyhow!("parameter \"{}\" does not reach the loss", p.key))?;
            let want = format!("{}_grad", p.key);
            // Gradients of broadcast operands come back in their own shape; make it exact.
            let shape = ints(
                &mut m,
                &format!("{}/grad_shape", p.key),
                &p.shape.iter().map(|&d| d as i64).collect::<Vec<_>>(),
            );
            m.node(
                "Reshape",
                "",
                &format!("{}/grad_reshape", p.key),
                &[g, &shape],
                &[&want],
                &[],
            );
            let out = format!("{}{OUT_SUFFIX}", p.key);
            m.node(
                "InPlaceAccumulatorV2",
                "com.microsoft",
                &format!("GradientAccumulator{}", i + 1),
                &[&format!("{}{BUFFER_SUFFIX}", p.key), &want, RESET],
                &[&out],
                &[],
            );
            m.output(&out, ElemType::Bool, &[1]);
        }
        Ok(self.assemble(m.build(), pre))
    }

    /// Every artifact, with the initial values of the trainable parameters in the checkpoint.
    pub fn build(&self, cfg: &TrainConfig) -> Result<Artifacts> {
        let training = self.training_model(cfg)?;
        let eval = self.eval_model(cfg)?;
        let optimizer = optimizer_model(cfg);
        let trainable = self
            .params
            .iter()
            .map(|p| {
                Ok(CkptTensor {
                    name: p.key.clone(),
                    dims: p.shape.iter().map(|&d| d as i64).collect(),
                    data: self.init.get(&p.key)?.data.clone(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Artifacts {
            training,
            eval,
            optimizer,
            checkpoint: Checkpoint {
                trainable,
                frozen: Vec::new(),
                ints: vec![("ditac.seed".into(), cfg.seed as i64)],
                floats: vec![("ditac.learning_rate".into(), cfg.lr)],
                strings: vec![
                    ("ditac.loss".into(), cfg.loss.as_str().into()),
                    ("ditac.optimizer".into(), cfg.optimizer.as_str().into()),
                    ("ditac.regulariser".into(), cfg.regulariser.as_str().into()),
                ],
            },
            params: self.params.clone(),
        })
    }

    /// The reverse pass over the model's nodes, from `dy` (the gradient of the output). Returns
    /// each parameter's gradient value (in the parameter's shape up to a reshape).
    fn emit_backward(&self, m: &mut ModelBuilder, dy: &str) -> Result<HashMap<String, String>> {
        let g = self.model.graph.as_ref().unwrap();
        let params: BTreeSet<&str> = self.params.iter().map(|p| p.key.as_str()).collect();
        // Values that depend on a parameter (and so need a gradient).
        let mut needs: BTreeSet<String> = params.iter().map(|s| s.to_string()).collect();
        for n in &g.node {
            if NO_GRADIENT.contains(&n.op_type.as_str()) {
                continue;
            }
            if n.input.iter().any(|i| needs.contains(i)) {
                for o in &n.output {
                    if self.shapes.get(o).is_some_and(|s| s.0) || o == &self.output {
                        needs.insert(o.clone());
                    }
                }
            }
        }
        let mut contrib: HashMap<String, Vec<String>> = HashMap::new();
        contrib.insert(self.output.clone(), vec![dy.to_string()]);
        for (ni, n) in g.node.iter().enumerate().rev() {
            if NO_GRADIENT.contains(&n.op_type.as_str())
                || !n.input.iter().any(|i| needs.contains(i))
            {
                continue;
            }
            let Some(parts) = n.output.first().and_then(|o| contrib.remove(o)) else {
                continue;
            };
            let p = format!("grad{ni}");
            let dout = sum(m, &p, &n.output[0], parts);
            let want = |i: usize| n.input.get(i).is_some_and(|v| needs.contains(v));
            let grads = self
                .node_backward(m, n, &p, &dout, &want)
                .with_context(|| format!("node '{}' ({})", node_label(n), n.op_type))?;
            for (i, gname) in grads {
                contrib.entry(n.input[i].clone()).or_default().push(gname);
            }
        }
        let mut out = HashMap::new();
        for p in &self.params {
            if let Some(parts) = contrib.remove(&p.key) {
                let s = sum(m, &format!("{}/sum", p.key), &p.key, parts);
                out.insert(p.key.clone(), s);
            }
        }
        Ok(out)
    }

    /// Reduces `g` (shaped like the broadcast result) to the shape of `target`.
    fn unbroadcast(
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
        m.node(
            "ReduceSum",
            "",
            &red,
            &[g, &ax],
            &[&red],
            &[("keepdims", Attr::Int(1))],
        );
        let sh = format!("{red}/shape");
        m.node("Shape", "", &sh, &[target], &[&sh], &[]);
        let out = format!("{red}/out");
        m.node("Reshape", "", &out, &[&red, &sh], &[&out], &[]);
        Ok(out)
    }

    /// The backward of one node: (input index, gradient value) for each input in `want`.
    fn node_backward(
        &self,
        m: &mut ModelBuilder,
        n: &NodeProto,
        p: &str,
        dy: &str,
        want: &dyn Fn(usize) -> bool,
    ) -> Result<Vec<(usize, String)>> {
        let inp = |i: usize| n.input[i].as_str();
        let y = n.output[0].as_str();
        let yshape = self.shape(y)?.to_vec();
        let mut out = Vec::new();
        let nm = |s: &str| format!("{p}/{s}");
        if is_ditac_node(n) {
            if n.op_type != "DiTAC" {
                bail!(
                    "ai.ditac.{} has no backward (train the DiTAC node)",
                    n.op_type
                );
            }
            let mut ins = vec![dy, inp(0), inp(1)];
            if let Some(b) = n.input.get(2).filter(|b| !b.is_empty()) {
                ins.push(b);
            }
            let (dx, dth) = (nm("dx"), nm("dtheta"));
            let mut node = NodeProto::new();
            node.op_type = "DiTACGrad".into();
            node.domain = DITAC_DOMAIN.into();
            node.name = nm("DiTACGrad");
            node.input = ins.iter().map(|s| s.to_string()).collect();
            node.output = vec![dx.clone(), dth.clone()];
            node.attribute = n.attribute.clone();
            m.raw_node(node);
            if want(0) {
                out.push((0, dx));
            }
            if want(1) {
                out.push((1, dth));
            }
            return Ok(out);
        }
        match n.op_type.as_str() {
            "Identity" => out.push((0, dy.to_string())),
            "Relu" => {
                let zero = scalar(m, &nm("zero"), 0.0);
                m.node("Greater", "", &nm("pos"), &[inp(0), &zero], &[&nm("pos")], &[]);
                m.node("Where", "", &nm("dx"), &[&nm("pos"), dy, &zero], &[&nm("dx")], &[]);
                out.push((0, nm("dx")));
            }
            "Sigmoid" => {
                let one = scalar(m, &nm("one"), 1.0);
                m.node("Sub", "", &nm("om"), &[&one, y], &[&nm("om")], &[]);
                m.node("Mul", "", &nm("d"), &[y, &nm("om")], &[&nm("d")], &[]);
                m.node("Mul", "", &nm("dx"), &[dy, &nm("d")], &[&nm("dx")], &[]);
                out.push((0, nm("dx")));
            }
            "Tanh" => {
                let one = scalar(m, &nm("one"), 1.0);
                m.node("Mul", "", &nm("yy"), &[y, y], &[&nm("yy")], &[]);
                m.node("Sub", "", &nm("d"), &[&one, &nm("yy")], &[&nm("d")], &[]);
                m.node("Mul", "", &nm("dx"), &[dy, &nm("d")], &[&nm("dx")], &[]);
                out.push((0, nm("dx")));
            }
            "Erf" => {
                // d erf(x)/dx = 2/√π·exp(−x²)
                let c = scalar(m, &nm("c"), std::f32::consts::FRAC_2_SQRT_PI);
                let x = inp(0);
                m.node("Mul", "", &nm("xx"), &[x, x], &[&nm("xx")], &[]);
                m.node("Neg", "", &nm("nxx"), &[&nm("xx")], &[&nm("nxx")], &[]);
                m.node("Exp", "", &nm("e"), &[&nm("nxx")], &[&nm("e")], &[]);
                m.node("Mul", "", &nm("d"), &[&nm("e"), &c], &[&nm("d")], &[]);
                m.node("Mul", "", &nm("dx"), &[dy, &nm("d")], &[&nm("dx")], &[]);
                out.push((0, nm("dx")));
            }
            "Gelu" => {
                if attr_s(n, "approximate").is_some_and(|a| a != "none") {
                    bail!("Gelu with approximate = \"tanh\" has no backward here (only \"none\")");
                }
                // x·Φ(x): Φ(x) + x·φ(x).
                let x = inp(0);
                let inv_sqrt2 = scalar(m, &nm("inv_sqrt2"), std::f32::consts::FRAC_1_SQRT_2);
                let half = scalar(m, &nm("half"), 0.5);
                let one = scalar(m, &nm("one"), 1.0);
                let neg_half = scalar(m, &nm("neg_half"), -0.5);
                let k = scalar(
                    m,
                    &nm("inv_sqrt_2pi"),
                    (0.5 / std::f64::consts::PI).sqrt() as f32,
                );
                m.node("Mul", "", &nm("xs"), &[x, &inv_sqrt2], &[&nm("xs")], &[]);
                m.node("Erf", "", &nm("erf"), &[&nm("xs")], &[&nm("erf")], &[]);
                m.node("Add", "", &nm("erf1"), &[&nm("erf"), &one], &[&nm("erf1")], &[]);
                m.node("Mul", "", &nm("cdf"), &[&nm("erf1"), &half], &[&nm("cdf")], &[]);
                m.node("Mul", "", &nm("xx"), &[x, x], &[&nm("xx")], &[]);
                m.node("Mul", "", &nm("ea"), &[&nm("xx"), &neg_half], &[&nm("ea")], &[]);
                m.node("Exp", "", &nm("e"), &[&nm("ea")], &[&nm("e")], &[]);
                m.node("Mul", "", &nm("pdf"), &[&nm("e"), &k], &[&nm("pdf")], &[]);
                m.node("Mul", "", &nm("xpdf"), &[x, &nm("pdf")], &[&nm("xpdf")], &[]);
                m.node("Add", "", &nm("d"), &[&nm("cdf"), &nm("xpdf")], &[&nm("d")], &[]);
                m.node("Mul", "", &nm("dx"), &[dy, &nm("d")], &[&nm("dx")], &[]);
                out.push((0, nm("dx")));
            }
            "Add" | "Sub" => {
                for i in 0..2 {
                    if !want(i) {
                        continue;
                    }
                    let mut g = dy.to_string();
                    if i == 1 && n.op_type == "Sub" {
                        m.node("Neg", "", &nm("neg"), &[dy], &[&nm("neg")], &[]);
                        g = nm("neg");
                    }
                    let r = self.unbroadcast(m, &nm(&format!("in{i}")), &g, &yshape, inp(i))?;
                    out.push((i, r));
                }
            }
            "Mul" => {
                for i in 0..2 {
                    if !want(i) {
                        continue;
                    }
                    let prod = nm(&format!("prod{i}"));
                    m.node("Mul", "", &prod, &[dy, inp(1 - i)], &[&prod], &[]);
                    let r = self.unbroadcast(m, &nm(&format!("in{i}")), &prod, &yshape, inp(i))?;
                    out.push((i, r));
                }
            }
            "Div" => {
                // y = a/b: da = dy/b, db = −dy·y/b.
                if want(0) {
                    m.node("Div", "", &nm("da"), &[dy, inp(1)], &[&nm("da")], &[]);
                    let r = self.unbroadcast(m, &nm("in0"), &nm("da"), &yshape, inp(0))?;
                    out.push((0, r));
                }
                if want(1) {
                    m.node("Mul", "", &nm("dyy"), &[dy, y], &[&nm("dyy")], &[]);
                    m.node("Div", "", &nm("q"), &[&nm("dyy"), inp(1)], &[&nm("q")], &[]);
                    m.node("Neg", "", &nm("db"), &[&nm("q")], &[&nm("db")], &[]);
                    let r = self.unbroadcast(m, &nm("in1"), &nm("db"), &yshape, inp(1))?;
                    out.push((1, r));
                }
            }
            "Gemm" => {
                let (alpha, beta) = (attr_f(n, "alpha", 1.0), attr_f(n, "beta", 1.0));
                let (ta, tb) = (attr_i(n, "transA", 0), attr_i(n, "transB", 0));
                let al = ("alpha", Attr::Float(alpha));
                if want(0) {
                    // d op(A) = α·dY·op(B)ᵀ
                    if ta == 0 {
                        m.node(
                            "Gemm",
                            "",
                            &nm("dA"),
                            &[dy, inp(1)],
                            &[&nm("dA")],
                            &[al.clone(), ("transB", Attr::Int(1 - tb))],
                        );
                    } else {
                        m.node(
                            "Gemm",
                            "",
                            &nm("dA"),
                            &[inp(1), dy],
                            &[&nm("dA")],
                            &[al.clone(), ("transA", Attr::Int(tb)), ("transB", Attr::Int(1))],
                        );
                    }
                    out.push((0, nm("dA")));
                }
                if want(1) {
                    // d op(B) = α·op(A)ᵀ·dY
                    if tb == 0 {
                        m.node(
                            "Gemm",
                            "",
                            &nm("dB"),
                            &[inp(0), dy],
                            &[&nm("dB")],
                            &[al.clone(), ("transA", Attr::Int(1 - ta))],
                        );
                    } else {
                        m.node(
                            "Gemm",
                            "",
                            &nm("dB"),
                            &[dy, inp(0)],
                            &[&nm("dB")],
                            &[al, ("transA", Attr::Int(1)), ("transB", Attr::Int(ta))],
                        );
                    }
                    out.push((1, nm("dB")));
                }
                if n.input.len() > 2 && want(2) {
                    let mut g = dy.to_string();
                    if beta != 1.0 {
                        let b = scalar(m, &nm("beta"), beta);
                        m.node("Mul", "", &nm("dCs"), &[dy, &b], &[&nm("dCs")], &[]);
                        g = nm("dCs");
                    }
                    let r = self.unbroadcast(m, &nm("in2"), &g, &yshape, inp(2))?;
                    out.push((2, r));
                }
            }
            "MatMul" => {
                let (sa, sb) = (self.shape(inp(0))?.to_vec(), self.shape(inp(1))?.to_vec());
                if sa.len() < 2 || sb.len() < 2 {
                    bail!("MatMul of rank-1 operands has no backward here");
                }
                let tr = |m: &mut ModelBuilder, v: &str, rank: usize, name: &str| {
                    let mut perm: Vec<i64> = (0..rank as i64).collect();
                    perm.swap(rank - 1, rank - 2);
                    m.node("Transpose", "", name, &[v], &[name], &[("perm", Attr::Ints(perm))]);
                    name.to_string()
                };
                if want(0) {
                    let bt = tr(m, inp(1), sb.len(), &nm("Bt"));
                    m.node("MatMul", "", &nm("dA"), &[dy, &bt], &[&nm("dA")], &[]);
                    let mut full = yshape[..yshape.len() - 2].to_vec();
                    full.extend(&sa[sa.len() - 2..]);
                    let r = self.unbroadcast(m, &nm("in0"), &nm("dA"), &full, inp(0))?;
                    out.push((0, r));
                }
                if want(1) {
                    let at = tr(m, inp(0), sa.len(), &nm("At"));
                    m.node("MatMul", "", &nm("dB"), &[&at, dy], &[&nm("dB")], &[]);
                    let mut full = yshape[..yshape.len() - 2].to_vec();
                    full.extend(&sb[sb.len() - 2..]);
                    let r = self.unbroadcast(m, &nm("in1"), &nm("dB"), &full, inp(1))?;
                    out.push((1, r));
                }
            }
            "Conv" => self.conv_backward(m, n, p, dy, want, &mut out)?,
            "LayerNormalization" => {
                let x = inp(0);
                let xs = self.shape(x)?.to_vec();
                let rank = xs.len() as i64;
                let mut axis = attr_i(n, "axis", -1);
                if axis < 0 {
                    axis += rank;
                }
                let eps = attr_f(n, "epsilon", 1e-5);
                let norm_axes: Vec<i64> = (axis..rank).collect();
                let outer_axes: Vec<i64> = (0..axis).collect();
                let count: usize = xs[axis as usize..].iter().product();
                let na = ints(m, &nm("norm_axes"), &norm_axes);
                let inv_n = scalar(m, &nm("inv_n"), 1.0 / count as f32);
                let epsn = scalar(m, &nm("eps"), eps);
                let rs = |m: &mut ModelBuilder, v: &str, o: &str| {
                    m.node("ReduceSum", "", o, &[v, &na], &[o], &[("keepdims", Attr::Int(1))]);
                    m.node("Mul", "", &format!("{o}/mean"), &[o, &inv_n], &[&format!("{o}/mean")], &[]);
                    format!("{o}/mean")
                };
                let mu = rs(m, x, &nm("mu"));
                m.node("Sub", "", &nm("xc"), &[x, &mu], &[&nm("xc")], &[]);
                m.node("Mul", "", &nm("xc2"), &[&nm("xc"), &nm("xc")], &[&nm("xc2")], &[]);
                let var = rs(m, &nm("xc2"), &nm("var"));
                m.node("Add", "", &nm("ve"), &[&var, &epsn], &[&nm("ve")], &[]);
                m.node("Sqrt", "", &nm("sd"), &[&nm("ve")], &[&nm("sd")], &[]);
                m.node("Reciprocal", "", &nm("r"), &[&nm("sd")], &[&nm("r")], &[]);
                m.node("Mul", "", &nm("xhat"), &[&nm("xc"), &nm("r")], &[&nm("xhat")], &[]);
                if want(0) {
                    // dx = r·(g − mean(g) − x̂·mean(g·x̂)), g = dy·scale.
                    m.node("Mul", "", &nm("g"), &[dy, inp(1)], &[&nm("g")], &[]);
                    let gm = rs(m, &nm("g"), &nm("gm"));
                    m.node("Mul", "", &nm("gx"), &[&nm("g"), &nm("xhat")], &[&nm("gx")], &[]);
                    let gxm = rs(m, &nm("gx"), &nm("gxm"));
                    m.node("Sub", "", &nm("t1"), &[&nm("g"), &gm], &[&nm("t1")], &[]);
                    m.node("Mul", "", &nm("t2"), &[&nm("xhat"), &gxm], &[&nm("t2")], &[]);
                    m.node("Sub", "", &nm("t3"), &[&nm("t1"), &nm("t2")], &[&nm("t3")], &[]);
                    m.node("Mul", "", &nm("dx"), &[&nm("t3"), &nm("r")], &[&nm("dx")], &[]);
                    out.push((0, nm("dx")));
                }
                let oa = (!outer_axes.is_empty()).then(|| ints(m, &nm("outer_axes"), &outer_axes));
                let reduce = |m: &mut ModelBuilder, v: &str, o: &str| -> String {
                    match &oa {
                        Some(a) => {
                            m.node("ReduceSum", "", o, &[v, a], &[o], &[("keepdims", Attr::Int(0))]);
                            o.to_string()
                        }
                        None => v.to_string(),
                    }
                };
                if want(1) {
                    m.node("Mul", "", &nm("dyx"), &[dy, &nm("xhat")], &[&nm("dyx")], &[]);
                    let s = reduce(m, &nm("dyx"), &nm("dscale"));
                    out.push((1, s));
                }
                if n.input.len() > 2 && want(2) {
                    let s = reduce(m, dy, &nm("dbias"));
                    out.push((2, s));
                }
            }
            "GlobalAveragePool" => {
                let xs = self.shape(inp(0))?;
                let area: usize = xs[2..].iter().product();
                let k = scalar(m, &nm("inv_area"), 1.0 / area as f32);
                m.node("Mul", "", &nm("scaled"), &[dy, &k], &[&nm("scaled")], &[]);
                m.node("Shape", "", &nm("shape"), &[inp(0)], &[&nm("shape")], &[]);
                m.node("Expand", "", &nm("dx"), &[&nm("scaled"), &nm("shape")], &[&nm("dx")], &[]);
                out.push((0, nm("dx")));
            }
            "AveragePool" => {
                let xs = self.shape(inp(0))?.to_vec();
                if xs.len() != 4 {
                    bail!("AveragePool of rank {} has no backward here (2-D only)", xs.len());
                }
                let k = attr_ints(n, "kernel_shape").context("AveragePool without kernel_shape")?;
                let s = attr_ints(n, "strides").unwrap_or(vec![1, 1]);
                let pads = attr_ints(n, "pads").unwrap_or(vec![0; 4]);
                check_no_auto_pad(n)?;
                if attr_i(n, "ceil_mode", 0) != 0 {
                    bail!("AveragePool with ceil_mode = 1 has no backward here");
                }
                if pads.iter().any(|&v| v != 0) && attr_i(n, "count_include_pad", 0) == 0 {
                    bail!("AveragePool with padding and count_include_pad = 0 has no backward here");
                }
                // The adjoint of a uniform depthwise filter: ConvTranspose with 1/(kh·kw) weights.
                let c = xs[1];
                let w = vec![1.0 / (k[0] * k[1]) as f32; c * (k[0] * k[1]) as usize];
                let wn = nm("ones");
                m.initializer_f32(&wn, &[c, 1, k[0] as usize, k[1] as usize], &w);
                let op = output_padding(&xs, &yshape, &k, &s, &pads, &[1, 1]);
                m.node(
                    "ConvTranspose",
                    "",
                    &nm("dx"),
                    &[dy, &wn],
                    &[&nm("dx")],
                    &[
                        ("group", Attr::Int(c as i64)),
                        ("kernel_shape", Attr::Ints(k.clone())),
                        ("strides", Attr::Ints(s)),
                        ("pads", Attr::Ints(pads)),
                        ("output_padding", Attr::Ints(op)),
                    ],
                );
                out.push((0, nm("dx")));
            }
            "MaxPool" => {
                if self.opset < 16 {
                    bail!("MaxPool's backward needs opset 16 (ScatterElements with reduction)");
                }
                if attr_i(n, "storage_order", 0) != 0 {
                    bail!("MaxPool with storage_order = 1 has no backward here");
                }
                let idx = n
                    .output
                    .get(1)
                    .filter(|s| !s.is_empty())
                    .cloned()
                    .context("MaxPool without its Indices output (the forward is given one)")?;
                // dx: dy scattered (added) at the arg-max positions of the flattened input.
                let minus1 = ints(m, &nm("minus1"), &[-1]);
                m.node("Size", "", &nm("size"), &[inp(0)], &[&nm("size")], &[]);
                m.node("Reshape", "", &nm("size1"), &[&nm("size"), &minus1], &[&nm("size1")], &[]);
                // ConstantOfShape's default value is float 0.
                m.node(
                    "ConstantOfShape",
                    "",
                    &nm("zeros"),
                    &[&nm("size1")],
                    &[&nm("zeros")],
                    &[],
                );
                m.node("Reshape", "", &nm("idx"), &[&idx, &minus1], &[&nm("idx")], &[]);
                m.node("Reshape", "", &nm("dyf"), &[dy, &minus1], &[&nm("dyf")], &[]);
                m.node(
                    "ScatterElements",
                    "",
                    &nm("scatter"),
                    &[&nm("zeros"), &nm("idx"), &nm("dyf")],
                    &[&nm("scatter")],
                    &[("axis", Attr::Int(0)), ("reduction", Attr::from("add"))],
                );
                m.node("Shape", "", &nm("shape"), &[inp(0)], &[&nm("shape")], &[]);
                m.node("Reshape", "", &nm("dx"), &[&nm("scatter"), &nm("shape")], &[&nm("dx")], &[]);
                out.push((0, nm("dx")));
            }
            "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" => {
                m.node("Shape", "", &nm("shape"), &[inp(0)], &[&nm("shape")], &[]);
                m.node("Reshape", "", &nm("dx"), &[dy, &nm("shape")], &[&nm("dx")], &[]);
                out.push((0, nm("dx")));
            }
            "Transpose" => {
                let rank = yshape.len();
                let perm = attr_ints(n, "perm").unwrap_or_else(|| (0..rank as i64).rev().collect());
                let mut inv = vec![0i64; rank];
                for (i, &pi) in perm.iter().enumerate() {
                    inv[pi as usize] = i as i64;
                }
                m.node("Transpose", "", &nm("dx"), &[dy], &[&nm("dx")], &[("perm", Attr::Ints(inv))]);
                out.push((0, nm("dx")));
            }
            other => bail!(
                "op {other} has no backward: the training graph covers {COVERED} (and shape-only ops)"
            ),
        }
        // Only inputs that need a gradient (Reshape's shape, say, never does).
        out.retain(|(i, _)| want(*i));
        Ok(out)
    }

    fn conv_backward(
        &self,
        m: &mut ModelBuilder,
        n: &NodeProto,
        p: &str,
        dy: &str,
        want: &dyn Fn(usize) -> bool,
        out: &mut Vec<(usize, String)>,
    ) -> Result<()> {
        let nm = |s: &str| format!("{p}/{s}");
        let (x, w) = (n.input[0].as_str(), n.input[1].as_str());
        let xs = self.shape(x)?.to_vec();
        let ws = self.shape(w)?.to_vec();
        let ys = self.shape(&n.output[0])?.to_vec();
        if xs.len() != 4 {
            bail!("Conv of rank {} has no backward here (2-D only)", xs.len());
        }
        check_no_auto_pad(n)?;
        let group = attr_i(n, "group", 1);
        let k = vec![ws[2] as i64, ws[3] as i64];
        let s = attr_ints(n, "strides").unwrap_or(vec![1, 1]);
        let d = attr_ints(n, "dilations").unwrap_or(vec![1, 1]);
        let pads = attr_ints(n, "pads").unwrap_or(vec![0; 4]);
        if want(0) {
            // The adjoint of a (grouped) convolution: ConvTranspose with the same weights.
            let op = output_padding(&xs, &ys, &k, &s, &pads, &d);
            m.node(
                "ConvTranspose",
                "",
                &nm("dx"),
                &[dy, w],
                &[&nm("dx")],
                &[
                    ("group", Attr::Int(group)),
                    ("kernel_shape", Attr::Ints(k.clone())),
                    ("strides", Attr::Ints(s.clone())),
                    ("dilations", Attr::Ints(d.clone())),
                    ("pads", Attr::Ints(pads.clone())),
                    ("output_padding", Attr::Ints(op)),
                ],
            );
            out.push((0, nm("dx")));
        }
        if want(1) {
            // dW[o,c,i,j] = Σ_n Σ_uv dy[n,o,u,v]·x[n, c_o, u·s + i·d − p, ...]: a convolution of xᵀ
            // ([C, N, H, W]) with dyᵀ ([O, N, Ho, Wo]) as kernel, dilated by the stride and strided
            // by the dilation, cut to k; for groups, every (input, output) channel pair is computed
            // and the block diagonal kept.
            let perm = Attr::Ints(vec![1, 0, 2, 3]);
            m.node(
                "Transpose",
                "",
                &nm("xT"),
                &[x],
                &[&nm("xT")],
                &[("perm", perm.clone())],
            );
            m.node(
                "Transpose",
                "",
                &nm("dyT"),
                &[dy],
                &[&nm("dyT")],
                &[("perm", perm.clone())],
            );
            let (ho, wo) = (ys[2] as i64, ys[3] as i64);
            m.node(
                "Conv",
                "",
                &nm("full"),
                &[&nm("xT"), &nm("dyT")],
                &[&nm("full")],
                &[
                    ("kernel_shape", Attr::Ints(vec![ho, wo])),
                    ("dilations", Attr::Ints(s.clone())),
                    ("strides", Attr::Ints(d.clone())),
                    ("pads", Attr::Ints(pads.clone())),
                ],
            );
            let st = ints(m, &nm("starts"), &[0, 0]);
            let en = ints(m, &nm("ends"), &k);
            let ax = ints(m, &nm("axes23"), &[2, 3]);
            m.node(
                "Slice",
                "",
                &nm("cut"),
                &[&nm("full"), &st, &en, &ax],
                &[&nm("cut")],
                &[],
            );
            // cut: [C_in, C_out, kh, kw]
            let (cin, cout, g) = (xs[1] as i64, ws[0] as i64, group);
            let gw = if g == 1 {
                m.node(
                    "Transpose",
                    "",
                    &nm("dW"),
                    &[&nm("cut")],
                    &[&nm("dW")],
                    &[("perm", perm)],
                );
                nm("dW")
            } else {
                let (cin_g, cout_g) = (cin / g, cout / g);
                let sh = ints(m, &nm("blocks"), &[g, cin_g, g, cout_g, k[0], k[1]]);
                m.node(
                    "Reshape",
                    "",
                    &nm("b"),
                    &[&nm("cut"), &sh],
                    &[&nm("b")],
                    &[],
                );
                let gu = g as usize;
                let eye: Vec<f32> = (0..gu * gu)
                    .map(|i| if i / gu == i % gu { 1.0 } else { 0.0 })
                    .collect();
                m.initializer_f32(&nm("eye"), &[gu, 1, gu, 1, 1, 1], &eye);
                m.node(
                    "Mul",
                    "",
                    &nm("diag"),
                    &[&nm("b"), &nm("eye")],
                    &[&nm("diag")],
                    &[],
                );
                let a2 = ints(m, &nm("axis2"), &[2]);
                m.node(
                    "ReduceSum",
                    "",
                    &nm("pick"),
                    &[&nm("diag"), &a2],
                    &[&nm("pick")],
                    &[("keepdims", Attr::Int(0))],
                );
                // [g, cin_g, cout_g, k, k] → [g, cout_g, cin_g, k, k] → [C_out, cin_g, k, k]
                m.node(
                    "Transpose",
                    "",
                    &nm("pickT"),
                    &[&nm("pick")],
                    &[&nm("pickT")],
                    &[("perm", Attr::Ints(vec![0, 2, 1, 3, 4]))],
                );
                let ws_i: Vec<i64> = ws.iter().map(|&v| v as i64).collect();
                let wsh = ints(m, &nm("wshape"), &ws_i);
                m.node(
                    "Reshape",
                    "",
                    &nm("dW"),
                    &[&nm("pickT"), &wsh],
                    &[&nm("dW")],
                    &[],
                );
                nm("dW")
            };
            out.push((1, gw));
        }
        if n.input.len() > 2 && want(2) {
            let ax = ints(m, &nm("axes023"), &[0, 2, 3]);
            m.node(
                "ReduceSum",
                "",
                &nm("db"),
                &[dy, &ax],
                &[&nm("db")],
                &[("keepdims", Attr::Int(0))],
            );
            out.push((2, nm("db")));
        }
        Ok(())
    }
}

fn check_no_auto_pad(n: &NodeProto) -> Result<()> {
    match attr_s(n, "auto_pad").as_deref() {
        None | Some("NOTSET") => Ok(()),
        Some(other) => bail!(
            "{} with auto_pad = \"{other}\" has no backward here (export with explicit pads)",
            n.op_type
        ),
    }
}

/// ConvTranspose's output_padding that restores the rows a strided forward skipped.
fn output_padding(
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

/// Reads every external float initializer into the model, so that the training graphs and the
/// trained model stand alone wherever they are written.
fn inline_external_data(model: &mut ModelProto, dir: &Path) -> Result<()> {
    let g = model.graph.as_mut().context("model without a graph")?;
    for t in g.initializer.iter_mut() {
        if !crate::transform::is_external(t) {
            continue;
        }
        if t.data_type != onnx_protobuf::tensor_proto::DataType::FLOAT as i32 {
            bail!(
                "initializer \"{}\": external data of type {} (only float external data is read for training)",
                t.name,
                t.data_type
            );
        }
        let v = tensor_f32(t, dir)?;
        let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
        *t = crate::transform::make_tensor_f32(&t.name, &dims, &v);
    }
    Ok(())
}

/// The model with every `MaxPool` given its Indices output (the backward reads it).
pub fn with_maxpool_indices(model: &ModelProto) -> ModelProto {
    let mut m = model.clone();
    let g = m.graph.as_mut().unwrap();
    for (i, n) in g.node.iter_mut().enumerate() {
        if n.op_type == "MaxPool" && n.domain.is_empty() {
            if n.output.len() < 2 {
                n.output.push(String::new());
            }
            if n.output[1].is_empty() {
                n.output[1] = format!("{}/indices_{i}", n.output[0]);
            }
        }
    }
    m
}
