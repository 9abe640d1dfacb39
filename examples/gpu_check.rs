//! The GPU check (run by `tests/gpu/run.sh` on a machine with an NVIDIA GPU; see
//! `tests/gpu/README.md`). Through the same glue the plugin uses (`ditac::cuda::glue`: the
//! compiled kernels from the disk cache or NVRTC, the packed tables, the launch plans, the
//! plugin's `ResidentTables`), on streams of its own:
//!
//! 1. correctness, every case reported (going on after a CUDA error unless it left the context
//!    unusable): fresh random inputs (never zeros; special values in X, NaN and ±∞ in dY of one
//!    channel), outputs poisoned with NaN bits first (every element must be written), DiTAC
//!    forward and DiTACGrad for float, float16 and bfloat16, nearest and linear, the three
//!    variants, shared and per-channel tables, aligned and misaligned buffers, odd lengths —
//!    compared with the CPU core (float: ≤ 1e-6 relative; half types: one unit of their
//!    precision); dθ twice, bitwise equal (deterministic); two streams at once on one node's
//!    resident tables;
//! 2. timing with CUDA events at 2^20 … 2^28 elements (float): a device-to-device copy, the
//!    forward and the backward; PyTorch's `gelu` times are read from `$DITAC_TORCH_TIMES`
//!    (written by tests/gpu/torch_gelu.py) when present;
//! 3. a short table last, with the goals at ≥ 2^26 elements.
//!
//! Exit status 1 when a correctness check fails, 2 when CUDA is unusable (or timing failed),
//! 0 otherwise (the goals are reported, not enforced). Usage: `gpu_check [--max-log2 28]
//! [--min-log2 20] [--reps N] [--skip-timing | --timing-only] [--times-json PATH] [--quick]`; `gpu_check --sanitize` (small cases,
//! no timing: for compute-sanitizer); `gpu_check --self-test [--quick]` checks the checker on
//! the CPU (no GPU needed); `gpu_check --precompile DIR [--arch 80,90,100,120]` compiles the
//! kernels with NVRTC (no GPU needed) into DIR, for a GPU machine's `DITAC_CUDA_CACHE`.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use ditac::core::{basis, Attrs, BasisKind, Variant, Warps};
use ditac::cuda::glue::{self, DevBuf, ResidentTables, Stream};
use ditac::cuda::{DType, HostTables};

#[path = "../tests/cuda_host/check.rs"]
mod check;
use check::*;

/// Fills `count` elements at `ptr` with NaN bits.
fn poison(s: Stream, d: DType, ptr: u64, count: usize) -> glue::Result<()> {
    match d {
        DType::F32 => glue::fill_u32(s, ptr, POISON_F32, count),
        DType::F16 => glue::fill_u16(s, ptr, POISON_F16, count),
        DType::BF16 => glue::fill_u16(s, ptr, POISON_BF16, count),
    }
}

/// One device's results of a case: Y, dX (in the case's element type) and dθ.
type Results = (Vec<u8>, Vec<u8>, Vec<f32>);

/// A case's buffers on one stream's device, `offset` elements past an aligned start: X and dY
/// uploaded; Y, dX (offset included) and dθ poisoned, so that an element never written fails.
struct OnDevice {
    x: DevBuf,
    dy: DevBuf,
    y: DevBuf,
    dx: DevBuf,
    dtheta: DevBuf,
    /// Bytes from each buffer's start to the case's first element.
    off: u64,
    len: usize,
    width: usize,
    dtype: DType,
    /// Elements per channel run, as the kernels take it.
    inner: u64,
}

