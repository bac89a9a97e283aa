"""``initwise bench``: train models under several initializations, resumably, and summarize the results.

Every (model, scheme, seed) of the grid is one short training run on images shipped with scikit-image; its record
goes to DIR/results.jsonl the moment it ends, so a rerun (or a second process on the same DIR) runs only what is
missing. The summary compares the schemes per model: PSNR mean and spread over seeds, Welch t-tests.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any

from .main import CLIError, plain

EPILOG = """examples:
  initwise bench sr-x2 --models espcn,fsrcnn --schemes default,kaiming_fan_in,kaiming_fan_out --seeds 3 \\
      --steps 500 --out runs/sr
  initwise bench sr-x2 --models my_model.py:build --channels 3 --out runs/mine    # your own x2 model
  initwise bench sr-x2 --out runs/sr --summary-only --at 100    # table at step 100 from the results file
  torchrun --nproc_per_node 2 -m initwise._cli.main bench sr-x2 --models espcn --out runs/sr   # shard over ranks

MODELS: zoo names (srcnn, fsrcnn, espcn, vdsr, edsr, rcan, dncnn, nafnet) with options as name:key=value, or a
user's model as path/to/file.py:factory or package.module:factory (an SR model takes the LR image, or the
bicubic-upsampled one: whichever gives an output of the target's size).
Results: DIR/results.jsonl, one JSON record per finished run (appended at once; rerunning resumes; processes
sharing DIR split the grid through DIR/results.jsonl.lock and .claims/), then DIR/summary.txt, DIR/summary.md and
DIR/psnr.png. --summary-only summarizes
the records of the task(s) in DIR, narrowed by any grid option given. Significance: Welch t-test, two-sided,
p < 0.05, only with >= 2 seeds per cell.
"""

DEFAULT_SCHEMES = ("default", "kaiming_fan_in", "kaiming_fan_out", "relu_fan_out", "linear_gain_fan_in", "xavier",
                   "orthogonal")
# grid options: default when running; in --summary-only they narrow the records only when given
DEFAULTS: dict[str, Any] = {"steps": 500, "batch_size": 8, "patch_size": 32, "lr": 1e-3, "eval_crop": 96,
                            "channels": 1, "seeds": 3, "seed_start": 0}


def _csv(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _steps_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(sorted({int(s) for s in _csv(text)}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="train models under several initializations and compare them",
                       description=plain(__doc__), epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", help="task, or comma list: sr-x2, sr-x3, sr-x4, denoise-s15, denoise-s25, denoise-s50")
    p.add_argument("--models", help="comma list of zoo models (options as name:key=value) or path/to/file.py:factory"
                   " / package.module:factory (default: every zoo model of the task kind)")
    p.add_argument("--schemes", default=None,
                   help="comma list of candidates (initwise.CANDIDATES or inline SCHEME_MODE:k=v; default: "
                   f"{','.join(DEFAULT_SCHEMES)})")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds, 0..N-1 (default 3)")
    p.add_argument("--seed-start", type=int, default=None, help="first seed (default 0)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default 500)")
    p.add_argument("--batch-size", type=int, default=None, help="patches per step (default 8)")
    p.add_argument("--patch-size", type=int, default=None, help="HR patch side, a multiple of the scale (default 32)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 1e-3)")
    p.add_argument("--eval-at", type=_steps_list, default=None,
                   help="comma list of steps at which to measure test PSNR (default 0,steps/4,steps/2,steps)")
    p.add_argument("--eval-crop", type=int, default=None, help="HR center crop of the test images (default 96)")
    p.add_argument("--channels", type=int, choices=(1, 3), default=None, help="1: luma (default), 3: RGB")
    p.add_argument("--preset", default=None, help="zoo preset for models that have one (default: the builder's)")
    p.add_argument("--grad-clip", type=float, default=None, help="clip the gradient norm (default: none)")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per run (default: 1 with workers)")
    p.add_argument("--out", default="bench-results", help="results directory (default ./bench-results)")
    p.add_argument("--summary-only", action="store_true",
                   help="do not train; summarize the records of TASK in DIR/results.jsonl (narrowed by the grid "
                   "options given)")
    p.add_argument("--at", type=int, default=None, help="summarize at this step instead of the final one")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _opt(args: argparse.Namespace, name: str) -> Any:
    v = getattr(args, name)
    return DEFAULTS[name] if v is None else v


def _models(args: argparse.Namespace, tasks: list[str]) -> list[str]:
    from initwise.zoo import list_models

    if args.models:
        return _csv(args.models)
    from initwise.bench.data import get_task

    kinds = {get_task(t).kind for t in tasks}
    return [m for k in ("sr", "denoise") if k in kinds for m in list_models(k)]


def _check_args(args: argparse.Namespace) -> None:
    """Everything that needs no data: counts, finite numbers, the output folder."""
    for name, lo in (("seeds", 1), ("seed_start", 0), ("steps", 0), ("batch_size", 1), ("patch_size", 1),
                     ("eval_crop", 1), ("workers", 1), ("threads", 1), ("at", 0)):
        v = getattr(args, name)
        if v is not None and v < lo:
            raise CLIError(f"--{name.replace('_', '-')} must be >= {lo}, got {v}")
    if (args.seed_start or 0) + (args.seeds or DEFAULTS["seeds"]) > 2**53:
        raise CLIError(f"--seed-start + --seeds must stay below 2**53, got {args.seed_start}")
    for name in ("lr", "grad_clip"):
        v = getattr(args, name)
        if v is not None and not (math.isfinite(v) and v > 0):
            raise CLIError(f"--{name.replace('_', '-')} must be a finite number > 0, got {v}")
    if args.schemes is not None and not _csv(args.schemes):
        raise CLIError("--schemes is empty")
    if args.models is not None and not _csv(args.models):
        raise CLIError("--models is empty")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {args.out}: is a file; give a folder (the results go to {args.out}/results.jsonl)")
    parent = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not parent.is_dir():
        raise CLIError(f"--out {args.out}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CLIError(f"--out {args.out}: folder {parent} is not writable")
    for name in ("results.jsonl", "summary.txt", "summary.md", "psnr.png"):
        f = out / name
        if f.exists() and (f.is_dir() or not os.access(f, os.W_OK)):
            raise CLIError(f"--out {args.out}: {f} is {'a folder' if f.is_dir() else 'not writable'}")


def _grid(args: argparse.Namespace, skipped: list[str]) -> list[Any]:
    from initwise.bench.runner import make_grid

    tasks = _csv(args.task)
    steps = _opt(args, "steps")
    eval_at = args.eval_at or tuple(sorted({0, steps // 4, steps // 2, steps}))
    start = _opt(args, "seed_start")
    schemes = _csv(args.schemes) if args.schemes else list(DEFAULT_SCHEMES)
    return make_grid(tasks, _models(args, tasks), schemes, range(start, start + _opt(args, "seeds")),
                     steps=steps, skipped=skipped, batch_size=_opt(args, "batch_size"),
                     patch_size=_opt(args, "patch_size"), lr=_opt(args, "lr"), eval_at=eval_at,
                     eval_crop=_opt(args, "eval_crop"), channels=_opt(args, "channels"), preset=args.preset,
                     grad_clip=args.grad_clip)


def _given_filter(args: argparse.Namespace) -> list[tuple[str, str, Any]]:
    """(flag, record field, value) of each grid option given on the command line (for --summary-only)."""
    out: list[tuple[str, str, Any]] = []
    for name in ("steps", "batch_size", "patch_size", "lr", "eval_crop", "channels", "preset", "grad_clip"):
        v = getattr(args, name)
        if v is not None:
            out.append((f"--{name.replace('_', '-')}", name, v))
    if args.eval_at is not None:
        out.append(("--eval-at", "eval_at", list(args.eval_at)))
    return out


def _stored(args: argparse.Namespace, results: Path) -> list[dict[str, Any]]:
    """The records that --summary-only summarizes: TASK's, narrowed by every grid option given."""
    from initwise.bench.runner import parse_model_spec, read_results

    got = read_results(results)
    if got.skipped:
        print(got.describe(results), file=sys.stderr)
    if not got.records:
        raise CLIError(f"no finished runs in {results}" + (" (it does not exist)" if not results.exists() else ""))
    tasks = set(_csv(args.task))
    recs = [r for r in got.records if r.get("task") in tasks]
    if not recs:
        found = sorted({str(r.get("task")) for r in got.records})
        raise CLIError(f"no runs of {args.task} in {results}; it holds: {', '.join(found)}")
    if args.models:
        models = {m.strip() for m in _csv(args.models)} | {parse_model_spec(m)[0] for m in _csv(args.models)}
        recs = [r for r in recs if r.get("model") in models]
    if args.schemes:
        recs = [r for r in recs if r.get("scheme") in set(_csv(args.schemes))]
    if args.seeds is not None or args.seed_start is not None:
        start = _opt(args, "seed_start")
        seeds = set(range(start, start + _opt(args, "seeds")))
        recs = [r for r in recs if r.get("seed") in seeds]
    for flag, field, value in _given_filter(args):
        recs = [r for r in recs if r.get(field) == value]
    if not recs:
        raise CLIError(f"no runs in {results} match {args.task} and the options given")
    settings: dict[tuple[str, str, str], set[tuple[Any, Any]]] = {}
    for r in recs:
        settings.setdefault((r["task"], r["model"], r["scheme"]), set()).add((r.get("steps"), r.get("config_hash")))
    mixed = {k: v for k, v in settings.items() if len(v) > 1}
    if mixed:
        (task, model, scheme), v = next(iter(mixed.items()))
        steps = sorted({s for s, _ in v})
        raise CLIError(f"{results} holds runs of {model} {scheme} on {task} with {len(v)} different settings "
                       f"(steps {', '.join(map(str, steps))}): give the grid's options (--steps, --lr, "
                       "--batch-size, ...) to pick one")
    return recs


