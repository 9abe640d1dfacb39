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
use ditac_tools::plot::loss::loss_svg;
use ditac_tools::train::artifacts::{portable_training_model, write_atomic};
use ditac_tools::train::data;
use ditac_tools::train::engine::{self, Engine, LoopOptions, Score};
use ditac_tools::train::portable::PortableTrainer;
use protobuf::Message;
use std::path::{Path, PathBuf};

#[derive(ClapArgs)]
pub struct Args {
    /// The network: a spec (TOML or JSON) or an ONNX model with DiTAC nodes (.onnx; one input
    /// [N, ...], one output; the loss is applied to its output).
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
    /// Held-out data to report the trained model's MSE (or accuracy) on (default: none).
    #[arg(long)]
    test: Option<PathBuf>,
    /// Also write the loss of every step (and the first 1000 batches' sample indices) as JSON
    /// (default: not written).
    #[arg(long)]
    loss_log: Option<PathBuf>,
    /// auto: ONNX Runtime's training API when the library has it, else portable; ort; portable.
    #[arg(long, default_value = "auto")]
    engine: String,
    /// Intra-op threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    #[command(flatten, next_help_heading = "Training graph")]
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

enum EngineKind {
    Portable,
    #[cfg_attr(not(feature = "training"), allow(dead_code))]
    Ort,
}

fn choose_engine(want: &str, ort_path: &Path) -> Result<(EngineKind, String)> {
    let lib = format!("ONNX Runtime at {}", ort_path.display());
    #[cfg(feature = "training")]
    {
        let api = ort::training::training_api();
        match (want, api) {
            ("auto" | "ort", Ok(_)) => {
                return Ok((EngineKind::Ort, format!("ONNX Runtime training API (ort::training::Trainer), {lib}")))
            }
            ("ort", Err(e)) => bail!("--engine ort: {lib}: {e}"),
            ("auto", Err(e)) => {
                return Ok((
                    EngineKind::Portable,
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
            EngineKind::Portable,
            format!("portable (as asked): {lib}; the training graph runs as an inference session and the optimizer step in Rust"),
        )),
        "auto" => Ok((
            EngineKind::Portable,
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
    if args.steps == 0 || args.batch == 0 {
        bail!("--steps and --batch must be positive");
    }
    let (env, ort_path, plugin) = ort_env(&args.flags.runtime, "ditac-train")?;
    let plugin = plugin.as_path();
    let source = args.flags.source(&args.spec, &cfg, Some((&env, plugin)))?;
    let init = source.init();
    let a = source.artifacts(&cfg)?;
    let (xs, ys) = source.io_shapes();
    let train = data::load_shaped(&args.data, &xs, &ys, cfg.loss)?;
    let test = match &args.test {
        Some(p) => Some(data::load_shaped(p, &xs, &ys, cfg.loss)?),
        None => None,
    };
    // Every output is checked (its folder created) before the first step, so that a bad path
    // stops the command now rather than after the whole run.
    let svg = svg_path(&args.out);
    for p in [Some(&args.out), Some(&svg), args.loss_log.as_ref()]
        .into_iter()
        .flatten()
    {
        ditac_tools::output::Output::new(p)?;
    }
    let (engine, says) = choose_engine(&args.engine, &ort_path)?;
    println!("engine: {says}");

    let mut engine: Box<dyn Engine> = match engine {
        EngineKind::Portable => {
            let bytes = portable_training_model(&a.training)?.write_to_bytes()?;
            let session = open_session(&env, plugin, args.threads, &bytes)
                .context("loading the training graph")?;
            Box::new(PortableTrainer::new(
                session,
                a.params.clone(),
                init,
                &cfg,
                args.batch,
                &train,
            )?)
        }
        EngineKind::Ort => {
            #[cfg(feature = "training")]
            {
                Box::new(ditac_tools::train::engine::OrtEngine::new(
                    &env,
                    plugin,
                    args.threads,
                    &a,
                    &cfg,
                    args.batch,
                    &train,
                )?)
            }
            #[cfg(not(feature = "training"))]
            unreachable!("the ort engine needs the training feature")
        }
    };
    let progress = Progress::new(args.steps, args.quiet);
    let opts = LoopOptions {
        steps: args.steps,
        batch: args.batch,
        seed: cfg.seed,
        keep_batches: if args.loss_log.is_some() { 1000 } else { 0 },
    };
    let run = engine::train(engine.as_mut(), &train, &opts, |step, loss| {
        progress.update(step, args.steps, loss)
    })
    .with_context(|| not_written(&args.out))?;
    progress.finish();
    let (losses, secs) = (&run.losses, run.seconds);
    let model = source.inference_bytes(&run.params)?;
    write_atomic(&args.out, &model)?;
    write_atomic(
        &svg,
        loss_svg(
            losses,
            &format!("{} ({})", source.name(), cfg.loss.as_str()),
        )?
        .as_bytes(),
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
    if let (Some(t), Some(path)) = (&test, &args.test) {
        let mut s = open_session(&env, plugin, args.threads, &model)?;
        let (input, output) = source.io_names();
        match engine::evaluate(&mut s, t, &input, &output)? {
            Score::Mse(mse) => {
                println!("test MSE {mse:.6} on {} samples of {}", t.n, path.display())
            }
            Score::Accuracy(acc) => println!(
                "test accuracy {acc:.4} on {} samples of {}",
                t.n,
                path.display()
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
            "batches": run.batches,
        });
        write_atomic(p, serde_json::to_string(&log)?.as_bytes())?;
    }
    Ok(())
}

/// What a failed run left behind.
fn not_written(out: &Path) -> String {
    if out.exists() {
        format!(
            "{} was not overwritten (the last good model is kept)",
            out.display()
        )
    } else {
        format!("nothing was written to {}", out.display())
    }
}
