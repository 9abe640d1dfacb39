//! Properties of the math core that hold for any θ: monotone warps, fixed ends, identity at θ = 0,
//! continuity at a and b, non-finite inputs, and finite-difference checks of every gradient.

use ditac::core::cpa::Field;
use ditac::core::real::normal_cdf;
use ditac::core::{basis, Activation, Attrs, BasisKind, Interpolation, Variant};
use proptest::prelude::*;

fn attrs(
    tess: i64,
    zb: i64,
    kind: BasisKind,
    variant: Variant,
    lut: i64,
    interp: Interpolation,
) -> Attrs {
    Attrs {
        a: -3.0,
        b: 3.0,
        tess,
        zero_boundary: zb,
        basis: kind,
        variant,
        lut_size: lut,
        interpolation: interp,
        ..Default::default()
    }
}

fn act64(at: &Attrs, theta: &[f32]) -> Activation<f64> {
    let b = basis::build(at.tess(), at.zero_boundary(), at.basis).unwrap();
    Activation::<f64>::from_theta(at, &b, theta, true).unwrap()
}

/// y = act(x) of one element.
fn y64(act: &Activation<f64>, x: f64) -> f64 {
    let mut o = [0.0];
    act.forward(&[x], &mut o);
    o[0]
}

/// dθ of one element (`g`) against central differences of y in each θ_k. θ is float32 in the
/// ops: perturbed in f32 steps large enough to be exact.
fn theta_fd_matches(at: &Attrs, theta: &[f32], x: f64, g: &[f64]) -> Result<(), TestCaseError> {
    for k in 0..theta.len() {
        let hk = 1.0f32 / 1024.0;
        let mut tp = theta.to_vec();
        tp[k] += hk;
        let mut tm = theta.to_vec();
        tm[k] -= hk;
        // LeakyReLU has a kink at x̃ = 0: a difference across it measures neither side.
        let (ap, am) = (act64(at, &tp), act64(at, &tm));
        prop_assume!(at.variant != Variant::Leaky || warped(&ap, x) * warped(&am, x) > 0.0);
        let fdk = (y64(&ap, x) - y64(&am, x)) / (2.0 * hk as f64);
        prop_assert!(
            (fdk - g[k]).abs() <= 2e-3 * (1.0 + g[k].abs()),
            "dθ[{k}] {} vs fd {fdk}",
            g[k]
        );
    }
    Ok(())
}

/// x̃ = T(x) (x itself outside [a, b]).
fn warped(act: &Activation<f64>, x: f64) -> f64 {
    let mut o = [0.0];
    act.warp_only(&[x], &mut o);
    o[0]
}

fn kinds() -> impl Strategy<Value = BasisKind> {
    prop_oneof![
        Just(BasisKind::Qr),
        Just(BasisKind::Rref),
        Just(BasisKind::Sparse)
    ]
}

