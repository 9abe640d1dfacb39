//! Graph transformations of ONNX models that hold `ai.ditac` nodes, on `onnx_protobuf::ModelProto`:
//! [`patch`] (a named node becomes `DiTAC` with a given θ), [`freeze`] (`DiTAC` with a constant θ
//! becomes `DiTACLut` with its table), [`lower`] (`DiTAC`/`DiTACLut` become standard ONNX operators),
//! [`inspect`] (what the ai.ditac nodes are). The `ditac` binary's `patch`, `freeze`, `lower` and
//! `inspect` commands are thin wrappers; pictures of the learned activations are in `crate::plot`.
//!
//! They share three layers: [`model_file`] (reading and writing models, external data included),
//! [`graph_util`] (walking and editing graphs) and [`ditac_node`] (what an `ai.ditac` node means).

pub mod ditac_node;
pub mod freeze;
pub mod graph_util;
pub mod inspect;
pub mod lower;
pub mod model_file;
pub mod patch;

pub use ditac_node::*;
pub use graph_util::*;
pub use model_file::*;
