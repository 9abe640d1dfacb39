//! The benchmark behind `ditac bench`: DiTAC against ONNX Runtime's own `Gelu`, in one process and
//! one run, on the same random input, through real ONNX Runtime sessions with the plugin loaded. Rows: `Identity` (the
//! memory floor), `Gelu` opset 20 (the anchor), `DiTAC` nearest / linear / exact, `DiTACLut`,
//! `DiTACGrad` (dX and dθ) and the `lower`ed standard-ops graph where available; at each thread
//! count asked for. Runs alternate between the rows (so that a slow phase of a shared machine hits
//! every row alike); the figures are medians, and ratios to `Gelu`'s median at the same thread
//! count. Peak memory: the rise of the process's resident set (VmHWM, reset before each run
//! through /proc/self/clear_refs) over its size before the run, largest over the runs.

use crate::model::{ditac_attrs, lut_attrs, ElemType, ModelBuilder, DITAC_DOMAIN};
use crate::onnx::{DITAC, DITAC_GRAD, DITAC_LUT};
use anyhow::{bail, Context, Result};
use ditac::core::{basis, Activation, Attrs, BasisKind, Interpolation, Warps};
use indicatif::{ProgressBar, ProgressStyle};
use ort::session::Session;
use ort::value::Tensor;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use rand_distr::StandardNormal;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Instant;

/// What `ditac bench` runs (the command's flags, the plugin's path resolved).
pub struct BenchSettings {
    /// Elements of the input.
    pub size: usize,
    /// Intra-op thread counts (empty: 1 and all cores).
    pub threads: Vec<usize>,
    /// Timed runs per row and thread count (after one warm-up run).
    pub repeats: usize,
    /// Print one JSON object instead of the table.
    pub json: bool,
    /// Rows to run (empty: all).
    pub ops: Vec<BenchRow>,
    /// The plugin library.
    pub plugin: PathBuf,
    /// The warp's interval [a, b].
    pub interval: (f32, f32),
    /// Cells of the tessellation.
    pub tess: i64,
    /// θ from a JSON file: one row or per-channel rows.
    pub theta: Option<PathBuf>,
    /// θ drawn from the initialisation prior with this output variance.
    pub theta_prior: Option<f64>,
    /// Per-channel θ rows (X is then [size/C, C]).
    pub channels: usize,
    /// Standard deviation of the normal input.
    pub input_std: f32,
    /// Times a whole network against itself with Gelu in place of DiTAC.
    pub model: Option<PathBuf>,
}

/// The rows of the table, in table order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchRow {
    /// ONNX's Identity: the memory floor.
    Identity,
    /// ONNX's Gelu (opset 20): the anchor of the ratios.
    Gelu,
    /// DiTAC, nearest, lut 2048.
    Nearest,
    /// DiTAC, linear, lut 2048.
    Linear,
    /// DiTAC exact (no table).
    Exact,
    /// DiTACLut with 2048 nodes.
    Lut,
    /// DiTACGrad (dX and dθ).
    Grad,
    /// The nearest DiTAC lowered to standard ops.
    Lowered,
}

impl BenchRow {
    /// Every row, in table order.
    pub fn all() -> &'static [BenchRow] {
        <BenchRow as clap::ValueEnum>::value_variants()
    }

    /// The row's key (the `--ops` value, the JSON's `op`).
    pub fn key(self) -> &'static str {
        match self {
            BenchRow::Identity => "identity",
            BenchRow::Gelu => "gelu",
            BenchRow::Nearest => "nearest",
            BenchRow::Linear => "linear",
            BenchRow::Exact => "exact",
            BenchRow::Lut => "lut",
            BenchRow::Grad => "grad",
            BenchRow::Lowered => "lowered",
        }
    }

    /// The row's label in the table.
    pub fn label(self) -> &'static str {
        match self {
            BenchRow::Identity => "Identity (memory floor)",
            BenchRow::Gelu => "Gelu opset 20 (anchor)",
            BenchRow::Nearest => "DiTAC nearest (lut 2048)",
            BenchRow::Linear => "DiTAC linear (lut 2048)",
            BenchRow::Exact => "DiTAC exact (no table)",
            BenchRow::Lut => "DiTACLut (2048 nodes)",
            BenchRow::Grad => "DiTACGrad (dX, dθ)",
            BenchRow::Lowered => "lowered graph (std ops)",
        }
    }

    /// Whether the row runs ONNX Runtime's own kernels (not the plugin's).
    fn on_ort(self) -> bool {
        matches!(
            self,
            BenchRow::Identity | BenchRow::Gelu | BenchRow::Lowered
        )
    }
}

