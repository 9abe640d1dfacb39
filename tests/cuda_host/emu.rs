//! `ops/cuda/ditac.cu` executed on the CPU (tests/cuda_host/README.md): the kernel source is
//! compiled by the system C++ compiler with `cuda_emu.h` into a small library (`emu.cpp`: a
//! strict block/warp scheduler and a C ABI), and driven through the plugin's own launch path —
//! `ditac::cuda::launch::{forward, backward}`, i.e. the same split, launch plans, argument
//! structs, scratch sizes and dθ reduction as on a GPU — with host memory as "device" memory.
//!
//! Every case is compared with the CPU core (the checker of the GPU check, `check.rs`), the
//! buffers carry canaries around them (and the leading `offset` elements) that must survive,
//! and dX, Y and dθ must be bitwise equal under another block and thread order.
//!
//! Environment: `DITAC_CUDA_SOURCE` (another kernel source file), `CXX` (default g++),
//! `DITAC_EMU_ASAN=1` (build with AddressSanitizer; the test binary must then run with libasan
//! preloaded, as tests/cuda_host/run.sh does), `DITAC_EMU_QUICK=1` (fewer cases),
//! `DITAC_EMU_CXXFLAGS` (extra compiler flags), `DITAC_EMU_SEED` (the inputs' seed).

#[path = "check.rs"]
mod check;

