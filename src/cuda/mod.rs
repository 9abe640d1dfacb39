//! The CUDA side of DiTAC, in two layers:
//!
//! * this module: everything that can be decided without a GPU — the kernel source
//!   (`ops/cuda/ditac.cu`, embedded), the `#[repr(C)]` argument structs the kernels take by value,
//!   the split of a tensor into a scalar head, 16-byte vectors and a scalar tail, the launch
//!   configuration (grid, block, dynamic shared memory), the dθ reduction plan, and the packing
//!   of the core's tables into one flat buffer. Plain Rust, tested on the CPU.
//! * [`glue`]: the only place that calls `cudarc` (driver API through dynamic loading, NVRTC):
//!   context from the stream, NVRTC compile (at kernel creation; [`cache`] on disk) and
//!   per-context module cache, device
//!   buffers, launches on the caller's stream (ORT's compute stream in the plugin).
//!
//! Decisions are recorded in `ops/README.md` (§ CUDA).

pub mod cache;
pub mod glue;
pub mod launch;

use crate::core::{Joined, Variant, Warps};

/// The kernels' source, compiled by NVRTC at run time (never at build time).
pub const SOURCE: &str = include_str!("../../ops/cuda/ditac.cu");

/// Names another kernel source file to compile instead of [`SOURCE`] (to try a changed kernel
/// without rebuilding; the CPU emulation in `tests/cuda_host` reads it too).
pub const SOURCE_ENV: &str = "DITAC_CUDA_SOURCE";

/// The kernel source to compile: the file named by `DITAC_CUDA_SOURCE` when set, else the
/// embedded [`SOURCE`]. The error names the file that could not be read.
pub fn source() -> std::result::Result<std::borrow::Cow<'static, str>, String> {
    match std::env::var_os(SOURCE_ENV) {
        Some(p) if !p.is_empty() => std::fs::read_to_string(&p)
            .map(std::borrow::Cow::Owned)
            .map_err(|e| format!("{SOURCE_ENV}={}: {e}", p.to_string_lossy())),
        _ => Ok(std::borrow::Cow::Borrowed(SOURCE)),
    }
}

/// Threads per block of the elementwise kernels.
pub const BLOCK: u32 = 256;
/// Warps per block.
pub const WARPS: u32 = BLOCK / 32;
/// Vectors in flight per thread and iteration in the forward (`FWD_UNROLL` in the source).
pub const FWD_UNROLL: u64 = 4;
/// Threads per block of the final dθ reduction (the size of its shared array in the source).
pub const REDUCE_BLOCK: u32 = 256;
/// dθ rows of at most this many values are accumulated in registers (`GRAD_DREG` in the source).
pub const GRAD_DREG: usize = 16;
/// Shared memory every block may use without opting in.
pub const SMEM_DEFAULT: u32 = 48 * 1024;
/// Upper bound on the f64 scratch of the backward (per-warp accumulators in global memory and
/// per-block partial sums), in values.
pub const GRAD_SCRATCH_BUDGET: u64 = 1 << 24;

/// A tensor element type on the device; the kernels compute in float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
}

impl DType {
    pub fn size(self) -> u64 {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }
    /// Elements per 16-byte vector.
    pub fn vec(self) -> u64 {
        16 / self.size()
    }
    pub fn suffix(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
        }
    }
    pub const ALL: [DType; 3] = [DType::F32, DType::F16, DType::BF16];
}

/// The forward kernel's argument (`struct FwdArgs` in `ops/cuda/ditac.cu`). Device pointers are
/// `u64` (`CUdeviceptr`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FwdArgs {
    pub x: u64,
    pub y: u64,
    pub xt: u64,
    pub len: u64,
    pub head: u64,
    pub nvec: u64,
    pub inner: u64,
    pub channels: u32,
    pub nodes: u32,
    pub lo: f32,
    pub hi: f32,
    pub add_in: f32,
    pub mul_in: f32,
    pub scale: f32,
    pub alpha: f32,
    pub variant: u32,
    pub linear: u32,
    pub smem: u32,
    pub pad: u32,
}

