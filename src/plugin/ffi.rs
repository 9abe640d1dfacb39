//! The `extern "C"` side of the plugin: the `OrtCustomOp` definitions and their trampolines, and the
//! exported `RegisterCustomOps`. Each trampoline turns its raw pointers into the safe types of
//! `context`, calls the kernels (`cpu`, `cuda`), and turns their result into an `OrtStatus` whose
//! code and message name the node, the op and the offending value.
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

use super::context::{self, api, check, panic_message, Kernel, KernelContext, KernelInfo};
use super::{cpu, cuda};
use super::{
    Elem, Ep, ErrorKind, OpSpec, PResult, PluginError, Port, PortType, DOMAIN, ORT_API_LEVEL,
};
use crate::core::budget;

// ---------------------------------------------------------------------------------------------
// Statuses

/// A new `OrtStatus` (null only if the API table is unknown, which cannot happen after registration).
fn new_status(err: &PluginError) -> *mut sys::OrtStatus {
    let code = match err.kind {
        ErrorKind::InvalidArgument => sys::OrtErrorCode::ORT_INVALID_ARGUMENT,
        ErrorKind::Fail => sys::OrtErrorCode::ORT_FAIL,
    };
    let msg = CString::new(err.msg.replace('\0', " ")).unwrap_or_default();
    match context::api_if_known() {
        // SAFETY: CreateStatus copies the NUL-terminated message.
        Some(a) => unsafe { (a.CreateStatus)(code, msg.as_ptr()).0 },
        None => ptr::null_mut(),
    }
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
// Kernel creation

/// Creates the kernel of `spec` for the node described by `info`; errors name the node and the op.
fn create(spec: OpSpec, info: &KernelInfo) -> PResult<Box<dyn Kernel>> {
    let prefix = format!("ai.ditac.{} node '{}'", spec.name(), info.node_name());
    // A DITAC_ISA that names no kernel path is a configuration error, reported at creation.
    crate::core::kernels::Isa::env_cap().map_err(|e| PluginError::invalid(e).in_node(&prefix))?;
    let k: PResult<Box<dyn Kernel>> = match spec.ep {
        Ep::Cuda => cuda::create(spec, info, &prefix),
        Ep::Cpu => cpu::create(spec.kind, spec.elem, info, &prefix),
    };
    k.map_err(|e| e.in_node(&prefix))
}

// ---------------------------------------------------------------------------------------------
// The op definitions

/// An `OrtCustomOp` followed by what it stands for. `raw` must stay the first field: ORT hands the
/// callbacks a pointer to it, which is cast back to the whole definition.
#[repr(C)]
struct OpDef {
    raw: sys::OrtCustomOp,
    spec: OpSpec,
    /// The memory budget of each node's tables (`core::budget`), from the session options that
    /// registered this definition.
    max_bytes: u64,
}

/// The op definitions and the custom-op domain of one memory budget. ORT needs a domain for as long
/// as any session lives and only reads it (its name and ops), so one domain serves every
/// registration with that budget: registering again allocates nothing (and the library itself
/// stays loaded: `-z nodelete`, build.rs). Kept (never moved or freed) for the process; one set per
/// distinct budget value.
struct OpSet {
    max_bytes: u64,
    /// Holds the definitions (the domain points into them) so they stay reachable.
    #[allow(dead_code)]
    ops: &'static [OpDef],
    domain: usize,
}

static OP_SETS: Mutex<Vec<OpSet>> = Mutex::new(Vec::new());

/// # Safety
/// `op` must be one of the `OpDef`s of `OP_SETS`.
unsafe fn def_of<'a>(op: *const sys::OrtCustomOp) -> &'a OpDef {
    // SAFETY: repr(C) with `raw` first.
    unsafe { &*(op as *const OpDef) }
}

/// # Safety
/// As [`def_of`].
unsafe fn spec_of<'a>(op: *const sys::OrtCustomOp) -> &'a OpSpec {
    // SAFETY: as the caller's.
    unsafe { &def_of(op).spec }
}

fn element_type(spec: &OpSpec, ty: PortType) -> sys::ONNXTensorElementDataType {
    use sys::ONNXTensorElementDataType as E;
    match ty {
        PortType::Float => E::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
        PortType::T => match spec.elem {
            Elem::F32 => E::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
            Elem::F16 => E::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16,
            Elem::F64 => E::ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE,
            Elem::BF16 => E::ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16,
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
        let def = unsafe { def_of(op) };
        let spec = def.spec;
        // ORT rethrows a kernel-creation status as RUNTIME_EXCEPTION ("Exception during
        // initialization: <message>"), dropping its code: carry the code in the message too.
        let k: Box<dyn Kernel> =
            // SAFETY: `info` is valid for this call, and `KernelInfo` does not outlive it.
            create(spec, &unsafe { KernelInfo::from_raw(info, def.max_bytes) }).map_err(|e| match e.kind {
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
        // SAFETY: `context` is valid for this call, and `KernelContext` does not outlive it.
        k.compute(&unsafe { KernelContext::from_raw(context) })
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
            if info.is_null() || !every_dim_known_or_named(info)? {
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

/// Whether inferred output shapes can copy `info`: ORT writes an unnamed unknown dim back as the
/// concrete value -1 (and then warns on every run that the actual shape differs), and a missing
/// input shape reads as rank 0. The C API cannot write an unknown dim, so then the output shape
/// is left unknown (its type is still set by ORT), as ORT's own Gelu leaves such dims unknown.
fn every_dim_known_or_named(info: *const sys::OrtTensorTypeAndShapeInfo) -> PResult<bool> {
    let a = api();
    let mut n = 0usize;
    // SAFETY: info is owned by the live inference context.
    check(
        unsafe { (a.GetDimensionsCount)(info, &mut n) },
        "GetDimensionsCount",
    )?;
    if n == 0 {
        return Ok(false);
    }
    let mut dims = vec![0i64; n];
    let mut names: Vec<*const c_char> = vec![ptr::null(); n];
    // SAFETY: both buffers have room for n entries; the names are owned by `info`.
    check(
        unsafe { (a.GetDimensions)(info, dims.as_mut_ptr(), n) },
        "GetDimensions",
    )?;
    // SAFETY: as above.
    check(
        unsafe { (a.GetSymbolicDimensions)(info, names.as_mut_ptr(), n) },
        "GetSymbolicDimensions",
    )?;
    Ok(dims.iter().zip(&names).all(|(&dim, &name)| {
        // SAFETY: a non-null name is a NUL-terminated string owned by `info`.
        dim >= 0 || (!name.is_null() && unsafe { *name } != 0)
    }))
}

fn make_op(spec: OpSpec, max_bytes: u64) -> OpDef {
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
    OpDef {
        raw,
        spec,
        max_bytes,
    }
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

/// The memory budget of the nodes of sessions made with `options`: the session config entry
/// `ditac.max_bytes` (set it before registering the library), else `DITAC_MAX_BYTES`, else 1 GiB.
fn session_budget(options: *const sys::OrtSessionOptions) -> PResult<u64> {
    let a = api();
    let key = CString::new(budget::CONFIG_KEY).unwrap_or_default();
    let mut has: c_int = 0;
    // SAFETY: `options` is the caller's; the key is NUL-terminated.
    check(
        unsafe { (a.HasSessionConfigEntry)(options, key.as_ptr(), &mut has) },
        "HasSessionConfigEntry",
    )?;
    if has == 0 {
        return budget::from_env().map_err(|e| PluginError::invalid(format!("ai.ditac: {e}")));
    }
    let get = |buf: &mut Vec<u8>, size: &mut usize| {
        *size = buf.len();
        // SAFETY: `buf` holds `size` bytes; ORT writes a NUL-terminated value or says the size it
        // needs.
        check(
            unsafe {
                (a.GetSessionConfigEntry)(
                    options,
                    key.as_ptr(),
                    buf.as_mut_ptr() as *mut c_char,
                    size,
                )
            },
            "GetSessionConfigEntry",
        )
    };
    let mut buf = vec![0u8; 128];
    let mut size = 0;
    let first = get(&mut buf, &mut size);
    if first.is_err() && size > buf.len() {
        // Again, with the size ORT asked for.
        buf = vec![0u8; size];
        get(&mut buf, &mut size)?;
    } else {
        first?;
    }
    let text = CStr::from_bytes_until_nul(&buf)
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default();
    budget::parse_bytes(&text).map_err(|e| {
        PluginError::invalid(format!(
            "ai.ditac: session config entry {} = {e}",
            budget::CONFIG_KEY
        ))
    })
}

fn register(options: *mut sys::OrtSessionOptions) -> PResult<()> {
    let a = api();
    let max_bytes = session_budget(options)?;
    let cuda = cuda_ops_enabled();
    // Held while a set is created and filled, so a concurrent registration waits for it.
    let mut sets = OP_SETS.lock().unwrap_or_else(|e| e.into_inner());
    let domain = match sets.iter().find(|s| s.max_bytes == max_bytes) {
        Some(set) => set.domain,
        None => {
            let ops: &'static [OpDef] = Box::leak(
                OpSpec::all()
                    .into_iter()
                    .map(|spec| make_op(spec, max_bytes))
                    .collect::<Box<[OpDef]>>(),
            );
            let mut domain: *mut sys::OrtCustomOpDomain = ptr::null_mut();
            // SAFETY: the name is NUL-terminated; the domain is kept for the process.
            check(
                unsafe { (a.CreateCustomOpDomain)(DOMAIN.as_ptr(), &mut domain) },
                "CreateCustomOpDomain",
            )?;
            for op in ops.iter().filter(|o| cuda || o.spec.ep == Ep::Cpu) {
                // SAFETY: `op.raw` lives in the leaked, never-freed `ops`.
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
            sets.push(OpSet {
                max_bytes,
                ops,
                domain: domain as usize,
            });
            domain as usize
        }
    };
    drop(sets);
    // SAFETY: `options` is the caller's session options; the domain lives for the process.
    check(
        unsafe { (a.AddCustomOpDomain)(options, domain as *mut sys::OrtCustomOpDomain) },
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
        context::set_api(unsafe { &*p });
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
