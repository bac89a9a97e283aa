"""Propagation rule of a pointwise activation: Gaussian pre-activation with the tracked mean and constant parts.

A pre-activation with moments :class:`initwise._signal.Sig` ``(q, mean, dc, dcb)`` is taken as Gaussian with mean
``mean`` and variance ``v = q - mean^2`` (over channels: a weight layer's per-channel constants are Gaussian over
its random weights). Forward: ``E[phi(y)^2]`` and ``E[phi(y)]`` by quadrature at ``(v, mean)``; the constant parts
by the dual kernel ``E[phi(a) phi(b)]`` of two points that share them (covariance ``dc - mean^2``, resp.
``dcb - mean^2``). A ReLU of a rectified stream plus a Gaussian (``Sig.rect``: a post-activation residual join)
takes its mean, second moment and ``P(z > 0)`` from :mod:`initwise._rules_rect` instead, the constant parts'
covariances scaled with the variance. Backward: ``E[phi'(y)^2]`` times the gradient (independent of the
pre-activation, as in He et al., 2015); the gradient's constant parts scale with the dual kernel of ``phi'``
(``E[phi'(y)]^2`` when the pre-activation has no constant part, up to ``E[phi'^2]`` when it is all constant).
"""

from __future__ import annotations

import functools
import math
from dataclasses import replace

import torch

from ._gains import _derivative, _nodes, dual, moments
from ._rules_corr import relu_corr
from ._rules_rect import consistent, matched, relu_moments
from ._signal import Grad, Sig, layout

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


def _sizes(shape: tuple[int, ...] | None, batch: int | None) -> tuple[int, int]:
    """(samples N, positions P) of a traced shape (0: unknown, the old rule)."""
    if shape is None:
        return 0, 0
    n, _, p = layout(tuple(shape))
    return (batch or n), p


def _pairs(q: float, dc: float, dcb: float, shape, batch) -> tuple[float, float]:
    """``E[y y']`` of two values of one channel at different positions of one sample, and in different samples.
    ``dc`` is the power of the mean over a sample's ``P`` positions, which holds ``1 / P`` of ``q`` itself:
    ``dc = q / P + (1 - 1 / P) E_same``; likewise ``dcb = dc / N + (1 - 1 / N) E_other`` over ``N`` samples
    (positions exchangeable). A small map (2x2, 3x3 at batch 2: SE blocks, heads) is far from ``E_same = dc``."""
    n, p = _sizes(shape, batch)
    same = (p * dc - q) / (p - 1) if p > 1 else dc
    other = (n * dcb - dc) / (n - 1) if n > 1 and p > 0 else dcb
    return same, other


def _sampled(q: float, same: float, other: float, shape, batch) -> tuple[float, float]:
    """Back from the pair moments to the means' powers (:func:`_pairs` inverted) for an output of power ``q``."""
    n, p = _sizes(shape, batch)
    if p < 1:
        return same, other
    dc = q / p + (1 - 1 / p) * same if p > 1 else q
    dcb = dc / n + (1 - 1 / n) * other if n > 1 else dc
    return dc, dcb


def act_forward(act, x: Sig, shape: tuple[int, ...] | None = None, batch: int | None = None) -> tuple[Sig, float]:
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
    same, other = _pairs(x.q, x.dc, x.dcb, shape, batch)
    m2 = mu * mu
    dc = dual(act, v, min(max(same - m2, -v), v), mu)
    dcb = dual(act, v, min(max(other - m2, -v), v), mu)
    exact = _rectified(act, x)
    if exact is not None:  # the same covariances of the constants, scaled with the exact variance
        _, e1, e2 = exact
        var_g, var_x = second - mean * mean, e2 - e1 * e1
        k = var_x / var_g if var_g > 0 else 1.0
        dc, dcb = e1 * e1 + (dc - mean * mean) * k, e1 * e1 + (dcb - mean * mean) * k
        second, mean = e2, e1
    dc, dcb = _sampled(second, dc, dcb, shape, batch)
    # a centred input's channel correlation through a ReLU (the arc-cosine kernel): :mod:`initwise._rules_corr`
    corr = relu_corr(x.corr) if x.corr is not None and _is_relu(act) and abs(mu) <= 1e-6 * math.sqrt(v) else None
    out = Sig(second, mean, dc, dcb, corr=corr).clean()
    if _is_relu(act):
        rect = matched(out.mean, out.q) if exact is not None else (mu, v, 0.0, 0.0)
        if consistent(rect, out.q, out.mean):
            out = replace(out, rect=rect)
    return out, 1.0


def _is_relu(act) -> bool:
    return act is not None and act.known and act.name == "relu"


def _rectified(act, x: Sig) -> tuple[float, float, float] | None:
    """``(P(z > 0), E[relu z], E[relu(z)^2])`` of a ReLU whose input carries a consistent ``Sig.rect``."""
    if not _is_relu(act) or not consistent(x.rect, x.q, x.mean):
        return None
    return relu_moments(x.rect)


def act_backward(act, d: Grad, x: Sig, shape: tuple[int, ...] | None = None,
                 batch: int | None = None) -> tuple[list[Grad], float]:
    v, mu = _at(act, x)
    if not math.isfinite(v) or v > _HUGE:
        return [d], math.inf
    if v < _TINY:
        _, slope = _point(act, mu)
        return [d.scaled(slope * slope)], 1.0
    m = moments(act, 1.0 if (act.name in _HOMOGENEOUS and act.known and mu == 0.0) else v, mean=mu)
    # the gradient's constant parts meet phi' averaged over the positions of one channel: E[phi'(a) phi'(b)] of
    # two points that share the pre-activation's constant part
    same, other = _pairs(x.q, x.dc, x.dcb, shape, batch)
    gsame, gother = _pairs(d.g, d.dc, d.dcb, shape, batch)
    m2 = mu * mu
    kdc = dual(act, v, min(max(same - m2, -v), v), mu, derivative=True)
    kdcb = dual(act, v, min(max(other - m2, -v), v), mu, derivative=True)
    exact = _rectified(act, x)
    k = exact[0] / m.backward if exact is not None and m.backward > 0 else 1.0  # the exact P(z > 0)
    g = d.g * m.backward * k
    dc, dcb = _sampled(g, gsame * kdc * k, gother * kdcb * k, shape, batch)
    return [Grad(g, dc, dcb)], 1.0


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