/// θ of the default benchmarked warp (tess 10, zero boundary: d = 9).
const THETA: [f32; 9] = [0.8, -0.5, 0.3, 1.1, -0.9, 0.4, 0.2, -0.7, 0.6];

/// What the DiTAC rows compute: interval, tessellation, θ (C rows of d) and the input.
struct Workload {
    a: f32,
    b: f32,
    tess: i64,
    /// C rows of d values, row-major.
    theta: Vec<f32>,
    channels: usize,
    input_std: f32,
    /// How θ was chosen (printed).
    theta_desc: String,
}

impl Workload {
    fn from_args(args: &BenchSettings) -> Result<Self> {
        let (a, b) = args.interval;
        let c = args.channels;
        if c == 0 {
            bail!("--channels must be at least 1");
        }
        if !(args.input_std.is_finite() && args.input_std > 0.0) {
            bail!(
                "--input-std = {}: expected a positive number",
                args.input_std
            );
        }
        let at = Attrs {
            tess: args.tess,
            ..Default::default()
        };
        at.validate()?;
        let d = at.theta_len();
        let (theta, theta_desc) = if let Some(path) = &args.theta {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading --theta {}", path.display()))?;
            let v: Value = serde_json::from_str(&text)
                .with_context(|| format!("--theta {}: not JSON", path.display()))?;
            let rows: Vec<Vec<f32>> = match &v {
                Value::Array(items) if items.iter().all(|i| i.is_array()) => items
                    .iter()
                    .map(|r| serde_json::from_value(r.clone()))
                    .collect::<std::result::Result<_, _>>()?,
                Value::Array(_) => vec![serde_json::from_value(v.clone())?],
                _ => bail!(
                    "--theta {}: expected an array of numbers or of rows",
                    path.display()
                ),
            };
            if let Some(r) = rows.iter().find(|r| r.len() != d) {
                bail!(
                    "--theta {}: a row has {} values: expected d = tess − 1 = {d}",
                    path.display(),
                    r.len()
                );
            }
            let rows = match rows.len() {
                1 => vec![rows[0].clone(); c],
                n if n == c => rows,
                n => bail!("--theta {}: {n} rows for --channels {c}", path.display()),
            };
            (rows.concat(), format!("θ from {}", path.display()))
        } else if let Some(var) = args.theta_prior {
            if !(var.is_finite() && var > 0.0) {
                bail!("--theta-prior = {var}: expected a positive output variance");
            }
            let bs = basis::build(at.tess(), at.zero_boundary(), BasisKind::Qr)?;
            let cov = ditac::core::prior::init_covariance(at.tess(), &bs, 5.0, var);
            let rows = ditac::core::prior::sample_thetas(&cov, d, c, 0x5EED);
            (
                rows.concat(),
                format!("θ from the prior (length scale 5, output variance {var})"),
            )
        } else {
            if args.tess != 10 {
                bail!("--tess {}: give θ with --theta or --theta-prior", args.tess);
            }
            (THETA.repeat(c), "the fixed θ of tess 10".to_string())
        };
        Ok(Workload {
            a,
            b,
            tess: args.tess,
            theta,
            channels: c,
            input_std: args.input_std,
            theta_desc,
        })
    }

