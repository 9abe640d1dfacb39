//! Float32 kernels: a portable scalar body (the reference) and vector kernels for AVX2, AVX-512
//! and NEON chosen at run time ([`Isa`]: `is_x86_feature_detected!` or
//! `is_aarch64_feature_detected!`, capped by `DITAC_ISA`). The vector
//! table forward gives, lane by lane, the bits of the scalar body: the same table index and nodes, and an erf that performs the scalar
//! erf's IEEE operations (fused multiply-adds, a true division; on |x| with the sign put back,
//! and without the clamps that provably change nothing: checked on every float32). Two vectors are
//! computed per step so that the polynomial constants are loaded once for both. The backward kernel
//! (where bit-identity is not asked for) uses fused multiply-adds and a reciprocal step in Φ and a
//! polynomial exp (≤ 2 ulp), and dθ is accumulated through a per-node histogram (f64) reduced once
//! per call, fed with the in-range terms only (compacted, in order): deterministic, independent of
//! the lane count and of the thread count. Exact mode ([`exact_forward`]) interpolates a table
//! checked against the closed form ([`FastTable`]) and sends the lanes it cannot serve through a
//! path that costs the same per trajectory however many cells it crosses.
//!
//! Per-channel tables are handled in one pass: `xt` (and the gradient tables) hold the C rows one
//! after the other, and each element's row is found from its position ([`Channels`]).
//!
//! Layout: this file holds the public API and the run-time dispatch; `params.rs` what the table
//! kernels read, `exact.rs` the exact mode's tables, `scalar.rs` the reference bodies, `lanes/`
//! the vector kernels, written once over a lanes abstraction and instantiated per instruction set
//! (`lanes/avx2.rs`, `lanes/avx512.rs`, `lanes/neon.rs`). Imports go one way: this file uses the
//! others; `lanes/` and `scalar.rs` read `params.rs` and `exact.rs`, which import nothing of the
//! kernels.

use super::config::Variant;

/// `$body` with the const generics `$V` (0, 1, 2: Ditac, Ge, Leaky) and `$L` (linear) of a
/// variant and an interpolation known at run time.
macro_rules! by_variant {
    ($variant:expr, $linear:expr, |$V:ident, $L:ident| $body:expr) => {{
        use $crate::core::config::Variant as Var;
        match $variant {
            Var::Ditac => by_variant!(@linear 0, $linear, $V, $L, $body),
            Var::Ge => by_variant!(@linear 1, $linear, $V, $L, $body),
            Var::Leaky => by_variant!(@linear 2, $linear, $V, $L, $body),
        }
    }};
    (@linear $v:literal, $linear:expr, $V:ident, $L:ident, $body:expr) => {{
        const $V: u8 = $v;
        if $linear {
            const $L: bool = true;
            $body
        } else {
            const $L: bool = false;
            $body
        }
    }};
}

mod exact;
#[macro_use]
mod lanes;
mod params;
mod scalar;

#[cfg(target_arch = "x86_64")]
use lanes::{avx2, avx512, Lanes};
#[cfg(target_arch = "aarch64")]
use lanes::{neon, Lanes};

pub use exact::{ExactKernel, FastTable, FlowCells, FlowTables, FAST_NODES, FAST_TOL};
use params::BLOCK;
pub use params::{GradTables, TableKernel};
pub use scalar::outer_scalar;
use scalar::{add_direct, dispatch_scalar, grad_elem};

/// Where a slice lies in a tensor of `c` channels of `inner` contiguous elements: element j of the
/// slice is element `start + j` of the tensor, of channel ((start + j) / inner) % c.
#[derive(Clone, Copy, Debug)]
pub struct Channels {
    pub start: usize,
    pub c: usize,
    pub inner: usize,
}

impl Channels {
    /// One shared row.
    pub fn single() -> Self {
        Channels {
            start: 0,
            c: 1,
            inner: usize::MAX,
        }
    }
}

/// The channel of successive elements, by counting (no division per element).
struct ChanIter {
    inner: usize,
    c: usize,
    pos: usize,
    ch: usize,
}

