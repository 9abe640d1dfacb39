//! `ditac bench` as scripts call it: `--json` with every row, positive medians and ratios. No
//! timing assertions: the performance goals are measured by the benchmark itself, not in tests.

mod support;

use serde_json::Value;
use support::*;

fn bench(args: &[&str]) -> (i32, String, String) {
    let plugin = plugin_path();
    let mut all = vec!["bench", "--plugin", arg(&plugin)];
    all.extend(args);
    ditac(&all)
}

#[test]
fn json_has_every_row_with_positive_medians_and_ratios() {
    let (code, out, err) = bench(&[
        "--size",
        "4096",
        "--repeats",
        "2",
        "--json",
        "--threads",
        "1,2",
    ]);
    assert_eq!(code, 0, "stderr: {err}");
    let doc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(doc["size"], 4096);
    assert_eq!(doc["repeats"], 2);
    let rows = doc["rows"].as_array().unwrap();
    let skipped = doc["skipped"].as_array().unwrap();
    for threads in [1, 2] {
        for op in [
            "identity", "gelu", "nearest", "linear", "exact", "lut", "grad", "lowered",
        ] {
            let row = rows
                .iter()
                .find(|r| r["op"] == op && r["threads"] == threads);
            match row {
                Some(r) => {
                    assert_eq!(r["runs"], 2, "{r}");
                    for k in ["median_ms", "min_ms", "gelem_per_s", "ratio_to_gelu"] {
                        let v = r[k].as_f64().unwrap_or(-1.0);
                        assert!(v > 0.0 && v.is_finite(), "{op} {threads}: {k} = {}", r[k]);
                    }
                }
                None => {
                    // Only the lowered graph may be missing, and then it says why.
                    assert_eq!(op, "lowered", "row {op} at {threads} thread(s) missing");
                    assert!(skipped
                        .iter()
                        .any(|s| s["op"] == op && s["reason"].is_string()));
                }
            }
        }
    }
    let gelu = rows.iter().find(|r| r["op"] == "gelu").unwrap();
    assert_eq!(gelu["ratio_to_gelu"].as_f64(), Some(1.0));
}

#[test]
fn table_and_filter() {
    let (code, out, err) = bench(&[
        "--size",
        "4K",
        "--repeats",
        "1",
        "--threads",
        "1",
        "--ops",
        "nearest,lowered",
    ]);
    assert_eq!(code, 0, "stderr: {err}");
    assert!(out.contains("DiTAC nearest"), "{out}");
    assert!(out.contains("Gelu"), "the anchor is always run: {out}");
    assert!(!out.contains("DiTACGrad"), "{out}");
    assert!(out.contains("lowered graph"), "{out}");
}

