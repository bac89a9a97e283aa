"""Gains of any activation, computed from the activation itself by Gaussian quadrature.

For a pre-activation ``z ~ N(0, q)`` and an activation ``phi`` the three moments that signal propagation
needs are the forward second moment ``E[phi(z)^2]``, the variance ``Var[phi(z)]`` and the backward moment
``E[phi'(z)^2]`` (``phi'`` by autograd). Gains are the factors that make a layer preserve them:

- ``"kaiming"``: ``1/sqrt(E[phi(z)^2])`` at q = 1 (He et al., 2015, Eq. 10): ReLU sqrt(2).
- ``"backward"``: ``1/sqrt(E[phi'(z)^2])`` (He et al., 2015, Eq. 14's factor): ReLU sqrt(2), tanh differs.
- ``"variance"``: ``1/sqrt(Var[phi(z)])`` (Brock et al., 2021, NF-Net "gamma"): ReLU
  ``1/sqrt(1/2 - 1/(2 pi)) = 1.7129`` (NF-Net's code lists 1.7139, a Monte Carlo estimate).
- ``"torch"``: exactly ``torch.nn.init.calculate_gain``'s value, for the activations it knows.

Smooth activations at moderate variance (1/4 <= q <= 4, zero mean) use Gauss-Hermite quadrature
(probabilists' nodes, 96 points: exact for polynomials of degree 191). Everything else (kinks: ReLU family,
hard* functions, ELU/SELU at 0, a user's function; any variance; a non-zero mean) uses Gauss-Legendre panels of
the Gaussian density, split at the kinks and at the activation's own scale: breakpoints at ``z = +-2^k``
(k = -3..7) mapped into standard-normal units. A sigmoid at q = 1e4 changes within |z| < 10, i.e. within
|u| < 0.1 of the density's centre, where fixed Hermite nodes (spacing ~0.3) see nothing (3e-15 for E[phi'^2]
instead of 6.6e-4); the scale breakpoints put panels there. Both reach ~1e-12 on the closed forms; the Monte
Carlo tests cover q from 1e-4 to 1e4.

:func:`dual` gives ``E[phi(a) phi(b)]`` for two jointly Gaussian pre-activations (the "dual kernel" of
Cho and Saul, 2009; closed form for the ReLU family): propagation uses it for the component of a signal that is
constant over positions (per-channel means, what a batch norm subtracts and a global pool keeps).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from ._activations import Activation, resolve_activation

__all__ = ["gain", "moments", "Moments", "dual", "max_moments"]

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
        backward_mean: ``E[phi'(z)]``.
    """

    q: float
    mean: float
    second_moment: float
    variance: float
    backward: float
    backward_mean: float = float("nan")


@functools.lru_cache(maxsize=1)
def _hermite() -> tuple[torch.Tensor, torch.Tensor]:
    x, w = np.polynomial.hermite_e.hermegauss(_HERMITE_NODES)
    return torch.from_numpy(x), torch.from_numpy(w / math.sqrt(2.0 * math.pi))


@functools.lru_cache(maxsize=1)
def _legendre() -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(_LEGENDRE_NODES)


