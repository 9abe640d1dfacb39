//! `ditac bench`: DiTAC against ONNX Runtime's own `Gelu`, in one process and one run, on the same
//! random input, through real ONNX Runtime sessions with the plugin loaded. Rows: `Identity` (the
//! memory floor), `Gelu` opset 20 (the anchor), `DiTAC` nearest / linear / exact, `DiTACLut`,
//! `DiTACGrad` (dX and dθ) and the `lower`ed standard-ops graph where available; at each thread
//! count asked for. Runs alternate between the rows (so that a slow phase of a shared machine hits
//! every row alike); the figures are medians, and ratios to `Gelu`'s median at the same thread
//! count. Peak memory: the rise of the process's resident set (VmHWM, reset before each run
//! through /proc/self/clear_refs) over its size before the run, largest over the runs.

use anyhow::{bail, Context, Result};
use clap::Args as ClapArgs;
use ditac::core::{basis, Activation, Attrs, BasisKind, Interpolation};
use ditac_tools::model::{ditac_attrs, lut_attrs, ElemType, ModelBuilder, DITAC_DOMAIN};
use indicatif::{ProgressBar, ProgressStyle};
use ort::session::Session;
use ort::value::Tensor;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use rand_distr::StandardNormal;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Instant;

#[derive(ClapArgs)]
pub struct Args {
    /// Elements of the input (4K to 64M; suffixes K and M are powers of two: 16M = 16777216).
    #[arg(long, default_value = "16M", value_parser = parse_size)]
    size: usize,
    /// Intra-op thread counts, comma-separated (default: 1 and all cores).
    #[arg(long, value_delimiter = ',')]
    threads: Vec<usize>,
    /// Timed runs per row and thread count (after one warm-up run).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Rows to run, comma-separated: identity, gelu, nearest, linear, exact, lut, grad, lowered
    /// (default: all).
    #[arg(long, value_delimiter = ',')]
    ops: Vec<String>,
    /// The plugin library.
    #[arg(long, default_value = "target/release/libditac.so")]
    plugin: PathBuf,
    /// ONNX Runtime's C library (default: $ORT_DYLIB_PATH, else .ort/1.32.0/libonnxruntime.so).
    #[arg(long)]
    ort: Option<PathBuf>,
}

const MIN_SIZE: usize = 4 << 10;
const MAX_SIZE: usize = 64 << 20;

fn parse_size(s: &str) -> std::result::Result<usize, String> {
    let t = s.trim();
    let (num, mul) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 1usize << 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 1usize << 20),
        _ => (t, 1),
    };
    let n: usize = num
        .parse()
        .map_err(|_| format!("\"{s}\" is not a size (e.g. 4096, 4K, 16M)"))?;
    let n = n
        .checked_mul(mul)
        .ok_or_else(|| format!("\"{s}\" is too large"))?;
    if !(MIN_SIZE..=MAX_SIZE).contains(&n) {
        return Err(format!(
            "{n} elements: expected 4K (4096) to 64M (67108864)"
        ));
    }
    Ok(n)
}

/// The rows, in table order: (key, label).
const ROWS: [(&str, &str); 8] = [
    ("identity", "Identity (memory floor)"),
    ("gelu", "Gelu opset 20 (anchor)"),
    ("nearest", "DiTAC nearest (lut 2048)"),
    ("linear", "DiTAC linear (lut 2048)"),
    ("exact", "DiTAC exact (no table)"),
    ("lut", "DiTACLut (2048 nodes)"),
    ("grad", "DiTACGrad (dX, dθ)"),
    ("lowered", "lowered graph (std ops)"),
];

/// θ of the benchmarked warp (tess 10, zero boundary: d = 9).
const THETA: [f32; 9] = [0.8, -0.5, 0.3, 1.1, -0.9, 0.4, 0.2, -0.7, 0.6];

fn attrs(lut: i64, interp: Interpolation) -> Attrs {
    Attrs {
        lut_size: lut,
        interpolation: interp,
        ..Default::default()
    }
}

/// A model X → Y (1-D float) with the nodes `f` adds.
fn unary(name: &str, f: impl FnOnce(&mut ModelBuilder)) -> Vec<u8> {
    let mut m = ModelBuilder::new(name);
    m.input("X", ElemType::Float, &[-1])
        .output("Y", ElemType::Float, &[-1]);
    f(&mut m);
    m.to_bytes()
}

