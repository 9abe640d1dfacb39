//! Pooling: GlobalAveragePool, AveragePool and MaxPool (2-D).

use super::{check_no_auto_pad, ints, op, output_padding, scalar, Grads, NodeGrad, Registry};
use crate::model::{Attr, ModelBuilder};
use crate::onnx::{attr_int_or, attr_ints};
use anyhow::{bail, Context, Result};

pub fn register(r: &mut Registry) {
    r.insert("", "GlobalAveragePool", global_average_pool);
    r.insert("", "AveragePool", average_pool);
    r.insert("", "MaxPool", max_pool);
}

fn global_average_pool(m: &mut ModelBuilder, g: &NodeGrad) -> Result<Grads> {
    let x = g.input(0);
    let area: usize = g.shape(x)?[2..].iter().product();
    let k = scalar(m, &g.name("inv_area"), 1.0 / area as f32);
    let scaled = op(m, "Mul", &[g.dy, &k], &g.name("scaled"));
    let shape = op(m, "Shape", &[x], &g.name("shape"));
    Ok(vec![(
        0,
        op(m, "Expand", &[&scaled, &shape], &g.name("dx")),
    )])
}

fn average_pool(m: &mut ModelBuilder, g: &NodeGrad) -> Result<Grads> {
    let n = g.node;
    let xs = g.shape(g.input(0))?.to_vec();
    if xs.len() != 4 {
        bail!(
            "AveragePool of rank {} has no backward here (2-D only)",
            xs.len()
        );
    }
    let k = attr_ints(n, "kernel_shape")?.context("AveragePool without kernel_shape")?;
    let s = attr_ints(n, "strides")?.unwrap_or(vec![1, 1]);
    let pads = attr_ints(n, "pads")?.unwrap_or(vec![0; 4]);
    check_no_auto_pad(n)?;
    if attr_int_or(n, "ceil_mode", 0)? != 0 {
        bail!("AveragePool with ceil_mode = 1 has no backward here");
    }
    if pads.iter().any(|&v| v != 0) && attr_int_or(n, "count_include_pad", 0)? == 0 {
        bail!("AveragePool with padding and count_include_pad = 0 has no backward here");
    }
    // The adjoint of a uniform depthwise filter: ConvTranspose with 1/(kh·kw) weights.
    let c = xs[1];
    let w = vec![1.0 / (k[0] * k[1]) as f32; c * (k[0] * k[1]) as usize];
    let wn = g.name("ones");
    m.initializer_f32(&wn, &[c, 1, k[0] as usize, k[1] as usize], &w);
    let op_pad = output_padding(&xs, &g.output_shape()?, &k, &s, &pads, &[1, 1]);
    let dx = g.name("dx");
    m.node(
        "ConvTranspose",
        "",
        &dx,
        &[g.dy, &wn],
        &[&dx],
        &[
            ("group", Attr::Int(c as i64)),
            ("kernel_shape", Attr::Ints(k.clone())),
            ("strides", Attr::Ints(s)),
            ("pads", Attr::Ints(pads)),
            ("output_padding", Attr::Ints(op_pad)),
        ],
    );
    Ok(vec![(0, dx)])
}

fn max_pool(m: &mut ModelBuilder, g: &NodeGrad) -> Result<Grads> {
    let n = g.node;
    if g.opset < 16 {
        bail!("MaxPool's backward needs opset 16 (ScatterElements with reduction)");
    }
    if attr_int_or(n, "storage_order", 0)? != 0 {
        bail!("MaxPool with storage_order = 1 has no backward here");
    }
    let idx = n
        .output
        .get(1)
        .filter(|s| !s.is_empty())
        .context("MaxPool without its Indices output (the forward is given one)")?;
    // dx: dy scattered (added) at the arg-max positions of the flattened input.
    let x = g.input(0);
    let minus1 = ints(m, &g.name("minus1"), &[-1]);
    let size = op(m, "Size", &[x], &g.name("size"));
    let size1 = op(m, "Reshape", &[&size, &minus1], &g.name("size1"));
    // ConstantOfShape's default value is float 0.
    let zeros = op(m, "ConstantOfShape", &[&size1], &g.name("zeros"));
    let idx = op(m, "Reshape", &[idx, &minus1], &g.name("idx"));
    let dyf = op(m, "Reshape", &[g.dy, &minus1], &g.name("dyf"));
    let scatter = g.name("scatter");
    m.node(
        "ScatterElements",
        "",
        &scatter,
        &[&zeros, &idx, &dyf],
        &[&scatter],
        &[("axis", Attr::Int(0)), ("reduction", Attr::from("add"))],
    );
    let shape = op(m, "Shape", &[x], &g.name("shape"));
    Ok(vec![(
        0,
        op(m, "Reshape", &[&scatter, &shape], &g.name("dx")),
    )])
}
