"""What the propagation needs of each normalization module: which statistics it uses (batch, running, instance,
group, layer, RMS, GRN) and the moments of its affine parameters as the plan leaves them."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ._graph import Graph
from ._plan_options import _Options
from ._rules_layer import NormMoments

__all__ = ["_norm_modules", "_norm_kind", "_norm_ms"]


def _norm_modules(model: nn.Module, g: Graph) -> dict[str, nn.Module]:
    names = {n.module for n in g.nodes if n.kind == "norm" and n.module}
    return {n: m for n, m in model.named_modules() if n in names}


def _norm_kind(m: nn.Module) -> tuple[str, dict[str, Any]]:
    """Which statistics a normalization module uses (see :class:`initwise._rules_layer.NormMoments`)."""
    name = type(m).__name__
    if "GlobalResponse" in name or name in ("GRN", "GRNwithNHWC"):
        return "grn", {}
    if isinstance(m, nn.modules.instancenorm._InstanceNorm):
        return ("running" if not m.training and m.track_running_stats else "instance"), {}
    if isinstance(m, nn.modules.batchnorm._NormBase):
        stats = m.track_running_stats and m.running_mean is not None and m.running_var is not None
        return ("running" if stats and not m.training else "batch"), {}
    if isinstance(m, nn.GroupNorm):
        return "group", {"groups": int(m.num_groups), "over_positions": True}
    if isinstance(m, nn.LayerNorm):
        return "layer", {"over_positions": len(m.normalized_shape) > 1,
                         "normalized": int(math.prod(m.normalized_shape))}
    if hasattr(nn, "RMSNorm") and isinstance(m, nn.RMSNorm):
        return "rms", {}
    for key, kind in (("LayerNorm", "layer"), ("GroupNorm", "group"), ("BatchNorm", "batch"),
                      ("InstanceNorm", "instance"), ("RMSNorm", "rms")):
        if key in name:
            extra = {"groups": int(getattr(m, "num_groups", 1) or 1), "over_positions": True} if kind == "group" else {}
            return kind, extra
    return "generic", {}


def _ms(t: Any) -> tuple[float, float]:
    """(mean square, mean) of a tensor, (1, 1) for None."""
    if not isinstance(t, torch.Tensor) or t.numel() == 0 or t.is_meta:
        return 1.0, 1.0
    x = t.detach().double()
    return float(x.square().mean()), float(x.mean())


def _norm_ms(m: nn.Module, o: _Options, zero: bool) -> NormMoments:
    kind, extra = _norm_kind(m)
    w = getattr(m, "weight", None)
    b = getattr(m, "bias", None)
    eps = getattr(m, "eps", 1e-5)
    eps = float(eps) if isinstance(eps, (int, float)) else 1e-5
    keep = o.norm == "keep" or kind == "grn"  # GRN's scale is a response gain, not a norm's: kept (see plan)
    if zero:
        gm = gmean = bm = bmean = 0.0
    elif keep:
        gm, gmean = _ms(w) if isinstance(w, torch.Tensor) else (1.0, 1.0)
        bm, bmean = _ms(b) if isinstance(b, torch.Tensor) else (0.0, 0.0)
    else:  # reset: weight 1, bias 0
        gm, gmean, bm, bmean = 1.0, 1.0, 0.0, 0.0
    if kind == "running":
        a, c = _running_affine(m, zero, keep, eps)
        return NormMoments("running", eps, gm, gmean, bm, bmean, *a, *c)
    return NormMoments(kind, eps, gm, gmean, bm, bmean, **extra)


def _running_affine(m: nn.Module, zero: bool, keep: bool, eps: float) -> tuple[tuple[float, float, float],
                                                                              tuple[float, float]]:
    """``((E[a^2], E[b^2], E[a b]), (E[a], E[b]))`` of the eval-mode map ``a_c x + b_c`` from the running stats."""
    rm = m.running_mean.detach().double()
    rv = m.running_var.detach().double()
    ones = torch.ones_like(rm)
    w = m.weight.detach().double() if keep and isinstance(m.weight, torch.Tensor) else ones
    b = m.bias.detach().double() if keep and isinstance(m.bias, torch.Tensor) else torch.zeros_like(rm)
    if zero:
        w, b = torch.zeros_like(rm), torch.zeros_like(rm)
    a = w / torch.sqrt(rv + eps)
    c = b - a * rm
    return ((float(a.square().mean()), float(c.square().mean()), float((a * c).mean())),
            (float(a.mean()), float(c.mean())))
