//! `ditac demo`: loads the example models of `models/` into ONNX Runtime with the plugin, runs them
//! on a grid of inputs, and shows what they compute, how they agree with an independent evaluation
//! by the math core, and how fast they run.

use anyhow::{bail, Context, Result};
use clap::Args as ClapArgs;
use ditac::core::{basis, BasisKind, Warps};
use ditac_tools::onnx::{DITAC, DITAC_LUT};
use onnx_protobuf::ModelProto;
use ort::session::Session;
use ort::value::Tensor;
use protobuf::Message;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::examples::{layer_attrs, write_models, EXAMPLE_SEED, HIDDEN};
use ditac_tools::runtime::RuntimeFlags;

#[derive(ClapArgs)]
pub struct Args {
    #[command(flatten)]
    runtime: RuntimeFlags,
    /// Folder with ditac_mlp.onnx and ditac_mlp_lut.onnx (and optionally ditac_mlp_lowered.onnx);
    /// default: the example models (those of models/), written afresh into a temporary folder.
    #[arg(long)]
    models: Option<PathBuf>,
    /// Timed runs per model (0: no timing; under emulation, say).
    #[arg(long, default_value_t = 20)]
    repeats: u32,
    /// Write each model's outputs on the 65536 points to FILE (JSON), for `--against` in a run on
    /// another machine or architecture. Default: not written.
    #[arg(long, value_name = "FILE")]
    save: Option<PathBuf>,
    /// Compare each model's outputs with those of another run (`--save`): fails where they differ
    /// by more than the bound the demo holds ONNX Runtime to against the math core (1e-3).
    /// Default: no comparison.
    #[arg(long, value_name = "FILE")]
    against: Option<PathBuf>,
}

/// The bound on |ONNX Runtime − math core evaluated independently|, and on two runs' difference
/// (`--against`): Gemm sums in another order than the independent evaluation (or than another
/// machine's Gemm), and a point can land on the neighbouring table node, which moves y by up to
/// about 1e-4.
const TOLERANCE: f32 = 1e-3;

/// The outputs of another run (`--save`) against these: per model, the largest difference and
/// how many outputs are bit for bit the same; an error where a model is missing or differs beyond
/// [`TOLERANCE`].
fn compare_runs(path: &Path, ours: &[(&str, &[f32])]) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let theirs: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not the JSON of `ditac demo --save`", path.display()))?;
    println!("\nagainst the run saved in {}:", path.display());
    let mut worst = 0.0f32;
    for &(name, y) in ours {
        let other: Vec<f32> = theirs[name]
            .as_array()
            .with_context(|| format!("{}: no outputs of the {name} model", path.display()))?
            .iter()
            .map(|v| v.as_f64().map(|f| f as f32).unwrap_or(f32::NAN))
            .collect();
        if other.len() != y.len() {
            bail!(
                "{}: {} outputs of the {name} model, {} here",
                path.display(),
                other.len(),
                y.len()
            );
        }
        let same = y
            .iter()
            .zip(&other)
            .filter(|(a, b)| a.to_bits() == b.to_bits())
            .count();
        let diff = y
            .iter()
            .zip(&other)
            .map(|(a, b)| {
                if a.is_nan() && b.is_nan() {
                    0.0
                } else {
                    (a - b).abs()
                }
            })
            .fold(
                0.0f32,
                |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) },
            );
        println!(
            "  {name:9} model: max |here − there| = {diff:.3e}, {same} of {} outputs bit for bit",
            y.len()
        );
        worst = worst.max(diff);
    }
    if worst > TOLERANCE {
        bail!(
            "the outputs differ from {} by more than {TOLERANCE:e}",
            path.display()
        );
    }
    Ok(())
}

/// A temporary folder, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        let base = std::env::temp_dir();
        for i in 0..100u32 {
            let d = base.join(format!("ditac-demo-{}-{i}", std::process::id()));
            if std::fs::create_dir(&d).is_ok() {
                return Ok(TempDir(d));
            }
        }
        bail!("cannot make a temporary folder in {}", base.display())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn initializers(path: &Path) -> Result<HashMap<String, Vec<f32>>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let m = ModelProto::parse_from_bytes(&bytes)
        .with_context(|| format!("{} is not an ONNX model", path.display()))?;
    let g = m.graph.as_ref().context("model without graph")?;
    Ok(g.initializer
        .iter()
        .map(|t| {
            let v = if t.raw_data.is_empty() {
                t.float_data.clone()
            } else {
                t.raw_data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            };
            (t.name.clone(), v)
        })
        .collect())
}

