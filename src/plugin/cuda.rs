//! The CUDA-EP kernels. Attributes, θ/table/B validation, the warps and their content-keyed
//! cache are the CPU kernel's ([`Node`]`<f32>`): θ, the table and B are declared
//! host inputs (`OrtMemTypeCPUInput`), so the core builds the tables on the host; they are then
//! copied to the device (once per context for a constant θ, per run on ORT's stream otherwise)
//! and the device kernels of `crate::cuda` run on ORT's compute stream. X, dY, Y, dX and dθ stay
//! in device memory. `lut_size = 0` (the exact closed form, no table) runs on the host: X (and dY)
//! are copied to the host, computed by the CPU kernels' loops (`host::forward`, `host::backward`),
//! and the results copied back (correct, not fast; see ops/README.md).

use std::sync::{Arc, Mutex, MutexGuard};

use half::{bf16, f16};

use super::context::{Kernel, KernelContext, KernelInfo, RawTensor};
use super::host;
use super::node::Node;
use super::{Elem, OpKind, OpSpec, PResult, PluginError};
use crate::core::Warps;
use crate::cuda::glue::{self, CudaError, ResidentTables, Stream};
use crate::cuda::{DType, HostTables};

fn err(e: CudaError) -> PluginError {
    PluginError::fail(e.to_string())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Creates the CUDA kernel of `spec` (float, float16 or bfloat16).
pub fn create(spec: OpSpec, info: &KernelInfo, prefix: &str) -> PResult<Box<dyn Kernel>> {
    let dtype = match spec.elem {
        Elem::F32 => DType::F32,
        Elem::F16 => DType::F16,
        Elem::BF16 => DType::BF16,
        Elem::F64 => return Err(PluginError::fail("double is not registered for CUDA")),
    };
    let node = Node::<f32>::new(spec.kind, info, prefix)?;
    // NVRTC now, at session creation (from the disk cache after the first process), not at the
    // first run. A failure here is reported by that run, with its context.
    if glue::driver_present() {
        let _ = glue::prepare_devices();
    }
    Ok(Box::new(CudaKernel {
        node,
        dtype,
        packed: Mutex::new(None),
        resident: ResidentTables::default(),
    }))
}

type Packed = (Arc<Warps<f32>>, Arc<Option<HostTables>>);

struct CudaKernel {
    node: Node<f32>,
    dtype: DType,
    /// The packed tables of the last warps (keyed by the warps' identity, which the Arc keeps).
    packed: Mutex<Option<Packed>>,
    /// Device copies of the constant tables, one per CUDA context.
    resident: ResidentTables,
}

impl CudaKernel {
    fn tables(&self, w: &Arc<Warps<f32>>) -> Arc<Option<HostTables>> {
        let mut p = lock(&self.packed);
        if let Some((k, t)) = &*p {
            if Arc::ptr_eq(k, w) {
                return t.clone();
            }
        }
        let t = Arc::new(HostTables::pack(w, self.node.kind() == OpKind::Grad));
        *p = Some((w.clone(), t.clone()));
        t
    }

    fn run(&self, ctx: &KernelContext) -> PResult<()> {
        let (xi, dyi) = self.node.data_inputs();
        let x = ctx
            .input_raw(xi)?
            .ok_or_else(|| PluginError::invalid("input 'X' is missing"))?;
        let w = self.node.warps(ctx)?;
        let (c, inner) = self.node.layout(&x.shape, &w)?;
        let dy = match dyi {
            None => None,
            Some(i) => {
                let dy = ctx
                    .input_raw(i)?
                    .ok_or_else(|| PluginError::invalid("input 'dY' is missing"))?;
                Node::<f32>::check_dy(&dy.shape, &x.shape)?;
                Some(dy)
            }
        };
        let out = ctx.output_raw(0, &x.shape)?;
        let dth = match dy {
            Some(_) => Some(ctx.output_raw(1, w.shape())?),
            None => None,
        };
        let len = x.len() as u64;
        if len == 0 && dy.is_none() {
            return Ok(());
        }
        let stream = Stream(ctx.gpu_stream()? as _);
        if stream.is_null() {
            return Err(err(CudaError::NoStream));
        }
        let tables = self.tables(&w);
        // Under CUDA-graph capture (enable_cuda_graph) only device work on the stream may run:
        // per-run tables come from pageable host memory, the exact mode computes on the host,
        // and the constant tables' first upload synchronises.
        let fixed = self.node.is_fixed(&w);
        if glue::is_capturing(stream).map_err(err)? {
            let why = if tables.is_none() {
                Some("lut_size = 0 computes on the host")
            } else if !fixed {
                Some("θ (or the table) is not a constant initializer, so its tables are copied from host memory at every run")
            } else if !self.resident.on(glue::module_for(stream).map_err(err)?.ctx) {
                Some("its constant tables are uploaded at the first run: run the session once before capturing")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(PluginError::fail(format!(
                    "DiTAC cannot run inside a CUDA graph capture (enable_cuda_graph): {why}"
                )));
            }
        }
        let Some(t) = &*tables else {
            return self.exact_on_host(ctx, stream, &w, (c, inner), &x, dy.as_ref(), out, dth);
        };
        let m = glue::module_for(stream).map_err(err)?;
        // Per-run memory (tables of a non-constant θ, the backward's f64 scratch) from ORT's
        // allocator for X's memory — the CUDA provider's arena, within `gpu_mem_limit` — freed to
        // it once the launches are queued on ORT's stream, as ORT's own kernels free their
        // temporaries; stream-ordered driver memory where ORT gives no allocator.
        let ort_alloc = ctx.allocator_like_input(xi).ok();
        let mut driver = glue::stream_scratch(stream);
        let mut scratch = |bytes: usize| -> glue::Result<glue::Scratch> {
            match &ort_alloc {
                Some(a) => {
                    let b = a
                        .alloc(bytes)
                        .map_err(|e| CudaError::Unavailable(e.to_string()))?;
                    Ok((b.addr(), Box::new(b) as Box<dyn std::any::Any>))
                }
                None => driver(bytes),
            }
        };
        let constant;
        let per_run;
        let dev = if fixed {
            constant = self.resident.get(&m, stream, &t.data).map_err(err)?;
            constant.ptr()
        } else {
            per_run = scratch(t.data.len() * 4).map_err(err)?;
            glue::upload(stream, per_run.0, &t.data).map_err(err)?;
            per_run.0
        };
        match (dy, dth) {
            (Some(dy), Some(dth)) => glue::backward(
                &m,
                &mut scratch,
                stream,
                self.dtype,
                t,
                dev,
                dy.addr,
                x.addr,
                out,
                dth,
                len,
                inner as u64,
            ),
            _ => glue::forward(
                &m,
                stream,
                self.dtype,
                t,
                dev,
                x.addr,
                out,
                len,
                inner as u64,
            ),
        }
        .map_err(err)
    }

    fn download(&self, stream: Stream, t: &RawTensor) -> PResult<Vec<f32>> {
        let n = t.len();
        Ok(match self.dtype {
            DType::F32 => {
                let mut v = vec![0f32; n];
                glue::download(stream, &mut v, t.addr).map_err(err)?;
                v
            }
            DType::F16 | DType::BF16 => {
                let mut v = vec![0u16; n];
                glue::download(stream, &mut v, t.addr).map_err(err)?;
                if self.dtype == DType::F16 {
                    v.iter().map(|&b| f16::from_bits(b).to_f32()).collect()
                } else {
                    v.iter().map(|&b| bf16::from_bits(b).to_f32()).collect()
                }
            }
        })
    }

    fn upload(&self, stream: Stream, dst: u64, v: &[f32]) -> PResult<()> {
        match self.dtype {
            DType::F32 => glue::upload(stream, dst, v),
            DType::F16 => {
                let b: Vec<u16> = v.iter().map(|&x| f16::from_f32(x).to_bits()).collect();
                glue::upload(stream, dst, &b)
            }
            DType::BF16 => {
                let b: Vec<u16> = v.iter().map(|&x| bf16::from_f32(x).to_bits()).collect();
                glue::upload(stream, dst, &b)
            }
        }
        // The host buffer is freed on return: wait for the copy.
        .and_then(|()| glue::sync(stream))
        .map_err(err)
    }

    /// `lut_size = 0`: the core's closed form on the host, through host copies.
    #[allow(clippy::too_many_arguments)]
    fn exact_on_host(
        &self,
        ctx: &KernelContext,
        stream: Stream,
        w: &Warps<f32>,
        (c, inner): (usize, usize),
        x: &RawTensor,
        dy: Option<&RawTensor>,
        out: u64,
        dth: Option<u64>,
    ) -> PResult<()> {
        let xs = self.download(stream, x)?;
        let mut o = vec![0f32; xs.len()];
        match (dy, dth) {
            (Some(dy), Some(dth)) => {
                let gs = self.download(stream, dy)?;
                let mut dt = vec![0f32; w.shape().iter().product()];
                host::backward::<f32>(ctx, w, &gs, &xs, &mut o, &mut dt, c, inner)?;
                self.upload(stream, out, &o)?;
                glue::upload(stream, dth, &dt)
                    .and_then(|()| glue::sync(stream))
                    .map_err(err)
            }
            _ => {
                host::forward::<f32>(ctx, w, &xs, &mut o, c, inner)?;
                self.upload(stream, out, &o)
            }
        }
    }
}

impl Kernel for CudaKernel {
    fn compute(&self, ctx: &KernelContext) -> PResult<()> {
        self.run(ctx).map_err(|e| e.in_node(self.node.prefix()))
    }
}
