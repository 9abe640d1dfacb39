pub mod basis;
pub mod eval;
pub mod json;