impl OnDevice {
    fn new(s: Stream, c: &Case, p: &Prepared) -> glue::Result<OnDevice> {
        let d = c.dtype;
        let es = d.size() as usize;
        let bytes = (c.len + c.offset) * es;
        let buf = || DevBuf::alloc(s, bytes);
        let dev = OnDevice {
            x: buf()?,
            dy: buf()?,
            y: buf()?,
            dx: buf()?,
            dtheta: DevBuf::alloc(s, p.dth_ref.len().max(1) * 4)?,
            off: (c.offset * es) as u64,
            len: c.len,
            width: p.dth_ref.len(),
            dtype: d,
            inner: if c.channels == 1 { c.len } else { c.inner } as u64,
        };
        glue::upload(s, dev.x.ptr() + dev.off, &to_bits(d, &p.x))?;
        glue::upload(s, dev.dy.ptr() + dev.off, &to_bits(d, &p.dy))?;
        poison(s, d, dev.y.ptr(), c.len + c.offset)?;
        poison(s, d, dev.dx.ptr(), c.len + c.offset)?;
        dev.poison_dtheta(s)?;
        Ok(dev)
    }

    fn poison_dtheta(&self, s: Stream) -> glue::Result<()> {
        glue::fill_u32(s, self.dtheta.ptr(), POISON_F32, self.width.max(1))
    }

    /// The forward into Y, tables at `tabs`.
    fn forward(&self, m: &glue::Module, s: Stream, t: &HostTables, tabs: u64) -> glue::Result<()> {
        let (x, y) = (self.x.ptr() + self.off, self.y.ptr() + self.off);
        glue::forward(m, s, self.dtype, t, tabs, x, y, self.len as u64, self.inner)
    }

    /// DiTACGrad into dX and dθ, tables at `tabs`.
    fn backward(&self, m: &glue::Module, s: Stream, t: &HostTables, tabs: u64) -> glue::Result<()> {
        glue::backward(
            m,
            &mut glue::stream_scratch(s),
            s,
            self.dtype,
            t,
            tabs,
            self.dy.ptr() + self.off,
            self.x.ptr() + self.off,
            self.dx.ptr() + self.off,
            self.dtheta.ptr(),
            self.len as u64,
            self.inner,
        )
    }

    fn dtheta(&self, s: Stream) -> glue::Result<Vec<f32>> {
        let mut v = vec![0f32; self.width];
        glue::download(s, &mut v, self.dtheta.ptr())?;
        Ok(v)
    }

    /// Y, dX and dθ (waits for the stream).
    fn results(&self, s: Stream) -> glue::Result<Results> {
        let bytes = self.len * self.dtype.size() as usize;
        let (mut y, mut dx) = (vec![0u8; bytes], vec![0u8; bytes]);
        glue::download(s, &mut y, self.y.ptr() + self.off)?;
        glue::download(s, &mut dx, self.dx.ptr() + self.off)?;
        Ok((y, dx, self.dtheta(s)?))
    }
}

fn run_case(
    s: Stream,
    m: &glue::Module,
    c: &Case,
    rng: &mut Rng,
    out: &mut Outcome,
) -> glue::Result<String> {
    let d = c.dtype;
    let p = prepare(c, rng);
    let tabs = DevBuf::alloc(s, p.t.data.len() * 4)?;
    glue::upload(s, tabs.ptr(), &p.t.data)?;
    let dev = OnDevice::new(s, c, &p)?;
    dev.forward(m, s, &p.t, tabs.ptr())?;
    dev.backward(m, s, &p.t, tabs.ptr())?;
    let (yb, dxb, dth) = dev.results(s)?;
    // The elements before the offset stay poisoned (nothing written outside the output).
    if c.offset > 0 {
        let mut pre = vec![0u8; dev.off as usize];
        glue::download(s, &mut pre, dev.y.ptr())?;
        out.check(from_bits(d, &pre).iter().all(|v| v.is_nan()), || {
            format!("{}: wrote before its output", c.name)
        });
    }
    compare(c, &p, &from_bits(d, &yb), &from_bits(d, &dxb), &dth, out);
    // Determinism: the same input gives the same dθ bits.
    dev.poison_dtheta(s)?;
    dev.backward(m, s, &p.t, tabs.ptr())?;
    let dth2 = dev.dtheta(s)?;
    out.check(same_bits(&dth, &dth2), || {
        format!("{}: dtheta differs between two runs", c.name)
    });
    Ok(format!(
        "dθ[0] {:+.6e} (CPU {:+.6e})",
        dth.first().copied().unwrap_or(0.0),
        p.dth_ref.first().copied().unwrap_or(0.0)
    ))
}

