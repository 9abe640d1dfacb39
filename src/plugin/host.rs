//! The elementwise work on the host, over a core [`Warps`]: split into fixed chunks run on ORT's
//! intra-op thread pool; each chunk goes through the one-pass per-channel kernel (joined tables)
//! or, run by run, through the warp of its channel. Used by the CPU kernels, and by the CUDA kernels
//! for `lut_size = 0` (on host copies).

use std::sync::{Mutex, MutexGuard};

use half::f16;
use half::slice::HalfFloatSliceExt;

use super::context::KernelContext;
use super::PResult;
use crate::core::kernels::{
    table_backward, table_forward_channels, Channels, GradTables, TableKernel,
};
use crate::core::real::Real;
use crate::core::{Activation, Warps};

/// Elements per task of the thread pool (forward; the backward may use larger chunks, see
/// [`GRAD_BUDGET`]). The partition depends on shapes only, never on the thread count, so results
/// (the dθ sums included) are identical with any number of threads.
pub const CHUNK: usize = 1 << 16;
/// Upper bound on the f64 partial sums of dθ held at once (chunks × C × d).
pub const GRAD_BUDGET: usize = 1 << 20;
/// Per-channel rows with fewer contiguous elements than this go through the one-pass channel
/// kernel (every element finds its row); longer runs call the one-row kernel run by run.
const SHORT_RUN: usize = 256;
/// float16 tensors are computed in f32 through stack buffers of this many elements.
const CONV_BLOCK: usize = 1024;

/// A tensor element type `T` and the precision it is computed in.
pub trait Element: Copy + Send + Sync + 'static {
    type R: Real;
    fn forward(act: &Activation<Self::R>, x: &[Self], y: &mut [Self]);
    fn backward(
        act: &Activation<Self::R>,
        dy: &[Self],
        x: &[Self],
        dx: &mut [Self],
        dtheta: &mut [f64],
    );
    /// The one-pass per-channel forward through concatenated f32 tables (false: not available
    /// for this type).
    fn forward_tables(k: &TableKernel, n: usize, ch: Channels, x: &[Self], y: &mut [Self]) -> bool;
    /// The one-pass per-channel backward (dθ: C·d sums).
    #[allow(clippy::too_many_arguments)]
    fn backward_tables(
        k: &TableKernel,
        g: &GradTables,
        n: usize,
        ch: Channels,
        dy: &[Self],
        x: &[Self],
        dx: &mut [Self],
        dtheta: &mut [f64],
    ) -> bool;
}

impl Element for f32 {
    type R = f32;
    fn forward(act: &Activation<f32>, x: &[f32], y: &mut [f32]) {
        act.forward(x, y)
    }
    fn backward(act: &Activation<f32>, dy: &[f32], x: &[f32], dx: &mut [f32], dt: &mut [f64]) {
        act.backward(dy, x, dx, dt)
    }
    fn forward_tables(k: &TableKernel, n: usize, ch: Channels, x: &[f32], y: &mut [f32]) -> bool {
        table_forward_channels(k, n, ch, x, y);
        true
    }
    fn backward_tables(
        k: &TableKernel,
        g: &GradTables,
        n: usize,
        ch: Channels,
        dy: &[f32],
        x: &[f32],
        dx: &mut [f32],
        dtheta: &mut [f64],
    ) -> bool {
        table_backward(k, g, n, ch, dy, x, dx, dtheta);
        true
    }
}

impl Element for f64 {
    type R = f64;
    fn forward(act: &Activation<f64>, x: &[f64], y: &mut [f64]) {
        act.forward(x, y)
    }
    fn backward(act: &Activation<f64>, dy: &[f64], x: &[f64], dx: &mut [f64], dt: &mut [f64]) {
        act.backward(dy, x, dx, dt)
    }
    fn forward_tables(_: &TableKernel, _: usize, _: Channels, _: &[f64], _: &mut [f64]) -> bool {
        false
    }
    fn backward_tables(
        _: &TableKernel,
        _: &GradTables,
        _: usize,
        _: Channels,
        _: &[f64],
        _: &[f64],
        _: &mut [f64],
        _: &mut [f64],
    ) -> bool {
        false
    }
}