fn theta_for(tess: usize, zb: bool) -> impl Strategy<Value = Vec<f32>> {
    let d = basis::theta_len(tess, zb);
    proptest::collection::vec(-3.0f32..3.0, d)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn warp_is_strictly_increasing_and_fixes_ends(
        (tess, theta) in (1usize..24).prop_flat_map(|t| (Just(t), theta_for(t, true))),
        kind in kinds(),
    ) {
        let b = basis::build(tess, true, kind).unwrap();
        let f = Field::<f64>::new(tess, &b.to_f32(), theta.len(), &theta);
        let mut prev = f.transform(0.0);
        prop_assert!(prev.abs() < 1e-9, "T(0) = {prev}");
        for i in 1..=400 {
            let u = i as f64 / 400.0;
            let t = f.transform(u);
            prop_assert!(t > prev, "T not increasing at u={u}: {t} <= {prev}");
            prev = t;
        }
        prop_assert!((prev - 1.0).abs() < 1e-9, "T(1) = {prev}");
    }

    #[test]
    fn warp_without_zero_boundary_is_increasing(
        (tess, theta) in (1usize..16).prop_flat_map(|t| (Just(t), theta_for(t, false))),
    ) {
        let b = basis::build(tess, false, BasisKind::Qr).unwrap();
        let f = Field::<f64>::new(tess, &b.to_f32(), theta.len(), &theta);
        let mut prev = f.transform(0.0);
        for i in 1..=200 {
            let t = f.transform(i as f64 / 200.0);
            prop_assert!(t > prev);
            prev = t;
        }
    }

    #[test]
    fn continuous_at_a_and_b(
        (tess, theta) in (2usize..16).prop_flat_map(|t| (Just(t), theta_for(t, true))),
        variant in prop_oneof![Just(Variant::Ditac), Just(Variant::Leaky), Just(Variant::Ge)],
        lut in prop_oneof![Just(0i64), Just(2048)],
    ) {
        let at = attrs(tess as i64, 1, BasisKind::Qr, variant, lut, Interpolation::Nearest);
        let act = act64(&at, &theta);
        for edge in [-3.0f64, 3.0] {
            let h = 1e-9;
            let mut y = [0.0; 3];
            act.forward(&[edge - h, edge, edge + h], &mut y);
            prop_assert!((y[0] - y[1]).abs() < 1e-6 && (y[2] - y[1]).abs() < 1e-6, "jump at {edge}: {y:?}");
        }
    }

    #[test]
    fn exact_gradients_match_finite_differences(
        (tess, theta) in (2usize..12).prop_flat_map(|t| (Just(t), theta_for(t, true))),
        variant in prop_oneof![Just(Variant::Ditac), Just(Variant::Leaky), Just(Variant::Ge)],
        x in -2.9f64..2.9,
    ) {
        let at = attrs(tess as i64, 1, BasisKind::Qr, variant, 0, Interpolation::Nearest);
        let act = act64(&at, &theta);
        let mut g = vec![0.0; theta.len()];
        let dx = act.element_grad(x, &mut g);
        let h = 1e-6;
        let fd = (y64(&act, x + h) - y64(&act, x - h)) / (2.0 * h);
        prop_assert!((fd - dx).abs() <= 1e-4 * (1.0 + dx.abs()), "dx {dx} vs fd {fd}");
        theta_fd_matches(&at, &theta, x, &g)?;
    }

    #[test]
    fn linear_gradients_match_finite_differences(
        (tess, theta) in (2usize..12).prop_flat_map(|t| (Just(t), theta_for(t, true))),
        variant in prop_oneof![Just(Variant::Ditac), Just(Variant::Leaky), Just(Variant::Ge)],
        x in -2.9f64..2.9,
    ) {
        let at = attrs(tess as i64, 1, BasisKind::Rref, variant, 64, Interpolation::Linear);
        let act = act64(&at, &theta);
        let mut g = vec![0.0; theta.len()];
        let dx = act.element_grad(x, &mut g);
        // Away from a node the interpolant is smooth: a small step stays in one interval.
        let h = 1e-7;
        let fd = (y64(&act, x + h) - y64(&act, x - h)) / (2.0 * h);
        let u = (x + 3.0) / 6.0 * 63.0;
        prop_assume!((u - u.round()).abs() > 1e-4);
        prop_assert!((fd - dx).abs() <= 1e-4 * (1.0 + dx.abs()), "dx {dx} vs fd {fd}");
        theta_fd_matches(&at, &theta, x, &g)?;
    }

    #[test]
    fn table_nodes_carry_exact_derivatives(
        (tess, theta) in (2usize..12).prop_flat_map(|t| (Just(t), theta_for(t, true))),
        node in 1usize..63,
    ) {
        // The STE: at a node, the table gradient is the exact derivative of T there.
        let at = attrs(tess as i64, 1, BasisKind::Qr, Variant::Ditac, 64, Interpolation::Nearest);
        let exact = Attrs { lut_size: 0, ..at.clone() };
        let x = -3.0 + 6.0 * node as f64 / 63.0;
        let (t, e) = (act64(&at, &theta), act64(&exact, &theta));
        let (mut gt, mut ge) = (vec![0.0; theta.len()], vec![0.0; theta.len()]);
        let (dt, de) = (t.element_grad(x, &mut gt), e.element_grad(x, &mut ge));
        prop_assert!((dt - de).abs() < 1e-6 * (1.0 + de.abs()));
        for k in 0..theta.len() {
            prop_assert!((gt[k] - ge[k]).abs() < 1e-6 * (1.0 + ge[k].abs()));
        }
    }
}

