"""``initwise bench``: train zoo models under several initializations, resumably, and summarize the results."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .main import CLIError

EPILOG = """examples:
  initwise bench sr-x2 --models espcn,fsrcnn --schemes default,kaiming_fan_in,kaiming_fan_out --seeds 3 \\
      --steps 500 --out runs/sr
  initwise bench sr-x2 --out runs/sr --summary-only --at 100    # table at step 100 from the results file
  torchrun --nproc_per_node 2 -m initwise._cli.main bench sr-x2 --models espcn --out runs/sr   # shard over ranks

Results: DIR/results.jsonl, one JSON record per finished run (appended at once; rerunning resumes), then
DIR/summary.txt, DIR/summary.md and DIR/psnr.png. Significance: Welch t-test, two-sided, p < 0.05.
"""

DEFAULT_SCHEMES = ("default", "kaiming_fan_in", "kaiming_fan_out", "relu_fan_out", "linear_gain_fan_in", "xavier",
                   "orthogonal")


def _csv(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _steps_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(sorted({int(s) for s in _csv(text)}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="train zoo models under several initializations and compare them",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", help="task, or comma list: sr-x2, sr-x3, sr-x4, denoise-s15, denoise-s25, denoise-s50")
    p.add_argument("--models", help="comma list of zoo models, options as name:key=value (default: all for the "
                   "task kind)")
    p.add_argument("--schemes", default=",".join(DEFAULT_SCHEMES),
                   help="comma list of candidates (initwise.CANDIDATES or inline SCHEME_MODE:k=v)")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds, 0..N-1 (default 3)")
    p.add_argument("--seed-start", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--steps", type=int, default=500, help="optimizer steps per run (default 500)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--patch-size", type=int, default=32, help="HR patch side (default 32)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--eval-at", type=_steps_list, default=None,
                   help="comma list of steps at which to measure test PSNR (default 0,steps/4,steps/2,steps)")
    p.add_argument("--eval-crop", type=int, default=96, help="HR center crop of the test images (default 96)")
    p.add_argument("--channels", type=int, choices=(1, 3), default=1, help="1: luma (default), 3: RGB")
    p.add_argument("--preset", default=None, help="zoo preset for models that have one (default: the builder's)")
    p.add_argument("--grad-clip", type=float, default=None, help="clip the gradient norm (default: none)")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per run (default: 1 with workers)")
    p.add_argument("--out", default="bench-results", help="results directory (default ./bench-results)")
    p.add_argument("--summary-only", action="store_true", help="do not train; summarize DIR/results.jsonl")
    p.add_argument("--at", type=int, default=None, help="summarize at this step instead of the final one")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _grid(args: argparse.Namespace, skipped: list[str]) -> list[Any]:
    from initwise.bench.runner import make_grid, parse_model_spec
    from initwise.zoo import list_models

    tasks = _csv(args.task)
    if args.models:
        models = _csv(args.models)
    else:
        from initwise.bench.data import get_task

        kinds = {get_task(t).kind for t in tasks}
        models = [m for k in ("sr", "denoise") if k in kinds for m in list_models(k)]
    for m in models:
        parse_model_spec(m)
    if args.seeds < 1:
        raise CLIError(f"--seeds must be >= 1, got {args.seeds}")
    if args.workers < 1:
        raise CLIError(f"--workers must be >= 1, got {args.workers}")
    eval_at = args.eval_at or tuple(sorted({0, args.steps // 4, args.steps // 2, args.steps}))
    return make_grid(tasks, models, _csv(args.schemes), range(args.seed_start, args.seed_start + args.seeds),
                     steps=args.steps, skipped=skipped, batch_size=args.batch_size, patch_size=args.patch_size,
                     lr=args.lr, eval_at=eval_at, eval_crop=args.eval_crop, channels=args.channels,
                     preset=args.preset, grad_clip=args.grad_clip)


def write_summary(records: list[dict[str, Any]], out: Path, *, step: int | None, plot: bool) -> str:
    """Write DIR/summary.txt, DIR/summary.md (and DIR/psnr.png); return the text table."""
    from initwise.bench.summary import format_table, summarize

    rows = summarize(records, step)
    text = format_table(rows, step=step)
    suffix = "" if step is None else f"-step{step}"
    (out / f"summary{suffix}.txt").write_text(text)
    (out / f"summary{suffix}.md").write_text(format_table(rows, markdown=True, step=step))
    if plot and any(r.get("status") == "ok" for r in records):
        from initwise.bench.summary import plot as plot_psnr

        plot_psnr(records, str(out / "psnr.png"))
    return text


def run(args: argparse.Namespace) -> int:
    from initwise.bench.runner import distributed_env, read_records, run_grid

    out = Path(args.out)
    results = out / "results.jsonl"
    skipped: list[str] = []
    try:
        specs = _grid(args, skipped)
    except ValueError as e:
        raise CLIError(str(e)) from None
    rank = (distributed_env() or (0, 1))[0]
    for s in skipped:
        if rank == 0:
            print(f"skipped {s}", file=sys.stderr)
    if not specs:
        raise CLIError("the grid is empty (no model fits the task)")
    if args.summary_only:
        keys = {s.key for s in specs}
        records = [r for r in read_records(results) if r["key"] in keys]
        if not records:
            raise CLIError(f"no finished runs of this grid in {results}")
    else:
        bar: list[Any] = []
        show = not args.quiet and sys.stderr.isatty()

        def on_start(todo: int, total: int) -> None:
            if show:
                from tqdm import tqdm

                bar.append(tqdm(total=todo, desc=f"bench rank {rank}" if distributed_env() else "bench",
                                unit="run", file=sys.stderr))
            elif not args.quiet:
                print(f"[rank {rank}] {todo} runs to do, {total - todo} already in the results", file=sys.stderr)

        def on_record(rec: dict[str, Any]) -> None:
            msg = (f"{rec['model']} {rec['scheme']} seed {rec['seed']}: "
                   + (f"{rec['final_psnr']:.2f} dB" if rec.get("final_psnr") is not None else
                      rec.get("error", "diverged")))
            if bar:
                bar[0].set_postfix_str(msg[:60])
                bar[0].update(1)
            elif not args.quiet:
                print(msg, file=sys.stderr)

        report = run_grid(specs, results, workers=args.workers, num_threads=args.threads, on_start=on_start,
                          on_record=on_record)
        if bar:
            bar[0].close()
        if rank != 0:
            return 0
        records = report.records
        errors = [r for r in records if r.get("status") != "ok"]
        for r in errors:
            print(f"error in {r['key']}: {r.get('error')}", file=sys.stderr)
    print(write_summary(records, out, step=args.at, plot=not args.no_plot), end="")
    print(f"results: {results} ({len(records)} of {len(specs)} runs)")
    return 0
