//! Training graphs through ONNX Runtime with the plugin: the gradients of the training graph
//! against finite differences of the eval graph's loss (every parameter, θ included), the
//! checkpoint, and `ditac train`'s handling of bad input.
//!
//! Finite differences need a loss that is differentiable in the parameters: the DiTAC layers here
//! use `lut_size = 0` (the exact closed form; with a table the forward is piecewise constant and
//! DiTACGrad returns the reference's straight-through estimate instead). The eval graph is converted
//! to double precision for the differences ([`to_double`]: θ, P and λ stay float, as DiTAC takes a
//! float θ; ops without a double CPU kernel compute in float between casts, with a larger step), and
//! the differences are Richardson-extrapolated central differences. The comparison is per parameter
//! tensor, relative in the Euclidean norm, 1e-3.

mod support;

use ditac_tools::graph::init_params;
use ditac_tools::model::{ditac_attrs, Attr, ElemType, ModelBuilder, DITAC_DOMAIN};
use ditac_tools::params::Params;
use ditac_tools::spec::{Network, PriorSettings, Spec};
use ditac_tools::train::artifacts::{self, portable_training_model, ParamInfo};
use ditac_tools::train::checkpoint::Checkpoint;
use ditac_tools::train::data::{Dataset, Rng, Targets};
use ditac_tools::train::model_graph::{ModelNet, Trainable};
use ditac_tools::train::portable::PortableTrainer;
use ditac_tools::train::{LossKind, Regulariser, TrainConfig};
use onnx_protobuf::{type_proto, ModelProto, NodeProto};
use ort::session::SessionInputValue;
use ort::value::Tensor;
use protobuf::Message;
use support::*;

fn net(toml: &str) -> Network {
    Spec::from_toml(toml).unwrap().resolve().unwrap()
}

fn random_data(net: &Network, loss: LossKind, n: usize, seed: u64) -> Dataset {
    let mut r = Rng::new(seed);
    let xl: usize = net.input.iter().product();
    let x = (0..n * xl)
        .map(|_| (2.0 * r.uniform() - 1.0) as f32)
        .collect();
    let (y_shape, y) = match loss {
        LossKind::Mse => {
            let yl: usize = net.output().iter().product();
            (
                net.output().to_vec(),
                Targets::Values((0..n * yl).map(|_| r.normal() as f32).collect()),
            )
        }
        LossKind::CrossEntropy => (
            vec![],
            Targets::Classes((0..n).map(|_| r.below(net.output()[0]) as i64).collect()),
        ),
    };
    Dataset {
        n,
        x_shape: net.input.clone(),
        x,
        y_shape,
        y,
    }
}

/// Is this eval-graph tensor kept in float32 by [`to_double`]? (θ must be float for DiTAC; the
/// prior's P and λ go with it.)
fn keep_f32(name: &str) -> bool {
    name.ends_with("thetas") || name.ends_with(".precision") || name.ends_with(".prior/lambda")
}

/// Ops without a double kernel in ONNX Runtime's CPU provider: run in float32 between casts.
const F32_ONLY: [&str; 8] = [
    "Conv",
    "PRelu",
    "LeakyRelu",
    "Gelu",
    "Erf",
    "AveragePool",
    "GlobalAveragePool",
    "LayerNormalization",
];

/// The eval graph in double precision (finite differences then measure the graph, not float32
/// rounding): every float tensor but θ, P and λ becomes double; the prior term is cast to double;
/// ops without a double kernel compute in float32 between casts.
fn to_double(m: &ModelProto) -> ModelProto {
    use onnx_protobuf::tensor_proto::DataType;
    let mut m = m.clone();
    let g = m.graph.as_mut().unwrap();
    let (f, d) = (DataType::FLOAT as i32, DataType::DOUBLE as i32);
    for v in g
        .input
        .iter_mut()
        .chain(g.output.iter_mut())
        .chain(g.value_info.iter_mut())
    {
        if keep_f32(&v.name) {
            continue;
        }
        if let Some(type_proto::Value::TensorType(t)) =
            v.type_.as_mut().and_then(|t| t.value.as_mut())
        {
            if t.elem_type == f {
                t.elem_type = d;
            }
        }
    }
    for t in g.initializer.iter_mut() {
        if t.data_type == f && !keep_f32(&t.name) {
            t.data_type = d;
            t.raw_data = t
                .raw_data
                .chunks_exact(4)
                .flat_map(|c| (f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64).to_le_bytes())
                .collect();
        }
    }
    let cast = |name: &str, input: &str, output: &str, to: i32| {
        let mut n = NodeProto::new();
        n.op_type = "Cast".into();
        n.name = name.into();
        n.input = vec![input.into()];
        n.output = vec![output.into()];
        let mut a = onnx_protobuf::AttributeProto::new();
        a.name = "to".into();
        a.type_ = onnx_protobuf::attribute_proto::AttributeType::INT.into();
        a.i = to as i64;
        n.attribute.push(a);
        n
    };
    let mut nodes = Vec::new();
    for mut n in std::mem::take(&mut g.node) {
        if n.output[0].ends_with(".prior/term") {
            let o = n.output[0].clone();
            n.output[0] = format!("{o}_f32");
            nodes.push(n);
            nodes.push(cast(&format!("{o}/cast"), &format!("{o}_f32"), &o, d));
        } else if F32_ONLY.contains(&n.op_type.as_str()) {
            for (i, inp) in n.input.iter_mut().enumerate() {
                let c = format!("{inp}/f32_{}_{i}", n.name);
                nodes.push(cast(&c, inp, &c, f));
                *inp = c;
            }
            let o = n.output[0].clone();
            n.output[0] = format!("{o}_f32");
            nodes.push(n);
            nodes.push(cast(&format!("{o}/cast"), &format!("{o}_f32"), &o, d));
        } else {
            nodes.push(n);
        }
    }
    g.node = nodes;
    m
}

