"""Benchmark: planning a 7B-parameter decoder-only transformer on the meta device, at 1x and 10x depth.

Run: python benchmarks/bench_large_plan.py [--repeats 3]

The model (LLaMA-7B shapes, :mod:`decoder`) is built under ``torch.device("meta")`` and planned from a meta
example (token ids 1x16): no storage, no arithmetic. After a warm-up on a tiny decoder (one-time loading of
torch's meta kernels), with the meta-op memo emptied before each repeat, prints the median CPU time (and wall
time) of trace and of the rest of
``plan`` (what ``init_`` runs; the predicted moments, computed when a plan's predictions are first read, are timed
apart) at 32 blocks (6.74B parameters; target: the whole plan <= 2 s) and at 320 blocks (10x depth; target:
the cost grows linearly, i.e. the ratio is about 10).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import initwise as iw  # noqa: E402
from decoder import decoder  # noqa: E402
from initwise import _meta_ops  # noqa: E402


def measure(depth: int, repeats: int) -> tuple[int, int, float, float]:
    with torch.device("meta"):
        model = decoder("7b", depth=depth)
    x = torch.zeros(1, 16, dtype=torch.long, device="meta")
    n = sum(p.numel() for p in model.parameters())
    tr, pl, pr, wall = [], [], [], []
    for _ in range(repeats):
        _meta_ops._MEMO.clear()  # each repeat is a first trace of this architecture
        w0, c0 = time.perf_counter(), time.process_time()
        g = iw.trace(model, x)
        c1 = time.process_time()
        p = iw.plan(model, x, "kaiming", "fan_in", graph=g)
        c2 = time.process_time()
        wall.append(time.perf_counter() - w0)
        _ = p.output_forward  # the predictions, computed when first read (init_ never reads them)
        pr.append(time.process_time() - c2)
        pl.append(c2 - c1)
        tr.append(c1 - c0)
    return (n, len(p.layers), statistics.median(tr), statistics.median(pl), statistics.median(pr),
            statistics.median(wall))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, meta device, median of {args.repeats}")
    with torch.device("meta"):  # warm-up: torch's meta kernels and initwise's per-activation caches loaded once
        small = decoder("tiny")
    _ = iw.plan(small, torch.zeros(1, 16, dtype=torch.long, device="meta")).output_forward
    rows = [(d, *measure(d, args.repeats)) for d in (32, 320)]
    print("CPU time of this process (steady on a shared machine) and wall time")
    for depth, n, layers, tr, pl, pr, wall in rows:
        print(f"{depth:4d} blocks  {n / 1e9:6.2f}B params  {layers:5d} layers   trace {tr:6.2f} s   "
              f"plan (rest) {pl:5.2f} s   total {tr + pl:6.2f} s cpu, {wall:6.2f} s wall"
              + ("   target <= 2 s" if depth == 32 else "")
              + f"   (+ predictions when read {pr:5.2f} s)")
    (_, _, _, t1, p1, r1, w1), (_, _, _, t10, p10, r10, w10) = rows
    print(f"10x depth / 1x depth: {(t10 + p10) / (t1 + p1):.1f}x cpu, {w10 / w1:.1f}x wall   (linear: 10x); "
          f"with the predictions {(t10 + p10 + r10) / (t1 + p1 + r1):.1f}x cpu")


if __name__ == "__main__":
    main()
