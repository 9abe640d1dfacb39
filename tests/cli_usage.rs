//! The `ditac` command as a user meets it: usage errors that name what is wrong, negative numbers
//! as values, help that shows each option's default under headings, one rule for output folders
//! (created when missing, every output checked before the work starts), errors on one line, and
//! the generated reference docs/cli.md kept equal to the program's own definitions.

mod support;

use std::path::Path;
use support::*;

/// The one line of a failed command's standard error (asserting there is exactly one).
#[track_caller]
fn one_error_line(args: &[&str]) -> String {
    let (code, _, err) = ditac(args);
    assert_eq!(code, 2, "ditac {args:?}: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "ditac {args:?} printed {} lines:\n{err}",
        lines.len()
    );
    assert!(lines[0].starts_with("ditac: error: "), "{err}");
    lines[0].to_string()
}

#[test]
fn a_usage_error_names_what_is_missing_or_unknown_on_one_line() {
    let e = one_error_line(&["build"]);
    assert!(
        e.contains("the following required arguments were not provided: --out <OUT>, <SPEC>"),
        "{e}"
    );
    assert!(
        e.contains("(usage: ditac build --out <OUT> <SPEC>; see --help)"),
        "{e}"
    );

    let e = one_error_line(&["build", "net.toml", "-o", "x.onnx", "--sed", "3"]);
    assert!(e.contains("unexpected argument '--sed' found"), "{e}");
    assert!(
        e.contains("tip: a similar argument exists: '--seed'"),
        "{e}"
    );

    let e = one_error_line(&["buidl"]);
    assert!(e.contains("unrecognized subcommand 'buidl'"), "{e}");
    assert!(
        e.contains("tip: a similar subcommand exists: 'build'"),
        "{e}"
    );

    let e = one_error_line(&["triton", "m.onnx", "-o", "r", "--native-device", "tpu"]);
    assert!(
        e.contains("invalid value 'tpu' for '--native-device"),
        "{e}"
    );
    assert!(e.contains("[possible values: auto, cpu, gpu]"), "{e}");
}

#[test]
fn negative_numbers_are_values() {
    // A list that starts with a minus: the interval itself reaches the workload.
    let plugin = plugin_path();
    let (code, out, err) = ditac(&[
        "bench",
        "--plugin",
        arg(&plugin),
        "--interval",
        "-5,5",
        "--size",
        "4K",
        "--repeats",
        "1",
        "--threads",
        "1",
        "--ops",
        "gelu,nearest",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("[a, b] = [-5, 5]"), "{out}");
    // A single negative number goes to the option's own check, not to clap as a flag.
    let e = one_error_line(&[
        "lower",
        "models/ditac_mlp.onnx",
        "--exact-lut",
        "-5",
        "-o",
        "x.onnx",
    ]);
    assert!(e.contains("--exact-lut -5: expected"), "{e}");
    let e = one_error_line(&[
        "build",
        "models/ditac_mlp.toml",
        "--seed",
        "-1",
        "-o",
        "x.onnx",
    ]);
    assert!(e.contains("invalid value '-1' for '--seed <SEED>'"), "{e}");
    // eval's attribute flags take negative values too.
    let out = ditac_with_stdin(
        &[
            "eval", "--theta", "0,0,0", "--tess", "4", "--a", "-3", "--b", "-1",
        ],
        "-2",
    );
    assert_eq!(out.0, 0, "{}", out.2);
}

#[test]
fn help_shows_every_default_under_headings() {
    for cmd in ["patch", "eval"] {
        let out = ditac_ok(&[cmd, "--help"]);
        assert!(out.contains("\nAttributes:\n"), "{cmd} --help:\n{out}");
        for (flag, default) in [
            ("--a <A>", "(default: -0.5)"),
            ("--b <B>", "(default: 2)"),
            ("--zero-boundary <ZERO_BOUNDARY>", "(default: 1)"),
            ("--alpha <ALPHA>", "(default: 0.01)"),
        ] {
            let line = out
                .lines()
                .find(|l| l.trim_start().starts_with(flag))
                .unwrap_or_else(|| panic!("{cmd} --help has no {flag}:\n{out}"));
            assert!(line.contains(default), "{cmd} --help: {line}");
        }
    }
    let patch = ditac_ok(&["patch", "--help"]);
    assert!(
        patch.contains("--channel-axis <CHANNEL_AXIS>") && patch.contains("(default: 1)"),
        "{patch}"
    );
    assert!(patch.contains("--tess <TESS>"), "{patch}");
    let bench = ditac_ok(&["bench", "--help"]);
    assert!(
        bench.contains("\nWorkload:\n") && bench.contains("[default: -0.5,2]"),
        "{bench}"
    );
    let train = ditac_ok(&["train", "--help"]);
    assert!(train.contains("\nTraining graph:\n"), "{train}");

    let top = ditac_ok(&["--help"]);
    for cmd in ["train-artifacts", "train "] {
        let line = top
            .lines()
            .find(|l| l.trim_start().starts_with(cmd))
            .unwrap();
        assert!(line.contains("a spec or an ONNX model"), "{line}");
    }
    let data = ditac_ok(&["example-data", "--help"]);
    for kind in ["regression", "paper-regression", "gmm", "digits"] {
        assert!(data.lines().next().unwrap().contains(kind), "{data}");
    }
}

#[test]
fn every_command_creates_a_missing_output_folder() {
    let d = tmpdir("cli-usage-folders");
    let m = repo_root().join("models/ditac_mlp.onnx");
    let spec = repo_root().join("models/regression/spec.toml");
    let data = repo_root().join("models/regression/train.npz");
    let plugin = plugin_path();
    let p = |rel: &str| d.join(rel).to_str().unwrap().to_string();
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec![
                "build".into(),
                arg(&repo_root().join("models/ditac_mlp.toml")).into(),
                "-o".into(),
                p("build/a/net.onnx"),
                "--save-params".into(),
                p("build/b/w.npz"),
            ],
            p("build/b/w.npz"),
        ),
        (
            vec![
                "freeze".into(),
                arg(&m).into(),
                "-o".into(),
                p("freeze/a/m.onnx"),
            ],
            p("freeze/a/m.onnx"),
        ),
        (
            vec![
                "lower".into(),
                arg(&m).into(),
                "-o".into(),
                p("lower/a/m.onnx"),
            ],
            p("lower/a/m.onnx"),
        ),
        (
            vec!["plot".into(), arg(&m).into(), "-o".into(), p("plot/a")],
            p("plot/a/act1.ditac.svg"),
        ),
        (
            vec![
                "example-data".into(),
                "gmm".into(),
                "-o".into(),
                p("data/a"),
                "--train".into(),
                "10".into(),
                "--test".into(),
                "10".into(),
            ],
            p("data/a/test.npz"),
        ),
        (
            vec![
                "train-artifacts".into(),
                arg(&spec).into(),
                "-o".into(),
                p("art/a"),
            ],
            p("art/a/checkpoint"),
        ),
        (
            vec![
                "train".into(),
                arg(&spec).into(),
                "--data".into(),
                arg(&data).into(),
                "--steps".into(),
                "3".into(),
                "--quiet".into(),
                "--plugin".into(),
                arg(&plugin).into(),
                "-o".into(),
                p("train/a/m.onnx"),
                "--loss-log".into(),
                p("train/b/log.json"),
            ],
            p("train/b/log.json"),
        ),
        (
            vec![
                "triton".into(),
                arg(&m).into(),
                "--plugin".into(),
                arg(&plugin).into(),
                "-o".into(),
                p("triton/a"),
            ],
            p("triton/a/ditac_mlp/config.pbtxt"),
        ),
    ];
    for (args, expect) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _, err) = ditac(&args);
        assert_eq!(code, 0, "ditac {args:?}: {err}");
        assert!(
            Path::new(&expect).is_file(),
            "ditac {args:?} did not write {expect}"
        );
    }
    // patch: a GELU placeholder named as the example's first DiTAC layer, θ from the parameters
    // `build --save-params` wrote above.
    let spec = d.join("gelu.toml");
    std::fs::write(
        &spec,
        "input = 2\n[[layers]]\ntype = \"linear\"\nname = \"fc1\"\nout = 4\n\
         [[layers]]\ntype = \"gelu\"\nname = \"act1\"\n",
    )
    .unwrap();
    let gelu = d.join("gelu.onnx");
    ditac_ok(&["build", arg(&spec), "-o", arg(&gelu)]);
    let out = d.join("patch/a/m.onnx");
    let params = p("build/b/w.npz");
    ditac_ok(&[
        "patch",
        arg(&gelu),
        "--params",
        &params,
        "--node",
        "act1.gelu=act1.thetas",
        "-o",
        arg(&out),
    ]);
    assert!(out.is_file());
}

