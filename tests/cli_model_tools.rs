//! The model tools as users run them (the `ditac` binary): build, patch, freeze, lower, inspect,
//! plot; their outputs through ONNX Runtime 1.32 with the plugin (and without it, for lowered
//! models); bad input (one line, exit status 2, no output left, input untouched); external data.
//! Needs `cargo build --release --lib` first (the plugin), like the other plugin tests.

mod support;

use ort::value::Tensor;
use std::path::{Path, PathBuf};
use support::*;

/// Named tolerances.
/// The lowered graph with the plugin's erf is the plugin's arithmetic, operation by operation (its
/// AVX2 kernels included): the same bits.
const LOWER_PLUGIN: f64 = 0.0;
/// With ONNX's Erf: each runtime's erf is a few 1e-7 away from the plugin's.
const LOWER_ONNX_ERF: f64 = 1e-6;

fn run(path: &Path, plugin: bool, shape: &[usize], x: &[f32]) -> Vec<f32> {
    let mut sess = session_from_file(path, plugin);
    let t = Tensor::from_array((shape.to_vec(), x.to_vec())).unwrap();
    let o = sess.run(ort::inputs!["x" => t]).unwrap();
    o["y"].try_extract_tensor::<f32>().unwrap().1.to_vec()
}

fn inputs(n: usize, scale: f32) -> Vec<f32> {
    let mut v: Vec<f32> = (0..n)
        .map(|i| (((i as f32) * 0.618_034).fract() * 2.0 - 1.0) * scale)
        .collect();
    v[0] = f32::NAN;
    v[1] = f32::INFINITY;
    v[2] = f32::NEG_INFINITY;
    v
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// max |a − b| / max(|b|, 1) over finite values; NaN must match NaN.
fn max_rel(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mut m = 0.0f64;
    for (x, y) in a.iter().zip(b) {
        if y.is_nan() || x.is_nan() {
            assert!(x.is_nan() && y.is_nan(), "{x} vs {y}");
            continue;
        }
        if y.is_infinite() {
            assert_eq!(x, y);
            continue;
        }
        m = m.max((*x as f64 - *y as f64).abs() / (*y as f64).abs().max(1.0));
    }
    m
}

const CONV_SPEC: &str = r#"
name = "convnet"
input = [3, 6, 6]
[[layers]]
type = "conv2d"
name = "conv"
out = 4
kernel = 3
padding = 1
[[layers]]
type = "ditac"
name = "act"
a = -2.0
b = 2.0
tess = 8
per_channel = true
[[layers]]
type = "flatten"
[[layers]]
type = "linear"
name = "fc"
out = 6
[[layers]]
type = "ditac"
name = "act_ge"
variant = "ge"
interpolation = "linear"
lut_size = 512
[[layers]]
type = "linear"
name = "fc2"
out = 5
[[layers]]
type = "ditac"
name = "act_leaky"
variant = "leaky"
alpha = 0.1
a = -1.0
b = 1.0
"#;

#[test]
fn build_freeze_lower_round_trip() {
    let d = tmpdir("roundtrip");
    let spec = d.join("net.toml");
    std::fs::write(&spec, CONV_SPEC).unwrap();
    let (full, params) = (d.join("net.onnx"), d.join("net.safetensors"));
    ditac_ok(&[
        "build",
        arg(&spec),
        "--seed",
        "5",
        "--save-params",
        arg(&params),
        "-o",
        arg(&full),
    ]);
    let frozen = d.join("frozen.onnx");
    let out = ditac_ok(&["freeze", arg(&full), "-o", arg(&frozen)]);
    assert!(
        out.contains("act.ditac: DiTACLut, table [4, 2048]"),
        "{out}"
    );
    let lowered = d.join("lowered.onnx");
    ditac_ok(&["lower", arg(&full), "-o", arg(&lowered)]);
    let lowered_erf = d.join("lowered_erf.onnx");
    ditac_ok(&[
        "lower",
        arg(&full),
        "--erf",
        "onnx",
        "-o",
        arg(&lowered_erf),
    ]);
    let lowered_lut = d.join("lowered_lut.onnx");
    ditac_ok(&["lower", arg(&frozen), "-o", arg(&lowered_lut)]);
    // Same weights from the saved file give the same model.
    let again = d.join("again.onnx");
    ditac_ok(&[
        "build",
        arg(&spec),
        "--params",
        arg(&params),
        "-o",
        arg(&again),
    ]);
    assert_eq!(
        std::fs::read(&full).unwrap(),
        std::fs::read(&again).unwrap()
    );

    let shape = [64, 3, 6, 6];
    let x = inputs(shape.iter().product(), 3.0);
    let y = run(&full, true, &shape, &x);
    assert!(y.iter().skip(40).all(|v| v.is_finite()));
    assert!(
        same_bits(&run(&frozen, true, &shape, &x), &y),
        "freeze is bit-identical"
    );
    let yl = run(&lowered, false, &shape, &x);
    assert!(
        max_rel(&yl, &y) <= LOWER_PLUGIN,
        "lower: {}",
        max_rel(&yl, &y)
    );
    assert!(max_rel(&run(&lowered_lut, false, &shape, &x), &y) <= LOWER_PLUGIN);
    let ye = run(&lowered_erf, false, &shape, &x);
    let m = max_rel(&ye, &y);
    assert!(m <= LOWER_ONNX_ERF, "lower --erf onnx: {m}");

    // The lowered model no longer needs (or imports) the custom domain.
    let v: serde_json::Value =
        serde_json::from_str(&ditac_ok(&["inspect", "--json", arg(&lowered)])).unwrap();
    assert_eq!(v["ditac_nodes"].as_array().unwrap().len(), 0);
    assert!(!v["opset_import"].to_string().contains("ai.ditac"));
}

#[test]
fn patch_a_placeholder_equals_the_built_network() {
    let d = tmpdir("patch");
    let with = d.join("with.toml");
    std::fs::write(&with, CONV_SPEC).unwrap();
    // The same network with placeholders where two of the DiTAC layers are.
    let placeholders = CONV_SPEC
        .replace(
            "type = \"ditac\"\nname = \"act\"\na = -2.0\nb = 2.0\ntess = 8\nper_channel = true",
            "type = \"relu\"\nname = \"act\"",
        )
        .replace(
            "type = \"ditac\"\nname = \"act_ge\"\nvariant = \"ge\"\ninterpolation = \"linear\"\nlut_size = 512",
            "type = \"gelu\"\nname = \"act_ge\"",
        );
    assert_eq!(placeholders.matches("ditac").count(), 1);
    let without = d.join("without.toml");
    std::fs::write(&without, placeholders).unwrap();
    let (full, params) = (d.join("full.onnx"), d.join("p.npz"));
    ditac_ok(&[
        "build",
        arg(&with),
        "--seed",
        "9",
        "--save-params",
        arg(&params),
        "-o",
        arg(&full),
    ]);
    let ph = d.join("placeholder.onnx");
    ditac_ok(&[
        "build",
        arg(&without),
        "--params",
        arg(&params),
        "-o",
        arg(&ph),
    ]);
    let before = std::fs::read(&ph).unwrap();
    let patched = d.join("patched.onnx");
    ditac_ok(&[
        "patch",
        arg(&ph),
        "--params",
        arg(&params),
        "-o",
        arg(&patched),
        "--node",
        "act.relu=act.thetas",
        "--a",
        "-2",
        "--b",
        "2",
    ]);
    let patched2 = d.join("patched2.onnx");
    ditac_ok(&[
        "patch",
        arg(&patched),
        "--params",
        arg(&params),
        "-o",
        arg(&patched2),
        "--node",
        "act_ge.gelu=act_ge.thetas",
        "--variant",
        "ge",
        "--interpolation",
        "linear",
        "--lut-size",
        "512",
    ]);
    assert_eq!(
        std::fs::read(&ph).unwrap(),
        before,
        "the input is never modified"
    );
    let shape = [16, 3, 6, 6];
    let x = inputs(shape.iter().product(), 2.5);
    assert!(same_bits(
        &run(&patched2, true, &shape, &x),
        &run(&full, true, &shape, &x)
    ));
    let v: serde_json::Value =
        serde_json::from_str(&ditac_ok(&["inspect", "--json", arg(&patched2)])).unwrap();
    let nodes = v["ditac_nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    assert_eq!(nodes[0]["name"], "act.relu");
    assert_eq!(nodes[0]["theta"]["shape"], serde_json::json!([4, 7]));
    assert_eq!(nodes[0]["attributes"]["tess"], 8, "tess follows from d");
    assert_eq!(nodes[1]["attributes"]["variant"], "ge");
    assert_eq!(
        nodes[1]["theta"]["shape"],
        serde_json::json!([9]),
        "[1, d] is stored [d]"
    );
}

#[test]
fn inspect_text_and_plots() {
    let d = tmpdir("inspect");
    let spec = d.join("net.toml");
    std::fs::write(&spec, CONV_SPEC).unwrap();
    let m = d.join("m.onnx");
    ditac_ok(&["build", arg(&spec), "-o", arg(&m)]);
    let text = ditac_ok(&["inspect", "--all", arg(&m)]);
    assert!(
        text.contains("'2.flatten' Flatten: act.out -> 2.out"),
        "{text}"
    );
    assert!(
        text.contains("opset imports: ai.onnx v20, ai.ditac v1"),
        "{text}"
    );
    assert!(text.contains("3 ai.ditac node(s)"), "{text}");
    assert!(
        text.contains(
            "theta 'act.thetas' shape [4,7] (constant), d = 7, channels 4, table size 2048"
        ),
        "{text}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&ditac_ok(&["inspect", "--json", arg(&m)])).unwrap();
    assert_eq!(
        v["ditac_nodes"][2]["attributes"]["alpha"],
        serde_json::json!(0.1)
    );
    assert_eq!(v["ditac_nodes"][1]["table_size"], 512);
    let plots = d.join("plots");
    ditac_ok(&["plot", arg(&m), "-o", arg(&plots), "--png"]);
    for n in ["act.ditac", "act_ge.ditac", "act_leaky.ditac"] {
        let svg = std::fs::read_to_string(plots.join(format!("{n}.svg"))).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("GELU") && svg.contains("a = ") && svg.contains("<polyline"));
        assert_picture(&plots.join(format!("{n}.png")));
    }
    assert!(std::fs::read_to_string(plots.join("act.ditac.svg"))
        .unwrap()
        .contains("channel 3"));
}

/// Asserts that `path` is a PNG of a plot's size, mostly white, with the first channel's curve
/// colour and dark text in it.
fn assert_picture(path: &Path) {
    let file = std::fs::File::open(path).unwrap();
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap();
    let mut rgb = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut rgb).unwrap();
    assert_eq!(
        (info.width, info.height),
        ditac_tools::plot::activation::SIZE
    );
    let pixels: Vec<&[u8]> = rgb.chunks_exact(3).collect();
    let share = |f: &dyn Fn(&[u8]) -> bool| {
        pixels.iter().filter(|p| f(p)).count() as f64 / pixels.len() as f64
    };
    let white = share(&|p| p == [255, 255, 255]);
    let curve = share(&|p| p == [31, 119, 180]);
    let ink = share(&|p| p.iter().all(|&v| v < 100));
    assert!(
        white > 0.5 && curve > 0.0005 && ink > 0.002,
        "{}: white {white}, curve {curve}, ink {ink}",
        path.display()
    );
}

/// Asserts one error line, exit status 2, the message, and that `out` was not written.
fn fails(args: &[&str], needle: &str, out: &Path) {
    let (code, stdout, err) = ditac(args);
    assert_eq!(code, 2, "ditac {args:?}: {stdout}{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.starts_with("ditac: error: ") && err.contains(needle),
        "{args:?}: {err}"
    );
    assert!(!out.exists(), "{args:?} left {}", out.display());
    let leftovers: Vec<_> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn bad_input_is_one_line_exit_2_and_no_output() {
    let d = tmpdir("bad");
    let spec = d.join("net.toml");
    std::fs::write(&spec, CONV_SPEC).unwrap();
    let (m, p) = (d.join("m.onnx"), d.join("p.npz"));
    ditac_ok(&["build", arg(&spec), "--save-params", arg(&p), "-o", arg(&m)]);
    let m_bytes = std::fs::read(&m).unwrap();
    let text = d.join("notes.txt");
    std::fs::write(&text, "these are not the weights you are looking for\n").unwrap();
    let bad_spec = d.join("bad.toml");
    std::fs::write(&bad_spec, "input = 2\n[[layers]]\ntype = \"swish\"\n").unwrap();
    let out = d.join("out.onnx");
    let o = arg(&out);
    let missing = d.join("missing.onnx");
    for (args, needle) in [
        (vec!["freeze", arg(&missing), "-o", o], "cannot read"),
        (vec!["lower", arg(&text), "-o", o], "is not an ONNX model"),
        (vec!["inspect", arg(&p)], "is not an ONNX model"),
        (vec!["freeze", arg(&spec), "-o", o], "is not an ONNX model"),
        (vec!["build", arg(&bad_spec), "-o", o], "swish"),
        (vec!["build", arg(&missing), "-o", o], "cannot read spec"),
        (
            vec!["build", arg(&spec), "--params", arg(&text), "-o", o],
            "neither a safetensors",
        ),
        (
            vec!["build", arg(&spec), "--params", arg(&missing), "-o", o],
            "cannot read parameters",
        ),
        (
            vec![
                "patch",
                arg(&m),
                "--params",
                arg(&p),
                "-o",
                o,
                "--node",
                "2.flatten=nokey",
            ],
            "no tensor \"nokey\"",
        ),
        (
            vec![
                "patch",
                arg(&m),
                "--params",
                arg(&p),
                "-o",
                o,
                "--node",
                "nonode=act.thetas",
            ],
            "no node named 'nonode'",
        ),
        (
            vec![
                "patch",
                arg(&m),
                "--params",
                arg(&p),
                "-o",
                o,
                "--node",
                "act_ge.ditac=fc.weight",
            ],
            "has 2 inputs",
        ),
        (
            vec![
                "patch",
                arg(&m),
                "--params",
                arg(&p),
                "-o",
                o,
                "--node",
                "flatten=conv.weight",
            ],
            "no node named",
        ),
        (
            vec![
                "patch",
                arg(&m),
                "--params",
                arg(&p),
                "-o",
                o,
                "--node",
                "2.flatten=conv.weight",
            ],
            "expected θ as [d], [1, d] or [C, d]",
        ),
        (
            vec![
                "patch",
                arg(&m),
                "--params",
                arg(&p),
                "-o",
                o,
                "--node",
                "2.flatten=act.thetas",
                "--tess",
                "5",
            ],
            "expects d = 4",
        ),
        (
            vec![
                "patch",
                arg(&m),
                "--params",
                arg(&text),
                "-o",
                o,
                "--node",
                "2.flatten=act.thetas",
            ],
            "neither a safetensors",
        ),
        (
            vec!["freeze", arg(&m), "--tables", arg(&p), "-o", o],
            "names no DiTAC node",
        ),
        (vec!["lower", arg(&m), "--erf", "libm", "-o", o], "--erf"),
        (vec!["freeze", arg(&m), "-o", arg(&m)], "is the input"),
    ] {
        fails(&args, needle, &out);
    }
    let (code, _, err) = ditac(&["freeze", arg(&m), "-o", arg(&d)]);
    assert!(code == 2 && err.contains("is a folder"), "{err}");
    // A missing output folder is created (the one rule of every command; tests/cli_usage.rs).
    let nodir = d.join("no/such/dir/out.onnx");
    let (code, _, err) = ditac(&["freeze", arg(&m), "-o", arg(&nodir)]);
    assert!(code == 0 && nodir.is_file(), "{err}");
    assert_eq!(
        std::fs::read(&m).unwrap(),
        m_bytes,
        "the input is never modified"
    );
}

/// Moves every initializer of `src` into one external data file next to `dst`.
fn externalise(src: &Path, dst: &Path, data: &str) {
    use onnx_protobuf::tensor_proto::DataLocation;
    use onnx_protobuf::{Message, ModelProto, StringStringEntryProto};
    let mut m = ModelProto::parse_from_bytes(&std::fs::read(src).unwrap()).unwrap();
    let mut blob = Vec::new();
    for t in m.graph.as_mut().unwrap().initializer.iter_mut() {
        let raw = std::mem::take(&mut t.raw_data);
        while blob.len() % 64 != 0 {
            blob.push(0);
        }
        let off = blob.len();
        blob.extend_from_slice(&raw);
        t.data_location = DataLocation::EXTERNAL.into();
        for (k, v) in [
            ("location", data.to_string()),
            ("offset", off.to_string()),
            ("length", raw.len().to_string()),
        ] {
            let mut e = StringStringEntryProto::new();
            e.key = k.into();
            e.value = v;
            t.external_data.push(e);
        }
    }
    std::fs::write(dst.parent().unwrap().join(data), blob).unwrap();
    ditac_tools::transform::fix_zero_scalars(&mut m);
    std::fs::write(dst, m.write_to_bytes().unwrap()).unwrap();
}

#[test]
fn external_data_is_read_in_or_kept_external_and_follows_the_output() {
    let d = tmpdir("external");
    let spec = d.join("net.toml");
    std::fs::write(&spec, CONV_SPEC).unwrap();
    let (inline, p) = (d.join("inline.onnx"), d.join("p.npz"));
    ditac_ok(&[
        "build",
        arg(&spec),
        "--save-params",
        arg(&p),
        "-o",
        arg(&inline),
    ]);
    let src = d.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let ext = src.join("model.onnx");
    externalise(&inline, &ext, "weights.bin");
    let v: serde_json::Value =
        serde_json::from_str(&ditac_ok(&["inspect", "--json", arg(&ext)])).unwrap();
    assert_eq!(
        v["graph"]["external_data"],
        serde_json::json!(["weights.bin"])
    );
    assert_eq!(v["ditac_nodes"][0]["theta"]["external"], true);
    let out = d.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let shape = [8, 3, 6, 6];
    let x = inputs(shape.iter().product(), 2.0);
    let want = run(&inline, true, &shape, &x);
    assert!(same_bits(&run(&ext, true, &shape, &x), &want));
    for (cmd, name, plugin) in [("freeze", "f.onnx", true), ("lower", "l.onnx", false)] {
        let o = out.join(name);
        ditac_ok(&[cmd, arg(&ext), "--keep-external-data", "-o", arg(&o)]);
        let got = run(&o, plugin, &shape, &x);
        if plugin {
            assert!(same_bits(&got, &want), "{cmd}");
        } else {
            assert!(max_rel(&got, &want) <= LOWER_PLUGIN, "{cmd}");
        }
        // The weights stayed external: the model file is small, the data file is next to it.
        let v: serde_json::Value =
            serde_json::from_str(&ditac_ok(&["inspect", "--json", arg(&o)])).unwrap();
        assert_eq!(
            v["graph"]["external_data"],
            serde_json::json!(["weights.bin"]),
            "{cmd}"
        );
    }
    assert_eq!(
        std::fs::read(out.join("weights.bin")).unwrap(),
        std::fs::read(src.join("weights.bin")).unwrap()
    );
    // Into the same folder: nothing to copy.
    let same = src.join("frozen.onnx");
    ditac_ok(&[
        "freeze",
        arg(&ext),
        "--keep-external-data",
        "-o",
        arg(&same),
    ]);
    assert!(same_bits(&run(&same, true, &shape, &x), &want));
    // By default a model that fits in one file is one file: it does not read the input's data
    // file beside it (which a re-export would overwrite).
    for (cmd, extra) in [
        ("freeze", vec![]),
        (
            "patch",
            vec!["--params", arg(&p), "--node", "2.flatten=act.thetas"],
        ),
    ] {
        let o = src.join(format!("{cmd}-inline.onnx"));
        let mut a = vec![cmd, arg(&ext)];
        a.extend(extra);
        a.extend(["-o", arg(&o)]);
        ditac_ok(&a);
        let v: serde_json::Value =
            serde_json::from_str(&ditac_ok(&["inspect", "--json", arg(&o)])).unwrap();
        assert_eq!(v["graph"]["external_data"], serde_json::json!([]), "{cmd}");
        let moved = d.join(format!("{cmd}-alone.onnx"));
        std::fs::rename(&o, &moved).unwrap();
        if cmd == "freeze" {
            assert!(same_bits(&run(&moved, true, &shape, &x), &want));
        } else {
            // (The patched Flatten makes no runnable network; its weights are all there.)
            let v: serde_json::Value =
                serde_json::from_str(&ditac_ok(&["inspect", "--json", arg(&moved)])).unwrap();
            assert_eq!(v["ditac_nodes"][0]["theta"]["external"], false);
        }
    }
    // A different file of that name next to the output is not overwritten.
    let other = d.join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("weights.bin"), b"something else").unwrap();
    let o = other.join("f.onnx");
    fails(
        &["freeze", arg(&ext), "--keep-external-data", "-o", arg(&o)],
        "not overwriting",
        &o,
    );
}

#[test]
fn example_models_are_what_the_tools_make() {
    let d = tmpdir("examples");
    ditac_ok(&[
        "example-models",
        "-o",
        arg(&d),
        "--spec",
        arg(&repo_root().join("models/ditac_mlp.toml")),
    ]);
    for f in [
        "ditac_mlp.onnx",
        "ditac_mlp_lut.onnx",
        "ditac_mlp_lowered.onnx",
        "ditac_mlp.npz",
    ] {
        assert_eq!(
            std::fs::read(d.join(f)).unwrap(),
            std::fs::read(repo_root().join("models").join(f)).unwrap(),
            "models/{f} is out of date: run tools/make-models.sh"
        );
    }
}

const TESS6_SPEC: &str = r#"
input = 3
[[layers]]
type = "linear"
name = "fc"
out = 5
[[layers]]
type = "LAYER"
name = "act"
a = -3.0
b = 3.0
tess = TESS
[[layers]]
type = "linear"
name = "head"
out = 2
"#;

fn tess_spec(d: &Path, name: &str, layer: &str, tess: usize, basis: Option<&str>) -> PathBuf {
    let mut text = TESS6_SPEC
        .replace("LAYER", layer)
        .replace("TESS", &tess.to_string());
    if layer != "ditac" {
        text = text
            .replace("a = -3.0\nb = 3.0\n", "")
            .replace(&format!("tess = {tess}\n"), "");
    }
    if let Some(b) = basis {
        text = text.replace("b = 3.0\n", &format!("b = 3.0\nbasis = \"{b}\"\n"));
    }
    let p = d.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The reference's `qr` B is machine-dependent at tess 6 (zero boundary) and tess ≥ 20: trained θ
/// there is refused with `qr` (the error says why and how to pass B), accepted on request, and
/// carried with its B from the parameter file by `build` (spec `basis = "explicit"`) and `patch`
/// (`NAME=KEY:B_KEY`), which agree.
#[test]
fn machine_dependent_qr_needs_the_training_runs_basis() {
    use ditac_tools::params::{Params, Tensor as PTensor};
    let d = tmpdir("qr-machine");
    let qr = tess_spec(&d, "qr.toml", "ditac", 6, None);
    let p = d.join("p.npz");
    // Fresh weights are this project's own: no question of another machine's B.
    ditac_ok(&[
        "build",
        arg(&qr),
        "--seed",
        "4",
        "--save-params",
        arg(&p),
        "-o",
        arg(&d.join("fresh.onnx")),
    ]);
    let o = d.join("o.onnx");
    let (code, _, err) = ditac(&["build", arg(&qr), "--params", arg(&p), "-o", arg(&o)]);
    assert_eq!(code, 2, "{err}");
    for needle in [
        "tess 6 with a zero boundary is machine-dependent",
        "T.params.B",
        "[12, 5]",
        "basis = \"explicit\"",
        "\"act.B\"",
        "--allow-machine-dependent-qr",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    assert!(!o.exists());
    ditac_ok(&[
        "build",
        arg(&qr),
        "--params",
        arg(&p),
        "--allow-machine-dependent-qr",
        "-o",
        arg(&o),
    ]);
    let t20 = tess_spec(&d, "t20.toml", "ditac", 20, None);
    let p20 = d.join("p20.npz");
    ditac_ok(&[
        "build",
        arg(&t20),
        "--save-params",
        arg(&p20),
        "-o",
        arg(&o),
    ]);
    fails(
        &[
            "build",
            arg(&t20),
            "--params",
            arg(&p20),
            "-o",
            arg(&d.join("x.onnx")),
        ],
        "tess 20 with a zero boundary is machine-dependent",
        &d.join("x.onnx"),
    );

    // The training run's B: the same null space in another frame (here: our qr B with its columns
    // permuted and one negated), saved with θ.
    let b = ditac::basis::build(6, true, ditac::BasisKind::Qr).unwrap();
    let (rows, cols) = (b.rows, b.cols);
    let mut other = vec![0f32; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            let v = b.at(r, (c + 1) % cols) as f32;
            other[r * cols + c] = if c == 0 { -v } else { v };
        }
    }
    let mut params = Params::load(&p).unwrap();
    params.insert("act.B", PTensor::new(vec![rows, cols], other));
    let pb = d.join("pb.npz");
    params.save_npz(&pb).unwrap();
    let explicit = tess_spec(&d, "explicit.toml", "ditac", 6, Some("explicit"));
    let built = d.join("built.onnx");
    ditac_ok(&[
        "build",
        arg(&explicit),
        "--params",
        arg(&pb),
        "-o",
        arg(&built),
    ]);
    let (code, _, err) = ditac(&[
        "build",
        arg(&explicit),
        "--params",
        arg(&p),
        "-o",
        arg(&d.join("y.onnx")),
    ]);
    assert!(code == 2 && err.contains("no tensor \"act.B\""), "{err}");
    let (code, _, err) = ditac(&[
        "build",
        arg(&explicit),
        "--seed",
        "1",
        "-o",
        arg(&d.join("y.onnx")),
    ]);
    assert!(
        code == 2 && err.contains("takes B from the parameters (tensor \"act.B\")"),
        "{err}"
    );

    // patch: the same through a placeholder, B named per node.
    let gelu = tess_spec(&d, "gelu.toml", "gelu", 6, None);
    let ph = d.join("ph.onnx");
    ditac_ok(&["build", arg(&gelu), "--params", arg(&pb), "-o", arg(&ph)]);
    let patched = d.join("patched.onnx");
    fails(
        &[
            "patch",
            arg(&ph),
            "--params",
            arg(&pb),
            "--node",
            "act.gelu=act.thetas",
            "--a",
            "-3",
            "--b",
            "3",
            "-o",
            arg(&patched),
        ],
        "tess 6 with a zero boundary is machine-dependent",
        &patched,
    );
    let out = ditac_ok(&[
        "patch",
        arg(&ph),
        "--params",
        arg(&pb),
        "--node",
        "act.gelu=act.thetas:act.B",
        "--a",
        "-3",
        "--b",
        "3",
        "-o",
        arg(&patched),
    ]);
    assert!(
        out.contains("act.gelu: DiTAC with θ = \"act.thetas\": tess 6, d 5, 1 θ row (shared by every channel), B = \"act.B\""),
        "{out}"
    );
    let shape = [32, 3];
    let x = inputs(96, 3.0);
    let want = run(&built, true, &shape, &x);
    assert!(same_bits(&run(&patched, true, &shape, &x), &want));
    // With our qr B instead (what an opt-in would give) the outputs differ.
    let ours = d.join("ours.onnx");
    ditac_ok(&[
        "patch",
        arg(&ph),
        "--params",
        arg(&pb),
        "--node",
        "act.gelu=act.thetas",
        "--a",
        "-3",
        "--b",
        "3",
        "--allow-machine-dependent-qr",
        "-o",
        arg(&ours),
    ]);
    assert!(max_rel(&run(&ours, true, &shape, &x), &want) > 1e-3);
}
