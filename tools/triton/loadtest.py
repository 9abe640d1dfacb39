"""Load test of a DiTAC model served by Triton, against the same batches in-process.

    .venv-triton/bin/python tools/triton/loadtest.py --model NAME --onnx MODEL.onnx \\
        [--protocol http,grpc] [--http-url 127.0.0.1:8000] [--grpc-url 127.0.0.1:8001] \\
        [--concurrency 8] [--batch 1,8,32] [--requests 10000] [--duration 60] [--threads 1] \\
        [--plugin target/release/libditac.so] [--json OUT.json]

For each protocol and batch size, --concurrency client threads (each with its own tritonclient
client) send requests of that batch until --requests have been sent or --duration seconds have
passed. Every answer is compared with the in-process ONNX Runtime output of the same input (bits).
Printed: requests sent, answered, failed, lost (sent, neither answered nor failed), answers whose
bits differ from in-process, samples/s, latency p50/p99; then the same batches through an
in-process session with --threads intra-op threads (one request at a time), and Triton's samples/s
as a fraction of it (the mean of the in-process runs just before and just after), and CPU time per
batch: the in-process session's, and with --server-pid the local server's (all its processes) —
a figure that the load of other processes on the machine disturbs less than wall-clock rates.
Loopback only: a URL whose host is not a loopback address is refused. Exit status 1 when a request
failed or was lost.
"""
import argparse
import ipaddress
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import np_to_triton_dtype

ROOT = Path(__file__).resolve().parents[2]
DISTINCT_INPUTS = 8  # per batch size; the clients cycle through them


def loopback(url, flag):
    """The URL, when its host is a loopback address (no name is looked up: localhost or a literal)."""
    host = url.rsplit(":", 1)[0].strip("[]")
    try:
        ok = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        sys.exit(f"loadtest: {flag} {url}: only loopback addresses are load-tested (127.0.0.1, [::1], localhost)")
    return url


def session(onnx_path, plugin, threads):
    so = ort.SessionOptions()
    so.register_custom_ops_library(str(plugin))
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])


def bits(a):
    a = np.ascontiguousarray(a)
    return a.view({2: np.uint16, 4: np.uint32, 8: np.uint64}.get(a.dtype.itemsize, np.uint8))


def percentile_ms(lat, q):
    return float(np.percentile(np.asarray(lat) * 1e3, q)) if lat else float("nan")


def process_tree_cpu_s(pid):
    """CPU seconds (user + system) of a process and its descendants, from /proc (Linux)."""
    ticks = os.sysconf("SC_CLK_TCK")
    stats = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                stats[int(d)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
            except OSError:  # gone meanwhile
                pass
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, _) in stats.items():
            if ppid == parent and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(stats[p][1] for p in tree if p in stats) / ticks


def make_client(protocol, url):
    if protocol == "http":
        return httpclient, httpclient.InferenceServerClient(url, connection_timeout=60, network_timeout=300)
    return grpcclient, grpcclient.InferenceServerClient(url)


