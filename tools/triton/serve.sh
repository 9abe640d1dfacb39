#!/usr/bin/env bash
# Serve a model repository written by `ditac triton` with the `tritonserver` of PyPI's
# nvidia-pytriton wheel (in .venv-triton, made by tools/setup.sh): CPU only, Python backend only.
#
#   bash tools/triton/serve.sh REPO [--host 127.0.0.1] [--http-port 8000] [--grpc-port 8001]
#        [--metrics-port 8002] [--models NAME,NAME|--all] [-- EXTRA TRITONSERVER ARGS]
#
# Binds to 127.0.0.1 unless --host says otherwise. By default it loads the repository's
# Python-backend models only (explicit model control): the wheel's server has no onnxruntime
# backend, so the `*_onnxruntime` models are for servers that do (--all loads every model).
# The script execs tritonserver, so SIGINT/SIGTERM reach the server itself: it stops taking
# requests, finishes those in flight, unloads the models (their stub processes exit) and exits.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
VENV="${DITAC_TRITON_VENV:-$ROOT/.venv-triton}"

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 1 ] || usage
REPO="$1"; shift
[ -d "$REPO" ] || { echo "serve.sh: $REPO is not a folder (write one with: ditac triton MODEL.onnx -o $REPO)" >&2; exit 2; }
REPO="$(cd "$REPO" && pwd)"  # absolute: the stubs are given paths inside it
HOST=127.0.0.1 HTTP_PORT=8000 GRPC_PORT=8001 METRICS_PORT=8002 MODELS="" ALL=0
while [ $# -gt 0 ]; do
  case "$1" in
    --host) HOST="$2"; shift 2 ;;
    --http-port) HTTP_PORT="$2"; shift 2 ;;
    --grpc-port) GRPC_PORT="$2"; shift 2 ;;
    --metrics-port) METRICS_PORT="$2"; shift 2 ;;
    --models) MODELS="$2"; shift 2 ;;
    --all) ALL=1; shift ;;
    --) shift; break ;;
    -h|--help) usage ;;
    *) echo "serve.sh: unknown option $1" >&2; usage ;;
  esac
done

PY="$VENV/bin/python"
[ -x "$PY" ] || { echo "serve.sh: no $VENV (run: bash tools/setup.sh)" >&2; exit 2; }
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
DIST="$SITE/pytriton/tritonserver"
SERVER="$DIST/bin/tritonserver"
[ -x "$SERVER" ] || { echo "serve.sh: no tritonserver in $DIST (pip install nvidia-pytriton==0.7.0 into $VENV)" >&2; exit 2; }
PYVER="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
STUB="$DIST/python_backend_stubs/$PYVER/triton_python_backend_stub"
[ -f "$STUB" ] || { echo "serve.sh: the wheel has no Python backend stub for Python $PYVER" >&2; exit 2; }

# A backend folder with the stub of this Python next to the Python backend (what PyTriton does
# in its workspace); rebuilt when the wheel changes.
BACKENDS="$VENV/ditac-triton/backends"
if [ ! -f "$BACKENDS/python/triton_python_backend_stub" ] || [ "$STUB" -nt "$BACKENDS/python/triton_python_backend_stub" ]; then
  mkdir -p "$BACKENDS/python.tmp.$$"
  cp "$DIST/backends/python/libtriton_python.so" "$DIST/backends/python/triton_python_backend_utils.py" \
     "$BACKENDS/python.tmp.$$/"
  cp "$STUB" "$BACKENDS/python.tmp.$$/triton_python_backend_stub"
  chmod +x "$BACKENDS/python.tmp.$$/triton_python_backend_stub"
  rm -rf "$BACKENDS/python"
  mv "$BACKENDS/python.tmp.$$" "$BACKENDS/python"
fi

# The server's libraries (the wheel's) and libpython for the stub; the venv's bin first on PATH so
# the embedded interpreter of the stub finds the venv (onnxruntime, numpy).
PYLIB="$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')"
export LD_LIBRARY_PATH="$SITE/nvidia_pytriton.libs:$PYLIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="$VENV/bin:$PATH"

LOAD=()
if [ "$ALL" = 1 ]; then
  LOAD=(--load-model='*')
elif [ -n "$MODELS" ]; then
  IFS=',' read -ra names <<<"$MODELS"
  for n in "${names[@]}"; do LOAD+=(--load-model="$n"); done
else
  for cfg in "$REPO"/*/config.pbtxt; do
    [ -f "$cfg" ] || continue
    grep -q '^backend: "python"' "$cfg" && LOAD+=(--load-model="$(basename "$(dirname "$cfg")")")
  done
fi
[ ${#LOAD[@]} -gt 0 ] || { echo "serve.sh: no Python-backend model in $REPO (--models or --all to choose)" >&2; exit 2; }

exec "$SERVER" \
  --model-repository="$REPO" \
  --backend-directory="$BACKENDS" \
  --cache-directory="$DIST/caches" \
  --model-control-mode=explicit "${LOAD[@]}" \
  --http-address="$HOST" --http-port="$HTTP_PORT" \
  --grpc-address="$HOST" --grpc-port="$GRPC_PORT" \
  --metrics-address="$HOST" --metrics-port="$METRICS_PORT" \
  --allow-gpu-metrics=false \
  "$@"
