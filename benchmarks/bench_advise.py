"""Benchmark: wall time of advise beside one diagnose, on every zoo model, as `initwise advise NAME` runs it.

Run: python benchmarks/bench_advise.py [--models edsr,dncnn] [--threads N] [--screen K]
     /work/venv-real/bin/python benchmarks/bench_advise.py --corpus [NAME,NAME]   # the real-world corpus

For each built-in model (default config): build, draw the example batch from its built-in task (8 patches of
48 px), run one untimed diagnose (warm-up), then time, in one run: one ``diagnose`` of the model as it is (median
of 3); ``advise`` without a target (health in the fixed order until one candidate passes, plus fan_in, fan_out and
the current init; no output draws, no probe); ``advise`` with the HR / clean target (2 initial-loss draws of every
candidate, health until 2 healthy ones, the 5-step probe on those 2). Targets (issue 11): advise at most 10x one
diagnose and at most 30 s; the ratios are printed side by side.

``--screen K``: also ``advise`` with the target and the probe on the K healthy candidates with the lowest initial
loss instead of ``_advise_rule.SCREEN`` (K = 99: every healthy candidate, the fifth session's design-set variant
K99), timed in the same run: what a wider screen would cost.

``--corpus``: every model of the real-world corpus (benchmarks/_corpus_models.py, built as
benchmarks/real_models.py builds them, its example batch; no target exists there): one ``diagnose`` beside the
default ``advise`` (generated candidates, no target), and the worst ratio and time over the corpus.
"""

from __future__ import annotations

import argparse
import time

import torch

import initwise as iw
from initwise import zoo
from initwise.bench.data import get_task


def timed(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` and its wall time in seconds."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def diagnose_time(model, x, repeats: int = 3) -> float:
    """One ``diagnose`` of the model after an untimed warm-up (first-call costs: imports, kernel selection): the
    median of ``repeats`` runs (one run's time swings 2x on a shared machine)."""
    iw.diagnose(model, x)
    return sorted(timed(iw.diagnose, model, x)[1] for _ in range(repeats))[repeats // 2]


def corpus(names: str) -> None:
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _corpus_models import REGISTRY, by_name
    from real_models import _build

    entries = [by_name(n) for n in names.split(",")] if names else REGISTRY
    print(f"{'model':24s} {'params':>10s} {'cands':>5s} {'checked':>7s} {'diagnose s':>10s} {'advise s':>9s} "
          f"{'x':>6s}  pick")
    worst_x, worst_s, fails = 0.0, 0.0, []
    for e in entries:
        try:
            model, x = _build(e), e.example()
            t_diag = diagnose_time(model, x)
            adv, t_adv = timed(iw.advise, model, x)
        except Exception as ex:  # noqa: BLE001 - a model the library cannot advise is a finding, listed at the end
            fails.append(f"{e.name}: {type(ex).__name__}: {str(ex).splitlines()[0][:160]}")
            print(f"{e.name:24s} FAILED", flush=True)
            continue
        worst_x, worst_s = max(worst_x, t_adv / t_diag), max(worst_s, t_adv)
        n = sum(p.numel() for p in model.parameters())
        print(f"{e.name:24s} {n:10,d} {len(adv.results):5d} {sum(r.checked for r in adv.results):7d} "
              f"{t_diag:10.2f} {t_adv:9.2f} {t_adv / t_diag:6.1f}  {adv.recommended.name}", flush=True)
    print(f"worst: advise {worst_x:.1f}x one diagnose (target <= 10), {worst_s:.1f} s (target <= 30)")
    for f in fails:
        print("  failed:", f)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(zoo.list_models()))
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--corpus", nargs="?", const="", default=None, metavar="NAMES",
                    help="the real-world corpus (all models, or these), default advise without a target")
    ap.add_argument("--screen", type=int, default=None, metavar="K",
                    help="also time advise with the target and the probe on K screened candidates")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.corpus is not None:
        corpus(args.corpus)
        return
    print(f"{'model':8s} {'params':>9s} {'cands':>5s} {'diagnose s':>10s} {'no target s':>11s} {'x':>5s} "
          f"{'target s':>9s} {'x':>5s}" + (f" {'screen ' + str(args.screen) + ' s':>11s} {'x':>5s}" if args.screen
                                           else "") + "  pick (confidence)")
    for name in args.models.split(","):
        info = zoo.info(name)
        task = get_task("sr-x2" if info.task == "sr" else "denoise-s25", channels=info.in_channels)
        x, y = task.train_batch(8, 48, torch.Generator().manual_seed(0), upsample=info.input == "upsampled")
        model = zoo.build(name)
        t_diag = diagnose_time(model, x)
        adv0, t_none = timed(iw.advise, model, x)
        adv, t_tgt = timed(iw.advise, model, x, target=y)
        wide = ""
        if args.screen:
            adv_k, t_k = timed(iw.advise, model, x, target=y, screen=args.screen)
            wide = f" {t_k:11.2f} {t_k / t_diag:5.1f}"
        n = sum(p.numel() for p in model.parameters())
        print(f"{name:8s} {n:9,d} {len(adv.results):5d} {t_diag:10.2f} {t_none:11.2f} {t_none / t_diag:5.1f} "
              f"{t_tgt:9.2f} {t_tgt / t_diag:5.1f}{wide}  {adv.recommended.name} ({adv.confidence}); "
              f"no target: {adv0.recommended.name}" + (f"; screen {args.screen}: {adv_k.recommended.name}"
                                                      if args.screen else ""))


if __name__ == "__main__":
    main()
