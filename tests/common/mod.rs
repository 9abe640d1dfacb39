//! Shared helpers of the plugin integration tests: locating the ORT library and the plugin,
//! one ORT environment per test process, the oracle vectors, model building and running.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use ditac_tools::model::{Attr, ElemType, ModelBuilder, DITAC_DOMAIN};
use ort::session::Session;
use ort::value::Tensor;
use serde_json::Value;

/// Named tolerances (oracle README).
pub const LUT_REL: f64 = 1e-5;
pub const EXACT_REL: f64 = 1e-5;
pub const GRAD_REL: f64 = 1e-4;

pub fn root() -> PathBuf {
    oracle_support::repo_root()
}

/// The plugin: $DITAC_PLUGIN or target/release/libditac.so (build it with
/// `cargo build --release --lib` first).
pub fn plugin_path() -> PathBuf {
    let p = std::env::var_os("DITAC_PLUGIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/release/libditac.so"));
    assert!(
        p.exists(),
        "plugin library {} not found: run `cargo build --release --lib` first (or set DITAC_PLUGIN)",
        p.display()
    );
    p
}

static ENV: OnceLock<ort::environment::Environment> = OnceLock::new();

/// The ORT environment of this test process, loaded from `lib` (relative to the crate root)
/// unless ORT_DYLIB_PATH is set.
pub fn env_from(lib: &str) -> &'static ort::environment::Environment {
    ENV.get_or_init(|| {
        let path = std::env::var_os("ORT_DYLIB_PATH")
            .map(PathBuf::from)
            .unwrap_or_else(|| root().join(lib));
        assert!(
            path.exists(),
            "ONNX Runtime library {} not found",
            path.display()
        );
        ort::init_from(&path)
            .expect("load ONNX Runtime")
            .with_name("ditac-tests")
            .build()
            .expect("ORT environment")
    })
}

pub fn env() -> &'static ort::environment::Environment {
    env_from(".ort/1.32.0/libonnxruntime.so")
}

/// A session on `bytes` with the plugin registered.
pub fn session(bytes: &[u8]) -> ort::Result<Session> {
    session_threads(bytes, 1)
}

/// Session creation is serialised: ORT 1.19 registers a custom domain in ONNX's global
/// domain-version map with a check-then-insert race ("Trying to add a domain to DomainToVersion
/// map, but the domain is already exist") when two sessions are created at the same moment.
static CREATE: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn session_threads(bytes: &[u8], threads: usize) -> ort::Result<Session> {
    let _g = CREATE.lock().unwrap_or_else(|e| e.into_inner());
    let b = Session::builder(env())?;
    let b = b
        .with_intra_threads(threads)
        .map_err(ort::Error::<()>::from)?;
    let mut b = b
        .with_operator_library(plugin_path())
        .map_err(ort::Error::<()>::from)?;
    b.commit_from_memory(bytes)
}

// ----------------------------------------------------------------------------------------------
// Oracle

#[path = "../support/oracle.rs"]
mod oracle_support;
/// One parser of the oracle's numbers (JSON numbers or "nan"/"inf"/"-inf") for every test.
pub use oracle_support::num;

pub fn vec_f32(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| num(x) as f32)
        .collect()
}

pub fn mat_f32(v: &Value) -> (usize, usize, Vec<f32>) {
    let rows = v.as_array().unwrap();
    let r = rows.len();
    let c = rows.first().map_or(0, |x| x.as_array().unwrap().len());
    (r, c, rows.iter().flat_map(vec_f32).collect())
}

pub struct Oracle {
    pub name: String,
    pub tess: i64,
    pub a: f32,
    pub b: f32,
    pub d: usize,
    pub theta: Vec<f32>,
    /// (rows, cols, data)
    pub basis: (usize, usize, Vec<f32>),
    pub x: Vec<f32>,
    pub tags: Vec<String>,
    pub act_lut: Vec<f32>,
    pub act_exact: Vec<f32>,
    pub dact_dx_lut: Vec<f32>,
    pub dtheta_sum: Vec<f32>,
    pub t_norm: Vec<f32>,
    pub json: Value,
}

pub fn oracle(name: &str) -> Oracle {
    let path = PathBuf::from("/work/shared/oracle").join(format!("{name}.json"));
    let path = if path.exists() {
        path
    } else {
        root().join("shared/oracle").join(format!("{name}.json"))
    };
    let j: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let c = &j["config"];
    let p = &j["points"];
    Oracle {
        name: name.to_string(),
        tess: c["tess"].as_i64().unwrap(),
        a: num(&c["a"]) as f32,
        b: num(&c["b"]) as f32,
        d: j["d"].as_u64().unwrap() as usize,
        theta: vec_f32(&j["theta"]),
        basis: mat_f32(&j["B"]),
        x: vec_f32(&p["x"]),
        tags: p["tag"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect(),
        act_lut: vec_f32(&p["act_lut"]),
        act_exact: vec_f32(&p["act_exact"]),
        dact_dx_lut: vec_f32(&p["dact_dx_lut"]),
        dtheta_sum: vec_f32(&j["theta_grad_ones"]["data_term_sum"]),
        t_norm: vec_f32(&j["lut"]["T_norm"]),
        json: j,
    }
}

pub const ORACLES: [&str; 5] = [
    "default_t10_m0.5_2",
    "t4_m3_3",
    "t10_m3_3",
    "t20_m5_5",
    "t10_m3_3_identity",
];

/// Asserts |got − want| ≤ rel·max(|want|, floor) elementwise (NaN must match NaN); skips
/// indices in `skip`.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], rel: f64, floor: f64, skip: &[bool]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for i in 0..got.len() {
        if skip.get(i).copied().unwrap_or(false) {
            continue;
        }
        let (g, w) = (got[i] as f64, want[i] as f64);
        if w.is_nan() {
            assert!(g.is_nan(), "{what}[{i}]: got {g}, want NaN");
            continue;
        }
        if w.is_infinite() {
            assert_eq!(g, w, "{what}[{i}]");
            continue;
        }
        let tol = rel * w.abs().max(floor);
        assert!(
            (g - w).abs() <= tol,
            "{what}[{i}]: got {g}, want {w} (|Δ| = {:e} > {tol:e})",
            (g - w).abs()
        );
    }
}