/// The same network, evaluated by the math core alone (no ONNX Runtime).
fn reference(w: &HashMap<String, Vec<f32>>, x: &[f32]) -> Result<Vec<f32>> {
    let attrs = layer_attrs();
    let b = basis::build(attrs.tess(), true, BasisKind::Qr)?;
    let d = attrs.theta_len();
    let t1 = &w["act1.thetas"];
    let act1 = Warps::<f32>::from_theta(&attrs, &b, &[t1.len()], t1, false)?;
    let act2 = Warps::<f32>::from_theta(&attrs, &b, &[HIDDEN, d], &w["act2.thetas"], false)?;
    let dense = |inp: &[f32], wt: &[f32], bias: &[f32]| -> Vec<f32> {
        let k = inp.len();
        bias.iter()
            .enumerate()
            .map(|(o, &bo)| bo + (0..k).map(|i| wt[o * k + i] * inp[i]).sum::<f32>())
            .collect()
    };
    let mut out = Vec::new();
    for p in x.chunks_exact(2) {
        let mut h = dense(p, &w["fc1.weight"], &w["fc1.bias"]);
        let mut a = vec![0.0; HIDDEN];
        act1.row(0).forward(&h, &mut a);
        h = dense(&a, &w["fc2.weight"], &w["fc2.bias"]);
        for c in 0..HIDDEN {
            act2.row(c).forward(&h[c..c + 1], &mut a[c..c + 1]);
        }
        out.push(dense(&a, &w["fc3.weight"], &w["fc3.bias"])[0]);
    }
    Ok(out)
}

fn run_model(s: &mut Session, x: &[f32]) -> Result<Vec<f32>> {
    let t = Tensor::from_array((vec![x.len() / 2, 2], x.to_vec()))?;
    let o = s.run(ort::inputs!["x" => t])?;
    Ok(o["y"].try_extract_tensor::<f32>()?.1.to_vec())
}

