"""Checks of a benchmark grid before it runs: settings, model options, and one forward of every model on its task.

A bad setting would otherwise fail every run of the grid (each stored as an error record) or, for a NaN learning
rate, end the grid when its record cannot be written as JSON. Every check raises a ValueError naming the setting
or the model and the task.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["check_grid", "check_model_options", "check_settings"]


def _positive_int(v: Any, what: str, minimum: int = 1) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{what} must be an int >= {minimum}, got {v!r}")


def _positive_float(v: Any, what: str) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"{what} must be a finite number > 0, got {v!r}")


def check_settings(steps: Any, config: dict[str, Any]) -> None:
    """The numeric settings of a grid, before any run (a bad one would fail every run, or not be JSON)."""
    _positive_int(steps, "steps", 0)
    if "batch_size" in config:
        _positive_int(config["batch_size"], "batch_size")
    if "patch_size" in config:
        _positive_int(config["patch_size"], "patch_size")
    if "lr" in config:
        _positive_float(config["lr"], "lr")
    if config.get("grad_clip") is not None:
        _positive_float(config["grad_clip"], "grad_clip")
    if config.get("eval_crop") is not None:
        _positive_int(config["eval_crop"], "eval_crop")
    if config.get("channels", 3) not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {config.get('channels')!r}")
    bad = [s for s in config.get("eval_at", ()) if isinstance(s, bool) or not isinstance(s, int)
           or not 0 <= s <= steps]
    if bad:
        raise ValueError(f"eval_at steps must lie in [0, steps={steps}], got {bad}")


def check_model_options(model: str) -> None:
    """Unknown zoo names and options a zoo builder does not take, before any run."""
    from ..zoo import MODELS, info
    from .runner import _is_user_model, parse_model_spec

    name, opts = parse_model_spec(model)
    if _is_user_model(model):
        return
    info(name)  # unknown names: ValueError listing the zoo
    params = inspect.signature(MODELS[name]).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    fixed = {"in_channels", "scale"}  # set by the task
    unknown = sorted(set(opts) - set(params))
    if unknown:
        valid = sorted(n for n in params if n not in fixed)
        raise ValueError(f"model {model!r}: {name} has no option {', '.join(unknown)}; its options: "
                         f"{', '.join(valid) or 'none'}")
    clash = sorted(set(opts) & fixed)
    if clash:
        raise ValueError(f"model {model!r}: {', '.join(clash)} is set by the task (scale) and --channels "
                         "(in_channels), not a model option")


def user_model(spec: Any, task: Any) -> tuple[torch.nn.Module, bool]:
    """A user's factory model and whether it takes the bicubic-upsampled input: the one of LR or upsampled input
    whose output has the target's shape (tried on one patch, in eval mode, without gradients)."""
    from .._factory import load_factory

    model, _ = load_factory(spec.model)
    if task.kind != "sr":
        return model, False
    x_lr, y = task.train_batch(1, spec.patch_size, torch.Generator().manual_seed(0), upsample=False)
    x_up, _ = task.train_batch(1, spec.patch_size, torch.Generator().manual_seed(0), upsample=True)
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            for upsample, x in ((False, x_lr), (True, x_up)):
                try:
                    out = model(x)
                except Exception:
                    continue
                if isinstance(out, torch.Tensor) and out.shape == y.shape:
                    return model, upsample
    finally:
        model.train(was)
    return model, False  # the run (or check_grid) reports the shape mismatch


def check_grid(specs: Sequence[Any]) -> None:
    """Run every distinct (task, model, data settings) of ``specs`` once on one training batch, before the grid:
    a model that cannot be built with its options, a patch size the task refuses, or an output that does not have
    the target's shape is a ValueError naming the model and the task, instead of a grid of error records."""
    from .data import get_task
    from .runner import _build

    seen: set[tuple[Any, ...]] = set()
    for spec in specs:
        k = (spec.task, spec.model, spec.channels, spec.preset, spec.patch_size, spec.eval_crop)
        if k in seen:
            continue
        seen.add(k)
        where = f"model {spec.model!r} on {spec.task}"
        try:
            task = get_task(spec.task, channels=spec.channels)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model, upsample = _build(spec)
            x, y = task.train_batch(1, spec.patch_size, torch.Generator().manual_seed(0), upsample=upsample)
            if spec.eval_crop is not None and spec.eval_crop <= 2 * getattr(task, "scale", 1):
                raise ValueError(f"eval_crop must be > 2 * scale = {2 * task.scale}, got {spec.eval_crop}")
            was = model.training
            model.eval()
            try:
                with torch.no_grad():
                    out = model(x)
            finally:
                model.train(was)
        except Exception as e:
            hint = "" if spec.channels == 3 else " (the images have 1 channel, luma: --channels 3 for RGB models)"
            raise ValueError(f"{where}: {type(e).__name__}: {e}"
                             + (hint if "channels" in str(e) else "")) from None
        if not isinstance(out, torch.Tensor) or out.shape != y.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"{where}: the output {got} does not have the target's shape {tuple(y.shape)} for "
                             f"the input {tuple(x.shape)}")
