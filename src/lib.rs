pub mod core;
pub use crate::core::*;
pub mod graph;
pub mod model;
pub mod params;
pub mod plugin;
pub mod spec;
pub mod train;
