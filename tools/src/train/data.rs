//! Training data: loading (`.npz` with arrays `x` and `y`, or CSV) with shape and NaN checks that
//! say where, seeded batching, and the generators of the two example data sets of the paper
//! (2-D function regression, Figure 1; 2-D Gaussian-mixture classification, Figure 5).

use super::LossKind;
use crate::params::Params;
use crate::spec::Network;
use anyhow::{bail, Context, Result};
use ditac::core::rng::{XorShift64Star, GOLDEN};
use std::path::Path;

/// Targets: regression values (`[N, out...]`, flattened) or class indices.
#[derive(Debug, Clone, PartialEq)]
pub enum Targets {
    Values(Vec<f32>),
    Classes(Vec<i64>),
}

/// A data set checked against a network.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub n: usize,
    /// Per-sample input shape.
    pub x_shape: Vec<usize>,
    pub x: Vec<f32>,
    /// Per-sample target shape (MSE) or `[]` (classes).
    pub y_shape: Vec<usize>,
    pub y: Targets,
}

impl Dataset {
    pub fn x_len(&self) -> usize {
        self.x_shape.iter().product()
    }
    pub fn y_len(&self) -> usize {
        self.y_shape.iter().product()
    }

    /// Gathers the samples `idx` into `x` and the target buffers.
    pub fn gather(&self, idx: &[usize], x: &mut [f32], yv: &mut [f32], yc: &mut [i64]) {
        let (xl, yl) = (self.x_len(), self.y_len());
        for (r, &i) in idx.iter().enumerate() {
            x[r * xl..(r + 1) * xl].copy_from_slice(&self.x[i * xl..(i + 1) * xl]);
            match &self.y {
                Targets::Values(v) => {
                    yv[r * yl..(r + 1) * yl].copy_from_slice(&v[i * yl..(i + 1) * yl])
                }
                Targets::Classes(c) => yc[r] = c[i],
            }
        }
    }

    /// Writes the data set as `.npz` (`x` float32, `y` float32 or int64 class indices `[N, 1]`).
    pub fn save_npz(&self, path: &Path) -> Result<()> {
        use ndarray::{ArrayD, IxDyn};
        crate::output::Output::new(path)?.write_with(|f| {
            let mut w = ndarray_npy::NpzWriter::new(f);
            let mut xs = vec![self.n];
            xs.extend(&self.x_shape);
            let x = ArrayD::from_shape_vec(IxDyn(&xs), self.x.clone())?;
            w.add_array("x", &x)?;
            match &self.y {
                Targets::Values(v) => {
                    let mut ys = vec![self.n];
                    ys.extend(&self.y_shape);
                    w.add_array("y", &ArrayD::from_shape_vec(IxDyn(&ys), v.clone())?)?;
                }
                Targets::Classes(c) => {
                    // [N, 1] like the regression targets (the loader also takes [N]).
                    w.add_array(
                        "y",
                        &ArrayD::from_shape_vec(IxDyn(&[self.n, 1]), c.clone())?,
                    )?;
                }
            }
            w.finish()?;
            Ok(())
        })
    }
}

fn where_nan(name: &str, data: &[f32], row_len: usize) -> Option<String> {
    let i = data.iter().position(|v| !v.is_finite())?;
    let (r, c) = (i / row_len.max(1), i % row_len.max(1));
    Some(format!(
        "{name}[{r}, {c}] (row {r}, column {c}) is {}",
        data[i]
    ))
}

/// Reads `path` (`.npz` with `x` and `y`, or CSV) and checks it against `net` and `loss`.
pub fn load(path: &Path, net: &Network, loss: LossKind) -> Result<Dataset> {
    load_shaped(path, &net.input, net.output(), loss)
}

/// [`load`] for a network with per-sample input shape `input` and output shape `output`.
pub fn load_shaped(
    path: &Path,
    input: &[usize],
    output: &[usize],
    loss: LossKind,
) -> Result<Dataset> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read data {}", path.display()))?;
    crate::output::record_input(path);
    let what = || format!("data {}", path.display());
    let (xs, x, ys, y) = if bytes.starts_with(b"PK") {
        let p = Params::from_npz(&bytes).with_context(what)?;
        let x = p
            .get("x")
            .with_context(|| format!("{}: no array \"x\"", what()))?;
        let y = p
            .get("y")
            .with_context(|| format!("{}: no array \"y\"", what()))?;
        (
            x.shape.clone(),
            x.data.clone(),
            y.shape.clone(),
            y.data.clone(),
        )
    } else {
        read_csv(&bytes, input, output, loss).with_context(what)?
    };
    check(xs, x, ys, y, input, output, loss).with_context(what)
}

/// (x shape, x, y shape, y) as read from a file.
type Columns = (Vec<usize>, Vec<f32>, Vec<usize>, Vec<f32>);

