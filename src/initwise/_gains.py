"""Gains of any activation, computed from the activation itself by Gaussian quadrature.

For a pre-activation ``z ~ N(0, q)`` and an activation ``phi`` the three moments that signal propagation
needs are the forward second moment ``E[phi(z)^2]``, the variance ``Var[phi(z)]`` and the backward moment
``E[phi'(z)^2]`` (``phi'`` by autograd). Gains are the factors that make a layer preserve them:

- ``"kaiming"``: ``1/sqrt(E[phi(z)^2])`` at q = 1 (He et al., 2015, Eq. 10): ReLU sqrt(2).
- ``"backward"``: ``1/sqrt(E[phi'(z)^2])`` (He et al., 2015, Eq. 14's factor): ReLU sqrt(2), tanh differs.
- ``"variance"``: ``1/sqrt(Var[phi(z)])`` (Brock et al., 2021, NF-Net "gamma"): ReLU
  ``1/sqrt(1/2 - 1/(2 pi)) = 1.7129`` (NF-Net's code lists 1.7139, a Monte Carlo estimate).
- ``"torch"``: exactly ``torch.nn.init.calculate_gain``'s value, for the activations it knows.

Smooth activations use Gauss-Hermite quadrature (probabilists' nodes, 96 points: exact for polynomials of
degree 191). Activations with kinks (ReLU family, hard* functions, ELU/SELU at 0, a user's function) use
Gauss-Legendre panels of the Gaussian density split at the kinks, since Gauss-Hermite converges slowly
across a kink; both reach ~1e-12 on the closed forms.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from ._activations import Activation, resolve_activation

__all__ = ["gain", "moments", "Moments"]

Convention = Literal["kaiming", "backward", "variance", "torch"]
_CONVENTIONS = ("kaiming", "backward", "variance", "torch")

_HERMITE_NODES = 96
_PANEL = 0.5  # width of a Gauss-Legendre panel in standard-normal units
_LEGENDRE_NODES = 24
_TAIL = 12.0  # |u| > 12 carries Gaussian mass < 4e-33: negligible for functions of polynomial growth


@dataclass(frozen=True)
class Moments:
    """Moments of ``phi(z)``, ``z ~ N(0, q)``.

    Attributes:
        q: the variance of the pre-activation.
        mean: ``E[phi(z)]``.
        second_moment: ``E[phi(z)^2]`` (forward propagation of second moments).
        variance: ``Var[phi(z)]``.
        backward: ``E[phi'(z)^2]`` (backward propagation of gradient second moments).
    """

    q: float
    mean: float
    second_moment: float
    variance: float
    backward: float


@functools.lru_cache(maxsize=1)
def _hermite() -> tuple[torch.Tensor, torch.Tensor]:
    x, w = np.polynomial.hermite_e.hermegauss(_HERMITE_NODES)
    return torch.from_numpy(x), torch.from_numpy(w / math.sqrt(2.0 * math.pi))


@functools.lru_cache(maxsize=64)
def _panels(breaks: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes and weights in standard-normal units u for the density of N(0, 1) on [-12, 12], split at breaks."""
    edges = sorted({-_TAIL, _TAIL, *(b for b in breaks if -_TAIL < b < _TAIL)})
    gx, gw = np.polynomial.legendre.leggauss(_LEGENDRE_NODES)
    xs, ws = [], []
    for a, b in zip(edges[:-1], edges[1:]):
        n = max(1, math.ceil((b - a) / _PANEL))
        cuts = np.linspace(a, b, n + 1)
        for lo, hi in zip(cuts[:-1], cuts[1:]):
            half = (hi - lo) / 2
            x = lo + half * (gx + 1)
            xs.append(x)
            ws.append(gw * half * np.exp(-x * x / 2) / math.sqrt(2 * math.pi))
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ws))


def _nodes(act: Activation, q: float) -> tuple[torch.Tensor, torch.Tensor]:
    breaks = act.breakpoints()
    s = math.sqrt(q)
    if breaks:
        u, w = _panels(tuple(round(b / s, 15) for b in breaks))
    else:
        u, w = _hermite()
    return u * s, w


@functools.lru_cache(maxsize=1024)
def _moments_cached(act: Activation, q: float) -> Moments:
    z, w = _nodes(act, q)
    z = z.clone().requires_grad_(True)
    with torch.enable_grad():
        y = act.function()(z)
        if not isinstance(y, torch.Tensor) or y.shape != z.shape:
            raise ValueError(f"activation {act.name!r} must map a tensor to a tensor of the same shape")
        (dy,) = torch.autograd.grad(y.sum(), z, allow_unused=True)
    y = y.detach()
    dy = torch.zeros_like(z) if dy is None else dy.detach()
    mean = float((w * y).sum())
    second = float((w * y * y).sum())
    back = float((w * dy * dy).sum())
    values = {"E[phi]": mean, "E[phi^2]": second, "E[phi'^2]": back}
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    if bad:
        raise ValueError(f"activation {act} has non-finite moments at q={q}: {', '.join(bad)} (is it defined on all reals?)")
    return Moments(q=q, mean=mean, second_moment=second, variance=max(second - mean * mean, 0.0), backward=back)


