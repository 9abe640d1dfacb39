"""DiTAC activations for ONNX Runtime.

``get_library_path()`` is the ``ai.ditac`` custom-op library to register with ONNX Runtime;
``session_options()`` returns ``onnxruntime.SessionOptions`` with it registered;
``ditac_onnx.torch.export`` exports PyTorch models that hold DiTAC modules (needs torch).
The ``ditac`` command (build, patch, freeze, lower, inspect, ...) comes with the package.
"""

from importlib import metadata as _metadata
from pathlib import Path as _Path

try:
    __version__ = _metadata.version("ditac-onnx")
except _metadata.PackageNotFoundError:  # imported from a source checkout
    __version__ = "0.0.0+source"

_LIBRARY = _Path(__file__).resolve().parent / "libditac.so"

__all__ = ["__version__", "get_library_path", "session_options"]

# What to install when no ONNX Runtime is there: the package leaves the choice to the user, because
# requiring `onnxruntime` would install the CPU build beside an `onnxruntime-gpu` (one import name).
_NO_RUNTIME = (
    "ditac-onnx needs ONNX Runtime (>= 1.17), and this environment has none: "
    "pip install 'ditac-onnx[cpu]' (onnxruntime) or 'ditac-onnx[gpu]' (onnxruntime-gpu), "
    "or install the ONNX Runtime build of your choice"
)


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as e:
        raise ImportError(_NO_RUNTIME) from e
    return onnxruntime


def get_library_path() -> str:
    """The absolute path of ``libditac.so``, for ``SessionOptions.register_custom_ops_library``."""
    if not _LIBRARY.is_file():
        raise FileNotFoundError(
            f"{_LIBRARY} is missing: this ditac_onnx is a source checkout without the built library "
            "(install the wheel, or run tools/build-wheel.sh)"
        )
    return str(_LIBRARY)


def session_options(options=None):
    """``onnxruntime.SessionOptions`` (``options``, or new ones) with the ai.ditac library registered."""
    onnxruntime = _onnxruntime()
    so = options if options is not None else onnxruntime.SessionOptions()
    so.register_custom_ops_library(get_library_path())
    return so