/// The backward kernel's argument (`struct GradArgs`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GradArgs {
    pub dy: u64,
    pub x: u64,
    pub dx: u64,
    pub xt: u64,
    pub dt: u64,
    pub g: u64,
    pub acc: u64,
    pub partials: u64,
    pub len: u64,
    pub head: u64,
    pub nvec: u64,
    pub inner: u64,
    pub channels: u32,
    pub nodes: u32,
    pub d: u32,
    pub smem: u32,
    pub lo: f32,
    pub hi: f32,
    pub add_in: f32,
    pub mul_in: f32,
    pub mul_out: f32,
    pub scale: f32,
    pub alpha: f32,
    pub variant: u32,
    pub linear: u32,
    pub pad: u32,
}

/// The final reduction's argument (`struct ReduceArgs`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReduceArgs {
    pub partials: u64,
    pub out: u64,
    pub slots: u32,
    pub width: u32,
}

/// Bits of `GradArgs::smem`.
pub const SMEM_TABLES: u32 = 1;
pub const SMEM_ACC: u32 = 2;

/// How `len` elements at the given device addresses are cut: `head` scalar elements, then
/// `nvec` aligned 16-byte vectors, then `tail` scalar elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    pub head: u64,
    pub nvec: u64,
    pub tail: u64,
}

impl Split {
    /// Vectorised when every pointer is element-aligned and all share one offset modulo 16
    /// bytes; otherwise every element is a scalar (head = len).
    pub fn new(len: u64, dtype: DType, ptrs: &[u64]) -> Split {
        let es = dtype.size();
        let off = ptrs.first().map_or(0, |p| p % 16);
        let ok = ptrs.iter().all(|p| p % es == 0 && p % 16 == off);
        if !ok {
            return Split {
                head: len,
                nvec: 0,
                tail: 0,
            };
        }
        let head = (((16 - off) % 16) / es).min(len);
        let nvec = (len - head) / dtype.vec();
        Split {
            head,
            nvec,
            tail: len - head - nvec * dtype.vec(),
        }
    }

    pub fn scalars(&self) -> u64 {
        self.head + self.tail
    }
}

/// What the launch planner needs to know about the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeviceLimits {
    pub sm_count: u32,
    /// Blocks of `BLOCK` threads resident per SM for the kernel at hand without dynamic shared
    /// memory (the occupancy the registers allow).
    pub blocks_per_sm: u32,
    /// The most dynamic shared memory a block may opt in to.
    pub smem_optin: u32,
    /// Shared memory per SM (0: unknown, no limit applied).
    pub smem_per_sm: u32,
}

/// One kernel launch: 1-D grid and block, dynamic shared memory in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launch {
    pub grid: u32,
    pub block: u32,
    pub smem: u32,
}

/// Shared memory the driver reserves per block.
pub const SMEM_RESERVED: u64 = 1024;

/// Blocks resident on the whole device when each uses `smem` bytes of dynamic shared memory.
pub fn resident(dev: &DeviceLimits, smem: u64) -> u64 {
    let mut per_sm = dev.blocks_per_sm.max(1) as u64;
    if smem > 0 && dev.smem_per_sm > 0 {
        per_sm = per_sm.min((dev.smem_per_sm as u64 / (smem + SMEM_RESERVED)).max(1));
    }
    dev.sm_count.max(1) as u64 * per_sm
}

/// The forward's launch: a grid-stride loop over at most one wave of resident blocks (each block
/// loads the table into shared memory once), fewer blocks for small tensors. The table goes to
/// shared memory when `channels × nodes` floats fit in the default 48 KiB.
pub fn plan_forward(split: &Split, channels: u32, nodes: u32, dev: &DeviceLimits) -> Launch {
    let table = channels as u64 * nodes as u64 * 4;
    let smem = if table <= SMEM_DEFAULT as u64 {
        table as u32
    } else {
        0
    };
    let per_block = BLOCK as u64 * FWD_UNROLL;
    let work = split
        .nvec
        .div_ceil(per_block)
        .max(split.scalars().div_ceil(BLOCK as u64));
    Launch {
        grid: work.clamp(1, resident(dev, smem as u64)) as u32,
        block: BLOCK,
        smem,
    }
}

/// The backward's launch and its reduction plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GradPlan {
    pub launch: Launch,
    /// `SMEM_TABLES | SMEM_ACC` bits.
    pub smem_flags: u32,
    /// dθ values per block: channels × d.
    pub width: u64,
    /// f64 per-warp accumulators in global memory (0 when they are in shared memory).
    pub acc_len: u64,
    /// f64 per-block partial sums: grid × width.
    pub partials_len: u64,
    /// The final reduction: one block per dθ value, summing `grid` slots.
    pub reduce: Launch,
}

