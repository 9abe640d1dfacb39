"""Exports torchvision's ConvNeXt-T (random weights, seed 0; the timing does not depend on them) to
ONNX with batch 1 × 3 × 224 × 224, and writes θ = 0 for its GELUs and the `ditac patch` flags that
turn each GELU into a DiTAC node. Used by tools/bench/convnext_t.sh.

usage: python export_convnext_t.py OUT_DIR
"""

import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
import torchvision


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = torchvision.models.convnext_tiny(weights=None).eval()
    x = torch.randn(1, 3, 224, 224)
    path = out / "convnext_t.onnx"
    # The TorchScript exporter: one `Gelu` node (opset 20) per nn.GELU, named after the module
    # (torch announces it as legacy; its output is what this benchmark needs).
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    torch.onnx.export(
        model, (x,), str(path), dynamo=False, opset_version=20,
        input_names=["image"], output_names=["logits"],
    )
    gelus = [n.name for n in onnx.load(str(path), load_external_data=False).graph.node
             if n.op_type == "Gelu"]
    if len(gelus) != 18:
        sys.exit(f"expected the 18 GELUs of ConvNeXt-T, found {len(gelus)}")
    np.savez(out / "theta0.npz", theta=np.zeros(9, np.float32))  # tess 10: d = 9
    (out / "patch_nodes.txt").write_text("".join(f"{g}=theta\n" for g in gelus))
    print(f"wrote {path} ({len(gelus)} Gelu nodes)")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