impl Element for f16 {
    type R = f32;
    fn forward(act: &Activation<f32>, x: &[f16], y: &mut [f16]) {
        let mut xb = [0f32; CONV_BLOCK];
        let mut yb = [0f32; CONV_BLOCK];
        for (xc, yc) in x.chunks(CONV_BLOCK).zip(y.chunks_mut(CONV_BLOCK)) {
            let n = xc.len();
            xc.convert_to_f32_slice(&mut xb[..n]);
            act.forward(&xb[..n], &mut yb[..n]);
            yc.convert_from_f32_slice(&yb[..n]);
        }
    }
    fn backward(act: &Activation<f32>, dy: &[f16], x: &[f16], dx: &mut [f16], dt: &mut [f64]) {
        let mut gb = [0f32; CONV_BLOCK];
        let mut xb = [0f32; CONV_BLOCK];
        let mut ob = [0f32; CONV_BLOCK];
        for ((gc, xc), oc) in dy
            .chunks(CONV_BLOCK)
            .zip(x.chunks(CONV_BLOCK))
            .zip(dx.chunks_mut(CONV_BLOCK))
        {
            let n = xc.len();
            gc.convert_to_f32_slice(&mut gb[..n]);
            xc.convert_to_f32_slice(&mut xb[..n]);
            act.backward(&gb[..n], &xb[..n], &mut ob[..n], dt);
            oc.convert_from_f32_slice(&ob[..n]);
        }
    }
    fn forward_tables(k: &TableKernel, n: usize, ch: Channels, x: &[f16], y: &mut [f16]) -> bool {
        let mut xb = [0f32; CONV_BLOCK];
        let mut yb = [0f32; CONV_BLOCK];
        let mut start = ch.start;
        for (xc, yc) in x.chunks(CONV_BLOCK).zip(y.chunks_mut(CONV_BLOCK)) {
            let m = xc.len();
            xc.convert_to_f32_slice(&mut xb[..m]);
            table_forward_channels(k, n, Channels { start, ..ch }, &xb[..m], &mut yb[..m]);
            yc.convert_from_f32_slice(&yb[..m]);
            start += m;
        }
        true
    }
    fn backward_tables(
        k: &TableKernel,
        g: &GradTables,
        n: usize,
        ch: Channels,
        dy: &[f16],
        x: &[f16],
        dx: &mut [f16],
        dtheta: &mut [f64],
    ) -> bool {
        let mut gb = [0f32; CONV_BLOCK];
        let mut xb = [0f32; CONV_BLOCK];
        let mut ob = [0f32; CONV_BLOCK];
        let mut start = ch.start;
        for ((gc, xc), oc) in dy
            .chunks(CONV_BLOCK)
            .zip(x.chunks(CONV_BLOCK))
            .zip(dx.chunks_mut(CONV_BLOCK))
        {
            let m = xc.len();
            gc.convert_to_f32_slice(&mut gb[..m]);
            xc.convert_to_f32_slice(&mut xb[..m]);
            let c = Channels { start, ..ch };
            table_backward(k, g, n, c, &gb[..m], &xb[..m], &mut ob[..m], dtheta);
            oc.convert_from_f32_slice(&ob[..m]);
            start += m;
        }
        true
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Calls `f(channel, start, end)` for each run of elements of [start, start+len) that share a
/// channel, for a layout of `c` channels of `inner` contiguous elements.
fn for_runs(
    start: usize,
    len: usize,
    c: usize,
    inner: usize,
    mut f: impl FnMut(usize, usize, usize),
) {
    let end = start + len;
    let mut i = start;
    while i < end {
        let blk = i / inner;
        let e = end.min((blk + 1) * inner);
        f(blk % c, i, e);
        i = e;
    }
}

pub(super) fn forward<E: Element>(
    ctx: &KernelContext,
    w: &Warps<E::R>,
    x: &[E],
    y: &mut [E],
    c: usize,
    inner: usize,
) -> PResult<()> {
    if x.is_empty() {
        return Ok(());
    }
    let joined = if c > 1 && inner < SHORT_RUN {
        w.joined()
    } else {
        None
    };
    let chunks: Vec<Mutex<&mut [E]>> = y.chunks_mut(CHUNK).map(Mutex::new).collect();
    ctx.parallel_for(chunks.len(), &|t| {
        let mut ys = lock(&chunks[t]);
        let start = t * CHUNK;
        if let Some(j) = &joined {
            let ch = Channels { start, c, inner };
            if E::forward_tables(&j.kernel, j.nodes, ch, &x[start..start + ys.len()], &mut ys) {
                return Ok(());
            }
        }
        for_runs(start, ys.len(), c, inner, |ch, s, e| {
            E::forward(w.row(ch), &x[s..e], &mut ys[s - start..e - start])
        });
        Ok(())
    })
}

#[allow(clippy::too_many_arguments)]
pub(super) fn backward<E: Element>(
    ctx: &KernelContext,
    w: &Warps<E::R>,
    dy: &[E],
    x: &[E],
    dx: &mut [E],
    dtheta: &mut [f32],
    c: usize,
    inner: usize,
) -> PResult<()> {
    dtheta.fill(0.0);
    let n = x.len();
    if n == 0 {
        return Ok(());
    }
    let per = dtheta.len();
    let d = per / c.max(1);
    // Bound the partial sums (chunks × C × d); the chunking depends on shapes only.
    let max_chunks = (GRAD_BUDGET / per.max(1)).max(1);
    let chunk = CHUNK.max(n.div_ceil(max_chunks));
    let joined = match w.joined() {
        Some(j) if c > 1 && inner < SHORT_RUN => j.grad.map(|g| (j.kernel, g, j.nodes)),
        _ => None,
    };
    let chunks: Vec<Mutex<(&mut [E], Vec<f64>)>> = dx
        .chunks_mut(chunk)
        .map(|s| Mutex::new((s, Vec::new())))
        .collect();
    ctx.parallel_for(chunks.len(), &|t| {
        let mut g = lock(&chunks[t]);
        let (dxs, part) = &mut *g;
        *part = vec![0f64; per];
        let start = t * chunk;
        if let Some((k, g, n)) = &joined {
            let ch = Channels { start, c, inner };
            let e = start + dxs.len();
            if E::backward_tables(k, g, *n, ch, &dy[start..e], &x[start..e], dxs, part) {
                return Ok(());
            }
        }
        for_runs(start, dxs.len(), c, inner, |ch, s, e| {
            E::backward(
                w.row(ch),
                &dy[s..e],
                &x[s..e],
                &mut dxs[s - start..e - start],
                &mut part[ch * d..(ch + 1) * d],
            )
        });
        Ok(())
    })?;
    // Fixed-order reduction: deterministic for any thread count.
    let mut acc = vec![0f64; per];
    for m in &chunks {
        let g = lock(m);
        for (a, p) in acc.iter_mut().zip(&g.1) {
            *a += p;
        }
    }
    for (o, a) in dtheta.iter_mut().zip(&acc) {
        *o = *a as f32;
    }
    Ok(())
}
