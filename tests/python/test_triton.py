"""DiTAC models behind a real Triton Inference Server.

The server is the `tritonserver` 2.51.0 of PyPI's nvidia-pytriton==0.7.0 (CPU only, Python backend),
started by `tools/triton/serve.sh` on free loopback ports chosen at run time, with a model
repository written by `ditac triton`: the example MLP, a small DiTAC CNN built by `ditac build`, and
a copy of the MLP with an invalid DiTAC attribute. Checked, over HTTP and gRPC with `tritonclient`:
the outputs equal in-process ONNX Runtime with the plugin bit for bit (non-finite inputs included,
as ops.md defines them); bad requests get Triton's errors and the server keeps serving; the bad
model fails its load with the plugin's message in Triton's log while the others serve; the native
onnxruntime-backend config is accepted by Triton's parser; SIGTERM stops the server cleanly.

Needs .venv-triton (tools/setup.sh); skipped elsewhere unless DITAC_REQUIRE_TRITON=1 (tools/test.sh
sets it, so there a missing server is a failure).
Run: .venv-triton/bin/python -m pytest -q tests/python/test_triton.py
"""
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

if os.environ.get("DITAC_REQUIRE_TRITON") != "1":
    pytest.importorskip("tritonclient.http")
    pytest.importorskip("tritonclient.grpc")
    pytest.importorskip("onnx")
import onnx  # noqa: E402
import onnx.numpy_helper  # noqa: E402
import onnxruntime as ort  # noqa: E402
import tritonclient.grpc as grpcclient  # noqa: E402
import tritonclient.http as httpclient  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from conftest import DITAC, PLUGIN, ROOT  # noqa: E402
SERVE = ROOT / "tools/triton/serve.sh"
STARTUP_TIMEOUT_S = 180  # three Python-backend stubs loading ONNX Runtime on a busy 2-core machine
STOP_TIMEOUT_S = 60
MAX_BATCH = 16

CNN_SPEC = """
name = "cnn"
input = [3, 12, 12]
[[layers]]
type = "conv2d"
out = 6
kernel = 3
padding = 1
[[layers]]
type = "ditac"
a = -3.0
b = 3.0
[[layers]]
type = "conv2d"
out = 4
kernel = 3
stride = 2
[[layers]]
type = "ditac"
a = -2.0
b = 2.0
per_channel = true
variant = "ge"
[[layers]]
type = "flatten"
[[layers]]
type = "linear"
out = 5
"""


