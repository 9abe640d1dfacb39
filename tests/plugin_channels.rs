//! Per-channel θ with a short inner size ([N, C], channel_axis = 1: every element a different row
//! from its neighbours) goes through the one-pass channel kernels: the same Y and dX as the math
//! core row by row, and dθ to summation order; float16 likewise; any thread count the same bits.

mod support;

use ditac::core::{basis, Activation, Attrs, BasisKind, Interpolation};
use half::f16;
use ort::value::Tensor;
use support::*;

const C: usize = 16;
const N: usize = 4099;

fn thetas(d: usize) -> Vec<f32> {
    (0..C * d)
        .map(|i| ((i * 7919 % 211) as f32 / 211.0 - 0.5) * 1.6)
        .collect()
}

fn inputs(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| -4.0 + 8.0 * ((i * 7919 + seed * 104_729) % 10_007) as f32 / 10_006.0)
        .collect()
}

/// Y of a float32 [N, C] forward session.
fn forward_y(s: &mut ort::session::Session, x: &[f32]) -> Vec<f32> {
    let out = s
        .run(vec![(
            "X",
            Tensor::from_array((vec![N, C], x.to_vec())).unwrap(),
        )])
        .unwrap();
    out["Y"].try_extract_tensor::<f32>().unwrap().1.to_vec()
}

fn attrs(interp: Interpolation) -> Attrs {
    Attrs {
        interpolation: interp,
        ..Default::default()
    }
}

fn model<'a>(op: &'a str, th: &'a [f32], d: usize, interp: Interpolation) -> OpModel<'a> {
    let name = match interp {
        Interpolation::Nearest => "nearest",
        Interpolation::Linear => "linear",
    };
    let mut m = OpModel::new(
        op,
        th,
        vec![
            ("interpolation", ditac_tools::model::Attr::from(name)),
            ("channel_axis", ditac_tools::model::Attr::Int(1)),
        ],
    );
    m.pshape = vec![C, d];
    m.xshape = vec![-1, C as i64];
    m
}

#[test]
fn forward_and_grad_match_the_core_row_by_row() {
    let at0 = attrs(Interpolation::Nearest);
    let d = at0.theta_len();
    let th = thetas(d);
    let b = basis::build(at0.tess(), true, BasisKind::Qr).unwrap();
    let x = inputs(N * C, 1);
    let dy = inputs(N * C, 2);
    for interp in [Interpolation::Nearest, Interpolation::Linear] {
        let at = attrs(interp);
        let acts: Vec<Activation<f32>> = (0..C)
            .map(|r| Activation::from_theta(&at, &b, &th[r * d..(r + 1) * d], true).unwrap())
            .collect();
        // The core, one element at a time.
        let mut y_ref = vec![0f32; x.len()];
        let mut dx_ref = vec![0f32; x.len()];
        let mut dth_ref = vec![0f64; C * d];
        for i in 0..x.len() {
            let r = i % C;
            acts[r].forward(&x[i..i + 1], &mut y_ref[i..i + 1]);
            acts[r].backward(
                &dy[i..i + 1],
                &x[i..i + 1],
                &mut dx_ref[i..i + 1],
                &mut dth_ref[r * d..(r + 1) * d],
            );
        }
        let mut results = Vec::new();
        for threads in [1, 2] {
            let mut s = session_threads(&model("DiTAC", &th, d, interp).bytes(), threads).unwrap();
            let y = forward_y(&mut s, &x);
            assert_eq!(y, y_ref, "{interp:?} forward, {threads} thread(s)");

            let mut g =
                session_threads(&model("DiTACGrad", &th, d, interp).bytes(), threads).unwrap();
            let out = g
                .run(vec![
                    ("dY", Tensor::from_array((vec![N, C], dy.clone())).unwrap()),
                    ("X", Tensor::from_array((vec![N, C], x.clone())).unwrap()),
                ])
                .unwrap();
            let dx = out["dX"].try_extract_tensor::<f32>().unwrap().1.to_vec();
            let dth = out["dtheta"]
                .try_extract_tensor::<f32>()
                .unwrap()
                .1
                .to_vec();
            assert_eq!(dx, dx_ref, "{interp:?} dX, {threads} thread(s)");
            let scale: f64 = dy.iter().map(|v| v.abs() as f64).sum();
            for k in 0..C * d {
                assert!(
                    (dth[k] as f64 - dth_ref[k]).abs() <= 1e-6 * scale,
                    "{interp:?} dθ[{k}]: {} vs {}",
                    dth[k],
                    dth_ref[k]
                );
            }
            results.push((y, dx, dth));
        }
        assert!(
            results.windows(2).all(|w| w[0] == w[1]),
            "thread counts differ"
        );
    }
}

#[test]
fn float16_per_channel_follows_float() {
    let at = attrs(Interpolation::Nearest);
    let d = at.theta_len();
    let th = thetas(d);
    let x16: Vec<f16> = inputs(N * C, 3).iter().map(|&v| f16::from_f32(v)).collect();
    let x32: Vec<f32> = x16.iter().map(|v| v.to_f32()).collect();
    let mut m32 = model("DiTAC", &th, d, Interpolation::Nearest);
    let y32 = forward_y(&mut session(&m32.bytes()).unwrap(), &x32);
    m32.elem = ditac_tools::model::ElemType::Float16;
    let mut s16 = session(&m32.bytes()).unwrap();
    let out = s16
        .run(vec![("X", Tensor::from_array((vec![N, C], x16)).unwrap())])
        .unwrap();
    let y16 = out["Y"].try_extract_tensor::<f16>().unwrap().1.to_vec();
    for (a, b) in y16.iter().zip(&y32) {
        assert_eq!(*a, f16::from_f32(*b));
    }
}

/// Exact mode per channel (each row its own checked table and constant-cost path): the plugin's Y
/// equals the core's row by row, element by element, with 1 and 2 threads — a lane's value
/// depends on its x alone, not on where it falls in a chunk or which lanes share its vector.
#[test]
fn exact_per_channel_matches_the_core_row_by_row() {
    let at = Attrs {
        lut_size: 0,
        ..Default::default()
    };
    let d = at.theta_len();
    let th = thetas(d);
    let b = basis::build(at.tess(), true, BasisKind::Qr).unwrap();
    let x = inputs(N * C, 3);
    let acts: Vec<Activation<f32>> = (0..C)
        .map(|r| Activation::from_theta(&at, &b, &th[r * d..(r + 1) * d], false).unwrap())
        .collect();
    let mut y_ref = vec![0f32; x.len()];
    for i in 0..x.len() {
        acts[i % C].forward(&x[i..i + 1], &mut y_ref[i..i + 1]);
    }
    for threads in [1, 2] {
        let mut m = model("DiTAC", &th, d, Interpolation::Nearest);
        m.attrs.push(("lut_size", ditac_tools::model::Attr::Int(0)));
        let y = forward_y(&mut session_threads(&m.bytes(), threads).unwrap(), &x);
        assert_eq!(y, y_ref, "exact per channel, {threads} thread(s)");
    }
}
