//! A small C API over the math core, for hosts other than ONNX Runtime: `ditac_onnx.torch.DiTAC`
//! (ctypes) builds the basis, the two prior matrices and, every training step, the tables of T̂,
//! dT̂/du and dT̂/dθ here, so PyTorch training runs the same math as the plugin, with nothing to
//! compile on the user's side.
//!
//! Conventions of every function:
//! * returns [`OK`] (0), [`INVALID`] (1: an argument was refused) or [`INTERNAL`] (2: a panic);
//!   on failure a NUL-terminated message (truncated to `err_len` bytes) is written to `err`
//!   when `err` is not null;
//! * matrices are row-major; the caller allocates every output with the size given by its length
//!   argument, which is checked against what the arguments imply;
//! * the body runs under `catch_unwind`: nothing unwinds into the caller.
//!
//! The exported names are listed in `build.rs`'s linker version script; [`VERSION`] changes with
//! any change of a signature.

use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::core::activation::Activation;
use crate::core::basis::{self, Basis, BasisKind};
use crate::core::budget;
use crate::core::config::{Attrs, Interpolation, Variant, MAX_LUT, MAX_TESS};
use crate::core::error::panic_message;
use crate::core::prior;

/// The version of this API (the Python side refuses a library with another one).
pub const VERSION: u32 = 1;
pub const OK: i32 = 0;
pub const INVALID: i32 = 1;
pub const INTERNAL: i32 = 2;

/// An argument error with its message.
struct Refused(String);

impl From<crate::core::DitacError> for Refused {
    fn from(e: crate::core::DitacError) -> Self {
        Refused(e.to_string())
    }
}

fn refuse<T>(msg: impl Into<String>) -> Result<T, Refused> {
    Err(Refused(msg.into()))
}

/// Runs `f` under `catch_unwind` and reports its outcome through the return code and `err`.
fn guard(err: *mut c_char, err_len: usize, f: impl FnOnce() -> Result<(), Refused>) -> i32 {
    let (code, msg) = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => return OK,
        Ok(Err(Refused(m))) => (INVALID, m),
        Err(p) => (
            INTERNAL,
            format!("ditac: internal error (panic): {}", panic_message(&*p)),
        ),
    };
    if !err.is_null() && err_len > 0 {
        let bytes = msg.as_bytes();
        let n = bytes.len().min(err_len - 1);
        // SAFETY: the caller gives `err_len` writable bytes at `err`.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), err.cast::<u8>(), n);
            *err.add(n) = 0;
        }
    }
    code
}

/// A slice from a caller's pointer and length (`what` names it in errors).
///
/// # Safety
/// `ptr` must be valid for `len` reads (or null, which is refused).
unsafe fn input<'a, T>(ptr: *const T, len: usize, what: &str) -> Result<&'a [T], Refused> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return refuse(format!("{what} is a null pointer"));
    }
    Ok(std::slice::from_raw_parts(ptr, len))
}

/// A mutable slice over a caller's buffer of `len` elements that must hold exactly `want`.
///
/// # Safety
/// `ptr` must be valid for `len` writes (or null, which is refused).
unsafe fn output<'a, T>(
    ptr: *mut T,
    len: usize,
    want: usize,
    what: &str,
) -> Result<&'a mut [T], Refused> {
    if len != want {
        return refuse(format!("{what} has {len} elements: expected {want}"));
    }
    if want == 0 {
        return Ok(&mut []);
    }
    if ptr.is_null() {
        return refuse(format!("{what} is a null pointer"));
    }
    Ok(std::slice::from_raw_parts_mut(ptr, len))
}

fn tessellation(tess: i64, zero_boundary: i32) -> Result<(usize, bool, usize), Refused> {
    if !(1..=MAX_TESS).contains(&tess) {
        return refuse(format!(
            "tess = {tess}: expected an integer in 1..={MAX_TESS}"
        ));
    }
    if zero_boundary != 0 && zero_boundary != 1 {
        return refuse(format!("zero_boundary = {zero_boundary}: expected 0 or 1"));
    }
    let (tess, zb) = (tess as usize, zero_boundary == 1);
    Ok((tess, zb, basis::theta_len(tess, zb)))
}

/// [`tessellation`] for a caller that also gives d: refused unless it is the tessellation's.
fn tessellation_of(tess: i64, zero_boundary: i32, d: usize) -> Result<(usize, bool), Refused> {
    let (t, zb, want_d) = tessellation(tess, zero_boundary)?;
    if d != want_d {
        return refuse(format!("d = {d}: tess {tess} expects {want_d}"));
    }
    Ok((t, zb))
}

/// B [2·tess, d] from the caller, checked as the plugin checks an input B.
///
/// # Safety
/// `b` must be valid for `2·tess·d` reads.
unsafe fn given_basis(
    tess: usize,
    zero_boundary: bool,
    d: usize,
    b: *const f32,
) -> Result<Basis, Refused> {
    let data = input(b, 2 * tess * d, "B")?;
    Ok(basis::explicit(tess, zero_boundary, data, 2 * tess, d)?)
}