def _check_step(records: list[dict[str, Any]], step: int | None) -> None:
    if step is None:
        return
    evaluated = sorted({s for r in records if r.get("status") == "ok" for s in (r.get("eval_steps") or [])})
    if step not in evaluated:
        raise CLIError(f"--at {step}: no run was evaluated at step {step}; evaluated steps: "
                       f"{', '.join(map(str, evaluated)) or 'none'}")


def write_summary(records: list[dict[str, Any]], out: Path, *, step: int | None, plot: bool) -> str:
    """Write DIR/summary.txt, DIR/summary.md (and DIR/psnr.png); return the text table."""
    from initwise.bench.summary import format_table, summarize

    from ._io import write_outputs

    rows = summarize(records, step)
    text = format_table(rows, step=step)
    md = format_table(rows, markdown=True, step=step)
    suffix = "" if step is None else f"-step{step}"
    items: list[tuple[str, Any]] = [(str(out / f"summary{suffix}.txt"), lambda tmp: Path(tmp).write_text(text)),
                                    (str(out / f"summary{suffix}.md"), lambda tmp: Path(tmp).write_text(md))]
    if plot and any(r.get("status") == "ok" for r in records):
        from initwise.bench.summary import plot as plot_psnr

        items.append((str(out / "psnr.png"), lambda tmp: plot_psnr(records, tmp)))
    write_outputs(items, announce=False)  # the last line names the results folder
    return text