def triton_run(protocol, url, model, in_name, out_names, inputs, expected, concurrency, requests, duration,
               server_pid=None):
    lock = threading.Lock()
    state = {"sent": 0, "ok": 0, "failed": 0, "mismatched": 0, "errors": []}
    latencies = [[] for _ in range(concurrency)]
    dtype = np_to_triton_dtype(inputs[0].dtype)
    deadline = [0.0]
    t0 = [0.0]

    cpu0 = [0.0]

    def go():  # run once, when every client has warmed up, before any is released
        t0[0] = time.perf_counter()
        cpu0[0] = process_tree_cpu_s(server_pid) if server_pid else 0.0
        deadline[0] = time.monotonic() + duration

    start_barrier = threading.Barrier(concurrency + 1, action=go)

    def worker(w):
        mod, client = make_client(protocol, url)
        try:
            # Warm-up (not counted): the connection, the server's first batches.
            for k in range(2):
                inp = mod.InferInput(in_name, list(inputs[k].shape), dtype)
                inp.set_data_from_numpy(inputs[k])
                client.infer(model, [inp])
            start_barrier.wait()
            while True:
                with lock:
                    if state["sent"] >= requests or time.monotonic() > deadline[0]:
                        return
                    i = state["sent"]
                    state["sent"] += 1
                k = i % len(inputs)
                inp = mod.InferInput(in_name, list(inputs[k].shape), dtype)
                inp.set_data_from_numpy(inputs[k])
                outs = [mod.InferRequestedOutput(n) for n in out_names]
                t0 = time.perf_counter()
                try:
                    res = client.infer(model, [inp], outputs=outs)
                    got = [res.as_numpy(n) for n in out_names]
                except Exception as e:  # a failed request: counted, with its message
                    with lock:
                        state["failed"] += 1
                        if len(state["errors"]) < 5:
                            state["errors"].append(str(e))
                    continue
                latencies[w].append(time.perf_counter() - t0)
                same = all(g is not None and g.shape == x.shape and np.array_equal(bits(g), bits(x))
                           for g, x in zip(got, expected[k]))
                with lock:
                    state["ok"] += 1
                    state["mismatched"] += 0 if same else 1
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(concurrency)]
    for t in threads:
        t.start()
    start_barrier.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0[0]
    lat = [x for per in latencies for x in per]
    batch = inputs[0].shape[0]
    # The server's CPU time per batch (all its processes: HTTP/gRPC, batcher, the stubs running
    # ONNX Runtime); the warm-up requests before the start are not in it.
    cpu_ms = ((process_tree_cpu_s(server_pid) - cpu0[0]) * 1e3 / max(state["ok"], 1)
              if server_pid else float("nan"))
    return {
        "server_cpu_ms_per_batch": cpu_ms,
        "protocol": protocol, "batch": batch, "concurrency": concurrency,
        "sent": state["sent"], "ok": state["ok"], "failed": state["failed"],
        "lost": state["sent"] - state["ok"] - state["failed"], "mismatched": state["mismatched"],
        "seconds": wall, "samples_per_s": state["ok"] * batch / wall,
        "p50_ms": percentile_ms(lat, 50), "p99_ms": percentile_ms(lat, 99), "errors": state["errors"],
    }