impl ChanIter {
    fn new(ch: Channels) -> Self {
        let inner = ch.inner.max(1);
        ChanIter {
            inner,
            c: ch.c.max(1),
            pos: ch.start % inner,
            ch: (ch.start / inner) % ch.c.max(1),
        }
    }
    #[inline(always)]
    fn next_ch(&mut self) -> usize {
        let c = self.ch;
        self.pos += 1;
        if self.pos == self.inner {
            self.pos = 0;
            self.ch += 1;
            if self.ch == self.c {
                self.ch = 0;
            }
        }
        c
    }
}

/// An instruction set the kernels have a path for, lowest first (those of both architectures:
/// a cap names any of them, and takes the best path of this CPU at or below it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// The portable scalar bodies (the reference).
    Scalar,
    /// AArch64 NEON, 4 lanes.
    Neon,
    /// AVX2 + FMA, 8 lanes.
    Avx2,
    /// AVX-512 F/BW/DQ/VL, 16 lanes.
    Avx512,
}

/// The environment variable that caps the instruction set the kernels use (`scalar`, `neon`,
/// `avx2`, `avx512`): a path the CPU lacks falls back to the best it has below it.
pub const ISA_ENV: &str = "DITAC_ISA";

impl Isa {
    /// Every path, lowest first.
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Neon, Isa::Avx2, Isa::Avx512];

    /// The name `DITAC_ISA` takes and the bench prints.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Neon => "neon",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// Parses a `DITAC_ISA` value (case-insensitive).
    pub fn parse(s: &str) -> Result<Isa, String> {
        let t = s.trim().to_ascii_lowercase();
        Isa::ALL
            .into_iter()
            .find(|i| i.name() == t)
            .ok_or_else(|| format!("{ISA_ENV}=\"{s}\": expected one of scalar, neon, avx2, avx512"))
    }

    /// Whether this CPU can run the path.
    pub fn supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => avx2::Avx2::detect().is_some(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => avx512::Avx512::detect().is_some(),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => neon::Neon::detect().is_some(),
            _ => false,
        }
    }

    /// The best path this CPU has.
    pub fn best() -> Isa {
        Isa::Avx512.usable()
    }

    /// The cap `DITAC_ISA` sets (None when unset; an error for a value that names no path).
    pub fn env_cap() -> Result<Option<Isa>, String> {
        match std::env::var(ISA_ENV) {
            Ok(v) if !v.trim().is_empty() => Isa::parse(&v).map(Some),
            _ => Ok(None),
        }
    }

    /// The path the kernels take: the best this CPU has, capped by `DITAC_ISA` (read once; an
    /// invalid value is ignored here and reported by [`Isa::env_cap`]).
    pub fn active() -> Isa {
        static ACTIVE: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *ACTIVE.get_or_init(|| match Isa::env_cap() {
            Ok(Some(cap)) => cap.usable(),
            _ => Isa::best(),
        })
    }

    /// The path actually taken when `self` is asked for: `self`, or the best below it this CPU has
    /// (`neon` on x86-64 is `scalar`; `avx2` on AArch64 is `neon`).
    pub fn usable(self) -> Isa {
        Isa::ALL
            .into_iter()
            .rev()
            .find(|&i| i <= self && i.supported())
            .unwrap_or(Isa::Scalar)
    }
}

/// Whether a vector path (NEON, AVX2 or AVX-512) is active.
pub fn simd_available() -> bool {
    Isa::active() > Isa::Scalar
}

fn run_forward(
    k: &TableKernel,
    n: usize,
    x: &[f32],
    y: &mut [f32],
    offs: Option<&[u32]>,
    isa: Isa,
) {
    match isa.usable() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports the path (`usable`); the callers checked the table size.
        Isa::Avx512 => unsafe { avx512::forward(k, n, x, y, offs) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { avx2::forward(k, n, x, y, offs) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above.
        Isa::Neon => unsafe { neon::forward(k, n, x, y, offs) },
        _ => dispatch_scalar(k, n, x, y, offs),
    }
}

/// y = act(x) through the table (one row: `k.xt` is the table), on [`Isa::active`].
pub fn table_forward(k: &TableKernel, x: &[f32], y: &mut [f32]) {
    table_forward_on(Isa::active(), k, x, y)
}

/// [`table_forward`] on the path `isa` (or the best below it this CPU has).
pub fn table_forward_on(isa: Isa, k: &TableKernel, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len());
    assert!(k.xt.len() >= 2);
    run_forward(k, k.xt.len(), x, y, None, isa)
}

