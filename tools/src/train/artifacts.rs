//! The four artifacts ONNX Runtime's training API consumes, written with the conventions of ONNX
//! Runtime's own generator (`onnxruntime.training.artifacts.generate_artifacts`):
//!
//! * `training_model.onnx`: inputs `x`, `target`, every parameter by name, one
//!   `<param>_grad.accumulation.buffer` per parameter and the bool `lazy_reset_grad`; outputs `loss`
//!   and one `<param>_grad.accumulation.out` per parameter. Forward, loss and the explicit backward
//!   (standard ops and `ai.ditac.DiTACGrad`); gradients accumulated with
//!   `com.microsoft.InPlaceAccumulatorV2` (the reset flag overwrites instead of adding).
//! * `eval_model.onnx`: inputs `x`, `target` and the parameters; output `loss`.
//! * `optimizer_model.onnx`: one `com.microsoft.AdamWOptimizer` (or `SGDOptimizerV2`) node over the
//!   sequences `params`, `gradients` (and moments).
//! * `checkpoint`: see [`super::checkpoint`].
//!
//! IR version 9 (ONNX Runtime 1.19 refuses > 10).

use super::checkpoint::Checkpoint;
use super::model_graph::ModelNet;
use super::{OptimizerKind, TrainConfig};
use crate::graph::onnx_shape;
use crate::model::{Attr, ElemType, ModelBuilder};
use crate::params::Params;
use crate::spec::Network;
use anyhow::{Context, Result};
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::{type_proto, Message, ModelProto, NodeProto, TypeProto, ValueInfoProto};
use std::path::Path;

/// The name of the accumulation reset input.
pub const RESET: &str = "lazy_reset_grad";
/// Suffixes of ORT's gradient buffers and accumulator outputs.
pub const BUFFER_SUFFIX: &str = "_grad.accumulation.buffer";
pub const OUT_SUFFIX: &str = "_grad.accumulation.out";

/// One trainable parameter: key and ONNX shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamInfo {
    pub key: String,
    pub shape: Vec<usize>,
}

impl ParamInfo {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The trainable parameters of `net`, in network order, with their ONNX shapes.
pub fn param_infos(net: &Network) -> Vec<ParamInfo> {
    net.layers
        .iter()
        .flat_map(|l| {
            l.params.iter().enumerate().map(move |(i, p)| ParamInfo {
                key: p.key.clone(),
                shape: onnx_shape(l, i),
            })
        })
        .collect()
}

/// The artifacts in memory.
pub struct Artifacts {
    pub training: ModelProto,
    pub eval: ModelProto,
    pub optimizer: ModelProto,
    pub checkpoint: Checkpoint,
    pub params: Vec<ParamInfo>,
}

fn seq_input(name: &str) -> ValueInfoProto {
    let mut t = type_proto::Tensor::new();
    t.elem_type = DataType::FLOAT as i32;
    let mut inner = TypeProto::new();
    inner.value = Some(type_proto::Value::TensorType(t));
    let mut s = type_proto::Sequence::new();
    s.elem_type = Some(inner).into();
    let mut tp = TypeProto::new();
    tp.value = Some(type_proto::Value::SequenceType(s));
    let mut vi = ValueInfoProto::new();
    vi.name = name.to_string();
    vi.type_ = Some(tp).into();
    vi
}

/// The optimizer graph (AdamW: `learning_rate`, `step`, `params`, `gradients`,
/// `first_order_moments`, `second_order_moments`; SGD: the first five).
pub fn optimizer_model(cfg: &TrainConfig) -> ModelProto {
    let mut m = ModelBuilder::new("optimizer");
    m.opset("com.microsoft", 1);
    m.input("learning_rate", ElemType::Float, &[1]);
    m.input("step", ElemType::Int64, &[1]);
    let flag = "updated_flag";
    match cfg.optimizer {
        OptimizerKind::AdamW | OptimizerKind::Adam => {
            m.node(
                "AdamWOptimizer",
                "com.microsoft",
                "AdamWOptimizer",
                &[
                    "learning_rate",
                    "step",
                    "params",
                    "gradients",
                    "first_order_moments",
                    "second_order_moments",
                ],
                &[flag],
                &[
                    ("alpha", Attr::Float(cfg.beta1)),
                    ("beta", Attr::Float(cfg.beta2)),
                    ("epsilon", Attr::Float(cfg.epsilon)),
                    ("weight_decay", Attr::Float(cfg.weight_decay)),
                    (
                        "adam_mode",
                        Attr::Int(if cfg.optimizer == OptimizerKind::Adam {
                            0
                        } else {
                            1
                        }),
                    ),
                    ("correct_bias", Attr::Int(1)),
                ],
            );
        }
        OptimizerKind::Sgd => {
            m.node(
                "SGDOptimizerV2",
                "com.microsoft",
                "SGDOptimizerV2",
                &["learning_rate", "params", "gradients"],
                &[flag],
                &[],
            );
        }
    }
    m.output(flag, ElemType::Bool, &[1]);
    let mut proto = m.build();
    let g = proto.graph.as_mut().expect("graph");
    let mut names = vec!["params", "gradients", "first_order_moments"];
    if cfg.optimizer != OptimizerKind::Sgd {
        names.push("second_order_moments");
    }
    for n in names {
        g.input.push(seq_input(n));
    }
    proto
}

/// Every artifact for `net` with initial `params`: the spec's forward graph through the same
/// writer as an ONNX model's ([`ModelNet::from_spec`]).
pub fn build(net: &Network, params: &Params, cfg: &TrainConfig) -> Result<Artifacts> {
    crate::graph::check_params(net, params)?;
    let mut a = ModelNet::from_spec(net, params.clone(), cfg)?.build(cfg)?;
    a.checkpoint.floats.insert(
        0,
        (
            "ditac.lambda_reg_loss".into(),
            cfg.prior.lambda_reg_loss as f32,
        ),
    );
    Ok(a)
}

/// Writes `bytes` to `path` through a temporary file and a rename, so that a failure never leaves a
/// half-written file (and never replaces a good one).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::output::Output::new(path)?.write_bytes(bytes)
}

