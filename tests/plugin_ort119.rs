//! The same plugin build in ONNX Runtime 1.19.2 (C API 19 ≥ the plugin's level 17): a separate
//! test binary, since `ort` loads one runtime per process.

mod support;

use ditac_tools::model::Attr;
use support::*;

fn ensure_119() {
    let _ = env_from(".ort/1.19.2/libonnxruntime.so");
    if std::env::var_os("ORT_DYLIB_PATH").is_none() {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        assert!(
            maps.contains(".ort/1.19.2/libonnxruntime.so"),
            "ORT 1.19.2 is not the loaded runtime"
        );
        assert!(
            !maps.contains(&format!(".ort/{}/", ditac_tools::runtime::ORT_VERSION)),
            "ORT 1.32 loaded in the 1.19 test process"
        );
    }
}

#[test]
fn loads_and_matches_oracle_in_ort_1_19() {
    ensure_119();
    for name in ["t4_m3_3", "t10_m3_3", "default_t10_m0.5_2"] {
        let o = case(name);
        let stable = o.stable();
        for (lut, want, mask) in [
            (2048, "act_lut", Some(stable.as_slice())),
            (0, "act_exact", None),
        ] {
            let m = explicit_model(&o, "DiTAC", lut);
            let mut s = session(&m.bytes()).unwrap();
            let y = run_f32(&mut s, &o.x, &[], "Y").unwrap();
            assert_close(
                &format!("1.19 {name} lut={lut}"),
                &y,
                &o.points_f32(want),
                Tol::table(o.a, o.b),
                mask,
            );
        }
        let m = OpModel::new(
            "DiTACLut",
            &o.table(),
            vec![("a", Attr::Float(o.a)), ("b", Attr::Float(o.b))],
        );
        let mut s = session(&m.bytes()).unwrap();
        let y = run_f32(&mut s, &o.x, &[], "Y").unwrap();
        assert_close(
            &format!("1.19 {name} lut table"),
            &y,
            &o.points_f32("act_lut"),
            Tol::table(o.a, o.b),
            Some(&o.stable()),
        );
    }
}

#[test]
fn errors_in_ort_1_19() {
    ensure_119();
    let o = case("t4_m3_3");
    let mut attrs = oracle_attrs(&o, "qr", 2048);
    attrs.push(("variant", Attr::from("relu")));
    let r = session(&OpModel::new("DiTAC", &o.theta, attrs).bytes());
    let Err(e) = r else {
        panic!("bad variant must fail")
    };
    let msg = e.message().to_string();
    assert!(
        msg.contains("[INVALID_ARGUMENT] ai.ditac.DiTAC node 'act1': attribute 'variant'"),
        "{msg}"
    );
    let mut m = OpModel::new("DiTAC", &o.theta, oracle_attrs(&o, "qr", 2048));
    m.feed = Feed::Input;
    let mut s = session(&m.bytes()).unwrap();
    let e = run_f32(&mut s, &o.x, &[("theta", vec![2], vec![0.0; 2])], "Y").unwrap_err();
    assert_eq!(e.code(), ort::error::ErrorCode::InvalidArgument);
    assert!(
        e.message()
            .contains("input 'theta' has 2 values per row: expected d = 3"),
        "{}",
        e.message()
    );
    let y = run_f32(&mut s, &o.x, &[("theta", vec![3], o.theta.clone())], "Y").unwrap();
    assert_close(
        "1.19 after error",
        &y,
        &o.points_f32("act_lut"),
        Tol::table(o.a, o.b),
        Some(&o.stable()),
    );
}