#[test]
fn zero_theta_gives_gelu_and_leaky_relu() {
    for (variant, lut) in [
        (Variant::Ditac, 2048),
        (Variant::Ge, 0),
        (Variant::Leaky, 2048),
        (Variant::Ditac, 0),
    ] {
        let at = Attrs {
            variant,
            lut_size: lut,
            ..Default::default()
        };
        let b = basis::build(10, true, BasisKind::Qr).unwrap();
        let act = Activation::<f32>::from_theta(&at, &b, &[0.0; 9], false).unwrap();
        let x: Vec<f32> = (0..401).map(|i| -4.0 + i as f32 * 0.02).collect();
        let mut y = vec![0.0; x.len()];
        act.forward(&x, &mut y);
        for (&xi, &yi) in x.iter().zip(&y) {
            let want = match variant {
                Variant::Leaky => {
                    if xi >= 0.0 {
                        xi
                    } else {
                        0.01 * xi
                    }
                }
                _ => xi * normal_cdf(xi),
            };
            // The nearest node of an identity table is at most half a node away: |Δx| ≤ 2.5/4094.
            let tol = if lut > 0 { 2.5 / 4094.0 + 1e-6 } else { 1e-6 };
            assert!(
                (yi - want).abs() <= tol,
                "{variant:?} lut {lut}: x {xi}: {yi} vs {want}"
            );
        }
    }
}

#[test]
fn non_finite_inputs_follow_the_contract() {
    let b = basis::build(10, true, BasisKind::Qr).unwrap();
    let theta = [0.3f32, -0.2, 0.1, 0.0, 0.5, -0.4, 0.2, 0.1, -0.1];
    for variant in [Variant::Ditac, Variant::Ge, Variant::Leaky] {
        let at = Attrs {
            variant,
            ..Default::default()
        };
        let act = Activation::<f32>::from_theta(&at, &b, &theta, false).unwrap();
        let mut y = [0.0f32; 3];
        act.forward(&[f32::NAN, f32::INFINITY, f32::NEG_INFINITY], &mut y);
        assert!(y[0].is_nan(), "{variant:?}");
        assert_eq!(y[1], f32::INFINITY, "{variant:?}");
        match variant {
            Variant::Leaky => assert_eq!(y[2], f32::NEG_INFINITY),
            _ => assert!(y[2].is_nan(), "{variant:?}: {}", y[2]),
        }
    }
}

#[test]
fn empty_input_gives_empty_output() {
    let b = basis::build(10, true, BasisKind::Qr).unwrap();
    let act = Activation::<f32>::from_theta(&Attrs::default(), &b, &[0.0; 9], true).unwrap();
    let (x, mut y): (Vec<f32>, Vec<f32>) = (vec![], vec![]);
    act.forward(&x, &mut y);
    let mut dth = vec![0.0f64; 9];
    act.backward(&[], &[], &mut [], &mut dth);
    assert!(dth.iter().all(|&v| v == 0.0));
}

