//! End-to-end tests of the plugin through the real shared library in ONNX Runtime 1.32 (the
//! `ort` crate, load-dynamic). Needs `cargo build --release --lib` first (see ops/README.md).

mod support;

use ditac::core::{basis, Activation, Attrs, BasisKind};
use ditac_tools::model::{Attr, ElemType, ModelBuilder, DITAC_DOMAIN};
use half::f16;
use ort::value::Tensor;
use support::*;

#[test]
fn ditac_nearest_matches_oracle() {
    for o in cases() {
        let name = &o.name;
        let mut s = session(&explicit_model(&o, "DiTAC", 2048).bytes()).unwrap();
        let y = run_f32(&mut s, &o.x, &[], "Y").unwrap();
        assert_close(
            &format!("{name} act_lut"),
            &y,
            &o.points_f32("act_lut"),
            Tol::table(o.a, o.b),
            Some(&o.stable()),
        );
    }
}

#[test]
fn ditac_exact_matches_oracle() {
    for o in cases() {
        let name = &o.name;
        let mut s = session(&explicit_model(&o, "DiTAC", 0).bytes()).unwrap();
        let y = run_f32(&mut s, &o.x, &[], "Y").unwrap();
        assert_close(
            &format!("{name} act_exact"),
            &y,
            &o.points_f32("act_exact"),
            Tol::exact(o.a, o.b),
            None,
        );
    }
}

#[test]
fn ditac_qr_basis_matches_oracle() {
    for name in ["t4_m3_3", "t10_m3_3"] {
        let o = case(name);
        let m = OpModel::new("DiTAC", &o.theta, oracle_attrs(&o, "qr", 2048));
        let mut s = session(&m.bytes()).unwrap();
        let y = run_f32(&mut s, &o.x, &[], "Y").unwrap();
        assert_close(
            &format!("{name} qr act_lut"),
            &y,
            &o.points_f32("act_lut"),
            Tol::table(o.a, o.b),
            Some(&o.stable()),
        );
    }
}

fn lut_attrs(o: &Case) -> Vec<(&'static str, Attr)> {
    vec![("a", Attr::Float(o.a)), ("b", Attr::Float(o.b))]
}

#[test]
fn lut_with_oracle_table_matches() {
    for o in cases() {
        let name = &o.name;
        let m = OpModel::new("DiTACLut", &o.table(), lut_attrs(&o));
        let mut s = session(&m.bytes()).unwrap();
        let y = run_f32(&mut s, &o.x, &[], "Y").unwrap();
        assert_close(
            &format!("{name} lut"),
            &y,
            &o.points_f32("act_lut"),
            Tol::table(o.a, o.b),
            Some(&o.stable()),
        );
    }
}

#[test]
fn lut_with_ditac_table_is_bit_identical() {
    for o in cases() {
        let name = &o.name;
        let attrs = Attrs {
            a: o.a,
            b: o.b,
            tess: o.tess as i64,
            basis: BasisKind::Explicit,
            ..Attrs::default()
        };
        let (rows, cols) = o.basis_shape();
        let b = basis::explicit(o.tess, true, &o.basis_f32(), rows, cols).unwrap();
        let act = Activation::<f32>::from_theta(&attrs, &b, &o.theta, false).unwrap();
        let table = act.table_values().unwrap().to_vec();
        let mut s1 = session(&explicit_model(&o, "DiTAC", 2048).bytes()).unwrap();
        let mut s2 = session(&OpModel::new("DiTACLut", &table, lut_attrs(&o)).bytes()).unwrap();
        let mut x = o.x.clone();
        x.extend((0..5000).map(|i| o.a - 1.0 + (o.b - o.a + 2.0) * i as f32 / 4999.0));
        let y1 = run_f32(&mut s1, &x, &[], "Y").unwrap();
        let y2 = run_f32(&mut s2, &x, &[], "Y").unwrap();
        for (i, (p, q)) in y1.iter().zip(&y2).enumerate() {
            assert!(
                p.to_bits() == q.to_bits(),
                "{name}[{i}] x={}: DiTAC {p} vs DiTACLut {q}",
                x[i]
            );
        }
    }
}

