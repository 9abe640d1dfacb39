//! CPU tests of the kernel-independent parts: argument layout against the kernel source, the
//! vector split, launch configuration, reduction plan, table packing, and the constants the
//! source shares with the core. The NVRTC compile test needs `libnvrtc` (no GPU): it is ignored
//! by default (`cargo test --release --lib cuda -- --ignored` with libnvrtc on the loader path).

use std::mem::{offset_of, size_of};

use super::*;
use crate::core::{basis, Activation, Attrs, BasisKind, Warps};

/// The fields of `struct NAME { ... };` in the kernel source, with their C sizes.
fn c_fields(name: &str) -> Vec<(String, usize)> {
    let start = SOURCE
        .find(&format!("struct {name} {{"))
        .unwrap_or_else(|| panic!("struct {name} not in ops/cuda/ditac.cu"));
    let body = &SOURCE[start..];
    let body = &body[body.find('{').unwrap() + 1..body.find("};").unwrap()];
    let body: String = body
        .lines()
        .map(|l| l.split("//").next().unwrap())
        .collect::<Vec<_>>()
        .join(" ");
    let mut out = Vec::new();
    for decl in body.split(';').map(str::trim).filter(|d| !d.is_empty()) {
        let size = if decl.contains('*') || decl.starts_with("u64") {
            8
        } else if decl.starts_with("u32") || decl.starts_with("float") {
            4
        } else {
            panic!("unknown type in {decl:?}")
        };
        for piece in decl.split(',') {
            let word = piece.split_whitespace().last().unwrap();
            let word = word.trim_start_matches('*');
            out.push((word.to_string(), size));
        }
    }
    out
}

/// C offsets (natural alignment) and total size of the fields.
fn c_layout(fields: &[(String, usize)]) -> (Vec<(String, usize)>, usize) {
    let mut off = 0usize;
    let mut align = 1usize;
    let mut v = Vec::new();
    for (n, s) in fields {
        off = off.div_ceil(*s) * s;
        v.push((n.clone(), off));
        off += s;
        align = align.max(*s);
    }
    (v, off.div_ceil(align) * align)
}

macro_rules! check_layout {
    ($ty:ty, $cname:expr, [$($f:ident),* $(,)?]) => {{
        let fields = c_fields($cname);
        let (offs, size) = c_layout(&fields);
        let rust: Vec<(&str, usize)> = vec![$((stringify!($f), offset_of!($ty, $f))),*];
        assert_eq!(offs.len(), rust.len(), "{}: field count", $cname);
        for ((cn, co), (rn, ro)) in offs.iter().zip(&rust) {
            assert_eq!(cn, rn, "{}: field order", $cname);
            assert_eq!(co, ro, "{}: offset of {}", $cname, cn);
        }
        assert_eq!(size, size_of::<$ty>(), "{}: size", $cname);
    }};
}

#[test]
fn argument_structs_match_the_kernel_source() {
    check_layout!(
        FwdArgs,
        "FwdArgs",
        [
            x, y, xt, len, head, nvec, inner, channels, nodes, lo, hi, add_in, mul_in, scale,
            alpha, variant, linear, smem, pad
        ]
    );
    check_layout!(
        GradArgs,
        "GradArgs",
        [
            dy, x, dx, xt, dt, g, acc, partials, len, head, nvec, inner, channels, nodes, d, smem,
            lo, hi, add_in, mul_in, mul_out, scale, alpha, variant, linear, pad
        ]
    );
    check_layout!(ReduceArgs, "ReduceArgs", [partials, out, slots, width]);
    assert_eq!(size_of::<FwdArgs>(), 104);
    assert_eq!(size_of::<GradArgs>(), 152);
    assert_eq!(size_of::<ReduceArgs>(), 24);
}

#[test]
fn kernel_names_and_constants_are_in_the_source() {
    for d in DType::ALL {
        for name in [fwd_name(d), grad_name(d)] {
            assert!(
                SOURCE.contains(&format!("extern \"C\" __global__ void {name}(")),
                "{name}"
            );
        }
    }
    assert!(SOURCE.contains(&format!("extern \"C\" __global__ void {REDUCE_NAME}(")));
    let define = |name: &str| -> String {
        let l = SOURCE
            .lines()
            .find(|l| l.starts_with(&format!("#define {name} ")))
            .unwrap_or_else(|| panic!("#define {name}"));
        l.split_whitespace().nth(2).unwrap().to_string()
    };
    assert_eq!(define("FWD_UNROLL").parse::<u64>().unwrap(), FWD_UNROLL);
    assert_eq!(define("GRAD_DREG").parse::<usize>().unwrap(), GRAD_DREG);
    let f = |s: String| s.trim_end_matches('f').parse::<f32>().unwrap();
    use crate::core::real::Real;
    assert_eq!(
        f(define("DITAC_FRAC_1_SQRT_2")),
        <f32 as Real>::FRAC_1_SQRT_2
    );
    assert_eq!(
        f(define("DITAC_FRAC_1_SQRT_2PI")),
        <f32 as Real>::FRAC_1_SQRT_2PI
    );
    assert!(SOURCE.contains(&format!("__shared__ double part[{REDUCE_BLOCK}]")));
}