/// The scalar reference of [`table_forward`] (no run-time dispatch).
pub fn table_forward_baseline(k: &TableKernel, x: &[f32], y: &mut [f32]) {
    table_forward_on(Isa::Scalar, k, x, y)
}

/// y = act(x) with C tables of n nodes (`k.xt` holds them one after the other; C·n < 2^32),
/// each element through the row of its channel, in one pass, on [`Isa::active`].
pub fn table_forward_channels(k: &TableKernel, n: usize, ch: Channels, x: &[f32], y: &mut [f32]) {
    table_forward_channels_on(Isa::active(), k, n, ch, x, y)
}

/// [`table_forward_channels`] on the path `isa` (or the best below it this CPU has).
pub fn table_forward_channels_on(
    isa: Isa,
    k: &TableKernel,
    n: usize,
    ch: Channels,
    x: &[f32],
    y: &mut [f32],
) {
    assert_eq!(x.len(), y.len());
    assert!(n >= 2 && ch.c >= 1 && k.xt.len() == n * ch.c);
    if ch.c == 1 {
        return run_forward(k, n, x, y, None, isa);
    }
    let mut it = ChanIter::new(ch);
    let mut offs = [0u32; BLOCK];
    for (xb, yb) in x.chunks(BLOCK).zip(y.chunks_mut(BLOCK)) {
        let o = &mut offs[..xb.len()];
        for v in o.iter_mut() {
            *v = (it.next_ch() * n) as u32;
        }
        run_forward(k, n, xb, yb, Some(o), isa);
    }
}

/// The scalar reference of [`table_forward_channels`].
pub fn table_forward_channels_baseline(
    k: &TableKernel,
    n: usize,
    ch: Channels,
    x: &[f32],
    y: &mut [f32],
) {
    table_forward_channels_on(Isa::Scalar, k, n, ch, x, y)
}

/// y = outer(x, x̃) for a warp already evaluated (the exact mode): x̃·Φ(x), x̃·Φ(x̃) or
/// LeakyReLU(x̃), on [`Isa::active`] (the lane forms as in the table kernels).
pub fn outer_forward(variant: Variant, alpha: f32, x: &[f32], w: &[f32], y: &mut [f32]) {
    outer_forward_on(Isa::active(), variant, alpha, x, w, y)
}

