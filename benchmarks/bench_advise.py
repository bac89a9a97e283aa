"""Benchmark: wall time of advise (no trial) on every zoo model, as `initwise advise NAME` runs it.

Run: python benchmarks/bench_advise.py [--models edsr,dncnn] [--threads N]

For each built-in model (default config): build, draw the example batch from its built-in task (8 patches of
48 px), run initwise.advise with the default candidates and 8 seeds, print the wall time (target: < 10 s each on a
2-core CPU) and the recommendation.
"""

from __future__ import annotations

import argparse
import time

import torch

import initwise as iw
from initwise import zoo
from initwise.bench.data import get_task


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(zoo.list_models()))
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'model':8s} {'params':>9s} {'seconds':>8s}  recommendation (confidence)")
    for name in args.models.split(","):
        info = zoo.info(name)
        task = get_task("sr-x2" if info.task == "sr" else "denoise-s25", channels=info.in_channels)
        x, y = task.train_batch(8, 48, torch.Generator().manual_seed(0), upsample=info.input == "upsampled")
        model = zoo.build(name)
        t0 = time.perf_counter()
        adv = iw.advise(model, x, target=y)
        dt = time.perf_counter() - t0
        n = sum(p.numel() for p in model.parameters())
        print(f"{name:8s} {n:9,d} {dt:8.2f}  {adv.recommended.name} ({adv.confidence})")


if __name__ == "__main__":
    main()
