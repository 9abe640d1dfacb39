//! Exact mode on any [`Lanes`]: every trajectory in vector form at a cost independent of the
//! number of cells it crosses (see `FlowTables`), and the path through the checked interpolation
//! table (`FastTable`) that sends the lanes it cannot serve there.

use super::math::{exp, log, outer_of};
use super::table::{in_range, prefetch_ahead};
use super::{Lanes, MAX_LANES};
use crate::core::kernels::exact::{ExactKernel, FAST_NODES};
use crate::core::kernels::params::BLOCK;

/// The per-cell tables of the exact path, in registers (SMALL: 16 cells or fewer) or in memory.
struct Flow<S: Lanes> {
    a: S::Tab,
    b: S::Tab,
    inv_a: S::Tab,
    right: S::Tab,
    left: S::Tab,
    eta: S::Tab,
    boa: S::Tab,
    ent_up: S::Tab,
    ent_dn: S::Tab,
    k1: S::TabD,
    /// The whole `cum` (looked up with the down array's offset), or its up half (SMALL).
    cum_up: S::TabD,
    cum_dn: S::TabD,
    /// The same in f32, for the search.
    cum32_up: S::Tab,
    cum32_dn: S::Tab,
    /// The offset of the down array in `cum`.
    dn_base: i32,
    span: i32,
    nc: i32,
}

impl<S: Lanes> Flow<S> {
    /// SAFETY (caller): the tables have the layout `FlowTables` states (checked by
    /// `exact_forward_on`).
    #[inline(always)]
    unsafe fn new<const SMALL: bool>(s: S, k: &ExactKernel) -> Self {
        let t = &k.flow;
        let half = t.cum.len() / 2;
        Flow {
            a: s.tab::<SMALL>(t.a),
            b: s.tab::<SMALL>(t.b),
            inv_a: s.tab::<SMALL>(t.inv_a),
            right: s.tab::<SMALL>(t.right),
            left: s.tab::<SMALL>(t.left),
            eta: s.tab::<SMALL>(t.eta),
            boa: s.tab::<SMALL>(t.boa),
            ent_up: s.tab::<SMALL>(t.ent_up),
            ent_dn: s.tab::<SMALL>(t.ent_dn),
            k1: s.tabd::<SMALL>(t.k1),
            cum_up: s.tabd::<SMALL>(t.cum),
            cum_dn: s.tabd::<SMALL>(&t.cum[half..]),
            cum32_up: s.tab::<SMALL>(t.cum_f32),
            cum32_dn: s.tab::<SMALL>(&t.cum_f32[half..]),
            dn_base: half as i32,
            span: t.span as i32,
            nc: t.nc as i32,
        }
    }
}

/// The cumulative crossing time at index `idx` of the up array (`up` lanes) or of the down one
/// (`base`: 0 in the up lanes, the down array's offset in the others).
#[inline(always)]
unsafe fn cum<S: Lanes, const SMALL: bool>(
    s: S,
    f: &Flow<S>,
    idx: S::I,
    up: S::M,
    base: S::I,
) -> [S::D; 2] {
    if SMALL {
        let (g_up, g_dn) = (
            s.tabd_get::<SMALL>(&f.cum_up, idx),
            s.tabd_get::<SMALL>(&f.cum_dn, idx),
        );
        s.dselect(up, g_up, g_dn)
    } else {
        s.tabd_get::<false>(&f.cum_up, s.iadd(idx, base))
    }
}

/// `cum` in f32 (one lookup), for the search.
#[inline(always)]
unsafe fn cum_f32<S: Lanes, const SMALL: bool>(
    s: S,
    f: &Flow<S>,
    idx: S::I,
    up: S::M,
    base: S::I,
) -> S::F {
    if SMALL {
        s.select(
            up,
            s.tab_get::<SMALL>(&f.cum32_up, idx),
            s.tab_get::<SMALL>(&f.cum32_dn, idx),
        )
    } else {
        s.tab_get::<false>(&f.cum32_up, s.iadd(idx, base))
    }
}

