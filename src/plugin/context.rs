//! The safe side of ONNX Runtime's C API for the kernels: the API table, statuses turned into
//! `Result`s, the node being instantiated ([`KernelInfo`]: name, attributes as a core
//! [`AttrSource`], constant inputs) and the context of one run ([`KernelContext`]: input and output
//! tensor views, the compute stream, ORT's thread pool). The kernels (`cpu`, `cuda`) build on this;
//! the `extern "C"` entry points that ORT calls are in `ffi`, which builds on this too.
//!
//! Every `unsafe` C API call of the kernels is here, behind a safe method; `par_task`, the one
//! callback ORT's thread pool makes, catches panics like the entry points of `ffi`.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::{Mutex, OnceLock};

use ort_sys as sys;

use super::{ErrorKind, PResult, PluginError};
use crate::core::{AttrSource, WrongType};

/// A kernel instance: immutable after creation except for its caches.
pub trait Kernel: Send + Sync {
    fn compute(&self, ctx: &KernelContext) -> PResult<()>;
}

// ---------------------------------------------------------------------------------------------
// The API table and statuses

static API: OnceLock<&'static sys::OrtApi> = OnceLock::new();

pub(super) fn api() -> &'static sys::OrtApi {
    API.get()
        .copied()
        .expect("ONNX Runtime API used before RegisterCustomOps")
}

pub(super) use crate::core::error::panic_message;

/// Keeps ORT's API table (static for the process) for every later call.
pub(super) fn set_api(table: &'static sys::OrtApi) {
    let _ = API.set(table);
}

/// The API table, when `RegisterCustomOps` has run.
pub(super) fn api_if_known() -> Option<&'static sys::OrtApi> {
    API.get().copied()
}

/// Turns a status returned by ORT into a `Result` (releasing the status); `what` names the call.
pub(super) fn check(status: sys::OrtStatusPtr, what: &str) -> PResult<()> {
    if status.0.is_null() {
        return Ok(());
    }
    let a = api();
    // SAFETY: a non-null status from ORT; read, then released exactly once.
    let (code, msg) = unsafe {
        let code = (a.GetErrorCode)(status.0);
        let m = (a.GetErrorMessage)(status.0);
        let msg = if m.is_null() {
            String::new()
        } else {
            CStr::from_ptr(m).to_string_lossy().into_owned()
        };
        (a.ReleaseStatus)(status.0);
        (code, msg)
    };
    let kind = if code == sys::OrtErrorCode::ORT_INVALID_ARGUMENT {
        ErrorKind::InvalidArgument
    } else {
        ErrorKind::Fail
    };
    Err(PluginError {
        kind,
        msg: format!("{what}: {msg}"),
    })
}

// ---------------------------------------------------------------------------------------------
// Tensors

/// A read-only view of an input tensor.
pub struct TensorView<'a, T> {
    pub shape: Vec<usize>,
    pub data: &'a [T],
}

impl<T> TensorView<'_, T> {
    pub fn len(&self) -> usize {
        self.data.len()
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// A tensor as shape and data address (for device memory, which the host must not read).
pub struct RawTensor {
    pub shape: Vec<usize>,
    pub addr: u64,
}

impl RawTensor {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The dimensions of a tensor value.
fn value_shape(value: *const sys::OrtValue) -> PResult<Vec<usize>> {
    let a = api();
    let mut info: *mut sys::OrtTensorTypeAndShapeInfo = ptr::null_mut();
    // SAFETY: value is a live tensor OrtValue; info is released below.
    check(
        unsafe { (a.GetTensorTypeAndShape)(value, &mut info) },
        "GetTensorTypeAndShape",
    )?;
    let dims = (|| -> PResult<Vec<i64>> {
        let mut n = 0usize;
        // SAFETY: info is valid until released.
        check(
            unsafe { (a.GetDimensionsCount)(info, &mut n) },
            "GetDimensionsCount",
        )?;
        let mut dims = vec![0i64; n];
        // SAFETY: dims has room for n values.
        check(
            unsafe { (a.GetDimensions)(info, dims.as_mut_ptr(), n) },
            "GetDimensions",
        )?;
        Ok(dims)
    })();
    // SAFETY: created by GetTensorTypeAndShape above.
    unsafe { (a.ReleaseTensorTypeAndShapeInfo)(info) };
    let dims = dims?;
    dims.iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| PluginError::fail(format!("tensor dimension {d} < 0")))
        })
        .collect()
}

