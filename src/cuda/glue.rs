//! The only code that calls `cudarc`: the CUDA driver API (loaded at run time: `libcuda` need
//! not exist for the library to load) and NVRTC (loaded at the first compile).
//!
//! * `cuInit` once; the context is the one of the caller's stream (`cuStreamGetCtx`), pushed on
//!   the calling thread when it is not current and popped afterwards.
//! * `ops/cuda/ditac.cu` (or `$DITAC_CUDA_SOURCE`) is compiled once per compute capability to a
//!   cubin (NVRTC, a real `sm_XY` target) — at kernel creation ([`prepare_devices`]), from the
//!   disk cache ([`super::cache`]) when there — and loaded once per context; a cubin the driver
//!   refuses falls back to PTX. No global lock is held while compiling.
//! * Every launch and copy goes to the caller's stream (ORT's compute stream in the plugin);
//!   never to the default stream. Per-call scratch comes from the caller ([`ScratchSource`]:
//!   ORT's allocator in the plugin, [`stream_scratch`] otherwise). The launches themselves are planned by
//!   [`super::launch`], which the CPU emulation of the kernels (tests/cuda_host) drives too.
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

use super::cache;
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
        Err(p) => Err(CudaError::Unavailable(crate::core::error::panic_message(
            &*p,
        ))),
    }
}

/// Whether `libcuda` can be opened (only tries to open it; initialises nothing). Never panics.
pub fn driver_present() -> bool {
    // SAFETY: only dlopen attempts.
    catch_unwind(|| unsafe { sys::is_culib_present() }).unwrap_or(false)
}

/// `Ok` when `libnvrtc` can be opened (dlopen attempts, once per process; never panics).
/// Checked before every NVRTC call: a machine without NVRTC — which runs carried kernels — gets
/// an error, not cudarc's panic message and backtrace on standard error.
fn need_nvrtc() -> Result<()> {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    // SAFETY: only dlopen attempts.
    let present = *PRESENT
        .get_or_init(|| catch_unwind(|| unsafe { nvsys::is_culib_present() }).unwrap_or(false));
    if present {
        Ok(())
    } else {
        Err(CudaError::Unavailable(
            "libnvrtc (CUDA 13, 12 or 11) is not on the loader path".into(),
        ))
    }
}

/// `Ok` when `libcuda` can be opened ([`driver_present`]), the same way for the driver.
fn need_driver() -> Result<()> {
    if driver_present() {
        Ok(())
    } else {
        Err(CudaError::Unavailable(
            "libcuda (the NVIDIA driver) is not on the loader path".into(),
        ))
    }
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
    need_nvrtc()?;
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
    let err = |msg: String| CudaError::Compile { major, minor, msg };
    let src = super::source().map_err(err)?;
    let nvrtc = nvrtc_version().ok();
    // This NVRTC's cached image, else one compiled elsewhere and carried here
    // (tests/gpu/prepare.sh): then no NVRTC is needed at all.
    let dir = cache::dir();
    if let Some(hit) = dir
        .as_deref()
        .and_then(|d| cache::lookup(d, &src, opts, cubin, nvrtc))
    {
        return Ok(hit);
    }
    let key = cache::Key::new(&src, opts, cubin, nvrtc);
    let out = nvrtc_compile(&src, opts, cubin, major, minor)?;
    if let Some(k) = key {
        k.write(&out);
    }
    Ok(out)
}

/// Compiles the kernels for compute capability `arch` (10·major + minor) — the cubin, and the
/// PTX of `compute_{arch}` that a driver older than this NVRTC falls back to — into `dir` as
/// carried images ([`cache::Key::carried`]), for a GPU machine whose `DITAC_CUDA_CACHE` names a
/// copy of `dir`. Needs `libnvrtc`, no GPU. Returns the files written.
pub fn precompile(dir: &std::path::Path, arch: i32) -> Result<Vec<std::path::PathBuf>> {
    let (major, minor) = (arch / 10, arch % 10);
    let err = |msg: String| CudaError::Compile { major, minor, msg };
    let src = super::source().map_err(err)?;
    let mut written = Vec::new();
    for (opts, cubin) in [
        (nvrtc_options(major, minor), true),
        (nvrtc_options_ptx(arch), false),
    ] {
        let image = nvrtc_compile(&src, &opts, cubin, major, minor)?;
        let key = cache::Key::carried(dir, &src, &opts, cubin)
            .ok_or_else(|| err("no cache key".into()))?;
        key.write(&image);
        if key.read().as_deref() != Some(&image[..]) {
            return Err(CudaError::Unavailable(format!(
                "could not write {}",
                key.path().display()
            )));
        }
        written.push(key.path().to_path_buf());
    }
    Ok(written)
}