/// Bytes of the backward's tables in shared memory (xt, dt, dT̂/dθ), rounded up to 16.
pub fn grad_table_bytes(channels: u32, nodes: u32, d: u32) -> u64 {
    let cn = channels as u64 * nodes as u64;
    ((2 * cn + cn * d as u64) * 4).div_ceil(16) * 16
}

/// Plans the backward: tables in shared memory when they fit the opt-in limit (with the
/// per-warp f64 accumulators too when those fit beside them); otherwise global memory. The grid
/// is at most one wave, and small enough that the f64 scratch stays under
/// [`GRAD_SCRATCH_BUDGET`]. The plan depends on the shapes and the device only, so the summation
/// order of dθ — and dθ — is the same for the same input on the same device.
pub fn plan_grad(split: &Split, channels: u32, nodes: u32, d: u32, dev: &DeviceLimits) -> GradPlan {
    let width = channels as u64 * d as u64;
    let limit = dev.smem_optin.max(SMEM_DEFAULT) as u64;
    let tables = grad_table_bytes(channels, nodes, d);
    let acc = WARPS as u64 * width * 8;
    let mut flags = 0;
    let mut smem = 0u64;
    if tables <= limit {
        flags |= SMEM_TABLES;
        smem += tables;
    }
    if smem + acc <= limit {
        flags |= SMEM_ACC;
        smem += acc;
    }
    let work = split
        .nvec
        .div_ceil(BLOCK as u64)
        .max(split.scalars().div_ceil(BLOCK as u64));
    let per_block_scratch = width.max(1)
        * if flags & SMEM_ACC != 0 {
            1
        } else {
            1 + WARPS as u64
        };
    let budget_blocks = (GRAD_SCRATCH_BUDGET / per_block_scratch).max(1);
    let grid = work.clamp(1, resident(dev, smem).min(budget_blocks));
    GradPlan {
        launch: Launch {
            grid: grid as u32,
            block: BLOCK,
            smem: smem as u32,
        },
        smem_flags: flags,
        width,
        acc_len: if flags & SMEM_ACC != 0 {
            0
        } else {
            grid * WARPS as u64 * width
        },
        partials_len: grid * width,
        reduce: Launch {
            grid: width.max(1) as u32,
            block: REDUCE_BLOCK,
            smem: 0,
        },
    }
}

/// The scalars every element uses (the same for every row of θ or of the table).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scalars {
    pub lo: f32,
    pub hi: f32,
    pub add_in: f32,
    pub mul_in: f32,
    pub mul_out: f32,
    pub scale: f32,
    pub alpha: f32,
    pub variant: u32,
    pub linear: u32,
}

fn variant_code(v: Variant) -> u32 {
    match v {
        Variant::Ditac => 0,
        Variant::Ge => 1,
        Variant::Leaky => 2,
    }
}

/// The core's joined tables ([`Joined`]: one warp per channel, channel after channel), packed for
/// the device in one buffer: `[xt: C×n][dt: C×n][dT̂/dθ: C×n×d]` (the gradient parts only when
/// packed with gradients).
#[derive(Debug, Clone, PartialEq)]
pub struct HostTables {
    pub data: Vec<f32>,
    pub channels: u32,
    pub nodes: u32,
    /// Values per dT̂/dθ row (0 without gradients).
    pub d: u32,
    pub scalars: Scalars,
}

impl HostTables {
    /// Packs the joined tables of `warps`. `None` when they have no float32 tables (`lut_size = 0`:
    /// the exact closed form) or, `with_grad`, no gradient tables.
    pub fn pack(warps: &Warps<f32>, with_grad: bool) -> Option<HostTables> {
        Self::from_joined(&warps.joined()?, with_grad)
    }

    /// Packs `j` (see [`HostTables::pack`]).
    pub fn from_joined(j: &Joined<'_>, with_grad: bool) -> Option<HostTables> {
        let k = &j.kernel;
        let grad = if with_grad { Some(j.grad?) } else { None };
        let d = grad.map_or(0, |g| g.d);
        let mut data = Vec::with_capacity(k.xt.len() * (if with_grad { 2 + d } else { 1 }));
        data.extend_from_slice(k.xt);
        if let Some(g) = grad {
            data.extend_from_slice(g.dt);
            data.extend_from_slice(g.dtheta);
        }
        Some(HostTables {
            data,
            channels: u32::try_from(j.channels).ok()?,
            nodes: u32::try_from(j.nodes).ok()?,
            d: u32::try_from(d).ok()?,
            scalars: Scalars {
                lo: k.lo,
                hi: k.hi,
                add_in: k.add_in,
                mul_in: k.mul_in,
                mul_out: j.mul_out,
                scale: k.scale,
                alpha: k.alpha,
                variant: variant_code(k.variant),
                linear: k.linear as u32,
            },
        })
    }