/// The plugin's path on two streams at once: two threads, each with a stream of its own, start
/// together on one node's [`ResidentTables`] (the first run on a context uploads the constant
/// tables; the other must not read them before they land), then run the forward and DiTACGrad.
/// Both results are compared with the CPU core and with each other, bit for bit.
fn two_streams(c: &Case, rng: &mut Rng, out: &mut Outcome) -> glue::Result<String> {
    let d = c.dtype;
    let p = prepare(c, rng);
    let resident = ResidentTables::default();
    let start = std::sync::Barrier::new(2);
    let one = || -> glue::Result<Results> {
        let ready = (|| {
            glue::init_device(0)?;
            let s = glue::new_stream()?;
            let m = glue::module_for(s)?;
            let dev = OnDevice::new(s, c, &p)?;
            glue::sync(s)?;
            Ok((s, m, dev))
        })();
        // Both threads reach the barrier, ready or not (an error must not leave the other
        // waiting); then both start on the tables at once.
        start.wait();
        let (s, m, dev) = ready?;
        let tabs = resident.get(&m, s, &p.t.data)?;
        dev.forward(&m, s, &p.t, tabs.ptr())?;
        dev.backward(&m, s, &p.t, tabs.ptr())?;
        dev.results(s)
    };
    let (a, b) = std::thread::scope(|sc| {
        let h = sc.spawn(one);
        let b = one();
        (
            h.join()
                .unwrap_or_else(|_| Err(glue::CudaError::Unavailable("thread panicked".into()))),
            b,
        )
    });
    let (a, b) = (a?, b?);
    for (k, r) in [&a, &b].into_iter().enumerate() {
        let mut named = c.clone();
        named.name = format!("{} (stream {k})", c.name);
        compare(
            &named,
            &p,
            &from_bits(d, &r.0),
            &from_bits(d, &r.1),
            &r.2,
            out,
        );
    }
    out.check(a.0 == b.0 && a.1 == b.1 && same_bits(&a.2, &b.2), || {
        format!("{}: the two streams' results differ", c.name)
    });
    Ok(format!("two streams, {} B of tables", p.t.data.len() * 4))
}

/// Checks the checker without a GPU: every case's CPU results, handed in as if from the device,
/// must pass; with one output element left poisoned, or dθ perturbed, it must fail.
fn self_test(quick: bool) -> i32 {
    let mut rng = Rng::new(nanos());
    let mut bad = 0;
    for c in cases(quick).into_iter().chain(stream_cases(true)) {
        let p = prepare(&c, &mut rng);
        let dth: Vec<f32> = p.dth_ref.iter().map(|&v| v as f32).collect();
        let mut ok = Outcome {
            fails: Vec::new(),
            quiet: false,
        };
        compare(&c, &p, &p.y_ref, &p.dx_ref, &dth, &mut ok);
        let mut y = p.y_ref.clone();
        let mid = y.len() / 2;
        y[mid] = f32::NAN;
        let mut poisoned = Outcome {
            fails: Vec::new(),
            quiet: true,
        };
        if !p.y_ref[mid].is_nan() {
            compare(&c, &p, &y, &p.dx_ref, &dth, &mut poisoned);
        }
        let mut dth2 = dth.clone();
        if let Some(v) = dth2.first_mut() {
            *v = *v * 1.001 + 1.0;
        }
        let mut off = Outcome {
            fails: Vec::new(),
            quiet: true,
        };
        compare(&c, &p, &p.y_ref, &p.dx_ref, &dth2, &mut off);
        // NaN/∞ in the last channel's dY: that channel's dθ is not finite, the others' are.
        let planted = !c.nan_dy
            || (p.dth_ref.iter().any(|v| !v.is_finite())
                && p.dth_ref[..p.t.d as usize].iter().all(|v| v.is_finite()));
        let pass = planted
            && ok.fails.is_empty()
            && (p.y_ref[mid].is_nan() || !poisoned.fails.is_empty())
            && (dth.is_empty() || !off.fails.is_empty());
        bad += !pass as i32;
        println!(
            "self-test {:<44} {}",
            c.name,
            if pass { "ok" } else { "FAIL" }
        );
    }
    (bad > 0) as i32
}