/// The double eval graph's loss at parameter values `vals` on all of `data`.
fn eval_loss(
    s: &mut ort::session::Session,
    data: &Dataset,
    infos: &[ParamInfo],
    vals: &[Vec<f64>],
) -> f64 {
    let mut xs = vec![data.n];
    xs.extend(&data.x_shape);
    let x: Vec<f64> = data.x.iter().map(|&v| v as f64).collect();
    let mut inputs: Vec<(String, SessionInputValue)> =
        vec![("x".into(), Tensor::from_array((xs, x)).unwrap().into())];
    let t: SessionInputValue = match &data.y {
        Targets::Values(v) => {
            let mut ys = vec![data.n];
            ys.extend(&data.y_shape);
            let v: Vec<f64> = v.iter().map(|&v| v as f64).collect();
            Tensor::from_array((ys, v)).unwrap().into()
        }
        Targets::Classes(c) => Tensor::from_array((vec![data.n], c.clone()))
            .unwrap()
            .into(),
    };
    inputs.push(("target".into(), t));
    for (p, v) in infos.iter().zip(vals) {
        let value: SessionInputValue = if keep_f32(&p.key) {
            let v: Vec<f32> = v.iter().map(|&v| v as f32).collect();
            Tensor::from_array((p.shape.clone(), v)).unwrap().into()
        } else {
            Tensor::from_array((p.shape.clone(), v.clone()))
                .unwrap()
                .into()
        };
        inputs.push((p.key.clone(), value));
    }
    let out = s.run(inputs).unwrap();
    out["loss"].try_extract_tensor::<f64>().unwrap().1[0]
}

/// Training-graph gradients vs central finite differences of the (double) eval graph, every
/// parameter tensor: relative difference in the Euclidean norm below `tol`.
fn check_gradients(toml: &str, loss: LossKind, lambda: f32, n: usize, tol: f64, step: f64) {
    let net = net(toml);
    let params = init_params(&net, 11).unwrap();
    // The intended regulariser: its θ-gradient is the derivative of the loss.
    let cfg = TrainConfig {
        loss,
        prior: PriorSettings {
            lambda_reg_loss: lambda as f64,
            ..PriorSettings::default()
        },
        regulariser: Regulariser::Intended,
        ..TrainConfig::default()
    };
    let a = artifacts::build(&net, &params, &cfg).unwrap();
    let data = random_data(&net, loss, n, 5);
    check_artifact_gradients(&a, &params, &cfg, &data, tol, step);
}

