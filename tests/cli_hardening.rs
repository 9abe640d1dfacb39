//! The `ditac` binary against hostile input: outputs that are inputs, links, FIFOs or device nodes;
//! external data that would be written outside the output's folder; tensor dims that are negative
//! or whose product overflows; θ naming nothing; sizes beyond the memory budget. Every case: exit
//! status 2, one line naming the problem, no panic, no abort, nothing written.

mod support;

use onnx_protobuf::{Message, ModelProto};
use std::path::{Path, PathBuf};
use std::process::Command;
use support::{arg, ditac_env, tmpdir};

/// Exit status 2, one line with `needle`, no backtrace.
fn refused(args: &[&str], env: &[(&str, &str)], needle: &str) {
    let (code, out, err) = ditac_env(args, env);
    assert_eq!(code, 2, "ditac {args:?}: {out}{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("ditac: error: "), "{err}");
    assert!(
        err.contains(needle),
        "ditac {args:?}: {err} lacks {needle:?}"
    );
}

const MLP: &str = "name = \"mlp\"\ninput = 2\n\
[[layers]]\ntype = \"linear\"\nname = \"fc1\"\nout = 16\n\
[[layers]]\ntype = \"ditac\"\nname = \"act\"\na = -3.0\nb = 3.0\ntess = 10\nper_channel = true\n\
[[layers]]\ntype = \"linear\"\nname = \"fc2\"\nout = 1\n";

/// A built MLP (θ per channel, [16, 9]) and its parameters.
fn mlp(d: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (spec, m, p) = (d.join("net.toml"), d.join("m.onnx"), d.join("p.npz"));
    std::fs::write(&spec, MLP).unwrap();
    let (code, _, err) = ditac_env(
        &["build", arg(&spec), "--save-params", arg(&p), "-o", arg(&m)],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    (spec, m, p)
}

fn edit_model(src: &Path, dst: &Path, f: impl FnOnce(&mut ModelProto)) {
    let mut m = ModelProto::parse_from_bytes(&std::fs::read(src).unwrap()).unwrap();
    f(&mut m);
    ditac_tools::transform::fix_zero_scalars(&mut m);
    std::fs::write(dst, m.write_to_bytes().unwrap()).unwrap();
}

fn theta_of(m: &mut ModelProto) -> &mut onnx_protobuf::TensorProto {
    m.graph
        .as_mut()
        .unwrap()
        .initializer
        .iter_mut()
        .find(|t| t.name == "act.thetas")
        .unwrap()
}

fn fc1_weight(m: &mut ModelProto) -> &mut onnx_protobuf::TensorProto {
    m.graph
        .as_mut()
        .unwrap()
        .initializer
        .iter_mut()
        .find(|t| t.name.starts_with("fc1") && t.dims.len() == 2)
        .unwrap()
}

#[test]
fn outputs_are_never_inputs_links_fifos_or_devices() {
    let d = tmpdir("outputs");
    let (spec, m, p) = mlp(&d);
    let (spec_bytes, m_bytes, p_bytes) = (
        std::fs::read(&spec).unwrap(),
        std::fs::read(&m).unwrap(),
        std::fs::read(&p).unwrap(),
    );
    let tables = d.join("tables.npz");
    std::fs::copy(&p, &tables).unwrap();
    // Same files under other names: a hard link and a symbolic link.
    let hard = d.join("hard.npz");
    std::fs::hard_link(&p, &hard).unwrap();
    let link = d.join("link.onnx");
    std::os::unix::fs::symlink(d.join("elsewhere.onnx"), &link).unwrap();
    let fifo = d.join("fifo.onnx");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for (args, needle) in [
        (
            vec!["build", arg(&spec), "--params", arg(&p), "-o", arg(&p)],
            "is the input",
        ),
        (vec!["build", arg(&spec), "-o", arg(&spec)], "is the input"),
        (
            vec!["build", arg(&spec), "--params", arg(&p), "-o", arg(&hard)],
            "is the input",
        ),
        (vec!["lower", arg(&m), "-o", arg(&m)], "is the input"),
        (
            vec![
                "freeze",
                arg(&m),
                "--tables",
                arg(&tables),
                "-o",
                arg(&tables),
            ],
            "is the input",
        ),
        (
            vec!["freeze", arg(&m), "-o", arg(&link)],
            "is not a regular file (a symbolic link)",
        ),
        (
            vec!["lower", arg(&m), "-o", arg(&fifo)],
            "is not a regular file (a FIFO)",
        ),
        (
            vec!["freeze", arg(&m), "-o", "/dev/null"],
            "is not a regular file (a device node)",
        ),
        (
            vec![
                "build",
                arg(&spec),
                "-o",
                arg(&m),
                "--save-params",
                "/dev/null",
            ],
            "is not a regular file (a device node)",
        ),
    ] {
        refused(&args, &[], needle);
    }
    assert_eq!(std::fs::read(&spec).unwrap(), spec_bytes);
    assert_eq!(std::fs::read(&m).unwrap(), m_bytes);
    assert_eq!(std::fs::read(&p).unwrap(), p_bytes);
    assert!(!d.join("elsewhere.onnx").exists(), "the link was followed");
    let fifo_type = std::fs::symlink_metadata(&fifo).unwrap().file_type();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&fifo_type));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn external_data_is_never_written_outside_the_output_folder() {
    use onnx_protobuf::tensor_proto::DataLocation;
    use onnx_protobuf::StringStringEntryProto;
    let d = tmpdir("escape");
    let (_, m, _) = mlp(&d);
    let src_dir = d.join("in");
    std::fs::create_dir_all(&src_dir).unwrap();
    // fc1's weight (kept by lower) stored in d/w.bin, named from d/in/ as "../w.bin".
    let raw = {
        let mut mm = ModelProto::parse_from_bytes(&std::fs::read(&m).unwrap()).unwrap();
        std::mem::take(&mut fc1_weight(&mut mm).raw_data)
    };
    std::fs::write(d.join("w.bin"), &raw).unwrap();
    let src = src_dir.join("m.onnx");
    edit_model(&m, &src, |mm| {
        let t = fc1_weight(mm);
        t.raw_data.clear();
        t.data_location = DataLocation::EXTERNAL.into();
        let mut e = StringStringEntryProto::new();
        e.key = "location".into();
        e.value = "../w.bin".into();
        t.external_data.push(e);
    });
    let out_dir = d.join("out").join("sub");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join("lowered.onnx");
    // Kept external (as larger models always are), the data file would have to follow the output
    // through `..`: refused.
    refused(
        &["lower", arg(&src), "--keep-external-data", "-o", arg(&out)],
        &[],
        "external data location \"../w.bin\" is not inside the output's folder",
    );
    assert!(!out.exists());
    assert!(!d.join("out").join("w.bin").exists(), "written outside");
    // By default a model that fits in one file reads its external data in: nothing but the output
    // is written.
    let (code, _, err) = ditac_env(&["lower", arg(&src), "-o", arg(&out)], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.exists());
    assert!(!d.join("out").join("w.bin").exists(), "written outside");
    assert_eq!(
        std::fs::read_dir(&out_dir).unwrap().count(),
        1,
        "only the output"
    );
    let _ = std::fs::remove_dir_all(&d);
}

/// A named edit of the model and the message it must give.
type Case = (&'static str, Box<dyn Fn(&mut ModelProto)>, &'static str);

#[test]
fn bad_theta_dims_and_names_are_refused_not_panicked() {
    let d = tmpdir("dims");
    let (_, m, _) = mlp(&d);
    let out = d.join("out.onnx");
    let cases: Vec<Case> = vec![
        (
            "wrap",
            Box::new(|mm| theta_of(mm).dims = vec![1 << 62, 4]),
            "their product overflows",
        ),
        (
            "wrap-zero",
            Box::new(|mm| theta_of(mm).dims = vec![1 << 62, 8]),
            "their product overflows",
        ),
        (
            "negative",
            Box::new(|mm| theta_of(mm).dims = vec![-16, -9]),
            "expected sizes ≥ 0",
        ),
        (
            "unnamed",
            Box::new(|mm| {
                let g = mm.graph.as_mut().unwrap();
                let n = g.node.iter_mut().find(|n| n.op_type == "DiTAC").unwrap();
                n.input[1] = "no.such.tensor".into();
            }),
            "names \"no.such.tensor\", which is no initializer, graph input or node output",
        ),
        (
            "zero-rows",
            Box::new(|mm| {
                let t = theta_of(mm);
                t.dims = vec![0, 9];
                t.raw_data.clear();
            }),
            "input 'theta' has shape [0, 9]: expected [d] or [C, d] with d = 9 with C ≥ 1",
        ),
        (
            "no-output",
            Box::new(|mm| {
                let g = mm.graph.as_mut().unwrap();
                let n = g.node.iter_mut().find(|n| n.op_type == "DiTAC").unwrap();
                n.output.clear();
                n.name.clear();
            }),
            "output 'Y' is missing",
        ),
    ];
    for (name, f, needle) in cases {
        let bad = d.join(format!("{name}.onnx"));
        edit_model(&m, &bad, f);
        for cmd in ["freeze", "lower"] {
            refused(&[cmd, arg(&bad), "-o", arg(&out)], &[], needle);
            assert!(!out.exists(), "{cmd} {name} wrote its output");
        }
        refused(
            &["plot", arg(&bad), "-o", arg(&d.join("plots"))],
            &[],
            needle,
        );
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn sizes_beyond_the_memory_budget_are_refused_with_their_sizes() {
    let d = tmpdir("budget");
    let (_, m, _) = mlp(&d);
    let out = d.join("out.onnx");
    // A spec whose weights alone would be 4 GB.
    let huge = d.join("huge.toml");
    std::fs::write(
        &huge,
        "input = 2\n[[layers]]\ntype = \"linear\"\nout = 1000000000\n",
    )
    .unwrap();
    refused(
        &["build", arg(&huge), "-o", arg(&out)],
        &[],
        "spec: 3000000000 parameters (float32): 12000000000 bytes needed, above the memory budget of 1073741824 bytes",
    );
    // Per-channel θ [16, 9] with lut_size 2^24: 16 tables of 2^24 nodes (4 GiB).
    let big_lut = d.join("lut.onnx");
    edit_model(&m, &big_lut, |mm| {
        let g = mm.graph.as_mut().unwrap();
        let n = g.node.iter_mut().find(|n| n.op_type == "DiTAC").unwrap();
        n.attribute
            .iter_mut()
            .find(|a| a.name == "lut_size")
            .unwrap()
            .i = 1 << 24;
    });
    for cmd in ["freeze", "lower"] {
        refused(
            &[cmd, arg(&big_lut), "-o", arg(&out)],
            &[],
            "node 'act.ditac': input 'theta' of shape [16, 9]: 16 warp tables of 16777216 nodes: 8589934592 bytes needed, above the memory budget of 1073741824 bytes",
        );
    }
    // The budget follows --max-bytes, then DITAC_MAX_BYTES.
    refused(
        &["freeze", arg(&m), "-o", arg(&out), "--max-bytes", "64K"],
        &[],
        "above the memory budget of 65536 bytes",
    );
    refused(
        &["freeze", arg(&m), "-o", arg(&out)],
        &[("DITAC_MAX_BYTES", "100000")],
        "above the memory budget of 100000 bytes",
    );
    refused(
        &["freeze", arg(&m), "-o", arg(&out), "--max-bytes", "lots"],
        &[],
        "invalid value 'lots' for '--max-bytes",
    );
    // `eval` with the DiTACGrad sizes: tess 1024, 2^24 nodes, gradients (68 GB).
    let theta = vec!["0"; 1023].join(",");
    refused(
        &["eval", "--theta", &theta, "--tess", "1024", "--lut-size", "16777216", "--grad"],
        &[],
        "a warp table of 16777216 nodes with gradients: 69122129920 bytes needed, above the memory budget",
    );
    assert!(!out.exists());
    // Within the budget it works.
    let (code, _, err) = ditac_env(
        &["freeze", arg(&m), "-o", arg(&out), "--max-bytes", "1G"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let _ = std::fs::remove_dir_all(&d);
}