pub fn run(args: Args) -> Result<()> {
    // The --save file is checked (its folder made) before any work, as every command's outputs,
    // and later written through the same atomic writer.
    let save = args
        .save
        .as_deref()
        .map(ditac_tools::output::Output::new)
        .transpose()?;
    let (env, ort_path, plugin) = super::runtime::ort_env(&args.runtime, "ditac-demo")?;
    // Without --models the demo makes its models (byte for byte those of models/, tested), so that
    // it runs wherever the program is installed.
    let made;
    let models = match &args.models {
        Some(d) => d.as_path(),
        None => {
            made = TempDir::new()?;
            write_models(&made.0, None, EXAMPLE_SEED)?;
            made.0.as_path()
        }
    };
    let full = models.join("ditac_mlp.onnx");
    let frozen = models.join("ditac_mlp_lut.onnx");
    let weights = initializers(&full)?;
    let open = |p: &Path| -> Result<Session> {
        let b = Session::builder(&env)?
            .with_intra_threads(1)
            .map_err(ort::Error::<()>::from)?;
        let mut b = b
            .with_operator_library(&plugin)
            .map_err(ort::Error::<()>::from)?;
        b.commit_from_file(p)
            .with_context(|| format!("loading {}", p.display()))
    };
    let (mut s_full, mut s_lut) = (open(&full)?, open(&frozen)?);
    // The lowered model (standard operators only) runs without the plugin, when it is there.
    let lowered = models.join("ditac_mlp_lowered.onnx");
    let mut s_low = if lowered.exists() {
        let mut b = Session::builder(&env)?
            .with_intra_threads(1)
            .map_err(ort::Error::<()>::from)?;
        Some(
            b.commit_from_file(&lowered)
                .with_context(|| format!("loading {}", lowered.display()))?,
        )
    } else {
        None
    };
    println!(
        "ONNX Runtime {} from {}, plugin {}",
        ort::info(),
        ort_path.display(),
        plugin.display()
    );
    println!("model {}: 2 -> Gemm 16 -> DiTAC (one θ, tess 10, [a,b]=[-3,3]) -> Gemm 16 -> DiTAC (θ per channel) -> Gemm 1", full.display());
    println!(
        "model {}: the same network frozen to DiTACLut tables",
        frozen.display()
    );
    if s_low.is_some() {
        println!(
            "model {}: the same network lowered to standard ONNX operators (run without the plugin)",
            lowered.display()
        );
    }
    println!();

    let n = 9;
    let grid: Vec<f32> = (0..n * n)
        .flat_map(|i| {
            [
                -1.0 + 2.0 * (i % n) as f32 / (n - 1) as f32,
                -1.0 + 2.0 * (i / n) as f32 / (n - 1) as f32,
            ]
        })
        .collect();
    let y = run_model(&mut s_full, &grid)?;
    println!("y(x1, x2) on a 9×9 grid of [-1,1]² (rows: x2, columns: x1):");
    for r in (0..n).rev() {
        let row: Vec<String> = (0..n).map(|c| format!("{:8.4}", y[r * n + c])).collect();
        println!("  x2={:5.2} {}", grid[2 * r * n + 1], row.join(""));
    }

    let big: Vec<f32> = (0..2 * 65536)
        .map(|i| ((i as f32) * 0.618_034).fract() * 2.0 - 1.0)
        .collect();
    let y_full = run_model(&mut s_full, &big)?;
    let y_lut = run_model(&mut s_lut, &big)?;
    let y_ref = reference(&weights, &big)?;
    // The lowered graph is the plugin's arithmetic operation by operation: the same bits expected.
    let y_low = match s_low.as_mut() {
        Some(s) => Some(run_model(s, &big)?),
        None => None,
    };
    let low_diff = y_low.as_ref().map(|y| {
        y.iter()
            .zip(&y_full)
            .map(|(a, b)| ((a - b).abs() / b.abs().max(1.0)) as f64)
            .fold(0.0f64, f64::max)
    });
    let same = y_full
        .iter()
        .zip(&y_lut)
        .all(|(a, b)| a.to_bits() == b.to_bits());
    let max_diff = y_full
        .iter()
        .zip(&y_ref)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!("\nchecks on 65536 points:");
    println!(
        "  DiTACLut model == DiTAC model bit for bit: {}",
        if same { "yes" } else { "NO" }
    );
    println!("  max |ONNX Runtime − math core evaluated independently| = {max_diff:.3e}");
    let mut timed = vec![(DITAC, &mut s_full), (DITAC_LUT, &mut s_lut)];
    if let Some(s) = s_low.as_mut() {
        timed.push(("lowered", s));
    }
    for (name, s) in timed.into_iter().filter(|_| args.repeats > 0) {
        let t = Instant::now();
        let reps = args.repeats;
        for _ in 0..reps {
            run_model(s, &big)?;
        }
        let dt = t.elapsed().as_secs_f64() / reps as f64;
        println!(
            "  {name:9} model: {:.2} ms per batch of 65536 (1 thread)",
            dt * 1e3
        );
    }
    if let Some(l) = low_diff {
        println!(
            "  lowered model (standard ONNX operators, no plugin) vs DiTAC model: max relative difference {l:.1e} ({})",
            if l == 0.0 { "bit for bit" } else { "DIFFERENT" }
        );
    }
    let mut outputs = vec![("DiTAC", &y_full[..]), ("DiTACLut", &y_lut[..])];
    if let Some(y) = &y_low {
        outputs.push(("lowered", &y[..]));
    }
    if let Some(out) = &save {
        let obj: serde_json::Map<String, serde_json::Value> = outputs
            .iter()
            .map(|&(name, y)| (name.to_string(), serde_json::json!(y)))
            .collect();
        out.write_bytes(serde_json::Value::Object(obj).to_string().as_bytes())?;
    }
    if !same || low_diff.is_some_and(|l| l != 0.0) || max_diff > TOLERANCE {
        bail!("the demo's checks failed");
    }
    if let Some(path) = &args.against {
        compare_runs(path, &outputs)?;
    }
    Ok(())
}
