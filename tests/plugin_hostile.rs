//! The plugin against hostile attribute sets, through real ONNX Runtime sessions: random attributes
//! and θ (valid or not, θ up to 1e6 in magnitude) give exactly the core's verdict — the same
//! message as INVALID_ARGUMENT, or the core's output bits — and the sizes and numbers that cannot be
//! represented are refused with a message naming them.

mod support;

use ditac::core::{basis, Activation, Attrs, BasisKind, Interpolation, Variant};
use ditac_tools::model::Attr;
use proptest::prelude::*;
use support::{run_f32, session, OpModel};

fn attrs_list(at: &Attrs, basis: &str, variant: &str, interp: &str) -> Vec<(&'static str, Attr)> {
    vec![
        ("a", Attr::Float(at.a)),
        ("b", Attr::Float(at.b)),
        ("tess", Attr::Int(at.tess)),
        ("zero_boundary", Attr::Int(at.zero_boundary)),
        ("basis", Attr::from(basis)),
        ("variant", Attr::from(variant)),
        ("alpha", Attr::Float(at.alpha)),
        ("lut_size", Attr::Int(at.lut_size)),
        ("interpolation", Attr::from(interp)),
    ]
}

/// What the core says about `at` and θ: the warp, or the message.
fn core_verdict(at: &Attrs, theta: &[f32]) -> Result<Activation<f32>, String> {
    at.validate().map_err(|e| e.to_string())?;
    let b = basis::build(at.tess(), at.zero_boundary(), at.basis).map_err(|e| e.to_string())?;
    Activation::<f32>::from_theta(at, &b, theta, false).map_err(|e| e.to_string())
}

fn finite_or_wild() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => -10.0f32..10.0,
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(-3e38f32),
        1 => Just(3e38f32),
        1 => Just(1e-40f32),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn random_attribute_sets_get_the_cores_verdict(
        a in finite_or_wild(),
        width in prop_oneof![4 => 0.01f32..20.0, 1 => Just(0.0f32), 1 => Just(-1.0f32), 1 => Just(f32::MAX)],
        tess in prop_oneof![4 => 1i64..24, 1 => -2i64..1, 1 => Just(1025i64)],
        zero_boundary in prop_oneof![8 => 0i64..2, 1 => Just(2i64)],
        basis in prop_oneof![Just("qr"), Just("rref"), Just("sparse"), Just("svd")],
        variant in prop_oneof![Just("ditac"), Just("leaky"), Just("ge"), Just("swish")],
        alpha in finite_or_wild(),
        lut_size in prop_oneof![2 => 2i64..3000, 1 => Just(0i64), 1 => -3i64..2],
        interp in prop_oneof![Just("nearest"), Just("linear"), Just("cubic")],
        log_scale in -1.0f64..6.0,
        seed in proptest::collection::vec(-1.0f32..1.0, 30),
    ) {
        let parse = |s: &str| s.parse();
        let b = a + width;
        // Names the core does not know: the session's message must still name the attribute.
        let (kind, var, ip): (Result<BasisKind, _>, Result<Variant, _>, Result<Interpolation, _>) =
            (parse(basis), variant.parse(), interp.parse());
        let at = Attrs {
            a, b, tess, zero_boundary,
            basis: kind.clone().unwrap_or(BasisKind::Qr),
            variant: var.clone().unwrap_or(Variant::Ditac),
            alpha, lut_size,
            interpolation: ip.clone().unwrap_or(Interpolation::Nearest),
            channel_axis: 1,
        };
        let d = if (1..=1024).contains(&tess) && (0..=1).contains(&zero_boundary) {
            at.theta_len()
        } else {
            9
        };
        let theta: Vec<f32> = seed.iter().cycle().take(d).map(|v| v * 10f64.powf(log_scale) as f32).collect();
        let list = attrs_list(&at, basis, variant, interp);
        let model = OpModel::new("DiTAC", &theta, list).bytes();
        // Every problem the core finds: each unknown name, and the rest of the set checked with the
        // default in place of an unknown name. The plugin reports one of them, in its own order.
        let mut problems: Vec<String> = [
            kind.as_ref().err().map(|e| e.to_string()),
            var.as_ref().err().map(|e| e.to_string()),
            ip.as_ref().err().map(|e| e.to_string()),
        ]
        .into_iter()
        .flatten()
        .collect();
        let core = core_verdict(&at, &theta);
        if let Err(e) = &core {
            problems.push(e.clone());
        }
        let verdict = if problems.is_empty() { core } else { Err(problems.join("\n")) };
        let sess = session(&model);
        match (verdict, sess) {
            (Err(want), Err(got)) => {
                let got = got.to_string();
                prop_assert!(got.contains("[INVALID_ARGUMENT] ai.ditac.DiTAC node 'act1': "), "{got}");
                // The plugin checks attributes in its own order: the problem it names must be one
                // of the core's, message for message.
                let got_tail = got.split("node 'act1': ").nth(1).unwrap_or("").to_string();
                prop_assert!(
                    problems.contains(&got_tail),
                    "session: {got}\ncore: {want}"
                );
            }
            (Ok(act), Ok(mut s)) => {
                let xs: Vec<f32> = (0..=256).map(|i| a - 0.1 * width + 1.2 * width * i as f32 / 256.0).collect();
                let y = run_f32(&mut s, &xs, &[], "Y").unwrap();
                let mut want = vec![0.0f32; xs.len()];
                act.forward(&xs, &mut want);
                for (i, (g, w)) in y.iter().zip(&want).enumerate() {
                    prop_assert!(g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()), "x = {}: {g} vs {w}", xs[i]);
                }
            }
            (Err(want), Ok(_)) => prop_assert!(false, "the session accepted what the core refuses: {want}"),
            (Ok(_), Err(got)) => prop_assert!(false, "the session refused what the core accepts: {got}"),
        }
    }
}

