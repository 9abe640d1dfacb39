pub mod core;
pub use crate::core::*;
pub mod model;
pub mod params;
pub mod plugin;
pub mod spec;