fn cases(quick: bool) -> Vec<Case> {
    let mut v = Vec::new();
    let n = if quick { 100_003 } else { 1_000_003 };
    for dtype in DType::ALL {
        for (variant, vname) in [
            (Variant::Ditac, "ditac"),
            (Variant::Ge, "ge"),
            (Variant::Leaky, "leaky"),
        ] {
            for linear in [false, true] {
                v.push(Case {
                    name: format!(
                        "{}/{vname}/{}",
                        dtype.suffix(),
                        if linear { "linear" } else { "nearest" }
                    ),
                    dtype,
                    variant,
                    linear,
                    channels: 1,
                    inner: 1,
                    len: n,
                    offset: 0,
                    lut: 2048,
                    tess: 10,
                    nan_dy: false,
                });
            }
        }
        // Per-channel tables: NCHW-like (long runs) and channel-last (inner = 1).
        v.push(Case {
            name: format!("{}/ditac/nearest/C=3,inner=4099/nan-dy", dtype.suffix()),
            dtype,
            variant: Variant::Ditac,
            linear: false,
            channels: 3,
            inner: 4099,
            len: 3 * 4099 * 5,
            offset: 0,
            lut: 2048,
            tess: 10,
            nan_dy: true,
        });
        v.push(Case {
            name: format!("{}/ditac/linear/C=16,inner=1", dtype.suffix()),
            dtype,
            variant: Variant::Ditac,
            linear: true,
            channels: 16,
            inner: 1,
            len: 16 * 6007,
            offset: 0,
            lut: 2048,
            tess: 10,
            nan_dy: false,
        });
        // Misaligned buffers and a short tensor.
        v.push(Case {
            name: format!("{}/ditac/nearest/offset=1", dtype.suffix()),
            dtype,
            variant: Variant::Ditac,
            linear: false,
            channels: 1,
            inner: 1,
            len: 10_007,
            offset: 1,
            lut: 2048,
            tess: 10,
            nan_dy: false,
        });
        v.push(Case {
            name: format!("{}/ge/nearest/len=5", dtype.suffix()),
            dtype,
            variant: Variant::Ge,
            linear: false,
            channels: 1,
            inner: 1,
            len: 5,
            offset: 3,
            lut: 64,
            tess: 10,
            nan_dy: false,
        });
        // A large table (global memory, not shared).
        v.push(Case {
            name: format!("{}/ditac/linear/lut=65536", dtype.suffix()),
            dtype,
            variant: Variant::Ditac,
            linear: true,
            channels: 1,
            inner: 1,
            len: 200_003,
            offset: 0,
            lut: 65536,
            tess: 10,
            nan_dy: false,
        });
        // Per-warp dθ accumulators in global memory (C·d = 2 304 values a warp does not fit
        // beside the tables), and d = 19 > 16 register rows; an odd offset at a large length.
        v.push(Case {
            name: format!(
                "{}/ditac/linear/C=256,inner=1,lut=16/nan-dy",
                dtype.suffix()
            ),
            dtype,
            variant: Variant::Ditac,
            linear: true,
            channels: 256,
            inner: 1,
            len: 256 * 401 + 3,
            offset: 0,
            lut: 16,
            tess: 10,
            nan_dy: true,
        });
        v.push(Case {
            name: format!("{}/leaky/nearest/tess=20,offset=3", dtype.suffix()),
            dtype,
            variant: Variant::Leaky,
            linear: false,
            channels: 1,
            inner: 1,
            len: n,
            offset: 3,
            lut: 2048,
            tess: 20,
            nan_dy: false,
        });
    }
    v
}

