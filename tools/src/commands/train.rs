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
use ditac_tools::train::artifacts::{portable_training_model, write_atomic};
use ditac_tools::train::data;
use ditac_tools::train::engine::{self, Engine, LoopOptions, Score};
use ditac_tools::train::portable::PortableTrainer;
use protobuf::Message;
use std::path::{Path, PathBuf};

#[derive(ClapArgs)]
pub struct Args {
    /// The network: a spec (TOML or JSON) or an ONNX model with DiTAC nodes (.onnx).
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
    let plugin = &args.flags.plugin;
    let (env, ort_path) = ort_env(args.flags.ort.clone(), plugin, "ditac-train")?;
    let source = args.flags.source(&args.spec, &cfg, Some(&env))?;
    let init = source.init();
    let a = source.artifacts(&cfg)?;
    let (xs, ys) = source.io_shapes();
    let train = data::load_shaped(&args.data, &xs, &ys, cfg.loss)?;
    let test = match &args.test {
        Some(p) => Some(data::load_shaped(p, &xs, &ys, cfg.loss)?),
        None => None,
    };
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
    let svg = svg_path(&args.out);
    write_atomic(
        &svg,
        loss_svg(
            losses,
            &format!("{} ({})", source.name(), cfg.loss.as_str()),
        )
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

/// A small SVG of the loss curve (log scale when every loss is positive): the raw losses and an
/// exponential moving average.
pub fn loss_svg(losses: &[f32], title: &str) -> String {
    let (w, h) = (720.0f64, 420.0f64);
    let (l, r, t, b) = (70.0, 20.0, 40.0, 50.0);
    let log = losses.iter().all(|&v| v > 0.0);
    let f = |v: f32| if log { (v as f64).log10() } else { v as f64 };
    let vals: Vec<f64> = losses.iter().map(|&v| f(v)).collect();
    let (mut lo, mut hi) = vals
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        lo -= 0.5;
        hi += 0.5;
    }
    let n = vals.len().max(2);
    let px = |i: usize| l + (w - l - r) * i as f64 / (n - 1) as f64;
    let py = |v: f64| t + (h - t - b) * (hi - v) / (hi - lo);
    let stride = (vals.len() / 1500).max(1);
    let poly = |vs: &[f64]| -> String {
        vs.iter()
            .enumerate()
            .step_by(stride)
            .map(|(i, &v)| format!("{:.1},{:.1}", px(i), py(v)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut ema = Vec::with_capacity(vals.len());
    let mut e = vals.first().copied().unwrap_or(0.0);
    let alpha = 2.0 / (1.0 + (vals.len() as f64 / 50.0).max(1.0));
    for &v in &vals {
        e += alpha * (v - e);
        ema.push(e);
    }
    let label = |v: f64| {
        if log {
            format!("{:.3e}", 10f64.powf(v))
        } else {
            format!("{v:.4}")
        }
    };
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">training loss: {}</text>\n",
        w / 2.0,
        xml(title)
    );
    // Axes, ticks and labels.
    s += &format!(
        "<line x1=\"{l}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n<line x1=\"{l}\" y1=\"{t}\" x2=\"{l}\" y2=\"{}\" stroke=\"black\"/>\n",
        h - b, w - r, h - b, h - b
    );
    for k in 0..=4 {
        let v = lo + (hi - lo) * k as f64 / 4.0;
        let y = py(v);
        s += &format!(
            "<line x1=\"{}\" y1=\"{y:.1}\" x2=\"{l}\" y2=\"{y:.1}\" stroke=\"black\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            l - 5.0, l - 8.0, y + 4.0, label(v)
        );
        let i = (losses.len().saturating_sub(1)) * k / 4;
        let x = px(i);
        s += &format!(
            "<line x1=\"{x:.1}\" y1=\"{}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"black\"/><text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            h - b, h - b + 5.0, h - b + 20.0, i + 1
        );
    }
    s += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">step</text>\n<text x=\"16\" y=\"{}\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">loss{}</text>\n",
        (l + w - r) / 2.0, h - 10.0, (t + h - b) / 2.0, (t + h - b) / 2.0, if log { " (log scale)" } else { "" }
    );
    s += &format!(
        "<polyline fill=\"none\" stroke=\"#9ecae1\" stroke-width=\"1\" points=\"{}\"/>\n",
        poly(&vals)
    );
    s += &format!(
        "<polyline fill=\"none\" stroke=\"#08519c\" stroke-width=\"2\" points=\"{}\"/>\n</svg>\n",
        poly(&ema)
    );
    s
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
