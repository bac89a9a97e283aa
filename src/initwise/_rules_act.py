"""Propagation rule of a pointwise activation: Gaussian pre-activation with the tracked mean and constant parts.

A pre-activation with moments :class:`initwise._signal.Sig` ``(q, mean, dc, dcb)`` is taken as Gaussian with mean
``mean`` and variance ``v = q - mean^2`` (over channels: a weight layer's per-channel constants are Gaussian over
its random weights). Forward: ``E[phi(y)^2]`` and ``E[phi(y)]`` by quadrature at ``(v, mean)``; the constant parts
by the dual kernel ``E[phi(a) phi(b)]`` of two points that share them (covariance ``dc - mean^2``, resp.
``dcb - mean^2``). Backward: ``E[phi'(y)^2]`` times the gradient (independent of the pre-activation, as in
He et al., 2015); the gradient's constant parts scale with the dual kernel of ``phi'`` (``E[phi'(y)]^2`` when
the pre-activation has no constant part, up to ``E[phi'^2]`` when it is all constant).
"""

from __future__ import annotations

import functools
import math

import torch

from ._gains import _derivative, _nodes, dual, moments
from ._signal import Grad, Sig

__all__ = ["act_forward", "act_backward", "slope_correlation"]

_HOMOGENEOUS = {"linear", "relu", "leaky_relu", "prelu"}
_TINY, _HUGE = 1e-30, 1e30


def _at(act, x: Sig) -> tuple[float, float]:
    v = x.q - x.mean * x.mean
    return max(v, 0.0), x.mean


def _point(act, mean: float) -> tuple[float, float]:
    """phi and phi' at a point (a pre-activation without variance)."""
    z = torch.tensor([mean], dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        y = act.function()(z)
        (d,) = torch.autograd.grad(y.sum(), z, allow_unused=True)
    return float(y.detach()), 0.0 if d is None else float(d)


def act_forward(act, x: Sig) -> tuple[Sig, float]:
    v, mu = _at(act, x)
    if not math.isfinite(v) or v > _HUGE:
        return Sig(x.q, x.mean, x.dc, x.dcb), math.inf
    if v < _TINY:
        y, _ = _point(act, mu)
        return Sig(y * y, y, y * y, y * y), 1.0
    if act.name in _HOMOGENEOUS and act.known and mu == 0.0:
        m = moments(act, 1.0)
        second, mean = m.second_moment * v, m.mean * math.sqrt(v)
    else:
        m = moments(act, v, mean=mu)
        second, mean = m.second_moment, m.mean
    m2 = mu * mu
    dc = dual(act, v, min(max(x.dc - m2, -v), v), mu)
    dcb = dual(act, v, min(max(x.dcb - m2, -v), v), mu)
    return Sig(second, mean, dc, dcb).clean(), 1.0


def act_backward(act, d: Grad, x: Sig) -> tuple[list[Grad], float]:
    v, mu = _at(act, x)
    if not math.isfinite(v) or v > _HUGE:
        return [d], math.inf
    if v < _TINY:
        _, slope = _point(act, mu)
        return [d.scaled(slope * slope)], 1.0
    m = moments(act, 1.0 if (act.name in _HOMOGENEOUS and act.known and mu == 0.0) else v, mean=mu)
    # the gradient's constant parts meet phi' averaged over the positions of one channel: E[phi'(a) phi'(b)] of
    # two points that share the pre-activation's constant part
    m2 = mu * mu
    kdc = dual(act, v, min(max(x.dc - m2, -v), v), mu, derivative=True)
    kdcb = dual(act, v, min(max(x.dcb - m2, -v), v), mu, derivative=True)
    return [Grad(d.g * m.backward, d.dc * kdc, d.dcb * kdcb)], 1.0


@functools.lru_cache(maxsize=1024)
def _kappa(act, v: float, mu: float) -> float:
    z, w = _nodes(act, v, mu)
    with torch.no_grad():
        d = _derivative(act)(z)
    return float((w * d * (z - mu)).sum()) / math.sqrt(v)


def slope_correlation(act, x: Sig) -> float:
    """``kappa = E[phi'(y) (y - mean)] / sd`` for the Gaussian pre-activation ``y`` of moments ``x``: how much the
    activation's backward mask leans on the standardized pre-activation (ReLU: ``1 / sqrt(2 pi)``; linear: 1).
    A normalization's backward removes the gradient's part along its standardized output; a gradient that is
    constant over a statistics set meets it through ``phi'`` as ``kappa`` times the set's size."""
    v, mu = _at(act, x)
    if act is None or not act.known or not math.isfinite(v) or v < _TINY or v > _HUGE:
        return 0.0
    return _kappa(act, float(f"{v:.6g}"), float(f"{mu:.6g}"))
