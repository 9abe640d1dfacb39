//! `ditac bench`: DiTAC against ONNX Runtime's own `Gelu` through real sessions with the plugin
//! loaded (the benchmark itself: [`ditac_tools::bench`]).

use anyhow::Result;
use clap::Args as ClapArgs;
use ditac_tools::bench::{BenchRow, BenchSettings};
use ditac_tools::runtime::RuntimeFlags;
use std::path::PathBuf;

#[derive(ClapArgs)]
pub struct Args {
    /// Elements of the input (4K to 64M; suffixes K and M are powers of two: 16M = 16777216).
    #[arg(long, default_value = "16M", value_parser = parse_size, help_heading = "Runs")]
    size: usize,
    /// Intra-op thread counts, comma-separated (default: 1 and all cores).
    #[arg(long, value_delimiter = ',', help_heading = "Runs")]
    threads: Vec<usize>,
    /// Timed runs per row and thread count (after one warm-up run).
    #[arg(long, default_value_t = 5, help_heading = "Runs")]
    repeats: usize,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Rows to run, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    ops: Vec<BenchRow>,
    #[command(flatten)]
    runtime: RuntimeFlags,
    /// The warp's interval [a, b], as "A,B" (e.g. --interval -5,5).
    #[arg(long, value_parser = parse_interval, default_value = "-0.5,2", allow_hyphen_values = true, help_heading = "Workload")]
    interval: (f32, f32),
    /// Cells of the tessellation (θ has tess − 1 values per row).
    #[arg(long, default_value_t = 10, help_heading = "Workload")]
    tess: i64,
    /// θ from a JSON file: one row `[θ_1, …]` or per-channel rows `[[…], …]` (d = tess − 1 each).
    /// Default: a fixed θ of tess 10 (or --theta-prior).
    #[arg(long, conflicts_with = "theta_prior", help_heading = "Workload")]
    theta: Option<PathBuf>,
    /// θ drawn from the initialisation prior (length scale 5) with this output variance (the
    /// tools' default is 2; larger warps cross more cells). Default: a fixed θ of tess 10.
    #[arg(long, help_heading = "Workload")]
    theta_prior: Option<f64>,
    /// Per-channel θ: C rows (X is then [size/C, C], channel_axis 1); rows from the prior (one
    /// draw each) or from --theta.
    #[arg(long, default_value_t = 1, help_heading = "Workload")]
    channels: usize,
    /// Standard deviation of the normal input (mean 0).
    #[arg(long, default_value_t = 1.0, help_heading = "Workload")]
    input_std: f32,
    /// Times a whole network instead: FILE against the same network with every DiTAC node
    /// replaced by `Gelu` (opset 20), through the same input (the model's first input, its
    /// dynamic dimensions set to 1, filled with N(0, input-std²)). Default: the single-op rows.
    #[arg(long, help_heading = "Workload")]
    model: Option<PathBuf>,
}

fn parse_interval(s: &str) -> std::result::Result<(f32, f32), String> {
    let parts: Vec<&str> = s.split(',').map(|p| p.trim()).collect();
    let bad = || format!("\"{s}\" is not an interval: expected \"A,B\" with A < B, e.g. -5,5");
    if parts.len() != 2 {
        return Err(bad());
    }
    let a: f32 = parts[0].parse().map_err(|_| bad())?;
    let b: f32 = parts[1].parse().map_err(|_| bad())?;
    if !(a.is_finite() && b.is_finite() && a < b) {
        return Err(bad());
    }
    Ok((a, b))
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

pub fn run(args: Args) -> Result<()> {
    let mut settings = BenchSettings {
        size: args.size,
        threads: args.threads,
        repeats: args.repeats,
        json: args.json,
        ops: args.ops,
        // Set below, once the lookup rule has found it.
        plugin: PathBuf::new(),
        interval: args.interval,
        tess: args.tess,
        theta: args.theta,
        theta_prior: args.theta_prior,
        channels: args.channels,
        input_std: args.input_std,
        model: args.model,
    };
    settings.validate()?;
    // Loads ONNX Runtime (before any tensor is made).
    let (env, _, plugin) = super::runtime::ort_env(&args.runtime, "ditac-bench")?;
    settings.plugin = plugin;
    ditac_tools::bench::run(&settings, &env)
}
