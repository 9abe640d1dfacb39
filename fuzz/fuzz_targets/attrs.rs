//! Attribute sets as the plugin reads them (strings parsed, numbers as given), validated, then —
//! when accepted — a warp built from a θ of the input and evaluated: no panic, and for a
//! zero-boundary warp T maps [a, b] into itself.
#![no_main]

use arbitrary::Arbitrary;
use ditac::core::{basis, Activation, Attrs};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    a: f32,
    b: f32,
    tess: i64,
    zero_boundary: i64,
    basis: &'a str,
    variant: &'a str,
    alpha: f32,
    lut_size: i64,
    interpolation: &'a str,
    theta: Vec<f32>,
    xs: Vec<f32>,
}

fuzz_target!(|inp: Input| {
    let (Ok(basis_kind), Ok(variant), Ok(interpolation)) = (
        inp.basis.parse(),
        inp.variant.parse(),
        inp.interpolation.parse(),
    ) else {
        return;
    };
    let attrs = Attrs {
        a: inp.a,
        b: inp.b,
        tess: inp.tess,
        zero_boundary: inp.zero_boundary,
        basis: basis_kind,
        variant,
        alpha: inp.alpha,
        lut_size: inp.lut_size,
        interpolation,
        channel_axis: 1,
    };
    if attrs.validate().is_err() {
        return;
    }
    // Keep one execution small: the budget of big tables is tested elsewhere.
    if attrs.tess > 32 || attrs.lut_size > 1 << 12 {
        return;
    }
    let Ok(b) = basis::build(attrs.tess(), attrs.zero_boundary(), attrs.basis) else {
        return;
    };
    let d = attrs.theta_len();
    let mut theta = inp.theta;
    theta.resize(d, 0.5);
    let Ok(act) = Activation::<f32>::from_theta(&attrs, &b, &theta, true) else {
        return;
    };
    let xs: Vec<f32> = inp.xs.iter().take(64).copied().collect();
    let mut y = vec![0.0f32; xs.len()];
    act.forward(&xs, &mut y);
    let mut warped = vec![0.0f32; xs.len()];
    act.warp_only(&xs, &mut warped);
    if attrs.zero_boundary() {
        let slack = 1e-5 * (attrs.b - attrs.a).abs().max(attrs.a.abs()).max(attrs.b.abs());
        for (&x, &w) in xs.iter().zip(&warped) {
            if x >= attrs.a && x <= attrs.b {
                assert!(
                    w >= attrs.a - slack && w <= attrs.b + slack,
                    "T({x}) = {w} outside [{}, {}]",
                    attrs.a,
                    attrs.b
                );
            }
        }
    }
    let (dy, mut dx) = (vec![1.0f32; xs.len()], vec![0.0f32; xs.len()]);
    let mut dtheta = vec![0.0f64; d];
    act.backward(&dy, &xs, &mut dx, &mut dtheta);
});
