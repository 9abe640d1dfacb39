//! The training loop, written once for every engine: the portable path ([`super::portable`]) and
//! ONNX Runtime's training API ([`OrtEngine`], feature `training`) both implement [`Engine`]; the
//! loop draws the seeded batches, steps the engine and collects the losses. Callers (the `ditac
//! train` command, benchmarks, tests) add their own flags, progress display and printing.

use super::data::{Batches, Dataset, Targets};
use crate::params::Params;
use anyhow::{Context, Result};
use ort::session::Session;
use ort::value::Tensor;
use std::time::Instant;

/// Something that takes optimizer steps on batches of a data set.
pub trait Engine {
    /// One step on the samples `idx` of `data`: returns the loss before the update. A non-finite
    /// loss is an error.
    fn step(&mut self, data: &Dataset, idx: &[usize]) -> Result<f32>;
    /// The current parameters (ONNX shapes).
    fn params(&self) -> Result<Params>;
}

/// What [`train`] does.
#[derive(Debug, Clone)]
pub struct LoopOptions {
    pub steps: usize,
    pub batch: usize,
    /// Seed of the batch order.
    pub seed: u64,
    /// How many of the first batches' sample indices to keep (for a loss log).
    pub keep_batches: usize,
}

/// What [`train`] returns.
#[derive(Debug, Clone)]
pub struct LoopResult {
    pub params: Params,
    /// The loss of every step.
    pub losses: Vec<f32>,
    /// The sample indices of the first `keep_batches` batches.
    pub batches: Vec<Vec<usize>>,
    pub seconds: f64,
}

/// Runs `opts.steps` steps of `engine` on seeded batches of `data` (a Fisher–Yates permutation per
/// epoch), calling `on_step(step, loss)` after each. A failing step is an error that names it.
pub fn train(
    engine: &mut dyn Engine,
    data: &Dataset,
    opts: &LoopOptions,
    mut on_step: impl FnMut(usize, f32),
) -> Result<LoopResult> {
    if opts.steps == 0 || opts.batch == 0 {
        anyhow::bail!("--steps and --batch must be positive");
    }
    let mut batches = Batches::new(data.n, opts.seed);
    let mut idx = Vec::with_capacity(opts.batch);
    let mut losses = Vec::with_capacity(opts.steps);
    let mut kept = Vec::new();
    let t0 = Instant::now();
    for step in 1..=opts.steps {
        batches.next_batch(opts.batch, &mut idx);
        if kept.len() < opts.keep_batches {
            kept.push(idx.clone());
        }
        let loss = engine
            .step(data, &idx)
            .with_context(|| format!("training failed at step {step}"))?;
        losses.push(loss);
        on_step(step, loss);
    }
    let seconds = t0.elapsed().as_secs_f64();
    Ok(LoopResult {
        params: engine.params()?,
        losses,
        batches: kept,
        seconds,
    })
}

/// The quality of a model on `t` (a session of the inference model, input `x`, output `y`).
#[derive(Debug, Clone, Copy)]
pub enum Score {
    Mse(f64),
    Accuracy(f64),
}

/// Runs the inference model in `s` (input `input`, output `output`) on every sample of `t`: MSE
/// against float targets, accuracy (arg-max of the class scores) against class targets.
pub fn evaluate(s: &mut Session, t: &Dataset, input: &str, output: &str) -> Result<Score> {
    let mut xs = vec![t.n];
    xs.extend(&t.x_shape);
    let x = Tensor::from_array((xs, t.x.clone()))?;
    let out = s.run(vec![(
        input.to_string(),
        ort::session::SessionInputValue::from(x),
    )])?;
    let y = out[output].try_extract_tensor::<f32>()?.1.to_vec();
    Ok(match &t.y {
        Targets::Values(v) => Score::Mse(
            y.iter()
                .zip(v)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>()
                / v.len() as f64,
        ),
        Targets::Classes(c) => {
            let k = y.len() / t.n.max(1);
            let correct = c
                .iter()
                .enumerate()
                .filter(|(i, &ci)| {
                    let row = &y[i * k..(i + 1) * k];
                    let arg = (0..k).max_by(|&a, &b| row[a].total_cmp(&row[b]));
                    arg.map(|a| a as i64) == Some(ci)
                })
                .count();
            Score::Accuracy(correct as f64 / c.len() as f64)
        }
    })
}