/// The allocator name when `value` lives in CUDA device memory (never read from the host); None
/// for host memory or when ORT cannot tell.
fn device_memory(value: *const sys::OrtValue) -> Option<String> {
    let a = api();
    let mut info: *const sys::OrtMemoryInfo = ptr::null();
    // SAFETY: a live value; the memory info is owned by it (not released).
    check(
        unsafe { (a.GetTensorMemoryInfo)(value, &mut info) },
        "GetTensorMemoryInfo",
    )
    .ok()?;
    if info.is_null() {
        return None;
    }
    let mut name: *const c_char = ptr::null();
    // SAFETY: as above; the name is a static string of ORT's.
    check(
        unsafe { (a.MemoryInfoGetName)(info, &mut name) },
        "MemoryInfoGetName",
    )
    .ok()?;
    if name.is_null() {
        return None;
    }
    // SAFETY: NUL-terminated.
    let name = unsafe { CStr::from_ptr(name) }
        .to_string_lossy()
        .into_owned();
    (name.starts_with("Cuda") && !name.contains("Pinned")).then_some(name)
}

/// A view of a tensor value whose element type ORT has already matched to `T`.
///
/// # Safety
/// `value` must be a live tensor of element type `T` that outlives `'a`.
unsafe fn value_view<'a, T>(value: *const sys::OrtValue) -> PResult<TensorView<'a, T>> {
    let shape = value_shape(value)?;
    let n: usize = shape.iter().product();
    if n == 0 {
        return Ok(TensorView { shape, data: &[] });
    }
    if let Some(name) = device_memory(value) {
        return Err(PluginError::fail(format!(
            "a tensor the plugin reads on the host is in device memory ('{name}')"
        )));
    }
    let mut data: *mut c_void = ptr::null_mut();
    // SAFETY: read-only use of the buffer; GetTensorMutableData is the level-17 accessor.
    check(
        unsafe { (api().GetTensorMutableData)(value as *mut sys::OrtValue, &mut data) },
        "GetTensorMutableData",
    )?;
    if data.is_null() {
        return Err(PluginError::fail("tensor without data"));
    }
    // SAFETY: the buffer holds n elements of T (caller's contract).
    let data = unsafe { std::slice::from_raw_parts(data as *const T, n) };
    Ok(TensorView { shape, data })
}

// ---------------------------------------------------------------------------------------------
// Kernel creation info

/// The node being instantiated (valid during `CreateKernelV2`).
pub struct KernelInfo {
    ptr: *const sys::OrtKernelInfo,
    /// The memory budget of the node's tables (`core::budget`), from its session's options.
    max_bytes: u64,
}

/// A constant input copied out of the kernel info.
pub struct ConstTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl KernelInfo {
    /// # Safety
    /// `ptr` must be the kernel info ORT passed to `CreateKernelV2`, used only during that call.
    pub(super) unsafe fn from_raw(ptr: *const sys::OrtKernelInfo, max_bytes: u64) -> Self {
        KernelInfo { ptr, max_bytes }
    }

