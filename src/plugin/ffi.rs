//! Every `unsafe` line of the plugin: ONNX Runtime C API calls behind small safe wrappers, the
//! `extern "C"` trampolines of the `OrtCustomOp` definitions, and the exported `RegisterCustomOps`.
//!
//! Rules kept here:
//! * the plugin asks for API level 17 (`GetApi(17)`) and stamps its ops `version = 17`, whatever
//!   `ort-sys` features the build unifies (fields past level 17 stay zero and are never read);
//! * every entry point runs its body under `catch_unwind`: a panic becomes an `ORT_FAIL` status
//!   (or a harmless default for callbacks that return plain values); nothing unwinds into ORT;
//! * the op definitions and the custom-op domains live for the whole process.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::{Mutex, OnceLock};

use ort_sys as sys;

use super::kernels::{self, Kernel};
use super::{Ep, ErrorKind, OpSpec, PResult, PluginError, Port, PortType, DOMAIN, ORT_API_LEVEL};

// ---------------------------------------------------------------------------------------------
// The API table and statuses

static API: OnceLock<&'static sys::OrtApi> = OnceLock::new();

fn api() -> &'static sys::OrtApi {
    API.get()
        .copied()
        .expect("ONNX Runtime API used before RegisterCustomOps")
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// A new `OrtStatus` (null only if the API table is unknown, which cannot happen after registration).
fn new_status(err: &PluginError) -> *mut sys::OrtStatus {
    let code = match err.kind {
        ErrorKind::InvalidArgument => sys::OrtErrorCode::ORT_INVALID_ARGUMENT,
        ErrorKind::Fail => sys::OrtErrorCode::ORT_FAIL,
    };
    let msg = CString::new(err.msg.replace('\0', " ")).unwrap_or_default();
    match API.get() {
        // SAFETY: CreateStatus copies the NUL-terminated message.
        Some(a) => unsafe { (a.CreateStatus)(code, msg.as_ptr()).0 },
        None => ptr::null_mut(),
    }
}

/// Turns a status returned by ORT into a `Result` (releasing the status); `what` names the call.
fn check(status: sys::OrtStatusPtr, what: &str) -> PResult<()> {
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

/// Runs `f` under `catch_unwind`, turning an error or a panic into an `OrtStatus`.
fn guard(f: impl FnOnce() -> PResult<()>) -> sys::OrtStatusPtr {
    let r = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => Err(PluginError::fail(format!(
            "ai.ditac: internal error (panic): {}",
            panic_message(&*p)
        ))),
    };
    match r {
        Ok(()) => sys::OrtStatusPtr(ptr::null_mut()),
        Err(e) => sys::OrtStatusPtr(new_status(&e)),
    }
}

/// Runs `f` under `catch_unwind`, with a default value on panic.
fn guard_value<T>(default: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(default)
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
}

/// A constant input copied out of the kernel info.
pub struct ConstTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl KernelInfo {
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

    /// Maps ORT's attribute lookup failure: missing → None, present with another type → error.
    fn attr_result<T>(name: &str, ty: &str, status: sys::OrtStatusPtr, v: T) -> PResult<Option<T>> {
        match check(status, "attribute") {
            Ok(()) => Ok(Some(v)),
            Err(e) if e.msg.contains("No attribute") => Ok(None),
            Err(e) => Err(PluginError::invalid(format!(
                "attribute '{name}' has no {ty} value: expected an attribute of type {ty} ({})",
                e.msg
            ))),
        }
    }

    pub fn attr_f32(&self, name: &str) -> PResult<Option<f32>> {
        let c = CString::new(name).map_err(|_| PluginError::fail("attribute name with NUL"))?;
        let mut v = 0f32;
        // SAFETY: valid info, NUL-terminated name, out pointer to a local.
        let s = unsafe { (api().KernelInfoGetAttribute_float)(self.ptr, c.as_ptr(), &mut v) };
        Self::attr_result(name, "float", s, v)
    }

