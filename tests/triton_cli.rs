//! `ditac triton` as users run it: the repository it writes (layout, configs read from the model,
//! the Python model and the plugin copied in), and bad input (one line, exit status 2, the
//! repository left as it was). Serving that repository in a real Triton server is
//! tests/python/test_triton.py.

mod support;

use std::path::Path;
use support::{ditac, plugin_path, repo_root as root, tmpdir};

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn mlp() -> String {
    root()
        .join("models/ditac_mlp.onnx")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn writes_python_and_native_models_from_the_graph() {
    let d = tmpdir("layout");
    let repo = d.join("repo");
    let plugin = plugin_path();
    let args = [
        "triton",
        &mlp(),
        "-o",
        repo.to_str().unwrap(),
        "--plugin",
        plugin.to_str().unwrap(),
        "--max-batch",
        "8",
        "--instances",
        "3",
        "--threads",
        "2",
        "--preferred-batch",
        "4,8",
    ];
    let (code, out, err) = ditac(&args);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("inputs: x TYPE_FP32 [2]"), "{out}");
    assert_eq!(listing(&repo), ["ditac_mlp", "ditac_mlp_onnxruntime"]);

    let py = repo.join("ditac_mlp");
    assert_eq!(listing(&py), ["1", "config.pbtxt", "libditac.so"]);
    assert_eq!(listing(&py.join("1")), ["model.onnx", "model.py"]);
    assert_eq!(
        std::fs::read(py.join("libditac.so")).unwrap(),
        std::fs::read(&plugin).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(py.join("1/model.py")).unwrap(),
        std::fs::read_to_string(root().join("tools/triton/model.py")).unwrap()
    );
    let cfg = std::fs::read_to_string(py.join("config.pbtxt")).unwrap();
    for line in [
        "name: \"ditac_mlp\"",
        "backend: \"python\"",
        "max_batch_size: 8",
        "dims: [ 2 ]",
        "dims: [ 1 ]",
        "preferred_batch_size: [ 4, 8 ]",
        "count: 3",
        "kind: KIND_CPU",
        "value: { string_value: \"2\" }",
    ] {
        assert!(cfg.contains(line), "{line:?} not in\n{cfg}");
    }

    let native = repo.join("ditac_mlp_onnxruntime");
    let cfg = std::fs::read_to_string(native.join("config.pbtxt")).unwrap();
    let lib = std::fs::canonicalize(native.join("libditac.so")).unwrap();
    for line in [
        "platform: \"onnxruntime_onnx\"".to_string(),
        "kind: KIND_AUTO".to_string(),
        format!("op_library_filename: [ \"{}\" ]", lib.display()),
        "key: \"intra_op_thread_count\"".to_string(),
    ] {
        assert!(cfg.contains(&line), "{line:?} not in\n{cfg}");
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn bad_input_is_one_line_and_leaves_the_repository_alone() {
    let d = tmpdir("bad");
    let repo = d.join("repo");
    let plugin = plugin_path();
    let (p, r, m) = (
        plugin.to_str().unwrap(),
        repo.to_str().unwrap(),
        mlp().to_string(),
    );
    assert_eq!(ditac(&["triton", &m, "-o", r, "--plugin", p]).0, 0);
    let before = std::fs::read_to_string(repo.join("ditac_mlp/config.pbtxt")).unwrap();

    let not_onnx = d.join("not.onnx");
    std::fs::write(&not_onnx, b"not a model").unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![&m], "already exists (use --force to replace it)"),
        (
            vec![&m, "--name", "x", "--plugin", "/nonexistent/libditac.so"],
            "--plugin /nonexistent/libditac.so not found",
        ),
        (
            vec![&m, "--name", "x", "--preferred-batch", "64"],
            "--preferred-batch 64: expected 1..=32",
        ),
        (vec![&m, "--name", "../x"], "--name \"../x\""),
        (
            vec![&m, "--name", "x", "--instances", "0"],
            "--instances and --threads must be at least 1",
        ),
        (
            vec![not_onnx.to_str().unwrap(), "--name", "x"],
            "is not an ONNX model",
        ),
    ];
    for (extra, message) in cases {
        let mut args = vec!["triton", "-o", r];
        args.extend(&extra);
        if !extra.contains(&"--plugin") {
            args.extend(["--plugin", p]);
        }
        let (code, out, err) = ditac(&args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(
            err.starts_with("ditac: error: ") && err.contains(message),
            "{args:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        assert_eq!(
            listing(&repo),
            ["ditac_mlp", "ditac_mlp_onnxruntime"],
            "{args:?}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(repo.join("ditac_mlp/config.pbtxt")).unwrap(),
        before
    );

    // --force replaces both models.
    let (code, _, err) = ditac(&[
        "triton",
        &m,
        "-o",
        r,
        "--plugin",
        p,
        "--force",
        "--max-batch",
        "4",
    ]);
    assert_eq!(code, 0, "{err}");
    let after = std::fs::read_to_string(repo.join("ditac_mlp/config.pbtxt")).unwrap();
    assert!(after.contains("max_batch_size: 4"), "{after}");
    assert_eq!(listing(&repo), ["ditac_mlp", "ditac_mlp_onnxruntime"]);

    // Not even --force replaces a folder that holds one of the inputs: the served model, or the
    // plugin copy of the native model.
    let served = repo.join("ditac_mlp/1/model.onnx");
    let copied = repo.join("ditac_mlp_onnxruntime/libditac.so");
    for (model, plugin, inside) in [
        (served.to_str().unwrap(), p, "ditac_mlp"),
        (
            m.as_str(),
            copied.to_str().unwrap(),
            "ditac_mlp_onnxruntime",
        ),
    ] {
        let args = [
            "triton",
            model,
            "-o",
            r,
            "--name",
            "ditac_mlp",
            "--plugin",
            plugin,
            "--force",
        ];
        let (code, out, err) = ditac(&args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(
            err.contains(&format!("{inside}, which this command replaces")),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    assert!(served.is_file() && copied.is_file());
    assert_eq!(
        std::fs::read_to_string(repo.join("ditac_mlp/config.pbtxt")).unwrap(),
        after
    );
    let _ = std::fs::remove_dir_all(&d);
}