@functools.lru_cache(maxsize=1024)
def _panels(breaks: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes and weights in standard-normal units u for the density of N(0, 1) on [-12, 12], split at breaks."""
    edges = sorted({-_TAIL, _TAIL, *(b for b in breaks if -_TAIL < b < _TAIL)})
    gx, gw = _legendre()
    cuts = np.concatenate([np.linspace(a, b, max(1, math.ceil((b - a) / _PANEL)) + 1)[:-1]
                           for a, b in zip(edges[:-1], edges[1:])] + [np.array([_TAIL])])
    lo, hi = cuts[:-1, None], cuts[1:, None]
    half = (hi - lo) / 2
    x = lo + half * (gx[None, :] + 1)
    w = gw[None, :] * half * np.exp(-x * x / 2) / math.sqrt(2 * math.pi)
    return torch.from_numpy(x.reshape(-1)), torch.from_numpy(w.reshape(-1))


_SCALES = tuple(sorted({s * 2.0**k for k in range(-3, 8) for s in (-1.0, 1.0)} | {0.0}))  # z = 0, +-1/8 .. +-128


def _nodes(act: Activation, q: float, mean: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes ``z`` and weights for ``E[f(z)]``, ``z ~ N(mean, q)``."""
    breaks = act.breakpoints()
    s = math.sqrt(q)
    if not breaks and mean == 0.0 and 0.25 <= q <= 4.0:
        u, w = _hermite()
    else:
        pts = (*breaks, *_SCALES)
        u, w = _panels(tuple(sorted({round((b - mean) / s, 12) for b in pts if abs(b - mean) < _TAIL * s})))
    return u * s + mean, w


@functools.lru_cache(maxsize=4096)
def _moments_cached(act: Activation, q: float, mean: float = 0.0) -> Moments:
    z, w = _nodes(act, q, mean)
    z = z.clone().requires_grad_(True)
    with torch.enable_grad():
        y = act.function()(z)
        if not isinstance(y, torch.Tensor) or y.shape != z.shape:
            raise ValueError(f"activation {act.name!r} must map a tensor to a tensor of the same shape")
        (dy,) = torch.autograd.grad(y.sum(), z, allow_unused=True)
    y = y.detach()
    dy = torch.zeros_like(z) if dy is None else dy.detach()
    m1 = float((w * y).sum())
    second = float((w * y * y).sum())
    back = float((w * dy * dy).sum())
    values = {"E[phi]": m1, "E[phi^2]": second, "E[phi'^2]": back}
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    if bad:
        raise ValueError(f"activation {act} has non-finite moments at q={q}: {', '.join(bad)} (is it defined on all reals?)")
    return Moments(q=q, mean=m1, second_moment=second, variance=max(second - m1 * m1, 0.0), backward=back,
                   backward_mean=float((w * dy).sum()))


def _relu_kernel(q: float, cov: float) -> float:
    """``E[relu(a) relu(b)]``, a, b ~ N(0, q) with covariance cov (the arc-cosine kernel, Cho and Saul 2009)."""
    c = max(-1.0, min(1.0, cov / q))
    t = math.acos(c)
    return q / (2 * math.pi) * (math.sin(t) + (math.pi - t) * c)


_INNER = 48  # Gauss-Hermite nodes of the inner (conditional) expectation of the dual kernel


def _derivative(act: Activation):
    fn = act.function()

    def d(x: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            z = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(fn(z).sum(), z, allow_unused=True)
        return torch.zeros_like(x) if g is None else g

    return d


@functools.lru_cache(maxsize=4096)
def _dual_cached(act: Activation, q: float, cov: float, mean: float, deriv: bool = False) -> float:
    c = max(-1.0, min(1.0, cov / q))
    if mean == 0.0 and act.name in ("linear", "relu", "leaky_relu", "prelu") and act.known:
        a = 1.0 if act.name == "linear" else 0.0 if act.name == "relu" else float(act.param("negative_slope"))
        if deriv:  # phi' = a + (1 - a) step: E[step(x) step(y)] = (pi - theta) / (2 pi)
            step = (math.pi - math.acos(c)) / (2 * math.pi)
            return a * a + a * (1 - a) + (1 - a) ** 2 * step
        # phi = a x + (1 - a) relu(x): E[x relu(y)] = cov / 2 by the symmetry (x, y) -> (-x, -y)
        return a * c * q + (1 - a) ** 2 * _relu_kernel(q, c * q)
    m = _moments_cached(act, q, mean)
    if c >= 1.0 - 1e-12:
        return m.backward if deriv else m.second_moment
    if c <= 1e-12 and c >= -1e-12:
        return (m.backward_mean if deriv else m.mean) ** 2
    # b = mean + s (c u + sqrt(1 - c^2) u2): E[phi(a) phi(b)] = E_u[phi(a) E_u2[phi(b) | u]]
    z, w = _nodes(act, q, mean)
    s = math.sqrt(q)
    hx, hw = _hermite_n(_INNER)
    inner = mean + c * (z - mean)[:, None] + s * math.sqrt(1 - c * c) * hx[None, :]
    fn = _derivative(act) if deriv else act.function()
    with torch.no_grad():
        h = (fn(inner.reshape(-1)).reshape(inner.shape) * hw[None, :]).sum(1)
        value = float((w * fn(z) * h).sum())
    if not math.isfinite(value):
        raise ValueError(f"activation {act} has a non-finite dual kernel at q={q}, cov={cov}")
    return value


@functools.lru_cache(maxsize=1024)
def _max_cached(act: Activation, k: int, q: float, mean: float) -> tuple[float, float]:
    z, w = _nodes(act, q, mean)
    u = (z - mean) / math.sqrt(q)
    wk = w * k * torch.special.ndtr(u) ** (k - 1)  # the density of the largest of k draws
    with torch.no_grad():
        y = act.function()(z)
    return float((wk * y * y).sum()), float((wk * y).sum())


def max_moments(activation: Any, k: int, q: float, mean: float = 0.0, shared: float = 0.0) -> tuple[float, float]:
    """``(E[phi(M)^2], E[phi(M)])`` for ``M`` the largest of ``k`` draws ``mu + e_i``, ``e_i ~ N(0, q)``
    independent, ``mu ~ N(mean, shared)`` common to the window: the moments of max pooling ``k`` values
    ``phi(z_i)`` for a non-decreasing ``phi`` (the max commutes with it) whose window shares a constant part
    (a channel's mean over the image). The outer expectation over ``mu`` uses 32 Gauss-Hermite nodes."""
    act = resolve_activation(activation)
    if shared <= 0:
        return _max_cached(act, int(k), float(q), float(mean))
    return _max_shared(act, int(k), float(q), float(mean), float(shared))


def max_slope(activation: Any, k: int, q: float, mean: float = 0.0, shared: float = 0.0) -> float:
    """``E[phi'(M)^2]`` for ``M`` the largest of ``k`` draws as in :func:`max_moments` (``k = 1``: of one draw):
    what the backward of an activation passes at the values a max pool picks."""
    act = resolve_activation(activation)
    return _max_shared(act, int(k), float(q), float(mean), max(float(shared), 0.0), True)[0]


@functools.lru_cache(maxsize=1024)
def _max_shared(act: Activation, k: int, q: float, mean: float, shared: float,
                slope: bool = False) -> tuple[float, float]:
    """The 32-node outer expectation of :func:`max_moments` in one pass: every node's inner quadrature (the nodes
    ``_max_cached`` would use for ``mean + s * xi``) evaluated in one activation call (one call per node cost ~1 ms
    of torch overhead, a model's plan several seconds)."""
    x, w = _hermite_n(32)
    s = math.sqrt(shared)
    zs, ws, us = [], [], []
    for xi, wi in zip(x.tolist(), w.tolist()):
        m = float(f"{mean + s * xi:.6g}")
        z, wz = _nodes(act, q, m)
        zs.append(z)
        ws.append(wz * wi)
        us.append((z - m) / math.sqrt(q))
    z, wz = torch.cat(zs), torch.cat(ws)
    wk = wz * k * torch.special.ndtr(torch.cat(us)) ** (k - 1)
    if slope:
        y = _derivative(act)(z)
    else:
        with torch.no_grad():
            y = act.function()(z)
    return float((wk * y * y).sum()), float((wk * y).sum())


@functools.lru_cache(maxsize=4)
def _hermite_n(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, w = np.polynomial.hermite_e.hermegauss(n)
    return torch.from_numpy(x), torch.from_numpy(w / math.sqrt(2.0 * math.pi))


def dual(activation: Any, q: float, cov: float, mean: float = 0.0, *, param: float | None = None,
         derivative: bool = False) -> float:
    """``E[phi(a) phi(b)]`` for ``a, b ~ N(mean, q)`` with covariance ``cov`` (``|cov| <= q``); of ``phi'`` with
    ``derivative`` (what the constant part of a gradient becomes through the activation).

    ``cov = q`` gives ``E[phi^2]``, ``cov = 0`` gives ``E[phi]^2``. ReLU, leaky ReLU, PReLU and linear at zero
    mean use the arc-cosine kernel (Cho and Saul, 2009); others nested quadrature (Gauss-Legendre panels outside,
    48-point Gauss-Hermite for the conditional expectation inside).

    Example:
        >>> round(dual("relu", 1.0, 0.0), 6) == round(1 / (2 * math.pi), 6)
        True
    """
    if not (isinstance(q, (int, float)) and math.isfinite(q) and q > 0):
        raise ValueError(f"q (variance) must be a positive finite number, got {q!r}")
    if not (isinstance(cov, (int, float)) and math.isfinite(cov) and abs(cov) <= q * (1 + 1e-9)):
        raise ValueError(f"cov must be a finite number with |cov| <= q = {q}, got {cov!r}")
    act = resolve_activation(activation, param)
    return _dual_cached(act, float(q), float(cov), float(mean), bool(derivative))


def moments(activation: Any = "relu", q: float = 1.0, *, param: float | None = None, mean: float = 0.0) -> Moments:
    """Forward and backward moments of ``phi(z)`` for ``z ~ N(mean, q)``, by quadrature (any q from 1e-4 to 1e4).

    Positively homogeneous activations (ReLU, leaky ReLU, linear) scale with q; tanh, GELU, SiLU, ELU do not,
    which is why a plan evaluates them at each layer's predicted pre-activation variance.

    Args:
        activation: a name, nn.Module, class or callable (see :func:`initwise.resolve_activation`).
        q: variance of the Gaussian pre-activation, > 0.
        param: negative slope for ``"leaky_relu"``/``"prelu"`` (torch's ``calculate_gain`` convention).
        mean: the mean of the pre-activation (0 by default).

    Example:
        >>> round(moments("relu").second_moment, 6)
        0.5
    """
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not math.isfinite(q) or q <= 0:
        raise ValueError(f"q (pre-activation variance) must be a positive finite number, got {q!r}")
    if isinstance(mean, bool) or not isinstance(mean, (int, float)) or not math.isfinite(mean):
        raise ValueError(f"mean must be a finite number, got {mean!r}")
    act = resolve_activation(activation, param)
    return _moments_cached(act, float(q), float(mean))


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
