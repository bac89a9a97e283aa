"""A ReLU after a residual join of a rectified stream: the pre-activation is not Gaussian.

In a post-activation residual network (ResNet, RegNet: ``s' = relu(s + u)``, ``u`` a batch norm's output) the
stream ``s`` is itself a ReLU's output, so ``s + u`` is a rectified Gaussian plus a Gaussian: skewed, with more
mass above zero than the Gaussian of the same mean and variance that :mod:`initwise._rules_act` assumes. That
rule under-predicts ``E[relu(s + u)^2]`` by 4-8% per block (1.0, 1.60, 2.29, 3.00, 3.74, 4.49 over a RegNet
stage's six blocks against 1.0, 1.68, 2.43, 3.21, 4.01, 4.83 by Monte Carlo) and over-predicts its constant share
by as much, so the next block's batch norm, which divides by what varies, had its backward off by 1.25x per
block.

A tensor carries the shape of its elements as ``Sig.rect = (m1, v1, m2, v2)``: each element is ``relu(a) + b``
with ``a ~ N(m1, v1)`` and ``b ~ N(m2, v2)`` independent. A ReLU of a Gaussian sets ``(mean, v, 0, 0)``; a join
adds an independent Gaussian-like operand to ``b``; a positive constant scale scales both (``Sig.scaled``); every
other op drops it. At the next ReLU :func:`relu_moments` integrates exactly over ``a`` (``b`` in closed form):
``P(z > 0)``, ``E[relu(z)]`` and ``E[relu(z)^2]``; its output is again taken as a rectified Gaussian, the one with
the same mean and second moment (:func:`matched`). A tag is used only where its implied moments are the tensor's own
(:func:`consistent`): a rule that moved ``q`` or ``mean`` without it makes it void.
"""

from __future__ import annotations

import functools
import math

import torch

__all__ = ["Rect", "consistent", "implied", "joined", "matched", "relu_moments"]

Rect = tuple[float, float, float, float]  # (m1, v1, m2, v2): relu(N(m1, v1)) + N(m2, v2)

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_TOL = 1e-6
_U_MAX = 12.0  # the standardized range integrated over
_NODES = 257  # Simpson nodes (odd): the integrand is smooth on the range, error far below the rules'


def _cdf(t: float) -> float:
    return 0.5 * math.erfc(-t / _SQRT2)


def _pdf(t: float) -> float:
    return _INV_SQRT_2PI * math.exp(-0.5 * t * t)


def _relu_gauss(m: float, v: float) -> tuple[float, float, float]:
    """``(P(x > 0), E[relu x], E[relu(x)^2])`` for ``x ~ N(m, v)``, ``v > 0``."""
    s = math.sqrt(v)
    t = m / s
    c, d = _cdf(t), _pdf(t)
    return c, m * c + s * d, (m * m + v) * c + m * s * d


def implied(r: Rect) -> tuple[float, float]:
    """``(mean, E[x^2])`` of ``relu(a) + b``."""
    m1, v1, m2, v2 = r
    _, e1, e2 = _relu_gauss(m1, v1) if v1 > 0 else (0.0, max(m1, 0.0), max(m1, 0.0) ** 2)
    return e1 + m2, e2 + 2.0 * m2 * e1 + m2 * m2 + v2


def consistent(r: Rect | None, q: float, mean: float) -> bool:
    """The tag describes a tensor of second moment ``q`` and mean ``mean`` (to rounding)."""
    if r is None or not all(math.isfinite(v) for v in r) or r[1] <= 0 or r[3] < 0 or q <= 0:
        return False
    mu, q2 = implied(r)
    return abs(q2 - q) <= _TOL * q and abs(mu - mean) <= _TOL * math.sqrt(q)


def joined(tags: list[Rect | None], means: list[float], qs: list[float], signs: list[int]) -> Rect | None:
    """The tag of a sum whose one operand is rectified (added, sign +1) and the others Gaussian-like (no tag):
    their means and variances go to the Gaussian part. None otherwise."""
    tagged = [i for i, t in enumerate(tags) if t is not None]
    if len(tagged) != 1 or signs[tagged[0]] != 1:
        return None
    m1, v1, m2, v2 = tags[tagged[0]]
    for i, (m, q, s) in enumerate(zip(means, qs, signs)):
        if i != tagged[0]:
            m2 += s * m
            v2 += max(q - m * m, 0.0)
    return m1, v1, m2, v2


@functools.lru_cache(maxsize=4096)
def _integrated(m1: float, v1: float, m2: float, v2: float) -> tuple[float, float, float]:
    s1, s2 = math.sqrt(v1), math.sqrt(v2)
    lo = max(-m1 / s1, -_U_MAX)  # a = m1 + s1 u > 0
    p0 = _cdf(-m1 / s1)  # the atom at relu(a) = 0
    c0, e0, f0 = _relu_gauss(m2, v2)
    out = [p0 * c0, p0 * e0, p0 * f0]
    if lo < _U_MAX:
        u = torch.linspace(lo, _U_MAX, _NODES, dtype=torch.float64)
        w = torch.ones(_NODES, dtype=torch.float64)
        w[1:-1:2], w[2:-1:2] = 4.0, 2.0
        w *= (_U_MAX - lo) / (3.0 * (_NODES - 1)) * torch.exp(-0.5 * u * u) * _INV_SQRT_2PI
        mu = m1 + s1 * u + m2  # z | a ~ N(mu, v2)
        t = mu / s2
        c = torch.special.ndtr(t)
        d = torch.exp(-0.5 * t * t) * _INV_SQRT_2PI
        out[0] += float((w * c).sum())
        out[1] += float((w * (mu * c + s2 * d)).sum())
        out[2] += float((w * ((mu * mu + v2) * c + mu * s2 * d)).sum())
    return out[0], out[1], out[2]


def relu_moments(r: Rect) -> tuple[float, float, float] | None:
    """``(P(z > 0), E[relu z], E[relu(z)^2])`` for ``z = relu(a) + b`` of the tag ``r``; None where ``b`` has no
    variance (nothing to smooth the rectified part: the Gaussian rule is left to it)."""
    m1, v1, m2, v2 = r
    if not (v1 > 0 and v2 > 1e-12 * (v1 + m1 * m1 + m2 * m2)):
        return None
    return _integrated(*(float(f"{x:.12g}") for x in r))


def matched(mean: float, q: float) -> Rect | None:
    """The rectified Gaussian ``relu(N(m, v))`` with this mean and second moment (``0 < mean^2 < q``): ``t = m /
    sqrt(v)`` solves ``R(t) = mean^2 / q`` for ``R(t) = (t Phi + phi)^2 / ((t^2 + 1) Phi + t phi)``, which rises
    from 0 to 1 (bisection)."""
    if not (mean > 0 and q > 0) or mean * mean >= q * (1 - 1e-12):
        return None
    target = mean * mean / q
    lo, hi = -30.0, 30.0
    for _ in range(80):
        t = 0.5 * (lo + hi)
        c, d = _cdf(t), _pdf(t)
        e1, e2 = t * c + d, (t * t + 1) * c + t * d
        if e1 * e1 / e2 < target:
            lo = t
        else:
            hi = t
    t = 0.5 * (lo + hi)
    c, d = _cdf(t), _pdf(t)
    v = q / ((t * t + 1) * c + t * d)
    return t * math.sqrt(v), v, 0.0, 0.0