fn ditac_model(at: &Attrs) -> Vec<u8> {
    unary("ditac", |m| {
        m.initializer_f32("theta", &[THETA.len()], &THETA);
        m.node(
            "DiTAC",
            DITAC_DOMAIN,
            "act",
            &["X", "theta"],
            &["Y"],
            &ditac_attrs(at),
        );
    })
}

fn lut_model() -> Result<Vec<u8>> {
    let at = attrs(2048, Interpolation::Nearest);
    let b = basis::build(at.tess(), at.zero_boundary(), BasisKind::Qr)?;
    let act = Activation::<f32>::from_theta(&at, &b, &THETA, false)?;
    let table = act.table_values().context("table")?.to_vec();
    Ok(unary("lut", |m| {
        m.initializer_f32("table", &[table.len()], &table);
        m.node(
            "DiTACLut",
            DITAC_DOMAIN,
            "act",
            &["X", "table"],
            &["Y"],
            &lut_attrs(&at),
        );
    }))
}

fn grad_model() -> Vec<u8> {
    let at = attrs(2048, Interpolation::Nearest);
    let mut m = ModelBuilder::new("grad");
    m.input("dY", ElemType::Float, &[-1])
        .input("X", ElemType::Float, &[-1])
        .output("dX", ElemType::Float, &[-1])
        .output("dtheta", ElemType::Float, &[THETA.len() as i64]);
    m.initializer_f32("theta", &[THETA.len()], &THETA);
    m.node(
        "DiTACGrad",
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
fn lowered_model() -> Result<Vec<u8>> {
    use protobuf::Message;
    let model = onnx_protobuf::ModelProto::parse_from_bytes(&ditac_model(&attrs(
        2048,
        Interpolation::Nearest,
    )))?;
    let lowered = ditac_tools::transform::lower::lower_model(&model)?;
    Ok(lowered.write_to_bytes()?)
}

fn model(key: &str) -> Result<Option<Vec<u8>>> {
    Ok(Some(match key {
        "identity" => unary("identity", |m| {
            m.node("Identity", "", "id", &["X"], &["Y"], &[]);
        }),
        "gelu" => unary("gelu", |m| {
            m.node("Gelu", "", "gelu", &["X"], &["Y"], &[]);
        }),
        "nearest" => ditac_model(&attrs(2048, Interpolation::Nearest)),
        "linear" => ditac_model(&attrs(2048, Interpolation::Linear)),
        "exact" => ditac_model(&attrs(0, Interpolation::Nearest)),
        "lut" => lut_model()?,
        "grad" => grad_model(),
        "lowered" => lowered_model()?,
        other => bail!("unknown row \"{other}\""),
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
    key: &'static str,
    label: &'static str,
    threads: usize,
    times: Vec<f64>,
    peak_extra: Option<u64>,
}

pub fn run(args: Args) -> Result<()> {
    if args.repeats == 0 {
        bail!("--repeats must be at least 1");
    }
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
    let keys: Vec<&'static str> = if args.ops.is_empty() {
        ROWS.iter().map(|r| r.0).collect()
    } else {
        let mut k = Vec::new();
        for o in &args.ops {
            match ROWS.iter().find(|r| r.0 == o.trim()) {
                Some(r) => k.push(r.0),
                None => bail!(
                    "--ops: unknown row \"{o}\" (expected identity, gelu, nearest, linear, exact, lut, grad, lowered)"
                ),
            }
        }
        if !k.contains(&"gelu") {
            k.insert(0, "gelu"); // the anchor of the ratios
        }
        k
    };
    let (env, _) = super::runtime::ort_env(args.ort.clone(), &args.plugin, "ditac-bench")?;

    let mut models = Vec::new();
    let mut skipped = Vec::new();
    for &k in &keys {
        match model(k)? {
            Some(b) => models.push((k, b)),
            None => skipped.push(k),
        }
    }

    let n = args.size;
    let x = random_input(n, 0x9E37_79B9_7F4A_7C15);
    let dy = random_input(n, 0x2545_F491_4F6C_DD1D);
    let xt = Tensor::from_array((vec![n], x))?;
    let dyt = Tensor::from_array((vec![n], dy))?;
    let can_reset = reset_peak();

    let total = (threads.len() * models.len() * (args.repeats + 1)) as u64;
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template("{spinner} bench [{bar:30}] {pos}/{len} runs {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut rows: Vec<Row> = Vec::new();
    for &t in &threads {
        pb.set_message(format!("{t} thread(s): building sessions"));
        let mut sessions = Vec::new();
        for (k, bytes) in &models {
            let b = Session::builder(&env)?
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
                .commit_from_memory(bytes)
                .with_context(|| format!("creating the session of row {k}"))?;
            sessions.push(s);
        }
        let first = rows.len();
        for (k, _) in &models {
            let label = ROWS.iter().find(|r| r.0 == *k).map_or("", |r| r.1);
            rows.push(Row {
                key: k,
                label,
                threads: t,
                times: Vec::new(),
                peak_extra: None,
            });
        }
        // Run 0 warms up (first allocations, caches); runs alternate between the rows.
        for rep in 0..=args.repeats {
            pb.set_message(format!("{t} thread(s), round {rep}/{}", args.repeats));
            // Each round starts at another row, so that no row always follows the same one.
            for r in 0..models.len() {
                let i = (r + rep) % models.len();
                let k = &models[i].0;
                let s = &mut sessions[i];
                let before = status_kb("VmRSS:");
                let reset = can_reset && reset_peak();
                let t0 = Instant::now();
                let out = if *k == "grad" {
                    s.run(ort::inputs!["dY" => &dyt, "X" => &xt])?
                } else {
                    s.run(ort::inputs!["X" => &xt])?
                };
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

    let gelu_med = |t: usize| {
        rows.iter()
            .find(|r| r.key == "gelu" && r.threads == t)
            .map(|r| median(&r.times))
    };
    // The output ONNX Runtime allocates for each run (Y, or dX for DiTACGrad; dθ is tiny).
    let out_bytes = (n * 4) as f64;
    let mut jrows = Vec::new();
    for r in &rows {
        let med = median(&r.times);
        let g = gelu_med(r.threads).unwrap_or(f64::NAN);
        let one = rows
            .iter()
            .find(|o| o.key == r.key && o.threads == 1)
            .map(|o| median(&o.times));
        jrows.push(json!({
            "op": r.key,
            "label": r.label,
            "threads": r.threads,
            "median_ms": med * 1e3,
            "min_ms": r.times.iter().cloned().fold(f64::INFINITY, f64::min) * 1e3,
            "runs": r.times.len(),
            "gelem_per_s": n as f64 / med / 1e9,
            "ratio_to_gelu": med / g,
            "speedup_vs_1_thread": one.map(|o| o / med),
            "peak_extra_mb": r.peak_extra.map(|p| p as f64 / 1e6),
            "peak_over_output_mb": r.peak_extra.map(|p| (p as f64 - out_bytes) / 1e6),
        }));
    }
    let skipped_json: Vec<Value> = skipped
        .iter()
        .map(|k| json!({"op": k, "reason": "lower not available"}))
        .collect();
    if args.json {
        let doc = json!({
            "cpu": cpu_model(),
            "ort": ort::info(),
            "size": n,
            "repeats": args.repeats,
            "threads": threads,
            "simd": ditac::core::kernels::simd_available(),
            "peak_measured": can_reset,
            "rows": jrows,
            "skipped": skipped_json,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!(
        "ditac bench: {} float32 elements ({:.0} MB in, {:.0} MB out), {} runs per row (median), CPU: {}, AVX2 kernels: {}",
        n,
        n as f64 * 4.0 / 1e6,
        n as f64 * 4.0 / 1e6,
        args.repeats,
        cpu_model(),
        if ditac::core::kernels::simd_available() { "yes" } else { "no" }
    );
    println!("ONNX Runtime {}", ort::info());
    for &t in &threads {
        println!();
        println!(
            "| {t} thread(s) | median ms | G elem/s | × Gelu | × vs 1 thread | peak RSS rise MB |"
        );
        println!("| --- | ---: | ---: | ---: | ---: | ---: |");
        for (r, j) in rows.iter().zip(&jrows) {
            if r.threads != t {
                continue;
            }
            let f =
                |v: &Value, p: usize| v.as_f64().map_or("–".to_string(), |x| format!("{x:.p$}"));
            let ms = j["median_ms"].as_f64().unwrap_or(f64::NAN);
            println!(
                "| {} | {} | {} | {} | {} | {} |",
                r.label,
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
        for k in &skipped {
            let label = ROWS.iter().find(|r| r.0 == *k).map_or("", |r| r.1);
            println!("| {label} | n/a (lower not available) | | | | |");
        }
    }
    if !can_reset {
        println!(
            "\n(peak RSS could not be reset per run: the column shows the rise of the current RSS)"
        );
    }
    Ok(())
}
