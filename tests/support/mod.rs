//! What the tests share, in one place: [`oracle`] (the reference vectors, named tolerances,
//! `assert_close`), [`session`] (ONNX Runtime sessions through the built plugin) and [`cli`] (the
//! `ditac` binary), and seeded random inputs. The tests of `ditac-tools` use the whole module (`mod support;`); the math-only
//! tests of the plugin package, which have neither `ort` nor the tools, include `oracle.rs` alone.
#![allow(dead_code, unused_imports)]

pub mod cli;
pub mod oracle;
pub mod session;

pub use cli::*;
pub use oracle::*;
pub use session::*;

use rand::{RngExt, SeedableRng};

/// `n` values drawn uniformly from `range`, the same for the same `seed`.
pub fn uniform(n: usize, seed: u64, range: std::ops::Range<f32>) -> Vec<f32> {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(range.clone())).collect()
}
