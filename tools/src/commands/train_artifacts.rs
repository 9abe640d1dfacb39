//! `ditac train-artifacts SPEC -o DIR`: the four artifacts of ONNX Runtime's training API
//! (`training_model.onnx`, `eval_model.onnx`, `optimizer_model.onnx`, `checkpoint`) for a spec.

use anyhow::{Context, Result};
use clap::Args as ClapArgs;
use ditac_tools::graph::init_params;
use ditac_tools::params::Params;
use ditac_tools::spec::{Network, Spec};
use ditac_tools::train::checkpoint::Checkpoint;
use ditac_tools::train::{artifacts, LossKind, OptimizerKind, TrainConfig};
use std::path::PathBuf;

/// The flags that shape the training graphs, shared by `train-artifacts` and `train`.
#[derive(ClapArgs, Debug, Clone)]
pub struct GraphFlags {
    /// Initial parameters (safetensors or .npz with PyTorch keys, or an ONNX Runtime training
    /// checkpoint); default: PyTorch's initialisation and θ drawn from the reference prior (--seed).
    #[arg(long)]
    pub params: Option<PathBuf>,
    /// The loss: mse or cross-entropy (integer class labels).
    #[arg(long, default_value = "mse")]
    pub loss: LossKind,
    /// The optimizer: adamw or sgd.
    #[arg(long, default_value = "adamw")]
    pub optimizer: OptimizerKind,
    /// λ of the smoothness prior λ·θᵀPθ added to the loss for every DiTAC layer (0: none).
    #[arg(long, default_value_t = 0.1)]
    pub lambda: f32,
    /// Learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f32,
    /// AdamW weight decay (ONNX Runtime's mode 1, applied after the update).
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
    /// Seed of the initial parameters (and of the batch order in `train`).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl GraphFlags {
    pub fn config(&self) -> Result<TrainConfig> {
        for (name, v) in [
            ("--lambda", self.lambda),
            ("--lr", self.lr),
            ("--weight-decay", self.weight_decay),
        ] {
            if !v.is_finite() || v < 0.0 {
                anyhow::bail!("{name} = {v}: expected a finite number ≥ 0");
            }
        }
        Ok(TrainConfig {
            loss: self.loss,
            lambda: self.lambda,
            optimizer: self.optimizer,
            lr: self.lr,
            weight_decay: self.weight_decay,
            seed: self.seed,
            ..TrainConfig::default()
        })
    }

    /// The network of `spec` and its initial parameters.
    pub fn network(&self, spec: &std::path::Path) -> Result<(Network, Params)> {
        let net = Spec::load(spec)?.resolve()?;
        let params = match &self.params {
            Some(p) => {
                let bytes = std::fs::read(p)
                    .with_context(|| format!("cannot read parameters {}", p.display()))?;
                let mut loaded = if bytes.len() >= 8 && &bytes[4..8] == b"ODTC" {
                    Checkpoint::from_bytes(&bytes)
                        .with_context(|| format!("checkpoint {}", p.display()))?
                        .params()
                } else {
                    Params::load(p)?
                };
                ditac_tools::graph::check_params(&net, &loaded)
                    .with_context(|| format!("parameters {}", p.display()))?;
                // Store every tensor in its ONNX shape (θ [1, d] → [d]).
                for info in artifacts::param_infos(&net) {
                    let t = loaded.get(&info.key)?.clone();
                    loaded.insert(
                        info.key.clone(),
                        ditac_tools::params::Tensor::new(info.shape.clone(), t.data),
                    );
                }
                loaded
            }
            None => init_params(&net, self.seed)?,
        };
        Ok((net, params))
    }
}

#[derive(ClapArgs)]
pub struct Args {
    /// The network spec (TOML or JSON).
    spec: PathBuf,
    /// Output folder.
    #[arg(short = 'o', long = "out")]
    out: PathBuf,
    #[command(flatten)]
    flags: GraphFlags,
}

pub fn run(args: Args) -> Result<()> {
    let cfg = args.flags.config()?;
    let (net, params) = args.flags.network(&args.spec)?;
    let a = artifacts::build(&net, &params, &cfg)?;
    artifacts::write(&a, &args.out)?;
    let n: usize = a.params.iter().map(|p| p.len()).sum();
    println!(
        "wrote training_model.onnx, eval_model.onnx, optimizer_model.onnx, checkpoint to {} \
         ({} parameter tensors, {n} values; loss {}, λ = {}, optimizer {})",
        args.out.display(),
        a.params.len(),
        cfg.loss.as_str(),
        cfg.lambda,
        cfg.optimizer.as_str()
    );
    Ok(())
}
