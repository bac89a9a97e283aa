"""A weight's squared row norms, read once where several steps of one call need them.

A "current" plan reads each weight's row norms twice (its RMS, and the rows' spread for the propagation) and
diagnose's measurement reads them a third time (the weight's row moments): on a ResNet-50 each pass over the
weights costs ~12 ms, a tenth of diagnose's fixed cost at batch 1. Inside :func:`shared` the rows of a weight are
computed once and answered from a memo while the weight is the same tensor object at the same storage and version
counter; outside it nothing is kept. :func:`initwise.plan` opens one around its planning. The memo lives for one scope only (diagnose opens one per measured scheme),
because a guard's restore sets version counters back: across scopes the same version can hold other values.

Only float32 and float64 weights are shared (``vector_norm`` in their own precision, then float64: the callers'
own arithmetic, bit for bit); other dtypes are left to the callers' own paths.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["row_ms", "shared", "sharable"]

_SCOPES: list[dict[tuple[int, bool], tuple[torch.Tensor, int, int, torch.Tensor]]] = []


@contextlib.contextmanager
def shared() -> Iterator[None]:
    """Within the block, :func:`row_ms` of the same weight (unchanged) is computed once (a block inside another
    one shares the outer one's memo)."""
    if _SCOPES:
        yield
        return
    _SCOPES.append({})
    try:
        yield
    finally:
        _SCOPES.pop()


def sharable(w: torch.Tensor) -> bool:
    """A weight :func:`row_ms` takes: float32/float64, at least 2-d, not empty, with storage."""
    return w.dtype in (torch.float32, torch.float64) and w.dim() >= 2 and w.numel() > 0 and not w.is_meta


def row_ms(w: torch.Tensor, transposed: bool = False) -> torch.Tensor:
    """``vector_norm(rows, dim=1).double().square()``: the squared norm of each row of ``w`` reshaped to
    ``(w.shape[0], -1)`` (of ``w.transpose(0, 1)`` when ``transposed``: a transposed convolution's output
    channels), float64, one entry per row. ``w`` must be :func:`sharable`."""
    memo = _SCOPES[-1] if _SCOPES else None
    if memo is not None:
        hit = memo.get((id(w), transposed))
        if hit is not None and hit[0] is w and hit[1] == w._version and hit[2] == w.data_ptr():
            return hit[3]
    d = w.detach()
    rows = (d.transpose(0, 1) if transposed else d).reshape(d.shape[1] if transposed else d.shape[0], -1)
    s = torch.linalg.vector_norm(rows, dim=1).double().square()
    if memo is not None:
        memo[(id(w), transposed)] = (w, w._version, w.data_ptr(), s)
    return s
