"""What a normalization's statistics, taken over a finite set of values, do to its backward.

A training-mode batch norm standardizes each channel by the variance ``s`` of its own ``M = N P`` values (``N``
samples, ``P`` positions), not by the population's: its backward ``dx = (dy - mean(dy) - xhat mean(dy xhat)) /
sqrt(s + eps)`` carries ``1 / s``, which exceeds ``1 / E[s]`` on average when ``M`` is small (2x2 maps at batch
2: ``M = 8``), and the projection on ``xhat`` removes the part of ``dy`` along the channel's own values. Split
the ``M - 1`` directions orthogonal to the constant into the per-sample constants (``N - 1`` of them) and the
positions within each sample (``N (P - 1)``). The input's centred values carry ``A = dc - dcb`` and ``B = q -
dc`` on them, Gaussian: ``|x_1|^2 = M A X``, ``|x_2|^2 = M B Y`` with ``X ~ chi2(N - 1) / (N - 1)``, ``Y ~
chi2(N (P - 1)) / (N (P - 1))``; the gradient, independent of ``x`` and even within each part, ``G1 = dc -
dcb`` and ``G2 = g - dc``. Then, with ``Z = A X + B Y + eps``::

    E[dx^2] = E[(G1 + G2) / Z - (A X G1 / (N - 1) + B Y G2 / (N (P - 1))) / Z^2]

against the rule's ``(G1 + G2) / (A + B + eps)``: the factor of :func:`finite_set_factor`. For independent values
it is ``(M - 2) / (M - 3)``; a gradient constant over positions (a global pool's) meets the per-sample part of
``xhat`` and loses more. The expectations are ``int_0^inf`` of the chi-square moment generating functions (and
their derivatives, ``E[X exp(-t A X)] = (1 + 2 t A / a)^(-a/2 - 1)``), integrated on a log grid. An instance norm
is the same over one sample's ``P`` positions (``B`` and ``G2`` only).
"""

from __future__ import annotations

import math

__all__ = ["finite_set_factor"]

_N_GRID = 350
_U0, _U1 = -30.0, 40.0  # ln t: the integrands decay at both ends (trapezoid, exponentially accurate)
_DU = (_U1 - _U0) / (_N_GRID - 1)


# the grid's nodes: u, t = exp(u), -t and 2 t (exact doubling), computed once (the same floats every call)
_GRID = tuple((u, t, -t, 2.0 * t) for u, t in ((u, math.exp(u)) for u in (_U0 + j * _DU for j in range(_N_GRID))))


def _moments(parts: list[tuple[float, int]], eps: float) -> tuple[float, list[float]]:
    """``E[1 / Z]`` and, per part ``k``, ``E[X_k / Z^2]`` for ``Z = sum_k w_k X_k + eps``, ``X_k ~ chi2(d_k) /
    d_k``."""
    if len(parts) == 1:  # an instance norm, or a batch norm with one part left: the same sums, fewer lists
        return _moments1(parts[0], eps)
    if len(parts) == 2:  # a batch norm
        return _moments2(parts[0], parts[1], eps)
    i0, ix = 0.0, [0.0] * len(parts)
    exp, log1p = math.exp, math.log1p
    halves = [(w, d, 0.5 * d) for w, d in parts]
    for u, t, mt, t2 in _GRID:
        log_mgf = mt * eps
        logs = []
        for w, d, h in halves:
            lg = log1p(t2 * w / d)
            logs.append(lg)
            log_mgf -= h * lg
        if log_mgf + u < -80.0 and u > 0:
            break  # decreasing from here on
        base = exp(log_mgf + u)
        i0 += base
        bt = base * t
        for k, lg in enumerate(logs):
            ix[k] += bt * exp(-lg)
    return i0 * _DU, [v * _DU for v in ix]


def _moments2(p: tuple[float, int], q: tuple[float, int], eps: float) -> tuple[float, list[float]]:
    """:func:`_moments` for two parts (the same operations in the same order)."""
    (w1, d1), (w2, d2) = p, q
    h1, h2 = 0.5 * d1, 0.5 * d2
    i0 = x1 = x2 = 0.0
    exp, log1p = math.exp, math.log1p
    for u, t, mt, t2 in _GRID:
        lg1 = log1p(t2 * w1 / d1)
        lg2 = log1p(t2 * w2 / d2)
        log_mgf = mt * eps - h1 * lg1 - h2 * lg2
        if log_mgf + u < -80.0 and u > 0:
            break  # decreasing from here on
        base = exp(log_mgf + u)
        i0 += base
        bt = base * t
        x1 += bt * exp(-lg1)
        x2 += bt * exp(-lg2)
    return i0 * _DU, [x1 * _DU, x2 * _DU]


