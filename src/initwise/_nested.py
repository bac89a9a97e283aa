"""Tensors inside nested inputs and outputs (tensors, tuples, lists, dicts): one walker for every module."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["tensors", "map_tensors"]


def tensors(obj: Any) -> list[torch.Tensor]:
    """Every tensor in ``obj``, depth first, in order (dict values in insertion order)."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in tensors(o)]
    return []


def map_tensors(obj: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``obj`` with every tensor replaced by ``fn(tensor)``, the containers rebuilt."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, (tuple, list)):
        return type(obj)(map_tensors(o, fn) for o in obj)
    if isinstance(obj, dict):
        return {k: map_tensors(v, fn) for k, v in obj.items()}
    return obj