#[test]
fn bad_attributes_are_typed_errors_naming_the_value() {
    let b = basis::build(10, true, BasisKind::Qr).unwrap();
    let ok = Attrs::default();
    let cases: Vec<(Attrs, &str)> = vec![
        (
            Attrs {
                a: 2.0,
                b: 1.0,
                ..ok.clone()
            },
            "'a' = 2: expected a < b",
        ),
        (
            Attrs {
                a: f32::NAN,
                ..ok.clone()
            },
            "'a' = NaN",
        ),
        (
            Attrs {
                b: f32::INFINITY,
                ..ok.clone()
            },
            "'b' = inf",
        ),
        (
            Attrs {
                tess: 0,
                ..ok.clone()
            },
            "'tess' = 0",
        ),
        (
            Attrs {
                tess: 1025,
                ..ok.clone()
            },
            "'tess' = 1025",
        ),
        (
            Attrs {
                lut_size: 1,
                ..ok.clone()
            },
            "'lut_size' = 1",
        ),
        (
            Attrs {
                lut_size: (1 << 24) + 1,
                ..ok.clone()
            },
            "'lut_size' = 16777217",
        ),
        (
            Attrs {
                zero_boundary: 2,
                ..ok.clone()
            },
            "'zero_boundary' = 2",
        ),
    ];
    for (at, needle) in cases {
        let e = Activation::<f32>::from_theta(&at, &b, &[0.0; 9], false)
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{e} lacks {needle}");
    }
    let e = Activation::<f32>::from_theta(&ok, &b, &[0.0; 8], false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("theta") && e.contains("expected d = 9"), "{e}");
    let mut th = [0.0f32; 9];
    th[4] = f32::NAN;
    let e = Activation::<f32>::from_theta(&ok, &b, &th, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("non-finite value NaN at index 4"), "{e}");
    assert!("swish"
        .parse::<Variant>()
        .unwrap_err()
        .to_string()
        .contains("\"swish\""));
    assert!("svd"
        .parse::<BasisKind>()
        .unwrap_err()
        .to_string()
        .contains("\"svd\""));
    let e = Activation::<f32>::from_table(&ok, &[0.5])
        .unwrap_err()
        .to_string();
    assert!(e.contains("table") && e.contains("at least 2"), "{e}");
    let e = basis::explicit(3, true, &[1.0; 6], 3, 2)
        .unwrap_err()
        .to_string();
    assert!(e.contains("expected [6, 2]"), "{e}");
}

/// b − a must be a float32 number (it scales every value), and so must 1/(b − a).
#[test]
fn an_interval_wider_than_float32_is_refused() {
    for (a, b) in [(-2e38f32, 2e38f32), (0.0, 1e-40)] {
        let at = Attrs {
            a,
            b,
            ..Default::default()
        };
        let e = at.validate().unwrap_err().to_string();
        assert!(e.contains("attribute 'b'"), "{e}");
        assert!(e.contains("representable in float32"), "{e}");
        let e = Activation::<f32>::from_table(&at, &[0.0, 1.0])
            .unwrap_err()
            .to_string();
        assert!(e.contains("b − a"), "{e}");
    }
}