/// The file names of the four artifacts, as [`write`] names them in its folder.
pub const FILES: [&str; 4] = [
    "training_model.onnx",
    "eval_model.onnx",
    "optimizer_model.onnx",
    "checkpoint",
];

/// Writes the four artifacts into `dir` (created if missing).
pub fn write(a: &Artifacts, dir: &Path) -> Result<()> {
    crate::output::output_folder(dir)?;
    let ser = |m: &ModelProto| m.write_to_bytes().expect("serialising a ModelProto");
    let [training, eval, optimizer, checkpoint] = FILES.map(|f| dir.join(f));
    write_atomic(&training, &ser(&a.training))?;
    write_atomic(&eval, &ser(&a.eval))?;
    write_atomic(&optimizer, &ser(&a.optimizer))?;
    write_atomic(&checkpoint, &a.checkpoint.to_bytes())?;
    Ok(())
}

/// The training graph for a plain inference session ("portable" path). ONNX Runtime's inference
/// builds have no `InPlaceAccumulatorV2` (a training-only kernel), so each accumulator becomes its
/// standard-op equivalent, `Where(lazy_reset_grad, grad, buffer + grad)`, and its output (named as
/// before) carries the accumulated gradient instead of a flag. Everything else is unchanged.
pub fn portable_training_model(training: &ModelProto) -> Result<ModelProto> {
    let mut m = training.clone();
    let g = m.graph.as_mut().context("training model without a graph")?;
    let mut nodes = Vec::with_capacity(g.node.len());
    let mut shapes = std::collections::HashMap::new();
    for i in &g.input {
        shapes.insert(i.name.clone(), i.type_.clone());
    }
    for n in std::mem::take(&mut g.node) {
        if n.op_type != "InPlaceAccumulatorV2" {
            nodes.push(n);
            continue;
        }
        let (buf, grad, reset) = (n.input[0].clone(), n.input[1].clone(), n.input[2].clone());
        let out = n.output[0].clone();
        let sum = format!("{out}/sum");
        let mut add = NodeProto::new();
        add.op_type = "Add".into();
        add.name = format!("{}/Add", n.name);
        add.input = vec![buf.clone(), grad.clone()];
        add.output = vec![sum.clone()];
        let mut wh = NodeProto::new();
        wh.op_type = "Where".into();
        wh.name = format!("{}/Where", n.name);
        wh.input = vec![reset, grad, sum];
        wh.output = vec![out.clone()];
        nodes.push(add);
        nodes.push(wh);
        if let Some(o) = g.output.iter_mut().find(|o| o.name == out) {
            o.type_ = shapes
                .get(&buf)
                .cloned()
                .context("accumulator buffer is not an input")?;
        }
    }
    g.node = nodes;
    Ok(m)
}
