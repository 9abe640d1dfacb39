//! `ditac train SPEC --data FILE -o MODEL.onnx`: trains a network through ONNX Runtime.
//!
//! With a training-enabled ONNX Runtime (and `ditac` built with `--features training`) the
//! artifacts of `train-artifacts` run in `ort::training::Trainer`. Otherwise (every library on
//! PyPI) the very same training graph runs as a plain inference session and the optimizer step is
//! applied in Rust. Either way the result is the inference model (with `DiTAC` nodes) and a picture
//! of the loss curve; nothing is written when training fails, so the last good model is kept.

use super::runtime::{open_session, ort_env};
use super::train_artifacts::GraphFlags;
use anyhow::{bail, Context, Result};
use clap::Args as ClapArgs;
use ditac_tools::graph::inference_model;
use ditac_tools::params::Params;
use ditac_tools::plot::loss::loss_svg;
use ditac_tools::train::artifacts::{self, portable_training_model, write_atomic};
use ditac_tools::train::data::{self, Batches, Dataset, Targets};
use ditac_tools::train::portable::PortableTrainer;
use ditac_tools::train::LossKind;
use ort::session::Session;
use ort::value::Tensor;
use protobuf::Message;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(ClapArgs)]
pub struct Args {
    /// The network spec (TOML or JSON).
    spec: PathBuf,
    /// Training data: .npz with arrays x [N, input...] and y ([N, out...] for mse, class indices
    /// for cross-entropy), or CSV (input columns, then target columns).
    #[arg(long)]
    data: PathBuf,
    /// The trained inference model to write (MODEL.loss.svg is written beside it).
    #[arg(short = 'o', long = "out")]
    out: PathBuf,
    /// Optimizer steps.
    #[arg(long, default_value_t = 1000)]
    steps: usize,
    /// Samples per step.
    #[arg(long, default_value_t = 98)]
    batch: usize,
    /// Held-out data to report the trained model's MSE (or accuracy) on.
    #[arg(long)]
    test: Option<PathBuf>,
    /// Also write the loss of every step (and the first 1000 batches' sample indices) as JSON.
    #[arg(long)]
    loss_log: Option<PathBuf>,
    /// auto: ONNX Runtime's training API when the library has it, else portable; ort; portable.
    #[arg(long, default_value = "auto")]
    engine: String,
    /// The plugin library.
    #[arg(long, default_value = "target/release/libditac.so")]
    plugin: PathBuf,
    /// ONNX Runtime's C library (default: $ORT_DYLIB_PATH, else .ort/1.32.0/libonnxruntime.so).
    #[arg(long)]
    ort: Option<PathBuf>,
    /// Intra-op threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    flags: GraphFlags,
}

/// `MODEL.onnx` → `MODEL.loss.svg`.
fn svg_path(out: &Path) -> PathBuf {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    out.with_file_name(format!("{stem}.loss.svg"))
}

enum Engine {
    Portable,
    #[cfg_attr(not(feature = "training"), allow(dead_code))]
    Ort,
}

fn choose_engine(want: &str, ort_path: &Path) -> Result<(Engine, String)> {
    let lib = format!("ONNX Runtime at {}", ort_path.display());
    #[cfg(feature = "training")]
    {
        let api = ort::training::training_api();
        match (want, api) {
            ("auto" | "ort", Ok(_)) => {
                return Ok((Engine::Ort, format!("ONNX Runtime training API (ort::training::Trainer), {lib}")))
            }
            ("ort", Err(e)) => bail!("--engine ort: {lib}: {e}"),
            ("auto", Err(e)) => {
                return Ok((
                    Engine::Portable,
                    format!("portable: {lib} says \"{e}\"; the training graph runs as an inference session and the optimizer step in Rust"),
                ))
            }
            _ => {}
        }
    }
    #[cfg(not(feature = "training"))]
    if want == "ort" {
        bail!("--engine ort: this ditac was built without the `training` feature (cargo build --release --features training)");
    }
    match want {
        "portable" => Ok((
            Engine::Portable,
            format!("portable (as asked): {lib}; the training graph runs as an inference session and the optimizer step in Rust"),
        )),
        "auto" => Ok((
            Engine::Portable,
            format!("portable: this ditac was built without the `training` feature; {lib} runs the training graph as an inference session and the optimizer step in Rust"),
        )),
        other => bail!("--engine {other}: expected auto, ort or portable"),
    }
}

struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn new(steps: usize, quiet: bool) -> Progress {
        if quiet {
            return Progress { bar: None };
        }
        let bar = indicatif::ProgressBar::new(steps as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} steps  loss {msg}  [{elapsed_precise}, {per_sec}]",
            )
            .expect("valid template"),
        );
        Progress { bar: Some(bar) }
    }
    fn update(&self, step: usize, steps: usize, loss: f32) {
        if let Some(b) = &self.bar {
            if step.is_multiple_of(50) || step == steps {
                b.set_position(step as u64);
                b.set_message(format!("{loss:.5}"));
            }
        }
    }
    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish();
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    let cfg = args.flags.config()?;
    let (net, init) = args.flags.network(&args.spec)?;
    if args.steps == 0 || args.batch == 0 {
        bail!("--steps and --batch must be positive");
    }
    let a = artifacts::build(&net, &init, &cfg)?;
    let train = data::load(&args.data, &net, cfg.loss)?;
    let test = match &args.test {
        Some(p) => Some(data::load(p, &net, cfg.loss)?),
        None => None,
    };
    let (env, ort_path) = ort_env(args.ort.clone(), &args.plugin, "ditac-train")?;
    let (engine, says) = choose_engine(&args.engine, &ort_path)?;
    println!("engine: {says}");

    let mut batches = Batches::new(train.n, cfg.seed);
    let mut idx = Vec::with_capacity(args.batch);
    let mut losses = Vec::with_capacity(args.steps);
    let mut logged_batches: Vec<Vec<usize>> = Vec::new();
    let progress = Progress::new(args.steps, args.quiet);
    let t0 = Instant::now();
    let trained: Params = match engine {
        Engine::Portable => {
            let bytes = portable_training_model(&a.training)?.write_to_bytes()?;
            let session = open_session(&env, &args.plugin, args.threads, &bytes)
                .context("loading the training graph")?;
            let mut tr =
                PortableTrainer::new(session, a.params.clone(), &init, &cfg, args.batch, &train)?;
            for step in 1..=args.steps {
                batches.next_batch(args.batch, &mut idx);
                if args.loss_log.is_some() && logged_batches.len() < 1000 {
                    logged_batches.push(idx.clone());
                }
                let loss = tr
                    .step(&train, &idx)
                    .with_context(|| diverged(step, &args.out))?;
                losses.push(loss);
                progress.update(step, args.steps, loss);
            }
            tr.params()
        }
        Engine::Ort => {
            #[cfg(feature = "training")]
            {
                ort_trainer::train(
                    &env,
                    &args,
                    &a,
                    &cfg,
                    &train,
                    &mut batches,
                    &mut losses,
                    &mut logged_batches,
                    &progress,
                )?
            }
            #[cfg(not(feature = "training"))]
            unreachable!("the ort engine needs the training feature")
        }
    };
    progress.finish();
    let secs = t0.elapsed().as_secs_f64();
    let model = inference_model(&net, &trained)?;
    write_atomic(&args.out, &model.to_bytes())?;
    let svg = svg_path(&args.out);
    write_atomic(
        &svg,
        loss_svg(&losses, &format!("{} ({})", net.name, cfg.loss.as_str()))?.as_bytes(),
    )?;
    println!(
        "trained {} steps (batch {}) in {secs:.2} s ({:.0} steps/s, {} intra-op thread{}); loss {:.6} → {:.6}",
        args.steps,
        args.batch,
        args.steps as f64 / secs,
        args.threads,
        if args.threads == 1 { "" } else { "s" },
        losses[0],
        losses[losses.len() - 1]
    );
    println!(
        "wrote {} (inference model with DiTAC nodes) and {}",
        args.out.display(),
        svg.display()
    );
    if let Some(t) = &test {
        let s = open_session(&env, &args.plugin, args.threads, &model.to_bytes())?;
        let (mse, acc) = evaluate(s, t, &net)?;
        match cfg.loss {
            LossKind::Mse => println!(
                "test MSE {mse:.6} on {} samples of {}",
                t.n,
                args.test.as_ref().unwrap().display()
            ),
            LossKind::CrossEntropy => println!(
                "test accuracy {:.4} on {} samples of {}",
                acc.unwrap_or(f64::NAN),
                t.n,
                args.test.as_ref().unwrap().display()
            ),
        }
    }
    if let Some(p) = &args.loss_log {
        let log = serde_json::json!({
            "engine": says,
            "seed": cfg.seed,
            "lr": cfg.lr,
            "batch": args.batch,
            "steps": args.steps,
            "seconds": secs,
            "loss": losses,
            "batches": logged_batches,
        });
        write_atomic(p, serde_json::to_string(&log)?.as_bytes())?;
    }
    Ok(())
}

fn diverged(step: usize, out: &Path) -> String {
    let keep = if out.exists() {
        format!(
            "{} was not overwritten (the last good model is kept)",
            out.display()
        )
    } else {
        format!("nothing was written to {}", out.display())
    };
    format!("training failed at step {step}; {keep}")
}