/// x̃ of N vectors in exact mode (x itself outside [a, b]): difw's closed-form integration at a
/// cost that does not depend on the number of cells crossed (one hit time, a binary search of the
/// last cell in the cumulative crossing times, one ψ; see `FlowTables`). The N vectors go through
/// each step together: one vector is a chain of ~300 cycles of latency (log, search, exp), which
/// the core only overlaps across vectors written side by side.
#[inline(always)]
unsafe fn warp<S: Lanes, const SMALL: bool, const N: usize>(
    s: S,
    k: &ExactKernel,
    f: &Flow<S>,
    xv: [S::F; N],
) -> [S::F; N] {
    let eps = s.splat(f32::EPSILON);
    let (zero, zeroi, one) = (s.splat(0.0), s.isplat(0), s.splat(1.0));
    let (lo, hi) = (s.splat(k.lo), s.splat(k.hi));
    let inr = each!(N, h => in_range(s, xv[h], lo, hi));
    let (add_in, mul_in, ncf) = (s.splat(k.add_in), s.splat(k.mul_in), s.splat(f.nc as f32));
    let u = each!(N, h => s.mul(s.add(xv[h], add_in), mul_in));
    // cell_of: clamp(floor(u·nc), 0, nc − 1); out-of-range lanes: cell 0, unused
    let last = s.isplat(f.nc - 1);
    let ci = each!(N, h => {
        let fl = s.floor(s.mul(u[h], ncf));
        let i = s.imin(s.imax(s.trunc_i32(fl), zeroi), last);
        s.imaskz(inr[h], i)
    });
    let a0 = each!(N, h => s.tab_get::<SMALL>(&f.a, ci[h]));
    let b0 = each!(N, h => s.tab_get::<SMALL>(&f.b, ci[h]));
    // The first step, in difw's float32 operations: v, the boundary ahead, its velocity.
    let v = each!(N, h => s.add(s.mul(a0[h], u[h]), b0[h]));
    let up = each!(N, h => s.gt(v[h], zero));
    let xc = each!(N, h => {
        s.select(
            up[h],
            s.tab_get::<SMALL>(&f.right, ci[h]),
            s.tab_get::<SMALL>(&f.left, ci[h]),
        )
    });
    let vc = each!(N, h => s.add(s.mul(a0[h], xc[h]), b0[h]));
    let small_a = each!(N, h => s.lt(s.abs(a0[h]), eps));
    let lg = log(s, each!(N, h => s.div(vc[h], v[h])));
    let mut th = each!(N, h => s.mul(lg[h], s.tab_get::<SMALL>(&f.inv_a, ci[h])));
    // (xc − u)/b where |a| < eps (rare: only then the division)
    for h in 0..N {
        if s.any(small_a[h]) {
            let th_lin = s.div(s.sub(xc[h], u[h]), b0[h]);
            th[h] = s.select(small_a[h], th_lin, th[h]);
        }
    }
    let cross = each!(N, h => {
        let edge = s.mselect(up[h], s.ieq(ci[h], last), s.ieq(ci[h], zeroi));
        let vc_up = s.gt(vc[h], zero);
        let mut ok = s.mand_not(inr[h], edge);
        ok = s.mand_not(ok, s.lt(s.abs(v[h]), eps));
        ok = s.mand_not(ok, s.lt(s.abs(vc[h]), eps));
        ok = s.mand_not(ok, s.mxor(vc_up, up[h]));
        s.mand(ok, s.le(th[h], one))
    });
    // Settled in the first cell: ψ(u, 1) = f32(f64(eta·u) + k1) (the integrator's bits), or
    // u + b where |a| < eps, or u itself where v = 0: a fixed point (the pinned ends of a
    // zero-boundary field, as the integrator takes them), where ψ's cancellation
    // e^a·u − (e^a − 1)·u would lose u once e^a is large (T(b) = a for θ ≈ −93 at tess 2).
    let stay = each!(N, h => {
        let eu = s.widen(s.mul(s.tab_get::<SMALL>(&f.eta, ci[h]), u[h]));
        let k1 = s.tabd_get::<SMALL>(&f.k1, ci[h]);
        let st = s.narrow([s.dadd(eu[0], k1[0]), s.dadd(eu[1], k1[1])]);
        let fixed = s.le(s.abs(v[h]), zero);
        s.select(
            fixed,
            u[h],
            s.select(small_a[h], s.add(u[h], b0[h]), st),
        )
    });
    // Crossing lanes (computed for every vector: nearly every vector has one): entered cell j
    // at time th, j's index in the up array, or mirrored (+ the down array's offset) in the down
    // one.
    let dn_base = s.isplat(f.dn_base);
    let base = each!(N, h => s.iselect(up[h], zeroi, dn_base));
    let (onei, ncv) = (s.isplat(1), s.isplat(f.nc));
    let target = each!(N, h => {
        let j = s.iselect(up[h], s.iadd(ci[h], onei), s.isub(ncv, ci[h]));
        let gj = cum::<S, SMALL>(s, f, j, up[h], base[h]);
        let t1 = s.widen(s.sub(one, th[h]));
        [s.dadd(gj[0], t1[0]), s.dadd(gj[1], t1[1])]
    });
    // The last cell: the largest index whose entry time is ≤ target (binary search, in f32).
    let target32 = each!(N, h => s.narrow(target[h]));
    let mut pos = [zeroi; N];
    let mut step = f.span / 2;
    while step > 0 {
        let sv = s.isplat(step);
        for h in 0..N {
            let cand = s.iadd(pos[h], sv);
            let g = cum_f32::<S, SMALL>(s, f, cand, up[h], base[h]);
            pos[h] = s.iselect(s.le(g, target32[h]), cand, pos[h]);
        }
        step /= 2;
    }
    let trem = each!(N, h => {
        let gc = cum::<S, SMALL>(s, f, pos[h], up[h], base[h]);
        let t = s.narrow([s.dsub(target[h][0], gc[0]), s.dsub(target[h][1], gc[1])]);
        // 0 in the lanes that do not cross: their garbage would make subnormals below (slow)
        s.maskz(cross[h], t)
    });
    let cf = each!(N, h => s.iselect(up[h], pos[h], s.isub(last, pos[h])));
    let a1 = each!(N, h => s.tab_get::<SMALL>(&f.a, cf[h]));
    let xe = each!(N, h => {
        s.select(
            up[h],
            s.tab_get::<SMALL>(&f.ent_up, cf[h]),
            s.tab_get::<SMALL>(&f.ent_dn, cf[h]),
        )
    });
    // ψ(xe, trem) in the last cell: f32(f64(eta·xe) + f64(b/a)·(f64(eta) − 1)), eta = exp(trem·a)
    let eta = exp(s, each!(N, h => s.mul(trem[h], a1[h])), false);
    let ones = s.dsplat(1.0);
    let (add_out, mul_out) = (s.splat(k.add_out), s.splat(k.mul_out));
    each!(N, h => {
        let (ew, bw, xw) = (
            s.widen(s.mul(eta[h], xe[h])),
            s.widen(s.tab_get::<SMALL>(&f.boa, cf[h])),
            s.widen(eta[h]),
        );
        let psi = s.narrow(each!(2, i => s.dfmadd(bw[i], s.dsub(xw[i], ones), ew[i])));
        let lin = s.add(xe[h], s.mul(trem[h], s.tab_get::<SMALL>(&f.b, cf[h])));
        let small1 = s.lt(s.abs(a1[h]), eps);
        let val = s.select(cross[h], s.select(small1, lin, psi), stay[h]);
        let xt = s.mul(s.add(val, add_out), mul_out);
        s.select(inr[h], xt, xv[h])
    })
}

