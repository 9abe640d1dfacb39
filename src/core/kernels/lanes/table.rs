//! The table forward (bit for bit the scalar body) and the backward, on any [`Lanes`].

use super::math::{outer, pdf, phi_fast};
use super::{Lanes, MAX_LANES};
use crate::core::kernels::params::{GradTables, TableKernel};

/// The broadcast constants of a table kernel.
pub(super) struct Consts<S: Lanes> {
    lo: S::F,
    hi: S::F,
    add_in: S::F,
    mul_in: S::F,
    scale: S::F,
    alpha: S::F,
    n_last: S::I,
    n_last1: S::I,
}

#[inline(always)]
fn consts<S: Lanes>(s: S, k: &TableKernel, n: usize) -> Consts<S> {
    Consts {
        lo: s.splat(k.lo),
        hi: s.splat(k.hi),
        add_in: s.splat(k.add_in),
        mul_in: s.splat(k.mul_in),
        scale: s.splat(k.scale),
        alpha: s.splat(k.alpha),
        n_last: s.isplat(n as i32 - 1),
        n_last1: s.isplat(n as i32 - 2),
    }
}

/// The in-range mask of [lo, hi].
#[inline(always)]
pub(super) fn in_range<S: Lanes>(s: S, x: S::F, lo: S::F, hi: S::F) -> S::M {
    s.mand(s.ge(x, lo), s.le(x, hi))
}

/// In-range mask, node index (row offset added) and right weight of one vector: the scalar
/// `locate` (the same conversions, so the same nodes).
#[inline(always)]
fn locate<S: Lanes, const LINEAR: bool>(
    s: S,
    c: &Consts<S>,
    xv: S::F,
    off: S::I,
) -> (S::M, S::I, S::F) {
    let inr = in_range(s, xv, c.lo, c.hi);
    let u = s.mul(s.add(xv, c.add_in), c.mul_in);
    // Out-of-range lanes (and NaN, ±∞) may give any p: the clamped index stays in the row, and
    // their node is blended away by the callers.
    let p = s.mul(u, c.scale);
    let zero = s.isplat(0);
    if LINEAR {
        // Truncation instead of floor: they differ only for negative p, which the clamp to 0
        // makes the same.
        let i = s.imin(s.imax(s.trunc_i32(p), zero), c.n_last1);
        let f = s.sub(p, s.to_f32(i));
        (inr, s.iadd(i, off), f)
    } else {
        // Conversion rounding half to even (as the scalar round-half-even by ±2^23), one
        // instruction instead of round + truncate: the same integer for every p below 2^31.
        let i = s.imin(s.imax(s.round_i32(p), zero), c.n_last);
        (inr, s.iadd(i, off), s.splat(0.0))
    }
}

/// The table forward on N vectors (the outer function's erf shares its constants).
#[inline(always)]
unsafe fn lanes<S: Lanes, const V: u8, const LINEAR: bool, const N: usize>(
    s: S,
    c: &Consts<S>,
    k: &TableKernel,
    xv: [S::F; N],
    off: [S::I; N],
) -> [S::F; N] {
    let w = each!(N, h => {
        let (inr, i, f) = locate::<S, LINEAR>(s, c, xv[h], off[h]);
        if LINEAR {
            // x0 + f·(x1 − x0), with x1 − x0 from the pair table (the same bits).
            let (x0, dd) = s.gather_pairs(k.pairs.as_ptr(), i);
            s.select(inr, s.add(x0, s.mul(f, dd)), xv[h])
        } else {
            // Out-of-range lanes keep x (masked off: no load).
            s.gather_masked(xv[h], k.xt.as_ptr(), i, inr)
        }
    });
    outer::<S, V, N>(s, c.alpha, xv, w)
}

