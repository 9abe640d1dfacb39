#!/usr/bin/env bash
# The Triton load benchmark (not a test): the DiTAC CNN of tools/triton/bench_cnn.toml and the
# example MLP, served by the PyPI wheel's tritonserver (tools/triton/serve.sh) on free loopback
# ports, loaded by tools/triton/loadtest.py over HTTP and gRPC against in-process ONNX Runtime.
#
#   bash tools/triton/bench.sh [--requests 10000] [--duration 300] [--concurrency 8] [--threads 1]
#
# Server and in-process session use the same intra-op thread count (--threads, one model
# instance). Figures go to out/triton-bench/*.json and standard output.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
REQUESTS=10000 DURATION=300 CONCURRENCY=8 THREADS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --requests) REQUESTS="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --concurrency) CONCURRENCY="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    *) echo "bench.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
export DITAC_PLUGIN="${DITAC_PLUGIN:-$ROOT/target/release/libditac.so}"
DITAC="$ROOT/target/release/ditac"
PY="$ROOT/.venv-triton/bin/python"
[ -x "$DITAC" ] && [ -f "$DITAC_PLUGIN" ] || { echo "bench.sh: build first (cargo build --release)" >&2; exit 2; }
[ -x "$PY" ] || { echo "bench.sh: no .venv-triton (bash tools/setup.sh)" >&2; exit 2; }

OUT="$ROOT/out/triton-bench"
rm -rf "$OUT" && mkdir -p "$OUT"
"$DITAC" build tools/triton/bench_cnn.toml --seed 1 -o "$OUT/ditac_cnn.onnx"
for m in "$OUT/ditac_cnn.onnx" models/ditac_mlp.onnx; do
  "$DITAC" triton "$m" -o "$OUT/repo" --max-batch 32 --instances 1 --threads "$THREADS" >/dev/null
done
read -r HTTP GRPC METRICS < <("$PY" -c '
import socket
ss = [socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])
for s in ss: s.close()')

bash tools/triton/serve.sh "$OUT/repo" --http-port "$HTTP" --grpc-port "$GRPC" --metrics-port "$METRICS" \
  >"$OUT/tritonserver.log" 2>&1 &
SERVER=$!
stop() { kill -TERM "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null || true; }
trap stop EXIT
for _ in $(seq 1 360); do
  curl -sf "127.0.0.1:$HTTP/v2/health/ready" >/dev/null 2>&1 && break
  kill -0 "$SERVER" 2>/dev/null || { tail -40 "$OUT/tritonserver.log" >&2; exit 1; }
  sleep 0.5
done
curl -sf "127.0.0.1:$HTTP/v2/health/ready" >/dev/null || { echo "bench.sh: server not ready" >&2; tail -40 "$OUT/tritonserver.log" >&2; exit 1; }

echo "== $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs; server: 1 instance × $THREADS thread(s)"
rc=0
"$PY" tools/triton/loadtest.py --model ditac_cnn --onnx "$OUT/ditac_cnn.onnx" --batch 32 \
  --http-url "127.0.0.1:$HTTP" --grpc-url "127.0.0.1:$GRPC" --concurrency "$CONCURRENCY" \
  --requests "$REQUESTS" --duration "$DURATION" --threads "$THREADS" --server-pid "$SERVER" --json "$OUT/cnn.json" || rc=1
"$PY" tools/triton/loadtest.py --model ditac_mlp --onnx models/ditac_mlp.onnx --batch 1,8,32 \
  --http-url "127.0.0.1:$HTTP" --grpc-url "127.0.0.1:$GRPC" --concurrency "$CONCURRENCY" \
  --requests "$REQUESTS" --duration "$DURATION" --threads "$THREADS" --server-pid "$SERVER" --json "$OUT/mlp.json" || rc=1
exit $rc