use std::alloc::Layout;
use std::ffi::{c_char, c_int, CStr, CString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use check::*;
use ditac::core::Variant;
use ditac::cuda::launch::{self, Executor};
use ditac::cuda::{
    fwd_name, grad_name, DType, DeviceLimits, FwdArgs, GradArgs, HostTables, Launch, ReduceArgs,
    REDUCE_NAME, SOURCE_ENV,
};

type LaunchFn = unsafe extern "C" fn(
    *const c_char,
    u32,
    u32,
    u32,
    *const u8,
    usize,
    u64,
    u64,
    *mut c_char,
    usize,
) -> c_int;
type RegionsFn = unsafe extern "C" fn(*const u64, usize);
type SwitchesFn = unsafe extern "C" fn() -> u64;

struct Emu {
    _lib: libloading::Library,
    launch: LaunchFn,
    regions: RegionsFn,
    switches: SwitchesFn,
    source: PathBuf,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Compiles the emulator with the kernel source (once per process; the library is named by a
/// hash of its inputs, so a changed source or header is rebuilt).
fn emulator() -> &'static Emu {
    static EMU: OnceLock<Emu> = OnceLock::new();
    EMU.get_or_init(|| {
        let source = match std::env::var_os(SOURCE_ENV) {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => repo().join("ops/cuda/ditac.cu"),
        };
        let source = std::fs::canonicalize(&source)
            .unwrap_or_else(|e| panic!("{SOURCE_ENV}: {}: {e}", source.display()));
        let host = repo().join("tests/cuda_host");
        let asan = std::env::var("DITAC_EMU_ASAN").is_ok_and(|v| v == "1");
        let mut key = Vec::new();
        for f in [
            source.clone(),
            host.join("cuda_emu.h"),
            host.join("emu.cpp"),
        ] {
            key.extend(std::fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display())));
        }
        key.push(asan as u8);
        // Extra compiler flags, e.g. -DCUDA_EMU_UCONTEXT (the portable context switch).
        let extra = std::env::var("DITAC_EMU_CXXFLAGS").unwrap_or_default();
        key.extend(extra.as_bytes());
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cuda_emu");
        std::fs::create_dir_all(&dir).unwrap();
        let lib = dir.join(format!("libditac_emu-{:016x}.so", fnv(&key)));
        if !lib.exists() {
            let cxx = std::env::var("CXX").unwrap_or_else(|_| "g++".into());
            let tmp = lib.with_extension(format!("tmp{}", std::process::id()));
            let mut cmd = Command::new(&cxx);
            cmd.args(["-std=c++17", "-O1", "-ffp-contract=off", "-fno-fast-math"])
                .args(["-shared", "-fPIC", "-Wall", "-Wno-unknown-pragmas"])
                .arg(format!("-DDITAC_KERNEL_SOURCE=\"{}\"", source.display()))
                .arg(format!("-I{}", host.display()));
            if asan {
                cmd.args(["-fsanitize=address", "-fno-omit-frame-pointer"]);
            }
            cmd.args(extra.split_whitespace());
            cmd.arg(host.join("emu.cpp")).arg("-o").arg(&tmp);
            let out = cmd
                .output()
                .unwrap_or_else(|e| panic!("{cxx} (the CPU emulation needs a C++ compiler): {e}"));
            assert!(
                out.status.success(),
                "{cxx} could not compile {} with the emulator:\n{}",
                source.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            std::fs::rename(&tmp, &lib).unwrap();
        }
        // SAFETY: our own library, built just now from tests/cuda_host/emu.cpp; the symbols'
        // types are its C ABI (checked by ditac_emu_abi).
        unsafe {
            let l = libloading::Library::new(&lib).unwrap_or_else(|e| panic!("{e}"));
            let abi: libloading::Symbol<unsafe extern "C" fn() -> c_int> =
                l.get(b"ditac_emu_abi\0").unwrap();
            assert_eq!(abi(), 1, "emulator ABI version");
            let launch: LaunchFn = *l.get(b"ditac_emu_launch\0").unwrap();
            let regions: RegionsFn = *l.get(b"ditac_emu_regions\0").unwrap();
            let switches: SwitchesFn = *l.get(b"ditac_emu_switches\0").unwrap();
            Emu {
                _lib: l,
                launch,
                regions,
                switches,
                source,
            }
        }
    })
}

/// A host buffer standing for device memory: `offset` leading elements and 64-byte canaries on
/// both sides that no kernel may touch (none at the end with AddressSanitizer: the data then
/// ends where the allocation does, and ASan sees an overrun itself).
struct Buf {
    ptr: *mut u8,
    layout: Layout,
    start: usize,
    bytes: usize,
    lead: usize,
    tail: usize,
}

const CANARY: u8 = 0xa5;

impl Buf {
    fn new(bytes: usize, offset_bytes: usize) -> Buf {
        let asan = std::env::var("DITAC_EMU_ASAN").is_ok_and(|v| v == "1");
        let tail = if asan { 0 } else { 64 };
        // The data starts `offset_bytes` past a 256-byte boundary (as in the GPU check).
        let start = 256 + offset_bytes;
        let layout = Layout::from_size_align(start + bytes + tail, 256).unwrap();
        // SAFETY: a non-zero size; freed in Drop with the same layout.
        let ptr = unsafe { std::alloc::alloc(layout) };
        assert!(!ptr.is_null(), "out of memory");
        // SAFETY: the whole allocation.
        unsafe { std::ptr::write_bytes(ptr, CANARY, layout.size()) };
        Buf {
            ptr,
            layout,
            start,
            bytes,
            lead: 64 + offset_bytes,
            tail,
        }
    }
    fn all(&self) -> &[u8] {
        // SAFETY: the allocation, initialised in `new`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.layout.size()) }
    }
    fn addr(&self) -> u64 {
        self.ptr as u64 + self.start as u64
    }
    fn data(&self) -> &[u8] {
        &self.all()[self.start..self.start + self.bytes]
    }
    fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: inside the allocation; `&mut self` is the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(self.start), self.bytes) }
    }
    fn region(&self) -> (u64, u64) {
        (self.addr(), self.addr() + self.bytes as u64)
    }
    /// Whether everything outside the data is as it was.
    fn intact(&self) -> bool {
        let m = self.all();
        let before = &m[self.start - self.lead..self.start];
        let after = &m[self.start + self.bytes..self.start + self.bytes + self.tail];
        before.iter().chain(after).all(|&b| b == CANARY)
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

/// The emulator as an [`Executor`]: launches run to completion before the call returns.
struct EmuExec {
    limits: DeviceLimits,
    block_seed: u64,
    thread_seed: u64,
    regions: Vec<(u64, u64)>,
    scratch: Vec<Vec<u64>>,
    log: Vec<String>,
}

impl EmuExec {
    fn launch_raw<A>(&mut self, name: &str, l: &Launch, a: &A) -> Result<(), String> {
        let emu = emulator();
        let pairs: Vec<u64> = self.regions.iter().flat_map(|&(s, e)| [s, e]).collect();
        let name_c = CString::new(name).unwrap();
        let mut err = vec![0 as c_char; 512];
        self.log
            .push(format!("{name}<<<{},{},{}>>>", l.grid, l.block, l.smem));
        // SAFETY: the C ABI of emu.cpp; `a` is the #[repr(C)] struct of the kernel (its size is
        // checked on the other side), every address in it is inside `self.regions` or a buffer
        // of the test that outlives the call.
        let rc = unsafe {
            (emu.regions)(pairs.as_ptr(), self.regions.len());
            (emu.launch)(
                name_c.as_ptr(),
                l.grid,
                l.block,
                l.smem,
                a as *const A as *const u8,
                std::mem::size_of::<A>(),
                self.block_seed,
                self.thread_seed,
                err.as_mut_ptr(),
                err.len(),
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            // SAFETY: NUL-terminated by snprintf.
            Err(unsafe { CStr::from_ptr(err.as_ptr()) }
                .to_string_lossy()
                .into_owned())
        }
    }
}

impl Executor for EmuExec {
    type Error = String;
    type Scratch = ();
    fn forward_limits(&self, _: DType) -> DeviceLimits {
        self.limits
    }
    fn grad_limits(&self, _: DType) -> DeviceLimits {
        self.limits
    }
    fn scratch(&mut self, bytes: usize) -> Result<(u64, ()), String> {
        if bytes == 0 {
            return Ok((0, ()));
        }
        // Uninitialised on a GPU: NaN bits here, so that a sum never cleared shows.
        let v = vec![u64::MAX; bytes.div_ceil(8)];
        let p = v.as_ptr() as u64;
        self.regions.push((p, p + bytes as u64));
        self.scratch.push(v);
        Ok((p, ()))
    }
    fn zero_f32(&mut self, dst: u64, count: usize) -> Result<(), String> {
        let end = dst + 4 * count as u64;
        if !self.regions.iter().any(|&(s, e)| dst >= s && end <= e) {
            return Err(format!("zero_f32 outside the buffers at {dst:#x}"));
        }
        // SAFETY: inside a live buffer of the test (checked above).
        unsafe { std::slice::from_raw_parts_mut(dst as *mut f32, count) }.fill(0.0);
        Ok(())
    }
    fn launch_forward(&mut self, d: DType, l: &Launch, a: &FwdArgs) -> Result<(), String> {
        self.launch_raw(&fwd_name(d), l, a)
    }
    fn launch_grad(&mut self, d: DType, l: &Launch, a: &GradArgs) -> Result<(), String> {
        self.launch_raw(&grad_name(d), l, a)
    }
    fn launch_reduce(&mut self, l: &Launch, a: &ReduceArgs) -> Result<(), String> {
        self.launch_raw(REDUCE_NAME, l, a)
    }
}

/// Devices as the planner sees them.
const H200: DeviceLimits = DeviceLimits {
    sm_count: 132,
    blocks_per_sm: 8,
    smem_optin: 227 * 1024,
    smem_per_sm: 228 * 1024,
};
/// Few blocks (grid-stride loops go round several times) and only the default 48 KiB of shared
/// memory (the backward's default tables live in global memory).
const SMALL: DeviceLimits = DeviceLimits {
    sm_count: 3,
    blocks_per_sm: 1,
    smem_optin: 48 * 1024,
    smem_per_sm: 100 * 1024,
};

struct EmuCase {
    c: Case,
    dev: (&'static str, DeviceLimits),
    /// Extra elements before the outputs (Y, dX): a different alignment from the inputs' makes
    /// every element a scalar.
    out_shift: usize,
}

fn poison_bits(d: DType, b: &mut [u8]) {
    let p = poison_element(d);
    b.chunks_mut(p.len()).for_each(|c| c.copy_from_slice(&p));
}

struct Outputs {
    y: Vec<u8>,
    dx: Vec<u8>,
    dth: Vec<f32>,
    log: Vec<String>,
}

/// One forward and one backward through `launch::{forward, backward}` on the emulator.
fn run_once(
    ec: &EmuCase,
    p: &Prepared,
    seeds: (u64, u64),
    out: &mut Outcome,
) -> Result<Outputs, String> {
    let c = &ec.c;
    let d = c.dtype;
    let es = d.size() as usize;
    let n = c.len * es;
    let mut x = Buf::new(n, c.offset * es);
    let mut dy = Buf::new(n, c.offset * es);
    let mut y = Buf::new(n, (c.offset + ec.out_shift) * es);
    let mut dx = Buf::new(n, (c.offset + ec.out_shift) * es);
    let width = p.dth_ref.len();
    let mut dth = Buf::new(width * 4, 0);
    x.data_mut().copy_from_slice(&to_bits(d, &p.x));
    dy.data_mut().copy_from_slice(&to_bits(d, &p.dy));
    poison_bits(d, y.data_mut());
    poison_bits(d, dx.data_mut());
    poison_bits(DType::F32, dth.data_mut());
    let tables: Vec<f32> = p.t.data.clone();
    let tp = tables.as_ptr() as u64;
    let mut ex = EmuExec {
        limits: ec.dev.1,
        block_seed: seeds.0,
        thread_seed: seeds.1,
        regions: vec![
            (tp, tp + 4 * tables.len() as u64),
            x.region(),
            dy.region(),
            y.region(),
            dx.region(),
            dth.region(),
        ],
        scratch: Vec::new(),
        log: Vec::new(),
    };
    let t: &HostTables = &p.t;
    let inner = if c.channels == 1 { c.len } else { c.inner } as u64;
    let len = c.len as u64;
    launch::forward(&mut ex, d, t, tp, x.addr(), y.addr(), len, inner)?;
    launch::backward(
        &mut ex,
        d,
        t,
        tp,
        dy.addr(),
        x.addr(),
        dx.addr(),
        dth.addr(),
        len,
        inner,
    )?;
    for (b, what) in [(&x, "X"), (&dy, "dY"), (&y, "Y"), (&dx, "dX"), (&dth, "dθ")] {
        out.check(b.intact(), || {
            format!(
                "{}: written outside {what} (canary or leading elements)",
                c.name
            )
        });
    }
    out.check(tables == p.t.data, || {
        format!("{}: the tables were written", c.name)
    });
    let dth_v = dth
        .data()
        .chunks(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(Outputs {
        y: y.data().to_vec(),
        dx: dx.data().to_vec(),
        dth: dth_v,
        log: ex.log,
    })
}

fn run_case(ec: &EmuCase, rng: &mut Rng) -> Vec<String> {
    let c = &ec.c;
    let mut out = Outcome {
        fails: Vec::new(),
        quiet: false,
    };
    let p = prepare(c, rng);
    // SAFETY: a plain counter of the emulator's C ABI.
    let before = unsafe { (emulator().switches)() };
    let first = match run_once(ec, &p, (0, 0), &mut out) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("FAIL {}: {e}", c.name);
            return vec![format!("{}: {e}", c.name)];
        }
    };
    let (y, dx) = (from_bits(c.dtype, &first.y), from_bits(c.dtype, &first.dx));
    compare(c, &p, &y, &dx, &first.dth, &mut out);
    // Another block order (descending) and thread order (a permutation): the same bits.
    match run_once(ec, &p, (1, 0x5eed), &mut out) {
        Ok(again) => {
            out.check(again.y == first.y, || {
                format!("{}: Y differs under another block order", c.name)
            });
            out.check(again.dx == first.dx, || {
                format!("{}: dX differs under another block order", c.name)
            });
            out.check(same_bits(&again.dth, &first.dth), || {
                format!("{}: dθ bits differ under another block order", c.name)
            });
        }
        Err(e) => out.check(false, || format!("{}: {e}", c.name)),
    }
    // And a random block order: dθ bits again.
    match run_once(ec, &p, (0xb10c, 3), &mut out) {
        Ok(again) => out.check(same_bits(&again.dth, &first.dth), || {
            format!("{}: dθ bits differ under a random block order", c.name)
        }),
        Err(e) => out.check(false, || format!("{}: {e}", c.name)),
    }
    // SAFETY: as above.
    let switches = unsafe { (emulator().switches)() } - before;
    println!(
        "{} {:<44} {:<5} len {:>6} off {} shift {}  {}  ({} switches)",
        if out.fails.is_empty() { "ok  " } else { "FAIL" },
        c.name,
        ec.dev.0,
        c.len,
        c.offset,
        ec.out_shift,
        first.log.join(" "),
        switches
    );
    out.fails
}

#[allow(clippy::too_many_arguments)]
fn case(
    dtype: DType,
    variant: Variant,
    linear: bool,
    channels: usize,
    inner: usize,
    len: usize,
    offset: usize,
    lut: i64,
    tess: i64,
) -> Case {
    let v = match variant {
        Variant::Ditac => "ditac",
        Variant::Ge => "ge",
        Variant::Leaky => "leaky",
    };
    let mut name = format!(
        "{}/{v}/{}",
        dtype.suffix(),
        if linear { "linear" } else { "nearest" }
    );
    if channels > 1 {
        name += &format!("/C={channels},inner={inner}");
    }
    if lut != 2048 {
        name += &format!("/lut={lut}");
    }
    if tess != 10 {
        name += &format!("/tess={tess}");
    }
    Case {
        name,
        dtype,
        variant,
        linear,
        channels,
        inner,
        len,
        offset,
        lut,
        tess,
        nan_dy: false,
    }
}

/// `c` with NaN and ±∞ in the last channel's dY.
fn with_nan_dy(mut c: Case) -> Case {
    c.name += "/nan-dy";
    c.nan_dy = true;
    c
}

fn cases(quick: bool) -> Vec<EmuCase> {
    let mut v = Vec::new();
    let small = ("small", SMALL);
    let h200 = ("h200", H200);
    let base = if quick { 1500 } else { 3001 };
    for dtype in DType::ALL {
        // Every variant and interpolation, one table.
        for variant in [Variant::Ditac, Variant::Ge, Variant::Leaky] {
            for linear in [false, true] {
                let dev = if linear { h200 } else { small };
                v.push(EmuCase {
                    c: case(dtype, variant, linear, 1, 1, base, 0, 2048, 10),
                    dev,
                    out_shift: 0,
                });
            }
        }
        // Per-channel tables: long runs (NCHW-like) and channel-last (several channels a warp).
        v.push(EmuCase {
            c: with_nan_dy(case(
                dtype,
                Variant::Ditac,
                false,
                3,
                401,
                3 * 401 * 2 + 5,
                0,
                2048,
                10,
            )),
            dev: small,
            out_shift: 0,
        });
        v.push(EmuCase {
            c: case(dtype, Variant::Ge, true, 16, 1, 16 * 37 + 3, 0, 256, 10),
            dev: h200,
            out_shift: 0,
        });
        // A channel run longer than 2^32 elements: the 64-bit channel division.
        v.push(EmuCase {
            c: case(
                dtype,
                Variant::Ditac,
                false,
                2,
                (1 << 32) + 5,
                1003,
                0,
                256,
                10,
            ),
            dev: small,
            out_shift: 0,
        });
        // Many channels: the per-warp accumulators in global memory (and tables too on SMALL).
        v.push(EmuCase {
            c: with_nan_dy(case(
                dtype,
                Variant::Ditac,
                true,
                100,
                1,
                100 * 3 + 9,
                0,
                16,
                10,
            )),
            dev: small,
            out_shift: 0,
        });
        // d > 16: the dθ rows do not fit the registers.
        v.push(EmuCase {
            c: case(dtype, Variant::Leaky, true, 2, 333, 1201, 0, 512, 20),
            dev: h200,
            out_shift: 0,
        });
        // A table too large for shared memory (forward and backward read it globally).
        v.push(EmuCase {
            c: case(dtype, Variant::Ditac, false, 1, 1, 1003, 0, 65536, 10),
            dev: h200,
            out_shift: 0,
        });
        // Misaligned starts (head, vectors, tail) and different alignments (all scalar).
        for (offset, shift) in [(1, 0), (3, 0), (1, 1)] {
            v.push(EmuCase {
                c: case(dtype, Variant::Ditac, false, 1, 1, 1003, offset, 2048, 10),
                dev: small,
                out_shift: shift,
            });
        }
        // Tiny and boundary lengths.
        for len in [0, 1, 31, 33] {
            v.push(EmuCase {
                c: case(dtype, Variant::Ge, true, 1, 1, len, 1, 64, 10),
                dev: small,
                out_shift: 0,
            });
        }
    }
    // Sizes crossing block and grid boundaries: the forward's block step is 256 threads × 4
    // vectors, the backward's 256 vectors; SMALL has a grid of 3, so the grid-stride loops wrap.
    let f32_vec = 4;
    for len in [
        256 * 4 * f32_vec * 3 + 4 * f32_vec + 1,
        256 * f32_vec * 3 + 7,
        256 * f32_vec * 3 - 1,
    ] {
        v.push(EmuCase {
            c: case(DType::F32, Variant::Ditac, false, 1, 1, len, 0, 2048, 10),
            dev: small,
            out_shift: 0,
        });
    }
    // Tens of blocks on the large device: the reduction sums that many slots.
    v.push(EmuCase {
        c: case(DType::F32, Variant::Ge, true, 1, 1, 40_003, 0, 2048, 10),
        dev: h200,
        out_shift: 0,
    });
    if !quick {
        v.push(EmuCase {
            c: case(
                DType::F16,
                Variant::Ditac,
                true,
                1,
                1,
                256 * 8 * 4 + 9,
                2,
                2048,
                10,
            ),
            dev: small,
            out_shift: 0,
        });
    }
    v
}

#[test]
fn kernels_on_the_cpu_emulator_match_the_core() {
    let quick = std::env::var("DITAC_EMU_QUICK").is_ok_and(|v| v == "1");
    let emu = emulator();
    println!("kernel source: {}", emu.source.display());
    let seed = std::env::var("DITAC_EMU_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x0123_4567_89ab_cdef_u64);
    println!("input seed: {seed} (DITAC_EMU_SEED)");
    let mut rng = Rng::new(seed);
    let all = cases(quick);
    let mut fails = Vec::new();
    let n = all.len();
    for ec in &all {
        fails.extend(run_case(ec, &mut rng));
    }
    println!("{} cases, {} failures", n, fails.len());
    assert!(
        fails.is_empty(),
        "{} failures:\n{}",
        fails.len(),
        fails.join("\n")
    );
}

/// The final dθ reduction alone, over many slots (the backward's grids above are small): each
/// output must be the f64 sum in the kernel's documented order — thread t sums slots t,
/// t + 256, … in order, then a fixed tree over the 256 threads — to the bit.
#[test]
fn reduction_kernel_sums_slots_in_its_fixed_order() {
    let mut rng = Rng::new(0x5107_5eed);
    for (slots, width) in [
        (1u32, 3u32),
        (255, 2),
        (256, 1),
        (257, 4),
        (1000, 3),
        (4099, 2),
    ] {
        let partials: Vec<f64> = (0..slots as usize * width as usize)
            .map(|_| rng.uniform(-1.0, 1.0) as f64 * (1 << (rng.0.next_u64() % 20)) as f64)
            .collect();
        let mut out = vec![f32::NAN; width as usize];
        let l = Launch {
            grid: width,
            block: ditac::cuda::REDUCE_BLOCK,
            smem: 0,
        };
        let (pp, op) = (partials.as_ptr() as u64, out.as_mut_ptr() as u64);
        let a = ReduceArgs {
            partials: pp,
            out: op,
            slots,
            width,
        };
        for seeds in [(0, 0), (1, 0x7)] {
            let mut ex = EmuExec {
                limits: SMALL,
                block_seed: seeds.0,
                thread_seed: seeds.1,
                regions: vec![
                    (pp, pp + 8 * partials.len() as u64),
                    (op, op + 4 * width as u64),
                ],
                scratch: Vec::new(),
                log: Vec::new(),
            };
            ex.launch_reduce(&l, &a).unwrap();
            for i in 0..width as usize {
                let b = l.block as usize;
                let mut part: Vec<f64> = (0..b)
                    .map(|t| {
                        (t..slots as usize)
                            .step_by(b)
                            .fold(0.0, |acc, s| acc + partials[s * width as usize + i])
                    })
                    .collect();
                let mut o = b / 2;
                while o > 0 {
                    for t in 0..o {
                        part[t] += part[t + o];
                    }
                    o /= 2;
                }
                assert_eq!(
                    out[i].to_bits(),
                    (part[0] as f32).to_bits(),
                    "slots {slots}, width {width}, value {i}: {} (want {})",
                    out[i],
                    part[0]
                );
            }
        }
        println!("ok   reduce slots {slots} width {width}");
    }
}
