//! The DiTAC plugin library: the math core (`core`), the ONNX Runtime custom-op plugin (`plugin`) and
//! the CUDA glue (`cuda`). Built as `libditac.so` for ONNX Runtime and as an rlib for `ditac-tools`.
pub mod core;
pub mod cuda;
pub use crate::core::*;
pub mod plugin;
