//! `ditac train-artifacts SPEC|MODEL.onnx -o DIR`: the four artifacts of ONNX Runtime's training API
//! (`training_model.onnx`, `eval_model.onnx`, `optimizer_model.onnx`, `checkpoint`) for a spec or
//! for an existing ONNX model with DiTAC nodes.

use super::runtime::{open_session, ort_env};
use anyhow::{bail, Context, Result};
use clap::Args as ClapArgs;
use ditac_tools::graph::init_params_with;
use ditac_tools::params::Params;
use ditac_tools::runtime::RuntimeFlags;
use ditac_tools::spec::{Network, PriorSettings, Spec};
use ditac_tools::train::checkpoint::Checkpoint;
use ditac_tools::train::model_graph::{ModelNet, Trainable};
use ditac_tools::train::{artifacts, LossKind, OptimizerKind, Regulariser, TrainConfig};
use ditac_tools::transform::ModelFile;
use std::path::{Path, PathBuf};

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
    /// The optimizer: adamw (ONNX Runtime's generator: AdamWOptimizer mode 1, ε 1e-6), adam
    /// (torch.optim.Adam's defaults: mode 0, ε 1e-8) or sgd.
    #[arg(long, default_value = "adamw")]
    pub optimizer: OptimizerKind,
    /// Adam's ε (default: the optimizer's own, 1e-6 for adamw, 1e-8 for adam).
    #[arg(long)]
    pub epsilon: Option<f32>,
    /// The smoothness prior's weight for DiTAC layers whose spec does not set `lambda_reg_loss`
    /// (0: none).
    #[arg(long = "lambda-reg-loss", alias = "lambda", default_value_t = 0.1)]
    pub lambda_reg_loss: f64,
    /// The prior's length scale (spec `lambda_smooth`) where a layer does not set it.
    #[arg(long, default_value_t = 5.0)]
    pub lambda_smooth: f64,
    /// The prior's variance (spec `lambda_var`) where a layer does not set it.
    #[arg(long, default_value_t = 2.0)]
    pub lambda_var: f64,
    /// The initial θ prior's length scale (spec `lambda_smooth_init`) where a layer does not set it.
    #[arg(long, default_value_t = 5.0)]
    pub lambda_smooth_init: f64,
    /// The initial θ prior's variance (spec `lambda_var_init`) where a layer does not set it.
    #[arg(long, default_value_t = 2.0)]
    pub lambda_var_init: f64,
    /// reference: what the authors' code applies (no loss term, θ's gradient d·g +
    /// 2λ·θ⊙colsum(P); ditac.md §8), so a run here follows a run there; intended: λ·θᵀPθ in the
    /// loss, gradient 2λ·Pθ.
    #[arg(long, default_value = "reference")]
    pub regulariser: Regulariser,
    /// Learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f32,
    /// AdamW weight decay (ONNX Runtime's mode 1, applied after the update).
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
    /// Seed of the initial parameters (and of the batch order in `train`).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// For an ONNX model: train only the DiTAC θ (theta) or θ and every weight (all; default: all).
    #[arg(long)]
    pub trainable: Option<Trainable>,
    #[command(flatten)]
    pub runtime: RuntimeFlags,
}

/// What is trained: a spec's network or an ONNX model.
pub enum Source {
    Spec { net: Network, init: Params },
    Model(Box<ModelNet>),
}

impl Source {
    /// The artifacts for `cfg`.
    pub fn artifacts(&self, cfg: &TrainConfig) -> Result<artifacts::Artifacts> {
        match self {
            Source::Spec { net, init } => artifacts::build(net, init, cfg),
            Source::Model(m) => m.build(cfg),
        }
    }
    /// The initial values of the trainable parameters.
    pub fn init(&self) -> &Params {
        match self {
            Source::Spec { init, .. } => init,
            Source::Model(m) => &m.init,
        }
    }
    /// Per-sample input and output shapes.
    pub fn io_shapes(&self) -> (Vec<usize>, Vec<usize>) {
        match self {
            Source::Spec { net, .. } => (net.input.clone(), net.output().to_vec()),
            Source::Model(m) => (m.input_shape.clone(), m.output_shape.clone()),
        }
    }
    /// The inference model's input and output names.
    pub fn io_names(&self) -> (String, String) {
        match self {
            Source::Spec { .. } => ("x".into(), "y".into()),
            Source::Model(m) => (m.input.clone(), m.output.clone()),
        }
    }
    /// The inference model with `params`.
    pub fn inference_bytes(&self, params: &Params) -> Result<Vec<u8>> {
        Ok(match self {
            Source::Spec { net, .. } => {
                ditac_tools::graph::inference_model(net, params)?.to_bytes()
            }
            Source::Model(m) => {
                use protobuf::Message;
                m.trained_model(params)?.write_to_bytes()?
            }
        })
    }
    pub fn name(&self) -> String {
        match self {
            Source::Spec { net, .. } => net.name.clone(),
            Source::Model(m) => m
                .model
                .graph
                .as_ref()
                .map(|g| g.name.clone())
                .unwrap_or_default(),
        }
    }
}

