#!/usr/bin/env bash
# Regenerates the example models of models/ with the tools themselves:
#   ditac_mlp.onnx          `ditac build` of models/ditac_mlp.toml, weights from seed 7 (saved to ditac_mlp.npz)
#   ditac_mlp_lut.onnx      `ditac freeze` of it (DiTACLut tables, bit-identical outputs)
#   ditac_mlp_lowered.onnx  `ditac lower` of it (standard ONNX operators only, no plugin needed)
# `ditac example-models` does the same in one process.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin ditac
D=target/release/ditac
$D build models/ditac_mlp.toml --seed 7 --save-params models/ditac_mlp.npz -o models/ditac_mlp.onnx
$D freeze models/ditac_mlp.onnx -o models/ditac_mlp_lut.onnx
$D lower models/ditac_mlp.onnx -o models/ditac_mlp_lowered.onnx