    fn attrs(&self, lut: i64, interp: Interpolation) -> Attrs {
        Attrs {
            lut_size: lut,
            interpolation: interp,
            a: self.a,
            b: self.b,
            tess: self.tess,
            channel_axis: if self.channels > 1 { 1 } else { -1 },
            ..Default::default()
        }
    }

    fn d(&self) -> usize {
        self.theta.len() / self.channels
    }

    /// How much of the exact mode's checked table serves this warp: (intervals left to the
    /// constant-cost path, intervals), summed over the channels' rows — the warps the plugin
    /// builds for the exact row's node (`Warps::from_theta`).
    fn exact_table_coverage(&self) -> Result<(usize, usize)> {
        let at = self.attrs(0, Interpolation::Nearest);
        let bs = basis::build(at.tess(), at.zero_boundary(), BasisKind::Qr)?;
        let warps = Warps::<f32>::from_theta(&at, &bs, &self.theta_dims(), &self.theta, false)?;
        let tables: Vec<_> = warps.rows().iter().filter_map(|r| r.fast_table()).collect();
        let slow = tables.iter().map(|t| t.slow_intervals()).sum();
        Ok((slow, tables.len() * (ditac::core::kernels::FAST_NODES - 1)))
    }

    /// θ's dims: [d] or [C, d].
    fn theta_dims(&self) -> Vec<usize> {
        if self.channels > 1 {
            vec![self.channels, self.d()]
        } else {
            vec![self.d()]
        }
    }

    /// X's dims in the models: [-1] or [-1, C].
    fn x_dims(&self) -> Vec<i64> {
        if self.channels > 1 {
            vec![-1, self.channels as i64]
        } else {
            vec![-1]
        }
    }
}

/// A model X → Y (float) with the nodes `f` adds.
fn unary(name: &str, dims: &[i64], f: impl FnOnce(&mut ModelBuilder)) -> Vec<u8> {
    let mut m = ModelBuilder::new(name);
    m.input("X", ElemType::Float, dims)
        .output("Y", ElemType::Float, dims);
    f(&mut m);
    m.to_bytes()
}

fn ditac_model(w: &Workload, at: &Attrs) -> Vec<u8> {
    unary("ditac", &w.x_dims(), |m| {
        m.initializer_f32("theta", &w.theta_dims(), &w.theta);
        m.node(
            DITAC,
            DITAC_DOMAIN,
            "act",
            &["X", "theta"],
            &["Y"],
            &ditac_attrs(at),
        );
    })
}

fn lut_model(w: &Workload) -> Result<Vec<u8>> {
    let at = w.attrs(2048, Interpolation::Nearest);
    let b = basis::build(at.tess(), at.zero_boundary(), BasisKind::Qr)?;
    let d = w.d();
    let mut table = Vec::new();
    for row in w.theta.chunks(d) {
        let act = Activation::<f32>::from_theta(&at, &b, row, false)?;
        table.extend_from_slice(act.table_values().context("table")?);
    }
    let n = table.len() / w.channels;
    let dims = if w.channels > 1 {
        vec![w.channels, n]
    } else {
        vec![n]
    };
    Ok(unary("lut", &w.x_dims(), |m| {
        m.initializer_f32("table", &dims, &table);
        m.node(
            DITAC_LUT,
            DITAC_DOMAIN,
            "act",
            &["X", "table"],
            &["Y"],
            &lut_attrs(&at),
        );
    }))
}