impl GraphFlags {
    pub fn config(&self) -> Result<TrainConfig> {
        let epsilon = self
            .epsilon
            .unwrap_or_else(|| self.optimizer.default_epsilon());
        for (name, v) in [
            ("--lr", self.lr),
            ("--weight-decay", self.weight_decay),
            ("--epsilon", epsilon),
        ] {
            if !v.is_finite() || v < 0.0 {
                anyhow::bail!("{name} = {v}: expected a finite number ≥ 0");
            }
        }
        let prior = PriorSettings {
            lambda_smooth: self.lambda_smooth,
            lambda_var: self.lambda_var,
            lambda_smooth_init: self.lambda_smooth_init,
            lambda_var_init: self.lambda_var_init,
            lambda_reg_loss: self.lambda_reg_loss,
        };
        prior
            .validate()
            .map_err(|e| anyhow::anyhow!("--{}", e.to_string().replace('_', "-")))?;
        Ok(TrainConfig {
            loss: self.loss,
            prior,
            regulariser: self.regulariser,
            optimizer: self.optimizer,
            lr: self.lr,
            epsilon,
            weight_decay: self.weight_decay,
            seed: self.seed,
            ..TrainConfig::default()
        })
    }

    /// Whether `path` names an ONNX model (else a spec).
    pub fn is_model(path: &Path) -> bool {
        path.extension().is_some_and(|e| e == "onnx")
    }

    /// A spec (TOML/JSON) or an ONNX model (`.onnx`), ready for training. A model's shapes are
    /// probed in ONNX Runtime: `env` with its plugin (else both are found by the lookup rule).
    pub fn source(
        &self,
        path: &Path,
        cfg: &TrainConfig,
        env: Option<(&ort::environment::Environment, &Path)>,
    ) -> Result<Source> {
        if Self::is_model(path) {
            if self.params.is_some() {
                bail!("--params is for specs: an ONNX model carries its own initial values");
            }
            let file = ModelFile::load(path)?;
            let own;
            let (env, plugin) = match env {
                Some(e) => e,
                None => {
                    own = ort_env(&self.runtime, "ditac-train-artifacts")?;
                    (&own.0, own.2.as_path())
                }
            };
            let mut open = |b: &[u8]| open_session(env, plugin, 1, b);
            let trainable = self.trainable.unwrap_or(Trainable::All);
            let m = ModelNet::analyse(&file.model, &file.dir, trainable, cfg, &mut open)
                .with_context(|| format!("model {}", path.display()))?;
            return Ok(Source::Model(Box::new(m)));
        }
        if self.trainable.is_some() {
            bail!("--trainable is for ONNX models: a spec's network trains every parameter");
        }
        let (net, init) = self.network(path, cfg)?;
        Ok(Source::Spec { net, init })
    }

    /// The network of `spec` and its initial parameters (θ from each layer's initial prior, the
    /// flags' where the spec sets none).
    pub fn network(&self, spec: &Path, cfg: &TrainConfig) -> Result<(Network, Params)> {
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
            None => init_params_with(&net, self.seed, &cfg.prior)?,
        };
        Ok((net, params))
    }
}

#[derive(ClapArgs)]
pub struct Args {
    /// The network: a spec (TOML or JSON) or an ONNX model with DiTAC nodes (.onnx; one input
    /// [N, ...], one output; the loss is applied to its output).
    spec: PathBuf,
    /// Output folder (created if missing).
    #[arg(short = 'o', long = "out")]
    out: PathBuf,
    #[command(flatten, next_help_heading = "Training graph")]
    flags: GraphFlags,
}

pub fn run(args: Args) -> Result<()> {
    let cfg = args.flags.config()?;
    let source = args.flags.source(&args.spec, &cfg, None)?;
    ditac_tools::output::output_folder(&args.out)?;
    for name in artifacts::FILES {
        ditac_tools::output::Output::new(&args.out.join(name))?;
    }
    let a = source.artifacts(&cfg)?;
    artifacts::write(&a, &args.out)?;
    let n: usize = a.params.iter().map(|p| p.len()).sum();
    println!(
        "wrote training_model.onnx, eval_model.onnx, optimizer_model.onnx, checkpoint to {} \
         ({} parameter tensors, {n} values; loss {}, {} regulariser, optimizer {})",
        args.out.display(),
        a.params.len(),
        cfg.loss.as_str(),
        cfg.regulariser.as_str(),
        cfg.optimizer.as_str()
    );
    Ok(())
}
