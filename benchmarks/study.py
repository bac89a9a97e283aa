"""The initialization study of docs/evidence.md: 5 SR/denoise models x 7-9 schemes x 3 seeds, resumable.

    python benchmarks/study.py                       # runs what is missing, then writes the summaries and plot
    python benchmarks/study.py --workers 2 --out docs/evidence/study.jsonl
    python benchmarks/study.py --summary-only        # tables and plot from the results file, no training

Each model gets its own step budget (chosen from measured seconds per step so that the whole grid takes about
45 minutes on 2 CPU cores shared with other jobs); every run is evaluated at steps 0, 50 (most), 100 and at its last
step (the early regime: step 100; ESPCN also runs 2000 steps, the longest regime the budget allows). Runs go
seed-major (all cells of seed 0 first), so an interrupted study has whole seeds for every cell.
Equivalent per-model CLI calls (same keys, so they share the results file) are printed by ``--print-cli``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from initwise.bench.runner import RunSpec, read_records, run_grid
from initwise.bench.summary import format_matrix, format_table, plot, summarize

BASE = ["default", "kaiming_fan_in", "kaiming_fan_out", "relu_fan_out", "linear_gain_fan_in", "xavier",
        "orthogonal"]
# FSRCNN has PReLU (slope 0.25 at init): the common ReLU gain is its wrong-gain case
FSRCNN = [s if s != "linear_gain_fan_in" else "relu_fan_in" for s in BASE]
# (task, model, schemes, steps, patch_size, eval_at)
MODELS = [
    ("sr-x2", "espcn", BASE, 2000, 32, (0, 100, 200, 500, 1000, 2000)),
    ("sr-x2", "fsrcnn", FSRCNN, 300, 32, (0, 50, 100, 200, 300)),
    ("sr-x2", "edsr", BASE + ["kaiming_fan_in_res0.1", "kaiming_fan_in_zero_res"], 300, 32, (0, 50, 100, 200, 300)),
    ("sr-x2", "vdsr", BASE + ["kaiming_fan_in_out0.1"], 150, 24, (0, 50, 100, 150)),
    ("denoise-s25", "dncnn", BASE + ["kaiming_fan_in_out0.1"], 150, 24, (0, 50, 100, 150)),
]
SEEDS = (0, 1, 2)
ORDER = list(dict.fromkeys(s for m in MODELS for s in m[2]))
COMMON = dict(batch_size=8, lr=1e-3, eval_crop=96, channels=1)


def specs() -> list[RunSpec]:
    out = [RunSpec(task, model, scheme, seed, steps, patch_size=patch, eval_at=tuple(ev), **COMMON)
           for seed in SEEDS for task, model, schemes, steps, patch, ev in MODELS for scheme in schemes]
    return out


def cli_commands(out_dir: str) -> list[str]:
    return [f"initwise bench {task} --models {model} --schemes {','.join(schemes)} --seeds {len(SEEDS)} "
            f"--steps {steps} --batch-size {COMMON['batch_size']} --patch-size {patch} --lr {COMMON['lr']} "
            f"--eval-at {','.join(map(str, ev))} --eval-crop {COMMON['eval_crop']} --channels {COMMON['channels']} "
            f"--workers 2 --out {out_dir}"
            for task, model, schemes, steps, patch, ev in MODELS]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="docs/evidence/study.jsonl")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--summary-only", action="store_true")
    ap.add_argument("--print-cli", action="store_true")
    args = ap.parse_args()
    grid = specs()
    out = Path(args.out)
    if args.print_cli:
        print("\n".join(cli_commands(str(out.parent))))
        return 0
    if not args.summary_only:
        start = time.perf_counter()
        n = [0]

        def on_start(todo: int, total: int) -> None:
            print(f"{todo} of {total} runs to do", flush=True)

        def on_record(r: dict) -> None:
            n[0] += 1
            psnr = r.get("final_psnr")
            print(f"[{n[0]}] {time.perf_counter() - start:7.0f}s {r['task']} {r['model']} {r['scheme']} seed "
                  f"{r['seed']}: {'%.2f' % psnr if psnr is not None else r.get('error', 'diverged')} "
                  f"({r.get('wall_time_s', 0):.0f}s)", flush=True)

        run_grid(grid, out, workers=args.workers, on_start=on_start, on_record=on_record)
        print(f"grid wall time {time.perf_counter() - start:.0f}s", flush=True)
    keys = {s.key for s in grid}
    records = [r for r in read_records(out) if r["key"] in keys]
    for step, name in ((None, "final"), (100, "step100")):
        rows = summarize(records, step)
        text = format_matrix(rows, ORDER) + "\n" + format_table(rows, markdown=True, step=step)
        out.with_name(f"summary-{name}.md").write_text(text)
        if step is None:
            print(format_table(summarize(records, step), step=step))
    plot(records, str(out.with_name("psnr.png")),
         title="test PSNR vs step: mean over seeds, shaded min-max; dotted: bicubic / noisy input")
    print(f"{len(records)} of {len(grid)} runs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
