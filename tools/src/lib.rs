//! The model-level library behind the `ditac` command: network specs and their parameters, ONNX graph
//! building and transforms (patch, freeze, lower, inspect), plots, and training. The math comes from the
//! plugin library (`ditac`).
pub mod bench;
pub mod budget;
pub mod graph;
pub mod model;
pub mod onnx;
pub mod output;
pub mod params;
pub mod plot;
pub mod runtime;
pub mod spec;
pub mod train;
pub mod transform;
pub mod triton;
