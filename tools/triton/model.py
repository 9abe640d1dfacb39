"""Triton Python-backend model: an ONNX Runtime session with the DiTAC plugin.

Written into a model repository by `ditac triton` (next to `model.onnx` in the version folder).
Everything it needs comes from `config.pbtxt`: the inputs and outputs (names, types, dims), the
batching, and the parameters `ditac_plugin` (the plugin library, relative to the model folder unless
absolute) and `intra_op_threads`. Each Triton instance of the model is its own stub process with
its own session. An instance Triton places on a GPU (`instance_group { kind: KIND_GPU }`) runs
its session on ONNX Runtime's CUDA provider on that GPU (`model_instance_device_id`), where the
plugin's CUDA kernels run the DiTAC nodes; a CPU instance, or an `onnxruntime` without the CUDA
provider (said in Triton's log), runs on the CPU. Requests that the dynamic batcher hands over together run as one batch (concatenated
on axis 0) and are split again; an error inside ONNX Runtime answers every request of that batch
with ONNX Runtime's message, and the model keeps serving.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        model_dir = os.path.join(args["model_repository"], args["model_version"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}

        plugin = params.get("ditac_plugin", "libditac.so")
        if not os.path.isabs(plugin):
            plugin = os.path.join(args["model_repository"], plugin)
        threads = int(params.get("intra_op_threads", "1"))

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.register_custom_ops_library(plugin)
        providers = self.providers(args)
        # ONNX Runtime's own message (the plugin names node, op, attribute and value) becomes
        # the load error in Triton's log.
        self.session = ort.InferenceSession(os.path.join(model_dir, "model.onnx"), so, providers=providers)
        self.batching = config.get("max_batch_size", 0) > 0
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        self.output_dtypes = {
            o["name"]: pb_utils.triton_string_to_numpy(o["data_type"]) for o in config["output"]
        }

    @staticmethod
    def providers(args):
        """ONNX Runtime's CUDA provider on the instance's GPU for a GPU instance, else the CPU."""
        if args.get("model_instance_kind", "CPU") != "GPU":
            return ["CPUExecutionProvider"]
        device = int(args.get("model_instance_device_id", "0"))
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            pb_utils.Logger.log_warn(
                f"ditac: a GPU instance (device {device}), but this onnxruntime has no "
                "CUDAExecutionProvider (install onnxruntime-gpu): running on the CPU"
            )
            return ["CPUExecutionProvider"]
        return [("CUDAExecutionProvider", {"device_id": device}), "CPUExecutionProvider"]

    def execute(self, requests):
        feeds = []
        for request in requests:
            feeds.append({n: pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.inputs})
        try:
            if self.batching and len(requests) > 1:
                sizes = [f[self.inputs[0]].shape[0] for f in feeds]
                merged = {n: np.concatenate([f[n] for f in feeds], axis=0) for n in self.inputs}
                results = self.session.run(self.outputs, merged)
                bounds = np.cumsum(sizes)[:-1]
                per_request = [list(parts) for parts in zip(*(np.split(r, bounds, axis=0) for r in results))]
            else:
                per_request = [self.session.run(self.outputs, f) for f in feeds]
        except Exception as e:  # ONNX Runtime's errors: answer them, keep serving
            error = pb_utils.TritonError(f"ONNX Runtime: {e}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]

        responses = []
        for values in per_request:
            tensors = [
                pb_utils.Tensor(n, np.ascontiguousarray(v, dtype=self.output_dtypes[n]))
                for n, v in zip(self.outputs, values)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses

    def finalize(self):
        self.session = None
