//! Elementwise ops: activations (dx = dy·f'(x), from x or y), arithmetic with broadcasting (each
//! operand's gradient summed back to its own shape), and Identity.

use super::{op, scalar, Grads, NodeGrad, Registry};
use crate::model::ModelBuilder;
use crate::onnx::{attr_float_or, attr_string};
use anyhow::{bail, Result};

pub fn register(r: &mut Registry) {
    r.insert("", "Identity", identity);
    r.insert("", "Relu", relu);
    r.insert("", "LeakyRelu", leaky_relu);
    r.insert("", "PRelu", prelu);
    r.insert("", "Sigmoid", sigmoid);
    r.insert("", "Tanh", tanh);
    r.insert("", "Erf", erf);
    r.insert("", "Gelu", gelu);
    r.insert("", "Add", add_sub);
    r.insert("", "Sub", add_sub);
    r.insert("", "Mul", mul);
    r.insert("", "Div", div);
}

fn identity(_: &mut ModelBuilder, g: &NodeGrad) -> Result<Grads> {
    Ok(vec![(0, g.dy.to_string())])
}

fn relu(m: &mut ModelBuilder, g: &NodeGrad) -> Result<Grads> {
    let zero = scalar(m, &g.name("zero"), 0.0);
    let pos = op(m, "Greater", &[g.input(0), &zero], &g.name("pos"));
    let dx = op(m, "Where", &[&pos, g.dy, &zero], &g.name("dx"));
    Ok(vec![(0, dx)])
}

fn leaky_relu(m: &mut ModelBuilder, g: &NodeGrad) -> Result<Grads> {
    // dx = dy (x > 0), α·dy otherwise.
    let alpha = attr_float_or(g.node, "alpha", 0.01)?;
    let zero = scalar(m, &g.name("zero"), 0.0);
    let a = scalar(m, &g.name("slope"), alpha);
    let pos = op(m, "Greater", &[g.input(0), &zero], &g.name("pos"));
    let neg = op(m, "Mul", &[g.dy, &a], &g.name("neg"));
    let dx = op(m, "Where", &[&pos, g.dy, &neg], &g.name("dx"));
    Ok(vec![(0, dx)])
}

fn prelu(m: &mut ModelBuilder, g: &NodeGrad) -> Result<Grads> {
    // y = x (x > 0), s·x otherwise: dx = dy or s·dy; ds = dy·x where x ≤ 0, summed over the axes
    // s is broadcast along.
    let (x, s) = (g.input(0), g.input(1));
    let zero = scalar(m, &g.name("zero"), 0.0);
    let pos = op(m, "Greater", &[x, &zero], &g.name("pos"));
    let mut out = Vec::new();
    if g.wants(0) {
        let neg = op(m, "Mul", &[g.dy, s], &g.name("neg"));
        out.push((0, op(m, "Where", &[&pos, g.dy, &neg], &g.name("dx"))));
    }
    if g.wants(1) {
        let dyx = op(m, "Mul", &[g.dy, x], &g.name("dyx"));
        let masked = op(m, "Where", &[&pos, &zero, &dyx], &g.name("dyx_neg"));
        let yshape = g.output_shape()?;
        out.push((1, g.unbroadcast(m, &g.name("in1"), &masked, &yshape, s)?));
    }
    Ok(out)
}

fn sigmoid(m: &mut ModelBuilder, g: &NodeGrad) -> Result<Grads> {
    // dx = dy·y·(1 − y)
    let y = g.output();
    let one = scalar(m, &g.name("one"), 1.0);
    let om = op(m, "Sub", &[&one, y], &g.name("om"));
    let d = op(m, "Mul", &[y, &om], &g.name("d"));
    Ok(vec![(0, op(m, "Mul", &[g.dy, &d], &g.name("dx")))])
}

fn tanh(m: &mut ModelBuilder, g: &NodeGrad) -> Result<Grads> {
    // dx = dy·(1 − y²)
    let y = g.output();
    let one = scalar(m, &g.name("one"), 1.0);
    let yy = op(m, "Mul", &[y, y], &g.name("yy"));
    let d = op(m, "Sub", &[&one, &yy], &g.name("d"));
    Ok(vec![(0, op(m, "Mul", &[g.dy, &d], &g.name("dx")))])
}

