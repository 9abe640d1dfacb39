//! The checker shared by the GPU check (`examples/gpu_check.rs`, on a device) and the CPU
//! emulation of the kernels (`tests/cuda_host/emu.rs`): random inputs with special values
//! planted, the CPU core's results on them, and the comparison within ops/README.md's
//! tolerances (float ≤ 1e-6 relative; float16/bfloat16 one unit of their precision; dθ 1e-6 /
//! 1e-5 relative).
#![allow(dead_code)]

use ditac::core::rng::XorShift64;
use ditac::core::{basis, Attrs, BasisKind, Interpolation, Variant, Warps};
use ditac::cuda::{DType, HostTables};
use half::{bf16, f16};

/// The checker's draws: the project's xorshift64 stream (`ditac::core::rng`), scaled.
pub struct Rng(pub XorShift64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(XorShift64(seed))
    }
    /// Uniform in [lo, hi), never exactly zero.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        loop {
            let v = lo + (hi - lo) * self.0.unit_f32();
            if v != 0.0 {
                return v;
            }
        }
    }
}

pub fn to_bits(d: DType, v: &[f32]) -> Vec<u8> {
    match d {
        DType::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        DType::F16 => v
            .iter()
            .flat_map(|x| f16::from_f32(*x).to_le_bytes())
            .collect(),
        DType::BF16 => v
            .iter()
            .flat_map(|x| bf16::from_f32(*x).to_le_bytes())
            .collect(),
    }
}

pub fn from_bits(d: DType, b: &[u8]) -> Vec<f32> {
    match d {
        DType::F32 => b
            .chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        DType::F16 => b
            .chunks(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        DType::BF16 => b
            .chunks(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
    }
}

/// Rounds to the precision of `d` (what the device sees of a host value).
pub fn round(d: DType, v: &[f32]) -> Vec<f32> {
    from_bits(d, &to_bits(d, v))
}

/// NaN bits the outputs are filled with before a run, so that an element never written stays
/// recognisable (no arithmetic produces these payloads: the device's results on NaN are the
/// input's NaN or the canonical one).
pub const POISON_F32: u32 = 0x7fc0_0001;
pub const POISON_F16: u16 = 0x7e01;
pub const POISON_BF16: u16 = 0x7fc1;

/// One poison element of `d`, as bytes.
pub fn poison_element(d: DType) -> Vec<u8> {
    match d {
        DType::F32 => POISON_F32.to_le_bytes().to_vec(),
        DType::F16 => POISON_F16.to_le_bytes().to_vec(),
        DType::BF16 => POISON_BF16.to_le_bytes().to_vec(),
    }
}

/// Whether an output value (converted to float) is the poison of `d`: never written.
pub fn is_poison(d: DType, v: f32) -> bool {
    v.to_bits() == from_bits(d, &poison_element(d))[0].to_bits()
}

#[derive(Clone)]
pub struct Case {
    pub name: String,
    pub dtype: DType,
    pub variant: Variant,
    pub linear: bool,
    pub channels: usize,
    pub inner: usize,
    pub len: usize,
    /// Elements by which the buffers start past a 256-byte boundary.
    pub offset: usize,
    pub lut: i64,
    /// Tessellation (d = tess − 1 with the zero boundary).
    pub tess: i64,
    /// NaN and ±∞ planted in dY of the last channel (needs channels ≥ 2): that channel's dθ is
    /// NaN, the others' must stay finite and exact.
    pub nan_dy: bool,
}

/// Allowed difference from the CPU for an output of `d`: 1e-6 relative for float, one unit
/// of the type's precision (2^-10, 2^-7 relative) for the half types.
pub fn tol(d: DType, want: f32, floor: f32) -> f32 {
    let rel = match d {
        DType::F32 => 1e-6,
        DType::F16 => 1.0 / 1024.0,
        DType::BF16 => 1.0 / 128.0,
    };
    let min_normal = match d {
        DType::F16 => 6.103_515_6e-5,
        _ => 0.0,
    };
    rel * want.abs().max(floor).max(min_normal)
}

/// Whether two results are the same bits (NaN payloads included): dθ's determinism.
pub fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.iter()
        .map(|v| v.to_bits())
        .eq(b.iter().map(|v| v.to_bits()))
}

pub fn same(got: f32, want: f32, t: f32) -> bool {
    (got.is_nan() && want.is_nan()) || got == want || (got - want).abs() <= t
}

pub struct Outcome {
    pub fails: Vec<String>,
    /// Do not print failures (the self-test's expected ones).
    pub quiet: bool,
}

impl Outcome {
    pub fn check(&mut self, cond: bool, msg: impl FnOnce() -> String) {
        if !cond {
            let m = msg();
            if !self.quiet {
                eprintln!("FAIL {m}");
            }
            self.fails.push(m);
        }
    }
}

/// A case's inputs, tables and the CPU core's results on them.
pub struct Prepared {
    pub t: HostTables,
    pub x: Vec<f32>,
    pub dy: Vec<f32>,
    pub y_ref: Vec<f32>,
    pub dx_ref: Vec<f32>,
    pub dth_ref: Vec<f64>,
}

pub fn prepare(c: &Case, rng: &mut Rng) -> Prepared {
    let d = c.dtype;
    let attrs = Attrs {
        variant: c.variant,
        interpolation: if c.linear {
            Interpolation::Linear
        } else {
            Interpolation::Nearest
        },
        lut_size: c.lut,
        tess: c.tess,
        ..Attrs::default()
    };
    let dd = attrs.theta_len();
    let b = basis::build(attrs.tess(), attrs.zero_boundary(), BasisKind::Qr).expect("basis");
    let theta: Vec<f32> = (0..c.channels * dd)
        .map(|_| rng.uniform(-0.8, 0.8))
        .collect();
    let warps =
        Warps::<f32>::from_theta(&attrs, &b, &[c.channels, dd], &theta, true).expect("warps");
    let acts = warps.rows();
    let t = HostTables::pack(&warps, true).expect("tables");
    // Inputs: mostly inside [a, b] = [-0.5, 2], some outside, a few special values.
    let mut x: Vec<f32> = (0..c.len).map(|_| rng.uniform(-1.5, 3.0)).collect();
    let specials = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        -0.5,
        2.0,
        1e-30,
        -1e-30,
    ];
    for (k, v) in specials.iter().enumerate() {
        if k * 97 < c.len {
            x[k * 97] = *v;
        }
    }
    let mut dy: Vec<f32> = (0..c.len).map(|_| rng.uniform(-2.0, 2.0)).collect();
    let ch = |i: usize| (i / c.inner) % c.channels;
    if c.nan_dy {
        assert!(c.channels >= 2, "{}: nan_dy needs two channels", c.name);
        let last: Vec<usize> = (0..c.len).filter(|&i| ch(i) == c.channels - 1).collect();
        for (k, v) in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY]
            .iter()
            .enumerate()
        {
            if let Some(&i) = last.get(k * last.len() / 3 + 1) {
                dy[i] = *v;
                // Inside [a, b], where an element adds to dθ (outside, it adds nothing).
                let margin = 0.05 * (attrs.b - attrs.a);
                x[i] = rng.uniform(attrs.a + margin, attrs.b - margin);
            }
        }
    }
    let (x, dy) = (round(d, &x), round(d, &dy));
    // CPU reference (the core, per channel run).
    let mut y_ref = vec![0f32; c.len];
    let mut dx_ref = vec![0f32; c.len];
    let mut dth_ref = vec![0f64; c.channels * dd];
    let mut i = 0;
    while i < c.len {
        let k = ch(i);
        let e = (i / c.inner + 1) * c.inner;
        let e = e.min(c.len);
        acts[k].forward(&x[i..e], &mut y_ref[i..e]);
        // The scalar reference: dθ summed element by element, s = dY·g·(b−a) rounded to float
        // and multiplied by the dT̂/dθ row in f64 — the kernels' op order. The vector kernels
        // sum per table node first and differ from it by up to ~3e-6 relative on dθ entries with
        // cancellation (found by the CPU emulation, tests/cuda_host), beyond the 1e-6 below.
        acts[k].backward_reference(
            &dy[i..e],
            &x[i..e],
            &mut dx_ref[i..e],
            &mut dth_ref[k * dd..(k + 1) * dd],
        );
        i = e;
    }
    let (y_ref, dx_ref) = (round(d, &y_ref), round(d, &dx_ref));
    Prepared {
        t,
        x,
        dy,
        y_ref,
        dx_ref,
        dth_ref,
    }
}