/// The float literals of a function body, in order.
fn literals(src: &str, start: &str) -> Vec<f32> {
    let i = src.find(start).unwrap_or_else(|| panic!("{start}"));
    let body = &src[i..];
    let body = &body[..body.find("\n}").unwrap()];
    let mut v = Vec::new();
    for tok in
        body.split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_'))
    {
        let t = tok.trim_end_matches('f').replace('_', "");
        if t.contains('.') || t.contains('e') {
            if let Ok(x) = t.parse::<f32>() {
                v.push(x);
            }
        }
    }
    v
}

#[test]
fn erf_coefficients_match_the_core() {
    use crate::core::erf::{ERF_P, ERF_Q};
    // The polynomial coefficients (|c| < 1), in order; the clamps are checked by the GPU run.
    let cuda: Vec<f32> = literals(SOURCE, "__device__ __forceinline__ float erf_f32")
        .into_iter()
        .filter(|c| c.abs() < 1.0)
        .collect();
    let core: Vec<f32> = ERF_P.iter().chain(&ERF_Q).copied().collect();
    assert_eq!(core, cuda);
    // Every Horner step fused, as the CPU's (`mul_add`), with the module's --fmad=false.
    let i = SOURCE.find("float erf_f32").unwrap();
    let body = &SOURCE[i..i + SOURCE[i..].find("\n}").unwrap()];
    assert_eq!(body.matches("fmaf(x2, ").count(), 10, "{body}");
}

#[test]
fn nvrtc_options_keep_the_cpu_op_order() {
    let o = nvrtc_options(9, 0);
    assert!(o.contains(&"--gpu-architecture=sm_90".to_string()));
    assert!(o.contains(&"--fmad=false".to_string()));
    assert!(o.contains(&"--prec-div=true".to_string()));
    assert!(!o.iter().any(|s| s.contains("fast-math")));
}

#[test]
fn ptx_fallback_picks_the_newest_runnable_arch() {
    let nvrtc12 = [50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86, 87, 89, 90];
    assert_eq!(ptx_fallback_arch(100, &nvrtc12), Some(90));
    assert_eq!(ptx_fallback_arch(90, &nvrtc12), Some(90));
    assert_eq!(ptx_fallback_arch(88, &nvrtc12), Some(87));
    assert_eq!(ptx_fallback_arch(35, &nvrtc12), None);
    let o = nvrtc_options_ptx(90);
    assert_eq!(o[0], "--gpu-architecture=compute_90");
    assert!(o.contains(&"--fmad=false".to_string()));
}

#[test]
fn split_vectorises_common_alignment_only() {
    // Aligned f32: no head, 4-element vectors, tail.
    let s = Split::new(10, DType::F32, &[0x1000, 0x2000]);
    assert_eq!(
        s,
        Split {
            head: 0,
            nvec: 2,
            tail: 2
        }
    );
    // Both 4 bytes past a 16-byte boundary: 3 scalars first.
    let s = Split::new(10, DType::F32, &[0x1004, 0x2004]);
    assert_eq!(
        s,
        Split {
            head: 3,
            nvec: 1,
            tail: 3
        }
    );
    // Different offsets: all scalar.
    let s = Split::new(10, DType::F32, &[0x1004, 0x2008]);
    assert_eq!(
        s,
        Split {
            head: 10,
            nvec: 0,
            tail: 0
        }
    );
    // Not element-aligned.
    let s = Split::new(10, DType::F16, &[0x1001, 0x2001]);
    assert_eq!(
        s,
        Split {
            head: 10,
            nvec: 0,
            tail: 0
        }
    );
    // f16: 8 per vector; a head longer than the tensor.
    let s = Split::new(100, DType::F16, &[0x1002, 0x2002, 0x3002]);
    assert_eq!(
        s,
        Split {
            head: 7,
            nvec: 11,
            tail: 5
        }
    );
    let s = Split::new(3, DType::BF16, &[0x1002]);
    assert_eq!(
        s,
        Split {
            head: 3,
            nvec: 0,
            tail: 0
        }
    );
    let s = Split::new(0, DType::F32, &[0x1000, 0x1000]);
    assert_eq!(
        s,
        Split {
            head: 0,
            nvec: 0,
            tail: 0
        }
    );
    // Every element covered exactly once, for many lengths and offsets.
    for dt in DType::ALL {
        for len in 0..70u64 {
            for off in (0..16).step_by(dt.size() as usize) {
                let s = Split::new(len, dt, &[0x100 + off, 0x900 + off]);
                assert_eq!(s.head + s.nvec * dt.vec() + s.tail, len);
                assert!(s.tail < dt.vec() || s.nvec == 0);
                if s.nvec > 0 {
                    assert_eq!((0x100 + off + s.head * dt.size()) % 16, 0);
                }
            }
        }
    }
}

