//! Sessions through the built plugin in ONNX Runtime (the `ort` crate, load-dynamic): locating the
//! runtime and the plugin, one environment per test process, single-node models and running them.
//! For the tests of `ditac-tools` (it needs `ort` and the tools' ONNX writer).

use super::oracle::{repo_root, Case};
use ditac_tools::model::{Attr, ElemType, ModelBuilder, DITAC_DOMAIN};
use ort::session::Session;
use ort::value::Tensor;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The plugin: $DITAC_PLUGIN or target/release/libditac.so (build it with
/// `cargo build --release --lib` first).
pub fn plugin_path() -> PathBuf {
    let p = std::env::var_os("DITAC_PLUGIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/release/libditac.so"));
    assert!(
        p.exists(),
        "plugin library {} not found: run `cargo build --release --lib` first (or set DITAC_PLUGIN)",
        p.display()
    );
    p
}

/// The ONNX Runtime the project builds against (`ditac_tools::runtime::ORT_VERSION`, as
/// `tools/setup.sh` installs it), relative to the repository root.
pub fn ort_newest() -> String {
    format!(
        ".ort/{}/libonnxruntime.so",
        ditac_tools::runtime::ORT_VERSION
    )
}

/// The ONNX Runtime library: `$ORT_DYLIB_PATH`, else `lib` relative to the repository root.
pub fn ort_library(lib: &str) -> PathBuf {
    std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(lib))
}

static ENV: OnceLock<ort::environment::Environment> = OnceLock::new();

/// The ORT environment of this test process, loaded from [`ort_library`]`(lib)`.
pub fn env_from(lib: &str) -> &'static ort::environment::Environment {
    ENV.get_or_init(|| {
        let path = ort_library(lib);
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

/// The ORT environment of this test process: [`ort_newest`] (or `$ORT_DYLIB_PATH`).
pub fn env() -> &'static ort::environment::Environment {
    env_from(&ort_newest())
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

/// A session on the model file `path`, with the plugin registered or (`plugin: false`) without.
pub fn session_from_file(path: &Path, plugin: bool) -> Session {
    let _g = CREATE.lock().unwrap_or_else(|e| e.into_inner());
    let b = Session::builder(env()).unwrap();
    let mut b = b
        .with_intra_threads(1)
        .map_err(ort::Error::<()>::from)
        .unwrap();
    if plugin {
        b = b
            .with_operator_library(plugin_path())
            .map_err(ort::Error::<()>::from)
            .unwrap();
    }
    b.commit_from_file(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

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
    pub param: Vec<f32>,
    pub pshape: Vec<usize>,
    pub feed: Feed,
    /// B: rows, columns, values.
    pub basis: Option<(usize, usize, Vec<f32>)>,
    pub basis_feed: Feed,
    pub attrs: Vec<(&'a str, Attr)>,
}

impl<'a> OpModel<'a> {
    pub fn new(op: &'a str, param: &[f32], attrs: Vec<(&'a str, Attr)>) -> Self {
        OpModel {
            op,
            elem: ElemType::Float,
            xshape: vec![-1],
            param: param.to_vec(),
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
                m.initializer_f32(pname, &self.pshape, &self.param);
            }
            Feed::Input => {
                // Symbolic dims: shape checks are the plugin's, not ORT's.
                let dims = vec![-1i64; self.pshape.len()];
                m.input(pname, ElemType::Float, &dims);
            }
        }
        inputs.push(pname);
        if let Some((r, c, data)) = &self.basis {
            match self.basis_feed {
                Feed::Initializer => {
                    m.initializer_f32("B", &[*r, *c], data);
                }
                Feed::Input => {
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

/// The common attributes of a reference case.
pub fn oracle_attrs(o: &Case, basis: &str, lut_size: i64) -> Vec<(&'static str, Attr)> {
    vec![
        ("a", Attr::Float(o.a)),
        ("b", Attr::Float(o.b)),
        ("tess", Attr::Int(o.tess as i64)),
        ("basis", Attr::from(basis)),
        ("lut_size", Attr::Int(lut_size)),
    ]
}

/// A single-node model of a reference case with its B given explicitly.
pub fn explicit_model<'a>(o: &Case, op: &'a str, lut_size: i64) -> OpModel<'a> {
    let mut m = OpModel::new(op, &o.theta, oracle_attrs(o, "explicit", lut_size));
    let (rows, cols) = o.basis_shape();
    m.basis = Some((rows, cols, o.basis_f32()));
    m
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
