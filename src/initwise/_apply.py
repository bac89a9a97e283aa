"""Applying a plan to a model: compute every new tensor first, then assign them all (transactional)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ._initializers import icnr_, identity_, orthogonal_, variance_scaling_

__all__ = ["apply_plan", "init_"]


def _generator(generator: torch.Generator | None, seed: int | None) -> torch.Generator | None:
    if generator is not None and seed is not None:
        raise ValueError("pass either generator= or seed=, not both")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        return torch.Generator().manual_seed(seed)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return generator


def _torch_default(module: nn.Module, name: str, gen: torch.Generator | None) -> dict[str, torch.Tensor]:
    """Run the module's own reset on a copy: exactly PyTorch's constructor init, drawn from ``gen`` if given."""
    clone = copy.deepcopy(module)
    reset = getattr(clone, "reset_parameters", None) or getattr(clone, "_reset_parameters", None)
    if reset is None:
        raise ValueError(f"layer {name!r} ({type(module).__name__}) has no reset_parameters(): "
                         "torch_default cannot reproduce its constructor; exclude it")
    if gen is None:
        reset()
    else:
        seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            reset()
    return dict(clone.named_parameters())


def apply_plan(plan: Any, model: nn.Module, generator: torch.Generator | None = None, seed: int | None = None) -> None:
    """Initialize ``model`` as ``plan`` says; on any error the model is left exactly as it was.

    Every new value is drawn into a fresh tensor first; only when all exist are they swapped in by storage
    assignment (``param.data = new``, what ``Module._apply`` does), so a failure half way changes nothing and no
    extra copy is made. The Parameter objects stay the same (optimizers keep working); views taken of the old
    storage before the call keep the old values.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    gen = _generator(generator, seed)
    params = dict(model.named_parameters(remove_duplicate=False))
    modules = dict(model.named_modules(remove_duplicate=False))
    new: list[tuple[torch.Tensor, torch.Tensor]] = []
    defaults: dict[str, dict[str, torch.Tensor]] = {}
    for pp in plan.params:
        if pp.method == "keep":
            continue
        p = params.get(pp.param)
        if p is None or tuple(p.shape) != tuple(pp.shape):
            raise ValueError(f"the plan's parameter {pp.param!r} {tuple(pp.shape)} is not in this model "
                             f"({'missing' if p is None else f'shape {tuple(p.shape)}'}): plan and model differ")
        owner_name, _, attr = pp.param.rpartition(".")
        owner = modules[owner_name]
        t = torch.empty_like(p.detach())
        g, extra = pp.gain if pp.gain is not None else 1.0, pp.scale
        if pp.method in ("normal", "uniform", "truncated_normal"):
            variance_scaling_(t, (g * extra) ** 2, "fan_in", pp.method, fans=(pp.fan, pp.fan), generator=gen)
        elif pp.method == "icnr":
            icnr_(t, plan[pp.layer].pixel_shuffle, (g * extra) ** 2, "fan_in",
                  plan.options.get("distribution", "normal"), gen, fans=(pp.fan, pp.fan))
        elif pp.method == "orthogonal":
            orthogonal_(t, g * extra, gen, groups=int(getattr(owner, "groups", 1) or 1))
        elif pp.method == "identity":
            identity_(t, g * extra, module=owner)
        elif pp.method == "zeros":
            t.zero_()
        elif pp.method == "ones":
            t.fill_(1.0)
        elif pp.method == "torch_default":
            if pp.layer not in defaults:
                defaults[pp.layer] = _torch_default(modules[pp.layer], pp.layer, gen)
            local = pp.param[len(pp.layer) + 1:] if pp.layer else pp.param
            t = defaults[pp.layer][local].detach()
        else:
            raise ValueError(f"unknown method {pp.method!r} for parameter {pp.param!r}")
        new.append((p, t))
    # every new tensor exists: now swap them in (storage assignment, as Module._apply does: no copy, cannot fail)
    for p, t in new:
        p.data = t




def init_(model: nn.Module, example_inputs: Any, scheme: str = "kaiming", mode: str | None = None, *,
          generator: torch.Generator | None = None, seed: int | None = None, **options: Any):
    """Plan and apply an initialization to every parameterized layer of ``model``; returns the :class:`Plan`.

    Bit-reproducible with ``generator=`` or ``seed=``; transactional (on any error the model is unchanged).
    See :func:`initwise.plan` for schemes and options.

    Example:
        >>> net = nn.Sequential(nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 2))
        >>> p = init_(net, torch.randn(4, 8), "kaiming", "fan_in", seed=0)
    """
    from ._plan import plan as make_plan

    _generator(generator, seed)  # validate before tracing
    p = make_plan(model, example_inputs, scheme, mode, **options)
    p.apply(model, generator=generator, seed=seed)
    return p
