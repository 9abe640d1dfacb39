//! Ops that move values without changing them: reshapes (the gradient takes the input's shape
//! back) and Transpose (the inverse permutation).

use super::{op, Grads, NodeGrad, Registry};
use crate::model::{Attr, ModelBuilder};
use crate::onnx::attr_ints;
use anyhow::Result;

pub fn register(r: &mut Registry) {
    for reshape_like in ["Reshape", "Flatten", "Squeeze", "Unsqueeze"] {
        r.insert("", reshape_like, reshape);
    }
    r.insert("", "Transpose", transpose);
}

fn reshape(m: &mut ModelBuilder, g: &NodeGrad) -> Result<Grads> {
    let shape = op(m, "Shape", &[g.input(0)], &g.name("shape"));
    Ok(vec![(0, op(m, "Reshape", &[g.dy, &shape], &g.name("dx")))])
}

fn transpose(m: &mut ModelBuilder, g: &NodeGrad) -> Result<Grads> {
    let rank = g.output_shape()?.len();
    let perm = attr_ints(g.node, "perm")?.unwrap_or_else(|| (0..rank as i64).rev().collect());
    let mut inv = vec![0i64; rank];
    for (i, &pi) in perm.iter().enumerate() {
        inv[pi as usize] = i as i64;
    }
    let dx = g.name("dx");
    m.node(
        "Transpose",
        "",
        &dx,
        &[g.dy],
        &[&dx],
        &[("perm", Attr::Ints(inv))],
    );
    Ok(vec![(0, dx)])
}
