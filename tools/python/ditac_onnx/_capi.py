"""ctypes binding of the C API of ``libditac.so`` (``src/capi.rs``): the basis B, the prior matrices and
the tables of T̂, dT̂/du and dT̂/dθ, from the project's Rust core (the same code the ONNX Runtime plugin
runs). Needs numpy only; ``ditac_onnx.torch.DiTAC`` calls it for its tables.

The library is the one the package ships (``ditac_onnx.get_library_path()``), or the file named by the
environment variable ``DITAC_PLUGIN`` when it is set (a source checkout: ``target/release/libditac.so``).
"""

from __future__ import annotations

import ctypes
import os
import threading

import numpy as np

API_VERSION = 1
_ERR_LEN = 1024

_c_float_p = ctypes.POINTER(ctypes.c_float)
_c_double_p = ctypes.POINTER(ctypes.c_double)
_lock = threading.Lock()
_lib = None


class DitacLibraryError(RuntimeError):
    """The library cannot be found or loaded, or lacks the C API."""


def library_path() -> str:
    env = os.environ.get("DITAC_PLUGIN")
    if env:
        return env
    from . import get_library_path

    try:
        return get_library_path()
    except FileNotFoundError as e:
        raise DitacLibraryError(
            f"{e}; or set DITAC_PLUGIN to a built libditac.so (cargo build --release: target/release/libditac.so)"
        ) from None


def _load():
    global _lib
    with _lock:
        if _lib is not None:
            return _lib
        path = library_path()
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            raise DitacLibraryError(f"cannot load {path}: {e}") from None
        try:
            version = lib.ditac_capi_version
        except AttributeError:
            raise DitacLibraryError(
                f"{path} has no C API (ditac_capi_version): it is older than this ditac_onnx; rebuild it"
            ) from None
        version.restype = ctypes.c_uint32
        version.argtypes = []
        if version() != API_VERSION:
            raise DitacLibraryError(
                f"{path} has C API version {version()}; this ditac_onnx needs {API_VERSION}"
            )
        err = (ctypes.c_char_p, ctypes.c_size_t)
        sig = {
            "ditac_basis": (ctypes.c_int64, ctypes.c_int32, ctypes.c_char_p, _c_float_p, ctypes.c_size_t, *err),
            "ditac_precision_matrix": (
                ctypes.c_int64, ctypes.c_int32, _c_float_p, ctypes.c_size_t, ctypes.c_double, ctypes.c_double,
                _c_double_p, ctypes.c_size_t, *err,
            ),
            "ditac_init_covariance": (
                ctypes.c_int64, ctypes.c_int32, _c_float_p, ctypes.c_size_t, ctypes.c_double, ctypes.c_double,
                _c_double_p, ctypes.c_size_t, *err,
            ),
            "ditac_tables": (
                ctypes.c_int64, ctypes.c_int32, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_int64,
                ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, *err,
            ),
        }
        for name, args in sig.items():
            f = getattr(lib, name)
            f.argtypes = list(args)
            f.restype = ctypes.c_int32
        _lib = lib
        return lib


def _call(name: str, *args) -> None:
    lib = _load()
    buf = ctypes.create_string_buffer(_ERR_LEN)
    rc = getattr(lib, name)(*args, buf, _ERR_LEN)
    if rc != 0:
        msg = buf.value.decode("utf-8", "replace")
        raise (ValueError if rc == 1 else RuntimeError)(msg)


def theta_len(tess: int, zero_boundary: bool = True) -> int:
    return tess - 1 if zero_boundary else tess + 1


def _f32(a, shape) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.float32)
    if a.shape != shape:
        raise ValueError(f"has shape {list(a.shape)}: expected {list(shape)}")
    return a


def basis(tess: int, kind: str = "qr", zero_boundary: bool = True) -> np.ndarray:
    """B, float32 [2·tess, d], as the plugin builds it for ``kind`` (qr, rref or sparse)."""
    d = theta_len(tess, zero_boundary)
    out = np.empty((2 * tess, d), np.float32)
    _call("ditac_basis", tess, int(zero_boundary), kind.encode(), out.ctypes.data_as(_c_float_p), out.size)
    return out


def _d_by_d(symbol: str, B, tess: int, zero_boundary: bool, a: float, b: float) -> np.ndarray:
    """A float64 [d, d] matrix of the basis B from the C API's ``symbol`` (same signature for both)."""
    d = theta_len(tess, zero_boundary)
    B = _f32(B, (2 * tess, d))
    out = np.empty((d, d), np.float64)
    _call(
        symbol, tess, int(zero_boundary), B.ctypes.data_as(_c_float_p), d,
        float(a), float(b), out.ctypes.data_as(_c_double_p), out.size,
    )
    return out


def precision_matrix(B, tess: int, lambda_smooth: float, lambda_var: float, zero_boundary: bool = True) -> np.ndarray:
    """The regulariser's P (float64 [d, d], ditac.md §8) of the basis B."""
    return _d_by_d("ditac_precision_matrix", B, tess, zero_boundary, lambda_smooth, lambda_var)


def init_covariance(B, tess: int, length_scale: float, output_variance: float, zero_boundary: bool = True) -> np.ndarray:
    """Σ_init (float64 [d, d], ditac.md §9), the covariance θ is drawn from."""
    return _d_by_d("ditac_init_covariance", B, tess, zero_boundary, length_scale, output_variance)


def tables_into(tess: int, zero_boundary: bool, b_ptr: int, d: int, theta_ptr: int, n: int,
                t_ptr: int, dt_ptr: int | None = None, dtheta_ptr: int | None = None) -> None:
    """Fills caller-owned float32 buffers (addresses, C-contiguous): T̂ [n], and with ``dt_ptr`` and
    ``dtheta_ptr`` dT̂/du [n] and dT̂/dθ [n, d], for θ [d] in the basis B [2·tess, d]."""
    _call("ditac_tables", tess, int(zero_boundary), b_ptr, d, theta_ptr, n, t_ptr, dt_ptr, dtheta_ptr)


def tables(theta, B, tess: int, n: int = 2048, with_grad: bool = False, zero_boundary: bool = True):
    """T̂ at linspace(0, 1, n) (float32 [n]); with ``with_grad`` also dT̂/du [n] and dT̂/dθ [n, d]."""
    d = theta_len(tess, zero_boundary)
    theta = _f32(np.asarray(theta).reshape(-1), (d,))
    B = _f32(B, (2 * tess, d))
    t = np.empty(n, np.float32)
    if not with_grad:
        tables_into(tess, zero_boundary, B.ctypes.data, d, theta.ctypes.data, n, t.ctypes.data)
        return t
    dt, dth = np.empty(n, np.float32), np.empty((n, d), np.float32)
    tables_into(tess, zero_boundary, B.ctypes.data, d, theta.ctypes.data, n, t.ctypes.data, dt.ctypes.data, dth.ctypes.data)
    return t, dt, dth