/// [`outer_forward`] on the path `isa` (or the best below it this CPU has).
pub fn outer_forward_on(
    isa: Isa,
    variant: Variant,
    alpha: f32,
    x: &[f32],
    w: &[f32],
    y: &mut [f32],
) {
    assert!(x.len() == w.len() && x.len() == y.len());
    match isa.usable() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports the path (`usable`).
        Isa::Avx512 => unsafe { avx512::outer(variant, alpha, x, w, y) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { avx2::outer(variant, alpha, x, w, y) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above.
        Isa::Neon => unsafe { neon::outer(variant, alpha, x, w, y) },
        _ => outer_scalar(variant, alpha, x, w, y),
    }
}

/// y = act(x) in exact mode on [`Isa::active`]; `fallback(x)` is x̃ for an in-range x through the
/// scalar integrator.
pub fn exact_forward(k: &ExactKernel, x: &[f32], y: &mut [f32], fallback: &dyn Fn(f32) -> f32) {
    exact_forward_on(Isa::active(), k, x, y, fallback)
}

/// [`exact_forward`] on the path `isa` (or the best below it this CPU has); on `Scalar`, every
/// in-range element goes through `fallback` (the reference).
pub fn exact_forward_on(
    isa: Isa,
    k: &ExactKernel,
    x: &[f32],
    y: &mut [f32],
    fallback: &dyn Fn(f32) -> f32,
) {
    assert_eq!(x.len(), y.len());
    let t = &k.flow;
    let pad = t.nc.max(16);
    assert!(t.nc >= 1 && t.span >= t.nc && t.span.is_power_of_two());
    assert!(
        [t.a, t.b, t.inv_a, t.right, t.left, t.eta, t.boa, t.ent_up, t.ent_dn]
            .iter()
            .all(|v| v.len() == pad)
    );
    assert!(
        t.k1.len() == pad && t.cum.len() == 2 * t.span.max(16) && t.cum_f32.len() == t.cum.len()
    );
    match isa.usable() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports the path (`usable`); the per-cell tables have nc entries
        // (checked above).
        Isa::Avx512 => unsafe { avx512::exact(k, x, y, fallback) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { avx2::exact(k, x, y, fallback) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above.
        Isa::Neon => unsafe { neon::exact(k, x, y, fallback) },
        _ => scalar::exact(k, x, y, fallback),
    }
}

// ---------------------------------------------------------------------------------------------
// Backward

/// Where the dθ terms go: straight into the sums, or into per-node bins reduced at the end.
enum Acc<'a> {
    Direct { acc: &'a mut [f64], n: usize },
    Hist { s: Vec<f64>, sf: Vec<f64> },
}

#[allow(clippy::too_many_arguments)]
fn backward_impl<const V: u8, const LINEAR: bool>(
    k: &TableKernel,
    g: &GradTables,
    n: usize,
    ch: Channels,
    dy: &[f32],
    x: &[f32],
    dx: &mut [f32],
    dtheta: &mut [f64],
    isa: Isa,
) {
    let total = k.xt.len();
    let d = g.d;
    // Bins cost C·n·d at the end; direct sums cost d per element.
    let mut acc = if d > 0 && x.len() >= total && total <= (1 << 16) {
        Acc::Hist {
            // 8 spare bins take the zero terms (out of range), lane by lane, so that they do not
            // form one long chain of dependent additions on node 0.
            s: vec![0.0; total + 8],
            sf: if LINEAR {
                vec![0.0; total + 8]
            } else {
                Vec::new()
            },
        }
    } else {
        Acc::Direct { acc: dtheta, n }
    };
    let n_last = n as i32 - 1;
    let mut it = ChanIter::new(ch);
    let mut offs = [0u32; BLOCK];
    // s of each term, in f64 (an f32 value: exact)
    let mut sb = [0f64; BLOCK];
    let mut ib = [0u32; BLOCK];
    let mut fb = [0f32; BLOCK];
    let mut start = 0;
    while start < x.len() {
        let end = x.len().min(start + BLOCK);
        let m = end - start;
        let o = &mut offs[..m];
        if ch.c > 1 {
            for v in o.iter_mut() {
                *v = (it.next_ch() * n) as u32;
            }
        }
        let (xs, gs, dxs) = (&x[start..end], &dy[start..end], &mut dx[start..end]);
        // The dθ terms of the block: `cnt` of them in sb/ib/fb (the SIMD kernel keeps the
        // in-range elements only, in order; the scalar one sends the others' zeros to spare bins).
        let offs_v = (ch.c > 1).then_some(&*o);
        // The vector paths take the same arguments.
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        macro_rules! simd {
            ($path:ident) => {
                // SAFETY: the CPU supports the path (`usable`); the caller checked the table
                // sizes.
                Some(unsafe {
                    $path::backward::<V, LINEAR>(
                        k,
                        g,
                        n,
                        xs,
                        gs,
                        dxs,
                        offs_v,
                        &mut sb[..m],
                        &mut ib[..m],
                        &mut fb[..m],
                    )
                })
            };
        }
        let cnt: Option<usize> = match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => simd!(avx512),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => simd!(avx2),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => simd!(neon),
            _ => None,
        };
        let cnt = cnt.unwrap_or_else(|| {
            for j in 0..m {
                let off = if ch.c > 1 { o[j] as usize } else { 0 };
                let (v, s, i, f, inr) = grad_elem::<V, LINEAR>(k, g, xs[j], gs[j], off, n_last);
                dxs[j] = v;
                sb[j] = s as f64;
                ib[j] = if inr { i } else { total + (j & 7) } as u32;
                fb[j] = f;
            }
            m
        });
        if d > 0 {
            match &mut acc {
                Acc::Hist { s, sf } => {
                    // Out-of-range elements carry s = 0 to a spare bin (lane j mod 8): no branch.
                    let terms = sb[..cnt].iter().zip(&ib[..cnt]);
                    if LINEAR {
                        for ((&sj, &i), &f) in terms.zip(&fb[..cnt]) {
                            let i = i as usize;
                            s[i] += sj;
                            sf[i] += sj * f as f64;
                        }
                    } else {
                        for (&sj, &i) in terms {
                            s[i as usize] += sj;
                        }
                    }
                }
                Acc::Direct { acc, n } => {
                    for j in 0..cnt {
                        let i = ib[j] as usize;
                        if i < total {
                            let a = &mut acc[(i / *n) * d..(i / *n + 1) * d];
                            add_direct::<LINEAR>(g, a, i, sb[j], fb[j]);
                        }
                    }
                }
            }
        }
        start = end;
    }
    if let Acc::Hist { s, sf } = acc {
        for (i, &si) in s[..total].iter().enumerate() {
            let c = i / n;
            let a = &mut dtheta[c * d..(c + 1) * d];
            let r0 = &g.dtheta[i * d..(i + 1) * d];
            if si != 0.0 || si.is_nan() {
                for kk in 0..d {
                    a[kk] += si * r0[kk] as f64;
                }
            }
            if LINEAR && (sf[i] != 0.0 || sf[i].is_nan()) && (i + 1) % n != 0 {
                let r1 = &g.dtheta[(i + 1) * d..(i + 2) * d];
                for kk in 0..d {
                    a[kk] += sf[i] * (r1[kk] - r0[kk]) as f64;
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn table_backward_impl(
    k: &TableKernel,
    g: &GradTables,
    n: usize,
    ch: Channels,
    dy: &[f32],
    x: &[f32],
    dx: &mut [f32],
    dtheta: &mut [f64],
    isa: Isa,
) {
    assert!(dy.len() == x.len() && dx.len() == x.len());
    assert!(n >= 2 && ch.c >= 1 && k.xt.len() == n * ch.c);
    assert!(g.dt.len() == k.xt.len() && g.dtheta.len() == k.xt.len() * g.d);
    assert!(g.xdt.len() == 2 * k.xt.len() && k.pairs.len() == 2 * k.xt.len());
    assert_eq!(dtheta.len(), ch.c * g.d);
    by_variant!(k.variant, k.linear, |V, L| backward_impl::<V, L>(
        k, g, n, ch, dy, x, dx, dtheta, isa
    ))
}

/// dX = dY·dy/dx and dθ += Σ dY·dy/dθ (f64, C·d sums: `dtheta[c·d..(c+1)·d]` for channel c)
/// through the tables, on [`Isa::active`].
#[allow(clippy::too_many_arguments)]
pub fn table_backward(
    k: &TableKernel,
    g: &GradTables,
    n: usize,
    ch: Channels,
    dy: &[f32],
    x: &[f32],
    dx: &mut [f32],
    dtheta: &mut [f64],
) {
    table_backward_on(Isa::active(), k, g, n, ch, dy, x, dx, dtheta)
}

/// [`table_backward`] on the path `isa` (or the best below it this CPU has).
#[allow(clippy::too_many_arguments)]
pub fn table_backward_on(
    isa: Isa,
    k: &TableKernel,
    g: &GradTables,
    n: usize,
    ch: Channels,
    dy: &[f32],
    x: &[f32],
    dx: &mut [f32],
    dtheta: &mut [f64],
) {
    table_backward_impl(k, g, n, ch, dy, x, dx, dtheta, isa.usable())
}

/// [`table_backward`] on the portable scalar path.
#[allow(clippy::too_many_arguments)]
pub fn table_backward_baseline(
    k: &TableKernel,
    g: &GradTables,
    n: usize,
    ch: Channels,
    dy: &[f32],
    x: &[f32],
    dx: &mut [f32],
    dtheta: &mut [f64],
) {
    table_backward_on(Isa::Scalar, k, g, n, ch, dy, x, dx, dtheta)
}
