//! The DiTAC plugin library: the math core (`core`), the ONNX Runtime custom-op plugin (`plugin`),
//! the CUDA glue (`cuda`) and a small C API over the core for other hosts (`capi`: PyTorch through
//! ctypes). Built as `libditac.so` for ONNX Runtime and as an rlib for `ditac-tools`.
pub mod capi;
pub mod core;
pub mod cuda;
pub use crate::core::*;
pub mod plugin;
