//! Matrix products: Gemm (`α·op(A)·op(B) + β·C`) and MatMul (batched, broadcast).

use super::{op, scalar, Grads, NodeGrad, Registry};
use crate::model::{Attr, ModelBuilder};
use crate::onnx::{attr_float_or, attr_int_or};
use anyhow::{bail, Result};

pub fn register(r: &mut Registry) {
    r.insert("", "Gemm", gemm);
    r.insert("", "MatMul", matmul);
}

fn gemm(m: &mut ModelBuilder, g: &NodeGrad) -> Result<Grads> {
    let n = g.node;
    let (alpha, beta) = (
        attr_float_or(n, "alpha", 1.0)?,
        attr_float_or(n, "beta", 1.0)?,
    );
    let (ta, tb) = (attr_int_or(n, "transA", 0)?, attr_int_or(n, "transB", 0)?);
    let al = ("alpha", Attr::Float(alpha));
    let (a, b, dy) = (g.input(0), g.input(1), g.dy);
    let mut out = Vec::new();
    if g.wants(0) {
        // d op(A) = α·dY·op(B)ᵀ
        let (ins, attrs) = if ta == 0 {
            ([dy, b], vec![al.clone(), ("transB", Attr::Int(1 - tb))])
        } else {
            (
                [b, dy],
                vec![
                    al.clone(),
                    ("transA", Attr::Int(tb)),
                    ("transB", Attr::Int(1)),
                ],
            )
        };
        let da = g.name("dA");
        m.node("Gemm", "", &da, &ins, &[&da], &attrs);
        out.push((0, da));
    }
    if g.wants(1) {
        // d op(B) = α·op(A)ᵀ·dY
        let (ins, attrs) = if tb == 0 {
            ([a, dy], vec![al, ("transA", Attr::Int(1 - ta))])
        } else {
            (
                [dy, a],
                vec![al, ("transA", Attr::Int(1)), ("transB", Attr::Int(ta))],
            )
        };
        let db = g.name("dB");
        m.node("Gemm", "", &db, &ins, &[&db], &attrs);
        out.push((1, db));
    }
    if n.input.len() > 2 && g.wants(2) {
        let mut d = dy.to_string();
        if beta != 1.0 {
            let b = scalar(m, &g.name("beta"), beta);
            d = op(m, "Mul", &[dy, &b], &g.name("dCs"));
        }
        let yshape = g.output_shape()?;
        out.push((
            2,
            g.unbroadcast(m, &g.name("in2"), &d, &yshape, g.input(2))?,
        ));
    }
    Ok(out)
}

fn matmul(m: &mut ModelBuilder, g: &NodeGrad) -> Result<Grads> {
    let (sa, sb) = (g.shape(g.input(0))?.to_vec(), g.shape(g.input(1))?.to_vec());
    if sa.len() < 2 || sb.len() < 2 {
        bail!("MatMul of rank-1 operands has no backward here");
    }
    let yshape = g.output_shape()?;
    // The transpose of the last two axes.
    let tr = |m: &mut ModelBuilder, v: &str, rank: usize, name: &str| {
        let mut perm: Vec<i64> = (0..rank as i64).collect();
        perm.swap(rank - 1, rank - 2);
        m.node(
            "Transpose",
            "",
            name,
            &[v],
            &[name],
            &[("perm", Attr::Ints(perm))],
        );
        name.to_string()
    };
    let mut out = Vec::new();
    if g.wants(0) {
        let bt = tr(m, g.input(1), sb.len(), &g.name("Bt"));
        let da = op(m, "MatMul", &[g.dy, &bt], &g.name("dA"));
        let mut full = yshape[..yshape.len() - 2].to_vec();
        full.extend(&sa[sa.len() - 2..]);
        out.push((0, g.unbroadcast(m, &g.name("in0"), &da, &full, g.input(0))?));
    }
    if g.wants(1) {
        let at = tr(m, g.input(0), sa.len(), &g.name("At"));
        let db = op(m, "MatMul", &[&at, g.dy], &g.name("dB"));
        let mut full = yshape[..yshape.len() - 2].to_vec();
        full.extend(&sb[sb.len() - 2..]);
        out.push((1, g.unbroadcast(m, &g.name("in1"), &db, &full, g.input(1))?));
    }
    Ok(out)
}
