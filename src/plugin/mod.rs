//! The ONNX Runtime custom-op plugin: domain `ai.ditac`, opset 1, ops `DiTAC`, `DiTACLut` and
//! `DiTACGrad` (ops.md) — for the CPU execution provider (float, float16, double) and, where
//! `libcuda` can be opened, for the CUDA execution provider (float, float16, bfloat16).
//!
//! Layers (each uses only those above it; `grep -n "use super" src/plugin/*.rs` shows it):
//! * this module: the ops' definitions ([`OpSpec`]) and the plugin's error ([`PluginError`]);
//! * [`context`]: the safe wrappers of ONNX Runtime's C API the kernels use — kernel info
//!   (attributes as a core `AttrSource`, constant inputs), tensor views, ORT's thread pool;
//! * [`node`]: what every kernel knows of its node — attributes (`Attrs::read`), input indices,
//!   basis, and the warps of θ (a core `Warps`), constant or cached by content;
//! * [`host`]: the elementwise work on the host over the warps, chunked on ORT's thread pool;
//! * [`cpu`] and [`cuda`]: the kernels of each execution provider, siblings (the CUDA one runs
//!   [`host`] on host copies for `lut_size = 0`);
//! * [`ffi`]: the `extern "C"` trampolines of the op definitions and the exported
//!   `RegisterCustomOps`; each entry point catches panics and returns an `OrtStatus` naming the
//!   node, the op and the offending value.
//!
//! Decisions where ops.md is silent are documented in `ops/README.md`.

pub mod context;
pub mod cpu;
pub mod cuda;
pub mod ffi;
mod host;
mod node;

use std::ffi::CStr;
use std::fmt;

use crate::core::DitacError;

/// The C API level the plugin asks for and stamps on its ops (ORT >= 1.17).
pub const ORT_API_LEVEL: u32 = 17;

/// The operator domain.
pub const DOMAIN: &CStr = c"ai.ditac";

/// The three operators of ops.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Ditac,
    Lut,
    Grad,
}

/// The tensor element type `T` of an op instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    F32,
    F16,
    F64,
    /// CUDA only.
    BF16,
}

/// The execution provider an op definition is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ep {
    Cpu,
    Cuda,
}

impl Ep {
    pub fn name_c(self) -> &'static CStr {
        match self {
            Ep::Cpu => c"CPUExecutionProvider",
            Ep::Cuda => c"CUDAExecutionProvider",
        }
    }
}

/// The declared type of one input or output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortType {
    /// The op's element type `T`.
    T,
    /// Always float32 (θ, table, B, dθ).
    Float,
}

/// One input or output of an op.
#[derive(Debug, Clone, Copy)]
pub struct Port {
    pub name: &'static str,
    pub ty: PortType,
    pub optional: bool,
}

const fn req(name: &'static str, ty: PortType) -> Port {
    Port {
        name,
        ty,
        optional: false,
    }
}

const fn opt(name: &'static str, ty: PortType) -> Port {
    Port {
        name,
        ty,
        optional: true,
    }
}

const DITAC_IN: [Port; 3] = [
    req("X", PortType::T),
    req("theta", PortType::Float),
    opt("B", PortType::Float),
];
const LUT_IN: [Port; 2] = [req("X", PortType::T), req("table", PortType::Float)];
const GRAD_IN: [Port; 4] = [
    req("dY", PortType::T),
    req("X", PortType::T),
    req("theta", PortType::Float),
    opt("B", PortType::Float),
];
const Y_OUT: [Port; 1] = [req("Y", PortType::T)];
const GRAD_OUT: [Port; 2] = [req("dX", PortType::T), req("dtheta", PortType::Float)];

/// One registered op definition: an operator for one element type and execution provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpSpec {
    pub kind: OpKind,
    pub elem: Elem,
    pub ep: Ep,
}

impl OpSpec {
    /// The op definitions of one execution provider (one per op and element type).
    pub fn for_ep(ep: Ep) -> Vec<OpSpec> {
        let elems: &[Elem] = match ep {
            Ep::Cpu => &[Elem::F32, Elem::F16, Elem::F64],
            Ep::Cuda => &[Elem::F32, Elem::F16, Elem::BF16],
        };
        let mut v = Vec::new();
        for kind in [OpKind::Ditac, OpKind::Lut, OpKind::Grad] {
            for &elem in elems {
                v.push(OpSpec { kind, elem, ep });
            }
        }
        v
    }