/// [`check_gradients`] for built artifacts.
fn check_artifact_gradients(
    a: &artifacts::Artifacts,
    params: &Params,
    cfg: &TrainConfig,
    data: &Dataset,
    tol: f64,
    step: f64,
) {
    let n = data.n;
    let idx: Vec<usize> = (0..n).collect();
    let train = session(
        &portable_training_model(&a.training)
            .unwrap()
            .write_to_bytes()
            .unwrap(),
    )
    .unwrap();
    let mut tr = PortableTrainer::new(train, a.params.clone(), params, cfg, n, data).unwrap();
    let l_train = tr.forward_backward(data, &idx).unwrap() as f64;
    let grads = tr.gradients().to_vec();

    let mut eval = session(&to_double(&a.eval).write_to_bytes().unwrap()).unwrap();
    let has_f32_ops = a
        .eval
        .graph
        .node
        .iter()
        .any(|n| F32_ONLY.contains(&n.op_type.as_str()));
    let mut vals: Vec<Vec<f64>> = a
        .params
        .iter()
        .map(|p| {
            let t = params.get(&p.key).unwrap();
            t.data.iter().map(|&v| v as f64).collect()
        })
        .collect();
    let l0 = eval_loss(&mut eval, data, &a.params, &vals);
    assert!(
        (l0 - l_train).abs() <= 1e-4 * l0.abs().max(1.0),
        "eval {l0} vs train {l_train}"
    );
    for (pi, p) in a.params.iter().enumerate() {
        let f32_param = keep_f32(&p.key);
        let mut fd = vec![0.0f64; p.len()];
        for (j, fdj) in fd.iter_mut().enumerate() {
            let orig = vals[pi][j];
            // θ is fed as float32: the step actually taken is the float32 difference.
            // Ops computed in float32 between casts need a larger step to sit above their rounding.
            let h = if f32_param || has_f32_ops { step } else { 1e-5 };
            let round = |v: f64| if f32_param { v as f32 as f64 } else { v };
            let mut central = |h: f64| {
                let (up, dn) = (round(orig + h), round(orig - h));
                vals[pi][j] = up;
                let lu = eval_loss(&mut eval, data, &a.params, &vals);
                vals[pi][j] = dn;
                let ld = eval_loss(&mut eval, data, &a.params, &vals);
                vals[pi][j] = orig;
                (lu - ld) / (up - dn)
            };
            // Richardson extrapolation of two central differences: O(h⁴).
            let (d1, d2) = (central(h), central(h / 2.0));
            *fdj = (4.0 * d2 - d1) / 3.0;
        }
        let g = &grads[pi];
        let num: f64 = fd
            .iter()
            .zip(g)
            .map(|(a, &b)| (a - b as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let den: f64 = fd.iter().map(|a| a * a).sum::<f64>().sqrt();
        let rel = num / den.max(1e-12);
        eprintln!(
            "{:>14}: |g| = {den:.4e}, relative difference {rel:.2e}",
            p.key
        );
        assert!(
            rel < tol,
            "{}: training-graph gradient {:?} vs finite differences {:?} (relative {rel:.2e})",
            p.key,
            &g[..g.len().min(6)],
            &fd[..fd.len().min(6)]
        );
    }
}

const MLP: &str = r#"
input = 2
[[layers]]
type = "linear"
out = 5
[[layers]]
type = "ditac"
a = -3.0
b = 3.0
tess = 6
lut_size = 0
[[layers]]
type = "linear"
out = 4
[[layers]]
type = "ditac"
a = -3.0
b = 3.0
tess = 8
lut_size = 0
per_channel = true
variant = "ge"
[[layers]]
type = "linear"
out = 4
[[layers]]
type = "gelu"
[[layers]]
type = "linear"
out = 2
"#;

#[test]
fn gradients_match_finite_differences_mlp_mse() {
    check_gradients(MLP, LossKind::Mse, 0.5, 16, 1e-3, 1e-2);
}

const KINKED: &str = r#"
input = 3
[[layers]]
type = "linear"
out = 4
[[layers]]
type = "prelu"
num_parameters = 4
[[layers]]
type = "linear"
out = 4
[[layers]]
type = "leaky_relu"
slope = 0.1
[[layers]]
type = "linear"
out = 4
[[layers]]
type = "relu"
[[layers]]
type = "linear"
out = 4
[[layers]]
type = "tanh"
[[layers]]
type = "linear"
out = 4
[[layers]]
type = "sigmoid"
[[layers]]
type = "linear"
out = 3
"#;

#[test]
fn gradients_match_finite_differences_kinked_cross_entropy() {
    check_gradients(KINKED, LossKind::CrossEntropy, 0.0, 8, 1e-3, 1e-3);
}

const CONV: &str = r#"
input = [2, 5, 5]
[[layers]]
type = "conv2d"
out = 3
kernel = 3
stride = 2
padding = 1
[[layers]]
type = "ditac"
a = -3.0
b = 3.0
tess = 5
lut_size = 0
per_channel = true
[[layers]]
type = "flatten"
[[layers]]
type = "linear"
out = 3
"#;

#[test]
fn gradients_match_finite_differences_conv_cross_entropy() {
    check_gradients(CONV, LossKind::CrossEntropy, 0.3, 4, 1e-3, 1e-3);
}

#[test]
fn checkpoint_round_trip_and_portable_model() {
    let net = net(MLP);
    let params = init_params(&net, 3).unwrap();
    let a = artifacts::build(&net, &params, &TrainConfig::default()).unwrap();
    let bytes = a.checkpoint.to_bytes();
    let back = Checkpoint::from_bytes(&bytes).unwrap();
    assert_eq!(back, a.checkpoint);
    let p: Params = back.params();
    for info in &a.params {
        assert_eq!(
            p.get(&info.key).unwrap().data,
            params.get(&info.key).unwrap().data
        );
        assert_eq!(p.get(&info.key).unwrap().shape, info.shape);
    }
    // ONNX Runtime's generator's own checkpoint reads too (tests/data/ort-training-artifacts).
    let ex = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/ort-training-artifacts/checkpoint");
    let c = Checkpoint::from_bytes(&std::fs::read(&ex).unwrap()).unwrap();
    let names: Vec<_> = c.trainable.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]);
    assert_eq!(c.trainable[0].dims, vec![8, 2]);
    // The training model follows ORT's naming conventions.
    let g = a.training.graph.as_ref().unwrap();
    let ins: Vec<_> = g.input.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(ins[..3], ["x", "target", "0.weight"]);
    assert!(ins.contains(&"1.thetas_grad.accumulation.buffer"));
    assert_eq!(*ins.last().unwrap(), "lazy_reset_grad");
    assert_eq!(g.output[0].name, "loss");
    assert!(g.node.iter().any(|n| n.op_type == "DiTACGrad"));
    assert_eq!(a.training.ir_version, 9);
}

// ------------------------------------------------------------------------------------------------
// Training graphs of ONNX models (`train-artifacts MODEL.onnx`): every covered op's backward

/// Random float initializer.
fn rand_init(m: &mut ModelBuilder, r: &mut Rng, name: &str, dims: &[usize], scale: f64) {
    let n: usize = dims.iter().product();
    let v: Vec<f32> = (0..n).map(|_| (scale * r.normal()) as f32).collect();
    m.initializer_f32(name, dims, &v);
}

fn exact_ditac() -> Vec<(&'static str, Attr)> {
    let at = ditac::Attrs {
        a: -3.0,
        b: 3.0,
        tess: 6,
        lut_size: 0,
        ..ditac::Attrs::default()
    };
    ditac_attrs(&at)
}

