"""``initwise advise``: which initialization to use for a model, why, and how sure (the main job)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from ._target import (DEFAULT_SHAPE, check_rank, check_seed, check_single_input, load_target, make_input,
                      parse_shape)
from ._io import check_outputs, json_text, write_outputs
from .main import CLIError, describe, plain
from .._advise_rule import INIT_DRAWS

EPILOG = """examples:
  initwise advise                               # built-in EDSR x2 on images shipped with scikit-image
  initwise advise --explain                     # what every term in the advice means
  initwise advise dncnn --trial 200             # settle close calls with 200-step trainings (3 seeds)
  initwise advise my_model.py:build --input 8x3x48x48 --json advice.json --plot spp.png
  initwise advise my_model.py:build --task sr-x2 --save init.pt    # real SR data for a user's x2 model
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("advise", help="recommend an initialization with reasons and evidence (the main job)",
                       description=plain(__doc__), epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", nargs="?", default="edsr", metavar="TARGET",
                   help="built-in model name, path/to/file.py:factory or package.module:factory (default: edsr)")
    p.add_argument("--input", metavar="SHAPE", help="random input of this shape, e.g. 8x3x48x48 (a user's model "
                   "without --task; built-in models use real image patches)")
    p.add_argument("--task", metavar="TASK", help="built-in data: sr-x2, sr-x3, sr-x4, denoise-s15, denoise-s25, "
                   "denoise-s50 (default for built-in models: sr-x2 or denoise-s25)")
    p.add_argument("--batch", type=int, default=None, help="batch size of the example: task patches, or the "
                   "random input of a user's model without --input (default 8); not with --input (give the full "
                   "shape) nor a factory's own example")
    p.add_argument("--patch", type=int, default=None, help="side of the example images in pixels: the target "
                   "patch of task data, or H = W of the random input of a user's model (default 48)")
    p.add_argument("--candidates", metavar="A,B,...", help="candidates to compare (default: chosen for the model)")
    p.add_argument("--seeds", type=int, default=INIT_DRAWS,
                   help=f"weight draws per candidate for the initial loss (default {INIT_DRAWS})")
    p.add_argument("--lr", type=float, default=1e-3, help="the Adam learning rate you train with; the probe uses it "
                   "(default 1e-3)")
    p.add_argument("--probe-steps", type=int, default=None, metavar="K",
                   help="Adam steps of the probe on half the batch, scored on the other half (default: the design "
                   "set's choice; 0: rank by the initial loss)")
    p.add_argument("--explain", action="store_true", help="print what every term in the advice means, and exit")
    p.add_argument("--trial", type=int, metavar="STEPS", help="train the finalists STEPS steps (needs task data)")
    p.add_argument("--trial-seeds", type=int, default=3, help="seeds per finalist in the trial (default 3)")
    p.add_argument("--json", metavar="FILE", help="write the advice as JSON")
    p.add_argument("--plot", metavar="FILE", help="signal-propagation plot of the finalists (needs matplotlib)")
    p.add_argument("--save", metavar="OUT.pt", help="initialize the model as recommended and save its state_dict")
    p.add_argument("--seed", type=int, default=0, help="seed of data, weights and cotangent (default 0)")
    p.set_defaults(func=run)


def _task_data(task_name: str, channels: int, upsample: bool, batch: int, patch: int, seed: int) -> tuple[Any, Any]:
    try:
        from initwise.bench.data import get_task
    except ImportError as e:  # pragma: no cover - the bench extra is missing
        raise CLIError(f"built-in task data needs the bench extra (pip install 'initwise[bench]'): {e}") from None
    try:
        task = get_task(task_name, channels=channels)
        x, y = task.train_batch(batch, patch, torch.Generator().manual_seed(seed), upsample=upsample)
    except ValueError as e:
        raise CLIError(str(e)) from None
    return task, (x, y)