const H200: DeviceLimits = DeviceLimits {
    sm_count: 132,
    blocks_per_sm: 8,
    smem_optin: 227 * 1024,
    smem_per_sm: 228 * 1024,
};

#[test]
fn forward_launch_plan() {
    let s = Split::new(1 << 26, DType::F32, &[0, 0]);
    let l = plan_forward(&s, 1, 2048, &H200);
    assert_eq!(l.block, BLOCK);
    assert_eq!(l.smem, 2048 * 4);
    // One wave: 132 SMs × min(8, 228K / (8K + 1K)) blocks.
    assert_eq!(l.grid, 132 * 8);
    // Small tensors: as many blocks as needed.
    let s = Split::new(1000, DType::F32, &[0, 0]);
    let l = plan_forward(&s, 1, 2048, &H200);
    assert_eq!(l.grid, 1);
    let s = Split::new(3, DType::F32, &[4, 4]);
    assert_eq!(plan_forward(&s, 1, 2048, &H200).grid, 1);
    // A table over 48 KiB stays in global memory.
    let s = Split::new(1 << 20, DType::F16, &[0, 0]);
    let l = plan_forward(&s, 8, 2048, &H200);
    assert_eq!(l.smem, 0);
    let l = plan_forward(&s, 1, 12 * 1024, &H200);
    assert_eq!(l.smem, 48 * 1024);
    // Shared memory limits the blocks per SM.
    let big = Split::new(1 << 28, DType::F32, &[0, 0]);
    let l = plan_forward(&big, 1, 12 * 1024, &H200);
    assert_eq!(l.grid, 132 * 4);
}

#[test]
fn grad_reduction_plan() {
    let s = Split::new(1 << 26, DType::F32, &[0, 0, 0]);
    // Default attributes: n = 2048, d = 9: tables (2 + 9)·2048·4 = 88 KiB and the accumulators
    // in shared memory; two blocks per SM.
    let p = plan_grad(&s, 1, 2048, 9, &H200);
    assert_eq!(p.smem_flags, SMEM_TABLES | SMEM_ACC);
    assert_eq!(grad_table_bytes(1, 2048, 9), 11 * 2048 * 4);
    assert_eq!(p.launch.smem as u64, 11 * 2048 * 4 + 8 * 9 * 8);
    assert_eq!(p.launch.grid, 132 * 2);
    assert_eq!(p.width, 9);
    assert_eq!(p.acc_len, 0);
    assert_eq!(p.partials_len, 9 * p.launch.grid as u64);
    assert_eq!(
        p.reduce,
        Launch {
            grid: 9,
            block: REDUCE_BLOCK,
            smem: 0
        }
    );
    // Tables too large for shared memory: global tables, shared accumulators.
    let p = plan_grad(&s, 64, 2048, 9, &H200);
    assert_eq!(p.smem_flags, SMEM_ACC);
    assert_eq!(p.launch.smem, 8 * 64 * 9 * 8);
    // Accumulators too large too: everything in global memory, scratch within the budget.
    let p = plan_grad(&s, 1024, 2048, 1023, &H200);
    assert_eq!(p.smem_flags, 0);
    assert_eq!(p.launch.smem, 0);
    assert!(p.acc_len + p.partials_len <= GRAD_SCRATCH_BUDGET + p.width * 9);
    assert!(p.launch.grid >= 1);
    assert_eq!(p.acc_len, p.launch.grid as u64 * WARPS as u64 * p.width);
    // Small tensors: few blocks; d = 0 (tess 1, zero boundary) has nothing to reduce.
    let s = Split::new(100, DType::F32, &[0, 0, 0]);
    let p = plan_grad(&s, 1, 2048, 9, &H200);
    assert_eq!(p.launch.grid, 1);
    let p = plan_grad(&s, 1, 2048, 0, &H200);
    assert_eq!(p.width, 0);
    assert_eq!(p.partials_len, 0);
    // The plan is a function of the shapes and the device only.
    assert_eq!(
        plan_grad(&s, 3, 64, 5, &H200),
        plan_grad(&s, 3, 64, 5, &H200)
    );
}

