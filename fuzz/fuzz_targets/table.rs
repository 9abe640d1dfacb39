//! `DiTACLut` tables: arbitrary values and interval, built and evaluated (forward, both
//! interpolations) without a panic.
#![no_main]

use arbitrary::Arbitrary;
use ditac::core::{Activation, Attrs, Interpolation};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    a: f32,
    b: f32,
    linear: bool,
    values: Vec<f32>,
    xs: Vec<f32>,
}

fuzz_target!(|inp: Input| {
    let attrs = Attrs {
        a: inp.a,
        b: inp.b,
        interpolation: if inp.linear {
            Interpolation::Linear
        } else {
            Interpolation::Nearest
        },
        ..Default::default()
    };
    let Ok(act) = Activation::<f32>::from_table(&attrs, &inp.values) else {
        return;
    };
    let mut y = vec![0.0f32; inp.xs.len()];
    act.forward(&inp.xs, &mut y);
    let Ok(act) = Activation::<f64>::from_table(&attrs, &inp.values) else {
        panic!("f32 accepted a table f64 refuses");
    };
    let xs: Vec<f64> = inp.xs.iter().map(|&v| v as f64).collect();
    let mut y = vec![0.0f64; xs.len()];
    act.forward(&xs, &mut y);
});
