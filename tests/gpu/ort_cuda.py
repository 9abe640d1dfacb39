"""The example models through ONNX Runtime's CUDA provider with the plugin, against the CPU
provider. Skips (exit 0) when this onnxruntime has no CUDA provider (the PyPI `onnxruntime`
wheel is CPU-only; `onnxruntime-gpu` 1.31.1 is built for CUDA 13).

Usage: python3 tests/gpu/ort_cuda.py target/release/libditac.so"""
import glob
import json
import os
import sys
import tempfile

import numpy as np
import onnxruntime as ort


def session(model, plugin, providers, profile=None):
    so = ort.SessionOptions()
    so.register_custom_ops_library(plugin)
    if profile:
        so.enable_profiling = True
        so.profile_file_prefix = profile
    return ort.InferenceSession(model, so, providers=providers)


def main():
    plugin = sys.argv[1]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        print(f"ORT CUDA provider: not available in onnxruntime {ort.__version__}: skipped")
        return 0
    rng = np.random.default_rng()
    fails = 0
    for model in sorted(glob.glob("models/*.onnx")):
        cpu = session(model, plugin, ["CPUExecutionProvider"])
        feeds = {}
        for i in cpu.get_inputs():
            shape = [d if isinstance(d, int) and d > 0 else 4096 for d in i.shape]
            feeds[i.name] = (rng.standard_normal(shape) * 1.5).astype(np.float32)
        want = cpu.run(None, feeds)
        prefix = os.path.join(tempfile.mkdtemp(), "prof")
        # No TF32 in the matrix products: the comparison is about the DiTAC nodes.
        cuda = ("CUDAExecutionProvider", {"use_tf32": "0"})
        gpu = session(model, plugin, [cuda, "CPUExecutionProvider"], prefix)
        got = gpu.run(None, feeds)
        prof = gpu.end_profiling()
        placed = set()
        with open(prof) as f:
            for ev in json.load(f):
                a = ev.get("args", {})
                if a.get("op_name", "").startswith("DiTAC"):
                    placed.add((a["op_name"], a.get("provider")))
        for w, g in zip(want, got):
            rel = float(np.max(np.abs(w - g) / np.maximum(np.abs(w), 1e-6)))
            ok = rel <= 1e-4
            fails += not ok
            print(f"{model}: max rel diff CUDA vs CPU {rel:.2e} {'ok' if ok else 'FAIL'}; DiTAC nodes on {sorted(placed)}")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