    pub fn attr_i64(&self, name: &str) -> PResult<Option<i64>> {
        let c = CString::new(name).map_err(|_| PluginError::fail("attribute name with NUL"))?;
        let mut v = 0i64;
        // SAFETY: as above.
        let s = unsafe { (api().KernelInfoGetAttribute_int64)(self.ptr, c.as_ptr(), &mut v) };
        Self::attr_result(name, "int", s, v)
    }

    pub fn attr_string(&self, name: &str) -> PResult<Option<String>> {
        let c = CString::new(name).map_err(|_| PluginError::fail("attribute name with NUL"))?;
        let a = api();
        let mut size = 0usize;
        // SAFETY: size query with a null buffer.
        let s = unsafe {
            (a.KernelInfoGetAttribute_string)(self.ptr, c.as_ptr(), ptr::null_mut(), &mut size)
        };
        if Self::attr_result(name, "string", s, ())?.is_none() {
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
        Self::attr_result(name, "string", s, ())?;
        Ok(Some(
            CStr::from_bytes_until_nul(&buf)
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ))
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

// ---------------------------------------------------------------------------------------------
// Kernel run context

/// The context of one `Compute` call.
pub struct KernelContext {
    ptr: *mut sys::OrtKernelContext,
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

// ---------------------------------------------------------------------------------------------
// The op definitions

/// An `OrtCustomOp` followed by what it stands for. `raw` must stay the first field: ORT hands the
/// callbacks a pointer to it, which is cast back to the whole definition.
#[repr(C)]
struct OpDef {
    raw: sys::OrtCustomOp,
    spec: OpSpec,
}

/// Kept alive (and never moved) for the process.
static OPS: OnceLock<Box<[OpDef]>> = OnceLock::new();
/// The custom-op domain handed to every session options: ORT needs it for as long as any session
/// lives, and only reads it (its name and ops), so one domain serves every registration and
/// registering again allocates nothing (the library itself stays loaded: `-z nodelete`, build.rs).
static DOMAIN_PTR: Mutex<usize> = Mutex::new(0);

/// # Safety
/// `op` must be one of the `OpDef`s in `OPS`.
unsafe fn spec_of<'a>(op: *const sys::OrtCustomOp) -> &'a OpSpec {
    // SAFETY: repr(C) with `raw` first.
    unsafe { &(*(op as *const OpDef)).spec }
}

fn element_type(spec: &OpSpec, ty: PortType) -> sys::ONNXTensorElementDataType {
    use sys::ONNXTensorElementDataType as E;
    match ty {
        PortType::Float => E::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
        PortType::T => match spec.elem {
            super::Elem::F32 => E::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
            super::Elem::F16 => E::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16,
            super::Elem::F64 => E::ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE,
            super::Elem::BF16 => E::ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16,
        },
    }
}

unsafe extern "system" fn op_name(op: *const sys::OrtCustomOp) -> *const c_char {
    // SAFETY: `op` is ours.
    guard_value(c"".as_ptr(), || unsafe { spec_of(op) }.name_c().as_ptr())
}

unsafe extern "system" fn op_ep(op: *const sys::OrtCustomOp) -> *const c_char {
    // SAFETY: `op` is ours.
    guard_value(c"CPUExecutionProvider".as_ptr(), || {
        unsafe { spec_of(op) }.ep.name_c().as_ptr()
    })
}

/// The element type of port `i` of `op` (inputs or outputs, as `ports` picks), UNDEFINED past the end.
unsafe fn port_type(
    op: *const sys::OrtCustomOp,
    i: usize,
    ports: fn(&OpSpec) -> &'static [Port],
) -> sys::ONNXTensorElementDataType {
    const UNDEFINED: sys::ONNXTensorElementDataType =
        sys::ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
    guard_value(UNDEFINED, || {
        // SAFETY: `op` is ours.
        let s = unsafe { spec_of(op) };
        ports(s)
            .get(i)
            .map(|p| element_type(s, p.ty))
            .unwrap_or(UNDEFINED)
    })
}

unsafe extern "system" fn op_input_type(
    op: *const sys::OrtCustomOp,
    i: usize,
) -> sys::ONNXTensorElementDataType {
    // SAFETY: `op` is ours.
    unsafe { port_type(op, i, OpSpec::inputs) }
}

unsafe extern "system" fn op_input_count(op: *const sys::OrtCustomOp) -> usize {
    // SAFETY: `op` is ours.
    guard_value(0, || unsafe { spec_of(op) }.inputs().len())
}

unsafe extern "system" fn op_output_type(
    op: *const sys::OrtCustomOp,
    i: usize,
) -> sys::ONNXTensorElementDataType {
    // SAFETY: `op` is ours.
    unsafe { port_type(op, i, OpSpec::outputs) }
}

unsafe extern "system" fn op_output_count(op: *const sys::OrtCustomOp) -> usize {
    // SAFETY: `op` is ours.
    guard_value(0, || unsafe { spec_of(op) }.outputs().len())
}

unsafe extern "system" fn op_input_characteristic(
    op: *const sys::OrtCustomOp,
    i: usize,
) -> sys::OrtCustomOpInputOutputCharacteristic {
    use sys::OrtCustomOpInputOutputCharacteristic as C;
    guard_value(C::INPUT_OUTPUT_REQUIRED, || {
        // SAFETY: `op` is ours.
        match unsafe { spec_of(op) }.inputs().get(i) {
            Some(p) if p.optional => C::INPUT_OUTPUT_OPTIONAL,
            _ => C::INPUT_OUTPUT_REQUIRED,
        }
    })
}

unsafe extern "system" fn op_output_characteristic(
    _op: *const sys::OrtCustomOp,
    _i: usize,
) -> sys::OrtCustomOpInputOutputCharacteristic {
    sys::OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_REQUIRED
}

unsafe extern "system" fn op_input_memory_type(
    op: *const sys::OrtCustomOp,
    i: usize,
) -> sys::OrtMemType {
    guard_value(sys::OrtMemType::OrtMemTypeDefault, || {
        // SAFETY: `op` is ours.
        if unsafe { spec_of(op) }.input_on_host(i) {
            sys::OrtMemType::OrtMemTypeCPUInput
        } else {
            sys::OrtMemType::OrtMemTypeDefault
        }
    })
}

unsafe extern "system" fn op_variadic_arity(_op: *const sys::OrtCustomOp) -> c_int {
    1
}

unsafe extern "system" fn op_variadic_homogeneity(_op: *const sys::OrtCustomOp) -> c_int {
    0
}

unsafe extern "system" fn op_version(_op: *const sys::OrtCustomOp) -> c_int {
    1
}

unsafe extern "system" fn op_create_kernel(
    op: *const sys::OrtCustomOp,
    _api: *const sys::OrtApi,
    info: *const sys::OrtKernelInfo,
    kernel: *mut *mut c_void,
) -> sys::OrtStatusPtr {
    guard(|| {
        if kernel.is_null() || info.is_null() {
            return Err(PluginError::fail(
                "CreateKernelV2 called with null pointers",
            ));
        }
        // SAFETY: `op` is ours; `info` is valid for this call.
        let spec = *unsafe { spec_of(op) };
        // ORT rethrows a kernel-creation status as RUNTIME_EXCEPTION ("Exception during
        // initialization: <message>"), dropping its code: carry the code in the message too.
        let k: Box<dyn Kernel> =
            kernels::create(spec, &KernelInfo { ptr: info }).map_err(|e| match e.kind {
                ErrorKind::InvalidArgument => PluginError {
                    kind: e.kind,
                    msg: format!("[INVALID_ARGUMENT] {}", e.msg),
                },
                ErrorKind::Fail => e,
            })?;
        // Double box: a thin pointer for ORT.
        let raw = Box::into_raw(Box::new(k));
        // SAFETY: `kernel` is ORT's out pointer.
        unsafe { *kernel = raw as *mut c_void };
        Ok(())
    })
}

unsafe extern "system" fn op_compute(
    kernel: *mut c_void,
    context: *mut sys::OrtKernelContext,
) -> sys::OrtStatusPtr {
    guard(|| {
        if kernel.is_null() || context.is_null() {
            return Err(PluginError::fail(
                "KernelComputeV2 called with null pointers",
            ));
        }
        // SAFETY: created by `op_create_kernel`, alive until `op_destroy`; kernels are Sync.
        let k = unsafe { &*(kernel as *const Box<dyn Kernel>) };
        k.compute(&KernelContext { ptr: context })
    })
}

unsafe extern "system" fn op_destroy(kernel: *mut c_void) {
    if kernel.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: created by `op_create_kernel`; ORT destroys each kernel once.
        drop(unsafe { Box::from_raw(kernel as *mut Box<dyn Kernel>) });
    }));
}

unsafe extern "system" fn op_infer_shape(
    op: *const sys::OrtCustomOp,
    ctx: *mut sys::OrtShapeInferContext,
) -> sys::OrtStatusPtr {
    guard(|| {
        // SAFETY: `op` is ours.
        let spec = unsafe { spec_of(op) };
        let a = api();
        let mut n = 0usize;
        // SAFETY: live inference context.
        check(
            unsafe { (a.ShapeInferContext_GetInputCount)(ctx, &mut n) },
            "ShapeInferContext_GetInputCount",
        )?;
        for &(out, inp) in spec.shape_map() {
            if inp >= n {
                continue;
            }
            let mut info: *mut sys::OrtTensorTypeAndShapeInfo = ptr::null_mut();
            // SAFETY: the info is owned by the context (not released here).
            check(
                unsafe { (a.ShapeInferContext_GetInputTypeShape)(ctx, inp, &mut info) },
                "ShapeInferContext_GetInputTypeShape",
            )?;
            if info.is_null() {
                continue;
            }
            // SAFETY: ORT copies the type and shape.
            check(
                unsafe { (a.ShapeInferContext_SetOutputTypeShape)(ctx, out, info) },
                "ShapeInferContext_SetOutputTypeShape",
            )?;
        }
        Ok(())
    })
}

fn make_op(spec: OpSpec) -> OpDef {
    // SAFETY: OrtCustomOp is a u32 and optional function pointers: all-zero is valid (None).
    let mut raw: sys::OrtCustomOp = unsafe { std::mem::zeroed() };
    raw.version = ORT_API_LEVEL;
    raw.GetName = Some(op_name);
    raw.GetExecutionProviderType = Some(op_ep);
    raw.GetInputType = Some(op_input_type);
    raw.GetInputTypeCount = Some(op_input_count);
    raw.GetOutputType = Some(op_output_type);
    raw.GetOutputTypeCount = Some(op_output_count);
    raw.GetInputCharacteristic = Some(op_input_characteristic);
    raw.GetOutputCharacteristic = Some(op_output_characteristic);
    raw.GetInputMemoryType = Some(op_input_memory_type);
    raw.GetVariadicInputMinArity = Some(op_variadic_arity);
    raw.GetVariadicInputHomogeneity = Some(op_variadic_homogeneity);
    raw.GetVariadicOutputMinArity = Some(op_variadic_arity);
    raw.GetVariadicOutputHomogeneity = Some(op_variadic_homogeneity);
    // CreateKernel / KernelCompute stay null: ORT (version > 15) then uses the V2 entry points.
    raw.CreateKernelV2 = Some(op_create_kernel);
    raw.KernelComputeV2 = Some(op_compute);
    raw.KernelDestroy = Some(op_destroy);
    raw.InferOutputShapeFn = Some(op_infer_shape);
    raw.GetStartVersion = Some(op_version);
    raw.GetEndVersion = Some(op_version);
    OpDef { raw, spec }
}

/// Whether the CUDA-EP op definitions are registered: when `libcuda` can be opened (probed once,
/// never panics). `DITAC_CUDA=0` turns them off; `DITAC_CUDA=force` registers them without a
/// driver (for tests: a CPU-only runtime must ignore them).
pub fn cuda_ops_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| match std::env::var("DITAC_CUDA").as_deref() {
        Ok("0") | Ok("off") => false,
        Ok("force") => true,
        _ => crate::cuda::glue::driver_present(),
    })
}