fn warp(lut: i64, linear: bool, theta: &[f32], grad: bool) -> Activation<f32> {
    let attrs = Attrs {
        lut_size: lut,
        tess: 4,
        interpolation: if linear {
            crate::core::Interpolation::Linear
        } else {
            crate::core::Interpolation::Nearest
        },
        ..Attrs::default()
    };
    let b = basis::build(4, true, BasisKind::Qr).unwrap();
    Activation::from_theta(&attrs, &b, theta, grad).unwrap()
}

#[test]
fn tables_pack_in_the_kernel_layout() {
    let rows = [
        warp(16, false, &[0.1, -0.2, 0.3], true),
        warp(16, false, &[0.0, 0.4, -0.1], true),
    ];
    let w = Warps::from_rows(&[2, 3], rows.to_vec());
    let t = HostTables::pack(&w, true).unwrap();
    assert_eq!((t.channels, t.nodes, t.d), (2, 16, 3));
    assert_eq!(t.data.len(), 2 * 16 * (2 + 3));
    assert_eq!(t.offsets(), (32, 64));
    let p1 = rows[1].table_parts().unwrap();
    assert_eq!(&t.data[16..32], p1.xt);
    assert_eq!(&t.data[32 + 16..64], p1.dt);
    assert_eq!(&t.data[64 + 48..], p1.dtheta);
    assert_eq!(t.scalars.scale, 15.0);
    assert_eq!(t.scalars.linear, 0);
    assert_eq!(t.scalars.variant, 0);
    // Forward only: x̃ alone.
    let f = HostTables::pack(&w, false).unwrap();
    assert_eq!(f.data.len(), 32);
    assert_eq!(f.d, 0);
    // The exact closed form has no table.
    let exact = Warps::from_rows(&[3], vec![warp(0, false, &[0.1, 0.2, 0.3], true)]);
    assert!(HostTables::pack(&exact, true).is_none());
    // Gradient tables are only packed when the warps have them.
    let fwd = Warps::from_rows(&[3], vec![warp(16, false, &[0.1, 0.2, 0.3], false)]);
    assert!(HostTables::pack(&fwd, true).is_none());
    assert_eq!(HostTables::pack(&fwd, false).unwrap().data.len(), 16);
    // Rows of different sizes are refused.
    let mixed = Warps::from_rows(
        &[2, 3],
        vec![rows[0].clone(), warp(8, false, &[0.0; 3], true)],
    );
    assert!(HostTables::pack(&mixed, false).is_none());
    // Arguments point into the packed buffer.
    let s = Split::new(1000, DType::F32, &[0, 0, 0]);
    let plan = plan_grad(&s, 2, 16, 3, &H200);
    let ptrs = GradPtrs {
        tables: 0x10000,
        ..Default::default()
    };
    let a = grad_args(&t, &ptrs, 1000, 10, &s, &plan);
    assert_eq!(a.dt, 0x10000 + 32 * 4);
    assert_eq!(a.g, 0x10000 + 64 * 4);
    assert_eq!((a.channels, a.nodes, a.d, a.inner), (2, 16, 3, 10));
    let l = plan_forward(&s, 2, 16, &H200);
    let fa = fwd_args(&f, 0x20000, 0x1000, 0x2000, 1000, 0, &s, &l);
    assert_eq!(
        (fa.xt, fa.x, fa.y, fa.smem, fa.inner),
        (0x20000, 0x1000, 0x2000, 1, 1)
    );
}

#[test]
fn nothing_compiles_without_a_launch() {
    // Planning and packing never touch NVRTC or the driver.
    let s = Split::new(1 << 20, DType::F32, &[0, 0]);
    let _ = plan_forward(&s, 1, 2048, &H200);
    let _ = plan_grad(&s, 1, 2048, 9, &H200);
    assert!(std::env::var("DITAC_TEST_NVRTC").is_ok() || glue::compile_count() == 0);
}

/// Needs libnvrtc (CUDA 13) on the loader path; no GPU. Run with
/// `DITAC_TEST_NVRTC=1 cargo test --release --lib cuda -- --ignored`.
#[test]
#[ignore]
fn nvrtc_compiles_the_kernels() {
    for (major, minor) in [(9, 0), (8, 0), (10, 0)] {
        let cubin = glue::compile(major, minor).unwrap_or_else(|e| panic!("{e}"));
        assert!(cubin.len() > 1000);
        assert_eq!(&cubin[..4], b"\x7fELF");
    }
    // The PTX fallback for devices newer than this NVRTC.
    let archs = glue::supported_archs().unwrap();
    assert!(archs.contains(&90), "{archs:?}");
    let ptx = glue::compile_ptx(90).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ptx.last(), Some(&0));
    let text = String::from_utf8_lossy(&ptx);
    assert!(text.contains(".target sm_90"));
    assert!(text.contains(".entry ditac_grad_reduce"));
}

