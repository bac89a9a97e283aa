"""Sharded parameters (FSDP2 / DTensor): global shapes for planning, and filling only this rank's shard.

A parameter of a ``fully_shard``ed model is a ``DTensor``: its ``shape`` is the global one (so fans computed from it
are the layer's), while each rank stores only its shard (``to_local()``). Random draws must not go through
DTensor's own ``normal_``: on a CPU/gloo mesh it gives every rank the same local values, so the gathered weight
repeats itself. Instead every rank draws the whole parameter from the same generator, in the same order as a
single process would, and keeps its own slice: the gathered weights are then bit-identical to a single-process
init with the same seed, and the temporary is one full parameter at a time (torch's CPU generator, a Mersenne
twister, cannot skip ahead, so the slice alone cannot be drawn bit-identically).

Nothing here imports :mod:`torch.distributed` unless the model actually holds a DTensor.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

import torch
from torch import nn

__all__ = ["is_sharded", "has_sharded", "fill_", "no_fsdp_hooks"]


def _dtensor_type() -> type | None:
    # only look the class up if torch.distributed's tensor package is already imported: a model cannot hold a
    # DTensor otherwise, and importing it costs ~0.3 s
    mod = sys.modules.get("torch.distributed.tensor")
    return getattr(mod, "DTensor", None) if mod is not None else None


def is_sharded(t: torch.Tensor) -> bool:
    """True for a DTensor (or a Parameter wrapping one)."""
    cls = _dtensor_type()
    return cls is not None and isinstance(t, cls)


def has_sharded(model: nn.Module) -> bool:
    cls = _dtensor_type()
    return cls is not None and any(isinstance(p, cls) for p in model.parameters())


def local_device(t: torch.Tensor) -> torch.device:
    """Where the values of ``t`` live (the local shard's device for a DTensor)."""
    return t.to_local().device if is_sharded(t) else t.device


def fill_(param: torch.Tensor, draw: Callable[[torch.Tensor], object]) -> None:
    """Fill ``param`` in place with ``draw(full)``, where ``draw`` fills a tensor of the parameter's global shape.

    A plain tensor is filled directly (no temporary). A DTensor: ``draw`` fills one full-size temporary on the
    local device, and only this rank's slice of it is copied into the local shard (``distribute_tensor`` with
    ``src_data_rank=None``: each rank slices its own copy, no communication, uneven Shard(d) chunks as DTensor
    defines them).
    """
    with torch.no_grad():
        if not is_sharded(param):
            draw(param.detach())
            return
        from torch.distributed.tensor import distribute_tensor

        local = param.to_local()
        full = torch.empty(tuple(param.shape), dtype=param.dtype, device=local.device)
        draw(full)
        mine = distribute_tensor(full, param.device_mesh, param.placements, src_data_rank=None).to_local()
        del full
        local.copy_(mine)


def fill_constant_(param: torch.Tensor, value: float) -> None:
    """``param.fill_(value)`` on the local storage (no temporary, nothing to agree on across ranks)."""
    with torch.no_grad():
        (param.to_local() if is_sharded(param) else param.detach()).fill_(value)


@contextlib.contextmanager
def no_fsdp_hooks(model: nn.Module) -> Iterator[None]:
    """Detach FSDP2's forward hooks (unshard / reshard, root lazy init) from every module while tracing.

    The trace replaces every parameter by a meta tensor of its global shape, so nothing needs gathering; the hooks
    would all-gather (a collective) or fail on the meta pass. They are put back, in their order, on exit.
    """
    if not has_sharded(model):
        yield
        return
    saved = []
    for m in model.modules():
        for attr in ("_forward_pre_hooks", "_forward_hooks"):
            hooks = getattr(m, attr)
            mine = {k: h for k, h in hooks.items() if _is_fsdp_hook(h)}
            if mine:
                saved.append((hooks, dict(hooks)))
                for k in mine:
                    del hooks[k]
    try:
        yield
    finally:
        for hooks, before in saved:
            hooks.clear()
            hooks.update(before)


def _is_fsdp_hook(hook: object) -> bool:
    fn = getattr(hook, "__func__", hook)
    return str(getattr(fn, "__module__", "")).startswith("torch.distributed.fsdp")
