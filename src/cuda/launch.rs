//! The launches of one forward or backward call — split, plan, arguments, scratch, the dθ
//! reduction — for any executor of the kernels: the CUDA driver ([`super::glue`]) or the CPU
//! emulation of `ops/cuda/ditac.cu` (`tests/cuda_host`), so that the emulator tests the same
//! planning code a GPU runs.

use super::{
    fwd_args, grad_args, plan_forward, plan_grad, DType, DeviceLimits, FwdArgs, GradArgs, GradPtrs,
    HostTables, Launch, ReduceArgs, Split,
};

/// What runs the kernels. Addresses are device addresses (`u64`); launches are ordered (one
/// stream), so scratch handed out by [`Executor::scratch`] may be released once the calls that
/// use it have been issued.
pub trait Executor {
    type Error;
    /// Scratch memory owned by the executor until dropped (stream-ordered on a GPU).
    type Scratch;
    /// The device as the planner sees it, for the kernel kind at hand.
    fn forward_limits(&self, dtype: DType) -> DeviceLimits;
    fn grad_limits(&self, dtype: DType) -> DeviceLimits;
    /// `bytes` of scratch (any content) and its address; 0 bytes may give address 0.
    fn scratch(&mut self, bytes: usize) -> Result<(u64, Self::Scratch), Self::Error>;
    /// Sets `count` floats at `dst` to 0.0.
    fn zero_f32(&mut self, dst: u64, count: usize) -> Result<(), Self::Error>;
    fn launch_forward(&mut self, dtype: DType, l: &Launch, a: &FwdArgs) -> Result<(), Self::Error>;
    fn launch_grad(&mut self, dtype: DType, l: &Launch, a: &GradArgs) -> Result<(), Self::Error>;
    fn launch_reduce(&mut self, l: &Launch, a: &ReduceArgs) -> Result<(), Self::Error>;
}

/// `y = act(x)` for `len` elements of `dtype`, tables at `tables`; element `e` is in channel
/// `(e / inner) % channels`.
#[allow(clippy::too_many_arguments)]
pub fn forward<E: Executor>(
    ex: &mut E,
    dtype: DType,
    t: &HostTables,
    tables: u64,
    x: u64,
    y: u64,
    len: u64,
    inner: u64,
) -> Result<(), E::Error> {
    if len == 0 {
        return Ok(());
    }
    let split = Split::new(len, dtype, &[x, y]);
    let l = plan_forward(&split, t.channels, t.nodes, &ex.forward_limits(dtype));
    let args = fwd_args(t, tables, x, y, len, inner, &split, &l);
    ex.launch_forward(dtype, &l, &args)
}

/// `dx = dy·∂y/∂x` and `dtheta = Σ dy·∂y/∂θ` (float, channels × d): the backward kernel into
/// per-block f64 partial sums, then the reduction kernel.
#[allow(clippy::too_many_arguments)]
pub fn backward<E: Executor>(
    ex: &mut E,
    dtype: DType,
    t: &HostTables,
    tables: u64,
    dy: u64,
    x: u64,
    dx: u64,
    dtheta: u64,
    len: u64,
    inner: u64,
) -> Result<(), E::Error> {
    let width = t.channels as u64 * t.d as u64;
    if len == 0 {
        if width > 0 {
            ex.zero_f32(dtheta, width as usize)?;
        }
        return Ok(());
    }
    let split = Split::new(len, dtype, &[dy, x, dx]);
    let plan = plan_grad(&split, t.channels, t.nodes, t.d, &ex.grad_limits(dtype));
    let (acc, _acc) = ex.scratch(plan.acc_len as usize * 8)?;
    let (partials, _partials) = ex.scratch(plan.partials_len as usize * 8)?;
    let ptrs = GradPtrs {
        dy,
        x,
        dx,
        tables,
        acc,
        partials,
    };
    let args = grad_args(t, &ptrs, len, inner, &split, &plan);
    ex.launch_grad(dtype, &plan.launch, &args)?;
    if width > 0 {
        let r = ReduceArgs {
            partials,
            out: dtheta,
            slots: plan.launch.grid,
            width: width as u32,
        };
        ex.launch_reduce(&plan.reduce, &r)?;
    }
    Ok(())
}