/// Builds artifacts for `model` (every weight trainable) and checks every gradient against
/// finite differences of its eval graph.
fn check_model(
    model: ModelProto,
    loss: LossKind,
    x_shape: &[usize],
    out: &[usize],
    n: usize,
    step: f64,
    tol: f64,
) {
    let cfg = TrainConfig {
        loss,
        regulariser: Regulariser::Intended,
        ..TrainConfig::default()
    };
    let mut open = |b: &[u8]| -> anyhow::Result<ort::session::Session> { Ok(session(b)?) };
    let mn = ModelNet::analyse(
        &model,
        std::path::Path::new("."),
        Trainable::All,
        &cfg,
        &mut open,
    )
    .unwrap();
    assert_eq!(mn.output_shape, out);
    let a = mn.build(&cfg).unwrap();
    let mut r = Rng::new(9);
    let xl: usize = x_shape.iter().product();
    let y = match loss {
        LossKind::Mse => Targets::Values((0..n * out[0]).map(|_| r.normal() as f32).collect()),
        LossKind::CrossEntropy => {
            Targets::Classes((0..n).map(|_| r.below(out[0]) as i64).collect())
        }
    };
    let data = Dataset {
        n,
        x_shape: x_shape.to_vec(),
        x: (0..n * xl).map(|_| (1.5 * r.normal()) as f32).collect(),
        y_shape: if loss == LossKind::Mse {
            out.to_vec()
        } else {
            vec![]
        },
        y,
    };
    check_artifact_gradients(&a, &mn.init, &cfg, &data, tol, step);
}

#[test]
fn model_gradients_tabular_ops() {
    // MatMul + Add (bias), Reshape/Transpose/Flatten/Unsqueeze/Squeeze/Identity, DiTAC (exact),
    // Gemm (transB), LayerNorm,
    // Sigmoid, Mul/Sub/Div with broadcasting, Tanh, Erf, Gelu, Gemm, MSE + prior.
    let mut r = Rng::new(3);
    let mut m = ModelBuilder::new("tabular");
    m.opset("", 20);
    m.input("input", ElemType::Float, &[-1, 6]);
    m.output("out", ElemType::Float, &[-1, 3]);
    rand_init(&mut m, &mut r, "fc1.weight", &[6, 5], 0.5);
    rand_init(&mut m, &mut r, "fc1.bias", &[5], 0.3);
    rand_init(&mut m, &mut r, "act.thetas", &[5], 0.8);
    rand_init(&mut m, &mut r, "fc2.weight", &[4, 5], 0.5);
    rand_init(&mut m, &mut r, "fc2.bias", &[4], 0.3);
    rand_init(&mut m, &mut r, "ln.weight", &[4], 0.5);
    rand_init(&mut m, &mut r, "ln.bias", &[4], 0.3);
    rand_init(&mut m, &mut r, "fc3.weight", &[3, 4], 0.5);
    rand_init(&mut m, &mut r, "fc3.bias", &[3], 0.3);
    m.initializer_f32("scale", &[1, 4], &[0.5, -1.5, 2.0, 1.0]);
    m.initializer_f32("shift", &[4], &[0.1, 0.2, -0.3, 0.0]);
    m.initializer_f32("two", &[], &[2.0]);
    m.initializer_i64("shape3", &[3], &[-1, 5, 1]);
    m.node("MatMul", "", "mm", &["input", "fc1.weight"], &["h0"], &[]);
    m.node("Add", "", "bias", &["h0", "fc1.bias"], &["h1"], &[]);
    m.node("Reshape", "", "rs", &["h1", "shape3"], &["h2"], &[]);
    m.node(
        "Transpose",
        "",
        "tr",
        &["h2"],
        &["h3"],
        &[("perm", Attr::Ints(vec![0, 2, 1]))],
    );
    m.node("Flatten", "", "fl", &["h3"], &["h4a"], &[]);
    m.initializer_i64("axis1", &[1], &[1]);
    m.node("Unsqueeze", "", "unsq", &["h4a", "axis1"], &["h4b"], &[]);
    m.node("Squeeze", "", "squeeze", &["h4b", "axis1"], &["h4c"], &[]);
    m.node("Identity", "", "id", &["h4c"], &["h4"], &[]);
    m.node(
        "DiTAC",
        DITAC_DOMAIN,
        "act",
        &["h4", "act.thetas"],
        &["h5"],
        &exact_ditac(),
    );
    m.node(
        "Gemm",
        "",
        "fc2",
        &["h5", "fc2.weight", "fc2.bias"],
        &["h6"],
        &[("transB", Attr::Int(1))],
    );
    m.node(
        "LayerNormalization",
        "",
        "ln",
        &["h6", "ln.weight", "ln.bias"],
        &["h7"],
        &[],
    );
    m.node("Sigmoid", "", "sig", &["h7"], &["h8"], &[]);
    m.node("Mul", "", "mul", &["h8", "scale"], &["h9"], &[]);
    m.node("Sub", "", "sub", &["h9", "shift"], &["h10"], &[]);
    m.node("Tanh", "", "tanh", &["h10"], &["h11"], &[]);
    m.node("Div", "", "div", &["h11", "two"], &["h12"], &[]);
    m.node("Erf", "", "erf", &["h12"], &["h13"], &[]);
    m.node("Mul", "", "sq", &["h13", "h7"], &["h14"], &[]);
    m.node("Gelu", "", "gelu", &["h14"], &["h15"], &[]);
    m.node(
        "Gemm",
        "",
        "fc3",
        &["h15", "fc3.weight", "fc3.bias"],
        &["out"],
        &[("transB", Attr::Int(1)), ("alpha", Attr::Float(0.7))],
    );
    check_model(m.build(), LossKind::Mse, &[6], &[3], 5, 1e-3, 1e-3);
}