/// NVRTC's (major, minor) version.
pub fn nvrtc_version() -> Result<(i32, i32)> {
    need_nvrtc()?;
    guarded(|| {
        let (mut a, mut b) = (0i32, 0i32);
        // SAFETY: plain query into two ints.
        unsafe { nvsys::nvrtcVersion(&mut a, &mut b) }
            .result()
            .map_err(|e| CudaError::Unavailable(format!("nvrtcVersion: {e:?}")))?;
        Ok((a, b))
    })
}

fn nvrtc_compile(
    src: &str,
    opts: &[String],
    cubin: bool,
    major: i32,
    minor: i32,
) -> Result<Vec<u8>> {
    need_nvrtc()?;
    guarded(|| {
        COMPILES.fetch_add(1, Ordering::Relaxed);
        let err = |msg: String| CudaError::Compile { major, minor, msg };
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
                    .map(|p| p.iter().map(|&c| byte(c)).collect())
                    .map_err(|e| err(format!("nvrtcGetPTX: {e:?}"))),
                Err(e) => {
                    let log = nv::get_program_log(prog)
                        .map(|l| {
                            let b: Vec<u8> =
                                l.iter().map(|&c| byte(c)).take_while(|&c| c != 0).collect();
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

/// A C `char` as a byte (`c_char` is `i8` on x86-64 and `u8` on aarch64; a cast would be a
/// needless one on the latter).
fn byte(c: c_char) -> u8 {
    c.to_ne_bytes()[0]
}

/// A compiled image of the kernels: a cubin, or PTX for the driver's JIT.
#[derive(Debug, Clone)]
pub struct Image {
    pub bytes: Vec<u8>,
    /// `None`: a cubin; `Some(arch)`: PTX for `compute_{arch}`.
    pub ptx: Option<i32>,
}

/// A cubin for the device, or — when this NVRTC cannot target it (a device newer than the
/// toolkit) — PTX for the newest architecture it supports below the device, JIT-compiled by the
/// driver at load.
fn build_image(major: i32, minor: i32) -> Result<Image> {
    match compile(major, minor) {
        Ok(c) => Ok(Image {
            bytes: c,
            ptx: None,
        }),
        Err(e) => {
            let cc = major * 10 + minor;
            match supported_archs()
                .ok()
                .and_then(|s| super::ptx_fallback_arch(cc, &s))
            {
                Some(arch) if arch < cc => Ok(Image {
                    bytes: compile_ptx(arch)?,
                    ptx: Some(arch),
                }),
                _ => Err(e),
            }
        }
    }
}

/// PTX for a device whose driver refused the cubin (NVRTC newer than the driver): the newest
/// virtual architecture NVRTC supports up to the device's.
fn ptx_for(major: i32, minor: i32) -> Result<Image> {
    let cc = major * 10 + minor;
    let arch = supported_archs()
        .ok()
        .and_then(|s| super::ptx_fallback_arch(cc, &s))
        .unwrap_or(cc);
    Ok(Image {
        bytes: compile_ptx(arch)?,
        ptx: Some(arch),
    })
}

type Slot = Arc<Mutex<Option<Arc<Image>>>>;
/// One slot per compute capability: a thread compiling for one architecture holds only that
/// slot's lock (never the module list's), so other devices and loaded modules are not stalled.
static IMAGES: Mutex<Vec<((i32, i32), Slot)>> = Mutex::new(Vec::new());

/// The image for compute capability `major.minor`: from memory, else the disk cache, else NVRTC.
pub fn image_for(major: i32, minor: i32) -> Result<Arc<Image>> {
    let slot = {
        let mut all = lock(&IMAGES);
        match all.iter().find(|(k, _)| *k == (major, minor)) {
            Some((_, s)) => s.clone(),
            None => {
                let s: Slot = Arc::default();
                all.push(((major, minor), s.clone()));
                s
            }
        }
    };
    let mut cell = lock(&slot);
    if let Some(i) = &*cell {
        return Ok(i.clone());
    }
    let i = Arc::new(build_image(major, minor)?);
    *cell = Some(i.clone());
    Ok(i)
}

/// Compiles (or finds in the caches) the kernels for every visible device, so that the first
/// run does not pay NVRTC (called when a CUDA kernel is created). Errors are returned for the
/// caller to ignore or report; a missing driver is one.
pub fn prepare_devices() -> Result<usize> {
    guarded(|| {
        ensure_init()?;
        let mut n = 0i32;
        // SAFETY: plain query after cuInit.
        unsafe { sys::cuDeviceGetCount(&mut n) }
            .result()
            .map_err(drv("cuDeviceGetCount"))?;
        let mut done: Vec<(i32, i32)> = Vec::new();
        for ordinal in 0..n {
            let dev = cu::device::get(ordinal).map_err(drv("cuDeviceGet"))?;
            use sys::CUdevice_attribute as A;
            let cc = (
                attr(dev, A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
                attr(dev, A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
            );
            if !done.contains(&cc) {
                image_for(cc.0, cc.1)?;
                done.push(cc);
            }
        }
        Ok(done.len())
    })
}

/// The kernels of one context.
pub struct Module {
    pub ctx: usize,
    module: usize,
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

static MODULES: Mutex<Vec<Arc<Module>>> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `cuInit`, once per process (the driver API requires it before any other call; ORT's runtime
/// has made it in practice, which is no reason to rely on it).
fn ensure_init() -> Result<()> {
    static INIT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    need_driver()?;
    INIT.get_or_init(|| cu::init().map_err(|e| format!("{e:?}")))
        .clone()
        .map_err(|msg| CudaError::Driver {
            call: "cuInit",
            msg,
        })
}

/// The context of a stream made current on this thread for the guard's lifetime: pushed when
/// another one (or none) was current, popped on drop, so the caller's current context is
/// restored (ORT's threads keep theirs).
struct Bound {
    ctx: sys::CUcontext,
    pushed: bool,
}

impl Drop for Bound {
    fn drop(&mut self) {
        if self.pushed {
            let mut old: sys::CUcontext = std::ptr::null_mut();
            // SAFETY: pops the context pushed by `bind` on this thread.
            let _ = catch_unwind(AssertUnwindSafe(|| unsafe {
                sys::cuCtxPopCurrent_v2(&mut old)
            }));
        }
    }
}

fn push(ctx: sys::CUcontext) -> Result<Bound> {
    if cu::ctx::get_current().map_err(drv("cuCtxGetCurrent"))? == Some(ctx) {
        return Ok(Bound { ctx, pushed: false });
    }
    // SAFETY: a live context (the stream's, or one a buffer was allocated in).
    unsafe { sys::cuCtxPushCurrent_v2(ctx) }
        .result()
        .map_err(drv("cuCtxPushCurrent"))?;
    Ok(Bound { ctx, pushed: true })
}

/// Makes the context of `stream` current on this thread until the guard drops.
fn bind(stream: sys::CUstream) -> Result<Bound> {
    if stream.is_null() {
        return Err(CudaError::NoStream);
    }
    ensure_init()?;
    let mut ctx: sys::CUcontext = std::ptr::null_mut();
    // SAFETY: a live stream handed to us by the caller.
    unsafe { sys::cuStreamGetCtx(stream, &mut ctx) }
        .result()
        .map_err(drv("cuStreamGetCtx"))?;
    push(ctx)
}

/// Whether `stream` is capturing a CUDA graph (ORT's `enable_cuda_graph`): work that copies from
/// pageable host memory or synchronises cannot be captured.
pub fn is_capturing(stream: Stream) -> Result<bool> {
    let stream: sys::CUstream = stream.0;
    guarded(|| {
        let _b = bind(stream)?;
        // SAFETY: a live stream.
        let st = unsafe { cu::stream::is_capturing(stream) }.map_err(drv("cuStreamIsCapturing"))?;
        Ok(st != sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE)
    })
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
    let image = image_for(major, minor)?;
    // SAFETY: an image NVRTC produced for this device's architecture (a cubin, or PTX with its
    // terminating NUL).
    let load = |i: &Image| unsafe { cu::module::load_data(i.bytes.as_ptr() as *const c_void) };
    let module = match load(&image) {
        Ok(m) => m,
        // A cubin the driver refuses (NVRTC newer than the driver): PTX, which the driver's JIT
        // compiles, for the newest architecture NVRTC supports up to the device's.
        Err(e) if image.ptx.is_none() => {
            let ptx = ptx_for(major, minor)?;
            load(&ptx).map_err(|e2| CudaError::Driver {
                call: "cuModuleLoadData",
                msg: format!("the cubin: {e:?}; PTX for compute_{:?}: {e2:?}", ptx.ptx),
            })?
        }
        Err(e) => return Err(drv("cuModuleLoadData")(e)),
    };
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
        module: module as usize,
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
/// device and context). The module list's lock is not held while compiling or loading.
pub fn module_for(stream: Stream) -> Result<Arc<Module>> {
    let stream: sys::CUstream = stream.0;
    guarded(|| {
        let b = bind(stream)?;
        let ctx = b.ctx as usize;
        if let Some(m) = lock(&MODULES).iter().find(|m| m.ctx == ctx) {
            return Ok(m.clone());
        }
        let m = Arc::new(load_module(b.ctx)?);
        let mut mods = lock(&MODULES);
        if let Some(other) = mods.iter().find(|m| m.ctx == ctx) {
            // Another thread loaded it meanwhile: keep one.
            // SAFETY: our own module, never handed out.
            let _ = unsafe { cu::module::unload(m.module as sys::CUmodule) };
            return Ok(other.clone());
        }
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

/// Device copies of one node's constant tables, one per CUDA context, shared by every run of
/// the node — ORT may run a session on several streams at once. The first run on a context
/// uploads them on its stream and waits for the copy before listing them, so a concurrent first
/// run on another stream never reads tables that have not landed (it waits on the lock).
#[derive(Default)]
pub struct ResidentTables(Mutex<Vec<(usize, Arc<DevBuf>)>>);

impl ResidentTables {
    /// The tables `data` on the device of `m`, uploaded on `stream` at the first call there.
    pub fn get(&self, m: &Module, stream: Stream, data: &[f32]) -> Result<Arc<DevBuf>> {
        let mut r = lock(&self.0);
        if let Some((_, b)) = r.iter().find(|(c, _)| *c == m.ctx) {
            return Ok(b.clone());
        }
        let b = Arc::new(DevBuf::alloc(stream, std::mem::size_of_val(data))?);
        upload(stream, b.ptr(), data)?;
        sync(stream)?;
        r.push((m.ctx, b.clone()));
        Ok(b)
    }

    /// Whether the tables are already on the device of context `ctx`.
    pub fn on(&self, ctx: usize) -> bool {
        lock(&self.0).iter().any(|(c, _)| *c == ctx)
    }
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
            let b = bind(stream)?;
            let ctx = b.ctx;
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
            let b = bind(stream)?;
            let ctx = b.ctx;
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
                        if let Ok(_b) = push(ctx as sys::CUcontext) {
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
        let _b = bind(stream)?;
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
        let _b = bind(stream)?;
        // SAFETY: `src` holds at least size_of_val(dst) bytes (caller's contract).
        unsafe { cu::memcpy_dtoh_async(dst, src, stream) }.map_err(drv("cuMemcpyDtoHAsync"))?;
        // SAFETY: a live stream.
        unsafe { cu::stream::synchronize(stream) }.map_err(drv("cuStreamSynchronize"))
    })
}

/// Scratch memory for one call: its device address and an owner that frees it when dropped
/// (after the launches that use it have been queued on the stream).
pub type Scratch = (u64, Box<dyn std::any::Any>);
/// Where scratch comes from: ORT's allocator in the plugin, else [`stream_scratch`].
pub type ScratchSource<'a> = &'a mut dyn FnMut(usize) -> Result<Scratch>;

/// Stream-ordered scratch (`cuMemAllocAsync` on `stream`, freed on it).
pub fn stream_scratch(stream: Stream) -> impl FnMut(usize) -> Result<Scratch> {
    move |bytes| {
        let b = DevBuf::alloc_async(stream, bytes)?;
        Ok((b.ptr(), Box::new(b) as Box<dyn std::any::Any>))
    }
}

/// The driver as an [`Executor`]: the kernels of `m` on `stream`.
struct Driver<'a, 'b> {
    m: &'a Module,
    stream: sys::CUstream,
    scratch: ScratchSource<'b>,
}

impl Executor for Driver<'_, '_> {
    type Error = CudaError;
    type Scratch = Box<dyn std::any::Any>;
    fn forward_limits(&self, d: DType) -> DeviceLimits {
        self.m.forward_limits(d)
    }
    fn grad_limits(&self, d: DType) -> DeviceLimits {
        self.m.grad_limits(d)
    }
    fn scratch(&mut self, bytes: usize) -> Result<Scratch> {
        if bytes == 0 {
            return Ok((0, Box::new(())));
        }
        (self.scratch)(bytes)
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
        let _b = bind(stream)?;
        // The forward needs no scratch.
        let mut none = |_: usize| -> Result<Scratch> {
            Err(CudaError::Unavailable("no scratch in the forward".into()))
        };
        super::launch::forward(
            &mut Driver {
                m,
                stream,
                scratch: &mut none,
            },
            dtype,
            t,
            tables,
            x,
            y,
            len,
            inner,
        )
    })
}

/// `dx = dy·dy/dx` and `dtheta = Σ dy·dy/dθ` (float, channels × d) on `stream`, scratch (f64
/// accumulators and per-block sums) from `scratch`, freed once the launches are queued.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    m: &Module,
    scratch: ScratchSource<'_>,
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
        let _b = bind(stream)?;
        super::launch::backward(
            &mut Driver { m, stream, scratch },
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
    need_driver()?;
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