fn grad_model(w: &Workload) -> Vec<u8> {
    let at = w.attrs(2048, Interpolation::Nearest);
    let mut m = ModelBuilder::new("grad");
    let td: Vec<i64> = w.theta_dims().iter().map(|&v| v as i64).collect();
    m.input("dY", ElemType::Float, &w.x_dims())
        .input("X", ElemType::Float, &w.x_dims())
        .output("dX", ElemType::Float, &w.x_dims())
        .output("dtheta", ElemType::Float, &td);
    m.initializer_f32("theta", &w.theta_dims(), &w.theta);
    m.node(
        DITAC_GRAD,
        DITAC_DOMAIN,
        "grad",
        &["dY", "X", "theta"],
        &["dX", "dtheta"],
        &ditac_attrs(&at),
    );
    m.to_bytes()
}

/// The same activation (`DiTAC`, nearest, lut 2048) lowered to standard ONNX ops by `ditac lower`:
/// what users without the plugin would run.
fn lowered_model(w: &Workload) -> Result<Vec<u8>> {
    use protobuf::Message;
    let model = onnx_protobuf::ModelProto::parse_from_bytes(&ditac_model(
        w,
        &w.attrs(2048, Interpolation::Nearest),
    ))?;
    let lowered = crate::transform::lower::lower_model(&model)?;
    Ok(lowered.write_to_bytes()?)
}

fn model(w: &Workload, row: BenchRow) -> Result<Option<Vec<u8>>> {
    let dims = w.x_dims();
    Ok(Some(match row {
        BenchRow::Identity => unary("identity", &dims, |m| {
            m.node("Identity", "", "id", &["X"], &["Y"], &[]);
        }),
        BenchRow::Gelu => unary("gelu", &dims, |m| {
            m.node("Gelu", "", "gelu", &["X"], &["Y"], &[]);
        }),
        BenchRow::Nearest => ditac_model(w, &w.attrs(2048, Interpolation::Nearest)),
        BenchRow::Linear => ditac_model(w, &w.attrs(2048, Interpolation::Linear)),
        BenchRow::Exact => ditac_model(w, &w.attrs(0, Interpolation::Nearest)),
        BenchRow::Lut => lut_model(w)?,
        BenchRow::Grad => grad_model(w),
        BenchRow::Lowered => lowered_model(w)?,
    }))
}

/// Standard normal samples: pre-activations of a network.
fn random_input(n: usize, seed: u64) -> Vec<f32> {
    SmallRng::seed_from_u64(seed)
        .sample_iter(StandardNormal)
        .take(n)
        .collect()
}