fn run_grad(
    s: &mut ort::session::Session,
    dy: &[f32],
    x: &[f32],
    extra: &[(&str, Vec<usize>, Vec<f32>)],
) -> (Vec<f32>, Vec<f32>) {
    let mut inputs: Vec<(String, ort::session::SessionInputValue<'_>)> = vec![
        (
            "dY".into(),
            Tensor::from_array((vec![dy.len()], dy.to_vec()))
                .unwrap()
                .into(),
        ),
        (
            "X".into(),
            Tensor::from_array((vec![x.len()], x.to_vec()))
                .unwrap()
                .into(),
        ),
    ];
    for (n, shape, v) in extra {
        inputs.push((
            n.to_string(),
            Tensor::from_array((shape.clone(), v.clone()))
                .unwrap()
                .into(),
        ));
    }
    let o = s.run(inputs).unwrap();
    (
        o["dX"].try_extract_tensor::<f32>().unwrap().1.to_vec(),
        o["dtheta"].try_extract_tensor::<f32>().unwrap().1.to_vec(),
    )
}

#[test]
fn grad_matches_oracle() {
    for o in cases() {
        let name = &o.name;
        let mut s = session(&explicit_model(&o, "DiTACGrad", 2048).bytes()).unwrap();
        let ones = vec![1f32; o.x.len()];
        // The oracle's points include NaN/inf only in special_inputs; x here is finite.
        let (dx, dth) = run_grad(&mut s, &ones, &o.x, &[]);
        assert_close(
            &format!("{name} dact_dx_lut"),
            &dx,
            &o.points_f32("dact_dx_lut"),
            Tol::rel_floor(1e-5, 1.0),
            Some(&o.stable()),
        );
        // Fragile points are in the sum too: compare the sum loosely against its scale.
        let want_dth = o.theta_grad_sum();
        let scale = want_dth.iter().fold(1e-3f64, |m, v| m.max(v.abs() as f64));
        assert_close(
            &format!("{name} dtheta"),
            &dth,
            &want_dth,
            Tol::exact_grad(scale),
            None,
        );
    }
}

#[test]
fn theta_input_follows_changes() {
    let o = case("t10_m3_3");
    let mut m = explicit_model(&o, "DiTAC", 2048);
    let mut fixed = session(&m.bytes()).unwrap();
    let want = run_f32(&mut fixed, &o.x, &[], "Y").unwrap();
    m.feed = Feed::Input;
    let mut s = session(&m.bytes()).unwrap();
    let zero = vec![0f32; o.d()];
    let th = |t: &[f32]| vec![("theta", vec![o.d()], t.to_vec())];
    let y1 = run_f32(&mut s, &o.x, &th(&o.theta), "Y").unwrap();
    let y0 = run_f32(&mut s, &o.x, &th(&zero), "Y").unwrap();
    let y2 = run_f32(&mut s, &o.x, &th(&o.theta), "Y").unwrap();
    assert_eq!(y1, want);
    assert_eq!(y2, want);
    assert_ne!(y0, want);
    // θ = 0 is the identity warp: DiTAC = x·Φ(x) = GELU.
    let id = case("t10_m3_3_identity");
    let mut si = session(&explicit_model(&id, "DiTAC", 2048).bytes()).unwrap();
    let gelu = run_f32(&mut si, &o.x, &[], "Y").unwrap();
    assert_eq!(y0, gelu);
}

