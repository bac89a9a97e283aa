"""Tensors inside nested inputs and outputs (tensors, tuples, lists, dicts): one walker for every module."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["call", "check_finite", "tensors", "map_tensors"]


def tensors(obj: Any) -> list[torch.Tensor]:
    """Every tensor in ``obj``, depth first, in order (dict values in insertion order)."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in tensors(o)]
    return []


def call(fn: Callable[..., Any], example: Any) -> Any:
    """``fn`` on an example given as a dict of keyword arguments, a tuple/list of positional ones, or one value."""
    if isinstance(example, dict):
        return fn(**example)
    if isinstance(example, (tuple, list)):
        return fn(*example)
    return fn(example)


def map_tensors(obj: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``obj`` with every tensor replaced by ``fn(tensor)``, the containers rebuilt."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, (tuple, list)):
        return type(obj)(map_tensors(o, fn) for o in obj)
    if isinstance(obj, dict):
        return {k: map_tensors(v, fn) for k, v in obj.items()}
    return obj


def check_finite(obj: Any, what: str) -> None:
    """A ValueError naming ``what`` when a floating-point tensor in ``obj`` holds nan or inf (meta tensors, which
    have no values, are skipped): statistics of such an input are nan and cannot rank or diagnose anything."""
    for i, t in enumerate(tensors(obj)):
        if t.is_meta or not (t.is_floating_point() or t.is_complex()) or not t.numel():
            continue
        bad = int((~torch.isfinite(t.detach())).sum())
        if bad:
            where = what if len(tensors(obj)) == 1 else f"{what} tensor {i}"
            raise ValueError(f"{where} has {bad} non-finite value(s) (nan or inf) out of {t.numel()}, shape "
                             f"{tuple(t.shape)}: its statistics would be nan")
