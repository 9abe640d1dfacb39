//! `ditac basis` and `ditac eval` as other tools call them: against the reference vectors, and
//! bad input (one line on stderr, exit status 2).

mod support;

use serde_json::Value;
use support::{assert_close, cases, ditac_with_stdin, vec1, vec2, Tol};

fn fmt_x(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        }
    } else {
        format!("{v:e}")
    }
}

#[test]
fn eval_matches_reference_table_and_exact() {
    let tmp = std::env::temp_dir().join(format!("ditac-cli-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    for c in cases() {
        let bfile = tmp.join(format!("{}.json", c.name));
        std::fs::write(&bfile, serde_json::to_string(&c.json["B"]).unwrap()).unwrap();
        let theta: Vec<String> = c.theta.iter().map(|v| format!("{v:e}")).collect();
        let x = c.points("x");
        let input: Vec<String> = x.iter().map(|&v| fmt_x(v)).collect();
        let stable = c.stable();
        for (lut, suffix) in [("2048", "lut"), ("0", "exact")] {
            let (code, out, err) = ditac_with_stdin(
                &[
                    "eval",
                    "--theta",
                    &theta.join(","),
                    "--a",
                    &c.a.to_string(),
                    "--b",
                    &c.b.to_string(),
                    "--tess",
                    &c.tess.to_string(),
                    "--basis",
                    "explicit",
                    "--basis-file",
                    bfile.to_str().unwrap(),
                    "--lut-size",
                    lut,
                    "--grad",
                ],
                &input.join(" "),
            );
            assert_eq!(code, 0, "{}: {err}", c.name);
            let v: Value = serde_json::from_str(&out).unwrap();
            let tol = Tol::table(c.a, c.b);
            let mask = if suffix == "lut" {
                Some(&stable[..])
            } else {
                None
            };
            assert_close(
                &format!("{} eval y {suffix}", c.name),
                &vec1(&v["y"]),
                &c.points(&format!("act_{suffix}")),
                tol,
                mask,
            );
            let dx_tol = if suffix == "lut" {
                tol
            } else {
                Tol {
                    rel: 1e-4,
                    abs: 1e-4,
                }
            };
            assert_close(
                &format!("{} eval dy_dx {suffix}", c.name),
                &vec1(&v["dy_dx"]),
                &c.points(&format!("dact_dx_{suffix}")),
                dx_tol,
                mask,
            );
            let got = vec2(&v["dy_dtheta"]);
            let want = c.points2(&format!("dact_dtheta_{suffix}"));
            for i in 0..x.len() {
                if mask.is_some_and(|m| !m[i]) {
                    continue;
                }
                let scale = want[i].iter().fold(0.0f64, |m, v| m.max(v.abs()));
                assert_close(
                    &format!("{} eval dy_dtheta[{i}] {suffix}", c.name),
                    &got[i],
                    &want[i],
                    Tol::exact_grad(scale),
                    None,
                );
            }
        }
    }
}

#[test]
fn eval_writes_non_finite_as_strings() {
    let (code, out, err) =
        ditac_with_stdin(&["eval", "--theta", "0,0,0,0,0,0,0,0,0"], "nan inf -inf 1");
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["y"][0], "nan");
    assert_eq!(v["y"][1], "inf");
    assert_eq!(v["y"][2], "nan");
    assert!(v.get("dy_dx").is_none());
}

#[test]
fn basis_prints_rows_of_d_numbers() {
    for (tess, zb, d) in [(10, "1", 9), (10, "0", 11), (1, "0", 2)] {
        for kind in ["qr", "rref", "sparse"] {
            let (code, out, err) = ditac_with_stdin(
                &[
                    "basis",
                    "--tess",
                    &tess.to_string(),
                    "--zero-boundary",
                    zb,
                    "--basis",
                    kind,
                ],
                "",
            );
            assert_eq!(code, 0, "{err}");
            let b = vec2(&serde_json::from_str::<Value>(&out).unwrap());
            assert_eq!(b.len(), 2 * tess);
            assert!(b.iter().all(|r| r.len() == d), "{kind} tess {tess} zb {zb}");
        }
    }
}