#[test]
fn bad_arguments_exit_2() {
    for args in [
        &["--size", "100"][..],
        &["--size", "65M"],
        &["--size", "x"],
        &["--ops", "nope"],
        &["--repeats", "0"],
        &["--threads", "0"],
    ] {
        let (code, _, err) = bench(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.starts_with("error") || err.starts_with("ditac: error"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn a_plugin_path_that_is_not_the_plugin_is_one_clear_error() {
    let root = repo_root();
    let ort_lib = std::env::var("ORT_DYLIB_PATH")
        .map_or_else(|_| root.join(ort_newest()), std::path::PathBuf::from);
    let cases = [
        (root.join("no/such/libditac.so"), "not found"),
        (root.join("README.md"), "cannot be loaded"),
        (
            ort_lib,
            "is not a DiTAC plugin: it exports no RegisterCustomOps",
        ),
    ];
    for (path, expected) in cases {
        let path = arg(&path);
        let (code, _, err) = ditac(&[
            "bench",
            "--size",
            "4096",
            "--repeats",
            "1",
            "--plugin",
            path,
        ]);
        assert_eq!(code, 2, "{path}: {err}");
        assert!(err.contains(expected), "{path}: {err}");
    }
}

/// The workload options reach the rows: the wide warp, per-channel θ from the prior, θ from a
/// file; the JSON says which instruction set the kernels ran and describes the workload.
#[test]
fn workloads_and_isa_reported() {
    let dir = std::env::temp_dir().join(format!("ditac-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let theta = dir.join("theta.json");
    std::fs::write(
        &theta,
        "[[0.5,-0.2,0.1,0.3,-0.4,0.2,0.1,-0.3,0.2],[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9]]",
    )
    .unwrap();
    let cases: [&[&str]; 3] = [
        &["--interval=-5,5", "--theta-prior", "2", "--input-std", "3"],
        &["--theta-prior", "1", "--channels", "4", "--tess", "12"],
        &["--theta", theta.to_str().unwrap(), "--channels", "2"],
    ];
    for extra in cases {
        let mut args = vec![
            "--size",
            "4K",
            "--repeats",
            "1",
            "--threads",
            "1",
            "--json",
            "--ops",
            "nearest,exact,lut,grad",
        ];
        args.extend_from_slice(extra);
        let (code, out, err) = bench(&args);
        assert_eq!(code, 0, "{extra:?}: {err}");
        let doc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        let isa = doc["kernels"].as_str().unwrap();
        assert!(["scalar", "avx2", "avx512"].contains(&isa), "{isa}");
        let w = &doc["workload"];
        assert!(w["in_range"].as_f64().unwrap() > 0.0, "{w}");
        // The exact mode's table: [intervals left to the constant-cost path, intervals] over the
        // channels' rows.
        let cov = &w["exact_table_intervals_left_to_constant_cost_path"];
        let (slow, all) = (cov[0].as_u64().unwrap(), cov[1].as_u64().unwrap());
        let rows = doc["workload"]["channels"].as_u64().unwrap();
        assert_eq!(
            all,
            rows * (ditac::core::kernels::FAST_NODES as u64 - 1),
            "{w}"
        );
        assert!(slow > 0 && slow < all / 4, "{w}");
        for r in doc["rows"].as_array().unwrap() {
            let expect = if r["op"] == "gelu" { "ORT" } else { isa };
            assert_eq!(r["isa"], expect, "{r}");
            assert!(r["ratio_to_gelu"].as_f64().unwrap() > 0.0, "{r}");
        }
    }
    // DITAC_ISA caps the kernels (and a bad value is an error naming the variable).
    let plugin = plugin_path();
    let (code, out, err) = ditac_env(
        &[
            "bench",
            "--plugin",
            arg(&plugin),
            "--size",
            "4K",
            "--repeats",
            "1",
            "--threads",
            "1",
            "--json",
            "--ops",
            "nearest",
        ],
        &[("DITAC_ISA", "scalar")],
    );
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["kernels"], "scalar");
    let (code, _, err) = ditac_env(
        &[
            "bench",
            "--plugin",
            arg(&plugin),
            "--size",
            "4K",
            "--repeats",
            "1",
        ],
        &[("DITAC_ISA", "sse9")],
    );
    assert!(code != 0 && err.contains("DITAC_ISA=\"sse9\""), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// `--model`: a network against itself with Gelu for its DiTAC nodes.
#[test]
fn model_against_gelu() {
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/ditac_mlp.onnx");
    let (code, out, err) = bench(&[
        "--model",
        model,
        "--repeats",
        "2",
        "--threads",
        "1",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(doc["ditac_nodes"], 2);
    let rows = doc["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["ratio_to_gelu"].as_f64(), Some(1.0));
    assert!(rows[1]["ratio_to_gelu"].as_f64().unwrap() > 0.0);
    // A model without DiTAC nodes is refused with the reason.
    let plain = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/ditac_mlp_lowered.onnx"
    );
    let (code, _, err) = bench(&["--model", plain, "--repeats", "1"]);
    assert_ne!(code, 0);
    assert!(err.contains("no DiTAC or DiTACLut node"), "{err}");
}

#[test]
fn bad_workloads_are_named() {
    for (args, msg) in [
        (&["--interval", "2,1"][..], "not an interval"),
        (&["--theta-prior=-1"], "--theta-prior"),
        (
            &["--channels", "3", "--size", "4097"],
            "not a multiple of --channels",
        ),
        (&["--tess", "12"], "give θ with --theta or --theta-prior"),
        (&["--input-std", "0"], "--input-std"),
    ] {
        let (code, _, err) = bench(args);
        assert_ne!(code, 0, "{args:?}");
        assert!(err.contains(msg), "{args:?}: {err}");
    }
}