def ditac(*args):
    assert DITAC.exists(), f"{DITAC} not found: run `cargo build --release` first"
    r = subprocess.run([str(DITAC), *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, f"ditac {args}: {r.stderr}"
    return r.stdout


def free_ports(n):
    """Ports the kernel hands out now (bound together so they differ), released for the server."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def die_with_parent():
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def session(path):
    so = ort.SessionOptions()
    so.register_custom_ops_library(str(PLUGIN))
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def bits(a):
    a = np.ascontiguousarray(a)
    return a.view({4: np.uint32, 8: np.uint64, 2: np.uint16}[a.dtype.itemsize])


class Server:
    def __init__(self, repo, workdir):
        self.repo = repo
        self.log_path = workdir / "tritonserver.log"
        self.http_port, self.grpc_port, self.metrics_port = free_ports(3)
        self.proc = None

    def start(self, models):
        self.log_file = open(self.log_path, "wb")
        cmd = ["bash", str(SERVE), str(self.repo),
               "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port),
               "--metrics-port", str(self.metrics_port), "--models", ",".join(models),
               # The invalid model must not stop the server: the others serve.
               "--", "--exit-on-error=false"]
        # Its own process group: whatever is left of it can be killed without touching others.
        # serve.sh execs tritonserver, which inherits a parent-death signal: if this test process
        # dies without stopping it, the server gets SIGTERM and does not outlive it.
        self.proc = subprocess.Popen(cmd, stdout=self.log_file, stderr=subprocess.STDOUT,
                                     start_new_session=True, preexec_fn=die_with_parent)

    def log(self):
        if not self.log_file.closed:
            self.log_file.flush()
        return self.log_path.read_text(errors="replace")

    def tail(self, n=60):
        return "\n".join(self.log().splitlines()[-n:])

    def wait_ready(self, models):
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tritonserver exited with {self.proc.returncode}:\n{self.tail()}")
            client = httpclient.InferenceServerClient(f"127.0.0.1:{self.http_port}")
            try:
                if client.is_server_live() and all(client.is_model_ready(m) for m in models):
                    return
            except Exception:  # not listening yet
                pass
            finally:
                client.close()
            time.sleep(0.5)
        raise RuntimeError(f"tritonserver not ready after {STARTUP_TIMEOUT_S} s:\n{self.tail()}")

    def stop(self):
        """SIGTERM (Triton's clean shutdown), SIGKILL if it hangs; then whatever is left of its
        process group (stub processes of a server that died while loading). The exit code."""
        if self.proc is None:
            return None
        code = self.proc.poll()
        if code is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                code = "killed"
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # the group is empty: the usual case
            pass
        if not self.log_file.closed:
            self.log_file.close()
        return code


@pytest.fixture(scope="module")
def env(tmp_path_factory, request):
    work = tmp_path_factory.mktemp("triton")
    repo = work / "repo"
    mlp = ROOT / "models/ditac_mlp.onnx"
    ditac("triton", mlp, "-o", repo, "--max-batch", MAX_BATCH, "--preferred-batch", "4,16")
    (work / "cnn.toml").write_text(CNN_SPEC)
    cnn = work / "cnn.onnx"
    ditac("build", work / "cnn.toml", "--seed", 5, "-o", cnn)
    ditac("triton", cnn, "-o", repo, "--name", "ditac_cnn", "--max-batch", MAX_BATCH, "--instances", 2)

    # The MLP with a > b in its first DiTAC node: the plugin refuses it when the session is made.
    bad = onnx.load(str(mlp))
    node = next(n for n in bad.graph.node if n.op_type == "DiTAC")
    next(a for a in node.attribute if a.name == "a").f = 5.0
    bad_path = work / "ditac_bad.onnx"
    onnx.save(bad, str(bad_path))
    ditac("triton", bad_path, "-o", repo, "--max-batch", MAX_BATCH)
    with pytest.raises(Exception) as e:
        session(bad_path)
    plugin_message = re.search(r"\[INVALID_ARGUMENT\] ([^\n\x1b]*)", str(e.value)).group(1)

    # The MLP with its first θ as a second graph input (no batching: θ is [d]): a NaN in θ passes
    # Triton's checks and is refused by the plugin at run time (ops.md).
    theta_model = onnx.load(str(mlp))
    node = next(n for n in theta_model.graph.node if n.op_type == "DiTAC")
    init = next(t for t in theta_model.graph.initializer if t.name == node.input[1])
    theta_value = onnx.numpy_helper.to_array(init).copy()
    theta_model.graph.initializer.remove(init)
    theta_model.graph.input.append(
        onnx.helper.make_tensor_value_info(init.name, onnx.TensorProto.FLOAT, list(init.dims)))
    theta_path = work / "ditac_theta.onnx"
    onnx.save(theta_model, str(theta_path))
    ditac("triton", theta_path, "-o", repo, "--max-batch", 0)

    good = ["ditac_mlp", "ditac_cnn", "ditac_theta"]
    server = Server(repo, work)
    failed_before = request.session.testsfailed
    server.start(good + ["ditac_bad"])
    conns = {}
    try:
        server.wait_ready(good)
        # One client per protocol for the module, closed before the server stops (open
        # connections hold Triton's shutdown until its exit timeout).
        conns["http"] = (httpclient, httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}"))
        conns["grpc"] = (grpcclient, grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}"))
        yield {
            "server": server,
            "clients": conns,
            "models": {"ditac_mlp": (mlp, session(mlp)), "ditac_cnn": (cnn, session(cnn)),
                       "ditac_theta": (theta_path, session(theta_path))},
            "theta": (init.name, theta_value),
            "plugin_message": plugin_message,
        }
    finally:
        for _, c in conns.values():
            c.close()
        server.stop()
        if request.session.testsfailed > failed_before:
            sys.__stderr__.write(f"\n--- tritonserver log (tail) ---\n{server.tail(120)}\n")


def infer(env, protocol, model, x, dtype="FP32", input_name="x", extra=()):
    """One request; `extra`: more (name, array) inputs."""
    mod, client = env["clients"][protocol]
    inputs = []
    for name, value, ty in [(input_name, x, dtype)] + [(n, v, "FP32") for n, v in extra]:
        inp = mod.InferInput(name, list(value.shape), ty)
        inp.set_data_from_numpy(value)
        inputs.append(inp)
    out = mod.InferRequestedOutput("y")
    return client.infer(model, inputs, outputs=[out]).as_numpy("y")


def sample_shape(model):
    return (2,) if model == "ditac_mlp" else (3, 12, 12)


def assert_serves(env, protocol, model="ditac_mlp"):
    """A valid request still gets the in-process answer."""
    x = np.random.default_rng(0).standard_normal((3, *sample_shape(model))).astype(np.float32)
    got = infer(env, protocol, model, x)
    want = env["models"][model][1].run(["y"], {"x": x})[0]
    assert np.array_equal(bits(got), bits(want)), env["server"].tail()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("model", ["ditac_mlp", "ditac_cnn"])
def test_outputs_equal_in_process_bit_for_bit(env, protocol, model):
    rng = np.random.default_rng(11)
    sess = env["models"][model][1]
    for batch in (1, 5, MAX_BATCH):
        x = (3 * rng.standard_normal((batch, *sample_shape(model)))).astype(np.float32)
        got = infer(env, protocol, model, x)
        want = sess.run(["y"], {"x": x})[0]
        assert got.dtype == want.dtype and got.shape == want.shape
        assert np.isfinite(want).all()
        assert np.array_equal(bits(got), bits(want)), f"batch {batch}: max |diff| {np.abs(got - want).max()}"


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_nonfinite_inputs_give_in_process_outputs(env, protocol):
    # ops.md: NaN gives NaN; ±∞ lie outside [a, b] and are not warped. Through the whole network
    # the server must give what ONNX Runtime gives in-process, to the bit.
    x = np.array([[np.nan, 0.5], [np.inf, 0.0], [-np.inf, 1.0], [1e30, -1e30], [0.25, -0.75]], np.float32)
    got = infer(env, protocol, "ditac_mlp", x)
    want = env["models"]["ditac_mlp"][1].run(["y"], {"x": x})[0]
    assert np.isnan(want[0]).all() and np.isfinite(want[4]).all()
    assert np.array_equal(bits(got), bits(want))
    xc = np.zeros((2, 3, 12, 12), np.float32)
    xc[0, 0, 0, 0], xc[0, 1, 5, 5], xc[1, 2, 3, 4] = np.nan, np.inf, -np.inf
    got = infer(env, protocol, "ditac_cnn", xc)
    want = env["models"]["ditac_cnn"][1].run(["y"], {"x": xc})[0]
    assert np.array_equal(bits(got), bits(want))


BAD_REQUESTS = {
    # name: (input array, Triton datatype, the message Triton must answer with)
    "wrong dtype": (np.zeros((2, 2), np.float64), "FP64", "data-type is 'FP64', but model 'ditac_mlp' expects 'FP32'"),
    "wrong shape": (np.zeros((2, 3), np.float32), "FP32", "unexpected shape for input 'x'"),
    "batch over the limit": (np.zeros((MAX_BATCH + 1, 2), np.float32), "FP32", "batch-size must be <= %d" % MAX_BATCH),
}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_requests_get_errors_and_the_server_keeps_serving(env, protocol, case):
    x, dtype, message = BAD_REQUESTS[case]
    with pytest.raises(InferenceServerException) as e:
        infer(env, protocol, "ditac_mlp", x, dtype=dtype)
    assert message in str(e.value), str(e.value)
    assert_serves(env, protocol)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_unknown_input_name_is_an_error(env, protocol):
    with pytest.raises(InferenceServerException) as e:
        infer(env, protocol, "ditac_mlp", np.zeros((1, 2), np.float32), input_name="z")
    assert "unexpected inference input 'z'" in str(e.value), str(e.value)
    assert_serves(env, protocol)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_empty_batch_is_refused(env, protocol):
    # Triton 2.51 refuses a request of zero samples before it reaches the model (it counts the
    # batch dimension 0 as a batch of one); the model itself would answer [0, 1] (ops.md allows an
    # empty X).
    with pytest.raises(InferenceServerException) as e:
        infer(env, protocol, "ditac_mlp", np.zeros((0, 2), np.float32))
    assert "input byte size mismatch for input 'x'" in str(e.value), str(e.value)
    assert_serves(env, protocol)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_runtime_error_inside_onnx_runtime_is_answered(env, protocol):
    name, theta = env["theta"]
    x = np.random.default_rng(4).standard_normal((3, 2)).astype(np.float32)
    got = infer(env, protocol, "ditac_theta", x, extra=[(name, theta)])
    want = env["models"]["ditac_theta"][1].run(["y"], {"x": x, name: theta})[0]
    assert np.array_equal(bits(got), bits(want))
    bad = theta.copy()
    bad[2] = np.nan
    with pytest.raises(InferenceServerException) as e:
        infer(env, protocol, "ditac_theta", x, extra=[(name, bad)])
    with pytest.raises(Exception) as in_process:
        env["models"]["ditac_theta"][1].run(["y"], {"x": x, name: bad})
    plugin_message = re.search(r"ai\.ditac\.DiTAC node [^\n\x1b]*", str(in_process.value)).group(0)
    assert "non-finite value NaN" in plugin_message
    assert plugin_message in str(e.value), f"{plugin_message!r} not in {e.value}"
    got = infer(env, protocol, "ditac_theta", x, extra=[(name, theta)])
    assert np.array_equal(bits(got), bits(want))
    assert_serves(env, protocol)


def test_invalid_model_fails_its_load_with_the_plugin_message(env):
    server = env["server"]
    assert not env["clients"]["http"][1].is_model_ready("ditac_bad")
    log = server.log()
    assert "failed to load 'ditac_bad'" in log, server.tail()
    assert env["plugin_message"] in log, f"{env['plugin_message']!r} not in the log:\n{server.tail()}"
    for protocol in ("http", "grpc"):
        with pytest.raises(InferenceServerException):
            infer(env, protocol, "ditac_bad", np.zeros((1, 2), np.float32))
        assert_serves(env, protocol, "ditac_mlp")
        assert_serves(env, protocol, "ditac_cnn")


def test_native_backend_config_is_accepted_by_triton(env):
    # The wheel's server has no onnxruntime backend: loading the native model must get as far as
    # looking for that backend (the text format parsed, the platform mapped to the onnxruntime
    # backend), and no further: the backend's own checks of its settings are not run here.
    with pytest.raises(InferenceServerException) as e:
        env["clients"]["http"][1].load_model("ditac_mlp_onnxruntime")
    assert "unable to find backend library for backend 'onnxruntime'" in str(e.value), str(e.value)
    assert_serves(env, "http")


def test_concurrent_clients_all_answered(env):
    # Concurrent requests are batched together by the dynamic batcher: every one is answered,
    # with the in-process answer for its own rows.
    from concurrent.futures import ThreadPoolExecutor

    sess = env["models"]["ditac_mlp"][1]
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((1 + i % 4, 2)).astype(np.float32) for i in range(64)]

    server = env["server"]

    def one(i):
        # tritonclient's clients are not thread-safe: one per request here.
        if i % 2:
            mod, client = grpcclient, grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
        else:
            mod, client = httpclient, httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
        try:
            inp = mod.InferInput("x", list(xs[i].shape), "FP32")
            inp.set_data_from_numpy(xs[i])
            return client.infer("ditac_mlp", [inp]).as_numpy("y")
        finally:
            client.close()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(len(xs))))
    for x, got in zip(xs, results):
        want = sess.run(["y"], {"x": x})[0]
        assert got.shape == want.shape
        # Merged batches run through other GEMM shapes: equal to rounding, not necessarily to the bit.
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_zz_server_stops_cleanly_on_sigterm(env):
    server = env["server"]
    for _, c in env["clients"].values():
        c.close()
    code = server.stop()
    assert code == 0, f"exit {code}:\n{server.tail()}"
    log = server.log()
    assert "successfully unloaded 'ditac_mlp'" in log and "successfully unloaded 'ditac_cnn'" in log, server.tail()
