//! The reference vectors (`$DITAC_ORACLE_DIR`, else `tests/data/oracle`; schema in its README), the named
//! tolerances the tests compare with, and the one `assert_close`. Needs serde_json only: the math-only
//! tests of the plugin package include this file by itself (`#[path = "support/oracle.rs"]`).
#![allow(dead_code)]

use serde_json::Value;
use std::path::PathBuf;

/// The repository root, whichever package (the plugin's at the root, or `tools/`) built the test.
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .find(|p| p.join("ops").is_dir() && p.join("tools").is_dir())
        .unwrap_or(&manifest)
        .to_path_buf()
}

/// `$DITAC_ORACLE_DIR`, else the repository's own `tests/data/oracle`.
pub fn oracle_dir() -> PathBuf {
    let dir = std::env::var_os("DITAC_ORACLE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("tests/data/oracle"));
    assert!(
        dir.is_dir(),
        "reference vectors not found at {} (set DITAC_ORACLE_DIR)",
        dir.display()
    );
    dir
}

pub fn num(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().unwrap(),
        Value::String(s) => match s.as_str() {
            "nan" => f64::NAN,
            "inf" => f64::INFINITY,
            "-inf" => f64::NEG_INFINITY,
            other => panic!("bad number {other}"),
        },
        other => panic!("bad number {other}"),
    }
}

pub fn vec1(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(num).collect()
}

pub fn vec2(v: &Value) -> Vec<Vec<f64>> {
    v.as_array().unwrap().iter().map(vec1).collect()
}

pub fn vec1_f32(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| num(x) as f32)
        .collect()
}

pub struct Case {
    pub name: String,
    pub json: Value,
    pub tess: usize,
    pub zero_boundary: bool,
    pub a: f32,
    pub b: f32,
    pub basis: Vec<Vec<f64>>,
    pub theta: Vec<f32>,
    /// `points.x` in single precision, as a float tensor carries it.
    pub x: Vec<f32>,
}

impl Case {
    pub fn d(&self) -> usize {
        self.theta.len()
    }
    pub fn points(&self, key: &str) -> Vec<f64> {
        vec1(&self.json["points"][key])
    }
    pub fn points2(&self, key: &str) -> Vec<Vec<f64>> {
        vec2(&self.json["points"][key])
    }
    /// `points[key]` in single precision, as a float tensor carries it.
    pub fn points_f32(&self, key: &str) -> Vec<f32> {
        vec1_f32(&self.json["points"][key])
    }
    /// The reference's normalised table `lut.T_norm` (a `DiTACLut` table).
    pub fn table(&self) -> Vec<f32> {
        vec1_f32(&self.json["lut"]["T_norm"])
    }
    /// dθ of the table path for dY = 1 over every point.
    pub fn theta_grad_sum(&self) -> Vec<f32> {
        vec1_f32(&self.json["theta_grad_ones"]["data_term_sum"])
    }
    pub fn tags(&self) -> Vec<String> {
        self.json["points"]["tag"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect()
    }
    /// Points that are not near a rounding tie of the table index.
    pub fn stable(&self) -> Vec<bool> {
        self.tags().iter().map(|t| !t.contains("fragile")).collect()
    }
    pub fn basis_f32(&self) -> Vec<f32> {
        self.basis.iter().flatten().map(|&v| v as f32).collect()
    }
    /// Rows and columns of B (2·tess × d).
    pub fn basis_shape(&self) -> (usize, usize) {
        (self.basis.len(), self.basis.first().map_or(0, Vec::len))
    }
    /// The reference's B is stable across BLAS builds only for these sizes (ditac.md §3).
    pub fn qr_reproducible(&self) -> bool {
        let t = self.tess;
        (1..20).contains(&t) && !(t == 6 && self.zero_boundary)
    }
}

/// Every case of the reference's `index.json`.
pub fn cases() -> Vec<Case> {
    let dir = oracle_dir();
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).unwrap()).unwrap();
    index["configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| load(&dir.join(c["file"].as_str().unwrap())))
        .collect()
}

/// The case of `NAME.json`.
pub fn case(name: &str) -> Case {
    load(&oracle_dir().join(format!("{name}.json")))
}

fn load(path: &std::path::Path) -> Case {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let json: Value = serde_json::from_str(&text).unwrap();
    let cfg = &json["config"];
    Case {
        name: cfg["name"].as_str().unwrap().to_string(),
        tess: cfg["tess"].as_u64().unwrap() as usize,
        zero_boundary: cfg["zero_boundary"].as_bool().unwrap(),
        a: num(&cfg["a"]) as f32,
        b: num(&cfg["b"]) as f32,
        basis: vec2(&json["B"]),
        theta: vec1_f32(&json["theta"]),
        x: vec1_f32(&json["points"]["x"]),
        json,
    }
}

/// Named tolerances: |got − want| ≤ abs + rel·|want|; NaN matches NaN, ±∞ matches itself.
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    pub rel: f64,
    pub abs: f64,
}

impl Tol {
    /// The table path: 1e-5 relative / 1e-5·(b−a) absolute (oracle README).
    pub fn table(a: f32, b: f32) -> Tol {
        Tol {
            rel: 1e-5,
            abs: 1e-5 * (b - a) as f64,
        }
    }
    /// The exact path on T and y: 1e-5 relative.
    pub fn exact(a: f32, b: f32) -> Tol {
        Tol {
            rel: 1e-5,
            abs: 1e-5 * (b - a) as f64,
        }
    }
    /// θ-gradients of the exact path: 1e-4 relative, absolute scaled by the row's magnitude.
    pub fn exact_grad(scale: f64) -> Tol {
        Tol {
            rel: 1e-4,
            abs: 1e-4 * scale.max(1e-3),
        }
    }
    /// `rel` relative plus `rel·floor` absolute: relative for values well above `floor`, about
    /// `rel·floor` absolute for smaller ones.
    pub fn rel_floor(rel: f64, floor: f64) -> Tol {
        Tol {
            rel,
            abs: rel * floor,
        }
    }
    pub fn ok(&self, got: f64, want: f64) -> bool {
        if want.is_nan() {
            return got.is_nan();
        }
        if want.is_infinite() {
            return got == want;
        }
        (got - want).abs() <= self.abs + self.rel * want.abs()
    }
}

/// Asserts `tol.ok(got[i], want[i])` for every `i` (only where `mask[i]`, with a mask), naming the
/// first mismatches.
#[track_caller]
pub fn assert_close<G, W>(what: &str, got: &[G], want: &[W], tol: Tol, mask: Option<&[bool]>)
where
    G: Copy + Into<f64>,
    W: Copy + Into<f64>,
{
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut bad = Vec::new();
    for i in 0..got.len() {
        if mask.is_some_and(|m| !m[i]) {
            continue;
        }
        let (g, w) = (got[i].into(), want[i].into());
        if !tol.ok(g, w) {
            bad.push(format!("[{i}] got {g} want {w}"));
        }
    }
    assert!(
        bad.is_empty(),
        "{what}: {} mismatches (tol {tol:?}): {}",
        bad.len(),
        bad[..bad.len().min(8)].join("; ")
    );
}
