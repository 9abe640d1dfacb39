//! Loss functions of training and eval graphs: mean squared error, softmax cross-entropy with integer
//! labels, plus the smoothness prior λ·θᵀPθ of every DiTAC layer (ditac.md §8, the intended form;
//! P = `prior::precision_matrix` with the reference's λ_smooth = 5, λ_var = 2, an initializer).

use super::backward::{ints, scalar};
use super::LossKind;
use crate::model::{Attr, ElemType, ModelBuilder};
use crate::spec::{Layer, Network};
use anyhow::{bail, Result};
use ditac::basis;
use ditac::prior;

/// The reference's regulariser constants (ditac.md §8).
pub const PRIOR_LENGTH_SCALE: f64 = 5.0;
pub const PRIOR_VARIANCE: f64 = 2.0;

/// The name of the loss output.
pub const LOSS: &str = "loss";

/// Declares the target input for `loss` on `net`: float `[N, out...]` (MSE) or int64 `[N]` class
/// indices (cross-entropy).
pub fn target_input(net: &Network, loss: LossKind, m: &mut ModelBuilder) -> Result<()> {
    match loss {
        LossKind::Mse => {
            m.input(
                "target",
                ElemType::Float,
                &crate::graph::batch_dims(net.output()),
            );
        }
        LossKind::CrossEntropy => {
            if net.output().len() != 1 || net.output()[0] < 2 {
                bail!(
                    "cross-entropy needs a network whose output is a flat vector of at least 2 class \
                     scores; this spec's output has shape {:?} (add a flatten layer and a linear layer \
                     with one output per class)",
                    net.output()
                );
            }
            m.input("target", ElemType::Int64, &[-1]);
        }
    }
    Ok(())
}

/// The precision matrix P of a DiTAC layer, symmetrised, as f32 row-major d×d.
pub fn layer_precision(at: &ditac::Attrs) -> Result<Vec<f32>> {
    let b = basis::build(at.tess(), at.zero_boundary(), at.basis)?;
    let p = prior::precision_matrix(&b, PRIOR_LENGTH_SCALE, PRIOR_VARIANCE);
    let d = b.cols;
    Ok((0..d * d)
        .map(|k| {
            let (i, j) = (k / d, k % d);
            (0.5 * (p[i * d + j] + p[j * d + i])) as f32
        })
        .collect())
}

/// What [`emit_loss`] returns: the name of dloss/dy (with `grads`) and, per DiTAC θ key, the name of
/// the prior's gradient.
pub type LossGrads = (Option<String>, Vec<(String, String)>);