fn refused(model: &[u8], needles: &[&str]) {
    let e = session(model).expect_err("refused").to_string();
    assert!(e.contains("[INVALID_ARGUMENT] ai.ditac."), "{e}");
    for n in needles {
        assert!(e.contains(n), "{e} lacks {n:?}");
    }
}

#[test]
fn unrepresentable_intervals_and_fields_are_refused_by_name() {
    let theta = vec![0.5f32; 9];
    let at = |a: f32, b: f32| vec![("a", Attr::Float(a)), ("b", Attr::Float(b))];
    refused(
        &OpModel::new("DiTAC", &theta, at(-2e38, 2e38)).bytes(),
        &[
            "attribute 'b' = 200000000000000000000000000000000000000",
            "representable in float32",
        ],
    );
    refused(
        &OpModel::new("DiTACLut", &[0.0, 0.5, 1.0], at(-2e38, 2e38)).bytes(),
        &["attribute 'b'", "b − a = 4.000e38"],
    );
    let steep = vec![1000.0f32; 9];
    for op in ["DiTAC", "DiTACGrad"] {
        refused(
            &OpModel::new(op, &steep, at(-0.5, 2.0)).bytes(),
            &[
                "input 'theta' (max |θ| = 1000)",
                "expected finite values and |slope| ≤ 64",
            ],
        );
    }
}

#[test]
fn steep_but_accepted_theta_keeps_the_interval() {
    // max|θ| = 150 (the case: T(a) was 15.4 on [−0.5, 2]).
    let theta: Vec<f32> = (0..9)
        .map(|k| if k % 2 == 0 { 150.0 } else { -90.0 })
        .collect();
    for lut in [0i64, 2048] {
        let attrs = vec![
            ("a", Attr::Float(-0.5)),
            ("b", Attr::Float(2.0)),
            ("variant", Attr::from("leaky")),
            ("alpha", Attr::Float(1.0)),
            ("lut_size", Attr::Int(lut)),
        ];
        let mut s = match session(&OpModel::new("DiTAC", &theta, attrs).bytes()) {
            Ok(s) => s,
            Err(e) => {
                let e = e.to_string();
                assert!(e.contains("|slope| ≤ 64"), "{e}");
                continue;
            }
        };
        let xs: Vec<f32> = (0..=1000).map(|i| -0.5 + 2.5 * i as f32 / 1000.0).collect();
        let y = run_f32(&mut s, &xs, &[], "Y").unwrap();
        assert!((y[0] + 0.5).abs() < 1e-6, "T(a) = {}", y[0]);
        assert!((y[1000] - 2.0).abs() < 1e-6, "T(b) = {}", y[1000]);
        assert!(
            y.iter().all(|v| (-0.5 - 1e-6..=2.0 + 1e-6).contains(v)),
            "{y:?}"
        );
    }
}

/// A session whose options carry `ditac.max_bytes = value` (set before the library is registered).
fn session_with_budget(model: &[u8], value: &str) -> ort::Result<ort::session::Session> {
    let b = ort::session::Session::builder(support::env())?;
    let b = b
        .with_config_entry("ditac.max_bytes", value)
        .map_err(ort::Error::<()>::from)?;
    let mut b = b
        .with_operator_library(support::plugin_path())
        .map_err(ort::Error::<()>::from)?;
    b.commit_from_memory(model)
}

#[test]
fn tables_beyond_the_memory_budget_are_refused_at_creation() {
    // The DiTACGrad: tess 1024 and 2^24 nodes with gradients would be 68 GB.
    let theta = vec![0.0f32; 1023];
    let grad = OpModel::new(
        "DiTACGrad",
        &theta,
        vec![("tess", Attr::Int(1024)), ("lut_size", Attr::Int(1 << 24))],
    )
    .bytes();
    refused(
        &grad,
        &[
            "ai.ditac.DiTACGrad node 'act1': input 'theta' of shape [1023]: 1 warp table of 16777216 nodes with gradients: 69122129920 bytes needed, above the memory budget of 1073741824 bytes",
        ],
    );
    // Per-channel θ [16, 9] and 2^24 nodes: 16 tables (and their joined copy), 8.6 GB.
    let theta = vec![0.1f32; 16 * 9];
    let mut m = OpModel::new("DiTAC", &theta, vec![("lut_size", Attr::Int(1 << 24))]);
    m.pshape = vec![16, 9];
    m.xshape = vec![-1, 16];
    refused(
        &m.bytes(),
        &["input 'theta' of shape [16, 9]: 16 warp tables of 16777216 nodes: 8589934592 bytes needed"],
    );
    // The session config entry sets the budget of that session's nodes, both ways.
    let small = OpModel::new("DiTAC", &theta[..9], vec![]).bytes();
    let e = session_with_budget(&small, "16K")
        .expect_err("refused")
        .to_string();
    assert!(
        e.contains("input 'theta' of shape [9]: 1 warp table of 2048 nodes: 32768 bytes needed, above the memory budget of 16384 bytes"),
        "{e}"
    );
    assert!(session_with_budget(&small, "1M").is_ok());
    let e = session_with_budget(&small, "lots")
        .expect_err("refused")
        .to_string();
    assert!(
        e.contains("session config entry ditac.max_bytes = \"lots\": expected a byte count"),
        "{e}"
    );
    // A value longer than the first 128-byte read is fetched again whole, with the size ORT asks for.
    let long = "x".repeat(300);
    let e = session_with_budget(&small, &long)
        .expect_err("refused")
        .to_string();
    assert!(
        e.contains(&format!(
            "ditac.max_bytes = \"{long}\": expected a byte count"
        )),
        "{e}"
    );
}