def run(args: argparse.Namespace) -> int:
    import initwise as iw
    from initwise import zoo

    t0 = time.perf_counter()
    if args.explain:
        from initwise._report import glossary_text

        print(glossary_text())
        return 0
    check_outputs([("--json", args.json, "file"), ("--plot", args.plot, "plot"), ("--save", args.save, "file")])
    check_seed(args.seed)
    for name in ("seeds", "trial_seeds", "batch", "patch"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    sized = [f"--{n}" for n in ("batch", "patch") if getattr(args, n) is not None]
    if sized and args.input is not None:
        raise CLIError(f"{' and '.join(sized)} cannot change --input {args.input}: give the full shape in --input "
                       "(batch first), e.g. --input 8x3x48x48")
    batch = args.batch if args.batch is not None else 8
    patch = args.patch if args.patch is not None else 48
    if args.trial is not None and args.trial < 1:
        raise CLIError(f"--trial must be >= 1 step, got {args.trial}")
    if args.probe_steps is not None and args.probe_steps < 0:
        raise CLIError(f"--probe-steps must be >= 0, got {args.probe_steps}")
    if not args.lr > 0:
        raise CLIError(f"--lr must be > 0, got {args.lr}")
    candidates = None
    if args.candidates is not None:
        candidates = [c.strip() for c in args.candidates.split(",") if c.strip()]
        if not candidates:
            raise CLIError("--candidates is empty")
        for c in candidates:
            try:
                iw.candidate(c)
            except (ValueError, TypeError) as e:
                raise CLIError(str(e)) from None
    builtin = args.target in zoo.list_models()
    info = zoo.info(args.target) if builtin else None
    task_name = args.task or (("sr-x2" if info.task == "sr" else "denoise-s25") if info else None)
    zoo_kwargs: dict[str, Any] = {}
    if info is not None and info.task == "sr" and task_name and task_name.startswith("sr-x"):
        zoo_kwargs["scale"] = int(task_name[4:]) if task_name[4:].isdigit() else 2
    target = load_target(args.target, **zoo_kwargs)
    task, data = None, None
    if task_name is not None and args.input is None:
        channels = info.in_channels if info else _channels(target.example)
        upsample = bool(info and info.input == "upsampled")
        task, data = _task_data(task_name, channels, upsample, batch, patch, args.seed)
        example, tgt, source = data[0], data[1], f"{task_name} patches ({batch}x{patch}px)"
    else:
        shape = parse_shape(args.input) if args.input is not None else None
        if shape is not None or target.example is None:
            if shape is None:
                c = (target.shape or DEFAULT_SHAPE)[1]
                shape = (batch, c, patch, patch)
            check_single_input(target, f"the random input {'x'.join(map(str, shape))}")
            check_rank(shape, target.model)
            example = make_input(shape, args.seed, like=target.model)
            source = f"random normal input {'x'.join(map(str, shape))}"
        else:
            if sized:
                raise CLIError(f"{' and '.join(sized)} cannot resize the example input that {args.target} "
                               "returns; give --input SHAPE (or --task) to replace it")
            example, source = target.example, "the factory's example input"
        tgt = None
    trial_fn = None
    if args.trial is not None:
        if task is None:
            raise CLIError("--trial trains on built-in task data: give --task (sr-x2, ..., denoise-s25, ...) for a "
                           "user's model, without --input")
        trial_fn = _trial(task, args.trial, patch, bool(info and info.input == "upsampled"), args.lr)
    try:
        advice = iw.advise(target.model, example, target=tgt, candidates=candidates, seeds=args.seeds, lr=args.lr,
                           probe_steps=args.probe_steps, trial=trial_fn, trial_seeds=args.trial_seeds,
                           trial_steps=args.trial, seed=args.seed)
    except Exception as e:  # the user's forward may raise anything (an assert, an IndexError)
        raise CLIError(f"advising {args.target} on {source} failed: {describe(e)}") from e
    print(f"{args.target} ({type(target.model).__name__}, "
          f"{sum(p.numel() for p in target.model.parameters()):,} parameters) on {source}")
    print(advice)
    outputs: list[tuple[str, Any]] = []
    if args.json:
        text = json_text({"target": args.target, "input": source, **advice.to_dict()})
        outputs.append((args.json, lambda tmp: Path(tmp).write_text(text)))
    if args.plot:
        outputs.append((args.plot, advice.plot))
    if args.save:
        advice.apply(target.model)
        state = target.model.state_dict()
        outputs.append((args.save, lambda tmp: torch.save(state, tmp)))
    write_outputs(outputs)
    if args.save:
        print(f"initialized {args.target} as {advice.recommended.name} (seed {advice.draw_seed}); state_dict saved to "
              f"{args.save}")
    print(f"({time.perf_counter() - t0:.1f} s)")
    return 0


def _channels(example: Any) -> int:
    return int(example.shape[1]) if isinstance(example, torch.Tensor) and example.dim() == 4 else 3


def _trial(task: Any, steps: int, patch: int, upsample: bool, lr: float):
    """Train ``steps`` Adam steps on random patches of the training images, score the test images' PSNR (images
    the trial never trains on)."""
    from initwise.bench.train import train

    def run_trial(model: torch.nn.Module, seed: int) -> float:
        r = train(model, task, steps=steps, batch_size=8, patch_size=patch, lr=lr, seed=seed,
                  eval_at=(steps,), upsample_input=upsample)
        return float("-inf") if r.diverged else float(r.final_psnr)

    return run_trial