/// CSV: one sample per line, the input features then the target(s); a first line that is not
/// numeric is a header.
fn read_csv(bytes: &[u8], input: &[usize], output: &[usize], loss: LossKind) -> Result<Columns> {
    let text = std::str::from_utf8(bytes).context("CSV is not UTF-8 text")?;
    if input.len() != 1 {
        bail!(
            "CSV data needs a spec with flat input features; this spec's input is {input:?} (use .npz)"
        );
    }
    let nx = input[0];
    let ny = match loss {
        LossKind::Mse => output.iter().product(),
        LossKind::CrossEntropy => 1,
    };
    let (mut x, mut y) = (Vec::new(), Vec::new());
    let mut n = 0;
    for (li, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let parsed: Result<Vec<f32>, _> = fields.iter().map(|f| f.parse::<f32>()).collect();
        let vals = match parsed {
            Ok(v) => v,
            Err(_) if n == 0 && x.is_empty() && li == 0 => continue, // header
            Err(e) => bail!("line {}: {e} in \"{line}\"", li + 1),
        };
        if vals.len() != nx + ny {
            bail!(
                "line {}: {} columns: expected {} ({} inputs + {} target{})",
                li + 1,
                vals.len(),
                nx + ny,
                nx,
                ny,
                if ny == 1 { "" } else { "s" }
            );
        }
        x.extend_from_slice(&vals[..nx]);
        y.extend_from_slice(&vals[nx..]);
        n += 1;
    }
    Ok((vec![n, nx], x, vec![n, ny], y))
}