/// Checks device results against the CPU core's (tolerances in the module docs).
pub fn compare(c: &Case, p: &Prepared, y: &[f32], dx: &[f32], dth: &[f32], out: &mut Outcome) {
    let d = c.dtype;
    let (x, dy, y_ref, dx_ref, dth_ref) = (&p.x, &p.dy, &p.y_ref, &p.dx_ref, &p.dth_ref);
    let mut worst = (0f32, 0usize);
    let mut bad = 0usize;
    for i in 0..c.len {
        let ok = same(y[i], y_ref[i], tol(d, y_ref[i], 1e-30)) && !is_poison(d, y[i]);
        if !ok {
            bad += 1;
            let r = (y[i] - y_ref[i]).abs() / y_ref[i].abs().max(1e-30);
            if r > worst.0 || r.is_nan() {
                worst = (r, i);
            }
        }
    }
    out.check(bad == 0, || {
        let i = worst.1;
        format!(
            "{}: forward: {bad} of {} differ; e.g. x[{i}] = {} → {} (CPU {})",
            c.name, c.len, x[i], y[i], y_ref[i]
        )
    });
    let mut bad = 0usize;
    let mut first = None;
    for i in 0..c.len {
        // dX: relative to the size of its terms, |dY|·(|∂y/∂x̃·dx̃/dx| + |direct|) ≤
        // 2·|dY|·(1 + |x|): g·dT and the direct term may cancel, and the device's expf (in φ')
        // may differ from the host's by an ulp.
        let ok = same(
            dx[i],
            dx_ref[i],
            tol(d, dx_ref[i], 2.0 * dy[i].abs() * (1.0 + x[i].abs())),
        ) && !is_poison(d, dx[i]);
        if !ok {
            bad += 1;
            first.get_or_insert(i);
        }
    }
    out.check(bad == 0, || {
        let i = first.unwrap_or(0);
        format!(
            "{}: dX: {bad} of {} differ; e.g. x[{i}] = {}, dy = {} → {} (CPU {})",
            c.name, c.len, x[i], dy[i], dx[i], dx_ref[i]
        )
    });
    // The scale of dθ: its largest finite entry (a channel with NaN or ∞ in dY has
    // non-finite entries, which must match as NaN/∞ themselves).
    let big = dth_ref
        .iter()
        .filter(|v| v.is_finite())
        .fold(0f64, |a, v| a.max(v.abs())) as f32;
    for (k, (&g, &w)) in dth.iter().zip(dth_ref.iter()).enumerate() {
        let w = w as f32;
        let rel = if d == DType::F32 { 1e-6 } else { 1e-5 };
        out.check(
            same(g, w, rel * w.abs().max(1e-3 * big)) && !is_poison(DType::F32, g),
            || format!("{}: dtheta[{k}] = {g} (CPU {w})", c.name),
        );
    }
}
