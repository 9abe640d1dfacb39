//! Loader for the reference vectors in `../shared/oracle` (schema in its README) and the named
//! tolerances the tests compare with.
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

/// `$DITAC_ORACLE_DIR`, else the nearest `shared/oracle` beside the repository root or one of its
/// ancestors (a git worktree may sit deeper than the main checkout).
pub fn oracle_dir() -> PathBuf {
    let dir = std::env::var_os("DITAC_ORACLE_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            repo_root()
                .ancestors()
                .skip(1)
                .map(|p| p.join("shared/oracle"))
                .find(|p| p.is_dir())
        })
        .expect("reference vectors not found: set DITAC_ORACLE_DIR (../shared/oracle)");
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

pub struct Case {
    pub name: String,
    pub json: Value,
    pub tess: usize,
    pub zero_boundary: bool,
    pub a: f32,
    pub b: f32,
    pub basis: Vec<Vec<f64>>,
    pub theta: Vec<f32>,
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
    /// The reference's B is stable across BLAS builds only for these sizes (ditac.md §3).
    pub fn qr_reproducible(&self) -> bool {
        let t = self.tess;
        (1..20).contains(&t) && !(t == 6 && self.zero_boundary)
    }
}

pub fn cases() -> Vec<Case> {
    let dir = oracle_dir();
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).unwrap()).unwrap();
    index["configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let file = c["file"].as_str().unwrap();
            let json: Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join(file)).unwrap()).unwrap();
            let cfg = &json["config"];
            Case {
                name: cfg["name"].as_str().unwrap().to_string(),
                tess: cfg["tess"].as_u64().unwrap() as usize,
                zero_boundary: cfg["zero_boundary"].as_bool().unwrap(),
                a: num(&cfg["a"]) as f32,
                b: num(&cfg["b"]) as f32,
                basis: vec2(&json["B"]),
                theta: vec1(&json["theta"]).iter().map(|&v| v as f32).collect(),
                json,
            }
        })
        .collect()
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

#[track_caller]
pub fn assert_close(what: &str, got: &[f64], want: &[f64], tol: Tol, mask: Option<&[bool]>) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut bad = Vec::new();
    for i in 0..got.len() {
        if mask.is_some_and(|m| !m[i]) {
            continue;
        }
        if !tol.ok(got[i], want[i]) {
            bad.push(format!("[{i}] got {} want {}", got[i], want[i]));
        }
    }
    assert!(
        bad.is_empty(),
        "{what}: {} mismatches (tol {tol:?}): {}",
        bad.len(),
        bad[..bad.len().min(8)].join("; ")
    );
}
