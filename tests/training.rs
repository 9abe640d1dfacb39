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

mod common;

use common::session;
use ditac_tools::graph::init_params;
use ditac_tools::params::Params;
use ditac_tools::spec::{Network, Spec};
use ditac_tools::train::artifacts::{self, portable_training_model, ParamInfo};
use ditac_tools::train::checkpoint::Checkpoint;
use ditac_tools::train::data::{Dataset, Rng, Targets};
use ditac_tools::train::portable::PortableTrainer;
use ditac_tools::train::{LossKind, TrainConfig};
use onnx_protobuf::{type_proto, ModelProto, NodeProto};
use ort::session::SessionInputValue;
use ort::value::Tensor;
use protobuf::Message;
use std::process::Command;

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
    name.ends_with("thetas") || name.ends_with(".precision") || name == "loss/lambda"
}

/// Ops without a double kernel in ONNX Runtime's CPU provider: run in float32 between casts.
const F32_ONLY: [&str; 4] = ["Conv", "PRelu", "LeakyRelu", "Gelu"];

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
    let cfg = TrainConfig {
        loss,
        lambda,
        ..TrainConfig::default()
    };
    let a = artifacts::build(&net, &params, &cfg).unwrap();
    let data = random_data(&net, loss, n, 5);
    let idx: Vec<usize> = (0..n).collect();
    let train = session(
        &portable_training_model(&a.training)
            .unwrap()
            .write_to_bytes()
            .unwrap(),
    )
    .unwrap();
    let mut tr = PortableTrainer::new(train, a.params.clone(), &params, &cfg, n, &data).unwrap();
    let l_train = tr.forward_backward(&data, &idx).unwrap() as f64;
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
    let l0 = eval_loss(&mut eval, &data, &a.params, &vals);
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
                let lu = eval_loss(&mut eval, &data, &a.params, &vals);
                vals[pi][j] = dn;
                let ld = eval_loss(&mut eval, &data, &a.params, &vals);
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
    // ORT's generator's own checkpoint reads too.
    let ex = std::path::Path::new("/work/shared/examples/ort-training-artifacts/checkpoint");
    if ex.exists() {
        let c = Checkpoint::from_bytes(&std::fs::read(ex).unwrap()).unwrap();
        let names: Vec<_> = c.trainable.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]);
        assert_eq!(c.trainable[0].dims, vec![8, 2]);
    }
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
// `ditac train` with bad input

fn ditac(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ditac"))
        .args(args)
        .current_dir(common::root())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("ditac-training-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn plugin_args() -> Vec<String> {
    let ort = std::env::var("ORT_DYLIB_PATH").unwrap_or_else(|_| {
        common::root()
            .join(".ort/1.32.0/libonnxruntime.so")
            .display()
            .to_string()
    });
    vec![
        "--plugin".into(),
        common::plugin_path().display().to_string(),
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
    let net = Spec::load(&common::root().join(spec))
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