/// Whatever finite θ is accepted, a zero-boundary warp maps [a, b] onto itself with T(a) = a and
/// T(b) = b (to the rounding of the de-normalisation) and finite gradients; a θ whose field is too
/// steep to integrate is refused with a message naming the slope.
#[test]
fn large_theta_keeps_the_ends_or_is_refused() {
    let xs: Vec<f64> = (0..=2000).map(|i| -0.5 + 2.5 * i as f64 / 2000.0).collect();
    let (mut accepted, mut refused) = (0, 0);
    for kind in [BasisKind::Qr, BasisKind::Rref, BasisKind::Sparse] {
        for scale in [1.0f32, 30.0, 150.0, 400.0, 1000.0, 1e4, 1e30, 3e38] {
            for lut in [0i64, 2048] {
                let at = Attrs {
                    a: -0.5,
                    b: 2.0,
                    tess: 10,
                    basis: kind,
                    // y = LeakyReLU_1(x̃) = x̃: the warp itself.
                    variant: Variant::Leaky,
                    alpha: 1.0,
                    lut_size: lut,
                    ..Default::default()
                };
                let d = at.theta_len();
                let theta: Vec<f32> = (0..d)
                    .map(|k| scale * [1.0, -0.7, 0.4, -1.0, 0.9][k % 5])
                    .collect();
                let b = basis::build(at.tess(), true, kind).unwrap();
                match Activation::<f64>::from_theta(&at, &b, &theta, true) {
                    Err(e) => {
                        let e = e.to_string();
                        assert!(e.contains("input 'theta'"), "{e}");
                        assert!(e.contains("expected finite values and |slope| ≤ 64"), "{e}");
                        refused += 1;
                        // The float32 warp refuses the same θ.
                        assert!(Activation::<f32>::from_theta(&at, &b, &theta, true).is_err());
                    }
                    Ok(act) => {
                        accepted += 1;
                        let mut y = vec![0.0; xs.len()];
                        act.forward(&xs, &mut y);
                        let tol = 1e-6;
                        assert!(
                            (y[0] + 0.5).abs() < tol,
                            "{kind:?} {scale} {lut}: T(a) = {}",
                            y[0]
                        );
                        assert!(
                            (y[xs.len() - 1] - 2.0).abs() < tol,
                            "T(b) = {}",
                            y[xs.len() - 1]
                        );
                        for (&x, &v) in xs.iter().zip(&y) {
                            assert!((-0.5 - tol..=2.0 + tol).contains(&v), "T({x}) = {v}");
                        }
                        let act32 = Activation::<f32>::from_theta(&at, &b, &theta, true).unwrap();
                        let xs32: Vec<f32> = xs.iter().map(|&x| x as f32).collect();
                        let mut y32 = vec![0.0f32; xs.len()];
                        act32.forward(&xs32, &mut y32);
                        for (&x, &v) in xs32.iter().zip(&y32) {
                            assert!((-0.5 - 1e-6..=2.0 + 1e-6).contains(&v), "f32 T({x}) = {v}");
                        }
                        let (dy, mut dx) = (vec![1.0f32; xs.len()], vec![0.0f32; xs.len()]);
                        let mut dth = vec![0.0f64; d];
                        act32.backward(&dy, &xs32, &mut dx, &mut dth);
                        assert!(dx.iter().all(|v| v.is_finite()), "dX not finite");
                        assert!(dth.iter().all(|v| v.is_finite()), "dθ not finite");
                    }
                }
            }
        }
    }
    assert!(
        accepted > 0 && refused > 0,
        "{accepted} accepted, {refused} refused"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The same contract for random tessellations, bases, table sizes and θ up to 1e6 in magnitude.
    #[test]
    fn any_accepted_theta_maps_the_interval_onto_itself(
        tess in 1i64..40,
        kind in kinds(),
        lut in prop_oneof![Just(0i64), 2i64..5000],
        log_scale in -2.0f64..6.0,
        seed in proptest::collection::vec(-1.0f32..1.0, 41),
    ) {
        let at = Attrs {
            a: -1.0, b: 3.0, tess, basis: kind, variant: Variant::Leaky, alpha: 1.0,
            lut_size: lut, ..Default::default()
        };
        let d = at.theta_len();
        let theta: Vec<f32> = seed[..d].iter().map(|v| v * 10f64.powf(log_scale) as f32).collect();
        let b = basis::build(at.tess(), true, kind).unwrap();
        if let Ok(act) = Activation::<f32>::from_theta(&at, &b, &theta, true) {
            let xs: Vec<f32> = (0..=500).map(|i| -1.0 + 4.0 * i as f32 / 500.0).collect();
            let mut y = vec![0.0f32; xs.len()];
            act.forward(&xs, &mut y);
            prop_assert!((y[0] + 1.0).abs() < 1e-6 && (y[500] - 3.0).abs() < 1e-6, "{} {}", y[0], y[500]);
            for &v in &y {
                prop_assert!((-1.0 - 1e-6..=3.0 + 1e-6).contains(&v), "{v}");
            }
            let mut dx = vec![0.0f32; xs.len()];
            let mut dth = vec![0.0f64; d];
            act.backward(&vec![1.0; xs.len()], &xs, &mut dx, &mut dth);
            prop_assert!(dx.iter().all(|v| v.is_finite()) && dth.iter().all(|v| v.is_finite()));
        }
    }
}
