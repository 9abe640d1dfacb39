//! Normalisation: LayerNormalization (statistics recomputed from x in the backward).

use super::{ints, op, scalar, Grads, NodeGrad, Registry};
use crate::model::{Attr, ModelBuilder};
use crate::onnx::{attr_float_or, attr_int_or};
use anyhow::Result;

pub fn register(r: &mut Registry) {
    r.insert("", "LayerNormalization", layer_norm);
}

fn layer_norm(m: &mut ModelBuilder, g: &NodeGrad) -> Result<Grads> {
    let n = g.node;
    let (x, dy) = (g.input(0), g.dy);
    let nm = |s: &str| g.name(s);
    let xs = g.shape(x)?.to_vec();
    let rank = xs.len() as i64;
    let mut axis = attr_int_or(n, "axis", -1)?;
    if axis < 0 {
        axis += rank;
    }
    let eps = attr_float_or(n, "epsilon", 1e-5)?;
    let norm_axes: Vec<i64> = (axis..rank).collect();
    let outer_axes: Vec<i64> = (0..axis).collect();
    let count: usize = xs[axis as usize..].iter().product();
    let na = ints(m, &nm("norm_axes"), &norm_axes);
    let inv_n = scalar(m, &nm("inv_n"), 1.0 / count as f32);
    let epsn = scalar(m, &nm("eps"), eps);
    // The mean over the normalised axes (kept).
    let mean = |m: &mut ModelBuilder, v: &str, o: &str| {
        m.node(
            "ReduceSum",
            "",
            o,
            &[v, &na],
            &[o],
            &[("keepdims", Attr::Int(1))],
        );
        op(m, "Mul", &[o, &inv_n], &format!("{o}/mean"))
    };
    let mu = mean(m, x, &nm("mu"));
    let xc = op(m, "Sub", &[x, &mu], &nm("xc"));
    let xc2 = op(m, "Mul", &[&xc, &xc], &nm("xc2"));
    let var = mean(m, &xc2, &nm("var"));
    let ve = op(m, "Add", &[&var, &epsn], &nm("ve"));
    let sd = op(m, "Sqrt", &[&ve], &nm("sd"));
    let r = op(m, "Reciprocal", &[&sd], &nm("r"));
    let xhat = op(m, "Mul", &[&xc, &r], &nm("xhat"));
    let mut out = Vec::new();
    if g.wants(0) {
        // dx = r·(g − mean(g) − x̂·mean(g·x̂)), g = dy·scale.
        let gs = op(m, "Mul", &[dy, g.input(1)], &nm("g"));
        let gm = mean(m, &gs, &nm("gm"));
        let gx = op(m, "Mul", &[&gs, &xhat], &nm("gx"));
        let gxm = mean(m, &gx, &nm("gxm"));
        let t1 = op(m, "Sub", &[&gs, &gm], &nm("t1"));
        let t2 = op(m, "Mul", &[&xhat, &gxm], &nm("t2"));
        let t3 = op(m, "Sub", &[&t1, &t2], &nm("t3"));
        out.push((0, op(m, "Mul", &[&t3, &r], &nm("dx"))));
    }
    // Scale and bias: summed over the outer axes.
    let oa = (!outer_axes.is_empty()).then(|| ints(m, &nm("outer_axes"), &outer_axes));
    let reduce = |m: &mut ModelBuilder, v: &str, o: &str| -> String {
        match &oa {
            Some(a) => {
                m.node(
                    "ReduceSum",
                    "",
                    o,
                    &[v, a],
                    &[o],
                    &[("keepdims", Attr::Int(0))],
                );
                o.to_string()
            }
            None => v.to_string(),
        }
    };
    if g.wants(1) {
        let dyx = op(m, "Mul", &[dy, &xhat], &nm("dyx"));
        out.push((1, reduce(m, &dyx, &nm("dscale"))));
    }
    if n.input.len() > 2 && g.wants(2) {
        out.push((2, reduce(m, dy, &nm("dbias"))));
    }
    Ok(out)
}