#[test]
fn per_channel_theta_matches_single() {
    let o = case("t10_m3_3");
    let c = 3usize;
    // Row k is θ·s_k.
    let scales = [1.0f32, 0.0, -0.5];
    let rows: Vec<f32> = scales
        .iter()
        .flat_map(|s| o.theta.iter().map(move |t| t * s))
        .collect();
    let (n0, n2) = (2usize, 50usize);
    let x: Vec<f32> = (0..n0 * c * n2)
        .map(|i| -4.0 + 8.0 * ((i * 37) % 1000) as f32 / 999.0)
        .collect();
    let mut m = explicit_model(&o, "DiTAC", 2048);
    m.param = rows;
    m.pshape = vec![c, o.d()];
    m.xshape = vec![n0 as i64, c as i64, n2 as i64];
    let mut s = session(&m.bytes()).unwrap();
    let out = s
        .run(vec![(
            "X",
            Tensor::from_array((vec![n0, c, n2], x.clone())).unwrap(),
        )])
        .unwrap();
    let y = out["Y"].try_extract_tensor::<f32>().unwrap().1.to_vec();
    for (k, sc) in scales.iter().enumerate() {
        let th: Vec<f32> = o.theta.iter().map(|t| t * sc).collect();
        let mut m1 = explicit_model(&o, "DiTAC", 2048);
        m1.param = th;
        let mut s1 = session(&m1.bytes()).unwrap();
        let xs: Vec<f32> = (0..n0)
            .flat_map(|a| x[(a * c + k) * n2..(a * c + k + 1) * n2].to_vec())
            .collect();
        let ys = run_f32(&mut s1, &xs, &[], "Y").unwrap();
        let got: Vec<f32> = (0..n0)
            .flat_map(|a| y[(a * c + k) * n2..(a * c + k + 1) * n2].to_vec())
            .collect();
        assert_eq!(got, ys, "channel {k}");
    }
}

#[test]
fn float16_and_double_follow_float() {
    let o = case("t10_m3_3");
    let x: Vec<f32> = (0..3001).map(|i| -4.0 + 8.0 * i as f32 / 3000.0).collect();
    let mut s32 = session(&explicit_model(&o, "DiTAC", 2048).bytes()).unwrap();
    // double
    let mut m = explicit_model(&o, "DiTAC", 2048);
    m.elem = ElemType::Double;
    let mut s64 = session(&m.bytes()).unwrap();
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let out = s64
        .run(vec![(
            "X",
            Tensor::from_array((vec![x.len()], x64)).unwrap(),
        )])
        .unwrap();
    let y64 = out["Y"].try_extract_tensor::<f64>().unwrap().1.to_vec();
    let y32 = run_f32(&mut s32, &x, &[], "Y").unwrap();
    let y64f: Vec<f32> = y64.iter().map(|&v| v as f32).collect();
    assert_close(
        "double vs float",
        &y64f,
        &y32,
        Tol::rel_floor(1e-4, 1.0),
        None,
    );
    // float16: computed in f32 on the rounded inputs, rounded once.
    m.elem = ElemType::Float16;
    let mut s16 = session(&m.bytes()).unwrap();
    let x16: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
    let out = s16
        .run(vec![(
            "X",
            Tensor::from_array((vec![x.len()], x16.clone())).unwrap(),
        )])
        .unwrap();
    let y16 = out["Y"].try_extract_tensor::<f16>().unwrap().1.to_vec();
    let xr: Vec<f32> = x16.iter().map(|v| v.to_f32()).collect();
    let want: Vec<f16> = run_f32(&mut s32, &xr, &[], "Y")
        .unwrap()
        .iter()
        .map(|&v| f16::from_f32(v))
        .collect();
    assert_eq!(y16, want);
}

