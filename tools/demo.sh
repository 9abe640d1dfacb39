#!/usr/bin/env bash
# The main job: build the plugin and the tools, then run the example models through ONNX Runtime with
# the plugin loaded and print what they compute.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
cargo build --release
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$PWD/.ort/1.32.0/libonnxruntime.so}"
exec target/release/ditac demo --plugin target/release/libditac.so "$@"