def _moments1(part: tuple[float, int], eps: float) -> tuple[float, list[float]]:
    """:func:`_moments` for one part (the same operations in the same order)."""
    w, d = part
    h = 0.5 * d
    i0 = ix = 0.0
    exp, log1p = math.exp, math.log1p
    for u, t, mt, t2 in _GRID:
        lg = log1p(t2 * w / d)
        log_mgf = mt * eps - h * lg
        if log_mgf + u < -80.0 and u > 0:
            break  # decreasing from here on
        base = exp(log_mgf + u)
        i0 += base
        ix += base * t * exp(-lg)
    return i0 * _DU, [ix * _DU]


def finite_set_factor(kind: str, q: float, dc: float, dcb: float, g: float, gdc: float, gdcb: float,
                      n: int, p: int, eps: float, coherent: float = 0.0, realized: bool = False,
                      shared: float = 0.0, shared_dims: int = 1) -> float:
    """The factor (module docstring) on a norm's backward rule for a statistics set of ``n`` samples by ``p``
    positions (``kind`` "batch"; "instance": one sample's positions), the input's moments ``q, dc, dcb`` and the
    gradient's ``g, gdc, gdcb`` per element. ``coherent``: the power per element of the gradient's mean part
    along ``xhat`` (``E[(dy . xhat)]^2 / M^2``: an activation after the norm, see
    :func:`initwise._rules_act.slope_correlation`), removed besides the independent part's share. ``realized``: the
    channels' own variances ``s`` of this very set are at hand (measured on the example: ``Sig.realized``) and the
    rule already divides by them, so ``E[1 / Z]`` is not averaged over chi-square draws; only the projection on
    ``xhat`` is left, each part's share of ``Z`` over its directions: ``1 - (coherent + sum_k G_k (w_k / Z) / d_k)
    / G``. ``shared``: of the positional part ``q - dc``, the power of a pattern every sample shares
    (``Sig.pos_shared``), on ``shared_dims`` of the ``P - 1`` directions of such patterns (1: one fixed pattern
    per channel, as a padded convolution's borders make of its input's batch constant), the rest of the
    positional part even over all ``N (P - 1)`` directions; the gradient's positional power splits between the two
    subspaces by their sizes (a gradient independent of ``x``)."""
    if kind == "batch":
        m = n * p
        pos, gpos = max(q - dc, 0.0), max(g - gdc, 0.0)
        sh = min(max(shared, 0.0), pos) if n > 1 and p > 1 else 0.0
        parts = [(max(dc - dcb, 0.0), n - 1, max(gdc - gdcb, 0.0))]
        if sh > 0.0:
            k = min(max(shared_dims, 1), p - 1)
            f = k / (n * (p - 1))  # the shared directions' share of the N (P - 1) positional ones
            rest = pos - sh  # even over all positional directions
            parts += [(sh + rest * f, k, gpos * f), (rest * (1 - f), n * (p - 1) - k, gpos * (1 - f))]
        else:
            parts.append((pos, n * (p - 1), gpos))
    elif kind == "instance":
        m = p
        parts = [(max(q - dc, 0.0), p - 1, max(g - gdc, 0.0))]
    else:
        return 1.0
    if m <= 2:
        return 0.0  # the mean and xhat span every direction: the gradient is removed exactly
    parts = [(w, d, gk) for w, d, gk in parts if d > 0 and w > 0]
    scale = sum(w for w, _, _ in parts) + eps
    grad = sum(gk for _, _, gk in parts)
    if scale <= 0 or grad <= 0 or not parts:
        return 1.0
    if realized:
        return max(grad - coherent - sum(gk * (w / scale) / d for w, d, gk in parts), 0.0) / grad
    if sum(d for _, d, _ in parts) <= 2 and eps <= 0:
        return math.inf
    i0, ix = _moments([(w / scale, d) for w, d, _ in parts], eps / scale)
    value = (grad - coherent) * i0 - sum(gk * (w / scale) * x / d for (w, d, gk), x in zip(parts, ix))
    return max(value, 0.0) / grad