/// The table forward of `dispatch_scalar`, N vectors a step; the tail through the same lanes
/// (partial loads and stores), so that a result never depends on where an element falls in a
/// slice.
///
/// # Safety
/// `s`'s instruction set runs here; `k.xt` holds every row the offsets name (n nodes each).
#[inline(always)]
pub(super) unsafe fn forward<S: Lanes, const V: u8, const LINEAR: bool, const N: usize>(
    s: S,
    k: &TableKernel,
    n: usize,
    x: &[f32],
    y: &mut [f32],
    offs: Option<&[u32]>,
) {
    let c = consts(s, k, n);
    let (l, len) = (S::LANES, x.len().min(y.len()));
    let (xp, yp) = (x.as_ptr(), y.as_mut_ptr());
    let op = offs.map(|o| o.as_ptr());
    let mut j = 0;
    while j + N * l <= len {
        // x ahead: the table's gathers miss L1 and would otherwise leave the stream of x waiting
        // at sizes beyond the caches (a prefetch never faults, past the end included).
        let mut ahead = 512;
        while ahead < 512 + N * l {
            s.prefetch(xp.wrapping_add(j + ahead));
            ahead += 16;
        }
        let xv = each!(N, h => s.load(xp.add(j + h * l)));
        let off = each!(N, h => match op {
            Some(p) => s.iload(p.add(j + h * l)),
            None => s.isplat(0),
        });
        let v = lanes::<S, V, LINEAR, N>(s, &c, k, xv, off);
        for (h, &vh) in v.iter().enumerate() {
            s.store(yp.add(j + h * l), vh);
        }
        j += N * l;
    }
    while j < len {
        let rem = (len - j).min(l);
        let full = rem == l;
        let xv = if full {
            s.load(xp.add(j))
        } else {
            s.load_head(xp.add(j), rem)
        };
        let off = match op {
            Some(p) if full => s.iload(p.add(j)),
            Some(p) => s.iload_head(p.add(j), rem),
            None => s.isplat(0),
        };
        let v = lanes::<S, V, LINEAR, 1>(s, &c, k, [xv], [off])[0];
        if full {
            s.store(yp.add(j), v);
        } else {
            s.store_head(yp.add(j), rem, v);
        }
        j += rem;
    }
}

/// `grad_elem` on N vectors: dX, s, the node and the right weight (all but dX meaningful only in
/// range) and the in-range mask.
#[allow(clippy::type_complexity)]
#[inline(always)]
unsafe fn grad_lanes<S: Lanes, const V: u8, const LINEAR: bool, const N: usize>(
    s: S,
    c: &Consts<S>,
    k: &TableKernel,
    g: &GradTables,
    xv: [S::F; N],
    gv: [S::F; N],
    off: [S::I; N],
) -> ([S::F; N], [S::F; N], [S::I; N], [S::F; N], [S::M; N]) {
    let (one, zero) = (s.splat(1.0), s.splat(0.0));
    let mut inr = [s.head(0); N];
    let mut idx = [s.isplat(0); N];
    let mut fr = [zero; N];
    let mut w = [zero; N];
    let mut dxt = [zero; N];
    for h in 0..N {
        let (m, i, f) = locate::<S, LINEAR>(s, c, xv[h], off[h]);
        let (wh, dh) = if LINEAR {
            let (x0, dd) = s.gather_pairs(k.pairs.as_ptr(), i);
            // (x1 − x0)·scale·mul_in, in the scalar order
            let dxt = s.mul(s.mul(dd, c.scale), c.mul_in);
            (s.add(x0, s.mul(f, dd)), dxt)
        } else {
            s.gather_pairs(g.xdt.as_ptr(), i)
        };
        inr[h] = m;
        idx[h] = i;
        fr[h] = f;
        w[h] = s.select(m, wh, xv[h]);
        dxt[h] = s.select(m, dh, one);
    }
    let (gr, direct): ([S::F; N], [S::F; N]) = match V {
        0 => {
            let p = phi_fast(s, xv);
            let d = pdf(s, xv);
            (p, each!(N, h => s.mul(w[h], d[h])))
        }
        1 => {
            let p = phi_fast(s, w);
            let d = pdf(s, w);
            (each!(N, h => s.add(p[h], s.mul(w[h], d[h]))), [zero; N])
        }
        _ => (
            each!(N, h => s.select(s.ge(w[h], zero), one, c.alpha)),
            [zero; N],
        ),
    };
    let mul_out = s.splat(g.mul_out);
    let d = each!(N, h => s.mul(gv[h], s.add(s.mul(gr[h], dxt[h]), direct[h])));
    let sv = each!(N, h => s.mul(s.mul(gv[h], gr[h]), mul_out));
    (d, sv, idx, fr, inr)
}

