"""Tensor-level initializers, drop-in compatible with ``torch.nn.init``, built on layer-aware fans.

Every variance-preserving initializer is a one-line special case of :func:`variance_scaling_`
(as JAX's ``glorot_uniform = variance_scaling(1.0, "fan_avg", "uniform")``); the structured ones (orthogonal,
identity, ICNR) are in :mod:`initwise._structured` and share this module's checks. All of them:

- mutate in place under ``torch.no_grad()`` and return the tensor (torch's contract);
- take ``module=`` (the layer that owns the tensor) and then use that layer's *effective* fans (stride,
  groups and transposition accounted for: see :func:`initwise.fans`); without it, torch's shape-only fans
  (``size(1) * k``, ``size(0) * k``); ``fans=`` overrides both;
- take ``generator=`` and are bit-reproducible with it;
- accept float16, bfloat16, float32 and float64 tensors (sampling happens in float32 or float64 where torch's
  own kernels would round badly, e.g. the truncated normal);
- on meta tensors, validate their arguments and return the tensor unchanged (there is no data to fill).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

from ._fans import Fans, fans as layer_fans, tensor_fans
from ._gains import gain as activation_gain

__all__ = [
    "variance_scaling_", "kaiming_normal_", "kaiming_uniform_", "xavier_normal_", "xavier_uniform_",
    "lecun_normal_", "lecun_uniform_", "truncated_normal_std",
]

Mode = Literal["fan_in", "fan_out", "fan_avg"]
Distribution = Literal["normal", "truncated_normal", "uniform"]
_MODES = ("fan_in", "fan_out", "fan_avg")
_DISTRIBUTIONS = ("normal", "truncated_normal", "uniform")
FansLike = Fans | tuple[float, float] | None


def truncated_normal_std(bound: float = 2.0) -> float:
    """Std of N(0, 1) truncated to ``[-bound, bound]``: ``sqrt(1 - 2 b phi(b) / (2 Phi(b) - 1))``.

    ``truncated_normal_std(2.0) = 0.8796256610342398`` (the constant JAX and TF divide by).
    """
    mass = math.erf(bound / math.sqrt(2.0))
    density = math.exp(-bound * bound / 2) / math.sqrt(2 * math.pi)
    return math.sqrt(1.0 - 2.0 * bound * density / mass)


def _check_tensor(tensor: Any, what: str = "tensor") -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(tensor).__name__}")
    if not tensor.is_floating_point():
        raise TypeError(
            f"{what} has dtype {tensor.dtype}; initializers need a floating dtype "
            "(float16, bfloat16, float32, float64)"
        )
    if tensor.numel() == 0:
        raise ValueError(f"{what} has zero elements (shape {tuple(tensor.shape)}): nothing to initialize")


def _check_number(value: Any, what: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise ValueError(f"{what} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
    return v


# a N(0, 1) draw beyond 10 has probability ~1.5e-23: a normal fill whose std * 10 is finite in the dtype never
# overflows in practice; uniform draws reach sqrt(3) std, truncated ones bound * std / truncated_normal_std(bound)
_NORMAL_PEAK = 10.0


def _check_fits(tensor: torch.Tensor, peak: float, what: str) -> None:
    """A ValueError naming ``what`` when values of magnitude ``peak`` are not finite in ``tensor``'s dtype."""
    top = torch.finfo(tensor.dtype).max
    if not math.isfinite(peak) or peak > top:
        raise ValueError(f"{what} is too large for {tensor.dtype}: the values would reach {peak:.3g}, beyond its "
                         f"largest finite value {top:.3g} (they would be filled with inf)")


def _param_name(module: nn.Module, tensor: torch.Tensor) -> str:
    for name, p in module.named_parameters(recurse=False):
        if p is tensor or (p.shape == tensor.shape and not p.is_meta and not tensor.is_meta
                           and p.data_ptr() == tensor.data_ptr()):
            return name
    names = [n for n, _ in module.named_parameters(recurse=False)]
    raise ValueError(
        f"tensor of shape {tuple(tensor.shape)} is not a parameter of the given {type(module).__name__} "
        f"(its parameters: {', '.join(names) or 'none'})"
    )


def resolve_fans(tensor: torch.Tensor, module: nn.Module | None = None, fans: FansLike = None) -> Fans:
    """The fans an initializer uses: ``fans`` if given, else the owning ``module``'s, else the shape's."""
    if fans is not None:
        if isinstance(fans, Fans):
            return fans
        if isinstance(fans, Sequence) and len(fans) == 2:
            fi = _check_number(fans[0], "fans[0] (fan_in)", positive=True)
            fo = _check_number(fans[1], "fans[1] (fan_out)", positive=True)
            return Fans(fi, fo, fi, fo, fi, fo, "given")
        raise TypeError(f"fans must be a Fans object or a (fan_in, fan_out) pair, got {fans!r}")
    if module is not None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
        return layer_fans(module, _param_name(module, tensor))
    return tensor_fans(tensor)


