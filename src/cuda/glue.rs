//! The only code that calls `cudarc`: the CUDA driver API (loaded at run time: `libcuda` need
//! not exist for the library to load) and NVRTC (loaded at the first compile, i.e. the first
//! launch on a device).
//!
//! * The context is the one of the caller's stream (`cuStreamGetCtx`), made current on the
//!   calling thread when it is not already.
//! * `ops/cuda/ditac.cu` is compiled once per compute capability to a cubin (NVRTC, a real
//!   `sm_XY` target), loaded once per context, and both are cached for the process.
//! * Every launch and copy goes to the caller's stream (ORT's compute stream in the plugin);
//!   never to the default stream. Per-call scratch is stream-ordered (`cuMemAllocAsync` /
//!   `cuMemFreeAsync` on that stream).
//! * cudarc panics when a library or symbol is missing: every public function here runs under
//!   `catch_unwind` and reports that as an error.

use std::ffi::{c_char, c_void, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::result as cu;
use cudarc::driver::sys;
use cudarc::nvrtc::result as nv;
use cudarc::nvrtc::sys as nvsys;

use super::launch::Executor;
use super::{
    fwd_name, grad_name, nvrtc_options, nvrtc_options_ptx, DType, DeviceLimits, FwdArgs, GradArgs,
    HostTables, Launch, ReduceArgs, REDUCE_NAME,
};

/// A CUDA stream (`CUstream`, the same handle as a runtime `cudaStream_t`): ORT's compute
/// stream in the plugin. Device addresses passed with it (`u64`) are the caller's contract: a
/// wrong one is a device fault that CUDA reports as an error, never a host memory access.
#[derive(Debug, Clone, Copy)]
pub struct Stream(pub sys::CUstream);

impl Stream {
    pub fn is_null(&self) -> bool {
        self.0.is_null()
    }
}

/// What can go wrong on the device side.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CudaError {
    #[error("CUDA driver call {call} failed: {msg}")]
    Driver { call: &'static str, msg: String },
    #[error("NVRTC could not compile ops/cuda/ditac.cu for sm_{major}{minor}: {msg}")]
    Compile { major: i32, minor: i32, msg: String },
    #[error("no CUDA compute stream (the kernels never use the default stream)")]
    NoStream,
    #[error("CUDA is not usable here: {0}")]
    Unavailable(String),
}

pub type Result<T> = std::result::Result<T, CudaError>;

fn drv(call: &'static str) -> impl FnOnce(cu::DriverError) -> CudaError {
    move |e| CudaError::Driver {
        call,
        msg: format!("{e:?}"),
    }
}

/// Runs `f`, turning a panic of cudarc (library or symbol missing) into an error.
fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = if let Some(s) = p.downcast_ref::<&str>() {
                (*s).to_string()
            } else if let Some(s) = p.downcast_ref::<String>() {
                s.clone()
            } else {
                "panic".to_string()
            };
            Err(CudaError::Unavailable(msg))
        }
    }
}

/// Whether `libcuda` can be opened (only tries to open it; initialises nothing). Never panics.
pub fn driver_present() -> bool {
    // SAFETY: only dlopen attempts.
    catch_unwind(|| unsafe { sys::is_culib_present() }).unwrap_or(false)
}

static COMPILES: AtomicUsize = AtomicUsize::new(0);

/// How many NVRTC compilations this process has started (0 until a kernel first runs on a GPU).
pub fn compile_count() -> usize {
    COMPILES.load(Ordering::Relaxed)
}

/// Compiles the kernels for compute capability `major.minor` to a cubin. Needs `libnvrtc`
/// (but no GPU).
pub fn compile(major: i32, minor: i32) -> Result<Vec<u8>> {
    compile_with(&nvrtc_options(major, minor), true, major, minor)
}

/// Compiles the kernels to PTX for `compute_{arch}` (NUL-terminated text, for the driver's JIT).
pub fn compile_ptx(arch: i32) -> Result<Vec<u8>> {
    compile_with(&nvrtc_options_ptx(arch), false, arch / 10, arch % 10)
}