/// Small versions of every case, for compute-sanitizer (which slows kernels a hundredfold): at
/// most 4 099 elements, or one run of each channel and a bit.
fn sanitizer_cases() -> Vec<Case> {
    cases(true)
        .into_iter()
        .map(|mut c| {
            c.len = c.len.min(4_099.max(c.channels * c.inner + 50));
            c.name += " (small)";
            c
        })
        .collect()
}

/// The cases run on two streams at once.
fn stream_cases(small: bool) -> Vec<Case> {
    let n = if small { 4_099 } else { 1 << 22 };
    let mut v: Vec<Case> = Vec::new();
    for (dtype, linear, channels, inner) in
        [(DType::F32, false, 1, 1), (DType::F16, true, 3, n / 7)]
    {
        v.push(Case {
            name: format!(
                "{}/ditac/{}/C={channels}/two-streams",
                dtype.suffix(),
                if linear { "linear" } else { "nearest" }
            ),
            dtype,
            variant: Variant::Ditac,
            linear,
            channels,
            inner,
            len: n + 5,
            offset: 0,
            lut: 2048,
            tess: 10,
            nan_dy: false,
        });
    }
    v
}

struct Timing {
    log2: u32,
    copy_ms: f32,
    fwd_ms: f32,
    grad_ms: f32,
    fwd16_ms: f32,
}

fn time_sizes(
    s: Stream,
    m: &glue::Module,
    lo: u32,
    hi: u32,
    reps_arg: Option<u32>,
) -> glue::Result<Vec<Timing>> {
    let attrs = Attrs::default();
    let b = basis::build(attrs.tess(), attrs.zero_boundary(), BasisKind::Qr).expect("basis");
    let theta: Vec<f32> = (0..attrs.theta_len())
        .map(|k| 0.3 * ((k as f32) * 0.7).sin())
        .collect();
    let warps = Warps::<f32>::from_theta(&attrs, &b, &[theta.len()], &theta, true).expect("warps");
    let t = HostTables::pack(&warps, true).expect("tables");
    let tabs = DevBuf::alloc(s, t.data.len() * 4)?;
    glue::upload(s, tabs.ptr(), &t.data)?;
    let nmax = 1usize << hi;
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15 ^ nanos());
    let host: Vec<f32> = (0..1 << 20).map(|_| rng.uniform(-1.5, 3.0)).collect();
    let bx = DevBuf::alloc(s, nmax * 4)?;
    let bdy = DevBuf::alloc(s, nmax * 4)?;
    let by = DevBuf::alloc(s, nmax * 4)?;
    let bdth = DevBuf::alloc(s, t.d as usize * 4)?;
    // Fill X and dY with copies of 2^20 random values.
    let chunk = host.len().min(nmax);
    for k in 0..nmax / chunk {
        glue::upload(s, bx.ptr() + (k * chunk * 4) as u64, &host[..chunk])?;
        glue::upload(s, bdy.ptr() + (k * chunk * 4) as u64, &host[..chunk])?;
    }
    glue::sync(s)?;
    let mut out = Vec::new();
    for log2 in lo..=hi {
        let n = 1usize << log2;
        let reps = reps_arg.unwrap_or(((1u32 << 28) >> log2).clamp(5, 200));
        let copy = || glue::copy_d2d(s, by.ptr(), bx.ptr(), n * 4);
        let fwd = || {
            glue::forward(
                m,
                s,
                DType::F32,
                &t,
                tabs.ptr(),
                bx.ptr(),
                by.ptr(),
                n as u64,
                n as u64,
            )
        };
        let fwd16 = || {
            glue::forward(
                m,
                s,
                DType::F16,
                &t,
                tabs.ptr(),
                bx.ptr(),
                by.ptr(),
                n as u64,
                n as u64,
            )
        };
        let grad = || {
            glue::backward(
                m,
                &mut glue::stream_scratch(s),
                s,
                DType::F32,
                &t,
                tabs.ptr(),
                bdy.ptr(),
                bx.ptr(),
                by.ptr(),
                bdth.ptr(),
                n as u64,
                n as u64,
            )
        };
        // Warm up each, then time.
        for f in [&copy as &dyn Fn() -> glue::Result<()>, &fwd, &fwd16, &grad] {
            f()?;
            f()?;
        }
        glue::sync(s)?;
        let copy_ms = glue::time_ms(s, reps, copy)?;
        let fwd_ms = glue::time_ms(s, reps, fwd)?;
        let fwd16_ms = glue::time_ms(s, reps, fwd16)?;
        let grad_ms = glue::time_ms(s, reps, grad)?;
        out.push(Timing {
            log2,
            copy_ms,
            fwd_ms,
            grad_ms,
            fwd16_ms,
        });
        eprintln!("timed 2^{log2} ({reps} reps)");
    }
    Ok(out)
}