def run(args: argparse.Namespace) -> int:
    from initwise.bench.runner import check_grid, distributed_env, run_grid

    _check_args(args)
    out = Path(args.out)
    results = out / "results.jsonl"
    if args.summary_only:
        records = _stored(args, results)
        _check_step(records, args.at)
        print(write_summary(records, out, step=args.at, plot=not args.no_plot), end="")
        print(f"results: {results} ({len(records)} runs)")
        return 0
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
    if args.at is not None and args.at not in specs[0].eval_at:
        raise CLIError(f"--at {args.at}: the grid evaluates at steps {', '.join(map(str, specs[0].eval_at))}")
    try:
        check_grid(specs)
    except ValueError as e:
        raise CLIError(str(e)) from None
    from initwise.bench.runner import read_results

    found = read_results(results)
    if found.skipped and rank == 0:
        print(found.describe(results), file=sys.stderr)
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

    from concurrent.futures.process import BrokenProcessPool

    try:
        report = run_grid(specs, results, workers=args.workers, num_threads=args.threads, on_start=on_start,
                          on_record=on_record)
    except BrokenProcessPool as e:
        raise CLIError(f"a worker process died ({e}); the runs finished so far are in {results}: rerun to resume"
                       ) from None
    except OSError as e:
        raise CLIError(f"writing the results in {out} failed: {e}; the runs recorded so far are kept") from None
    finally:
        if bar:
            bar[0].close()
    if rank != 0:
        return 0
    records = report.records
    for r in records:
        if r.get("status") != "ok":
            print(f"error in {r['key']}: {r.get('error')}", file=sys.stderr)
    print(write_summary(records, out, step=args.at, plot=not args.no_plot), end="")
    print(f"results: {results} ({len(records)} of {len(specs)} runs)")
    return 0