/// Vectors a step of the constant-cost warp.
pub(super) const EXACT_VECTORS: usize = 4;

/// A safety net, never taken in the tests: an in-range lane (of `m`) whose x̃ is not finite (an
/// overflow in b/a, say) goes through the integrator. Returns x̃ and whether a lane changed.
#[inline(always)]
unsafe fn safety_net<S: Lanes>(
    s: S,
    k: &ExactKernel,
    xv: S::F,
    w: S::F,
    m: S::M,
    x: &[f32],
    fallback: &dyn Fn(f32) -> f32,
) -> (S::F, bool) {
    let inr = s.mand(in_range(s, xv, s.splat(k.lo), s.splat(k.hi)), m);
    let bad = s.mand_not(inr, s.lt(s.abs(w), s.splat(f32::INFINITY)));
    if !s.any(bad) {
        return (w, false);
    }
    let bits = s.bits(bad);
    let mut wb = [0f32; MAX_LANES];
    s.store(wb.as_mut_ptr(), w);
    for (l, wl) in wb[..S::LANES].iter_mut().enumerate() {
        if bits & (1 << l) != 0 {
            *wl = fallback(x[l]);
        }
    }
    (s.load(wb.as_ptr()), true)
}

/// Exact mode, N vectors a step through the constant-cost warp, the rest one (partial) vector at
/// a time.
///
/// # Safety
/// `s`'s instruction set runs here; the tables have the layout `FlowTables` states.
#[inline(always)]
pub(super) unsafe fn exact_warp<S: Lanes, const SMALL: bool, const N: usize>(
    s: S,
    k: &ExactKernel,
    x: &[f32],
    y: &mut [f32],
    fallback: &dyn Fn(f32) -> f32,
) {
    let f = Flow::<S>::new::<SMALL>(s, k);
    let av = s.splat(k.alpha);
    let (l, len) = (S::LANES, x.len().min(y.len()));
    let (xp, yp) = (x.as_ptr(), y.as_mut_ptr());
    let all = s.head(l);
    let mut j = 0;
    while j + N * l <= len {
        let xv = each!(N, h => s.load(xp.add(j + h * l)));
        let w = warp::<S, SMALL, N>(s, k, &f, xv);
        let p = outer_of(s, k.variant, av, xv, w);
        for h in 0..N {
            let (w1, changed) = safety_net(s, k, xv[h], w[h], all, &x[j + h * l..], fallback);
            let v = if changed {
                outer_of(s, k.variant, av, [xv[h]], [w1])[0]
            } else {
                p[h]
            };
            s.store(yp.add(j + h * l), v);
        }
        j += N * l;
    }
    while j < len {
        let rem = (len - j).min(l);
        let xv = s.load_head(xp.add(j), rem);
        let w = warp::<S, SMALL, 1>(s, k, &f, [xv])[0];
        let w = safety_net(s, k, xv, w, s.head(rem), &x[j..], fallback).0;
        s.store_head(yp.add(j), rem, outer_of(s, k.variant, av, [xv], [w])[0]);
        j += rem;
    }
}