/// The architectures this NVRTC can compile for (10·major + minor).
pub fn supported_archs() -> Result<Vec<i32>> {
    guarded(|| {
        let mut n = 0i32;
        // SAFETY: plain queries into a buffer of the announced size.
        unsafe { nvsys::nvrtcGetNumSupportedArchs(&mut n) }
            .result()
            .map_err(|e| CudaError::Unavailable(format!("nvrtcGetNumSupportedArchs: {e:?}")))?;
        let mut v = vec![0i32; n.max(0) as usize];
        unsafe { nvsys::nvrtcGetSupportedArchs(v.as_mut_ptr()) }
            .result()
            .map_err(|e| CudaError::Unavailable(format!("nvrtcGetSupportedArchs: {e:?}")))?;
        Ok(v)
    })
}

fn compile_with(opts: &[String], cubin: bool, major: i32, minor: i32) -> Result<Vec<u8>> {
    guarded(|| {
        COMPILES.fetch_add(1, Ordering::Relaxed);
        let err = |msg: String| CudaError::Compile { major, minor, msg };
        let src = super::source().map_err(err)?;
        let src = CString::new(src.as_bytes()).map_err(|_| err("NUL in the source".into()))?;
        let prog =
            nv::create_program(&src, Some(c"ditac.cu")).map_err(|e| err(format!("{e:?}")))?;
        // SAFETY: `prog` was just created and is destroyed once below.
        let out = unsafe {
            match nv::compile_program(prog, opts) {
                Ok(()) if cubin => {
                    let mut size = 0usize;
                    match nvsys::nvrtcGetCUBINSize(prog, &mut size).result() {
                        Ok(()) => {
                            let mut buf = vec![0u8; size];
                            nvsys::nvrtcGetCUBIN(prog, buf.as_mut_ptr() as *mut c_char)
                                .result()
                                .map(|()| buf)
                                .map_err(|e| err(format!("nvrtcGetCUBIN: {e:?}")))
                        }
                        Err(e) => Err(err(format!("nvrtcGetCUBINSize: {e:?}"))),
                    }
                }
                Ok(()) => nv::get_ptx(prog)
                    .map(|p| p.iter().map(|&c| c as u8).collect())
                    .map_err(|e| err(format!("nvrtcGetPTX: {e:?}"))),
                Err(e) => {
                    let log = nv::get_program_log(prog)
                        .map(|l| {
                            let b: Vec<u8> =
                                l.iter().map(|&c| c as u8).take_while(|&c| c != 0).collect();
                            String::from_utf8_lossy(&b).into_owned()
                        })
                        .unwrap_or_default();
                    Err(err(format!("{e:?}: {log}")))
                }
            }
        };
        // SAFETY: created above, destroyed once.
        let _ = unsafe { nv::destroy_program(prog) };
        out
    })
}

/// A cubin for the device, or — when this NVRTC cannot target it (a device newer than the
/// toolkit) — PTX for the newest architecture it supports below the device, JIT-compiled by the
/// driver at load.
fn image_for(major: i32, minor: i32) -> Result<Vec<u8>> {
    match compile(major, minor) {
        Ok(c) => Ok(c),
        Err(e) => {
            let cc = major * 10 + minor;
            match supported_archs()
                .ok()
                .and_then(|s| super::ptx_fallback_arch(cc, &s))
            {
                Some(arch) if arch < cc => compile_ptx(arch),
                _ => Err(e),
            }
        }
    }
}

/// The kernels of one context.
pub struct Module {
    pub ctx: usize,
    fwd: [usize; 3],
    grad: [usize; 3],
    reduce: usize,
    fwd_limits: [DeviceLimits; 3],
    grad_limits: [DeviceLimits; 3],
    pub major: i32,
    pub minor: i32,
}

fn idx(d: DType) -> usize {
    match d {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::BF16 => 2,
    }
}

impl Module {
    pub fn forward_limits(&self, d: DType) -> DeviceLimits {
        self.fwd_limits[idx(d)]
    }
    pub fn grad_limits(&self, d: DType) -> DeviceLimits {
        self.grad_limits[idx(d)]
    }
}

