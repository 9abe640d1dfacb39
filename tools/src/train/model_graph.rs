//! The training graphs of a model: the model's own nodes are the forward, and the backward is
//! written node by node in reverse by the gradient rules of [`super::gradient`]. The model is an
//! existing ONNX model with `ai.ditac` nodes (one exported from PyTorch and patched, say:
//! [`ModelNet::analyse`]) or a spec, written first as its forward ONNX graph
//! ([`ModelNet::from_spec`]). Shape-only ops (Shape, Constant, ...) carry no gradient; an op without
//! a rule on a gradient path is an error naming it.
//!
//! Broadcasting and layouts need each value's shape: [`ModelNet::analyse`] runs the model once on
//! a probe batch of [`PROBE_BATCH`] samples and records them (the batch axis is the only symbolic
//! one the input may have); a spec knows its shapes.

use super::artifacts::optimizer_model;
use super::artifacts::{param_infos, Artifacts, ParamInfo, BUFFER_SUFFIX, OUT_SUFFIX, RESET};
use super::checkpoint::{Checkpoint, CkptTensor};
use super::gradient::{self, ints, scalar, Shapes};
use super::loss::{emit_loss_for, layer_precision, net_priors, target_input_for, ThetaPrior};
use super::TrainConfig;
use crate::graph::{batch_dims, emit_forward};
use crate::model::{ElemType, ModelBuilder};
use crate::onnx::{declared_dims, declared_elem_type, default_opset, inline_external_data, DITAC};
use crate::params::{Params, Tensor as PTensor};
use crate::spec::{Layer, Network};
use crate::transform::{constant_tensor, is_ditac_node, node_attrs, node_label, tensor_f32};
use anyhow::{anyhow, bail, Context, Result};
use onnx_protobuf::{ModelProto, NodeProto, TensorProto};
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

/// A model prepared for training: its input and output, the shape of every value at the probe
/// batch, the trainable parameters with their values and the θ priors. From an ONNX model
/// ([`ModelNet::analyse`]) or from a spec ([`ModelNet::from_spec`]); both go through the same
/// gradient rules ([`super::gradient`]).
#[derive(Debug, Clone)]
pub struct ModelNet {
    /// The graph's name: the training graphs are `<name>_training` and `<name>_eval` (empty:
    /// `training` and `eval`).
    pub name: String,
    pub model: ModelProto,
    pub input: String,
    pub output: String,
    /// Per-sample shapes (without the batch axis).
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
    /// Every value's shape at the probe batch, and whether it is float.
    pub shapes: Shapes,
    pub params: Vec<ParamInfo>,
    pub init: Params,
    pub priors: Vec<ThetaPrior>,
    /// The default-domain opset of the model.
    pub opset: i64,
}

impl ModelNet {
    /// The forward ONNX graph of `net` (input `x`, output `y`, the parameters read by name) with
    /// its shapes at the probe batch; `init`: the initial parameters.
    pub fn from_spec(net: &Network, init: Params, cfg: &TrainConfig) -> Result<ModelNet> {
        for l in &net.layers {
            let explicit = l
                .attrs
                .as_ref()
                .is_some_and(|at| at.basis == ditac::BasisKind::Explicit);
            if matches!(l.layer, Layer::Ditac(_)) && explicit {
                bail!(
                    "spec: layer {} (ditac): basis \"explicit\" cannot be trained from a spec",
                    l.index
                );
            }
        }
        let params = param_infos(net);
        if params.is_empty() {
            bail!(
                "spec: the network has no trainable parameters (add a linear, conv2d, ditac or prelu layer)"
            );
        }
        let mut m = ModelBuilder::new(&net.name);
        m.input("x", ElemType::Float, &batch_dims(&net.input));
        m.output("y", ElemType::Float, &batch_dims(net.output()));
        let fwd = emit_forward(net, None, &mut m, "x", "y")?;
        let model = m.build();
        let batched = |s: &[usize]| -> Vec<usize> {
            std::iter::once(PROBE_BATCH)
                .chain(s.iter().copied())
                .collect()
        };
        let mut shapes = Shapes::new();
        shapes.insert(fwd.input.clone(), (true, batched(&net.input)));
        for (layer, nodes) in net.layers.iter().zip(&fwd.layers) {
            shapes.insert(nodes.output.clone(), (true, batched(&layer.out_shape)));
        }
        for p in &params {
            shapes.insert(p.key.clone(), (true, p.shape.clone()));
        }
        Ok(ModelNet {
            name: net.name.clone(),
            opset: default_opset(&model),
            model,
            input: fwd.input,
            output: fwd.output,
            input_shape: net.input.clone(),
            output_shape: net.output().to_vec(),
            shapes,
            params,
            init,
            priors: net_priors(net, cfg)?,
        })
    }

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
        let opset = default_opset(model);
        if opset < 13 {
            bail!("the model imports opset {opset}: training graphs need opset 13 or later");
        }
        let input = inputs[0].name.clone();
        let output = g.output[0].name.clone();
        // The input's per-sample shape: every axis but the first must be fixed.
        if declared_elem_type(inputs[0]).is_none() {
            bail!("input \"{input}\" is not a tensor");
        }
        let dims: Vec<Option<usize>> = declared_dims(inputs[0])
            .unwrap_or_default()
            .iter()
            .map(|d| d.fixed().filter(|&v| v > 0))
            .collect();
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
            if is_ditac_node(n) && n.op_type == DITAC {
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
            .filter(|n| is_ditac_node(n) && n.op_type == DITAC)
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
            name: String::new(),
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
        let mut m = if self.name.is_empty() {
            ModelBuilder::new(name)
        } else {
            ModelBuilder::new(&format!("{}_{name}", self.name))
        };
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
        let params: Vec<&str> = self.params.iter().map(|p| p.key.as_str()).collect();
        let g = self.model.graph.as_ref().context("model without a graph")?;
        let mut grads = gradient::emit_backward(
            &mut m,
            g,
            &self.shapes,
            self.opset,
            &params,
            &self.output,
            &dy,
        )?;
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
}

/// The sum of gradient contributions (one: itself).
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