/// The API version ([`VERSION`]).
#[no_mangle]
pub extern "C" fn ditac_capi_version() -> u32 {
    VERSION
}

/// The basis B (float32 [2·tess, d], d = tess − 1 with zero boundary, else tess + 1) that
/// `kind` (`"qr"`, `"rref"` or `"sparse"`) builds, as the plugin builds it.
///
/// # Safety
/// `kind` is a NUL-terminated string; `out` holds `out_len` floats; `err` holds `err_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn ditac_basis(
    tess: i64,
    zero_boundary: i32,
    kind: *const c_char,
    out: *mut f32,
    out_len: usize,
    err: *mut c_char,
    err_len: usize,
) -> i32 {
    guard(err, err_len, || {
        let (tess, zb, d) = tessellation(tess, zero_boundary)?;
        if kind.is_null() {
            return refuse("kind is a null pointer");
        }
        let kind = CStr::from_ptr(kind).to_string_lossy();
        let kind: BasisKind = kind.parse()?;
        let b = basis::build(tess, zb, kind)?;
        let out = output(out, out_len, 2 * tess * d, "out")?;
        out.copy_from_slice(&b.to_f32());
        Ok(())
    })
}

/// The regulariser's precision matrix P (float64 [d, d], ditac.md §8) of the basis B.
///
/// # Safety
/// `b` holds `2·tess·d` floats, `out` `out_len` doubles, `err` `err_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn ditac_precision_matrix(
    tess: i64,
    zero_boundary: i32,
    b: *const f32,
    d: usize,
    lambda_smooth: f64,
    lambda_var: f64,
    out: *mut f64,
    out_len: usize,
    err: *mut c_char,
    err_len: usize,
) -> i32 {
    guard(err, err_len, || {
        let (tess, zb) = tessellation_of(tess, zero_boundary, d)?;
        for (name, v) in [("lambda_smooth", lambda_smooth), ("lambda_var", lambda_var)] {
            if !(v.is_finite() && v > 0.0) {
                return refuse(format!("{name} = {v}: expected a positive number"));
            }
        }
        let basis = given_basis(tess, zb, d, b)?;
        let out = output(out, out_len, d * d, "out")?;
        if d > 0 {
            let p = prior::precision_matrix(&basis, lambda_smooth, lambda_var);
            if p.iter().any(|v| !v.is_finite()) {
                return refuse("the precision matrix is not finite (Bᵀ C B is singular)");
            }
            out.copy_from_slice(&p);
        }
        Ok(())
    })
}

/// The covariance Σ_init (float64 [d, d], ditac.md §9) θ is initialised from.
///
/// # Safety
/// `b` holds `2·tess·d` floats, `out` `out_len` doubles, `err` `err_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn ditac_init_covariance(
    tess: i64,
    zero_boundary: i32,
    b: *const f32,
    d: usize,
    length_scale: f64,
    output_variance: f64,
    out: *mut f64,
    out_len: usize,
    err: *mut c_char,
    err_len: usize,
) -> i32 {
    guard(err, err_len, || {
        let (tess, zb) = tessellation_of(tess, zero_boundary, d)?;
        if !(length_scale.is_finite() && length_scale > 0.0) {
            return refuse(format!(
                "lambda_smooth_init = {length_scale}: expected a positive number"
            ));
        }
        if !output_variance.is_finite() {
            return refuse(format!(
                "lambda_var_init = {output_variance}: expected a finite number"
            ));
        }
        let basis = given_basis(tess, zb, d, b)?;
        let out = output(out, out_len, d * d, "out")?;
        if d > 0 {
            out.copy_from_slice(&prior::init_covariance(
                tess,
                &basis,
                length_scale,
                output_variance,
            ));
        }
        Ok(())
    })
}