fn register(options: *mut sys::OrtSessionOptions) -> PResult<()> {
    let a = api();
    let ops = OPS.get_or_init(|| OpSpec::all().into_iter().map(make_op).collect());
    let cuda = cuda_ops_enabled();
    // Held while the domain is created and filled, so a concurrent registration waits for it.
    let mut shared = DOMAIN_PTR.lock().unwrap_or_else(|e| e.into_inner());
    if *shared == 0 {
        let mut domain: *mut sys::OrtCustomOpDomain = ptr::null_mut();
        // SAFETY: the name is NUL-terminated; the domain is kept for the process.
        check(
            unsafe { (a.CreateCustomOpDomain)(DOMAIN.as_ptr(), &mut domain) },
            "CreateCustomOpDomain",
        )?;
        for op in ops.iter().filter(|o| cuda || o.spec.ep == Ep::Cpu) {
            // SAFETY: `op.raw` lives in the process-wide OPS.
            let added = check(
                unsafe { (a.CustomOpDomain_Add)(domain, &op.raw) },
                "CustomOpDomain_Add",
            );
            if let Err(e) = added {
                // SAFETY: the domain was created above and handed to no one.
                unsafe { (a.ReleaseCustomOpDomain)(domain) };
                return Err(e);
            }
        }
        *shared = domain as usize;
    }
    let domain = *shared as *mut sys::OrtCustomOpDomain;
    drop(shared);
    // SAFETY: `options` is the caller's session options.
    check(
        unsafe { (a.AddCustomOpDomain)(options, domain) },
        "AddCustomOpDomain",
    )
}

