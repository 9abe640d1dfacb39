pub mod core;
pub use crate::core::*;
pub mod model;
pub mod plugin;
