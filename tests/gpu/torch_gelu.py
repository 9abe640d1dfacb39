"""PyTorch's gelu (and a tensor copy) timed with CUDA events at 2^lo .. 2^hi float elements.

Usage: python3 tests/gpu/torch_gelu.py LO HI OUT.json [DITAC.json]. Writes {"20": µs, ...} for gelu
and prints a small table (gelu and copy) to standard output; with DITAC.json (the timings
`gpu_check --times-json` wrote earlier in the same run), also DiTAC's float forward beside gelu and
the goal "faster than gelu" at ≥ 2^26 elements."""
import json
import os
import sys

import torch


def bench(f, reps):
    for _ in range(3):
        f()
    torch.cuda.synchronize()
    a = torch.cuda.Event(enable_timing=True)
    b = torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(reps):
        f()
    b.record()
    b.synchronize()
    return a.elapsed_time(b) / reps * 1e3  # µs


def main():
    lo, hi, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    times = {}
    print("| n | torch gelu µs | GB/s | torch copy µs | GB/s |")
    print("|---|---|---|---|---|")
    for k in range(lo, hi + 1):
        n = 1 << k
        x = torch.randn(n, device="cuda")
        y = torch.empty_like(x)
        reps = max(5, min(200, (1 << 28) >> k))
        g = bench(lambda: torch.nn.functional.gelu(x), reps)
        c = bench(lambda: y.copy_(x), reps)
        times[str(k)] = g
        gbs = lambda us: 8.0 * n / (us * 1e-6) / 1e9
        print(f"| 2^{k} | {g:.1f} | {gbs(g):.0f} | {c:.1f} | {gbs(c):.0f} |")
        del x, y
        torch.cuda.empty_cache()
    with open(out, "w") as f:
        json.dump(times, f)
    ditac = sys.argv[4] if len(sys.argv) > 4 else None
    if ditac and os.path.exists(ditac):
        with open(ditac) as f:
            ours = json.load(f)
        print()
        print("| n | DiTAC f32 µs | torch gelu µs | DiTAC / gelu |")
        print("|---|---|---|---|")
        for k in sorted(int(k) for k in times if k in ours):
            d, g = ours[str(k)]["ditac_f32_us"], times[str(k)]
            print(f"| 2^{k} | {d:.1f} | {g:.1f} | {d / g:.2f} |")
        for k in sorted(int(k) for k in times if k in ours and int(k) >= 26):
            d, g = ours[str(k)]["ditac_f32_us"], times[str(k)]
            print(f"2^{k}: DiTAC faster than gelu: {'yes' if d < g else 'NO'} ({d:.1f} vs {g:.1f} µs)")


if __name__ == "__main__":
    main()
