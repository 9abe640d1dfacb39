pub mod basis;
pub mod demo;
pub mod eval;
pub mod examples;
pub mod json;
pub mod example_data;
pub mod train;
pub mod train_artifacts;