type Images = Mutex<Vec<((i32, i32), Arc<Vec<u8>>)>>;
static IMAGES: OnceLock<Images> = OnceLock::new();
static MODULES: Mutex<Vec<Arc<Module>>> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Makes the context of `stream` current on this thread; returns it.
fn bind(stream: sys::CUstream) -> Result<sys::CUcontext> {
    if stream.is_null() {
        return Err(CudaError::NoStream);
    }
    let mut ctx: sys::CUcontext = std::ptr::null_mut();
    // SAFETY: a live stream handed to us by the caller.
    unsafe { sys::cuStreamGetCtx(stream, &mut ctx) }
        .result()
        .map_err(drv("cuStreamGetCtx"))?;
    if cu::ctx::get_current().map_err(drv("cuCtxGetCurrent"))? != Some(ctx) {
        // SAFETY: the stream's own, live context.
        unsafe { cu::ctx::set_current(ctx) }.map_err(drv("cuCtxSetCurrent"))?;
    }
    Ok(ctx)
}

fn attr(dev: sys::CUdevice, a: sys::CUdevice_attribute) -> Result<i32> {
    // SAFETY: `dev` comes from cuCtxGetDevice.
    unsafe { cu::device::get_attribute(dev, a) }.map_err(drv("cuDeviceGetAttribute"))
}

fn function(module: sys::CUmodule, name: &str) -> Result<sys::CUfunction> {
    let c = CString::new(name).map_err(|_| CudaError::Unavailable("kernel name".into()))?;
    // SAFETY: a loaded module.
    unsafe { cu::module::get_function(module, c) }.map_err(drv("cuModuleGetFunction"))
}

