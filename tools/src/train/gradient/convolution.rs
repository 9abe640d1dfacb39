//! 2-D convolution (grouped and depthwise included).

use super::{check_no_auto_pad, ints, op, output_padding, Grads, NodeGrad, Registry};
use crate::model::{Attr, ModelBuilder};
use crate::onnx::{attr_int_or, attr_ints};
use anyhow::{bail, Result};

pub fn register(r: &mut Registry) {
    r.insert("", "Conv", conv);
}

fn conv(m: &mut ModelBuilder, g: &NodeGrad) -> Result<Grads> {
    let n = g.node;
    let (x, w, dy) = (g.input(0), g.input(1), g.dy);
    let xs = g.shape(x)?.to_vec();
    let ws = g.shape(w)?.to_vec();
    let ys = g.output_shape()?;
    if xs.len() != 4 {
        bail!("Conv of rank {} has no backward here (2-D only)", xs.len());
    }
    check_no_auto_pad(n)?;
    let group = attr_int_or(n, "group", 1)?;
    let k = vec![ws[2] as i64, ws[3] as i64];
    let s = attr_ints(n, "strides")?.unwrap_or(vec![1, 1]);
    let d = attr_ints(n, "dilations")?.unwrap_or(vec![1, 1]);
    let pads = attr_ints(n, "pads")?.unwrap_or(vec![0; 4]);
    let mut out = Vec::new();
    if g.wants(0) {
        // The adjoint of a (grouped) convolution: ConvTranspose with the same weights; the output
        // padding restores rows the forward's stride skipped.
        let op_pad = output_padding(&xs, &ys, &k, &s, &pads, &d);
        let dx = g.name("dx");
        m.node(
            "ConvTranspose",
            "",
            &dx,
            &[dy, w],
            &[&dx],
            &[
                ("group", Attr::Int(group)),
                ("kernel_shape", Attr::Ints(k.clone())),
                ("strides", Attr::Ints(s.clone())),
                ("dilations", Attr::Ints(d.clone())),
                ("pads", Attr::Ints(pads.clone())),
                ("output_padding", Attr::Ints(op_pad)),
            ],
        );
        out.push((0, dx));
    }
    if g.wants(1) {
        // dW[o,c,i,j] = Σ_n Σ_uv dy[n,o,u,v]·x[n, c_o, u·s + i·d − p, ...]: a convolution of xᵀ
        // ([C, N, H, W]) with dyᵀ ([O, N, Ho, Wo]) as kernel, dilated by the stride and strided
        // by the dilation, cut to k; for groups, every (input, output) channel pair is computed
        // and the block diagonal kept.
        let perm = Attr::Ints(vec![1, 0, 2, 3]);
        let transpose = |m: &mut ModelBuilder, v: &str, name: &str, perm: &Attr| {
            let o = g.name(name);
            m.node("Transpose", "", &o, &[v], &[&o], &[("perm", perm.clone())]);
            o
        };
        let xt = transpose(m, x, "xT", &perm);
        let dyt = transpose(m, dy, "dyT", &perm);
        let (ho, wo) = (ys[2] as i64, ys[3] as i64);
        let full = g.name("full");
        m.node(
            "Conv",
            "",
            &full,
            &[&xt, &dyt],
            &[&full],
            &[
                ("kernel_shape", Attr::Ints(vec![ho, wo])),
                ("dilations", Attr::Ints(s.clone())),
                ("strides", Attr::Ints(d.clone())),
                ("pads", Attr::Ints(pads.clone())),
            ],
        );
        let st = ints(m, &g.name("starts"), &[0, 0]);
        let en = ints(m, &g.name("ends"), &k);
        let ax = ints(m, &g.name("axes23"), &[2, 3]);
        // cut: [C_in, C_out, kh, kw]
        let cut = op(m, "Slice", &[&full, &st, &en, &ax], &g.name("cut"));
        let (cin, cout) = (xs[1] as i64, ws[0] as i64);
        let dw = if group == 1 {
            transpose(m, &cut, "dW", &perm)
        } else {
            let (cin_g, cout_g) = (cin / group, cout / group);
            let sh = ints(
                m,
                &g.name("blocks"),
                &[group, cin_g, group, cout_g, k[0], k[1]],
            );
            let b = op(m, "Reshape", &[&cut, &sh], &g.name("b"));
            let gu = group as usize;
            let eye: Vec<f32> = (0..gu * gu)
                .map(|i| if i / gu == i % gu { 1.0 } else { 0.0 })
                .collect();
            let eye_name = g.name("eye");
            m.initializer_f32(&eye_name, &[gu, 1, gu, 1, 1, 1], &eye);
            let diag = op(m, "Mul", &[&b, &eye_name], &g.name("diag"));
            let a2 = ints(m, &g.name("axis2"), &[2]);
            let pick = g.name("pick");
            m.node(
                "ReduceSum",
                "",
                &pick,
                &[&diag, &a2],
                &[&pick],
                &[("keepdims", Attr::Int(0))],
            );
            // [g, cin_g, cout_g, k, k] → [g, cout_g, cin_g, k, k] → [C_out, cin_g, k, k]
            let pick_t = transpose(m, &pick, "pickT", &Attr::Ints(vec![0, 2, 1, 3, 4]));
            let ws_i: Vec<i64> = ws.iter().map(|&v| v as i64).collect();
            let wsh = ints(m, &g.name("wshape"), &ws_i);
            op(m, "Reshape", &[&pick_t, &wsh], &g.name("dW"))
        };
        out.push((1, dw));
    }
    if n.input.len() > 2 && g.wants(2) {
        let ax = ints(m, &g.name("axes023"), &[0, 2, 3]);
        let db = g.name("db");
        m.node(
            "ReduceSum",
            "",
            &db,
            &[dy, &ax],
            &[&db],
            &[("keepdims", Attr::Int(0))],
        );
        out.push((2, db));
    }
    Ok(out)
}