#[cfg(feature = "training")]
pub use ort_engine::OrtEngine;

#[cfg(feature = "training")]
mod ort_engine {
    //! The engine of a training-enabled ONNX Runtime: `ort::training::Trainer` on the four
    //! artifacts (written to a temporary folder, removed on drop).
    use super::*;
    use crate::train::artifacts::{self, Artifacts, ParamInfo};
    use crate::train::TrainConfig;
    use ort::memory::Allocator;
    use ort::session::SessionInputValue;
    use ort::training::{Checkpoint, Trainer};
    use std::path::{Path, PathBuf};

    pub struct OrtEngine {
        trainer: Trainer,
        infos: Vec<ParamInfo>,
        dir: PathBuf,
        batch: usize,
        xb: Vec<f32>,
        yv: Vec<f32>,
        yc: Vec<i64>,
    }

    impl OrtEngine {
        /// Loads the artifacts `a` into a `Trainer` (with the plugin registered) at learning rate
        /// `cfg.lr`, for batches of `batch` samples shaped like `data`'s.
        pub fn new(
            env: &ort::environment::Environment,
            plugin: &Path,
            threads: usize,
            a: &Artifacts,
            cfg: &TrainConfig,
            batch: usize,
            data: &Dataset,
        ) -> Result<OrtEngine> {
            let dir = std::env::temp_dir().join(format!(
                "ditac-train-{}-{:p}",
                std::process::id(),
                a as *const _
            ));
            artifacts::write(a, &dir)?;
            let ckpt = Checkpoint::load(dir.join("checkpoint"))?;
            let b = Session::builder(env)?
                .with_intra_threads(threads)
                .map_err(ort::Error::<()>::from)?
                .with_operator_library(plugin)
                .map_err(ort::Error::<()>::from)?;
            let trainer = Trainer::new(
                b,
                Allocator::default(),
                ckpt,
                dir.join("training_model.onnx"),
                dir.join("eval_model.onnx"),
                dir.join("optimizer_model.onnx"),
            )?;
            trainer.optimizer().set_lr(cfg.lr)?;
            Ok(OrtEngine {
                trainer,
                infos: a.params.clone(),
                dir,
                batch,
                xb: vec![0.0; batch * data.x_len()],
                yv: vec![0.0; batch * data.y_len().max(1)],
                yc: vec![0; batch],
            })
        }
    }

    impl Drop for OrtEngine {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    impl Engine for OrtEngine {
        fn step(&mut self, data: &Dataset, idx: &[usize]) -> Result<f32> {
            if idx.len() != self.batch {
                anyhow::bail!(
                    "batch of {} samples: this trainer takes {}",
                    idx.len(),
                    self.batch
                );
            }
            data.gather(idx, &mut self.xb, &mut self.yv, &mut self.yc);
            let mut xs = vec![self.batch];
            xs.extend(&data.x_shape);
            let x = Tensor::from_array((xs, self.xb.clone()))?;
            let target: SessionInputValue = match &data.y {
                Targets::Values(_) => {
                    let mut ys = vec![self.batch];
                    ys.extend(&data.y_shape);
                    Tensor::from_array((ys, self.yv.clone()))?.into()
                }
                Targets::Classes(_) => {
                    Tensor::from_array((vec![self.batch], self.yc.clone()))?.into()
                }
            };
            let out = self.trainer.step([SessionInputValue::from(x)], [target])?;
            let loss = out[0].try_extract_tensor::<f32>()?.1[0];
            if !loss.is_finite() {
                anyhow::bail!("training diverged: the loss is {loss} (try a smaller --lr)");
            }
            let mut opt = self.trainer.optimizer();
            opt.step()?;
            opt.reset_grad()?;
            Ok(loss)
        }

        fn params(&self) -> Result<Params> {
            let alloc = Allocator::default();
            let mut out = Params::default();
            for p in &self.infos {
                let t = self.trainer.checkpoint().get_parameter(&p.key, &alloc)?;
                let v = t.try_extract_tensor::<f32>()?.1.to_vec();
                out.insert(
                    p.key.clone(),
                    crate::params::Tensor::new(p.shape.clone(), v),
                );
            }
            Ok(out)
        }
    }
}