fn erf(m: &mut ModelBuilder, g: &NodeGrad) -> Result<Grads> {
    // d erf(x)/dx = 2/√π·exp(−x²)
    let x = g.input(0);
    let c = scalar(m, &g.name("c"), std::f32::consts::FRAC_2_SQRT_PI);
    let xx = op(m, "Mul", &[x, x], &g.name("xx"));
    let nxx = op(m, "Neg", &[&xx], &g.name("nxx"));
    let e = op(m, "Exp", &[&nxx], &g.name("e"));
    let d = op(m, "Mul", &[&e, &c], &g.name("d"));
    Ok(vec![(0, op(m, "Mul", &[g.dy, &d], &g.name("dx")))])
}

fn gelu(m: &mut ModelBuilder, g: &NodeGrad) -> Result<Grads> {
    if attr_string(g.node, "approximate")?.is_some_and(|a| a != "none") {
        bail!("Gelu with approximate = \"tanh\" has no backward here (only \"none\")");
    }
    // GELU(x) = x·Φ(x): dx = dy·(Φ(x) + x·φ(x)), Φ(x) = (1 + erf(x/√2))/2, φ(x) = exp(−x²/2)/√(2π).
    let x = g.input(0);
    let inv_sqrt2 = scalar(m, &g.name("inv_sqrt2"), std::f32::consts::FRAC_1_SQRT_2);
    let half = scalar(m, &g.name("half"), 0.5);
    let one = scalar(m, &g.name("one"), 1.0);
    let neg_half = scalar(m, &g.name("neg_half"), -0.5);
    let k = scalar(
        m,
        &g.name("inv_sqrt_2pi"),
        (0.5 / std::f64::consts::PI).sqrt() as f32,
    );
    let xs = op(m, "Mul", &[x, &inv_sqrt2], &g.name("xs"));
    let erf = op(m, "Erf", &[&xs], &g.name("erf"));
    let erf1 = op(m, "Add", &[&erf, &one], &g.name("erf1"));
    let cdf = op(m, "Mul", &[&erf1, &half], &g.name("cdf"));
    let xx = op(m, "Mul", &[x, x], &g.name("xx"));
    let ea = op(m, "Mul", &[&xx, &neg_half], &g.name("ea"));
    let e = op(m, "Exp", &[&ea], &g.name("e"));
    let pdf = op(m, "Mul", &[&e, &k], &g.name("pdf"));
    let xpdf = op(m, "Mul", &[x, &pdf], &g.name("xpdf"));
    let d = op(m, "Add", &[&cdf, &xpdf], &g.name("d"));
    Ok(vec![(0, op(m, "Mul", &[g.dy, &d], &g.name("dx")))])
}

fn add_sub(m: &mut ModelBuilder, g: &NodeGrad) -> Result<Grads> {
    let yshape = g.output_shape()?;
    let mut out = Vec::new();
    for i in (0..2).filter(|&i| g.wants(i)) {
        let mut d = g.dy.to_string();
        if i == 1 && g.node.op_type == "Sub" {
            d = op(m, "Neg", &[g.dy], &g.name("neg"));
        }
        let r = g.unbroadcast(m, &g.name(&format!("in{i}")), &d, &yshape, g.input(i))?;
        out.push((i, r));
    }
    Ok(out)
}

fn mul(m: &mut ModelBuilder, g: &NodeGrad) -> Result<Grads> {
    let yshape = g.output_shape()?;
    let mut out = Vec::new();
    for i in (0..2).filter(|&i| g.wants(i)) {
        let prod = op(
            m,
            "Mul",
            &[g.dy, g.input(1 - i)],
            &g.name(&format!("prod{i}")),
        );
        let r = g.unbroadcast(m, &g.name(&format!("in{i}")), &prod, &yshape, g.input(i))?;
        out.push((i, r));
    }
    Ok(out)
}

fn div(m: &mut ModelBuilder, g: &NodeGrad) -> Result<Grads> {
    // y = a/b: da = dy/b, db = −dy·y/b.
    let yshape = g.output_shape()?;
    let mut out = Vec::new();
    if g.wants(0) {
        let da = op(m, "Div", &[g.dy, g.input(1)], &g.name("da"));
        out.push((
            0,
            g.unbroadcast(m, &g.name("in0"), &da, &yshape, g.input(0))?,
        ));
    }
    if g.wants(1) {
        let dyy = op(m, "Mul", &[g.dy, g.output()], &g.name("dyy"));
        let q = op(m, "Div", &[&dyy, g.input(1)], &g.name("q"));
        let db = op(m, "Neg", &[&q], &g.name("db"));
        out.push((
            1,
            g.unbroadcast(m, &g.name("in1"), &db, &yshape, g.input(1))?,
        ));
    }
    Ok(out)
}
