"""How good is the advice? The advisor's pick against training outcomes of the evidence study.

Run: python benchmarks/advise_quality.py [RESULTS.jsonl ...] [--step N]

For every (task, model) of the results files (default: the main, long and "more" grids of docs/evidence),
build the model exactly as the study did (zoo small config, luma channels), draw 8 training patches of the study's
size, and run initwise.advise restricted to the schemes that model was trained with (no trial). Then compare the
final test PSNR (mean +- std over seeds) of the recommended scheme with the grid's best and with PyTorch's default,
with Welch's two-sided t-test. "ok" means: not worse than the best beyond seed noise (p >= 0.05 or recommended =
best) and at least as good as the default (mean >= default's, or p >= 0.05).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

import initwise as iw
from initwise.bench.data import get_task
from initwise.bench.runner import RunSpec, _build, read_records
from initwise.bench.summary import summarize


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="*", default=["docs/evidence/study.jsonl", "docs/evidence/long/results.jsonl",
                                                   "docs/evidence/more/results.jsonl"])
    ap.add_argument("--step", type=int, default=None, help="compare PSNR after this many steps (default: final)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"{'results':28s} {'task':11s} {'model':7s} {'recommended':24s} {'rec PSNR':>13s} {'best':24s} "
          f"{'best PSNR':>13s} {'p':>6s} {'default PSNR':>13s} {'adv s':>6s} verdict")
    for path in args.results:
        if not Path(path).exists():
            continue
        records = [r for r in read_records(path) if r.get("status") == "ok"]
        rows = summarize(records, args.step)
        for task_name, model in dict.fromkeys((r["task"], r["model"]) for r in records):
            group = [r for r in rows if (r.task, r.model) == (task_name, model)]
            first = next(r for r in records if (r["task"], r["model"]) == (task_name, model))
            spec = RunSpec(task_name, model, "default", 0, first["steps"], patch_size=first["patch_size"],
                           channels=first["channels"], preset=first.get("preset"))
            net, upsample = _build(spec)
            task = get_task(task_name, channels=first["channels"])
            x, y = task.train_batch(8, first["patch_size"], torch.Generator().manual_seed(0), upsample=upsample)
            t0 = time.perf_counter()
            adv = iw.advise(net, x, target=y, candidates=[r.scheme for r in group])
            dt = time.perf_counter() - t0
            by = {r.scheme: r for r in group}
            rec, best, default = by[adv.recommended.name], group[0], by.get("default")
            vals = {s: [v for v in (_psnr(q, args.step) for q in records if (q["task"], q["model"], q["scheme"])
                                    == (task_name, model, s)) if v is not None] for s in by}
            p_best = _welch(vals[rec.scheme], vals[best.scheme]) if rec is not best else math.nan
            p_def = _welch(vals[rec.scheme], vals["default"]) if default is not None and rec is not default else math.nan
            ok_best = rec is best or not (p_best < 0.05)
            ok_def = default is None or rec.mean >= default.mean or not (p_def < 0.05)
            verdict = "ok" if ok_best and ok_def else ("worse than best" if not ok_best else "worse than default")
            print(f"{Path(path).parent.name + '/' + Path(path).name:28s} {task_name:11s} {model:7s} "
                  f"{rec.scheme:24s} {_ms(rec):>13s} {best.scheme:24s} {_ms(best):>13s} {_p(p_best):>6s} "
                  f"{_ms(default) if default else '-':>13s} {dt:6.1f} {verdict}")


def _psnr(rec: dict, step: int | None) -> float | None:
    from initwise.bench.summary import psnr_at

    return psnr_at(rec, step)


def _welch(a: list[float], b: list[float]) -> float:
    from initwise.bench.summary import welch

    return welch(a, b)


def _ms(r) -> str:
    return f"{r.mean:.2f}+-{r.std:.2f}"


def _p(p: float) -> str:
    return "-" if math.isnan(p) else f"{p:.3f}"


if __name__ == "__main__":
    main()