/// Writes the loss of output `y` against `target` into `m` (output [`LOSS`], a scalar). With
/// `grads`, also writes the gradient of the data term with respect to `y` (returned) and, per DiTAC
/// θ, the gradient 2λ·θP of the prior (returned as (θ key, gradient name)).
pub fn emit_loss(
    net: &Network,
    m: &mut ModelBuilder,
    y: &str,
    loss: LossKind,
    lambda: f32,
    grads: bool,
) -> Result<LossGrads> {
    let data = "loss.data";
    let mut dy = None;
    match loss {
        LossKind::Mse => {
            // mean((y − t)²); d/dy = 2(y − t)/numel.
            m.node("Sub", "", "loss/diff", &[y, "target"], &["loss/diff"], &[]);
            m.node(
                "Mul",
                "",
                "loss/sq",
                &["loss/diff", "loss/diff"],
                &["loss/sq"],
                &[],
            );
            m.node(
                "ReduceMean",
                "",
                "loss/mean",
                &["loss/sq"],
                &[data],
                &[("keepdims", Attr::Int(0))],
            );
            if grads {
                let two = scalar(m, "loss/two", 2.0);
                m.node(
                    "Size",
                    "",
                    "loss/numel",
                    &["loss/diff"],
                    &["loss/numel"],
                    &[],
                );
                m.node(
                    "Cast",
                    "",
                    "loss/numel_f",
                    &["loss/numel"],
                    &["loss/numel_f"],
                    &[("to", Attr::Int(1))],
                );
                m.node(
                    "Div",
                    "",
                    "loss/scale",
                    &[&two, "loss/numel_f"],
                    &["loss/scale"],
                    &[],
                );
                let g = format!("{y}_grad");
                m.node(
                    "Mul",
                    "",
                    "loss/dy",
                    &["loss/diff", "loss/scale"],
                    &[&g],
                    &[],
                );
                dy = Some(g);
            }
        }
        LossKind::CrossEntropy => {
            // mean over the batch of −log softmax(y)[target]; d/dy = (softmax(y) − onehot)/N.
            m.node(
                "SoftmaxCrossEntropyLoss",
                "",
                "loss/sce",
                &[y, "target"],
                &[data, "loss/log_prob"],
                &[("reduction", Attr::from("mean"))],
            );
            if grads {
                let k = net.output()[0] as i64;
                let depth = ints(m, "loss/depth", &[k]);
                m.initializer_f32("loss/onehot_values", &[2], &[0.0, 1.0]);
                m.node(
                    "OneHot",
                    "",
                    "loss/onehot",
                    &["target", &depth, "loss/onehot_values"],
                    &["loss/onehot"],
                    &[("axis", Attr::Int(-1))],
                );
                m.node(
                    "Exp",
                    "",
                    "loss/softmax",
                    &["loss/log_prob"],
                    &["loss/softmax"],
                    &[],
                );
                m.node(
                    "Sub",
                    "",
                    "loss/residual",
                    &["loss/softmax", "loss/onehot"],
                    &["loss/residual"],
                    &[],
                );
                m.node("Size", "", "loss/n", &["target"], &["loss/n"], &[]);
                m.node(
                    "Cast",
                    "",
                    "loss/n_f",
                    &["loss/n"],
                    &["loss/n_f"],
                    &[("to", Attr::Int(1))],
                );
                let g = format!("{y}_grad");
                m.node(
                    "Div",
                    "",
                    "loss/dy",
                    &["loss/residual", "loss/n_f"],
                    &[&g],
                    &[],
                );
                dy = Some(g);
            }
        }
    }
    // The smoothness prior of every DiTAC layer: λ·Σ_rows θ_r P θ_rᵀ.
    let mut terms = vec![data.to_string()];
    let mut prior_grads = Vec::new();
    if lambda != 0.0 {
        let lam = scalar(m, "loss/lambda", lambda);
        let two_lam = if grads {
            scalar(m, "loss/two_lambda", 2.0 * lambda)
        } else {
            String::new()
        };
        for l in &net.layers {
            if !matches!(l.layer, Layer::Ditac(_)) {
                continue;
            }
            let at = l.attrs.as_ref().expect("resolved DiTAC layer has attrs");
            let key = &l.params[0].key;
            let d = at.theta_len();
            let pname = format!("{key}.precision");
            m.initializer_f32(&pname, &[d, d], &layer_precision(at)?);
            let n = |s: &str| format!("{key}.prior/{s}");
            m.node(
                "MatMul",
                "",
                &n("thetaP"),
                &[key, &pname],
                &[&n("thetaP")],
                &[],
            );
            m.node(
                "Mul",
                "",
                &n("quad"),
                &[key, &n("thetaP")],
                &[&n("quad")],
                &[],
            );
            m.node(
                "ReduceSum",
                "",
                &n("sum"),
                &[&n("quad")],
                &[&n("sum")],
                &[("keepdims", Attr::Int(0))],
            );
            m.node(
                "Mul",
                "",
                &n("term"),
                &[&n("sum"), &lam],
                &[&n("term")],
                &[],
            );
            terms.push(n("term"));
            if grads {
                m.node(
                    "Mul",
                    "",
                    &n("grad"),
                    &[&n("thetaP"), &two_lam],
                    &[&n("grad")],
                    &[],
                );
                prior_grads.push((key.clone(), n("grad")));
            }
        }
    }
    let refs: Vec<&str> = terms.iter().map(String::as_str).collect();
    m.node("Sum", "", "loss/total", &refs, &[LOSS], &[]);
    m.output(LOSS, ElemType::Float, &[]);
    Ok((dy, prior_grads))
}
