"""``init_``: plan (or reuse the cached plan of the same architecture), then apply in place.

This module composes the two layers, so that neither imports the other in a circle: :mod:`initwise._plan` owns
the plan (and :meth:`Plan.apply` calls the lower-level :func:`initwise._apply.apply_plan`); this one only adds the
one-call convenience on top.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from . import _plan_cache
from ._apply import _generator, apply_plan
from ._plan import Plan, plan as make_plan

__all__ = ["init_"]


def init_(model: nn.Module, example_inputs: Any, scheme: str = "kaiming", mode: str | None = None, *,
          generator: torch.Generator | None = None, seed: int | None = None, cache: bool = True,
          **options: Any) -> Plan:
    """Plan and apply an initialization to every parameterized layer of ``model``; returns the :class:`Plan`.

    Bit-reproducible with ``generator=`` or ``seed=``. The whole plan is checked before the first draw: every
    error a user can cause (bad options, a forward that fails, a layer its initializer cannot fill, a model still
    on the meta device) is raised with the model unchanged. Parameters are then filled in place, one by one (no
    second copy of the model); an interrupt or a failure inside torch while drawing raises
    :class:`initwise.InitInterrupted` / :class:`initwise.PartialInitError` listing the parameters already drawn
    (``drawn``) and those that keep their old values (``pending``).
    See :func:`initwise.plan` for schemes and options.

    With ``cache=True`` (default) a second ``init_`` of the same architecture (module tree, attributes,
    parameter shapes, example shapes and dtypes, scheme and options all equal) reuses the first one's plan instead
    of tracing again; the plan returned is the same as :func:`initwise.plan` would give. The cache assumes the
    forward's dataflow depends on those and not on global state or the example's values; ``cache=False`` always
    traces. Plans that read parameter values (``exclude``, tied parameters, ``bias``/``norm="keep"``) are not
    cached.

    Example:
        >>> net = nn.Sequential(nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 2))
        >>> p = init_(net, torch.randn(4, 8), "kaiming", "fan_in", seed=0)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    _generator(generator, seed)  # validate before tracing
    if not isinstance(cache, bool):
        raise TypeError(f"cache must be True or False, got {cache!r}")
    key, p = _plan_cache.lookup(model, example_inputs, scheme, mode, options) if cache else (None, None)
    if p is None:
        p = make_plan(model, example_inputs, scheme, mode, **options)
        _plan_cache.store(key, p, example_inputs)
    apply_plan(p, model, generator=generator, seed=seed)
    return p