#[test]
fn model_gradients_conv_ops() {
    // Conv (strided), depthwise Conv, per-channel DiTAC, grouped Conv, AveragePool,
    // GlobalAveragePool, Flatten, Gemm, cross-entropy. Conv has no double kernel: its outputs are
    // rounded to float between casts.
    let mut r = Rng::new(4);
    let mut m = ModelBuilder::new("cnn");
    m.opset("", 20);
    m.input("image", ElemType::Float, &[-1, 2, 9, 9]);
    m.output("logits", ElemType::Float, &[-1, 3]);
    rand_init(&mut m, &mut r, "c1.weight", &[4, 2, 3, 3], 0.4);
    rand_init(&mut m, &mut r, "c1.bias", &[4], 0.2);
    rand_init(&mut m, &mut r, "dw.weight", &[4, 1, 3, 3], 0.4);
    rand_init(&mut m, &mut r, "act.thetas", &[4, 5], 0.8);
    rand_init(&mut m, &mut r, "g.weight", &[6, 2, 1, 1], 0.5);
    rand_init(&mut m, &mut r, "g.bias", &[6], 0.2);
    rand_init(&mut m, &mut r, "fc.weight", &[3, 6], 0.5);
    rand_init(&mut m, &mut r, "fc.bias", &[3], 0.2);
    let conv = |k: i64, s: i64, p: i64, g: i64| {
        vec![
            ("kernel_shape", Attr::Ints(vec![k, k])),
            ("strides", Attr::Ints(vec![s, s])),
            ("pads", Attr::Ints(vec![p, p, p, p])),
            ("group", Attr::Int(g)),
        ]
    };
    m.node(
        "Conv",
        "",
        "c1",
        &["image", "c1.weight", "c1.bias"],
        &["a1"],
        &conv(3, 2, 1, 1),
    );
    m.node(
        "Conv",
        "",
        "dw",
        &["a1", "dw.weight"],
        &["a2"],
        &conv(3, 1, 1, 4),
    );
    m.node(
        "DiTAC",
        DITAC_DOMAIN,
        "act",
        &["a2", "act.thetas"],
        &["a3"],
        &exact_ditac(),
    );
    m.node(
        "Conv",
        "",
        "g",
        &["a3", "g.weight", "g.bias"],
        &["a5"],
        &conv(1, 1, 0, 2),
    );
    m.node(
        "AveragePool",
        "",
        "ap",
        &["a5"],
        &["a7"],
        &[
            ("kernel_shape", Attr::Ints(vec![2, 2])),
            ("strides", Attr::Ints(vec![2, 2])),
        ],
    );
    m.node("GlobalAveragePool", "", "gap", &["a7"], &["a8"], &[]);
    m.node("Flatten", "", "fl", &["a8"], &["a9"], &[]);
    m.node(
        "Gemm",
        "",
        "fc",
        &["a9", "fc.weight", "fc.bias"],
        &["logits"],
        &[("transB", Attr::Int(1))],
    );
    // Three float-rounded Convs in the chain put the differences' floor near 1e-3 (measured: 3e-4
    // to 1e-3 per tensor at step 1e-3), hence 3e-3 here.
    check_model(
        m.build(),
        LossKind::CrossEntropy,
        &[2, 9, 9],
        &[3],
        4,
        1e-3,
        3e-3,
    );
}

#[test]
fn model_gradients_pooling_kinks() {
    // MaxPool (the arg-max scatter) and Relu, in double precision end to end (no float-only op):
    // random data puts no point at a kink or a tie.
    let mut r = Rng::new(5);
    let mut m = ModelBuilder::new("pool");
    m.opset("", 20);
    m.input("x", ElemType::Float, &[-1, 2, 6, 6]);
    m.output("y", ElemType::Float, &[-1, 2]);
    rand_init(&mut m, &mut r, "fc.weight", &[18, 2], 0.5);
    rand_init(&mut m, &mut r, "mix.weight", &[6, 6], 0.5);
    m.initializer_f32("mix.bias", &[1, 2, 1, 1], &[0.1, -0.2]);
    // A batched MatMul ([N, 2, 6, 6] × [6, 6]) and a broadcast bias feed the pooling.
    m.node("MatMul", "", "mix", &["x", "mix.weight"], &["h"], &[]);
    m.node("Add", "", "shift", &["h", "mix.bias"], &["s"], &[]);
    m.node(
        "MaxPool",
        "",
        "mp",
        &["s"],
        &["p"],
        &[
            ("kernel_shape", Attr::Ints(vec![3, 3])),
            ("strides", Attr::Ints(vec![2, 2])),
            ("pads", Attr::Ints(vec![1, 1, 1, 1])),
        ],
    );
    m.node("Relu", "", "relu", &["p"], &["q"], &[]);
    m.node("Flatten", "", "fl", &["q"], &["f"], &[]);
    m.node("MatMul", "", "fc", &["f", "fc.weight"], &["y"], &[]);
    check_model(m.build(), LossKind::Mse, &[2, 6, 6], &[2], 3, 1e-5, 1e-3);
}