fn check(
    xs: Vec<usize>,
    x: Vec<f32>,
    ys: Vec<usize>,
    y: Vec<f32>,
    input: &[usize],
    output: &[usize],
    loss: LossKind,
) -> Result<Dataset> {
    let want_x: Vec<usize> = std::iter::once(0).chain(input.iter().copied()).collect();
    if xs.len() != want_x.len() || xs[1..] != want_x[1..] {
        bail!(
            "x has shape {xs:?}: the spec expects [N, {}]",
            input
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let n = xs[0];
    if n == 0 {
        bail!("x has no samples");
    }
    let xl: usize = input.iter().product();
    if let Some(w) = where_nan("x", &x, xl) {
        bail!("{w}: data must be finite");
    }
    if ys.first() != Some(&n) {
        bail!("y has shape {ys:?}: expected {n} rows like x");
    }
    let yl: usize = ys[1..].iter().product();
    if let Some(w) = where_nan("y", &y, yl) {
        bail!("{w}: data must be finite");
    }
    match loss {
        LossKind::Mse => {
            let out = output.to_vec();
            let ok = ys[1..] == out[..] || (ys.len() == 1 && out == [1]);
            if !ok {
                bail!(
                    "y has shape {ys:?}: expected [N, {}] (the spec's output) for the MSE loss",
                    out.iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            Ok(Dataset {
                n,
                x_shape: input.to_vec(),
                x,
                y_shape: out,
                y: Targets::Values(y),
            })
        }
        LossKind::CrossEntropy => {
            if !(ys.len() == 1 || (ys.len() == 2 && ys[1] == 1)) {
                bail!(
                    "y has shape {ys:?}: expected [N] (or [N, 1]) class indices for cross-entropy"
                );
            }
            let k = output[0];
            let mut c = Vec::with_capacity(n);
            for (i, &v) in y.iter().enumerate() {
                if v.fract() != 0.0 || v < 0.0 || v as usize >= k {
                    bail!("y[{i}] = {v}: expected a class index in 0..{k}");
                }
                c.push(v as i64);
            }
            Ok(Dataset {
                n,
                x_shape: input.to_vec(),
                x,
                y_shape: vec![],
                y: Targets::Classes(c),
            })
        }
    }
}

/// A seeded xorshift64* stream (`ditac::core::rng`: the batch order and the example data). Kept rather than `rand`:
/// the example data in `models/regression` and `models/gmm` were drawn from this stream, and the
/// README's per-seed training figures from its batch order; a new stream would change both.
#[derive(Debug, Clone)]
pub struct Rng(XorShift64Star);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(XorShift64Star(
            seed.wrapping_mul(GOLDEN) ^ 0xD1B5_4A32_D192_ED03 | 1,
        ))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.0.unit_f64()
    }
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
    /// Uniform integer in 0..n.
    pub fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize % n.max(1)
    }
}

/// The batch order: each epoch a fresh Fisher–Yates permutation of 0..n from `seed`; batches are
/// consecutive runs of `batch` indices, wrapping into the next epoch.
#[derive(Debug, Clone)]
pub struct Batches {
    rng: Rng,
    perm: Vec<usize>,
    pos: usize,
}

impl Batches {
    pub fn new(n: usize, seed: u64) -> Batches {
        let mut b = Batches {
            rng: Rng::new(seed ^ 0x0BA7_C4E5),
            perm: (0..n).collect(),
            pos: n,
        };
        b.reshuffle();
        b
    }
    fn reshuffle(&mut self) {
        let n = self.perm.len();
        for i in (1..n).rev() {
            let j = self.rng.below(i + 1);
            self.perm.swap(i, j);
        }
        self.pos = 0;
    }
    /// The next batch of `size` indices.
    pub fn next_batch(&mut self, size: usize, out: &mut Vec<usize>) {
        out.clear();
        while out.len() < size {
            if self.pos == self.perm.len() {
                self.reshuffle();
            }
            out.push(self.perm[self.pos]);
            self.pos += 1;
        }
    }
}

/// The regression target of the paper's Figure 1 style: a sum of sines on [−1, 1]².
pub fn sum_of_sines(x1: f64, x2: f64) -> f64 {
    use std::f64::consts::PI;
    (2.0 * PI * x1).sin() + (1.5 * PI * x2).sin() + 0.5 * (PI * (x1 + x2)).sin()
}

/// `n` points uniform on [−1, 1]² with y = [`sum_of_sines`].
pub fn regression(n: usize, seed: u64) -> Dataset {
    let mut r = Rng::new(seed);
    let mut x = Vec::with_capacity(2 * n);
    let mut y = Vec::with_capacity(n);
    for _ in 0..n {
        let (a, b) = (2.0 * r.uniform() - 1.0, 2.0 * r.uniform() - 1.0);
        x.extend([a as f32, b as f32]);
        y.push(sum_of_sines(a, b) as f32);
    }
    Dataset {
        n,
        x_shape: vec![2],
        x,
        y_shape: vec![1],
        y: Targets::Values(y),
    }
}

/// Number of classes and components per class of the Gaussian-mixture example.
pub const GMM_CLASSES: usize = 4;
pub const GMM_COMPONENTS: usize = 3;

/// The mixture's component centres (fixed: drawn once from seed 2024) and spread.
pub fn gmm_centres() -> Vec<[f64; 2]> {
    let mut r = Rng::new(2024);
    (0..GMM_CLASSES * GMM_COMPONENTS)
        .map(|_| [1.6 * r.uniform() - 0.8, 1.6 * r.uniform() - 0.8])
        .collect()
}
pub const GMM_SIGMA: f64 = 0.18;

/// `n` points of a 2-D Gaussian mixture: class c is a mixture of GMM_COMPONENTS Gaussians
/// (centres [`gmm_centres`], standard deviation [`GMM_SIGMA`]); y is the class index.
pub fn gmm(n: usize, seed: u64) -> Dataset {
    let centres = gmm_centres();
    let mut r = Rng::new(seed);
    let mut x = Vec::with_capacity(2 * n);
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let c = i % GMM_CLASSES;
        let k = r.below(GMM_COMPONENTS);
        let m = centres[c * GMM_COMPONENTS + k];
        x.extend([
            (m[0] + GMM_SIGMA * r.normal()) as f32,
            (m[1] + GMM_SIGMA * r.normal()) as f32,
        ]);
        y.push(c as i64);
    }
    Dataset {
        n,
        x_shape: vec![2],
        x,
        y_shape: vec![],
        y: Targets::Classes(y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cover_each_epoch() {
        let mut b = Batches::new(10, 1);
        let mut seen = Vec::new();
        let mut out = Vec::new();
        for _ in 0..5 {
            b.next_batch(2, &mut out);
            seen.extend(out.iter().copied());
        }
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn csv_with_header_and_errors_that_say_where() {
        let net =
            crate::spec::Spec::from_toml("input = 2\n[[layers]]\ntype = \"linear\"\nout = 1\n")
                .unwrap()
                .resolve()
                .unwrap();
        let dir = std::env::temp_dir().join(format!("ditac-csv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("d.csv");
        std::fs::write(&p, "x1,x2,y\n0.5,1,2\n-1,0.25,3\n").unwrap();
        let d = load(&p, &net, LossKind::Mse).unwrap();
        assert_eq!((d.n, d.x.clone()), (2, vec![0.5, 1.0, -1.0, 0.25]));
        assert_eq!(d.y, Targets::Values(vec![2.0, 3.0]));
        std::fs::write(&p, "0.5,1,2\n-1,0.25\n").unwrap();
        let e = format!("{:#}", load(&p, &net, LossKind::Mse).unwrap_err());
        assert!(e.contains("line 2: 2 columns: expected 3"), "{e}");
        std::fs::write(&p, "0.5,1,2\n-1,nan,3\n").unwrap();
        let e = format!("{:#}", load(&p, &net, LossKind::Mse).unwrap_err());
        assert!(e.contains("x[1, 1]") && e.contains("NaN"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn generators_are_seeded() {
        assert_eq!(regression(5, 3), regression(5, 3));
        assert_ne!(regression(5, 3), regression(5, 4));
        let g = gmm(8, 1);
        assert_eq!(g.y, Targets::Classes(vec![0, 1, 2, 3, 0, 1, 2, 3]));
    }
}
