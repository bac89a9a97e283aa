"""Benchmark: what the guard (initwise._guard) adds to a run of the user's forward, on a ResNet-50.

Run: PYTHONPATH=src python benchmarks/bench_guard.py [--batch 4] [--size 128] [--repeats 5] [--threads 1]

Prints, side by side in one run (best of ``--repeats``, the runs interleaved): a plain forward + backward; the same inside
``preserved(model, x)`` (snapshot, copy-on-write mode during the pass, restore); the snapshot and restore alone;
the same with a forward that writes every parameter (the worst case: every parameter is cloned on its first
write); the meta-device trace (which runs inside the guard). The model is in train mode, so BatchNorm updates its
running statistics, which the guard restores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from resnet50 import resnet50  # noqa: E402

import initwise as iw  # noqa: E402
from initwise._guard import preserved  # noqa: E402


def best(fns: list, repeats: int) -> list[float]:
    """Best wall time of each function, the functions interleaved (a shared machine's load hits them alike)."""
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [min(ts) for ts in times]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = resnet50().train()
    x = torch.randn(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    params = list(model.parameters())

    def fwd_bwd() -> None:
        out = model(x)
        torch.autograd.grad(out.square().mean(), params)

    def guarded() -> None:
        with preserved(model, x):
            fwd_bwd()

    def snapshot() -> None:
        with preserved(model, x):
            pass

    def write_all() -> None:
        with preserved(model, x):
            with torch.no_grad():
                for p in params:
                    p.mul_(1.0)

    fwd_bwd()  # warm-up
    t_plain, t_guarded = best([fwd_bwd, guarded], args.repeats)
    t_snap, t_write, t_trace = best([snapshot, write_all, lambda: iw.trace(model, x[:1])], args.repeats)
    mb = sum(p.numel() * p.element_size() for p in params) / 2**20
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); ResNet-50 ({mb:.0f} MiB of parameters), "
          f"input {args.batch}x3x{args.size}x{args.size}, best of {args.repeats}")
    print(f"{'forward + backward':44s} {1e3 * t_plain:9.1f} ms")
    print(f"{'forward + backward inside the guard':44s} {1e3 * t_guarded:9.1f} ms   ratio {t_guarded / t_plain:.3f}")
    print(f"{'snapshot + restore alone':44s} {1e3 * t_snap:9.1f} ms   "
          f"{100 * t_snap / t_plain:.1f}% of a forward + backward")
    print(f"{'... with every parameter written (worst case)':44s} {1e3 * t_write:9.1f} ms")
    print(f"{'trace on the meta device (guard included)':44s} {1e3 * t_trace:9.1f} ms")


if __name__ == "__main__":
    main()