#[test]
fn model_without_a_backward_names_the_op() {
    let mut m = ModelBuilder::new("bad");
    m.opset("", 20);
    m.input("x", ElemType::Float, &[-1, 4]);
    m.output("y", ElemType::Float, &[-1, 4]);
    m.initializer_f32("t.thetas", &[5], &[0.1, 0.2, 0.3, 0.1, 0.0]);
    m.node(
        "DiTAC",
        DITAC_DOMAIN,
        "act",
        &["x", "t.thetas"],
        &["h"],
        &exact_ditac(),
    );
    m.node("Softsign", "", "odd", &["h"], &["y"], &[]);
    let cfg = TrainConfig::default();
    let mut open = |b: &[u8]| -> anyhow::Result<ort::session::Session> { Ok(session(b)?) };
    let mn = ModelNet::analyse(
        &m.build(),
        std::path::Path::new("."),
        Trainable::Theta,
        &cfg,
        &mut open,
    )
    .unwrap();
    let err = format!("{:#}", mn.build(&cfg).err().unwrap());
    assert!(
        err.contains("node 'odd' (Softsign)") && err.contains("op Softsign has no backward"),
        "{err}"
    );
    // θ-only training of a model without DiTAC says what to do.
    let mut m = ModelBuilder::new("gelu");
    m.opset("", 20);
    m.input("x", ElemType::Float, &[-1, 4]);
    m.output("y", ElemType::Float, &[-1, 4]);
    m.node("Gelu", "", "g", &["x"], &["y"], &[]);
    let err = ModelNet::analyse(
        &m.build(),
        std::path::Path::new("."),
        Trainable::Theta,
        &cfg,
        &mut open,
    )
    .err()
    .unwrap();
    assert!(
        format!("{err:#}").contains("patch DiTAC in first"),
        "{err:#}"
    );
}

// ------------------------------------------------------------------------------------------------
// `--regulariser reference`: θ's gradient as the authors' code applies it

/// θ's gradient from the training graph of a one-layer network (the oracle config's DiTAC, with its
/// prior settings and θ) on the oracle's points, with the MSE target chosen so that dloss/dy = 1 at
/// every point: the reference vectors' `theta_grad_ones` setting (`act.backward(ones)`).
fn theta_grad_ones(
    o: &serde_json::Value,
    regulariser: Regulariser,
    lambda: Option<f64>,
) -> Vec<f32> {
    let c = &o["config"];
    let f = |k: &str| support::num(&c[k]);
    let spec = format!(
        "input = 1\n[[layers]]\ntype = \"ditac\"\na = {:?}\nb = {:?}\ntess = {}\n\
         lambda_smooth = {:?}\nlambda_var = {:?}\nlambda_smooth_init = {:?}\nlambda_var_init = {:?}\n\
         lambda_reg_loss = {:?}\n",
        f("a"),
        f("b"),
        c["tess"].as_i64().unwrap(),
        f("lambda_smooth"),
        f("lambda_var"),
        f("lambda_smooth_init"),
        f("lambda_var_init"),
        lambda.unwrap_or(f("lambda_reg_loss")),
    );
    let net = net(&spec);
    let theta = support::vec1_f32(&o["theta"]);
    let mut params = Params::default();
    params.insert(
        "0.thetas".to_string(),
        ditac_tools::params::Tensor::new(vec![theta.len()], theta),
    );
    let x = support::vec1_f32(&o["points"]["x"]);
    let n = x.len();
    // y from the inference model, then target = y − n/2: 2(y − target)/n = 1.
    let model = ditac_tools::graph::inference_model(&net, &params).unwrap();
    let mut s = session(&model.to_bytes()).unwrap();
    let out = s
        .run(ort::inputs!["x" => Tensor::from_array((vec![n, 1], x.clone())).unwrap()])
        .unwrap();
    let y = out["y"].try_extract_tensor::<f32>().unwrap().1.to_vec();
    let half = n as f32 / 2.0;
    let data = Dataset {
        n,
        x_shape: vec![1],
        x,
        y_shape: vec![1],
        y: Targets::Values(y.iter().map(|v| v - half).collect()),
    };
    let cfg = TrainConfig {
        regulariser,
        ..TrainConfig::default()
    };
    let a = artifacts::build(&net, &params, &cfg).unwrap();
    let train = session(
        &portable_training_model(&a.training)
            .unwrap()
            .write_to_bytes()
            .unwrap(),
    )
    .unwrap();
    let mut tr = PortableTrainer::new(train, a.params.clone(), &params, &cfg, n, &data).unwrap();
    let idx: Vec<usize> = (0..n).collect();
    tr.forward_backward(&data, &idx).unwrap();
    tr.gradients()[0].clone()
}

fn rel_diff(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt();
    num / b.iter().map(|y| y * y).sum::<f64>().sqrt().max(1e-30)
}