/// An instruction set's exact-mode entry (x, y, fallback), as `exact_table` calls it.
pub(super) type ExactPath = unsafe fn(&ExactKernel, &[f32], &mut [f32], &dyn Fn(f32) -> f32);

/// The constants of `exact_table`.
struct Fast<S: Lanes> {
    lo: S::F,
    hi: S::F,
    add_in: S::F,
    mul_in: S::F,
    scale: S::F,
    last: S::I,
    alpha: S::F,
    pairs: *const f32,
}

/// x̃ through the table on N vectors, and the mask bits of the in-range lanes left to the
/// constant-cost path; then y.
#[inline(always)]
unsafe fn fast_lanes<S: Lanes, const N: usize>(
    s: S,
    c: &Fast<S>,
    k: &ExactKernel,
    xv: [S::F; N],
) -> ([S::F; N], [u32; N]) {
    let zeroi = s.isplat(0);
    let mut w = [s.splat(0.0); N];
    let mut slow = [0; N];
    for h in 0..N {
        let inr = in_range(s, xv[h], c.lo, c.hi);
        let p = s.mul(s.mul(s.add(xv[h], c.add_in), c.mul_in), c.scale);
        // NaN and out-of-range positions convert to anything: clamped, unused.
        let i = s.imin(s.imax(s.trunc_i32(p), zeroi), c.last);
        let f = s.sub(p, s.to_f32(i));
        let (x0, dd) = s.gather_pairs(c.pairs, i);
        let wh = s.fmadd(f, dd, x0);
        slow[h] = s.bits(s.mand(inr, s.unord(wh, wh)));
        w[h] = s.select(inr, wh, xv[h]);
    }
    (outer_of(s, k.variant, c.alpha, xv, w), slow)
}