    /// The memory budget of this node's tables.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The node's name ("" when it has none or ORT cannot tell).
    pub fn node_name(&self) -> String {
        let a = api();
        let mut size = 0usize;
        // SAFETY: size query with a null buffer.
        if check(
            unsafe { (a.KernelInfo_GetNodeName)(self.ptr, ptr::null_mut(), &mut size) },
            "KernelInfo_GetNodeName",
        )
        .is_err()
            || size == 0
        {
            return String::new();
        }
        let mut buf = vec![0u8; size];
        // SAFETY: buf has `size` bytes as ORT asked.
        if check(
            unsafe {
                (a.KernelInfo_GetNodeName)(self.ptr, buf.as_mut_ptr() as *mut c_char, &mut size)
            },
            "KernelInfo_GetNodeName",
        )
        .is_err()
        {
            return String::new();
        }
        CStr::from_bytes_until_nul(&buf)
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Number of inputs of the node (optional inputs given as "" included).
    pub fn input_count(&self) -> PResult<usize> {
        let mut n = 0usize;
        // SAFETY: plain query.
        check(
            unsafe { (api().KernelInfo_GetInputCount)(self.ptr, &mut n) },
            "KernelInfo_GetInputCount",
        )?;
        Ok(n)
    }

    /// The value of float input `index` when it is a constant initializer (copied).
    pub fn constant_input_f32(&self, index: usize) -> PResult<Option<ConstTensor>> {
        if index >= self.input_count()? {
            return Ok(None);
        }
        let mut is_const: c_int = 0;
        let mut value: *const sys::OrtValue = ptr::null();
        // SAFETY: index < input count; the value (if any) is owned by the session.
        let s = unsafe {
            (api().KernelInfoGetConstantInput_tensor)(self.ptr, index, &mut is_const, &mut value)
        };
        if check(s, "KernelInfoGetConstantInput_tensor").is_err()
            || is_const == 0
            || value.is_null()
        {
            return Ok(None);
        }
        // SAFETY: a live constant tensor; the op declares this input float.
        let view = unsafe { value_view::<f32>(value)? };
        Ok(Some(ConstTensor {
            shape: view.shape,
            data: view.data.to_vec(),
        }))
    }
}

/// The node's attributes, for the core's one reader (`Attrs::read`). ORT is asked for a type; it
/// answers with the value, "No attribute …" (absent) or another failure (held with another type).
impl AttrSource for KernelInfo {
    fn float(&self, name: &'static str) -> Result<Option<f32>, WrongType> {
        let c = attr_name(name)?;
        let mut v = 0f32;
        // SAFETY: valid info, NUL-terminated name, out pointer to a local.
        let s = unsafe { (api().KernelInfoGetAttribute_float)(self.ptr, c.as_ptr(), &mut v) };
        attr_result(s, v)
    }

    fn int(&self, name: &'static str) -> Result<Option<i64>, WrongType> {
        let c = attr_name(name)?;
        let mut v = 0i64;
        // SAFETY: as above.
        let s = unsafe { (api().KernelInfoGetAttribute_int64)(self.ptr, c.as_ptr(), &mut v) };
        attr_result(s, v)
    }

    fn string(&self, name: &'static str) -> Result<Option<String>, WrongType> {
        let c = attr_name(name)?;
        let a = api();
        let mut size = 0usize;
        // SAFETY: size query with a null buffer.
        let s = unsafe {
            (a.KernelInfoGetAttribute_string)(self.ptr, c.as_ptr(), ptr::null_mut(), &mut size)
        };
        if attr_result(s, ())?.is_none() {
            return Ok(None);
        }
        let mut buf = vec![0u8; size.max(1)];
        let mut size = buf.len();
        // SAFETY: buf has `size` bytes.
        let s = unsafe {
            (a.KernelInfoGetAttribute_string)(
                self.ptr,
                c.as_ptr(),
                buf.as_mut_ptr() as *mut c_char,
                &mut size,
            )
        };
        attr_result(s, ())?;
        Ok(Some(
            CStr::from_bytes_until_nul(&buf)
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ))
    }
}

fn attr_name(name: &str) -> Result<CString, WrongType> {
    CString::new(name).map_err(|_| WrongType("attribute name with NUL".into()))
}

/// ORT's answer to an attribute lookup: missing → None, any other failure → held with another type.
fn attr_result<T>(status: sys::OrtStatusPtr, v: T) -> Result<Option<T>, WrongType> {
    match check(status, "attribute") {
        Ok(()) => Ok(Some(v)),
        Err(e) if e.msg.contains("No attribute") => Ok(None),
        Err(e) => Err(WrongType(e.msg)),
    }
}

// ---------------------------------------------------------------------------------------------
// Kernel run context

/// The context of one `Compute` call.
pub struct KernelContext {
    ptr: *mut sys::OrtKernelContext,
}

/// An allocator ORT handed to a kernel (`KernelContext_GetAllocator`), released on drop. Blocks
/// from it must be freed before it is dropped (the caller keeps the order).
pub struct Allocator {
    ptr: *mut sys::OrtAllocator,
}

/// A block from an [`Allocator`], freed on drop.
pub struct Block {
    alloc: *mut sys::OrtAllocator,
    ptr: *mut c_void,
}

impl Allocator {
    /// `bytes` (> 0) of the allocator's memory.
    pub fn alloc(&self, bytes: usize) -> PResult<Block> {
        // SAFETY: ORT's allocator, alive while `self` is; `Alloc` is a required member.
        let p = unsafe {
            match (*self.ptr).Alloc {
                Some(f) => f(self.ptr, bytes),
                None => ptr::null_mut(),
            }
        };
        if p.is_null() {
            return Err(PluginError::fail(format!(
                "ONNX Runtime's allocator could not give {bytes} bytes"
            )));
        }
        Ok(Block {
            alloc: self.ptr,
            ptr: p,
        })
    }
}

impl Block {
    pub fn addr(&self) -> u64 {
        self.ptr as u64
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        // SAFETY: allocated by this allocator, freed once; the allocator outlives its blocks.
        unsafe {
            if let Some(f) = (*self.alloc).Free {
                f(self.alloc, self.ptr);
            }
        }
    }
}

impl Drop for Allocator {
    fn drop(&mut self) {
        // SAFETY: the allocator KernelContext_GetAllocator created for us, released once.
        unsafe { (api().ReleaseAllocator)(self.ptr) }
    }
}

struct ParState<'a> {
    f: &'a (dyn Fn(usize) -> PResult<()> + Sync),
    err: Mutex<Option<PluginError>>,
}