#[test]
fn large_tensor_is_chunked_deterministically() {
    // > 1 chunk, several intra-op threads: identical to the single-thread result.
    let o = case("t10_m3_3");
    let n = 300_000;
    let x: Vec<f32> = (0..n)
        .map(|i| -4.0 + 8.0 * ((i * 7919) % n) as f32 / n as f32)
        .collect();
    let dy: Vec<f32> = (0..n).map(|i| 1.0 + (i % 7) as f32 * 0.25).collect();
    let bytes = explicit_model(&o, "DiTACGrad", 2048).bytes();
    let mut s1 = session_threads(&bytes, 1).unwrap();
    let mut s2 = session_threads(&bytes, 2).unwrap();
    let r1 = run_grad(&mut s1, &dy, &x, &[]);
    let r2 = run_grad(&mut s2, &dy, &x, &[]);
    assert_eq!(r1.0, r2.0);
    assert_eq!(r1.1, r2.1);
}

#[test]
fn empty_input() {
    let o = case("t4_m3_3");
    let mut s = session(&explicit_model(&o, "DiTAC", 2048).bytes()).unwrap();
    assert!(run_f32(&mut s, &[], &[], "Y").unwrap().is_empty());
    let mut g = session(&explicit_model(&o, "DiTACGrad", 2048).bytes()).unwrap();
    let (dx, dth) = run_grad(&mut g, &[], &[], &[]);
    assert!(dx.is_empty());
    assert_eq!(dth, vec![0.0; o.d()]);
}

fn expect_err<T>(r: ort::Result<T>, needles: &[&str]) -> ort::Error {
    let e = match r {
        Ok(_) => panic!("expected an error containing {needles:?}"),
        Err(e) => e,
    };
    let msg = e.message().to_string();
    for n in needles {
        assert!(msg.contains(n), "error message {msg:?} lacks {n:?}");
    }
    e
}

/// Session-creation errors: ORT reports them as RUNTIME_EXCEPTION, the message carries the
/// plugin's INVALID_ARGUMENT (ops/README.md).
fn expect_create_err<T>(r: ort::Result<T>, needles: &[&str]) {
    let e = expect_err(r, needles);
    assert!(
        e.message().contains("[INVALID_ARGUMENT] ai.ditac."),
        "{}",
        e.message()
    );
}