    /// Every op definition the plugin can register: the CPU ones, then the CUDA ones.
    pub fn all() -> Vec<OpSpec> {
        let mut v = Self::for_ep(Ep::Cpu);
        v.extend(Self::for_ep(Ep::Cuda));
        v
    }

    /// Whether input `i` is read on the host: on the CUDA EP, θ, the table and B (small; the
    /// tables are built from them by the core on the host, then copied to the device).
    pub fn input_on_host(&self, i: usize) -> bool {
        self.ep == Ep::Cuda
            && self
                .inputs()
                .get(i)
                .is_some_and(|p| p.ty == PortType::Float)
    }

    pub fn name(&self) -> &'static str {
        match self.kind {
            OpKind::Ditac => "DiTAC",
            OpKind::Lut => "DiTACLut",
            OpKind::Grad => "DiTACGrad",
        }
    }

    pub fn name_c(&self) -> &'static CStr {
        match self.kind {
            OpKind::Ditac => c"DiTAC",
            OpKind::Lut => c"DiTACLut",
            OpKind::Grad => c"DiTACGrad",
        }
    }

    pub fn inputs(&self) -> &'static [Port] {
        match self.kind {
            OpKind::Ditac => &DITAC_IN,
            OpKind::Lut => &LUT_IN,
            OpKind::Grad => &GRAD_IN,
        }
    }

    pub fn outputs(&self) -> &'static [Port] {
        match self.kind {
            OpKind::Ditac | OpKind::Lut => &Y_OUT,
            OpKind::Grad => &GRAD_OUT,
        }
    }

    /// Shape inference: (output index, index of the input whose type and shape it mirrors).
    pub fn shape_map(&self) -> &'static [(usize, usize)] {
        match self.kind {
            OpKind::Ditac | OpKind::Lut => &[(0, 0)],
            OpKind::Grad => &[(0, 1), (1, 2)],
        }
    }
}

/// How a failure is reported to ONNX Runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A bad attribute or input (ORT_INVALID_ARGUMENT).
    InvalidArgument,
    /// An internal failure: an ORT call that failed, a panic (ORT_FAIL).
    Fail,
}

/// An error on its way to an `OrtStatus`.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginError {
    pub kind: ErrorKind,
    pub msg: String,
}

impl PluginError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        PluginError {
            kind: ErrorKind::InvalidArgument,
            msg: msg.into(),
        }
    }
    pub fn fail(msg: impl Into<String>) -> Self {
        PluginError {
            kind: ErrorKind::Fail,
            msg: msg.into(),
        }
    }
    /// Prefixes the message with the node's identity (`ai.ditac.DiTAC node 'act1'`).
    pub fn in_node(self, prefix: &str) -> Self {
        PluginError {
            kind: self.kind,
            msg: format!("{prefix}: {}", self.msg),
        }
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl From<DitacError> for PluginError {
    fn from(e: DitacError) -> Self {
        PluginError::invalid(e.to_string())
    }
}

pub type PResult<T> = std::result::Result<T, PluginError>;

#[cfg(test)]
mod tests {
    /// The layers of the module doc: a file imports only files of lower layers (no circle; the CPU
    /// and CUDA kernels are siblings, and nothing below `ffi` knows the kernels).
    #[test]
    fn modules_import_lower_layers_only() {
        let files = [
            ("context", 0, include_str!("context.rs")),
            ("node", 1, include_str!("node.rs")),
            ("host", 1, include_str!("host.rs")),
            ("cpu", 2, include_str!("cpu.rs")),
            ("cuda", 2, include_str!("cuda.rs")),
            ("ffi", 3, include_str!("ffi.rs")),
        ];
        for (name, layer, src) in files {
            for (start, _) in src.match_indices("use super::") {
                let stmt = &src[start..start + src[start..].find(';').unwrap()];
                for word in stmt.split(|c: char| !c.is_alphanumeric() && c != '_') {
                    if let Some((other, l, _)) = files.iter().find(|f| f.0 == word) {
                        assert!(*l < layer, "{name}.rs imports {other} ({stmt})");
                    }
                }
            }
        }
    }
}