/// Runs the inference model on `t`: (MSE against the targets, accuracy for class targets).
fn evaluate(
    mut s: Session,
    t: &Dataset,
    net: &ditac_tools::spec::Network,
) -> Result<(f64, Option<f64>)> {
    let mut xs = vec![t.n];
    xs.extend(&t.x_shape);
    let x = Tensor::from_array((xs, t.x.clone()))?;
    let out = s.run(ort::inputs!["x" => x])?;
    let y = out["y"].try_extract_tensor::<f32>()?.1.to_vec();
    match &t.y {
        Targets::Values(v) => {
            let mse = y
                .iter()
                .zip(v)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>()
                / v.len() as f64;
            Ok((mse, None))
        }
        Targets::Classes(c) => {
            let k = net.output()[0];
            let correct = c
                .iter()
                .enumerate()
                .filter(|(i, &ci)| {
                    let row = &y[i * k..(i + 1) * k];
                    let arg = (0..k).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
                    arg as i64 == ci
                })
                .count();
            Ok((f64::NAN, Some(correct as f64 / c.len() as f64)))
        }
    }
}

#[cfg(feature = "training")]
mod ort_trainer {
    //! The `ort::training::Trainer` path (a training-enabled ONNX Runtime).
    use super::*;
    use ditac_tools::train::artifacts::Artifacts;
    use ditac_tools::train::TrainConfig;
    use ort::memory::Allocator;
    use ort::session::SessionInputValue;
    use ort::training::{Checkpoint, Trainer};

    #[allow(clippy::too_many_arguments)]
    pub fn train(
        env: &ort::environment::Environment,
        args: &Args,
        a: &Artifacts,
        cfg: &TrainConfig,
        train: &Dataset,
        batches: &mut Batches,
        losses: &mut Vec<f32>,
        logged: &mut Vec<Vec<usize>>,
        progress: &Progress,
    ) -> Result<Params> {
        let dir = std::env::temp_dir().join(format!("ditac-train-{}", std::process::id()));
        artifacts::write(a, &dir)?;
        let ckpt = Checkpoint::load(dir.join("checkpoint"))?;
        let b = Session::builder(env)?
            .with_intra_threads(args.threads)
            .map_err(ort::Error::<()>::from)?
            .with_operator_library(&args.plugin)
            .map_err(ort::Error::<()>::from)?;
        let trainer = Trainer::new(
            b,
            Allocator::default(),
            ckpt,
            dir.join("training_model.onnx"),
            dir.join("eval_model.onnx"),
            dir.join("optimizer_model.onnx"),
        )?;
        let mut opt = trainer.optimizer();
        opt.set_lr(cfg.lr)?;
        let mut idx = Vec::new();
        let (xl, yl) = (train.x_len(), train.y_len());
        let mut xb = vec![0.0f32; args.batch * xl];
        let mut yv = vec![0.0f32; args.batch * yl.max(1)];
        let mut yc = vec![0i64; args.batch];
        for step in 1..=args.steps {
            batches.next_batch(args.batch, &mut idx);
            if args.loss_log.is_some() && logged.len() < 1000 {
                logged.push(idx.clone());
            }
            train.gather(&idx, &mut xb, &mut yv, &mut yc);
            let mut xs = vec![args.batch];
            xs.extend(&train.x_shape);
            let x = Tensor::from_array((xs, xb.clone()))?;
            let target: SessionInputValue = match &train.y {
                Targets::Values(_) => {
                    let mut ys = vec![args.batch];
                    ys.extend(&train.y_shape);
                    Tensor::from_array((ys, yv.clone()))?.into()
                }
                Targets::Classes(_) => Tensor::from_array((vec![args.batch], yc.clone()))?.into(),
            };
            let out = trainer.step([SessionInputValue::from(x)], [target])?;
            let loss = out[0].try_extract_tensor::<f32>()?.1[0];
            if !loss.is_finite() {
                return Err(anyhow::anyhow!(
                    "training diverged: the loss is {loss} (try a smaller --lr)"
                ))
                .context(diverged(step, &args.out));
            }
            losses.push(loss);
            opt.step()?;
            opt.reset_grad()?;
            progress.update(step, args.steps, loss);
        }
        let alloc = Allocator::default();
        let mut out = Params::default();
        for p in &a.params {
            let t = trainer.checkpoint().get_parameter(&p.key, &alloc)?;
            let v = t.try_extract_tensor::<f32>()?.1.to_vec();
            out.insert(
                p.key.clone(),
                ditac_tools::params::Tensor::new(p.shape.clone(), v),
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
        Ok(out)
    }
}