#[test]
fn basis_qr_matches_reference_where_reproducible() {
    for c in cases().into_iter().filter(|c| c.qr_reproducible()) {
        let (code, out, _) = ditac_with_stdin(&["basis", "--tess", &c.tess.to_string()], "");
        assert_eq!(code, 0);
        let got: Vec<f64> = vec2(&serde_json::from_str::<Value>(&out).unwrap())
            .into_iter()
            .flatten()
            .collect();
        let want: Vec<f64> = c.basis.iter().flatten().copied().collect();
        assert_close(
            &format!("{} B", c.name),
            &got,
            &want,
            Tol {
                rel: 0.0,
                abs: 1e-6,
            },
            None,
        );
    }
}

#[test]
fn bad_input_is_one_line_and_status_2() {
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["eval", "--theta", "0", "--a", "2", "--b", "1"],
            "1",
            "'a' = 2",
        ),
        (&["eval", "--theta", "0", "--a", "nan"], "1", "'a' = NaN"),
        (&["eval", "--theta", "0", "--b", "inf"], "1", "'b' = inf"),
        (&["eval", "--theta", "0", "--tess", "0"], "1", "'tess' = 0"),
        (
            &["eval", "--theta", "0", "--tess", "1025"],
            "1",
            "'tess' = 1025",
        ),
        (&["eval", "--theta", "1,2,3"], "1", "expected d = 9"),
        (
            &["eval", "--theta", "0,0,0,0,nan,0,0,0,0"],
            "1",
            "non-finite",
        ),
        (
            &["eval", "--theta", "0,0,0,0,0,0,0,0,0", "--lut-size", "1"],
            "1",
            "'lut_size' = 1",
        ),
        (
            &[
                "eval",
                "--theta",
                "0,0,0,0,0,0,0,0,0",
                "--lut-size",
                "16777217",
            ],
            "1",
            "'lut_size' = 16777217",
        ),
        (
            &["eval", "--theta", "0,0,0,0,0,0,0,0,0", "--variant", "swish"],
            "1",
            "'variant' = \"swish\"",
        ),
        (
            &["eval", "--theta", "0,0,0,0,0,0,0,0,0", "--basis", "svd"],
            "1",
            "'basis' = \"svd\"",
        ),
        (
            &["eval", "--theta", "0,0,0,0,0,0,0,0,0"],
            "1 x 2",
            "'x' is not a number",
        ),
        (
            &[
                "eval",
                "--theta",
                "0",
                "--tess",
                "2",
                "--basis",
                "explicit",
                "--basis-file",
                "/nonexistent.json",
            ],
            "1",
            "cannot read",
        ),
        (&["basis", "--tess", "0"], "", "'tess' = 0"),
        // Usage errors: clap's message and the usage on one line, not clap's five.
        (
            &["eval", "--bogus"],
            "",
            "unexpected argument '--bogus' found; tip: a similar argument exists: '--b' (usage: ditac eval",
        ),
        (&["basis", "--tess"], "", "a value is required for '--tess"),
        (&["frobnicate"], "", "unrecognized subcommand 'frobnicate'"),
        (&[], "", "a command is required (see 'ditac --help')"),
    ];
    for (args, stdin, needle) in cases {
        let (code, out, err) = ditac_with_stdin(args, stdin);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?} printed {out}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err} lacks {needle}");
    }
}

#[test]
fn malformed_basis_file_is_rejected() {
    let tmp = std::env::temp_dir().join(format!("ditac-badb-{}.json", std::process::id()));
    for (content, needle) in [
        ("{", "not JSON"),
        ("[[1,2],[3]]", "row 1"),
        ("[[1],[0],[0],[1]]", "violates constraint"),
    ] {
        std::fs::write(&tmp, content).unwrap();
        let (code, _, err) = ditac_with_stdin(
            &[
                "eval",
                "--theta",
                "0",
                "--tess",
                "2",
                "--basis",
                "explicit",
                "--basis-file",
                tmp.to_str().unwrap(),
            ],
            "1",
        );
        assert_eq!(code, 2, "{content}: {err}");
        assert!(err.contains(needle), "{content}: {err}");
    }
}
