//! The math of DiTAC, free of ONNX Runtime types: shared by the plugin, the CUDA glue and the tools.

pub mod activation;
pub mod basis;
pub mod budget;
pub mod config;
pub mod cpa;
pub mod erf;
pub mod error;
pub mod kernels;
pub mod prior;
pub mod real;
pub mod rng;
pub mod table;
pub mod tessellation;
pub mod warps;

pub use activation::{channel_layout, Activation};
pub use basis::{Basis, BasisKind};
pub use config::{AttrSet, AttrSource, AttrValues, Attrs, Interpolation, Variant, WrongType};
pub use error::{DitacError, Result};
pub use warps::{Joined, Warps};