/// The plugin's only exported symbol: registers domain `ai.ditac` (opset 1) with the session
/// options. Called once per session options by `RegisterCustomOpsLibrary`.
///
/// # Safety
/// Called by ONNX Runtime with valid session options and its `OrtApiBase`.
#[no_mangle]
pub unsafe extern "C" fn RegisterCustomOps(
    options: *mut sys::OrtSessionOptions,
    api_base: *const sys::OrtApiBase,
) -> *mut sys::OrtStatus {
    let r = catch_unwind(AssertUnwindSafe(|| -> *mut sys::OrtStatus {
        if api_base.is_null() {
            return ptr::null_mut();
        }
        // SAFETY: ORT's api base.
        let base = unsafe { &*api_base };
        // SAFETY: GetApi returns null for unsupported levels.
        let p = unsafe { (base.GetApi)(ORT_API_LEVEL) };
        if p.is_null() {
            // Level 1 still has CreateStatus at the same place: use it to say why.
            // SAFETY: as above.
            let old = unsafe { (base.GetApi)(1) };
            if old.is_null() {
                return ptr::null_mut();
            }
            // SAFETY: GetVersionString returns a static NUL-terminated string.
            let ver = unsafe { CStr::from_ptr((base.GetVersionString)()) }.to_string_lossy();
            let msg = CString::new(format!(
                "ai.ditac plugin: needs ONNX Runtime C API level {ORT_API_LEVEL} (ONNX Runtime >= 1.17); this runtime is {ver}"
            ))
            .unwrap_or_default();
            // SAFETY: the level-1 table.
            return unsafe { ((*old).CreateStatus)(sys::OrtErrorCode::ORT_FAIL, msg.as_ptr()).0 };
        }
        // SAFETY: ORT's API tables are static for the process.
        let _ = API.set(unsafe { &*p });
        if options.is_null() {
            return new_status(&PluginError::invalid(
                "RegisterCustomOps: null session options",
            ));
        }
        match register(options) {
            Ok(()) => ptr::null_mut(),
            Err(e) => new_status(&e),
        }
    }));
    r.unwrap_or_else(|p| {
        new_status(&PluginError::fail(format!(
            "ai.ditac: internal error (panic) in RegisterCustomOps: {}",
            panic_message(&*p)
        )))
    })
}
