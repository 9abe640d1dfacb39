//! Training DiTAC networks through ONNX Runtime.
//!
//! ONNX Runtime cannot differentiate a custom op, so the training graphs written here carry their
//! backward explicitly: standard ops per op type and `ai.ditac.DiTACGrad` for DiTAC
//! ([`gradient`], for specs and ONNX models alike: [`model_graph`]), the loss with the smoothness prior ([`loss`]). [`artifacts`] writes the four files
//! ONNX Runtime's training API consumes, with the conventions of its own generator; [`checkpoint`]
//! reads and writes its flatbuffer checkpoint. Where the loaded ONNX Runtime has no training API
//! (every build published on PyPI since 1.19.2), [`portable`] runs the very same training graph in
//! a plain inference session and applies the optimizer step in Rust ([`optimizer`]). Both engines
//! implement [`engine::Engine`], and [`engine::train`] is the one training loop.

pub mod artifacts;
pub mod checkpoint;
pub mod data;
pub mod engine;
pub mod gradient;
pub mod loss;
pub mod model_graph;
pub mod optimizer;
pub mod portable;

use crate::spec::PriorSettings;
use anyhow::{bail, Result};

/// The loss of a training graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossKind {
    Mse,
    CrossEntropy,
}

impl LossKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LossKind::Mse => "mse",
            LossKind::CrossEntropy => "cross-entropy",
        }
    }
}

impl std::str::FromStr for LossKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "mse" => Ok(LossKind::Mse),
            "cross-entropy" | "cross_entropy" | "ce" => Ok(LossKind::CrossEntropy),
            _ => bail!("unknown loss \"{s}\": expected mse or cross-entropy"),
        }
    }
}

/// The optimizer of the optimizer graph (and of the portable path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptimizerKind {
    /// ONNX Runtime's generator default: `AdamWOptimizer` mode 1 (bias correction folded into the
    /// learning rate, ε outside the corrected root), ε = 1e-6.
    AdamW,
    /// `torch.optim.Adam` with its defaults (ε = 1e-8, ε added to the bias-corrected root):
    /// `AdamWOptimizer` mode 0. Weight decay, if asked, is decoupled as in `torch.optim.AdamW`.
    Adam,
    Sgd,
}

impl OptimizerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OptimizerKind::AdamW => "adamw",
            OptimizerKind::Adam => "adam",
            OptimizerKind::Sgd => "sgd",
        }
    }

    /// The ε of this optimizer's defaults (ONNX Runtime's generator for `adamw`, PyTorch's for
    /// `adam`).
    pub fn default_epsilon(self) -> f32 {
        match self {
            OptimizerKind::Adam => 1e-8,
            OptimizerKind::AdamW | OptimizerKind::Sgd => 1e-6,
        }
    }
}

impl std::str::FromStr for OptimizerKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "adamw" => Ok(OptimizerKind::AdamW),
            "adam" | "torch-adam" => Ok(OptimizerKind::Adam),
            "sgd" => Ok(OptimizerKind::Sgd),
            _ => bail!("unknown optimizer \"{s}\": expected adamw, adam or sgd"),
        }
    }
}

/// How the smoothness prior enters training (ditac.md §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Regulariser {
    /// The paper's λ·θᵀPθ added to the loss; its gradient 2λ·Pθ added to θ's.
    Intended,
    /// What the authors' code applies: no loss term, θ's gradient d·g + 2λ·θ⊙colsum(P) (g: the
    /// data gradient), so a run here follows a run of theirs.
    Reference,
}

impl Regulariser {
    pub fn as_str(self) -> &'static str {
        match self {
            Regulariser::Intended => "intended",
            Regulariser::Reference => "reference",
        }
    }
}

impl std::str::FromStr for Regulariser {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "intended" => Ok(Regulariser::Intended),
            "reference" => Ok(Regulariser::Reference),
            _ => bail!("unknown regulariser \"{s}\": expected reference or intended"),
        }
    }
}

/// Everything that shapes the training graphs and the optimizer.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    pub loss: LossKind,
    /// The prior settings of DiTAC layers that do not set their own.
    pub prior: PriorSettings,
    pub regulariser: Regulariser,
    pub optimizer: OptimizerKind,
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub epsilon: f32,
    pub weight_decay: f32,
    /// Seed of the initial parameters and of the batch order.
    pub seed: u64,
}

impl Default for TrainConfig {
    /// MSE, the reference's prior settings and regulariser (what the authors' trained networks
    /// followed), AdamW with ONNX Runtime's generator defaults (β = 0.9, 0.999, ε = 1e-6, no weight
    /// decay), lr 1e-3, seed 0.
    fn default() -> Self {
        TrainConfig {
            loss: LossKind::Mse,
            prior: PriorSettings::default(),
            regulariser: Regulariser::Reference,
            optimizer: OptimizerKind::AdamW,
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-6,
            weight_decay: 0.0,
            seed: 0,
        }
    }
}
