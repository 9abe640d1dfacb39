//! Loss functions of training and eval graphs: mean squared error, softmax cross-entropy with integer
//! labels, plus the smoothness prior of every DiTAC layer (ditac.md §8; P =
//! `prior::precision_matrix` with the layer's `lambda_smooth`, `lambda_var`, weighted by its
//! `lambda_reg_loss`). [`Regulariser::Intended`]: the loss gets λ·θᵀPθ and θ's gradient 2λ·Pθ.
//! [`Regulariser::Reference`]: what the authors' code does — no loss term, θ's gradient
//! d·g + 2λ·θ⊙colsum(P).

use super::gradient::{ints, scalar};
use super::{LossKind, Regulariser, TrainConfig};
use crate::model::{Attr, ElemType, ModelBuilder};
use crate::spec::{Layer, Network, PriorSettings};
use anyhow::{bail, Result};
use ditac::basis;
use ditac::prior;

/// The name of the loss output.
pub const LOSS: &str = "loss";

/// Declares the target input for `loss` on `net`: float `[N, out...]` (MSE) or int64 `[N]` class
/// indices (cross-entropy).
pub fn target_input(net: &Network, loss: LossKind, m: &mut ModelBuilder) -> Result<()> {
    target_input_for(net.output(), loss, m)
}

/// [`target_input`] for a network whose per-sample output shape is `output`.
pub fn target_input_for(output: &[usize], loss: LossKind, m: &mut ModelBuilder) -> Result<()> {
    match loss {
        LossKind::Mse => {
            m.input("target", ElemType::Float, &crate::graph::batch_dims(output));
        }
        LossKind::CrossEntropy => {
            if output.len() != 1 || output[0] < 2 {
                bail!(
                    "cross-entropy needs a network whose output is a flat vector of at least 2 class \
                     scores; this network's output has shape {output:?} (add a flatten layer and a \
                     linear layer with one output per class)"
                );
            }
            m.input("target", ElemType::Int64, &[-1]);
        }
    }
    Ok(())
}

/// The precision matrix P of a DiTAC layer (row-major d×d, as the reference computes it).
pub fn layer_precision(at: &ditac::Attrs, settings: &PriorSettings) -> Result<Vec<f64>> {
    let b = basis::build(at.tess(), at.zero_boundary(), at.basis)?;
    Ok(prior::precision_matrix(
        &b,
        settings.lambda_smooth,
        settings.lambda_var,
    ))
}

/// One trainable θ and its prior: what the loss writer needs of a DiTAC layer or node.
#[derive(Debug, Clone)]
pub struct ThetaPrior {
    /// θ's parameter name.
    pub key: String,
    /// θ's row length.
    pub d: usize,
    /// P, row-major d×d (see [`layer_precision`]).
    pub precision: Vec<f64>,
    pub settings: PriorSettings,
}

/// The θ priors of a spec network's DiTAC layers.
pub fn net_priors(net: &Network, cfg: &TrainConfig) -> Result<Vec<ThetaPrior>> {
    let mut out = Vec::new();
    for l in &net.layers {
        let Layer::Ditac(spec) = &l.layer else {
            continue;
        };
        let settings = spec.prior(&cfg.prior)?;
        let at = l.attrs.as_ref().expect("resolved DiTAC layer has attrs");
        out.push(ThetaPrior {
            key: l.params[0].key.clone(),
            d: at.theta_len(),
            precision: layer_precision(at, &settings)?,
            settings,
        });
    }
    Ok(out)
}

/// P symmetrised, as f32 (the intended regulariser's matrix).
fn symmetrised(p: &[f64], d: usize) -> Vec<f32> {
    (0..d * d)
        .map(|k| {
            let (i, j) = (k / d, k % d);
            (0.5 * (p[i * d + j] + p[j * d + i])) as f32
        })
        .collect()
}