fn nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1
}

/// PyTorch gelu times (µs by log2 size) from the JSON written by tests/gpu/torch_gelu.py.
fn torch_times() -> BTreeMap<u32, f64> {
    let mut m = BTreeMap::new();
    let Some(path) = std::env::var_os("DITAC_TORCH_TIMES") else {
        return m;
    };
    let Ok(text) = std::fs::read_to_string(path) else {
        return m;
    };
    if let Ok(serde_json::Value::Object(o)) = serde_json::from_str::<serde_json::Value>(&text) {
        for (k, v) in o {
            if let (Ok(k), Some(v)) = (k.parse::<u32>(), v.as_f64()) {
                m.insert(k, v);
            }
        }
    }
    m
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| -> Option<String> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let lo: u32 = arg("--min-log2").and_then(|v| v.parse().ok()).unwrap_or(20);
    let hi: u32 = arg("--max-log2").and_then(|v| v.parse().ok()).unwrap_or(28);
    let reps: Option<u32> = arg("--reps").and_then(|v| v.parse().ok());
    let has = |name: &str| args.iter().any(|a| a == name);
    let sanitize = has("--sanitize");
    let quick = has("--quick");
    let opts = Opts {
        lo,
        hi,
        reps,
        correctness: !has("--timing-only"),
        timing: !(sanitize || has("--skip-timing")),
        quick,
        sanitize,
        times_json: arg("--times-json").map(std::path::PathBuf::from),
    };
    if args.iter().any(|a| a == "--self-test") {
        std::process::exit(self_test(quick));
    }
    if let Some(dir) = arg("--precompile") {
        let archs = arg("--arch").unwrap_or_else(|| "80,90,100,120".into());
        std::process::exit(precompile(std::path::Path::new(&dir), &archs));
    }
    match run(&opts) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("gpu_check: {e}");
            std::process::exit(2);
        }
    }
}

/// `--precompile DIR --arch 80,90`: the kernels compiled here (NVRTC, no GPU) into DIR, for a
/// GPU machine's `DITAC_CUDA_CACHE` (tests/gpu/prepare.sh).
fn precompile(dir: &std::path::Path, archs: &str) -> i32 {
    // The command line first, then the library.
    let mut list = Vec::new();
    for arch in archs.split(',') {
        let Ok(arch) = arch.trim().parse::<i32>() else {
            eprintln!("gpu_check --precompile: --arch takes numbers such as 80,90: got '{arch}'");
            return 2;
        };
        list.push(arch);
    }
    match glue::nvrtc_version() {
        Ok((a, b)) => println!("NVRTC {a}.{b}"),
        Err(e) => {
            eprintln!("gpu_check --precompile: {e}");
            return 2;
        }
    }
    for arch in list {
        let t0 = std::time::Instant::now();
        match glue::precompile(dir, arch) {
            Ok(files) => {
                for f in files {
                    let size = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
                    println!(
                        "sm_{arch}: {} ({size} bytes, {:.1} s)",
                        f.display(),
                        t0.elapsed().as_secs_f64()
                    );
                }
            }
            Err(e) => {
                eprintln!("gpu_check --precompile: sm_{arch}: {e}");
                return 2;
            }
        }
    }
    0
}

