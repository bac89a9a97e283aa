"""torch's weight re-parameterizations: spectral norm and weight norm, old (hooks) and new (parametrizations) API.

``nn.utils.spectral_norm(conv)`` replaces ``conv.weight`` by a parameter ``weight_orig`` and computes, before every
forward, ``weight = weight_orig / sigma(weight_orig)`` (sigma: the largest singular value of the weight reshaped to
``(shape[dim], -1)``, estimated by power iteration; Miyato et al., 2018). ``nn.utils.weight_norm`` holds
``weight_g`` (one magnitude per output) and ``weight_v`` (the direction): ``weight = g * v / ||v||`` (Salimans and
Kingma, 2016). ``nn.utils.parametrizations.spectral_norm`` / ``weight_norm`` do the same with
``parametrizations.weight.original`` (``original0`` = g, ``original1`` = v).

What a user expects of an initializer on such a layer: the parameter underneath is drawn with the fans of the
effective weight (same shape); for weight norm, g is then set to ``||v||`` so that the effective weight is the drawn
one (what ``weight_norm`` itself does when it wraps a layer). Spectral norm rescales whatever is drawn to a largest
singular value of 1: the effective weight's mean square is then about ``1 / (sqrt(rows) + sqrt(cols))^2`` for an
i.i.d. draw (the largest singular value of a rows x cols matrix of i.i.d. entries of std s is about
``s (sqrt(rows) + sqrt(cols))``; Bai and Yin, 1988), whatever the scheme's std: the plan says so, and its
prediction is approximate (torch's power-iteration estimate of sigma is refined one step per training forward).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Reparam", "reparams", "weight_norm_magnitude"]


@dataclass(frozen=True)
class Reparam:
    """One re-parameterized weight of a module: ``kind`` "spectral_norm" | "weight_norm", the effective attribute
    (``weight``), the local names of the parameter drawn (``draw``) and of weight norm's magnitude, ``dim``."""

    kind: str
    weight: str
    draw: str
    magnitude: str | None
    dim: int

    def note(self, shape: tuple[int, ...]) -> str:
        if self.kind == "weight_norm":
            return (f"weight norm: {self.draw} drawn as the effective {self.weight}, {self.magnitude} set to its norm "
                    "(the effective weight is the drawn one)")
        rows = shape[self.dim]
        cols = math.prod(shape) // max(rows, 1)
        return (f"spectral norm: {self.draw} drawn with the fans of {self.weight}, which is divided by its largest "
                f"singular value, so its scale is not the drawn one: E[w^2] ~ 1/(sqrt({rows}) + sqrt({cols}))^2 = "
                f"{effective_ms(shape, self.dim):.3g} (approximate)")

    def magnitude_note(self) -> str:
        return f"weight norm magnitude: set to the norm of the drawn {self.draw}"


def effective_ms(shape: tuple[int, ...], dim: int) -> float:
    """Mean square of an i.i.d. weight of ``shape`` divided by its largest singular value (Bai-Yin estimate)."""
    rows = shape[dim] if shape else 1
    cols = math.prod(shape) // max(rows, 1)
    return 1.0 / (math.sqrt(rows) + math.sqrt(cols)) ** 2


def reparams(module: nn.Module) -> dict[str, Reparam]:
    """The module's re-parameterized weights, by the local name of every parameter involved."""
    from torch.nn.utils import parametrize
    from torch.nn.utils.spectral_norm import SpectralNorm
    from torch.nn.utils.weight_norm import WeightNorm

    found: list[Reparam] = []
    for h in module._forward_pre_hooks.values():
        if isinstance(h, SpectralNorm):
            found.append(Reparam("spectral_norm", h.name, f"{h.name}_orig", None, h.dim))
        elif isinstance(h, WeightNorm):
            found.append(Reparam("weight_norm", h.name, f"{h.name}_v", f"{h.name}_g", h.dim))
    if parametrize.is_parametrized(module):
        for name, plist in module.parametrizations.items():
            if len(plist) != 1:
                continue
            kind = type(plist[0]).__name__
            if kind == "_SpectralNorm":
                found.append(Reparam("spectral_norm", name, f"parametrizations.{name}.original", None,
                                     int(plist[0].dim)))
            elif kind == "_WeightNorm":
                dim = plist[0].dim
                found.append(Reparam("weight_norm", name, f"parametrizations.{name}.original1",
                                     f"parametrizations.{name}.original0", -1 if dim is None else int(dim)))
    out: dict[str, Reparam] = {}
    for r in found:
        out[r.draw] = r
        if r.magnitude is not None:
            out[r.magnitude] = r
    return out


def weight_norm_magnitude(v: torch.Tensor, dim: int, shape: tuple[int, ...]) -> torch.Tensor:
    """``||v||`` over every dim but ``dim`` (all of them for ``dim == -1``), in weight norm's g ``shape``."""
    if dim == -1:
        return torch.linalg.vector_norm(v).reshape(shape)
    dims = [d for d in range(v.dim()) if d != dim % v.dim()]
    return torch.linalg.vector_norm(v, dim=dims, keepdim=True).reshape(shape)
