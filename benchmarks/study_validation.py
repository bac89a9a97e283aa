"""The advisor's validation study: new SR/denoise tasks (benchmarks/validation_models.py; ``--set v2``: the second
validation set, benchmarks/validation_v2_models.py; ``--set v3`` to ``v10``: the third to
tenth;
``--set v5kept``: v5's LapSRN-lite with the candidates that keep its bilinear kernels) x 2 learning rates x 5 seeds x every candidate
``initwise.generate_candidates`` makes for the model, trained with Adam; resumable.

    nice -n 15 python benchmarks/study_validation.py                # runs what is missing (docs/evidence/validation)
    python benchmarks/study_validation.py --list                     # the grid, in run order, without training
    python benchmarks/study_validation.py --tasks edsr12 --seeds 0,1,2 --lrs 0.001

Run order: seeds 0-2 before seeds 3-4; within each, learning rate, then seed, then task, then candidate (so an
interrupted study has whole seeds for every cell, both learning rates with 3 seeds first). One JSON record per run is appended to
``docs/evidence/validation/results.jsonl`` (flush + fsync) the moment it ends; rerunning skips the keys present.
Settings (luma images, batch 8, HR patch 24, 300 Adam steps, test PSNR on the four 64 px
centre crops at steps 0, 150, 300) are those of the design grids shrunk to what 2 shared CPU cores allow.
The decision rule is never tuned on these runs (docs/evidence.md, "Protocol").
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from design_models import TASKS as DESIGN_TASKS  # noqa: E402
from validation_models import TASKS as VALIDATION_TASKS, Outside  # noqa: E402
from validation_v2_models import TASKS as V2_TASKS  # noqa: E402
from validation_v3_models import TASKS as V3_TASKS  # noqa: E402
from validation_v4_models import TASKS as V4_TASKS  # noqa: E402
from validation_v5_models import TASKS as V5_TASKS  # noqa: E402
from validation_v6_models import TASKS as V6_TASKS  # noqa: E402
from validation_v7_models import TASKS as V7_TASKS  # noqa: E402
from validation_v8_models import TASKS as V8_TASKS  # noqa: E402
from validation_v9_models import TASKS as V9_TASKS  # noqa: E402
from validation_v10_models import TASKS as V10_TASKS  # noqa: E402

from initwise import generate_candidates  # noqa: E402
from initwise.bench.data import get_task  # noqa: E402
import _jsonl  # noqa: E402
from initwise.bench.train import train  # noqa: E402

OUT = "docs/evidence/validation/results.jsonl"
DESIGN_OUT = "docs/evidence/design-extra/results.jsonl"  # --set design: the design set's deep plain nets
V2_OUT = "docs/evidence/validation-v2/results.jsonl"  # --set v2: the second validation set
V3_OUT = "docs/evidence/validation-v3/results.jsonl"  # --set v3: the third validation set
V4_OUT = "docs/evidence/validation-v4/results.jsonl"  # --set v4: the fourth validation set
V5_OUT = "docs/evidence/validation-v5/results.jsonl"  # --set v5: the fifth validation set
V6_OUT = "docs/evidence/validation-v6/results.jsonl"  # --set v6: the sixth validation set
V7_OUT = "docs/evidence/validation-v7/results.jsonl"  # --set v7: the seventh validation set
V8_OUT = "docs/evidence/validation-v8/results.jsonl"  # --set v8: the eighth validation set
V9_OUT = "docs/evidence/validation-v9/results.jsonl"  # --set v9: the ninth validation set
V10_OUT = "docs/evidence/validation-v10/results.jsonl"  # --set v10: the tenth validation set
# --set v5kept: v5's LapSRN-lite again, its candidates now keeping its bilinear kernels (eighth session; seen: design)
V5KEPT_OUT = "docs/evidence/design-kept/results.jsonl"
SET_TASKS = {"validation": VALIDATION_TASKS, "design": DESIGN_TASKS, "v2": V2_TASKS, "v3": V3_TASKS, "v4": V4_TASKS,
             "v5": V5_TASKS, "v6": V6_TASKS, "v7": V7_TASKS, "v8": V8_TASKS, "v9": V9_TASKS, "v10": V10_TASKS, "v5kept": {"lapsrn-lite": V5_TASKS["lapsrn-lite"]}}
SET_OUT = {"validation": OUT, "design": DESIGN_OUT, "v2": V2_OUT, "v3": V3_OUT, "v4": V4_OUT, "v5": V5_OUT,
           "v6": V6_OUT, "v7": V7_OUT, "v8": V8_OUT, "v9": V9_OUT, "v10": V10_OUT, "v5kept": V5KEPT_OUT}
TASKS = {**VALIDATION_TASKS, **DESIGN_TASKS, **V2_TASKS, **V3_TASKS, **V4_TASKS, **V5_TASKS, **V6_TASKS,
         **V7_TASKS, **V8_TASKS, **V9_TASKS, **V10_TASKS}  # names are distinct (checked below); a run's key starts with its task's name
assert len(TASKS) == sum(map(len, (VALIDATION_TASKS, DESIGN_TASKS, V2_TASKS, V3_TASKS, V4_TASKS, V5_TASKS, V6_TASKS,
                                  V7_TASKS, V8_TASKS, V9_TASKS, V10_TASKS))), "a task name is used by two sets"
CONFIG = dict(steps=300, batch_size=8, patch_size=24, eval_crop=64, channels=1)
LRS = (1e-3, 2e-4)
SEEDS = (0, 1, 2, 3, 4)


def example_batch(task_name: str, seed: int = 0, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """The example batch the advisor sees (and the study's init uses): ``n`` training patches."""
    task = get_task(TASKS[task_name].task, channels=CONFIG["channels"])
    return task.train_batch(n, CONFIG["patch_size"], torch.Generator().manual_seed(seed),
                            upsample=TASKS[task_name].upsample)


def build(task_name: str, seed: int) -> torch.nn.Module:
    """The user's net (what is initialized and advised), built under ``torch.manual_seed(seed)``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TASKS[task_name].build(CONFIG["channels"])


def candidates(task_name: str) -> list:
    x, _ = example_batch(task_name)
    return generate_candidates(build(task_name, 0), x)


def key(task_name: str, cand: str, seed: int, lr: float) -> str:
    h = hashlib.sha1(json.dumps(CONFIG, sort_keys=True).encode()).hexdigest()[:8]
    return f"{task_name}|{cand}|{seed}|{lr:g}|{CONFIG['steps']}|{h}"


def run(task_name: str, cand, seed: int, lr: float) -> dict:
    t = TASKS[task_name]
    rec = {"key": key(task_name, cand.name, seed, lr), "task_name": task_name, "task": t.task, "scheme": cand.name,
           "seed": seed, "lr": lr, **CONFIG}
    start = time.perf_counter()
    try:
        net = build(task_name, seed)
        x, _ = example_batch(task_name, seed, 2)
        if not cand.keeps_weights:
            cand.init_(net, x, generator=torch.Generator().manual_seed(seed))
        model = Outside(net, t.outside) if t.outside is not None else net
        task = get_task(t.task, channels=CONFIG["channels"])
        steps = CONFIG["steps"]
        r = train(model, task, steps=steps, batch_size=CONFIG["batch_size"], patch_size=CONFIG["patch_size"],
                  lr=lr, seed=seed, eval_at=(0, steps // 2, steps), eval_crop=CONFIG["eval_crop"],
                  upsample_input=t.upsample, num_threads=1).to_dict()
        r.pop("losses")
        for k in ("task", "seed", "steps", "batch_size", "patch_size", "lr"):
            r.pop(k, None)
        rec.update(r, status="ok")
    except Exception as e:  # recorded, not retried
        rec.update(status="error", error=f"{type(e).__name__}: {e}")
    rec["total_time_s"] = time.perf_counter() - start
    return rec


def grid(tasks, seeds, lrs) -> list[tuple[str, object, int, float]]:
    cands = {t: candidates(t) for t in tasks}
    blocks = [[s for s in seeds if s < 3], [s for s in seeds if s >= 3]]
    return [(t, c, s, lr) for block in blocks for lr in lrs for s in block for t in tasks for c in cands[t]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", choices=tuple(SET_TASKS), default="validation",
                    help="design: the design set's additions (benchmarks/design_models.py), lr 1e-3, seeds 0-2, "
                         f"into {DESIGN_OUT}; v2: the second validation set (benchmarks/validation_v2_models.py), "
                         f"into {V2_OUT}; v3: the third (benchmarks/validation_v3_models.py), into {V3_OUT}")
    ap.add_argument("--out", default=None)
    ap.add_argument("--tasks", default=None)
    ap.add_argument("--seeds", default=None)
    ap.add_argument("--lrs", default=None)
    ap.add_argument("--candidates", default=None, help="only these candidates, in this order (default: all)")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args()
    design = args.set == "design"
    args.out = args.out or SET_OUT[args.set]
    args.tasks = args.tasks or ",".join(SET_TASKS[args.set])
    args.seeds = args.seeds or ("0,1,2" if design else ",".join(map(str, SEEDS)))
    args.lrs = args.lrs or ("0.001" if design else ",".join(map(str, LRS)))
    torch.set_num_threads(1)
    tasks = [t for t in args.tasks.split(",") if t]
    g = grid(tasks, [int(s) for s in args.seeds.split(",")], [float(v) for v in args.lrs.split(",")])
    if args.candidates:
        order = [c for c in args.candidates.split(",") if c]
        g = sorted((e for e in g if e[1].name in order), key=lambda e: (e[3], e[2], e[0], order.index(e[1].name)))
    if args.list:
        for t, c, s, lr in g:
            print(key(t, c.name, s, lr))
        print(f"{len(g)} runs")
        return 0
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    done = {r["key"] for r in _jsonl.read(args.out)}
    todo = [e for e in g if key(e[0], e[1].name, e[2], e[3]) not in done]
    print(f"{len(todo)} of {len(g)} runs to do", flush=True)
    start = time.perf_counter()
    for i, (t, c, s, lr) in enumerate(todo, 1):
        rec = run(t, c, s, lr)
        _jsonl.append(args.out, rec)
        psnr = rec.get("final_psnr")
        print(f"[{i}/{len(todo)}] {time.perf_counter() - start:7.0f}s {t} {c.name} seed {s} lr {lr:g}: "
              f"{'%.2f' % psnr if psnr is not None else rec.get('error', 'diverged')} ({rec['total_time_s']:.0f}s)",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
