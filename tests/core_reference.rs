//! The math core against the reference vectors (`tests/data/oracle`), with the reference's B passed
//! explicitly (always reproducible) and, where the reference is reproducible, with our QR port.

// `support/`'s reference loader alone: this package has neither `ort` nor the `ditac` tools.
#[path = "support/oracle.rs"]
mod oracle;

use ditac::core::cpa::Field;
use ditac::core::table::Table;
use ditac::core::{basis, Activation, Attrs, Basis, BasisKind};
use oracle::{assert_close, cases, Case, Tol};

fn attrs(c: &Case, lut_size: i64) -> Attrs {
    Attrs {
        a: c.a,
        b: c.b,
        tess: c.tess as i64,
        zero_boundary: c.zero_boundary as i64,
        basis: BasisKind::Explicit,
        lut_size,
        ..Default::default()
    }
}

fn ref_basis(c: &Case) -> Basis {
    let f = c.basis_f32();
    basis::explicit(c.tess, c.zero_boundary, &f, 2 * c.tess, c.d()).unwrap()
}

fn xs(c: &Case) -> Vec<f32> {
    c.points("x").iter().map(|&v| v as f32).collect()
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

#[test]
fn tables_match_reference() {
    for c in cases() {
        let b = ref_basis(&c);
        let field = Field::<f32>::new(c.tess, &b.to_f32(), c.d(), &c.theta);
        let t = Table::build(&field, 2048, true);
        // The oracle's rule on the normalised domain: 1e-5 relative / 1e-5 absolute.
        let tol = Tol {
            rel: 1e-5,
            abs: 1e-5,
        };
        assert_close(
            &format!("{} T_norm", c.name),
            &f64s(&t.t),
            &oracle::vec1(&c.json["lut"]["T_norm"]),
            tol,
            None,
        );
        assert_close(
            &format!("{} dTdx_norm", c.name),
            &f64s(&t.dt),
            &oracle::vec1(&c.json["lut"]["dTdx_norm"]),
            tol,
            None,
        );
        if let Some(want) = c.json["lut"].get("dTdtheta_norm") {
            let want: Vec<f64> = oracle::vec2(want).into_iter().flatten().collect();
            let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            assert_close(
                &format!("{} dTdtheta_norm", c.name),
                &f64s(&t.dtheta),
                &want,
                Tol {
                    rel: 1e-5,
                    abs: 1e-5 * scale,
                },
                None,
            );
        }
    }
}

fn check_table_path(c: &Case, b: &Basis, label: &str) {
    let act = Activation::<f32>::from_theta(&attrs(c, 2048), b, &c.theta, true).unwrap();
    let x = xs(c);
    let stable = c.stable();
    let tol = Tol::table(c.a, c.b);
    let mut y = vec![0.0; x.len()];
    act.forward(&x, &mut y);
    assert_close(
        &format!("{} {label} act_lut", c.name),
        &f64s(&y),
        &c.points("act_lut"),
        tol,
        Some(&stable),
    );
    assert_close(
        &format!("{} {label} act_eval", c.name),
        &f64s(&y),
        &c.points("act_eval"),
        tol,
        Some(&stable),
    );
    act.warp_only(&x, &mut y);
    assert_close(
        &format!("{} {label} T_lut", c.name),
        &f64s(&y),
        &c.points("T_lut"),
        tol,
        Some(&stable),
    );

    let want_dth = c.points2("dact_dtheta_lut");
    let mut dx = Vec::new();
    let mut row = vec![0.0f32; c.d()];
    for (i, &xi) in x.iter().enumerate() {
        dx.push(act.element_grad(xi, &mut row) as f64);
        if stable[i] {
            assert_close(
                &format!("{} {label} dact_dtheta_lut[{i}]", c.name),
                &f64s(&row),
                &want_dth[i],
                tol,
                None,
            );
        }
    }
    assert_close(
        &format!("{} {label} dact_dx_lut", c.name),
        &dx,
        &c.points("dact_dx_lut"),
        tol,
        Some(&stable),
    );

    // Backward with dY = 1 over the stable points = Σ of their per-point gradients.
    let xs_stable: Vec<f32> = x
        .iter()
        .zip(&stable)
        .filter(|(_, &s)| s)
        .map(|(&v, _)| v)
        .collect();
    let ones = vec![1.0f32; xs_stable.len()];
    let mut dxs = vec![0.0f32; xs_stable.len()];
    let mut dth = vec![0.0f64; c.d()];
    act.backward(&ones, &xs_stable, &mut dxs, &mut dth);
    let mut want = vec![0.0f64; c.d()];
    for (i, r) in want_dth.iter().enumerate() {
        if stable[i] {
            for k in 0..c.d() {
                want[k] += r[k];
            }
        }
    }
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert_close(
        &format!("{} {label} Σ dθ", c.name),
        &dth,
        &want,
        Tol {
            rel: 1e-5,
            abs: 1e-5 * scale,
        },
        None,
    );
}

#[test]
fn table_path_matches_reference_with_its_basis() {
    for c in cases() {
        check_table_path(&c, &ref_basis(&c), "explicit B");
    }
}

#[test]
fn table_path_matches_reference_with_qr_port() {
    let mut checked = 0;
    for c in cases().into_iter().filter(|c| c.qr_reproducible()) {
        let b = basis::build(c.tess, c.zero_boundary, BasisKind::Qr).unwrap();
        check_table_path(&c, &b, "qr port");
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} reproducible configs");
}

#[test]
fn exact_path_matches_reference() {
    for c in cases() {
        let b = ref_basis(&c);
        let act = Activation::<f32>::from_theta(&attrs(&c, 0), &b, &c.theta, true).unwrap();
        let x = xs(&c);
        let tol = Tol::exact(c.a, c.b);
        let mut y = vec![0.0; x.len()];
        act.forward(&x, &mut y);
        assert_close(
            &format!("{} act_exact", c.name),
            &f64s(&y),
            &c.points("act_exact"),
            tol,
            None,
        );
        act.warp_only(&x, &mut y);
        assert_close(
            &format!("{} T_exact", c.name),
            &f64s(&y),
            &c.points("T_exact"),
            tol,
            None,
        );
        let want_dth = c.points2("dact_dtheta_exact");
        let mut dx = Vec::new();
        let mut row = vec![0.0f32; c.d()];
        for (i, &xi) in x.iter().enumerate() {
            dx.push(act.element_grad(xi, &mut row) as f64);
            let scale = want_dth[i].iter().fold(0.0f64, |m, v| m.max(v.abs()));
            assert_close(
                &format!("{} dact_dtheta_exact[{i}] x={xi}", c.name),
                &f64s(&row),
                &want_dth[i],
                Tol::exact_grad(scale),
                None,
            );
        }
        assert_close(
            &format!("{} dact_dx_exact", c.name),
            &dx,
            &c.points("dact_dx_exact"),
            Tol {
                rel: 1e-4,
                abs: 1e-4,
            },
            None,
        );
    }
}

#[test]
fn special_inputs_match_reference() {
    for c in cases() {
        let act = Activation::<f32>::from_theta(&attrs(&c, 2048), &ref_basis(&c), &c.theta, true)
            .unwrap();
        let s = &c.json["special_inputs"];
        let x: Vec<f32> = oracle::vec1(&s["x"]).iter().map(|&v| v as f32).collect();
        let mut y = vec![0.0; x.len()];
        act.forward(&x, &mut y);
        let exact = Tol { rel: 0.0, abs: 0.0 };
        assert_close(
            "special act",
            &f64s(&y),
            &oracle::vec1(&s["act_lut"]),
            exact,
            None,
        );
        act.warp_only(&x, &mut y);
        assert_close(
            "special T",
            &f64s(&y),
            &oracle::vec1(&s["T_lut"]),
            exact,
            None,
        );
        let mut row = vec![0.0f32; c.d()];
        let dx: Vec<f64> = x
            .iter()
            .map(|&v| act.element_grad(v, &mut row) as f64)
            .collect();
        assert_close(
            "special dx",
            &dx,
            &oracle::vec1(&s["dact_dx_lut"]),
            exact,
            None,
        );
    }
}

#[test]
fn lut_indices_match_reference() {
    // A mismatch in the table path usually means another node: check the index rule itself.
    for c in cases() {
        let xn = c.points("x_norm");
        let idx = c.points("lut_index");
        let inr = &c.json["points"]["in_range"];
        for i in 0..xn.len() {
            if !inr[i].as_bool().unwrap() {
                continue;
            }
            let x = c.points("x")[i] as f32;
            let a = c.a as f64;
            let u = (x + (-a) as f32) * (1.0 / (c.b as f64 - a)) as f32;
            assert_eq!(u, xn[i] as f32, "{} x_norm[{i}]", c.name);
            assert_eq!(
                (u * 2047.0).round_ties_even() as f64,
                idx[i],
                "{} lut_index[{i}]",
                c.name
            );
        }
    }
}
