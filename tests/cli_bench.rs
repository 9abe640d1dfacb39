//! `ditac bench` as scripts call it: `--json` with every row, positive medians and ratios. No
//! timing assertions: the performance goals are measured by the benchmark itself, not in tests.

use serde_json::Value;
use std::process::Command;

fn plugin() -> String {
    std::env::var("DITAC_PLUGIN").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/libditac.so").to_string()
    })
}

fn bench(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ditac"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .arg("bench")
        .args(["--plugin", &plugin()])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let ort_lib = std::env::var("ORT_DYLIB_PATH")
        .unwrap_or_else(|_| format!("{root}/.ort/1.32.0/libonnxruntime.so"));
    let cases = [
        (format!("{root}/no/such/libditac.so"), "not found"),
        (format!("{root}/README.md"), "cannot be loaded"),
        (
            ort_lib,
            "is not a DiTAC plugin: it exports no RegisterCustomOps",
        ),
    ];
    for (path, expected) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_ditac"))
            .current_dir(root)
            .args([
                "bench",
                "--size",
                "4096",
                "--repeats",
                "1",
                "--plugin",
                &path,
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{path}: {err}");
        assert!(err.contains(expected), "{path}: {err}");
    }
}