/// Exact mode through the checked interpolation table (`FastTable`): x̃ = x̃_i + f·(x̃_{i+1} −
/// x̃_i) with one 64-bit gather per lane, N vectors a step; the in-range lanes of intervals left
/// to the constant-cost path (a NaN difference) are collected, in order, per block and go through
/// `slow_path` (the instruction set's `exact_warp`, a function of its own) together.
///
/// # Safety
/// As [`exact_warp`]; `k.fast` holds `FAST_NODES` pairs; `slow_path` runs here.
#[inline(always)]
pub(super) unsafe fn exact_table<S: Lanes, const N: usize>(
    s: S,
    k: &ExactKernel,
    x: &[f32],
    y: &mut [f32],
    fallback: &dyn Fn(f32) -> f32,
    slow_path: ExactPath,
) {
    let cs = Fast::<S> {
        lo: s.splat(k.lo),
        hi: s.splat(k.hi),
        add_in: s.splat(k.add_in),
        mul_in: s.splat(k.mul_in),
        scale: s.splat((FAST_NODES - 1) as f32),
        last: s.isplat(FAST_NODES as i32 - 2),
        alpha: s.splat(k.alpha),
        pairs: k.fast.as_ptr(),
    };
    let l = S::LANES;
    // The slow lanes of a block: x, position.
    let mut sx = [0f32; BLOCK];
    let mut sy = [0f32; BLOCK];
    let mut sp = [0u32; BLOCK];
    for (xc, yc) in x.chunks(BLOCK).zip(y.chunks_mut(BLOCK)) {
        let len = xc.len();
        let (xp, yp) = (xc.as_ptr(), yc.as_mut_ptr());
        let mut cnt = 0;
        let mut collect = |slow: u32, j: usize| {
            let mut bits = slow;
            while bits != 0 {
                let q = bits.trailing_zeros() as usize;
                sx[cnt] = xc[j + q];
                sp[cnt] = (j + q) as u32;
                cnt += 1;
                bits &= bits - 1;
            }
        };
        let mut j = 0;
        while j + N * l <= len {
            prefetch_ahead(s, xp.wrapping_add(j), N * l);
            let xv = each!(N, h => s.load(xp.add(j + h * l)));
            let (v, slow) = fast_lanes::<S, N>(s, &cs, k, xv);
            for h in 0..N {
                s.store(yp.add(j + h * l), v[h]);
                collect(slow[h], j + h * l);
            }
            j += N * l;
        }
        while j < len {
            let rem = (len - j).min(l);
            let (v, slow) = fast_lanes::<S, 1>(s, &cs, k, [s.load_head(xp.add(j), rem)]);
            s.store_head(yp.add(j), rem, v[0]);
            collect(slow[0] & s.bits(s.head(rem)), j);
            j += rem;
        }
        if cnt > 0 {
            slow_path(k, &sx[..cnt], &mut sy[..cnt], fallback);
            for q in 0..cnt {
                yc[sp[q] as usize] = sy[q];
            }
        }
    }
}