def variance_scaling_(
    tensor: torch.Tensor,
    scale: float = 1.0,
    mode: Mode = "fan_in",
    distribution: Distribution = "normal",
    *,
    module: nn.Module | None = None,
    fans: FansLike = None,
    generator: torch.Generator | None = None,
    bound: float = 2.0,
) -> torch.Tensor:
    """Fill ``tensor`` with zero-mean values of variance ``scale / fan``.

    ``fan`` is the effective fan_in, fan_out or their mean (``mode``) of the layer given by ``module=``
    (stride, groups, transposition and packing accounted for), else of the tensor's shape as torch reads it.
    Distributions: ``"normal"`` N(0, std^2); ``"uniform"`` U(-sqrt(3) std, sqrt(3) std);
    ``"truncated_normal"``: std is the std *after* truncation at ``+-bound`` standard deviations
    (sampled by the inverse CDF in float32/64, so no pile-up at the bounds in bfloat16/float16).

    Example:
        >>> conv = nn.Conv2d(16, 16, 3, groups=16)
        >>> w = variance_scaling_(conv.weight, 2.0, "fan_out", module=conv)   # std = sqrt(2 / 9)
    """
    return _variance_scaling(tensor, scale, mode, distribution, module=module, fans=fans, generator=generator,
                             bound=bound, what="scale")


def _variance_scaling(tensor: torch.Tensor, scale: float, mode: Mode, distribution: Distribution, *,
                      module: nn.Module | None, fans: FansLike, generator: torch.Generator | None, bound: float,
                      what: str) -> torch.Tensor:
    """:func:`variance_scaling_`; ``what`` names the user's option in errors (``scale``, or ``gain=...``)."""
    std, bound = _scaling_std(tensor, scale, mode, distribution, module=module, fans=fans, bound=bound, what=what)
    if tensor.is_meta:
        return tensor
    with torch.no_grad():
        if distribution in ("normal", "uniform"):
            return draw_scaled(tensor, distribution, std, generator)
        reach = min(bound, _NORMAL_PEAK)
        work = torch.float64 if tensor.dtype == torch.float64 else torch.float32
        lo = 0.5 * (1.0 + math.erf(-bound / math.sqrt(2.0)))
        u = torch.empty(tensor.shape, dtype=work, device=tensor.device).uniform_(lo, 1.0 - lo, generator=generator)
        z = torch.special.ndtri(u).clamp_(-reach, reach)
        return tensor.copy_(z.mul_(std / truncated_normal_std(bound)))


def draw_scaled(tensor: torch.Tensor, distribution: str, std: float, generator: torch.Generator | None) -> torch.Tensor:
    """The one torch call of a zero-mean normal or uniform draw of standard deviation ``std``, in place (no checks:
    :func:`_scaling_std` makes them)."""
    if distribution == "normal":
        return tensor.normal_(0.0, std, generator=generator)
    limit = math.sqrt(3.0) * std
    return tensor.uniform_(-limit, limit, generator=generator)


def _scaling_std(tensor: torch.Tensor, scale: float, mode: Mode, distribution: Distribution, *,
                 module: nn.Module | None, fans: FansLike, bound: float, what: str) -> tuple[float, float]:
    """Every check of :func:`_variance_scaling` (the errors a call would raise) and the ``(std, bound)`` it draws
    with, drawing nothing: validation and the draw itself (:mod:`initwise._apply`) use the same arithmetic."""
    _check_tensor(tensor)
    if what == "scale":
        scale = _check_number(scale, "scale")
    if mode not in _MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(_MODES)}")
    if distribution not in _DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {distribution!r}; valid: {', '.join(_DISTRIBUTIONS)}")
    bound = _check_number(bound, "bound", positive=True)
    f = resolve_fans(tensor, module, fans)
    if mode == "fan_avg":
        # torch's xavier expression gain * sqrt(2 / (fan_in + fan_out)) (sqrt(g * g) == g exactly in IEEE
        # arithmetic), so that xavier_* stays bit-equal to torch.nn.init's for the same generator
        std = math.sqrt(scale) * math.sqrt(2.0 / (f.fan_in + f.fan_out))
    else:
        std = math.sqrt(scale) / math.sqrt(f.get(mode))
    reach = min(bound, _NORMAL_PEAK)  # a truncation beyond 10 std is no truncation in any float dtype
    peak = std * {"normal": _NORMAL_PEAK, "uniform": math.sqrt(3.0)}.get(distribution,
                                                                          reach / truncated_normal_std(bound))
    _check_fits(tensor, peak, f"{what}={scale!r}" if what == "scale" else what)
    return std, bound