unsafe extern "C" fn par_task(data: *mut c_void, i: usize) {
    // SAFETY: `data` is the &ParState passed by `parallel_for`, alive for the whole call.
    let st = unsafe { &*(data as *const ParState<'_>) };
    let r = match catch_unwind(AssertUnwindSafe(|| (st.f)(i))) {
        Ok(r) => r,
        Err(p) => Err(PluginError::fail(format!(
            "internal error (panic in task {i}): {}",
            panic_message(&*p)
        ))),
    };
    if let Err(e) = r {
        let mut slot = st.err.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(e);
        }
    }
}

impl KernelContext {
    /// # Safety
    /// `ptr` must be the context ORT passed to `KernelComputeV2`, used only during that call.
    pub(super) unsafe fn from_raw(ptr: *mut sys::OrtKernelContext) -> Self {
        KernelContext { ptr }
    }

    /// The OrtValue of input `index`, or None when it is absent (an omitted optional input).
    fn input_value(&self, index: usize) -> PResult<Option<*const sys::OrtValue>> {
        let mut n = 0usize;
        // SAFETY: plain query on the live context.
        check(
            unsafe { (api().KernelContext_GetInputCount)(self.ptr, &mut n) },
            "KernelContext_GetInputCount",
        )?;
        if index >= n {
            return Ok(None);
        }
        let mut value: *const sys::OrtValue = ptr::null();
        // SAFETY: index < count.
        check(
            unsafe { (api().KernelContext_GetInput)(self.ptr, index, &mut value) },
            "KernelContext_GetInput",
        )?;
        if value.is_null() {
            return Ok(None);
        }
        Ok(Some(value))
    }

    /// Input `index`, or None when it is absent (an omitted optional input).
    pub fn input<T>(&self, index: usize) -> PResult<Option<TensorView<'_, T>>> {
        let Some(value) = self.input_value(index)? else {
            return Ok(None);
        };
        // SAFETY: ORT matched the input's element type to the op definition (T or float).
        Ok(Some(unsafe { value_view::<T>(value)? }))
    }

    /// The OrtValue of output `index`, allocated by ORT with `shape`.
    fn output_value(&self, index: usize, shape: &[usize]) -> PResult<*mut sys::OrtValue> {
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let mut value: *mut sys::OrtValue = ptr::null_mut();
        // SAFETY: dims outlives the call.
        check(
            unsafe {
                (api().KernelContext_GetOutput)(
                    self.ptr,
                    index,
                    dims.as_ptr(),
                    dims.len(),
                    &mut value,
                )
            },
            "KernelContext_GetOutput",
        )?;
        if value.is_null() {
            return Err(PluginError::fail(format!("no output value {index}")));
        }
        Ok(value)
    }

    /// Allocates output `index` with `shape`. Each index must be requested once per run.
    #[allow(clippy::mut_from_ref)]
    pub fn output<T>(&self, index: usize, shape: &[usize]) -> PResult<&mut [T]> {
        let value = self.output_value(index, shape)?;
        let n: usize = shape.iter().product();
        if n == 0 {
            return Ok(&mut []);
        }
        let mut data: *mut c_void = ptr::null_mut();
        // SAFETY: a freshly allocated output tensor.
        check(
            unsafe { (api().GetTensorMutableData)(value, &mut data) },
            "GetTensorMutableData",
        )?;
        if data.is_null() {
            return Err(PluginError::fail("output tensor without data"));
        }
        // SAFETY: ORT allocated n elements of the declared type T; each output index is taken
        // once per run, so the slices never alias.
        Ok(unsafe { std::slice::from_raw_parts_mut(data as *mut T, n) })
    }

    /// ORT's allocator for the memory input `index` lives in (the CUDA provider's device arena for
    /// a device tensor: scratch counted in ORT's arena and `gpu_mem_limit`). API level 17.
    pub fn allocator_like_input(&self, index: usize) -> PResult<Allocator> {
        let value = self
            .input_value(index)?
            .ok_or_else(|| PluginError::fail(format!("no input {index}")))?;
        let mut info: *const sys::OrtMemoryInfo = ptr::null();
        // SAFETY: a live input value; the memory info belongs to it.
        check(
            unsafe { (api().GetTensorMemoryInfo)(value, &mut info) },
            "GetTensorMemoryInfo",
        )?;
        let mut a: *mut sys::OrtAllocator = ptr::null_mut();
        // SAFETY: the live context and a memory info ORT gave us.
        check(
            unsafe { (api().KernelContext_GetAllocator)(self.ptr, info, &mut a) },
            "KernelContext_GetAllocator",
        )?;
        if a.is_null() {
            return Err(PluginError::fail(
                "KernelContext_GetAllocator gave no allocator",
            ));
        }
        Ok(Allocator { ptr: a })
    }

    /// ORT's compute stream for this kernel (a `cudaStream_t` on the CUDA EP; null elsewhere).
    pub fn gpu_stream(&self) -> PResult<*mut c_void> {
        let mut s: *mut c_void = ptr::null_mut();
        // SAFETY: plain query on the live context.
        check(
            unsafe { (api().KernelContext_GetGPUComputeStream)(self.ptr, &mut s) },
            "KernelContext_GetGPUComputeStream",
        )?;
        Ok(s)
    }

    /// Input `index` as shape and data address, without touching the data (device memory on
    /// the CUDA EP); None when absent.
    pub fn input_raw(&self, index: usize) -> PResult<Option<RawTensor>> {
        let Some(value) = self.input_value(index)? else {
            return Ok(None);
        };
        let shape = value_shape(value)?;
        let mut data: *mut c_void = ptr::null_mut();
        if shape.iter().product::<usize>() > 0 {
            // SAFETY: the address only; the data is never read here.
            check(
                unsafe { (api().GetTensorMutableData)(value as *mut sys::OrtValue, &mut data) },
                "GetTensorMutableData",
            )?;
        }
        Ok(Some(RawTensor {
            shape,
            addr: data as u64,
        }))
    }

    /// Allocates output `index` with `shape`; returns its data address (device memory on the
    /// CUDA EP; 0 when empty). Each index must be requested once per run.
    pub fn output_raw(&self, index: usize, shape: &[usize]) -> PResult<u64> {
        let value = self.output_value(index, shape)?;
        if shape.iter().product::<usize>() == 0 {
            return Ok(0);
        }
        let mut data: *mut c_void = ptr::null_mut();
        // SAFETY: a freshly allocated output tensor; only its address is taken.
        check(
            unsafe { (api().GetTensorMutableData)(value, &mut data) },
            "GetTensorMutableData",
        )?;
        if data.is_null() {
            return Err(PluginError::fail("output tensor without data"));
        }
        Ok(data as u64)
    }

    /// Runs `f(0..n)` on ORT's intra-op thread pool (sequentially when it has one thread).
    /// The first error (or panic) of any task is returned.
    pub fn parallel_for(&self, n: usize, f: &(dyn Fn(usize) -> PResult<()> + Sync)) -> PResult<()> {
        if n == 0 {
            return Ok(());
        }
        if n == 1 {
            return f(0);
        }
        let st = ParState {
            f,
            err: Mutex::new(None),
        };
        // SAFETY: `st` outlives the call; ORT calls `par_task` for every index before returning.
        check(
            unsafe {
                (api().KernelContext_ParallelFor)(
                    self.ptr,
                    par_task,
                    n,
                    0,
                    &st as *const ParState<'_> as *mut c_void,
                )
            },
            "KernelContext_ParallelFor",
        )?;
        match st.err.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
