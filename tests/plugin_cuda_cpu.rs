//! The CUDA side of the plugin on a host without a GPU (a separate test binary: it registers
//! the CUDA-EP op definitions with `DITAC_CUDA=force`, read once per process).
//!
//! * The CUDA-EP definitions registered beside the CPU ones must not disturb a CPU-only
//!   runtime: sessions run on the CPU kernels with the same results, and no error surfaces.
//! * Loading the plugin and running CPU sessions needs neither libcuda nor NVRTC: neither is
//!   mapped into the process afterwards (NVRTC is opened at the first launch on a GPU only).
//! * The kernel sources the plugin compiles at run time are in `ops/cuda/`.

mod support;

use std::sync::Once;

use ditac::core::{basis, Activation, Attrs, BasisKind};
use ditac_tools::model::{Attr, ElemType};
use half::f16;
use ort::value::Tensor;
use support::*;

static FORCE: Once = Once::new();

/// Every test calls this before its first session.
fn force_cuda_definitions() {
    FORCE.call_once(|| {
        // SAFETY (Rust 2024 wording; plain call in 2021): set before any session exists, while
        // no other thread of this test reads the environment.
        std::env::set_var("DITAC_CUDA", "force");
        let _ = env();
    });
}

const THETA: [f32; 9] = [0.3, -0.2, 0.5, 0.1, -0.4, 0.2, 0.0, 0.3, -0.1];

fn core_warp(grad: bool) -> Activation<f32> {
    let attrs = Attrs::default();
    let b = basis::build(10, true, BasisKind::Qr).unwrap();
    Activation::from_theta(&attrs, &b, &THETA, grad).unwrap()
}

#[test]
fn cpu_sessions_are_unchanged_with_cuda_definitions_registered() {
    force_cuda_definitions();
    let x = uniform(10_000, 7, -1.5..2.5);
    let m = OpModel::new("DiTAC", &THETA, vec![]);
    let mut s = session(&m.bytes()).expect("session with CUDA definitions registered");
    let y = run_f32(&mut s, &x, &[], "Y").expect("CPU run");
    let mut want = vec![0f32; x.len()];
    core_warp(false).forward(&x, &mut want);
    assert_eq!(y, want);

    // DiTACGrad on the CPU EP: dX and dθ as the core computes them.
    let dy = uniform(x.len(), 11, -1.5..2.5);
    let g = OpModel::new("DiTACGrad", &THETA, vec![]);
    let mut s = session(&g.bytes()).unwrap();
    let o = s
        .run(ort::inputs![
            "dY" => Tensor::from_array((vec![dy.len()], dy.clone())).unwrap(),
            "X" => Tensor::from_array((vec![x.len()], x.clone())).unwrap(),
        ])
        .unwrap();
    let dx = o["dX"].try_extract_tensor::<f32>().unwrap().1.to_vec();
    let dth = o["dtheta"].try_extract_tensor::<f32>().unwrap().1.to_vec();
    let mut want_dx = vec![0f32; x.len()];
    let mut acc = vec![0f64; THETA.len()];
    core_warp(true).backward(&dy, &x, &mut want_dx, &mut acc);
    assert_eq!(dx, want_dx);
    for (got, want) in dth.iter().zip(&acc) {
        assert!(
            ((*got as f64) - want).abs() <= 1e-6 * want.abs().max(1.0),
            "{got} vs {want}"
        );
    }
}

#[test]
fn float16_and_errors_are_unchanged_with_cuda_definitions_registered() {
    force_cuda_definitions();
    let x = uniform(1000, 3, -1.5..2.5);
    let mut m = OpModel::new(
        "DiTAC",
        &THETA,
        vec![("interpolation", Attr::from("linear"))],
    );
    m.elem = ElemType::Float16;
    let mut s = session(&m.bytes()).unwrap();
    let xh: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
    let o = s
        .run(ort::inputs!["X" => Tensor::from_array((vec![xh.len()], xh.clone())).unwrap()])
        .unwrap();
    let y = o["Y"].try_extract_tensor::<f16>().unwrap().1.to_vec();
    assert_eq!(y.len(), x.len());
    // A bad attribute is still the CPU kernel's INVALID_ARGUMENT.
    let bad = OpModel::new("DiTAC", &THETA, vec![("tess", Attr::Int(0))]);
    let e = session(&bad.bytes())
        .expect_err("tess = 0 must fail")
        .to_string();
    assert!(e.contains("attribute 'tess' = 0"), "{e}");
}

#[test]
fn neither_libcuda_nor_nvrtc_is_needed_to_load_and_run() {
    force_cuda_definitions();
    let m = OpModel::new("DiTAC", &THETA, vec![]);
    let mut s = session(&m.bytes()).unwrap();
    run_f32(&mut s, &uniform(100, 1, -1.5..2.5), &[], "Y").unwrap();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    assert!(
        !maps.contains("libnvrtc"),
        "NVRTC was loaded by a CPU session"
    );
    if !ditac::cuda::glue::driver_present() {
        assert!(
            !maps.contains("libcuda.so"),
            "libcuda mapped on a host without it"
        );
    }
    assert_eq!(ditac::cuda::glue::compile_count(), 0);
}

#[test]
fn kernel_sources_are_in_ops_cuda() {
    let src =
        std::fs::read_to_string(repo_root().join("ops/cuda/ditac.cu")).expect("ops/cuda/ditac.cu");
    assert_eq!(src, ditac::cuda::SOURCE);
    for k in [
        "ditac_fwd_f32",
        "ditac_fwd_f16",
        "ditac_fwd_bf16",
        "ditac_grad_f32",
        "ditac_grad_reduce",
    ] {
        assert!(src.contains(&format!("__global__ void {k}(")), "{k}");
    }
    assert!(
        !src.contains("#include"),
        "the source must compile without an include path"
    );
}

/// The GPU check's comparison logic, run on the CPU: the core's results handed in as if from the
/// device pass, a poisoned element or a perturbed dθ fails (`gpu_check --self-test`). Needs the
/// example built (`cargo build --release --all-targets`, as tools/test.sh does); skipped otherwise.
#[test]
fn gpu_check_self_test_passes_without_a_gpu() {
    let exe = repo_root().join("target/release/examples/gpu_check");
    if !exe.exists() {
        eprintln!("skipped: {} not built", exe.display());
        return;
    }
    let out = std::process::Command::new(&exe)
        .args(["--self-test", "--quick"])
        .output()
        .expect("run gpu_check --self-test");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.lines().filter(|l| l.ends_with(" ok")).count(),
        // 13 cases for each of float, float16 and bfloat16, and the two cases run on two
        // streams at once.
        41,
        "{text}"
    );
}