fn status_kb(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resets the peak resident set (Linux); false where that is not possible.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

struct Row {
    key: String,
    label: String,
    /// The instruction set the row ran on: the plugin's kernels, or ONNX Runtime's own.
    isa: String,
    threads: usize,
    times: Vec<f64>,
    peak_extra: Option<u64>,
}

/// A model to time: its row key and label, where it runs, and its inputs (name, tensor index).
struct Entry {
    key: String,
    label: String,
    isa: String,
    bytes: Vec<u8>,
    feeds: Vec<(String, usize)>,
}

fn thread_counts(args: &BenchSettings) -> Result<Vec<usize>> {
    let mut threads = args.threads.clone();
    if threads.is_empty() {
        let all = std::thread::available_parallelism().map_or(1, |n| n.get());
        threads = vec![1];
        if all > 1 {
            threads.push(all);
        }
    }
    if threads.contains(&0) {
        bail!("--threads: thread counts must be at least 1");
    }
    Ok(threads)
}

/// The kernels' instruction set as the plugin will pick it (the same detection and DITAC_ISA).
fn plugin_isa() -> Result<String> {
    use ditac::core::kernels::Isa;
    Isa::env_cap().map_err(anyhow::Error::msg)?;
    Ok(Isa::active().name().to_string())
}

/// Times every entry at every thread count: alternating runs (the row order rotated each round),
/// one warm-up round, the peak RSS rise of each run.
fn time_entries(
    args: &BenchSettings,
    env: &ort::environment::Environment,
    threads: &[usize],
    entries: &[Entry],
    tensors: &[Tensor<f32>],
) -> Result<(Vec<Row>, bool)> {
    let can_reset = reset_peak();
    let total = (threads.len() * entries.len() * (args.repeats + 1)) as u64;
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template("{spinner} bench [{bar:30}] {pos}/{len} runs {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut rows: Vec<Row> = Vec::new();
    for &t in threads {
        pb.set_message(format!("{t} thread(s): building sessions"));
        let mut sessions = Vec::new();
        for e in entries {
            let b = Session::builder(env)?
                .with_intra_threads(t)
                .map_err(ort::Error::<()>::from)?
                .with_inter_threads(1)
                .map_err(ort::Error::<()>::from)?
                // Idle pool threads of one session must not spin while the next row runs.
                .with_intra_op_spinning(false)
                .map_err(ort::Error::<()>::from)?;
            let mut b = b
                .with_operator_library(&args.plugin)
                .map_err(ort::Error::<()>::from)?;
            let s = b
                .commit_from_memory(&e.bytes)
                .with_context(|| format!("creating the session of row {}", e.key))?;
            sessions.push(s);
        }
        let first = rows.len();
        for e in entries {
            rows.push(Row {
                key: e.key.clone(),
                label: e.label.clone(),
                isa: e.isa.clone(),
                threads: t,
                times: Vec::new(),
                peak_extra: None,
            });
        }
        // Run 0 warms up (first allocations, caches); runs alternate between the rows.
        for rep in 0..=args.repeats {
            pb.set_message(format!("{t} thread(s), round {rep}/{}", args.repeats));
            // Each round starts at another row, so that no row always follows the same one.
            for r in 0..entries.len() {
                let i = (r + rep) % entries.len();
                let s = &mut sessions[i];
                let feeds: Vec<(String, ort::session::SessionInputValue<'_>)> = entries[i]
                    .feeds
                    .iter()
                    .map(|(name, ti)| (name.clone(), (&tensors[*ti]).into()))
                    .collect();
                let before = status_kb("VmRSS:");
                let reset = can_reset && reset_peak();
                let t0 = Instant::now();
                let out = s.run(feeds)?;
                let dt = t0.elapsed().as_secs_f64();
                let hwm = status_kb(if reset { "VmHWM:" } else { "VmRSS:" });
                drop(out);
                let row = &mut rows[first + i];
                if rep > 0 {
                    row.times.push(dt);
                }
                if let (Some(b), Some(h)) = (before, hwm) {
                    let extra = h.saturating_sub(b) * 1024;
                    row.peak_extra = Some(row.peak_extra.map_or(extra, |p| p.max(extra)));
                }
                pb.inc(1);
            }
        }
    }
    pb.finish_and_clear();
    Ok((rows, can_reset))
}

impl BenchSettings {
    /// The checks that need no ONNX Runtime: run before it is loaded.
    pub fn validate(&self) -> Result<()> {
        self.checked().map(|_| ())
    }

    /// [`Self::validate`], keeping what it worked out: the thread counts and the plugin's ISA.
    fn checked(&self) -> Result<(Vec<usize>, String)> {
        if self.repeats == 0 {
            bail!("--repeats must be at least 1");
        }
        Ok((thread_counts(self)?, plugin_isa()?))
    }
}

/// Runs the benchmark in `env` (ONNX Runtime loaded, before any tensor is made) and prints the
/// table or the JSON document.
pub fn run(args: &BenchSettings, env: &ort::environment::Environment) -> Result<()> {
    let (threads, isa) = args.checked()?;
    if let Some(path) = &args.model {
        return run_model(args, env, &threads, path, &isa);
    }
    let mut keys: Vec<BenchRow> = if args.ops.is_empty() {
        BenchRow::all().to_vec()
    } else {
        args.ops.clone()
    };
    if !keys.contains(&BenchRow::Gelu) {
        keys.insert(0, BenchRow::Gelu); // the anchor of the ratios
    }
    let w = Workload::from_args(args)?;
    let n = args.size;
    if !n.is_multiple_of(w.channels) {
        bail!("--size {n} is not a multiple of --channels {}", w.channels);
    }

    let mut entries = Vec::new();
    let mut skipped = Vec::new();
    for &k in &keys {
        match model(&w, k)? {
            Some(bytes) => entries.push(Entry {
                key: k.key().to_string(),
                label: k.label().to_string(),
                isa: if k.on_ort() {
                    "ORT".to_string()
                } else {
                    isa.clone()
                },
                bytes,
                feeds: if k == BenchRow::Grad {
                    vec![("dY".into(), 1), ("X".into(), 0)]
                } else {
                    vec![("X".into(), 0)]
                },
            }),
            None => skipped.push(k),
        }
    }

    let scale = |v: Vec<f32>| v.into_iter().map(|e| e * w.input_std).collect::<Vec<_>>();
    let x = scale(random_input(n, 0x9E37_79B9_7F4A_7C15));
    let dy = random_input(n, 0x2545_F491_4F6C_DD1D);
    let shape = if w.channels > 1 {
        vec![n / w.channels, w.channels]
    } else {
        vec![n]
    };
    let in_range = x.iter().filter(|&&v| v >= w.a && v <= w.b).count() as f64 / n as f64;
    let tensors = vec![
        Tensor::from_array((shape.clone(), x))?,
        Tensor::from_array((shape, dy))?,
    ];
    let (rows, can_reset) = time_entries(args, env, &threads, &entries, &tensors)?;

    // The output ONNX Runtime allocates for each run (Y, or dX for DiTACGrad; dθ is tiny).
    let out_bytes = (n * 4) as f64;
    let jrows = json_rows(&rows, n, out_bytes);
    let skipped_json: Vec<Value> = skipped
        .iter()
        .map(|k| json!({"op": k.key(), "reason": "lower not available"}))
        .collect();
    let coverage = if keys.contains(&BenchRow::Exact) {
        Some(w.exact_table_coverage()?)
    } else {
        None
    };
    let workload = json!({
        "interval": [w.a, w.b],
        "tess": w.tess,
        "theta": w.theta_desc,
        "channels": w.channels,
        "input_std": w.input_std,
        "in_range": in_range,
        "exact_table_intervals_left_to_constant_cost_path": coverage.map(|c| json!([c.0, c.1])),
    });
    if args.json {
        let doc = json!({
            "cpu": cpu_model(),
            "isa_available": isa_list(),
            "kernels": isa,
            "ort": ort::info(),
            "size": n,
            "repeats": args.repeats,
            "threads": threads,
            "simd": ditac::core::kernels::simd_available(),
            "workload": workload,
            "peak_measured": can_reset,
            "rows": jrows,
            "skipped": skipped_json,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!(
        "ditac bench: {} float32 elements ({:.0} MB in, {:.0} MB out), {} runs per row (median)",
        n,
        n as f64 * 4.0 / 1e6,
        n as f64 * 4.0 / 1e6,
        args.repeats,
    );
    println!(
        "CPU: {} ({}); DiTAC kernels: {isa} (DITAC_ISA caps them); ONNX Runtime {}",
        cpu_model(),
        isa_list(),
        ort::info()
    );
    println!(
        "workload: [a, b] = [{}, {}], tess {}, {}, {} channel(s), X ~ N(0, {}²) ({:.0} % in [a, b])",
        w.a,
        w.b,
        w.tess,
        w.theta_desc,
        w.channels,
        w.input_std,
        in_range * 100.0
    );
    if let Some((slow, all)) = coverage {
        println!(
            "exact mode: its checked interpolation table serves {} of {all} intervals; {slow} ({:.1} %) \
             go through the constant-cost path",
            all - slow,
            100.0 * slow as f64 / all.max(1) as f64
        );
    }
    print_tables(&threads, &rows, &jrows);
    for t in &threads {
        for k in &skipped {
            let label = k.label();
            println!("| {label} ({t} thread(s)) | n/a (lower not available) | | | | | |");
        }
    }
    if !can_reset {
        println!(
            "\n(peak RSS could not be reset per run: the column shows the rise of the current RSS)"
        );
    }
    Ok(())
}

/// The instruction sets of this CPU the kernels have a path for.
fn isa_list() -> String {
    use ditac::core::kernels::Isa;
    Isa::ALL
        .into_iter()
        .filter(|i| i.supported())
        .map(|i| i.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// JSON of the rows; `n` = 0: no element rate (a whole network).
fn json_rows(rows: &[Row], n: usize, out_bytes: f64) -> Vec<Value> {
    let gelu_med = |t: usize| {
        rows.iter()
            .find(|r| (r.key == "gelu" || r.key == "model-gelu") && r.threads == t)
            .map(|r| median(&r.times))
    };
    rows.iter()
        .map(|r| {
            let med = median(&r.times);
            let g = gelu_med(r.threads).unwrap_or(f64::NAN);
            let one = rows
                .iter()
                .find(|o| o.key == r.key && o.threads == 1)
                .map(|o| median(&o.times));
            json!({
                "op": r.key,
                "label": r.label,
                "isa": r.isa,
                "threads": r.threads,
                "median_ms": med * 1e3,
                "min_ms": r.times.iter().cloned().fold(f64::INFINITY, f64::min) * 1e3,
                "runs": r.times.len(),
                "gelem_per_s": if n > 0 { json!(n as f64 / med / 1e9) } else { Value::Null },
                "ratio_to_gelu": med / g,
                "speedup_vs_1_thread": one.map(|o| o / med),
                "peak_extra_mb": r.peak_extra.map(|p| p as f64 / 1e6),
                "peak_over_output_mb": if n > 0 {
                    json!(r.peak_extra.map(|p| (p as f64 - out_bytes) / 1e6))
                } else {
                    Value::Null
                },
            })
        })
        .collect()
}

fn print_tables(threads: &[usize], rows: &[Row], jrows: &[Value]) {
    for &t in threads {
        println!();
        println!(
            "| {t} thread(s) | ISA | median ms | G elem/s | × Gelu | × vs 1 thread | peak RSS rise MB |"
        );
        println!("| --- | --- | ---: | ---: | ---: | ---: | ---: |");
        for (r, j) in rows.iter().zip(jrows) {
            if r.threads != t {
                continue;
            }
            let f =
                |v: &Value, p: usize| v.as_f64().map_or("–".to_string(), |x| format!("{x:.p$}"));
            let ms = j["median_ms"].as_f64().unwrap_or(f64::NAN);
            println!(
                "| {} | {} | {} | {} | {} | {} | {} |",
                r.label,
                r.isa,
                if ms < 1.0 {
                    format!("{ms:.4}")
                } else {
                    format!("{ms:.2}")
                },
                f(&j["gelem_per_s"], 3),
                f(&j["ratio_to_gelu"], 2),
                if t == 1 {
                    "–".into()
                } else {
                    f(&j["speedup_vs_1_thread"], 2)
                },
                f(&j["peak_extra_mb"], 1),
            );
        }
    }
}

/// `--model FILE`: the network against itself with every DiTAC / DiTACLut node replaced by
/// `Gelu` (ONNX's when the model imports opset ≥ 20, else ONNX Runtime's `com.microsoft` one).
fn run_model(
    args: &BenchSettings,
    env: &ort::environment::Environment,
    threads: &[usize],
    path: &std::path::Path,
    isa: &str,
) -> Result<()> {
    use crate::transform::{is_ditac_node, ModelFile};
    use onnx_protobuf::type_proto::Value as Ty;
    use protobuf::Message;
    let mf = ModelFile::load(path)?;
    if !crate::transform::external_locations(&mf.model).is_empty() {
        bail!(
            "--model {}: the model keeps tensors in external data files; the bench reads models from memory (save it with the data inside)",
            path.display()
        );
    }
    let g = mf.graph();
    let count = g.node.iter().filter(|n| is_ditac_node(n)).count();
    if count == 0 {
        bail!(
            "--model {}: no DiTAC or DiTACLut node to replace",
            path.display()
        );
    }
    let inits: std::collections::HashSet<&str> =
        g.initializer.iter().map(|t| t.name.as_str()).collect();
    let Some(input) = g.input.iter().find(|i| !inits.contains(i.name.as_str())) else {
        bail!("--model {}: the graph has no input", path.display());
    };
    let Some(Ty::TensorType(tt)) = input.type_.as_ref().and_then(|t| t.value.as_ref()) else {
        bail!(
            "--model {}: input '{}' is not a tensor",
            path.display(),
            input.name
        );
    };
    if tt.elem_type != 1 {
        bail!(
            "--model {}: input '{}' has element type {}: expected float (1)",
            path.display(),
            input.name,
            tt.elem_type
        );
    }
    // Symbolic axes (the batch) are run at 1.
    let shape: Vec<usize> = crate::onnx::declared_dims(input)
        .unwrap_or_default()
        .iter()
        .map(|d| d.fixed().filter(|&v| v > 0).unwrap_or(1))
        .collect();
    let n: usize = shape.iter().product();
    let opset = crate::onnx::default_opset(&mf.model);
    let mut gelu = mf.model.clone();
    let gg = gelu.graph.as_mut().context("graph")?;
    for node in gg.node.iter_mut().filter(|n| is_ditac_node(n)) {
        node.op_type = "Gelu".into();
        node.domain = if opset >= 20 {
            String::new()
        } else {
            "com.microsoft".into()
        };
        node.input.truncate(1);
        node.attribute.clear();
    }
    if opset < 20
        && !gelu
            .opset_import
            .iter()
            .any(|o| o.domain == "com.microsoft")
    {
        let mut o = onnx_protobuf::OperatorSetIdProto::new();
        o.domain = "com.microsoft".into();
        o.version = 1;
        gelu.opset_import.push(o);
    }
    let entries = vec![
        Entry {
            key: "model-gelu".into(),
            label: format!("{} with Gelu", path.display()),
            isa: "ORT".into(),
            bytes: gelu.write_to_bytes()?,
            feeds: vec![(input.name.clone(), 0)],
        },
        Entry {
            key: "model-ditac".into(),
            label: format!("{} ({count} DiTAC nodes)", path.display()),
            isa: isa.to_string(),
            bytes: mf.model.write_to_bytes()?,
            feeds: vec![(input.name.clone(), 0)],
        },
    ];
    let x: Vec<f32> = random_input(n, 0x9E37_79B9_7F4A_7C15)
        .into_iter()
        .map(|v| v * args.input_std)
        .collect();
    let tensors = vec![Tensor::from_array((shape.clone(), x))?];
    let (rows, _) = time_entries(args, env, threads, &entries, &tensors)?;
    let jrows = json_rows(&rows, 0, 0.0);
    if args.json {
        let doc = json!({
            "cpu": cpu_model(),
            "isa_available": isa_list(),
            "kernels": isa,
            "ort": ort::info(),
            "model": path.display().to_string(),
            "input": {"name": input.name, "shape": shape},
            "ditac_nodes": count,
            "repeats": args.repeats,
            "threads": threads,
            "rows": jrows,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!(
        "ditac bench --model {}: input '{}' {:?}, {count} DiTAC node(s) against Gelu, {} runs per row (median)",
        path.display(),
        input.name,
        shape,
        args.repeats
    );
    println!(
        "CPU: {} ({}); DiTAC kernels: {isa}; ONNX Runtime {}",
        cpu_model(),
        isa_list(),
        ort::info()
    );
    print_tables(threads, &rows, &jrows);
    Ok(())
}