    /// Offsets (in floats) of the dt and dT̂/dθ parts.
    pub fn offsets(&self) -> (u64, u64) {
        let cn = self.channels as u64 * self.nodes as u64;
        (cn, 2 * cn)
    }
}

/// The forward's argument for tables at device address `tables`.
#[allow(clippy::too_many_arguments)]
pub fn fwd_args(
    t: &HostTables,
    tables: u64,
    x: u64,
    y: u64,
    len: u64,
    inner: u64,
    split: &Split,
    launch: &Launch,
) -> FwdArgs {
    let s = &t.scalars;
    FwdArgs {
        x,
        y,
        xt: tables,
        len,
        head: split.head,
        nvec: split.nvec,
        inner: inner.max(1),
        channels: t.channels,
        nodes: t.nodes,
        lo: s.lo,
        hi: s.hi,
        add_in: s.add_in,
        mul_in: s.mul_in,
        scale: s.scale,
        alpha: s.alpha,
        variant: s.variant,
        linear: s.linear,
        smem: (launch.smem > 0) as u32,
        pad: 0,
    }
}

/// Device addresses of one backward call.
#[derive(Debug, Clone, Copy, Default)]
pub struct GradPtrs {
    pub dy: u64,
    pub x: u64,
    pub dx: u64,
    pub tables: u64,
    pub acc: u64,
    pub partials: u64,
}

/// The backward's argument.
pub fn grad_args(
    t: &HostTables,
    p: &GradPtrs,
    len: u64,
    inner: u64,
    split: &Split,
    plan: &GradPlan,
) -> GradArgs {
    let s = &t.scalars;
    let (dt, g) = t.offsets();
    GradArgs {
        dy: p.dy,
        x: p.x,
        dx: p.dx,
        xt: p.tables,
        dt: p.tables + dt * 4,
        g: p.tables + g * 4,
        acc: p.acc,
        partials: p.partials,
        len,
        head: split.head,
        nvec: split.nvec,
        inner: inner.max(1),
        channels: t.channels,
        nodes: t.nodes,
        d: t.d,
        smem: plan.smem_flags,
        lo: s.lo,
        hi: s.hi,
        add_in: s.add_in,
        mul_in: s.mul_in,
        mul_out: s.mul_out,
        scale: s.scale,
        alpha: s.alpha,
        variant: s.variant,
        linear: s.linear,
        pad: 0,
    }
}

/// Kernel names in the module.
pub fn fwd_name(dtype: DType) -> String {
    format!("ditac_fwd_{}", dtype.suffix())
}
pub fn grad_name(dtype: DType) -> String {
    format!("ditac_grad_{}", dtype.suffix())
}
pub const REDUCE_NAME: &str = "ditac_grad_reduce";

/// NVRTC options: a real architecture (a cubin, no PTX JIT), and float arithmetic without
/// contraction so that results follow the CPU core's op order.
pub fn nvrtc_options(major: i32, minor: i32) -> Vec<String> {
    vec![
        format!("--gpu-architecture=sm_{major}{minor}"),
        "--fmad=false".into(),
        "--prec-div=true".into(),
        "--prec-sqrt=true".into(),
        "--ftz=false".into(),
        "--std=c++17".into(),
    ]
}

/// NVRTC options for PTX of virtual architecture `compute_{arch}` (the fallback when NVRTC cannot
/// produce a cubin for the device: the driver compiles the PTX when the module is loaded).
pub fn nvrtc_options_ptx(arch: i32) -> Vec<String> {
    let mut o = nvrtc_options(arch / 10, arch % 10);
    o[0] = format!("--gpu-architecture=compute_{arch}");
    o
}

/// The newest architecture NVRTC supports that the device (compute capability `cc` = 10·major +
/// minor) can run as PTX: the largest supported one not above `cc`.
pub fn ptx_fallback_arch(cc: i32, supported: &[i32]) -> Option<i32> {
    supported.iter().copied().filter(|&a| a <= cc).max()
}

#[cfg(test)]
mod tests;