def _kaiming_gain(nonlinearity: Any, a: float) -> float:
    name = nonlinearity.lower() if isinstance(nonlinearity, str) else None
    if name in ("leaky_relu", "prelu", "leakyrelu"):
        return activation_gain(name, param=a)
    return activation_gain(nonlinearity)


def kaiming_normal_(
    tensor: torch.Tensor, a: float = 0, mode: Mode = "fan_in", nonlinearity: Any = "leaky_relu",
    generator: torch.Generator | None = None, *, module: nn.Module | None = None, fans: FansLike = None,
) -> torch.Tensor:
    """He normal: std = gain / sqrt(fan) (He et al., 2015), with effective fans when ``module`` is given.

    ``nonlinearity`` is the activation *after* the layer: a name, module, class or callable; the gain is
    ``1/sqrt(E[phi(z)^2])`` (:func:`initwise.gain`), equal to torch's for relu/leaky_relu/linear and computed
    for the rest (tanh 1.5925 where torch uses 5/3). With a Linear (or no module) this is bit-equal to
    ``torch.nn.init.kaiming_normal_`` for the same generator.

    Example:
        >>> lin = nn.Linear(64, 32)
        >>> _ = kaiming_normal_(lin.weight, nonlinearity="relu", module=lin)
    """
    g = _kaiming_gain(nonlinearity, a)
    return _variance_scaling(tensor, g * g, mode, "normal", module=module, fans=fans, generator=generator,
                             bound=2.0, what=f"the gain {g:.4g} of nonlinearity={nonlinearity!r}")


def kaiming_uniform_(
    tensor: torch.Tensor, a: float = 0, mode: Mode = "fan_in", nonlinearity: Any = "leaky_relu",
    generator: torch.Generator | None = None, *, module: nn.Module | None = None, fans: FansLike = None,
) -> torch.Tensor:
    """He uniform: U(-b, b), b = gain * sqrt(3 / fan); see :func:`kaiming_normal_`."""
    g = _kaiming_gain(nonlinearity, a)
    return _variance_scaling(tensor, g * g, mode, "uniform", module=module, fans=fans, generator=generator,
                             bound=2.0, what=f"the gain {g:.4g} of nonlinearity={nonlinearity!r}")


def xavier_normal_(tensor: torch.Tensor, gain: float = 1.0, generator: torch.Generator | None = None, *,
                   module: nn.Module | None = None, fans: FansLike = None) -> torch.Tensor:
    """Glorot normal: std = gain * sqrt(2 / (fan_in + fan_out)) (Glorot & Bengio, 2010), effective fans."""
    g = _check_number(gain, "gain")
    return _variance_scaling(tensor, g * g, "fan_avg", "normal", module=module, fans=fans, generator=generator,
                             bound=2.0, what=f"gain={gain!r}")


def xavier_uniform_(tensor: torch.Tensor, gain: float = 1.0, generator: torch.Generator | None = None, *,
                    module: nn.Module | None = None, fans: FansLike = None) -> torch.Tensor:
    """Glorot uniform: U(-b, b), b = gain * sqrt(6 / (fan_in + fan_out)), effective fans."""
    g = _check_number(gain, "gain")
    return _variance_scaling(tensor, g * g, "fan_avg", "uniform", module=module, fans=fans, generator=generator,
                             bound=2.0, what=f"gain={gain!r}")


def lecun_normal_(tensor: torch.Tensor, generator: torch.Generator | None = None, *,
                  module: nn.Module | None = None, fans: FansLike = None) -> torch.Tensor:
    """LeCun normal: std = 1 / sqrt(fan_in) (LeCun et al., 1998). JAX's version truncates: use
    ``variance_scaling_(t, 1.0, "fan_in", "truncated_normal")`` for that."""
    return variance_scaling_(tensor, 1.0, "fan_in", "normal", module=module, fans=fans, generator=generator)


def lecun_uniform_(tensor: torch.Tensor, generator: torch.Generator | None = None, *,
                   module: nn.Module | None = None, fans: FansLike = None) -> torch.Tensor:
    """LeCun uniform: U(-b, b), b = sqrt(3 / fan_in)."""
    return variance_scaling_(tensor, 1.0, "fan_in", "uniform", module=module, fans=fans, generator=generator)