fn load_module(ctx: sys::CUcontext) -> Result<Module> {
    use sys::CUdevice_attribute as A;
    let mut dev: sys::CUdevice = 0;
    // SAFETY: the current context is `ctx`.
    unsafe { sys::cuCtxGetDevice(&mut dev) }
        .result()
        .map_err(drv("cuCtxGetDevice"))?;
    let major = attr(dev, A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
    let minor = attr(dev, A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
    let sm_count = attr(dev, A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?.max(1) as u32;
    let smem_optin = attr(
        dev,
        A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
    )?
    .max(0) as u32;
    let smem_per_sm = attr(
        dev,
        A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR,
    )?
    .max(0) as u32;
    let image = {
        let mut images = lock(IMAGES.get_or_init(|| Mutex::new(Vec::new())));
        match images.iter().find(|(k, _)| *k == (major, minor)) {
            Some((_, i)) => i.clone(),
            None => {
                let i = Arc::new(image_for(major, minor)?);
                images.push(((major, minor), i.clone()));
                i
            }
        }
    };
    // SAFETY: a cubin produced by NVRTC for this device's architecture.
    let module = unsafe { cu::module::load_data(image.as_ptr() as *const c_void) }
        .map_err(drv("cuModuleLoadData"))?;
    let limits = |f: sys::CUfunction| -> Result<DeviceLimits> {
        // SAFETY: `f` is a function of the loaded module.
        let blocks = unsafe {
            cu::occupancy::max_active_block_per_multiprocessor(f, super::BLOCK as i32, 0)
        }
        .map_err(drv("cuOccupancyMaxActiveBlocksPerMultiprocessor"))?;
        Ok(DeviceLimits {
            sm_count,
            blocks_per_sm: blocks.max(1) as u32,
            smem_optin,
            smem_per_sm,
        })
    };
    let mut fwd = [0usize; 3];
    let mut grad = [0usize; 3];
    let mut fwd_limits = [DeviceLimits::default(); 3];
    let mut grad_limits = [DeviceLimits::default(); 3];
    for d in DType::ALL {
        let f = function(module, &fwd_name(d))?;
        let g = function(module, &grad_name(d))?;
        // The backward may use more than the default 48 KiB of dynamic shared memory.
        if smem_optin > super::SMEM_DEFAULT {
            // SAFETY: a function of the loaded module; a value the device allows.
            unsafe {
                cu::function::set_function_attribute(
                    g,
                    sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    smem_optin as i32,
                )
            }
            .map_err(drv("cuFuncSetAttribute"))?;
        }
        fwd_limits[idx(d)] = limits(f)?;
        grad_limits[idx(d)] = limits(g)?;
        fwd[idx(d)] = f as usize;
        grad[idx(d)] = g as usize;
    }
    let reduce = function(module, REDUCE_NAME)? as usize;
    Ok(Module {
        ctx: ctx as usize,
        fwd,
        grad,
        reduce,
        fwd_limits,
        grad_limits,
        major,
        minor,
    })
}

/// The kernels for the context of `stream` (compiled and loaded at the first call for that
/// device and context), with that context made current on this thread.
pub fn module_for(stream: Stream) -> Result<Arc<Module>> {
    let stream: sys::CUstream = stream.0;
    guarded(|| {
        let ctx = bind(stream)?;
        let mut mods = lock(&MODULES);
        if let Some(m) = mods.iter().find(|m| m.ctx == ctx as usize) {
            return Ok(m.clone());
        }
        let m = Arc::new(load_module(ctx)?);
        mods.push(m.clone());
        Ok(m)
    })
}

fn launch<A>(f: usize, l: &Launch, stream: sys::CUstream, args: &mut A) -> Result<()> {
    let mut params = [args as *mut A as *mut c_void];
    // SAFETY: `f` is a kernel of a loaded module whose only parameter is the #[repr(C)] mirror
    // of `A` (checked by the layout tests of src/cuda); the addresses inside `args` are the
    // caller's live device buffers.
    unsafe {
        cu::launch_kernel(
            f as sys::CUfunction,
            (l.grid, 1, 1),
            (l.block, 1, 1),
            l.smem,
            stream,
            &mut params,
        )
    }
    .map_err(drv("cuLaunchKernel"))
}

/// Device memory. Stream-ordered (allocated and freed on one stream) or, without a stream,
/// persistent (freed after a context synchronisation).
pub struct DevBuf {
    ptr: u64,
    bytes: usize,
    stream: Option<usize>,
    ctx: usize,
}

impl DevBuf {
    /// `bytes` on `stream`'s memory pool, freed on `stream` when dropped.
    pub fn alloc_async(stream: Stream, bytes: usize) -> Result<DevBuf> {
        let stream: sys::CUstream = stream.0;
        guarded(|| {
            let ctx = bind(stream)?;
            let ptr = if bytes == 0 {
                0
            } else {
                // SAFETY: a live stream; the memory is only used on it.
                unsafe { cu::malloc_async(stream, bytes) }.map_err(drv("cuMemAllocAsync"))?
            };
            Ok(DevBuf {
                ptr,
                bytes,
                stream: Some(stream as usize),
                ctx: ctx as usize,
            })
        })
    }

    /// `bytes` in the context of `stream`, kept until dropped.
    pub fn alloc(stream: Stream, bytes: usize) -> Result<DevBuf> {
        let stream: sys::CUstream = stream.0;
        guarded(|| {
            let ctx = bind(stream)?;
            let ptr = if bytes == 0 {
                0
            } else {
                // SAFETY: plain allocation in the current context.
                unsafe { cu::malloc_sync(bytes) }.map_err(drv("cuMemAlloc"))?
            };
            Ok(DevBuf {
                ptr,
                bytes,
                stream: None,
                ctx: ctx as usize,
            })
        })
    }

    pub fn ptr(&self) -> u64 {
        self.ptr
    }
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for DevBuf {
    fn drop(&mut self) {
        if self.ptr == 0 {
            return;
        }
        let (ptr, stream, ctx) = (self.ptr, self.stream, self.ctx);
        let _ = catch_unwind(move || {
            // SAFETY: allocated by this DevBuf, freed once; a persistent buffer waits for the
            // work of its context first.
            unsafe {
                match stream {
                    Some(s) => {
                        let _ = cu::free_async(ptr, s as sys::CUstream);
                    }
                    None => {
                        if cu::ctx::set_current(ctx as sys::CUcontext).is_ok() {
                            let _ = cu::ctx::synchronize();
                            let _ = cu::free_sync(ptr);
                        }
                    }
                }
            }
        });
    }
}

/// Copies `src` to device address `dst` on `stream` (the host buffer is consumed before the
/// call returns: pageable memory is staged by the driver).
pub fn upload<T: Copy>(stream: Stream, dst: u64, src: &[T]) -> Result<()> {
    let stream: sys::CUstream = stream.0;
    if src.is_empty() {
        return Ok(());
    }
    guarded(|| {
        bind(stream)?;
        // SAFETY: `dst` holds at least size_of_val(src) bytes (caller's contract).
        unsafe { cu::memcpy_htod_async(dst, src, stream) }.map_err(drv("cuMemcpyHtoDAsync"))
    })
}

/// Copies device address `src` into `dst` on `stream` and waits for the stream.
pub fn download<T: Copy>(stream: Stream, dst: &mut [T], src: u64) -> Result<()> {
    let stream: sys::CUstream = stream.0;
    if dst.is_empty() {
        return Ok(());
    }
    guarded(|| {
        bind(stream)?;
        // SAFETY: `src` holds at least size_of_val(dst) bytes (caller's contract).
        unsafe { cu::memcpy_dtoh_async(dst, src, stream) }.map_err(drv("cuMemcpyDtoHAsync"))?;
        // SAFETY: a live stream.
        unsafe { cu::stream::synchronize(stream) }.map_err(drv("cuStreamSynchronize"))
    })
}

/// The driver as an [`Executor`]: the kernels of `m` on `stream`, scratch stream-ordered.
struct Driver<'a> {
    m: &'a Module,
    stream: sys::CUstream,
}

impl Executor for Driver<'_> {
    type Error = CudaError;
    type Scratch = DevBuf;
    fn forward_limits(&self, d: DType) -> DeviceLimits {
        self.m.forward_limits(d)
    }
    fn grad_limits(&self, d: DType) -> DeviceLimits {
        self.m.grad_limits(d)
    }
    fn scratch(&mut self, bytes: usize) -> Result<(u64, DevBuf)> {
        let b = DevBuf::alloc_async(Stream(self.stream), bytes)?;
        Ok((b.ptr(), b))
    }
    fn zero_f32(&mut self, dst: u64, count: usize) -> Result<()> {
        // SAFETY: `dst` holds `count` floats (the caller's output).
        unsafe { sys::cuMemsetD32Async(dst, 0, count, self.stream) }
            .result()
            .map_err(drv("cuMemsetD32Async"))
    }
    fn launch_forward(&mut self, d: DType, l: &Launch, a: &FwdArgs) -> Result<()> {
        launch(self.m.fwd[idx(d)], l, self.stream, &mut a.clone())
    }
    fn launch_grad(&mut self, d: DType, l: &Launch, a: &GradArgs) -> Result<()> {
        launch(self.m.grad[idx(d)], l, self.stream, &mut a.clone())
    }
    fn launch_reduce(&mut self, l: &Launch, a: &ReduceArgs) -> Result<()> {
        launch(self.m.reduce, l, self.stream, &mut a.clone())
    }
}

/// `y = act(x)` for `len` elements of `dtype` on `stream`, tables at `tables` (device).
#[allow(clippy::too_many_arguments)]
pub fn forward(
    m: &Module,
    stream: Stream,
    dtype: DType,
    t: &HostTables,
    tables: u64,
    x: u64,
    y: u64,
    len: u64,
    inner: u64,
) -> Result<()> {
    let stream: sys::CUstream = stream.0;
    if len == 0 {
        return Ok(());
    }
    guarded(|| {
        bind(stream)?;
        super::launch::forward(&mut Driver { m, stream }, dtype, t, tables, x, y, len, inner)
    })
}

/// `dx = dy·dy/dx` and `dtheta = Σ dy·dy/dθ` (float, channels × d) on `stream`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    m: &Module,
    stream: Stream,
    dtype: DType,
    t: &HostTables,
    tables: u64,
    dy: u64,
    x: u64,
    dx: u64,
    dtheta: u64,
    len: u64,
    inner: u64,
) -> Result<()> {
    let stream: sys::CUstream = stream.0;
    guarded(|| {
        bind(stream)?;
        super::launch::backward(
            &mut Driver { m, stream },
            dtype,
            t,
            tables,
            dy,
            x,
            dx,
            dtheta,
            len,
            inner,
        )
    })
}

// ---------------------------------------------------------------------------------------------
// For the GPU check (tests/gpu): a device, streams, events, fills and copies.

/// The primary context of device `ordinal`, made current on this thread.
pub fn init_device(ordinal: i32) -> Result<usize> {
    guarded(|| {
        cu::init().map_err(drv("cuInit"))?;
        let dev = cu::device::get(ordinal).map_err(drv("cuDeviceGet"))?;
        // SAFETY: a device from cuDeviceGet.
        let ctx =
            unsafe { cu::primary_ctx::retain(dev) }.map_err(drv("cuDevicePrimaryCtxRetain"))?;
        // SAFETY: the context just retained.
        unsafe { cu::ctx::set_current(ctx) }.map_err(drv("cuCtxSetCurrent"))?;
        Ok(ctx as usize)
    })
}

/// The name of the current context's device.
pub fn device_name() -> Result<String> {
    guarded(|| {
        let mut dev: sys::CUdevice = 0;
        // SAFETY: plain query of the current context.
        unsafe { sys::cuCtxGetDevice(&mut dev) }
            .result()
            .map_err(drv("cuCtxGetDevice"))?;
        cu::device::get_name(dev).map_err(drv("cuDeviceGetName"))
    })
}

/// A new non-blocking stream in the current context.
pub fn new_stream() -> Result<Stream> {
    guarded(|| {
        cu::stream::create(cu::stream::StreamKind::NonBlocking)
            .map(Stream)
            .map_err(drv("cuStreamCreate"))
    })
}

pub fn sync(stream: Stream) -> Result<()> {
    let stream: sys::CUstream = stream.0;
    // SAFETY: a live stream.
    guarded(|| unsafe { cu::stream::synchronize(stream) }.map_err(drv("cuStreamSynchronize")))
}

/// Fills `count` 32-bit words at `dst` with `value` on `stream`.
pub fn fill_u32(stream: Stream, dst: u64, value: u32, count: usize) -> Result<()> {
    let stream: sys::CUstream = stream.0;
    // SAFETY: `dst` holds `count` words (caller's contract).
    guarded(|| {
        unsafe { sys::cuMemsetD32Async(dst, value, count, stream) }
            .result()
            .map_err(drv("cuMemsetD32Async"))
    })
}

/// Fills `count` 16-bit words at `dst` with `value` on `stream`.
pub fn fill_u16(stream: Stream, dst: u64, value: u16, count: usize) -> Result<()> {
    let stream: sys::CUstream = stream.0;
    // SAFETY: `dst` holds `count` half-words (caller's contract).
    guarded(|| {
        unsafe { sys::cuMemsetD16Async(dst, value, count, stream) }
            .result()
            .map_err(drv("cuMemsetD16Async"))
    })
}

/// Device-to-device copy of `bytes` on `stream`.
pub fn copy_d2d(stream: Stream, dst: u64, src: u64, bytes: usize) -> Result<()> {
    let stream: sys::CUstream = stream.0;
    // SAFETY: both buffers hold `bytes` (caller's contract).
    guarded(|| {
        unsafe { cu::memcpy_dtod_async(dst, src, bytes, stream) }.map_err(drv("cuMemcpyDtoDAsync"))
    })
}

/// Milliseconds that `f` takes on `stream`, measured with CUDA events around `reps` calls
/// (the mean per call).
pub fn time_ms(stream: Stream, reps: u32, mut f: impl FnMut() -> Result<()>) -> Result<f32> {
    let stream: sys::CUstream = stream.0;
    let flags = sys::CUevent_flags::CU_EVENT_DEFAULT;
    let a = guarded(|| cu::event::create(flags).map_err(drv("cuEventCreate")))?;
    let b = guarded(|| cu::event::create(flags).map_err(drv("cuEventCreate")))?;
    let r = (|| {
        // SAFETY: events just created, on a live stream.
        guarded(|| unsafe { cu::event::record(a, stream) }.map_err(drv("cuEventRecord")))?;
        for _ in 0..reps {
            f()?;
        }
        guarded(|| unsafe { cu::event::record(b, stream) }.map_err(drv("cuEventRecord")))?;
        guarded(|| unsafe { cu::event::synchronize(b) }.map_err(drv("cuEventSynchronize")))?;
        let ms =
            guarded(|| unsafe { cu::event::elapsed(a, b) }.map_err(drv("cuEventElapsedTime")))?;
        Ok(ms / reps.max(1) as f32)
    })();
    // SAFETY: destroyed once.
    unsafe {
        let _ = cu::event::destroy(a);
        let _ = cu::event::destroy(b);
    }
    r
}
