pub mod core;
pub mod cuda;
pub use crate::core::*;
pub mod model;
pub mod plugin;
