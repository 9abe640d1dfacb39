"""The execution provider that the Triton Python-backend model (tools/triton/model.py) picks for
an instance: ONNX Runtime's CUDA provider on the instance's GPU for a GPU instance, the CPU
otherwise (and, with a warning in Triton's log, when the installed onnxruntime has no CUDA
provider). Triton and onnxruntime are stand-ins here: only the choice is under test (a real
server runs the CPU path in test_triton.py; no GPU has run the CUDA path)."""

import importlib.util
import pathlib
import sys
import types

MODEL_PY = pathlib.Path(__file__).resolve().parents[2] / "tools" / "triton" / "model.py"


def load(available):
    logs = []
    pb = types.ModuleType("triton_python_backend_utils")
    pb.Logger = types.SimpleNamespace(log_warn=logs.append)
    ort = types.ModuleType("onnxruntime")
    ort.get_available_providers = lambda: list(available)
    saved = {k: sys.modules.get(k) for k in ("triton_python_backend_utils", "onnxruntime")}
    sys.modules.update(triton_python_backend_utils=pb, onnxruntime=ort)
    try:
        spec = importlib.util.spec_from_file_location("ditac_triton_model", MODEL_PY)
        m = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(m)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return m.TritonPythonModel.providers, logs


def test_cpu_instances_run_on_the_cpu():
    providers, logs = load(["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert providers({"model_instance_kind": "CPU", "model_instance_device_id": "0"}) == ["CPUExecutionProvider"]
    assert providers({}) == ["CPUExecutionProvider"]
    assert logs == []


def test_gpu_instances_use_cuda_on_their_device():
    providers, logs = load(["CUDAExecutionProvider", "CPUExecutionProvider"])
    got = providers({"model_instance_kind": "GPU", "model_instance_device_id": "3"})
    assert got == [("CUDAExecutionProvider", {"device_id": 3}), "CPUExecutionProvider"]
    assert logs == []


def test_gpu_instance_without_cuda_provider_says_so_and_uses_the_cpu():
    providers, logs = load(["CPUExecutionProvider"])
    got = providers({"model_instance_kind": "GPU", "model_instance_device_id": "1"})
    assert got == ["CPUExecutionProvider"]
    assert len(logs) == 1 and "device 1" in logs[0] and "CUDAExecutionProvider" in logs[0]