/// Fragile rounding ties of the oracle (compared loosely elsewhere).
pub fn fragile(o: &Oracle) -> Vec<bool> {
    o.tags.iter().map(|t| t.contains("fragile")).collect()
}

// ----------------------------------------------------------------------------------------------
// Models

/// How θ (or the table) enters the graph.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Feed {
    Initializer,
    Input,
}

/// A single-node model `op(X[, dY], param[, B])` with the param (θ or table) shaped `pshape`.
pub struct OpModel<'a> {
    pub op: &'a str,
    pub elem: ElemType,
    pub xshape: Vec<i64>,
    pub param: &'a [f32],
    pub pshape: Vec<usize>,
    pub feed: Feed,
    pub basis: Option<(usize, usize, &'a [f32])>,
    pub basis_feed: Feed,
    pub attrs: Vec<(&'a str, Attr)>,
}

impl<'a> OpModel<'a> {
    pub fn new(op: &'a str, param: &'a [f32], attrs: Vec<(&'a str, Attr)>) -> Self {
        OpModel {
            op,
            elem: ElemType::Float,
            xshape: vec![-1],
            param,
            pshape: vec![param.len()],
            feed: Feed::Initializer,
            basis: None,
            basis_feed: Feed::Initializer,
            attrs,
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        let pname = if self.op == "DiTACLut" {
            "table"
        } else {
            "theta"
        };
        let mut m = ModelBuilder::new("test");
        let mut inputs: Vec<&str> = Vec::new();
        if self.op == "DiTACGrad" {
            m.input("dY", self.elem, &self.xshape);
            inputs.push("dY");
        }
        m.input("X", self.elem, &self.xshape);
        inputs.push("X");
        match self.feed {
            Feed::Initializer => {
                m.initializer_f32(pname, &self.pshape, self.param);
            }
            Feed::Input => {
                // Symbolic dims: shape checks are the plugin's, not ORT's.
                let dims = vec![-1i64; self.pshape.len()];
                m.input(pname, ElemType::Float, &dims);
            }
        }
        inputs.push(pname);
        if let Some((r, c, data)) = self.basis {
            match self.basis_feed {
                Feed::Initializer => {
                    m.initializer_f32("B", &[r, c], data);
                }
                Feed::Input => {
                    let _ = (r, c);
                    m.input("B", ElemType::Float, &[-1, -1]);
                }
            }
            inputs.push("B");
        }
        let outputs: Vec<&str> = if self.op == "DiTACGrad" {
            let dims: Vec<i64> = self.pshape.iter().map(|&d| d as i64).collect();
            m.output("dX", self.elem, &self.xshape);
            m.output("dtheta", ElemType::Float, &dims);
            vec!["dX", "dtheta"]
        } else {
            m.output("Y", self.elem, &self.xshape);
            vec!["Y"]
        };
        m.node(
            self.op,
            DITAC_DOMAIN,
            "act1",
            &inputs,
            &outputs,
            &self.attrs,
        );
        m.to_bytes()
    }
}

/// The common attributes of an oracle config.
pub fn oracle_attrs(o: &Oracle, basis: &str, lut_size: i64) -> Vec<(&'static str, Attr)> {
    vec![
        ("a", Attr::Float(o.a)),
        ("b", Attr::Float(o.b)),
        ("tess", Attr::Int(o.tess)),
        ("basis", Attr::from(basis)),
        ("lut_size", Attr::Int(lut_size)),
    ]
}

/// Runs a float session on X (and extra float inputs), returning output `out`.
pub fn run_f32(
    s: &mut Session,
    x: &[f32],
    extra: &[(&str, Vec<usize>, Vec<f32>)],
    out: &str,
) -> ort::Result<Vec<f32>> {
    let mut inputs: Vec<(String, ort::session::SessionInputValue<'_>)> = vec![(
        "X".to_string(),
        Tensor::from_array((vec![x.len()], x.to_vec()))?.into(),
    )];
    for (n, shape, v) in extra {
        inputs.push((
            n.to_string(),
            Tensor::from_array((shape.clone(), v.clone()))?.into(),
        ));
    }
    let o = s.run(inputs)?;
    Ok(o[out].try_extract_tensor::<f32>()?.1.to_vec())
}