/// The tables of θ in the basis B on the `n` nodes g_i = linspace(0, 1, n)[i] (ditac.md §6), as
/// the plugin builds them: T̂(g_i) into `t` [n] (the normalised domain: the reference's
/// `lingrid_t`), and, when `dt` and `dtheta` are not null, dT̂/du(g_i) into `dt` [n] and
/// dT̂/dθ(g_i) into `dtheta` [n, d]. The memory budget (`DITAC_MAX_BYTES`, default 1 GiB) bounds
/// the tables built on the way.
///
/// # Safety
/// `b` holds `2·tess·d` floats, `theta` `d`; `t` and `dt` hold `n` floats, `dtheta` `n·d`;
/// `err` holds `err_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn ditac_tables(
    tess: i64,
    zero_boundary: i32,
    b: *const f32,
    d: usize,
    theta: *const f32,
    n: i64,
    t: *mut f32,
    dt: *mut f32,
    dtheta: *mut f32,
    err: *mut c_char,
    err_len: usize,
) -> i32 {
    guard(err, err_len, || {
        let (tess_u, zb) = tessellation_of(tess, zero_boundary, d)?;
        if !(2..=MAX_LUT).contains(&n) {
            return refuse(format!("n = {n}: expected a node count in 2..={MAX_LUT}"));
        }
        let with_grad = match (dt.is_null(), dtheta.is_null()) {
            (true, true) => false,
            (false, false) => true,
            _ => return refuse("dt and dtheta: give both or neither"),
        };
        let attrs = Attrs {
            a: 0.0,
            b: 1.0,
            tess,
            zero_boundary: zero_boundary as i64,
            basis: BasisKind::Explicit,
            variant: Variant::Ditac,
            lut_size: n,
            interpolation: Interpolation::Nearest,
            ..Attrs::default()
        };
        let limit = budget::from_env().map_err(Refused)?;
        budget::check(
            "the DiTAC tables",
            Activation::<f32>::table_bytes(&attrs, d, with_grad),
            limit,
        )?;
        let basis = given_basis(tess_u, zb, d, b)?;
        let theta = input(theta, d, "theta")?;
        let act = Activation::<f32>::from_theta(&attrs, &basis, theta, with_grad)?;
        let parts = act
            .table_parts()
            .expect("a warp with lut_size > 0 has a table");
        let values = act.table_values().expect("a table warp has its values");
        let n = n as usize;
        output(t, n, n, "t")?.copy_from_slice(values);
        if with_grad {
            output(dt, n, n, "dt")?.copy_from_slice(parts.dt);
            output(dtheta, n * d, n * d, "dtheta")?.copy_from_slice(parts.dtheta);
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ptr;

    fn message(buf: &[c_char]) -> String {
        // SAFETY: `guard` NUL-terminates what it writes; the buffer starts zeroed.
        unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn tables_match_the_core() {
        let (tess, d, n) = (10i64, 9usize, 64usize);
        let mut b = vec![0f32; 20 * d];
        let mut err = vec![0 as c_char; 256];
        let rc = unsafe {
            ditac_basis(
                tess,
                1,
                c"qr".as_ptr(),
                b.as_mut_ptr(),
                b.len(),
                err.as_mut_ptr(),
                err.len(),
            )
        };
        assert_eq!(rc, OK, "{}", message(&err));
        let theta: Vec<f32> = (0..d).map(|k| 0.3 * (k as f32 - 4.0)).collect();
        let (mut t, mut dt, mut dth) = (vec![0f32; n], vec![0f32; n], vec![0f32; n * d]);
        let rc = unsafe {
            ditac_tables(
                tess,
                1,
                b.as_ptr(),
                d,
                theta.as_ptr(),
                n as i64,
                t.as_mut_ptr(),
                dt.as_mut_ptr(),
                dth.as_mut_ptr(),
                err.as_mut_ptr(),
                err.len(),
            )
        };
        assert_eq!(rc, OK, "{}", message(&err));
        let basis = basis::build(10, true, BasisKind::Qr).unwrap();
        let mut field = crate::core::cpa::Field::<f32>::new(10, &basis.to_f32(), d, &theta);
        field.pin_zero_boundary();
        let table = crate::core::table::Table::build(&field, n, true);
        assert_eq!(t, table.t);
        assert_eq!(dt, table.dt);
        assert_eq!(dth, table.dtheta);
        assert_eq!((t[0], t[n - 1]), (0.0, 1.0));
    }

    #[test]
    fn refusals_are_messages() {
        let mut err = vec![0 as c_char; 256];
        let mut out = vec![0f32; 4];
        let rc = unsafe {
            ditac_basis(
                10,
                1,
                c"svd".as_ptr(),
                out.as_mut_ptr(),
                out.len(),
                err.as_mut_ptr(),
                err.len(),
            )
        };
        assert_eq!(rc, INVALID);
        assert!(message(&err).contains("basis"), "{}", message(&err));
        // A wrong output size, and a truncated message buffer.
        let mut short = vec![0 as c_char; 8];
        let rc = unsafe {
            ditac_basis(
                10,
                1,
                c"qr".as_ptr(),
                out.as_mut_ptr(),
                out.len(),
                short.as_mut_ptr(),
                short.len(),
            )
        };
        assert_eq!(rc, INVALID);
        assert_eq!(message(&short), "out has");
        // θ whose field is not representable, and a B that breaks the constraints.
        let d = 3;
        let b = vec![1f32; 8 * d];
        let theta = vec![0f32; d];
        let mut t = vec![0f32; 16];
        let rc = unsafe {
            ditac_tables(
                4,
                1,
                b.as_ptr(),
                d,
                theta.as_ptr(),
                16,
                t.as_mut_ptr(),
                ptr::null_mut(),
                ptr::null_mut(),
                err.as_mut_ptr(),
                err.len(),
            )
        };
        assert_eq!(rc, INVALID);
        assert!(
            message(&err).contains("violates constraint"),
            "{}",
            message(&err)
        );
        let rc = unsafe {
            ditac_tables(
                4,
                1,
                b.as_ptr(),
                d,
                theta.as_ptr(),
                1,
                t.as_mut_ptr(),
                ptr::null_mut(),
                ptr::null_mut(),
                err.as_mut_ptr(),
                err.len(),
            )
        };
        assert_eq!(rc, INVALID);
        assert!(message(&err).contains("n = 1"), "{}", message(&err));
    }
}
