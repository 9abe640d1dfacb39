pub mod basis;
pub mod demo;
pub mod eval;
pub mod example_data;
pub mod examples;
pub mod json;
pub mod train;
pub mod train_artifacts;