#[test]
fn outputs_are_checked_before_the_work_starts() {
    let d = tmpdir("cli-usage-early");
    let blocker = d.join("file");
    std::fs::write(&blocker, b"not a folder").unwrap();
    let spec = repo_root().join("models/regression/spec.toml");
    let data = repo_root().join("models/regression/train.npz");
    let plugin = plugin_path();
    let out = blocker.join("x.onnx");
    let log = blocker.join("log.json");
    // A million steps would take minutes: the bad output must stop it before the first.
    for (o, l) in [(&out, None), (&d.join("ok.onnx"), Some(&log))] {
        let mut args = vec![
            "train",
            arg(&spec),
            "--data",
            arg(&data),
            "--steps",
            "1000000",
            "--plugin",
            arg(&plugin),
            "-o",
            arg(o),
        ];
        if let Some(l) = l {
            args.extend(["--loss-log", arg(l)]);
        }
        let t = std::time::Instant::now();
        let (code, stdout, err) = ditac(&args);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("exists and is not a folder"), "{err}");
        assert!(!stdout.contains("engine:"), "training started: {stdout}");
        assert!(t.elapsed().as_secs() < 30, "took {:?}", t.elapsed());
    }
    let e = one_error_line(&["train-artifacts", arg(&spec), "-o", arg(&blocker)]);
    assert!(e.contains("exists and is not a folder"), "{e}");
}

#[test]
fn a_diverging_run_is_one_line() {
    let d = tmpdir("cli-usage-diverge");
    let spec = repo_root().join("models/regression/spec.toml");
    let data = repo_root().join("models/regression/train.npz");
    let plugin = plugin_path();
    let out = d.join("m.onnx");
    let e = one_error_line(&[
        "train",
        arg(&spec),
        "--data",
        arg(&data),
        "--steps",
        "50",
        "--lr",
        "1e6",
        "--quiet",
        "--plugin",
        arg(&plugin),
        "-o",
        arg(&out),
    ]);
    assert!(e.contains("nothing was written to"), "{e}");
    assert!(e.contains("training failed at step"), "{e}");
    assert!(
        !e.contains('\u{1b}'),
        "terminal colours in the message: {e}"
    );
    assert!(!out.exists());
}

#[test]
fn the_cli_reference_is_up_to_date() {
    let generated = ditac_ok(&["help-markdown"]);
    let path = repo_root().join("docs/cli.md");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        generated == committed,
        "docs/cli.md is out of date with the command's definitions: run \
         `target/release/ditac help-markdown > docs/cli.md` and commit it"
    );
}
