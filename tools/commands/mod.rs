pub mod basis;
pub mod bench;
pub mod demo;
pub mod eval;
pub mod examples;
pub mod json;
