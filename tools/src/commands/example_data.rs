//! `ditac example-data regression|gmm|digits -o DIR`: the data of the training examples of
//! `models/`: `train.npz` and `test.npz` with arrays `x` and `y`. regression and gmm are generated
//! by our own code (seeded; `x` [N, 2], `y` [N, 1] float or int64 class indices); digits are the
//! 1797 8×8 handwritten digits that ship inside scikit-learn (`sklearn/datasets/data/digits.csv.gz`,
//! read with `--from`; `x` [N, 1, 8, 8] scaled to [0, 1], `y` [N, 1] int64), split by a seeded
//! shuffle.

use anyhow::{bail, Context, Result};
use clap::Args as ClapArgs;
use ditac::core::rng::{splitmix64_mix, SplitMix64, GOLDEN};
use ditac_tools::train::data::{self, Dataset, Targets};
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(ClapArgs)]
pub struct Args {
    /// regression (sum of sines on [-1,1]², the paper's Figure 1), paper-regression (the authors'
    /// own target of that figure, Σ_k w_k·sin(A_k·x), uniform x), gmm (2-D Gaussian-mixture
    /// classification, Figure 5) or digits (scikit-learn's 8×8 digits, from --from).
    kind: String,
    /// digits: scikit-learn's `digits.csv.gz` (in an installed scikit-learn, or unzipped from its
    /// wheel: `sklearn/datasets/data/digits.csv.gz`). Default: none (needed for digits only).
    #[arg(long)]
    from: Option<PathBuf>,
    /// digits: the share of samples held out for test.
    #[arg(long, default_value_t = 0.2)]
    test_share: f64,
    /// Output folder (created if missing): train.npz and test.npz.
    #[arg(short = 'o', long = "out")]
    out: PathBuf,
    /// Training samples.
    #[arg(long, default_value_t = 1960)]
    train: usize,
    /// Test samples.
    #[arg(long, default_value_t = 2000)]
    test: usize,
    /// Seed (the test set uses seed + 1).
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

pub fn run(args: Args) -> Result<()> {
    if args.kind == "digits" {
        let from = args.from.as_deref().context(
            "digits: give scikit-learn's data file with --from (sklearn/datasets/data/digits.csv.gz)",
        )?;
        ditac_tools::output::output_folder(&args.out)?;
        let all = read_digits(from)?;
        if !(0.0..1.0).contains(&args.test_share) {
            bail!(
                "--test-share {}: expected a number in [0, 1)",
                args.test_share
            );
        }
        let n_test = (all.n as f64 * args.test_share).round() as usize;
        let (train, test) = split(&all, n_test, args.seed);
        train.save_npz(&args.out.join("train.npz"))?;
        test.save_npz(&args.out.join("test.npz"))?;
        println!(
            "wrote {}/train.npz ({} images) and test.npz ({} images) from {}",
            args.out.display(),
            train.n,
            test.n,
            from.display()
        );
        return Ok(());
    }
    let gen = match args.kind.as_str() {
        "regression" => data::regression,
        "paper-regression" => paper_regression,
        "gmm" => data::gmm,
        other => bail!(
            "unknown example \"{other}\": expected regression, paper-regression, gmm or digits"
        ),
    };
    ditac_tools::output::output_folder(&args.out)?;
    gen(args.train, args.seed).save_npz(&args.out.join("train.npz"))?;
    gen(args.test, args.seed + 1).save_npz(&args.out.join("test.npz"))?;
    println!(
        "wrote {}/train.npz ({} samples) and test.npz ({} samples)",
        args.out.display(),
        args.train,
        args.test
    );
    Ok(())
}

/// The authors' regression target (their `regression_example`): y = Σ_k w_k·sin(A_k·x) with these
/// six frequency pairs and weights, x uniform on [−1, 1]². They draw a fresh batch every step;
/// a large seeded sample stands in for that here.
const PAPER_FREQUENCIES: [[f64; 2]; 6] = [
    [9., -7.],
    [-9., 11.],
    [3., 13.],
    [9., 9.],
    [13., 5.],
    [3., 19.],
];
const PAPER_WEIGHTS: [f64; 6] = [0.4, 0.1, 0.15, 0.15, 0.1, 0.1];

fn paper_regression(n: usize, seed: u64) -> Dataset {
    let mut rng = SplitMix64(seed ^ 0x5DEE_CE66_D1CE_5EED);
    let mut uniform = || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
    let (mut x, mut y) = (Vec::with_capacity(2 * n), Vec::with_capacity(n));
    for _ in 0..n {
        let p = [uniform(), uniform()];
        let v: f64 = PAPER_FREQUENCIES
            .iter()
            .zip(PAPER_WEIGHTS)
            .map(|(a, w)| w * (a[0] * p[0] + a[1] * p[1]).sin())
            .sum();
        x.extend(p.map(|c| c as f32));
        y.push(v as f32);
    }
    Dataset {
        n,
        x_shape: vec![2],
        x,
        y_shape: vec![1],
        y: Targets::Values(y),
    }
}

/// Reads scikit-learn's `digits.csv.gz`: per line 64 pixel values (0–16) and the digit.
fn read_digits(path: &Path) -> Result<Dataset> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .with_context(|| format!("{} is not a gzip-compressed text file", path.display()))?;
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for (li, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let vals: Vec<f32> = line
            .split(',')
            .map(|f| f.trim().parse::<f32>())
            .collect::<Result<_, _>>()
            .with_context(|| format!("{} line {}: not numbers", path.display(), li + 1))?;
        if vals.len() != 65 || vals[..64].iter().any(|v| !(0.0..=16.0).contains(v)) {
            bail!(
                "{} line {}: expected 64 pixels in 0..=16 and a digit ({} values)",
                path.display(),
                li + 1,
                vals.len()
            );
        }
        let label = vals[64];
        if label.fract() != 0.0 || !(0.0..=9.0).contains(&label) {
            bail!(
                "{} line {}: label {label} is not a digit",
                path.display(),
                li + 1
            );
        }
        x.extend(vals[..64].iter().map(|v| v / 16.0));
        y.push(label as i64);
    }
    Ok(Dataset {
        n: y.len(),
        x_shape: vec![1, 8, 8],
        x,
        y_shape: vec![],
        y: Targets::Classes(y),
    })
}

/// A seeded split: the `n_test` samples with the smallest keys (a hash of seed and index) are the
/// test set; both keep the file's order.
fn split(all: &Dataset, n_test: usize, seed: u64) -> (Dataset, Dataset) {
    let key = |i: usize| {
        splitmix64_mix(
            seed.wrapping_mul(GOLDEN)
                .wrapping_add(i as u64)
                .wrapping_add(GOLDEN),
        )
    };
    let mut order: Vec<usize> = (0..all.n).collect();
    order.sort_by_key(|&i| key(i));
    let mut is_test = vec![false; all.n];
    order[..n_test].iter().for_each(|&i| is_test[i] = true);
    let Targets::Classes(c) = &all.y else {
        unreachable!("digits have class targets")
    };
    let xl = all.x_len();
    let pick = |test: bool| {
        let idx: Vec<usize> = (0..all.n).filter(|&i| is_test[i] == test).collect();
        Dataset {
            n: idx.len(),
            x_shape: all.x_shape.clone(),
            x: idx
                .iter()
                .flat_map(|&i| all.x[i * xl..(i + 1) * xl].iter().copied())
                .collect(),
            y_shape: vec![],
            y: Targets::Classes(idx.iter().map(|&i| c[i]).collect()),
        }
    };
    (pick(false), pick(true))
}
