"""The paper's 2-D regression (Figure 1; the authors' regression_example) trained in PyTorch with
ditac_onnx.torch.DiTAC: 2 → 50 → DiTAC → 1, DiTAC with tess 10 on [−3, 3] and the example's prior
settings (λ_smooth 5, λ_var 1, λ_smooth_init 3, λ_var_init 2, λ 0.1), Adam lr 5e-3, MSE, batch 98 drawn
fresh every step, uniform on [−1, 1]², target y = Σ_k w_k·sin(A_k·x); 10 000 steps per seed. Prints the
test MSE (2000 points, seeded) per seed and their mean, and the time per step on the CPU.

    DITAC_PLUGIN=target/release/libditac.so \\
      python tools/python/examples/paper_regression.py --seeds 1 2 3 [--steps 10000] [--threads 1]
      [--ditac-bin target/release/ditac]   # also times `ditac train` on the same network and settings

The authors report a test MSE of 0.0124 (mean of 3 seeds) for DiTAC on this task.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/python, when run from a checkout
from ditac_onnx.torch import DiTAC  # noqa: E402

# The authors' target: six frequency pairs and weights (as `ditac example-data paper-regression`).
FREQUENCIES = torch.tensor([[9.0, -7.0], [-9.0, 11.0], [3.0, 13.0], [9.0, 9.0], [13.0, 5.0], [3.0, 19.0]])
WEIGHTS = torch.tensor([0.4, 0.1, 0.15, 0.15, 0.1, 0.1])
AUTHORS_MSE = 0.0124


def target(x: torch.Tensor) -> torch.Tensor:
    return (torch.sin(x.double() @ FREQUENCIES.double().T) @ WEIGHTS.double()).float().unsqueeze(1)


def network(regulariser: str) -> nn.Module:
    if regulariser == "gelu":  # the timing baseline: the same network with GELU
        return nn.Sequential(nn.Linear(2, 50), nn.GELU(), nn.Linear(50, 1))
    return nn.Sequential(
        nn.Linear(2, 50),
        DiTAC(
            "gelu_cpab", tess=10, a=-3.0, b=3.0, lambda_smooth=5.0, lambda_smooth_init=3.0,
            lambda_var=1.0, lambda_var_init=2.0, lambda_reg_loss=0.1, regulariser=regulariser,
        ),
        nn.Linear(50, 1),
    )


def run(seed: int, steps: int, batch: int, lr: float, regulariser: str, x_test, y_test) -> tuple[float, float]:
    """Trains one seed; returns (test MSE, seconds per step)."""
    torch.manual_seed(seed)
    model = network(regulariser)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.MSELoss()
    start = time.perf_counter()
    for _ in range(steps):
        x = torch.rand(batch, 2) * 2 - 1
        loss = loss_fn(model(x), target(x))
        opt.zero_grad()
        loss.backward()
        opt.step()
    per_step = (time.perf_counter() - start) / steps
    if x_test is None:
        return math.nan, per_step
    model.eval()
    with torch.no_grad():
        mse = loss_fn(model(x_test), y_test).item()
    if not math.isfinite(mse):
        raise RuntimeError(f"seed {seed}: the test MSE is {mse}")
    return mse, per_step


def time_ditac_train(bin_path: str, steps: int, batch: int, lr: float, seed: int) -> tuple[float, str]:
    """`ditac train` of models/regression/paper/ditac.toml with the same settings (its own data:
    98 000 training points standing in for the fresh batches); returns (seconds per step of its
    training loop, as it reports it: start-up and graph building left out, its output)."""
    root = Path(__file__).resolve().parents[3]
    spec = root / "models/regression/paper/ditac.toml"
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(
            [bin_path, "example-data", "paper-regression", "--train", "98000", "--test", "2000", "-o", d],
            check=True, capture_output=True,
        )
        cmd = [
            bin_path, "train", str(spec), "--data", f"{d}/train.npz", "--test", f"{d}/test.npz",
            "--steps", str(steps), "--batch", str(batch), "--lr", str(lr), "--optimizer", "adam",
            "--seed", str(seed), "--threads", "1", "-o", f"{d}/p.onnx",
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    text = (out.stdout + out.stderr).strip()
    found = re.search(r"trained (\d+) steps .*? in ([0-9.]+) s", text)
    if not found:
        raise RuntimeError(f"no timing in the output of ditac train: {text}")
    return float(found.group(2)) / int(found.group(1)), text


def time_torch(steps: int, batch: int, lr: float, seed: int, act: str = "reference") -> float:
    """Seconds per step of `steps` training steps in PyTorch (no evaluation); `act` "gelu": the GELU
    network."""
    return run(seed, steps, batch, lr, act, None, None)[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=98)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--regulariser", default="reference", choices=["reference", "intended", "none", "gelu"],
                    help="DiTAC's regulariser (gelu: the GELU network instead, for comparison)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--ditac-bin", help="also time `ditac train` (this binary) with the same settings")
    ap.add_argument("--timing-rounds", type=int, default=3,
                    help="with --ditac-bin: rounds of (PyTorch, ditac train) timings, alternated (default 3)")
    ap.add_argument("--timing-steps", type=int, default=2000, help="steps per timing run (default 2000)")
    ap.add_argument("--json", help="write the figures to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(12345)
    x_test = torch.rand(2000, 2, generator=g) * 2 - 1
    y_test = target(x_test)
    print(f"torch {torch.__version__}, {args.threads} thread(s); {args.steps} steps, batch {args.batch}, "
          f"Adam lr {args.lr}, regulariser {args.regulariser}", flush=True)
    results = []
    for seed in args.seeds:
        mse, per_step = run(seed, args.steps, args.batch, args.lr, args.regulariser, x_test, y_test)
        results.append({"seed": seed, "test_mse": mse, "ms_per_step": per_step * 1e3})
        print(f"seed {seed}: test MSE {mse:.4e}, {per_step * 1e3:.3f} ms/step", flush=True)
    mean = sum(r["test_mse"] for r in results) / len(results)
    ms = sum(r["ms_per_step"] for r in results) / len(results)
    print(f"mean test MSE {mean:.4e} (the authors: {AUTHORS_MSE}; ratio {mean / AUTHORS_MSE:.3f}); "
          f"{ms:.3f} ms/step")
    summary = {"runs": results, "mean_test_mse": mean, "ms_per_step": ms, "threads": args.threads}
    if args.ditac_bin:
        # Alternated, so that both see the same load on a shared machine.
        n, seed = args.timing_steps, args.seeds[0]
        rounds = []
        for r in range(args.timing_rounds):
            t_torch = time_torch(n, args.batch, args.lr, seed)
            t_ditac, out = time_ditac_train(args.ditac_bin, n, args.batch, args.lr, seed)
            t_gelu = time_torch(n, args.batch, args.lr, seed, "gelu")
            rounds.append({"torch_ms_per_step": t_torch * 1e3, "ditac_train_ms_per_step": t_ditac * 1e3,
                           "torch_gelu_ms_per_step": t_gelu * 1e3})
            print(f"timing round {r + 1}: {n} steps each, one thread: PyTorch + DiTAC {t_torch * 1e3:.3f} ms/step, "
                  f"ditac train {t_ditac * 1e3:.3f} ms/step (its training loop), "
                  f"PyTorch + GELU {t_gelu * 1e3:.3f} ms/step", flush=True)
        best = {k: min(x[k] for x in rounds) for k in rounds[0]}
        print(f"fastest round: PyTorch + DiTAC {best['torch_ms_per_step']:.3f} ms/step, ditac train "
              f"{best['ditac_train_ms_per_step']:.3f} ms/step (ratio "
              f"{best['torch_ms_per_step'] / best['ditac_train_ms_per_step']:.2f}), PyTorch + GELU "
              f"{best['torch_gelu_ms_per_step']:.3f} ms/step")
        summary["timing_rounds"] = rounds
        summary["ditac_train_output"] = out[-2000:]
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