/// `grad_elem` N vectors a step: writes dX, and s, the node and the right weight of the in-range
/// elements only, in order, at the start of sb/ib/fb; returns how many.
///
/// # Safety
/// `s`'s instruction set runs here; the tables hold every row the offsets name.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) unsafe fn backward<S: Lanes, const V: u8, const LINEAR: bool, const N: usize>(
    s: S,
    k: &TableKernel,
    g: &GradTables,
    n: usize,
    x: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    offs: Option<&[u32]>,
    sb: &mut [f64],
    ib: &mut [u32],
    fb: &mut [f32],
) -> usize {
    let c = consts(s, k, n);
    let (l, len) = (S::LANES, x.len());
    assert!(sb.len() >= len && ib.len() >= len && fb.len() >= len);
    assert!(dy.len() == len && dx.len() == len);
    let (xp, gp, dp) = (x.as_ptr(), dy.as_ptr(), dx.as_mut_ptr());
    let (sp, ip, fp) = (sb.as_mut_ptr(), ib.as_mut_ptr(), fb.as_mut_ptr());
    let op = offs.map(|o| o.as_ptr());
    let mut j = 0;
    // cur ≤ j: the LANES entries `compact` writes for elements j.. stay below j + LANES ≤ len.
    let mut cur = 0;
    while j + N * l <= len {
        // x and dY ahead, every cache line of the step (two streams in, one out: the hardware
        // prefetcher alone falls behind at sizes beyond the caches; a prefetch never faults).
        let mut ahead = 512;
        while ahead < 512 + N * l {
            s.prefetch(xp.wrapping_add(j + ahead));
            s.prefetch(gp.wrapping_add(j + ahead));
            ahead += 16;
        }
        let off = each!(N, h => match op {
            Some(p) => s.iload(p.add(j + h * l)),
            None => s.isplat(0),
        });
        let xv = each!(N, h => s.load(xp.add(j + h * l)));
        let gv = each!(N, h => s.load(gp.add(j + h * l)));
        let (d, sv, i, f, inr) = grad_lanes::<S, V, LINEAR, N>(s, &c, k, g, xv, gv, off);
        for h in 0..N {
            s.store(dp.add(j + h * l), d[h]);
            cur += s.compact::<LINEAR>(
                inr[h],
                sv[h],
                i[h],
                f[h],
                sp.add(cur),
                ip.add(cur),
                fp.add(cur),
            );
        }
        j += N * l;
    }
    while j < len {
        // The rest through the same lanes, partial.
        let rem = (len - j).min(l);
        let xv = s.load_head(xp.add(j), rem);
        let gv = s.load_head(gp.add(j), rem);
        let off = match op {
            Some(p) => s.iload_head(p.add(j), rem),
            None => s.isplat(0),
        };
        let (d, sv, i, f, inr) = grad_lanes::<S, V, LINEAR, 1>(s, &c, k, g, [xv], [gv], [off]);
        s.store_head(dp.add(j), rem, d[0]);
        // Padding lanes are not terms; the compacted lanes go through buffers.
        let (mut ts, mut ti, mut tf) = ([0f64; MAX_LANES], [0u32; MAX_LANES], [0f32; MAX_LANES]);
        let got = s.compact::<LINEAR>(
            s.mand(inr[0], s.head(rem)),
            sv[0],
            i[0],
            f[0],
            ts.as_mut_ptr(),
            ti.as_mut_ptr(),
            tf.as_mut_ptr(),
        );
        sb[cur..cur + got].copy_from_slice(&ts[..got]);
        ib[cur..cur + got].copy_from_slice(&ti[..got]);
        if LINEAR {
            fb[cur..cur + got].copy_from_slice(&tf[..got]);
        }
        cur += got;
        j += rem;
    }
    cur
}

/// `outer_scalar` on N vectors a step (the tail partial).
///
/// # Safety
/// `s`'s instruction set runs here.
#[inline(always)]
pub(super) unsafe fn outer_slice<S: Lanes, const V: u8, const N: usize>(
    s: S,
    alpha: f32,
    x: &[f32],
    w: &[f32],
    y: &mut [f32],
) {
    let (l, len) = (S::LANES, x.len().min(w.len()).min(y.len()));
    let (xp, wp, yp) = (x.as_ptr(), w.as_ptr(), y.as_mut_ptr());
    let av = s.splat(alpha);
    let mut j = 0;
    while j + N * l <= len {
        let xv = each!(N, h => s.load(xp.add(j + h * l)));
        let wv = each!(N, h => s.load(wp.add(j + h * l)));
        let v = outer::<S, V, N>(s, av, xv, wv);
        for (h, &vh) in v.iter().enumerate() {
            s.store(yp.add(j + h * l), vh);
        }
        j += N * l;
    }
    while j < len {
        let rem = (len - j).min(l);
        let (xv, wv) = (s.load_head(xp.add(j), rem), s.load_head(wp.add(j), rem));
        s.store_head(yp.add(j), rem, outer::<S, V, 1>(s, av, [xv], [wv])[0]);
        j += rem;
    }
}
