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

use super::backward::emit_backward;
use super::checkpoint::{Checkpoint, CkptTensor};
use super::loss::{emit_loss, target_input};
use super::{OptimizerKind, TrainConfig};
use crate::graph::{batch_dims, emit_forward, onnx_shape};
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

fn dims_i64(s: &[usize]) -> Vec<i64> {
    s.iter().map(|&d| d as i64).collect()
}

/// The training graph of `net` (see the module doc).
pub fn training_model(net: &Network, cfg: &TrainConfig) -> Result<ModelProto> {
    let infos = param_infos(net);
    if infos.is_empty() {
        anyhow::bail!(
            "spec: the network has no trainable parameters (add a linear, conv2d, ditac or prelu layer)"
        );
    }
    let mut m = ModelBuilder::new(&format!("{}_training", net.name));
    m.opset("com.microsoft", 1);
    m.input("x", ElemType::Float, &batch_dims(&net.input));
    target_input(net, cfg.loss, &mut m)?;
    for p in &infos {
        m.input(&p.key, ElemType::Float, &dims_i64(&p.shape));
    }
    for p in &infos {
        m.input(
            &format!("{}{BUFFER_SUFFIX}", p.key),
            ElemType::Float,
            &dims_i64(&p.shape),
        );
    }
    m.input(RESET, ElemType::Bool, &[1]);
    let fwd = emit_forward(net, None, &mut m, "x", "y")?;
    m.value("y", ElemType::Float, &batch_dims(net.output()));
    let (dy, prior) = emit_loss(net, &mut m, "y", cfg, true)?;
    let dy = dy.expect("loss gradient requested");
    let mut grads = emit_backward(net, &fwd, &mut m, &dy)?;
    // θ: (scaled) data gradient + prior gradient.
    for pg in prior {
        let key = &pg.key;
        let e = grads
            .iter_mut()
            .find(|(k, _)| k == key)
            .expect("θ has a data gradient");
        let mut data = e.1.clone();
        if pg.data_scale != 1.0 {
            let s =
                super::backward::scalar(&mut m, &format!("{key}.prior/data_scale"), pg.data_scale);
            let scaled = format!("{key}.prior/data_scaled");
            m.node("Mul", "", &scaled, &[&data, &s], &[&scaled], &[]);
            data = scaled;
        }
        let total = format!("{key}_grad");
        m.node(
            "Add",
            "",
            &format!("{key}.prior/add"),
            &[&data, &pg.grad],
            &[&total],
            &[],
        );
        e.1 = total;
    }
    for (i, (key, g)) in grads.iter().enumerate() {
        let want = format!("{key}_grad");
        if *g != want {
            m.node(
                "Identity",
                "",
                &format!("{key}/grad_identity"),
                &[g],
                &[&want],
                &[],
            );
        }
        let out = format!("{key}{OUT_SUFFIX}");
        m.node(
            "InPlaceAccumulatorV2",
            "com.microsoft",
            &format!("GradientAccumulator{}", i + 1),
            &[&format!("{key}{BUFFER_SUFFIX}"), &want, RESET],
            &[&out],
            &[],
        );
        m.output(&out, ElemType::Bool, &[1]);
    }
    Ok(m.build())
}

/// The eval graph: forward and loss, parameters as inputs.
pub fn eval_model(net: &Network, cfg: &TrainConfig) -> Result<ModelProto> {
    let mut m = ModelBuilder::new(&format!("{}_eval", net.name));
    m.input("x", ElemType::Float, &batch_dims(&net.input));
    target_input(net, cfg.loss, &mut m)?;
    for p in param_infos(net) {
        m.input(&p.key, ElemType::Float, &dims_i64(&p.shape));
    }
    emit_forward(net, None, &mut m, "x", "y")?;
    m.value("y", ElemType::Float, &batch_dims(net.output()));
    emit_loss(net, &mut m, "y", cfg, false)?;
    Ok(m.build())
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

/// Every artifact for `net` with initial `params`.
pub fn build(net: &Network, params: &Params, cfg: &TrainConfig) -> Result<Artifacts> {
    crate::graph::check_params(net, params)?;
    let infos = param_infos(net);
    let training = training_model(net, cfg)?;
    let eval = eval_model(net, cfg)?;
    let optimizer = optimizer_model(cfg);
    let tensors = infos
        .iter()
        .map(|p| {
            Ok(CkptTensor {
                name: p.key.clone(),
                dims: p.shape.iter().map(|&d| d as i64).collect(),
                data: params.get(&p.key)?.data.clone(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let checkpoint = Checkpoint {
        trainable: tensors,
        frozen: Vec::new(),
        ints: vec![("ditac.seed".into(), cfg.seed as i64)],
        floats: vec![
            (
                "ditac.lambda_reg_loss".into(),
                cfg.prior.lambda_reg_loss as f32,
            ),
            ("ditac.learning_rate".into(), cfg.lr),
        ],
        strings: vec![
            ("ditac.loss".into(), cfg.loss.as_str().into()),
            ("ditac.optimizer".into(), cfg.optimizer.as_str().into()),
            ("ditac.regulariser".into(), cfg.regulariser.as_str().into()),
        ],
    };
    Ok(Artifacts {
        training,
        eval,
        optimizer,
        checkpoint,
        params: infos,
    })
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