/// Whether the context still works after an error (a sticky error — an illegal address, a
/// kernel fault — leaves it unusable: nothing more can run in this process).
fn usable(s: Stream) -> bool {
    glue::sync(s).is_ok() && DevBuf::alloc(s, 256).is_ok()
}

/// Prints a case's line; an error is a failure. Returns whether the error was sticky.
fn report(s: Stream, c: &Case, r: glue::Result<String>, outcome: &mut Outcome) -> bool {
    let before = outcome.fails.len();
    let mut sticky = false;
    let detail = match r {
        Ok(d) => d,
        Err(err) => {
            outcome.check(false, || format!("{}: {err}", c.name));
            sticky = !usable(s);
            err.to_string()
        }
    };
    println!(
        "{} {:<48} len {:>9}  {detail}",
        if outcome.fails.len() == before {
            "ok  "
        } else {
            "FAIL"
        },
        c.name,
        c.len
    );
    sticky
}

/// Correctness (every case reported, going on after an error that leaves the context usable),
/// then timing. `Ok(false)`: some correctness check failed.
/// What to run (the command line).
struct Opts {
    lo: u32,
    hi: u32,
    reps: Option<u32>,
    /// `--timing-only` turns it off (tests/gpu/run.sh checks correctness in a first call).
    correctness: bool,
    /// `--skip-timing` and `--sanitize` turn it off.
    timing: bool,
    quick: bool,
    sanitize: bool,
    /// `--times-json PATH`: the timings written there (for tests/gpu/torch_gelu.py's comparison).
    times_json: Option<std::path::PathBuf>,
}