def moments(activation: Any = "relu", q: float = 1.0, *, param: float | None = None) -> Moments:
    """Forward and backward moments of ``phi(z)`` for ``z ~ N(0, q)``, by quadrature.

    Positively homogeneous activations (ReLU, leaky ReLU, linear) scale with q; tanh, GELU, SiLU, ELU do not,
    which is why a plan evaluates them at each layer's predicted pre-activation variance.

    Args:
        activation: a name, nn.Module, class or callable (see :func:`initwise.resolve_activation`).
        q: variance of the Gaussian pre-activation, > 0.
        param: negative slope for ``"leaky_relu"``/``"prelu"`` (torch's ``calculate_gain`` convention).

    Example:
        >>> round(moments("relu").second_moment, 6)
        0.5
    """
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not math.isfinite(q) or q <= 0:
        raise ValueError(f"q (pre-activation variance) must be a positive finite number, got {q!r}")
    act = resolve_activation(activation, param)
    return _moments_cached(act, float(q))


_TORCH_LINEAR = ("linear", "sigmoid")


def _torch_gain(act: Activation) -> float:
    """``torch.nn.init.calculate_gain`` reproduced exactly (same expressions, same rounding)."""
    if act.name in _TORCH_LINEAR:
        return 1
    if act.name == "tanh":
        return 5.0 / 3
    if act.name == "relu":
        return math.sqrt(2.0)
    if act.name == "leaky_relu":
        slope = act.param("negative_slope")
        return math.sqrt(2.0 / (1 + slope**2))
    if act.name == "selu":
        return 3.0 / 4  # torch's choice, for self-normalizing nets: not a variance-preserving gain
    raise ValueError(
        f"torch.nn.init.calculate_gain has no value for {act}; it knows: linear (and conv*), sigmoid, tanh, "
        "relu, leaky_relu, selu. Use convention='kaiming' for this activation"
    )


def _closed_form(act: Activation) -> float | None:
    """Exact Kaiming gains where a closed form exists (same expressions as torch, so bit-equal)."""
    if act.name == "linear":
        return 1.0
    if act.name == "relu":
        return math.sqrt(2.0)
    if act.name in ("leaky_relu", "prelu"):
        return math.sqrt(2.0 / (1 + act.param("negative_slope") ** 2))
    return None


def gain(activation: Any = "relu", convention: Convention = "kaiming", *, param: float | None = None) -> float:
    """The gain of an activation under a convention, for ``std = gain / sqrt(fan)``.

    ``"kaiming"``: ``1/sqrt(E[phi(z)^2])``; ``"backward"``: ``1/sqrt(E[phi'(z)^2])``;
    ``"variance"``: ``1/sqrt(Var[phi(z)])``; ``"torch"``: ``torch.nn.init.calculate_gain``. All at z ~ N(0, 1).
    For ReLU, leaky ReLU, PReLU and linear the Kaiming and backward gains are the closed form
    ``sqrt(2 / (1 + a^2))`` (He et al., 2015), computed with torch's expression.

    Args:
        activation: a name (``"gelu"``, ``"leaky_relu"``, ...), an nn.Module (its parameters are read:
            LeakyReLU's slope, PReLU's current weight, ELU's alpha, GELU's approximate), a class, a callable.
        convention: ``"kaiming"``, ``"backward"``, ``"variance"`` or ``"torch"``.
        param: torch's second argument: the negative slope for ``"leaky_relu"``/``"prelu"``.

    Example:
        >>> round(gain("relu"), 4), round(gain("relu", "variance"), 4), gain("tanh", "torch")
        (1.4142, 1.7129, 1.6666666666666667)
    """
    if convention not in _CONVENTIONS:
        raise ValueError(f"unknown gain convention {convention!r}; valid: {', '.join(_CONVENTIONS)}")
    act = resolve_activation(activation, param)
    if convention == "torch":
        return _torch_gain(act)
    if convention in ("kaiming", "backward"):
        exact = _closed_form(act)
        if exact is not None:
            return exact
    m = _moments_cached(act, 1.0)
    value = {"kaiming": m.second_moment, "backward": m.backward, "variance": m.variance}[convention]
    if not value > 0:
        raise ValueError(f"activation {act} has {convention} moment {value!r} <= 0: no finite gain exists")
    return 1.0 / math.sqrt(value)
