"""The example models through ONNX Runtime's CUDA provider with the plugin, against the CPU
provider. Skips (exit 0) when this onnxruntime has no CUDA provider (the PyPI `onnxruntime`
wheel is CPU-only; `onnxruntime-gpu` 1.31.1 is built for CUDA 13).

Usage: python3 tests/gpu/ort_cuda.py target/release/libditac.so"""
import glob
import json
import os
import sys
import tempfile
import threading

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
    fails += two_sessions_at_once(plugin, rng)
    return 1 if fails else 0


def two_sessions_at_once(plugin, rng):
    """Two CUDA sessions of one model (two ORT compute streams), whose first runs start together
    from two threads: each uploads its constant tables on its own stream while the other runs.
    Both must match the CPU provider. Returns the number of failures."""
    model = sorted(glob.glob("models/*.onnx"))[0]
    cpu = session(model, plugin, ["CPUExecutionProvider"])
    feeds = {}
    for i in cpu.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 << 20 for d in i.shape]
        feeds[i.name] = (rng.standard_normal(shape) * 1.5).astype(np.float32)
    want = cpu.run(None, feeds)
    cuda = ("CUDAExecutionProvider", {"use_tf32": "0"})
    sessions = [session(model, plugin, [cuda, "CPUExecutionProvider"]) for _ in range(2)]
    start = threading.Barrier(2)
    got = [None, None]

    def run(k):
        start.wait()
        try:
            got[k] = sessions[k].run(None, feeds)
        except Exception as e:  # reported below
            got[k] = e

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    fails = 0
    for k, g in enumerate(got):
        if isinstance(g, Exception):
            print(f"{model}: two sessions at once: session {k} failed: {g} FAIL")
            fails += 1
            continue
        rel = max(float(np.max(np.abs(w - o) / np.maximum(np.abs(w), 1e-6))) for w, o in zip(want, g))
        ok = rel <= 1e-4
        fails += not ok
        print(f"{model}: two sessions at once, session {k}: max rel diff vs CPU {rel:.2e} {'ok' if ok else 'FAIL'}")
    return fails


if __name__ == "__main__":
    sys.exit(main())
