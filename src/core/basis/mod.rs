//! Null-space bases B (D×d, D = 2·tess) of the CPA constraint matrix L, as the reference builds them.
//! Row 2c holds the slope of cell c, row 2c+1 its intercept (interleaved, as difw stores A = B·θ).

pub mod closed;
pub mod qr;

use super::error::{DitacError, Result};

/// Which construction B follows. `Explicit` means the caller supplies B (e.g. a trained model's own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BasisKind {
    Qr,
    Rref,
    Sparse,
    Explicit,
}

impl std::str::FromStr for BasisKind {
    type Err = DitacError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "qr" => Ok(BasisKind::Qr),
            "rref" => Ok(BasisKind::Rref),
            "sparse" => Ok(BasisKind::Sparse),
            "explicit" => Ok(BasisKind::Explicit),
            other => Err(DitacError::attr(
                "basis",
                format!("\"{other}\""),
                "one of \"qr\", \"rref\", \"sparse\", \"explicit\"",
            )),
        }
    }
}

/// A dense basis, row-major `rows × cols` (rows = D = 2·tess, cols = d).
#[derive(Debug, Clone, PartialEq)]
pub struct Basis {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f64>,
}

impl Basis {
    pub fn at(&self, r: usize, c: usize) -> f64 {
        self.data[r * self.cols + c]
    }
    /// B cast to float32, as the reference does on its device.
    pub fn to_f32(&self) -> Vec<f32> {
        self.data.iter().map(|&v| v as f32).collect()
    }
}

/// Number of parameters d for a tessellation.
pub fn theta_len(tess: usize, zero_boundary: bool) -> usize {
    if zero_boundary {
        tess - 1
    } else {
        tess + 1
    }
}

/// Whether the reference's `qr` basis depends on the machine it ran on (ditac.md §3): with a zero
/// boundary at tess 6, and at every tess ≥ 20, LAPACK's pivoted QR picks its reflectors by the sign
/// of a rounding-level pivot, so different BLAS builds give different B. A θ trained there only
/// means something with the B of its own training run (`basis = "explicit"`).
pub fn qr_is_machine_dependent(tess: usize, zero_boundary: bool) -> bool {
    (zero_boundary && tess == 6) || tess >= 20
}

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// The basis for (tess, zero_boundary, kind), built once per process and shared: the QR port of a
/// large tessellation is too costly to redo per kernel.
pub fn build(tess: usize, zero_boundary: bool, kind: BasisKind) -> Result<Arc<Basis>> {
    if tess == 0 || tess > 1024 {
        return Err(DitacError::attr("tess", tess, "an integer in 1..=1024"));
    }
    type Cache = Mutex<HashMap<(usize, bool, BasisKind), Arc<Basis>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = (tess, zero_boundary, kind);
    if let Some(b) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(b.clone());
    }
    let basis = match kind {
        BasisKind::Qr => {
            let (l, m, n) = super::tessellation::constraint_matrix(tess, zero_boundary);
            let (data, cols) = qr::qr_null(&l, m, n);
            Basis {
                rows: n,
                cols,
                data,
            }
        }
        BasisKind::Rref => closed::rref(tess, zero_boundary),
        BasisKind::Sparse => closed::sparse(tess, zero_boundary),
        BasisKind::Explicit => {
            return Err(DitacError::attr(
                "basis",
                "\"explicit\"",
                "an explicit basis to be given as input B",
            ))
        }
    };
    let basis = Arc::new(basis);
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, basis.clone());
    Ok(basis)
}

/// A basis given by the caller (row-major rows×cols, float32 as ONNX carries it), validated:
/// shape [2·tess, d], finite, and L·B ≈ 0 (it must span velocity fields that obey the constraints).
pub fn explicit(
    tess: usize,
    zero_boundary: bool,
    data: &[f32],
    rows: usize,
    cols: usize,
) -> Result<Basis> {
    let d = theta_len(tess, zero_boundary);
    if rows != 2 * tess || cols != d || data.len() != rows * cols {
        return Err(DitacError::input(
            "B",
            format!(
                "has shape [{rows}, {cols}]: expected [{}, {d}] (2·tess × d)",
                2 * tess
            ),
        ));
    }
    if let Some((i, v)) = data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(DitacError::input(
            "B",
            format!(
                "has a non-finite value {v} at row {}, column {}: expected finite numbers",
                i / cols,
                i % cols
            ),
        ));
    }
    let (l, m, n) = super::tessellation::constraint_matrix(tess, zero_boundary);
    let scale = data.iter().fold(1.0f64, |s, &v| s.max((v as f64).abs()));
    for r in 0..m {
        for c in 0..cols {
            let s: f64 = (0..n)
                .map(|k| l[r * n + k] * data[k * cols + c] as f64)
                .sum();
            if s.abs() > 1e-4 * scale {
                return Err(DitacError::input(
                    "B",
                    format!(
                        "column {c} violates constraint {r} of the tessellation (L·B = {s:e}): expected a basis of the CPA null space for tess = {tess}, zero_boundary = {}",
                        zero_boundary as i32
                    ),
                ));
            }
        }
    }
    Ok(Basis {
        rows,
        cols,
        data: data.iter().map(|&v| v as f64).collect(),
    })
}