#[test]
fn creation_errors_name_the_problem() {
    let o = case("t4_m3_3");
    let mk = |attrs: Vec<(&'static str, Attr)>| {
        let mut m = OpModel::new("DiTAC", &o.theta, attrs);
        let (rows, cols) = o.basis_shape();
        m.basis = Some((rows, cols, o.basis_f32()));
        m.bytes()
    };
    let base = |extra: Vec<(&'static str, Attr)>| {
        let mut v = oracle_attrs(&o, "explicit", 2048);
        for (k, val) in extra {
            v.retain(|(n, _)| *n != k);
            v.push((k, val));
        }
        v
    };
    type Case = (Vec<(&'static str, Attr)>, Vec<&'static str>);
    let cases: Vec<Case> = vec![
        (
            base(vec![("tess", Attr::Int(0))]),
            vec!["node 'act1'", "DiTAC", "attribute 'tess' = 0", "1..=1024"],
        ),
        (
            base(vec![("a", Attr::Float(3.0))]),
            vec!["attribute 'a' = 3", "a < b"],
        ),
        (
            base(vec![("a", Attr::Float(f32::NAN))]),
            vec!["attribute 'a'", "finite"],
        ),
        (
            base(vec![("variant", Attr::from("relu"))]),
            vec!["attribute 'variant'", "relu"],
        ),
        (
            base(vec![("lut_size", Attr::Int(1))]),
            vec!["attribute 'lut_size' = 1"],
        ),
        (
            base(vec![("interpolation", Attr::from("cubic"))]),
            vec!["attribute 'interpolation'"],
        ),
        (
            base(vec![("basis", Attr::from("qr"))]),
            vec!["input 'B'", "explicit"],
        ),
        (base(vec![("tess", Attr::Int(5))]), vec!["input 'B'"]),
    ];
    for (attrs, needles) in cases {
        expect_create_err(session(&mk(attrs)), &needles);
    }
    // explicit basis without B
    let m = OpModel::new("DiTAC", &o.theta, oracle_attrs(&o, "explicit", 2048));
    expect_create_err(session(&m.bytes()), &["attribute 'basis'", "input 'B'"]);
    // constant θ of the wrong length, constant θ with NaN
    let short = &o.theta[..2];
    let mut m = OpModel::new("DiTAC", short, oracle_attrs(&o, "qr", 2048));
    m.pshape = vec![2];
    expect_create_err(session(&m.bytes()), &["input 'theta'", "2 values", "d = 3"]);
    let nan = vec![f32::NAN, 0.0, 0.0];
    expect_err(
        session(&OpModel::new("DiTAC", &nan, oracle_attrs(&o, "qr", 2048)).bytes()),
        &["input 'theta'", "NaN"],
    );
    // table with one node
    let one = [0.5f32];
    expect_err(
        session(&OpModel::new("DiTACLut", &one, lut_attrs(&o)).bytes()),
        &["DiTACLut", "input 'table'", "at least 2"],
    );
    // a valid session still works afterwards
    let mut s = session(&explicit_model(&o, "DiTAC", 2048).bytes()).unwrap();
    assert_eq!(run_f32(&mut s, &o.x, &[], "Y").unwrap().len(), o.x.len());
}

#[test]
fn run_errors_are_invalid_argument() {
    let o = case("t4_m3_3");
    let mut m = explicit_model(&o, "DiTAC", 2048);
    m.feed = Feed::Input;
    m.basis_feed = Feed::Input;
    let mut s = session(&m.bytes()).unwrap();
    let (rows, cols) = o.basis_shape();
    let bshape = vec![rows, cols];
    let good_b = ("B", bshape.clone(), o.basis_f32());
    let x = &o.x;
    let check = |r: ort::Result<Vec<f32>>, needles: &[&str]| {
        let e = expect_err(r, needles);
        assert_eq!(
            e.code(),
            ort::error::ErrorCode::InvalidArgument,
            "{}",
            e.message()
        );
    };
    check(
        run_f32(
            &mut s,
            x,
            &[("theta", vec![3], vec![f32::NAN, 0.0, 0.0]), good_b.clone()],
            "Y",
        ),
        &["node 'act1'", "input 'theta'", "NaN"],
    );
    check(
        run_f32(
            &mut s,
            x,
            &[("theta", vec![4], vec![0.0; 4]), good_b.clone()],
            "Y",
        ),
        &["input 'theta'", "4 values", "d = 3"],
    );
    check(
        run_f32(
            &mut s,
            x,
            &[
                ("theta", vec![3], o.theta.clone()),
                ("B", vec![8, 2], vec![0.0; 16]),
            ],
            "Y",
        ),
        &["input 'B'", "[8, 2]"],
    );
    // per-channel θ with C ≠ X.shape[channel_axis]: X is 1-D here, θ is [2, 3]
    let mut m2 = explicit_model(&o, "DiTAC", 2048);
    m2.feed = Feed::Input;
    m2.pshape = vec![2, o.d()];
    m2.xshape = vec![-1, -1];
    let mut s2 = session(&m2.bytes()).unwrap();
    let th2: Vec<f32> = [o.theta.clone(), o.theta.clone()].concat();
    let e = s2.run(vec![
        (
            "X",
            Tensor::from_array((vec![4usize, 5], vec![0.5f32; 20])).unwrap(),
        ),
        (
            "theta",
            Tensor::from_array((vec![2usize, o.d()], th2.clone())).unwrap(),
        ),
    ]);
    let e = expect_err(
        e.map(|_| ()),
        &["input 'theta'", "2 rows", "C = X.shape[channel_axis] = 5"],
    );
    assert_eq!(e.code(), ort::error::ErrorCode::InvalidArgument);
    // valid runs afterwards
    let y = run_f32(
        &mut s,
        x,
        &[("theta", vec![3], o.theta.clone()), good_b],
        "Y",
    )
    .unwrap();
    assert_close(
        "after errors",
        &y,
        &o.points_f32("act_lut"),
        Tol::table(o.a, o.b),
        Some(&o.stable()),
    );
    let ok = s2.run(vec![
        (
            "X",
            Tensor::from_array((vec![4usize, 2], vec![0.5f32; 8])).unwrap(),
        ),
        (
            "theta",
            Tensor::from_array((vec![2usize, o.d()], th2)).unwrap(),
        ),
    ]);
    assert!(ok.is_ok());
}

#[test]
fn only_the_entry_points_are_exported() {
    let out = std::process::Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(plugin_path())
        .output()
        .expect("run nm");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let mut syms: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    syms.sort_unstable();
    // ONNX Runtime's entry point and the C API of src/capi.rs.
    let want = [
        "RegisterCustomOps",
        "ditac_basis",
        "ditac_capi_version",
        "ditac_init_covariance",
        "ditac_precision_matrix",
        "ditac_tables",
    ];
    assert_eq!(syms, want, "exported: {text}");
}

/// Forward time of DiTAC vs ORT's Gelu on 16M floats, 1 and 2 intra-op threads.
/// `cargo test --release --test plugin_sessions -- --ignored --nocapture bench`
#[test]
#[ignore]
fn bench_ditac_vs_gelu() {
    let o = case("t10_m3_3");
    let n = 1usize << 24;
    let x: Vec<f32> = (0..n)
        .map(|i| -4.0 + 8.0 * ((i * 7919) % n) as f32 / n as f32)
        .collect();
    let mut gelu = ModelBuilder::new("gelu");
    gelu.input("X", ElemType::Float, &[-1])
        .output("Y", ElemType::Float, &[-1]);
    gelu.node("Gelu", "", "g", &["X"], &["Y"], &[]);
    let gelu = gelu.to_bytes();
    for threads in [1usize, 2] {
        for (label, bytes) in [
            ("DiTAC lut 2048", explicit_model(&o, "DiTAC", 2048).bytes()),
            ("DiTAC exact", explicit_model(&o, "DiTAC", 0).bytes()),
            ("Gelu (opset 20)", gelu.clone()),
        ] {
            let mut s = session_threads(&bytes, threads).unwrap();
            let mut best = f64::INFINITY;
            for _ in 0..4 {
                let t = Tensor::from_array((vec![n], x.clone())).unwrap();
                let t0 = std::time::Instant::now();
                let out = s.run(vec![("X", t)]).unwrap();
                best = best.min(t0.elapsed().as_secs_f64());
                drop(out);
            }
            println!(
                "{threads} thread(s) {label:>16}: {:8.1} ms ({:.2} ns/elem)",
                best * 1e3,
                best * 1e9 / n as f64
            );
        }
    }
    let _ = DITAC_DOMAIN;
}

/// The plugin is built with the CUDA code; on a host without libcuda (this one, in CI) it
/// registers the CPU ops alone, sessions run with no error, and NVRTC is never opened.
#[test]
fn cpu_sessions_need_no_gpu_stack() {
    let theta = [0.1f32, -0.2, 0.3, 0.0, 0.1, -0.1, 0.2, 0.0, 0.05];
    let m = OpModel::new("DiTAC", &theta, vec![]);
    let mut s = session(&m.bytes()).expect("session creation must not fail without a GPU");
    let x = [0.5f32, -0.2, 1.0, 3.0, -2.0];
    let y = run_f32(&mut s, &x, &[], "Y").expect("CPU run");
    let attrs = Attrs::default();
    let b = basis::build(10, true, BasisKind::Qr).unwrap();
    let mut want = vec![0f32; x.len()];
    Activation::<f32>::from_theta(&attrs, &b, &theta, false)
        .unwrap()
        .forward(&x, &mut want);
    assert_eq!(y, want);
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    assert!(!maps.contains("libnvrtc"), "NVRTC opened by a CPU session");
    if !ditac::cuda::glue::driver_present() {
        assert!(!maps.contains("libcuda.so"));
    }
}