/// Needs libnvrtc (no GPU); run alone (it sets environment variables):
/// `DITAC_TEST_NVRTC=1 cargo test --release --lib nvrtc_disk_cache -- --ignored`.
/// The second compile of the same source, options and NVRTC comes from the disk cache (no NVRTC
/// call); a changed source (`DITAC_CUDA_SOURCE`) is compiled anew.
#[test]
#[ignore]
fn nvrtc_disk_cache_skips_the_second_compile() {
    let dir = std::env::temp_dir().join(format!("ditac-nvrtc-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // SAFETY (Rust 2024 wording): this ignored test runs alone.
    std::env::set_var("DITAC_CUDA_CACHE", &dir);
    std::env::remove_var(SOURCE_ENV);
    let n0 = glue::compile_count();
    let t = std::time::Instant::now();
    let a = glue::compile(9, 0).unwrap_or_else(|e| panic!("{e}"));
    let first = t.elapsed();
    assert_eq!(glue::compile_count(), n0 + 1);
    let t = std::time::Instant::now();
    let b = glue::compile(9, 0).unwrap();
    let second = t.elapsed();
    assert_eq!(
        glue::compile_count(),
        n0 + 1,
        "the second compile called NVRTC"
    );
    assert_eq!(a, b);
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(files.len(), 1);
    // Another architecture and PTX are other entries.
    glue::compile(8, 0).unwrap();
    glue::compile_ptx(90).unwrap();
    assert_eq!(glue::compile_count(), n0 + 3);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 3);
    // A changed source: compiled again, and cached beside.
    let changed = dir.join("changed.cu");
    std::fs::write(&changed, format!("{SOURCE}\n// changed\n")).unwrap();
    std::env::set_var(SOURCE_ENV, &changed);
    glue::compile(9, 0).unwrap();
    assert_eq!(glue::compile_count(), n0 + 4);
    glue::compile(9, 0).unwrap();
    assert_eq!(glue::compile_count(), n0 + 4);
    std::env::remove_var(SOURCE_ENV);
    println!("sm_90 cubin: NVRTC {first:?}, from the disk cache {second:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Needs libnvrtc (no GPU); run alone (it sets environment variables):
/// `DITAC_TEST_NVRTC=1 cargo test --release --lib precompiled -- --ignored`.
/// Images written by `precompile` (what tests/gpu/prepare.sh carries to a GPU machine) are what
/// `compile` returns from that folder, with no NVRTC compilation.
#[test]
#[ignore]
fn precompiled_images_are_used_without_compiling() {
    let dir = std::env::temp_dir().join(format!("ditac-precompiled-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::env::remove_var(SOURCE_ENV);
    let files = glue::precompile(&dir, 90).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(files.len(), 2, "{files:?}");
    std::env::set_var("DITAC_CUDA_CACHE", &dir);
    let n0 = glue::compile_count();
    let cubin = glue::compile(9, 0).unwrap();
    let ptx = glue::compile_ptx(90).unwrap();
    assert_eq!(glue::compile_count(), n0, "compiled although precompiled");
    assert_eq!(&cubin[..4], b"\x7fELF");
    assert_eq!(ptx.last(), Some(&0));
    // An architecture that was not precompiled is compiled (and cached beside).
    glue::compile(8, 0).unwrap();
    assert_eq!(glue::compile_count(), n0 + 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Where no `libnvrtc` can be opened (this machine and CI, unless the loader path has one), the
/// NVRTC calls are errors that name the library — not cudarc's panic, whose message and
/// backtrace would reach a server's standard error at every session.
#[test]
fn nvrtc_missing_is_an_error_naming_it() {
    // SAFETY: only dlopen attempts.
    if std::panic::catch_unwind(|| unsafe { cudarc::nvrtc::sys::is_culib_present() })
        .unwrap_or(true)
    {
        eprintln!("skipped: libnvrtc is on this loader path");
        return;
    }
    for e in [
        glue::nvrtc_version().map(|_| ()).unwrap_err(),
        glue::supported_archs().map(|_| ()).unwrap_err(),
    ] {
        assert!(e.to_string().contains("libnvrtc"), "{e}");
    }
}
