#!/usr/bin/env bash
# The main job: build the plugin and the tools, then run the example models through ONNX Runtime with
# the plugin loaded and print what they compute. Fetches only what that needs: ONNX Runtime's C library
# (tools/setup.sh ort: PyPI's onnxruntime wheel, into .ort/) and the crates of the build (crates.io).
# `ditac demo` finds both pieces by itself (the checkout's .ort/ and target/release/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh ort
cargo build --release
exec target/release/ditac demo "$@"