fn run(o: &Opts) -> Result<bool, String> {
    let (lo, hi, reps) = (o.lo, o.hi, o.reps);
    let e = |e: glue::CudaError| e.to_string();
    glue::init_device(0).map_err(e)?;
    let name = glue::device_name().map_err(e)?;
    let s = glue::new_stream().map_err(e)?;
    let t0 = std::time::Instant::now();
    let m = glue::module_for(s).map_err(e)?;
    println!(
        "device: {name} (sm_{}{}); kernels compiled or read from the cache ({}) and loaded in {:.1} s; NVRTC compilations: {}",
        m.major,
        m.minor,
        ditac::cuda::cache::dir().map_or("off".into(), |d| d.display().to_string()),
        t0.elapsed().as_secs_f64(),
        glue::compile_count()
    );
    let seed = nanos();
    println!("seed {seed}");
    let mut rng = Rng::new(seed);
    let mut outcome = Outcome {
        fails: Vec::new(),
        quiet: false,
    };
    let (cases, streams) = if !o.correctness {
        (Vec::new(), Vec::new())
    } else if o.sanitize {
        (sanitizer_cases(), stream_cases(true))
    } else {
        (cases(o.quick), stream_cases(o.quick))
    };
    let total = cases.len() + streams.len();
    let mut sticky = false;
    let mut ran = 0;
    for c in &cases {
        ran += 1;
        let r = run_case(s, &m, c, &mut rng, &mut outcome);
        sticky = report(s, c, r, &mut outcome);
        if sticky {
            break;
        }
    }
    if !sticky {
        for c in &streams {
            ran += 1;
            let r = two_streams(c, &mut rng, &mut outcome);
            sticky = report(s, c, r, &mut outcome);
            if sticky {
                break;
            }
        }
    }
    if sticky {
        println!(
            "the CUDA context is unusable after that error (a sticky error): {} of {total} cases not run, no timing",
            total - ran
        );
    }
    // A failure while timing still leaves the correctness summary to print.
    let mut timing_error = None;
    let timings = if !o.timing || sticky {
        Vec::new()
    } else {
        time_sizes(s, &m, lo, hi, reps).unwrap_or_else(|err| {
            println!("timing stopped: {err}");
            timing_error = Some(format!("timing: {err}"));
            Vec::new()
        })
    };
    if let (Some(path), false) = (&o.times_json, timings.is_empty()) {
        let doc: serde_json::Map<String, serde_json::Value> = timings
            .iter()
            .map(|t| {
                let us = |ms: f32| serde_json::json!((ms as f64 * 1e3 * 100.0).round() / 100.0);
                (
                    t.log2.to_string(),
                    serde_json::json!({
                        "copy_us": us(t.copy_ms),
                        "ditac_f32_us": us(t.fwd_ms),
                        "ditac_f16_us": us(t.fwd16_ms),
                        "ditacgrad_f32_us": us(t.grad_ms),
                    }),
                )
            })
            .collect();
        if let Err(err) = std::fs::write(path, serde_json::Value::Object(doc).to_string()) {
            println!("could not write {}: {err}", path.display());
        }
    }
    let torch = torch_times();
    println!();
    if o.correctness {
        println!(
            "correctness: {ran} of {total} cases run, {} failure(s)",
            outcome.fails.len()
        );
    }
    if !timings.is_empty() {
        println!();
        println!("| n | copy GB/s | DiTAC f32 µs | GB/s | % copy | DiTAC f16 µs | DiTACGrad f32 µs | GB/s | % copy | torch gelu µs |");
        println!("|---|---|---|---|---|---|---|---|---|---|");
        let mut goals = Vec::new();
        for t in &timings {
            let n = (1u64 << t.log2) as f64;
            let gbs = |bytes: f64, ms: f32| bytes / (ms as f64 * 1e-3) / 1e9;
            let copy = gbs(2.0 * 4.0 * n, t.copy_ms);
            let fwd = gbs(2.0 * 4.0 * n, t.fwd_ms);
            let grad = gbs(3.0 * 4.0 * n, t.grad_ms);
            let gelu = torch.get(&t.log2).copied();
            println!(
                "| 2^{} | {:.0} | {:.1} | {:.0} | {:.0}% | {:.1} | {:.1} | {:.0} | {:.0}% | {} |",
                t.log2,
                copy,
                t.fwd_ms * 1e3,
                fwd,
                100.0 * fwd / copy,
                t.fwd16_ms * 1e3,
                t.grad_ms * 1e3,
                grad,
                100.0 * grad / copy,
                gelu.map_or("-".to_string(), |g| format!("{g:.1}"))
            );
            if t.log2 >= 26 {
                goals.push(format!(
                    "2^{}: DiTAC {:.0}% of copy (goal ≥ 85%): {}; faster than gelu: {}; DiTACGrad {:.0}% (goal ≥ 60%): {}",
                    t.log2,
                    100.0 * fwd / copy,
                    if fwd >= 0.85 * copy { "met" } else { "NOT met" },
                    match gelu {
                        Some(g) => if (t.fwd_ms as f64 * 1e3) < g { "yes" } else { "NO" },
                        None => "no torch timing",
                    },
                    100.0 * grad / copy,
                    if grad >= 0.6 * copy { "met" } else { "NOT met" },
                ));
            }
        }
        println!();
        for g in goals {
            println!("{g}");
        }
    }
    if let Some(first) = outcome.fails.first() {
        println!("first failure: {first}");
    }
    let correct = outcome.fails.is_empty() && !sticky;
    match timing_error {
        Some(err) if correct => Err(err),
        _ => Ok(correct),
    }
}