def in_process_run(sess, in_name, out_names, inputs, requests, duration):
    for k in range(2):
        sess.run(out_names, {in_name: inputs[k]})
    lat = []
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    end = time.monotonic() + duration
    i = 0
    while i < requests and time.monotonic() < end:
        t = time.perf_counter()
        sess.run(out_names, {in_name: inputs[i % len(inputs)]})
        lat.append(time.perf_counter() - t)
        i += 1
    wall = time.perf_counter() - t0
    cpu_ms = (time.process_time() - cpu0) * 1e3 / max(i, 1)
    batch = inputs[0].shape[0]
    return {"batch": batch, "runs": i, "seconds": wall, "samples_per_s": i * batch / wall,
            "cpu_ms_per_batch": cpu_ms,
            "p50_ms": percentile_ms(lat, 50), "p99_ms": percentile_ms(lat, 99)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="the model's name in Triton")
    ap.add_argument("--onnx", required=True, help="the same model's ONNX file, for the in-process run")
    ap.add_argument("--protocol", default="http,grpc")
    ap.add_argument("--http-url", default="127.0.0.1:8000")
    ap.add_argument("--grpc-url", default="127.0.0.1:8001")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--batch", default="1,8,32")
    ap.add_argument("--requests", type=int, default=10000, help="per protocol and batch size")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds, per protocol and batch size")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads of the in-process session")
    ap.add_argument("--in-process-requests", type=int, default=2000)
    ap.add_argument("--plugin", default=os.environ.get("DITAC_PLUGIN", ROOT / "target/release/libditac.so"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--server-pid", type=int,
                    help="the local tritonserver's process id: also report its CPU time per batch")
    ap.add_argument("--json", help="also write the figures to this file")
    a = ap.parse_args()

    protocols = [p for p in a.protocol.split(",") if p]
    if any(p not in ("http", "grpc") for p in protocols):
        sys.exit(f"loadtest: --protocol {a.protocol}: expected http, grpc or http,grpc")
    urls = {"http": loopback(a.http_url, "--http-url"), "grpc": loopback(a.grpc_url, "--grpc-url")}
    batches = [int(b) for b in a.batch.split(",")]
    if a.concurrency < 1 or a.requests < 1 or a.duration <= 0 or any(b < 1 for b in batches):
        sys.exit("loadtest: --concurrency, --requests, --duration and --batch must be positive")

    sess = session(a.onnx, a.plugin, a.threads)
    if len(sess.get_inputs()) != 1:
        sys.exit("loadtest: models with one input only")
    inp = sess.get_inputs()[0]
    out_names = [o.name for o in sess.get_outputs()]
    sample = inp.shape[1:]
    if not all(isinstance(d, int) for d in sample):
        sys.exit(f"loadtest: input {inp.name} has shape {inp.shape}: need fixed sample dims")
    np_type = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}[inp.type]
    rng = np.random.default_rng(a.seed)

    report = {"model": a.model, "concurrency": a.concurrency, "threads": a.threads, "triton": [], "in_process": []}
    print(f"model {a.model}: input {inp.name} {inp.shape}, {a.concurrency} clients, "
          f"at most {a.requests} requests or {a.duration:g} s per row; in-process: {a.threads} thread(s)")
    print(f"{'':9}{'batch':>6}{'sent':>8}{'ok':>8}{'failed':>7}{'lost':>6}{'≠bits':>7}"
          f"{'samples/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'vs in-proc':>11}{'CPU ms/batch':>13}")
    for b in batches:
        inputs = [rng.standard_normal((b, *sample)).astype(np_type) for _ in range(DISTINCT_INPUTS)]
        expected = [sess.run(out_names, {inp.name: x}) for x in inputs]
        def baseline():
            base = in_process_run(sess, inp.name, out_names, inputs, a.in_process_requests, a.duration)
            report["in_process"].append(base)
            print(f"{'in-proc':9}{b:>6}{base['runs']:>8}{base['runs']:>8}{0:>7}{0:>6}{0:>7}"
                  f"{base['samples_per_s']:>11.0f}{base['p50_ms']:>9.3f}{base['p99_ms']:>9.3f}{'':>11}"
                  f"{base['cpu_ms_per_batch']:>13.2f}")
            return base

        # In-process runs before and after each Triton run (the machine's load drifts): the
        # ratio is to their mean.
        before = baseline()
        for p in protocols:
            r = triton_run(p, urls[p], a.model, inp.name, out_names, inputs, expected,
                           a.concurrency, a.requests, a.duration, a.server_pid)
            after = baseline()
            r["in_process_samples_per_s"] = (before["samples_per_s"] + after["samples_per_s"]) / 2
            r["ratio_to_in_process"] = r["samples_per_s"] / r["in_process_samples_per_s"]
            r["in_process_cpu_ms_per_batch"] = (before["cpu_ms_per_batch"] + after["cpu_ms_per_batch"]) / 2
            # Samples per CPU-second, the server's as a fraction of in-process.
            r["cpu_ratio_to_in_process"] = r["in_process_cpu_ms_per_batch"] / r["server_cpu_ms_per_batch"]
            before = after
            report["triton"].append(r)
            print(f"{p:9}{b:>6}{r['sent']:>8}{r['ok']:>8}{r['failed']:>7}{r['lost']:>6}{r['mismatched']:>7}"
                  f"{r['samples_per_s']:>11.0f}{r['p50_ms']:>9.3f}{r['p99_ms']:>9.3f}"
                  f"{r['ratio_to_in_process']:>10.0%}{r['server_cpu_ms_per_batch']:>14.2f}")
            if a.server_pid:
                print(f"{'':9}server CPU per batch {r['server_cpu_ms_per_batch']:.2f} ms, in-process "
                      f"{r['in_process_cpu_ms_per_batch']:.2f} ms: samples per CPU-second "
                      f"{r['cpu_ratio_to_in_process']:.0%} of in-process")
            for e in r["errors"]:
                print(f"    error: {e}")
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2))
    bad = any(r["failed"] or r["lost"] for r in report["triton"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