#[test]
fn reference_regulariser_gives_the_authors_theta_gradient() {
    // Every oracle config whose basis the spec can build (t20's qr basis is BLAS-dependent in the
    // reference; it needs an explicit basis, which specs cannot carry).
    for name in [
        "default_t10_m0.5_2",
        "t4_m3_3",
        "t10_m3_3",
        "t10_m3_3_identity",
    ] {
        let o = support::case(name).json;
        let c = &o["config"];
        let lambda = support::num(&c["lambda_reg_loss"]);
        let theta: Vec<f32> = support::vec1_f32(&o["theta"]);
        let d = theta.len();
        let got: Vec<f64> = theta_grad_ones(&o, Regulariser::Reference, None)
            .iter()
            .map(|&v| v as f64)
            .collect();
        // Against the authors' own gradient.
        let want: Vec<f64> = support::vec1_f32(&o["theta_grad_ones"]["reference"])
            .iter()
            .map(|&v| v as f64)
            .collect();
        let e_ref = rel_diff(&got, &want);
        // Against the formula d·g + 2λ·θ⊙colsum(P), with our data gradient g (the graph without
        // a prior) and our P from the config's λ_smooth, λ_var.
        let g: Vec<f64> = theta_grad_ones(&o, Regulariser::Intended, Some(0.0))
            .iter()
            .map(|&v| v as f64)
            .collect();
        let b = ditac::basis::build(
            c["tess"].as_i64().unwrap() as usize,
            true,
            ditac::BasisKind::Qr,
        )
        .unwrap();
        let p = ditac::prior::precision_matrix(
            &b,
            support::num(&c["lambda_smooth"]),
            support::num(&c["lambda_var"]),
        );
        let formula = ditac::prior::reference_quirk_grad(&g, &theta, &p, lambda);
        let e_formula = rel_diff(&got, &formula);
        // And it is not the intended gradient (the option changes something).
        let intended: Vec<f64> = theta_grad_ones(&o, Regulariser::Intended, None)
            .iter()
            .map(|&v| v as f64)
            .collect();
        let e_intended = rel_diff(&intended, &want);
        eprintln!(
            "{name} (d = {d}): vs theta_grad_ones.reference {e_ref:.2e}, vs formula {e_formula:.2e}; \
             intended vs reference {e_intended:.2e}"
        );
        assert!(e_ref < 1e-5, "{name}: {got:?} vs the authors' {want:?}");
        assert!(
            e_formula < 1e-5,
            "{name}: {got:?} vs the formula {formula:?}"
        );
        assert!(e_intended > 0.1, "{name}: intended {intended:?}");
    }
}

// ------------------------------------------------------------------------------------------------
// `ditac train` with bad input

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("ditac-training-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn plugin_args() -> Vec<String> {
    let ort = ort_library(&ort_newest()).display().to_string();
    vec![
        "--plugin".into(),
        plugin_path().display().to_string(),
        "--ort".into(),
        ort,
        "--quiet".into(),
    ]
}

fn train(
    spec: &str,
    data: &std::path::Path,
    out: &std::path::Path,
    extra: &[&str],
) -> (i32, String, String) {
    let mut args: Vec<String> = vec![
        "train".into(),
        spec.into(),
        "--data".into(),
        data.display().to_string(),
        "-o".into(),
        out.display().to_string(),
    ];
    args.extend(plugin_args());
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    ditac(&refs)
}

fn save(d: &Dataset, name: &str) -> std::path::PathBuf {
    let p = tmp(name);
    d.save_npz(&p).unwrap();
    p
}

