pub mod core;
pub use crate::core::*;