/// The prior's share of one θ's gradient, from [`emit_loss`].
#[derive(Debug, Clone)]
pub struct PriorGrad {
    /// θ's key.
    pub key: String,
    /// The value to add to θ's (scaled) data gradient.
    pub grad: String,
    /// The factor of the data gradient (the reference regulariser's d; 1: none).
    pub data_scale: f32,
}

/// What [`emit_loss`] returns: the name of dloss/dy (with `grads`) and the prior's gradients.
pub type LossGrads = (Option<String>, Vec<PriorGrad>);

/// Writes the loss of output `y` against `target` into `m` (output [`LOSS`], a scalar). With
/// `grads`, also writes the gradient of the data term with respect to `y` (returned) and, per DiTAC
/// θ with a non-zero `lambda_reg_loss`, the prior's share of θ's gradient (see the module doc).
pub fn emit_loss(
    net: &Network,
    m: &mut ModelBuilder,
    y: &str,
    cfg: &TrainConfig,
    grads: bool,
) -> Result<LossGrads> {
    emit_loss_for(net.output(), &net_priors(net, cfg)?, m, y, cfg, grads)
}

/// [`emit_loss`] for a network with per-sample output shape `output` and the θ priors `priors`.
pub fn emit_loss_for(
    output: &[usize],
    priors: &[ThetaPrior],
    m: &mut ModelBuilder,
    y: &str,
    cfg: &TrainConfig,
    grads: bool,
) -> Result<LossGrads> {
    let loss = cfg.loss;
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
                let k = output[0] as i64;
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
    // The smoothness prior of every DiTAC layer.
    let mut terms = vec![data.to_string()];
    let mut prior_grads = Vec::new();
    for tp in priors {
        let settings = tp.settings;
        // The reference scales θ's data gradient by d even with λ = 0 (the broadcast happens
        // regardless), so only the intended form drops a zero-weight prior.
        if settings.lambda_reg_loss == 0.0 && cfg.regulariser == Regulariser::Intended {
            continue;
        }
        let lambda = settings.lambda_reg_loss as f32;
        let (key, d, p) = (&tp.key, tp.d, &tp.precision);
        let n = |s: &str| format!("{key}.prior/{s}");
        match cfg.regulariser {
            Regulariser::Intended => {
                // λ·Σ_rows θ_r P θ_rᵀ; gradient 2λ·θP (P symmetrised).
                let pname = format!("{key}.precision");
                m.initializer_f32(&pname, &[d, d], &symmetrised(p, d));
                let lam = scalar(m, &n("lambda"), lambda);
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
                    let two_lam = scalar(m, &n("two_lambda"), 2.0 * lambda);
                    m.node(
                        "Mul",
                        "",
                        &n("grad"),
                        &[&n("thetaP"), &two_lam],
                        &[&n("grad")],
                        &[],
                    );
                    prior_grads.push(PriorGrad {
                        key: key.clone(),
                        grad: n("grad"),
                        data_scale: 1.0,
                    });
                }
            }
            Regulariser::Reference => {
                // No loss term; the gradient the authors' code applies (ditac.md §8):
                // d·g + 2λ·θ⊙colsum(P), the per-column constant 2λ·colsum(P) as an initializer.
                if grads {
                    let c: Vec<f32> = (0..d)
                        .map(|j| {
                            let colsum: f64 = (0..d).map(|i| p[i * d + j]).sum();
                            (2.0 * settings.lambda_reg_loss * colsum) as f32
                        })
                        .collect();
                    let cname = format!("{key}.prior_colsum");
                    m.initializer_f32(&cname, &[d], &c);
                    m.node("Mul", "", &n("grad"), &[key, &cname], &[&n("grad")], &[]);
                    prior_grads.push(PriorGrad {
                        key: key.clone(),
                        grad: n("grad"),
                        data_scale: d as f32,
                    });
                }
            }
        }
    }
    let refs: Vec<&str> = terms.iter().map(String::as_str).collect();
    m.node("Sum", "", "loss/total", &refs, &[LOSS], &[]);
    m.output(LOSS, ElemType::Float, &[]);
    Ok((dy, prior_grads))
}