#[test]
fn bad_input_says_where_and_keeps_the_last_good_model() {
    let spec = "models/regression/spec.toml";
    let net = Spec::load(&repo_root().join(spec))
        .unwrap()
        .resolve()
        .unwrap();
    let good = save(&random_data(&net, LossKind::Mse, 200, 1), "good.npz");
    let model = tmp("model.onnx");

    // A good run writes the model and the loss curve.
    let (code, out, err) = train(spec, &good, &model, &["--steps", "20", "--batch", "10"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("engine: portable"), "{out}");
    assert!(tmp("model.loss.svg").exists());
    let before = std::fs::read(&model).unwrap();

    // Wrong shape.
    let mut wrong = random_data(&net, LossKind::Mse, 50, 2);
    wrong.x_shape = vec![3];
    wrong.x = vec![0.5; 150];
    let p = save(&wrong, "wrong.npz");
    let (code, _, err) = train(spec, &p, &model, &["--steps", "5"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("x has shape [50, 3]") && err.contains("[N, 2]"),
        "{err}"
    );

    // NaN in the data: the row and column are named.
    let mut nan = random_data(&net, LossKind::Mse, 50, 3);
    nan.x[2 * 17 + 1] = f32::NAN;
    let p = save(&nan, "nan.npz");
    let (code, _, err) = train(spec, &p, &model, &["--steps", "5"]);
    assert_eq!(code, 2);
    assert!(err.contains("x[17, 1]") && err.contains("NaN"), "{err}");

    // Class labels out of range for cross-entropy.
    let gspec = "models/gmm/spec.toml";
    let (code, _, err) = train(gspec, &good, &model, &["--loss", "cross-entropy"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("y has shape [200, 1]") || err.contains("class index"),
        "{err}"
    );

    // A diverging run: an error naming the step; the last good model is not overwritten.
    let (code, _, err) = train(
        spec,
        &good,
        &model,
        &["--steps", "200", "--batch", "10", "--lr", "1e12"],
    );
    assert_eq!(code, 2, "{err}");
    // It shows as a loss that diverged, or as a θ grown too steep for the flow (ops/README
    // § Numerical range), whichever comes first.
    assert!(
        err.contains("at step")
            && (err.contains("diverged")
                || err.contains("expected finite values and |slope| ≤ 64"))
            && err.contains("not overwritten"),
        "{err}"
    );
    assert_eq!(std::fs::read(&model).unwrap(), before);

    // Specs the graph builder cannot differentiate.
    let nothing = tmp("nothing.toml");
    std::fs::write(&nothing, "input = 2\n[[layers]]\ntype = \"relu\"\n").unwrap();
    let (code, _, err) = train(nothing.to_str().unwrap(), &good, &model, &[]);
    assert_eq!(code, 2);
    assert!(err.contains("no trainable parameters"), "{err}");
    let conv_ce = tmp("conv.toml");
    std::fs::write(
        &conv_ce,
        "input = [1, 4, 4]\n[[layers]]\ntype = \"conv2d\"\nout = 2\nkernel = 3\n",
    )
    .unwrap();
    let (code, _, err) = ditac(&[
        "train-artifacts",
        conv_ce.to_str().unwrap(),
        "-o",
        tmp("art").to_str().unwrap(),
        "--loss",
        "cross-entropy",
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("cross-entropy") && err.contains("[2, 2, 2]"),
        "{err}"
    );
    assert_eq!(std::fs::read(&model).unwrap(), before);
}

#[test]
fn theta_only_fine_tuning_of_a_model_changes_only_theta() {
    // A GELU-free model with per-channel DiTAC, as `ditac build` writes it; `train MODEL.onnx
    // --trainable theta` must change every θ and nothing else.
    let net = net(
        "input = [1, 6, 6]\n[[layers]]\ntype = \"conv2d\"\nout = 3\nkernel = 3\npadding = 1\n\
         [[layers]]\ntype = \"ditac\"\na = -3.0\nb = 3.0\nper_channel = true\n\
         [[layers]]\ntype = \"flatten\"\n[[layers]]\ntype = \"linear\"\nout = 4\n\
         [[layers]]\ntype = \"ditac\"\na = -3.0\nb = 3.0\n[[layers]]\ntype = \"linear\"\nout = 3\n",
    );
    let params = init_params(&net, 2).unwrap();
    let model_path = tmp("finetune_in.onnx");
    std::fs::write(
        &model_path,
        ditac_tools::graph::inference_model(&net, &params)
            .unwrap()
            .to_bytes(),
    )
    .unwrap();
    let data = save(
        &random_data(&net, LossKind::CrossEntropy, 40, 3),
        "finetune.npz",
    );
    let out = tmp("finetune_out.onnx");
    let (code, stdout, stderr) = train(
        model_path.to_str().unwrap(),
        &data,
        &out,
        &[
            "--trainable",
            "theta",
            "--loss",
            "cross-entropy",
            "--steps",
            "5",
            "--batch",
            "8",
            "--lr",
            "0.01",
            "--test",
            data.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("test accuracy"), "{stdout}");
    let read = |p: &std::path::Path| -> Vec<(String, Vec<u8>)> {
        let m = ModelProto::parse_from_bytes(&std::fs::read(p).unwrap()).unwrap();
        let mut v: Vec<_> = m
            .graph
            .initializer
            .iter()
            .map(|t| (t.name.clone(), t.raw_data.clone()))
            .collect();
        v.sort();
        v
    };
    let (before, after) = (read(&model_path), read(&out));
    assert_eq!(
        before.iter().map(|t| &t.0).collect::<Vec<_>>(),
        after.iter().map(|t| &t.0).collect::<Vec<_>>()
    );
    let mut thetas = 0;
    for ((name, a), (_, b)) in before.iter().zip(&after) {
        if name.ends_with("thetas") {
            thetas += 1;
            assert_ne!(a, b, "{name} was not trained");
        } else {
            assert_eq!(a, b, "{name} changed under --trainable theta");
        }
    }
    assert_eq!(thetas, 2);
}

#[test]
fn digits_example_data_reads_scikit_learns_file() {
    use std::io::Write;
    // Five rows in scikit-learn's format: 64 pixels in 0..=16, then the digit.
    let mut text = String::new();
    for r in 0..5 {
        let px: Vec<String> = (0..64).map(|i| ((i + r) % 17).to_string()).collect();
        text += &format!("{},{}\n", px.join(","), r);
    }
    let gz = tmp("digits.csv.gz");
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(text.as_bytes()).unwrap();
    std::fs::write(&gz, e.finish().unwrap()).unwrap();
    let out = tmp("digits_out");
    let (code, stdout, stderr) = ditac(&[
        "example-data",
        "digits",
        "--from",
        gz.to_str().unwrap(),
        "--test-share",
        "0.4",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let train = Params::load(&out.join("train.npz")).unwrap();
    let test = Params::load(&out.join("test.npz")).unwrap();
    assert_eq!(train.get("x").unwrap().shape, vec![3, 1, 8, 8]);
    assert_eq!(test.get("x").unwrap().shape, vec![2, 1, 8, 8]);
    let x = &train.get("x").unwrap().data;
    assert!(x.iter().all(|v| (0.0..=1.0).contains(v)) && x.contains(&1.0));
    // Without the file: a message that says where it is.
    let (code, _, stderr) = ditac(&["example-data", "digits", "-o", out.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("sklearn/datasets/data/digits.csv.gz"),
        "{stderr}"
    );
    // A bad row is named.
    std::fs::write(&gz, {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b"1,2,3\n").unwrap();
        e.finish().unwrap()
    })
    .unwrap();
    let (code, _, stderr) = ditac(&[
        "example-data",
        "digits",
        "--from",
        gz.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(stderr.contains("line 1: expected 64 pixels"), "{stderr}");
}
