//! Training DiTAC networks through ONNX Runtime.
//!
//! ONNX Runtime cannot differentiate a custom op, so the training graphs written here carry their
//! backward explicitly: standard ops per layer type and `ai.ditac.DiTACGrad` for DiTAC
//! ([`backward`]), the loss with the smoothness prior ([`loss`]). [`artifacts`] writes the four files
//! ONNX Runtime's training API consumes, with the conventions of its own generator; [`checkpoint`]
//! reads and writes its flatbuffer checkpoint. Where the loaded ONNX Runtime has no training API
//! (every build published on PyPI since 1.19.2), [`portable`] runs the very same training graph in
//! a plain inference session and applies the optimizer step in Rust ([`optimizer`]). Both engines
//! implement [`engine::Engine`], and [`engine::train`] is the one training loop.

pub mod artifacts;
pub mod backward;
pub mod checkpoint;
pub mod data;
pub mod engine;
pub mod loss;
pub mod optimizer;
pub mod portable;

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
    AdamW,
    Sgd,
}

impl OptimizerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OptimizerKind::AdamW => "adamw",
            OptimizerKind::Sgd => "sgd",
        }
    }
}

impl std::str::FromStr for OptimizerKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "adamw" => Ok(OptimizerKind::AdamW),
            "sgd" => Ok(OptimizerKind::Sgd),
            _ => bail!("unknown optimizer \"{s}\": expected adamw or sgd"),
        }
    }
}

/// Everything that shapes the training graphs and the optimizer.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    pub loss: LossKind,
    /// λ of the smoothness prior λ·θᵀPθ (0: no prior).
    pub lambda: f32,
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
    /// MSE, λ = 0.1 (the reference's `lambda_reg_loss`), AdamW with ONNX Runtime's generator
    /// defaults (β = 0.9, 0.999, ε = 1e-6, no weight decay), lr 1e-3, seed 0.
    fn default() -> Self {
        TrainConfig {
            loss: LossKind::Mse,
            lambda: 0.1,
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
