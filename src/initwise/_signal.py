"""What propagation tracks per tensor: second moments and the parts of them that are constant over positions.

A traced tensor is laid out as batch, channels, positions (``(N, C, H, W)`` images, ``(N, T, C)`` tokens: see
:func:`layout`). Besides its second moment ``q = E[x^2]`` propagation carries the power of its components that
are constant over positions, because batch norm subtracts them and pooling keeps only them:

- ``mean``: the mean over every element (an activation's ``E[phi]``);
- ``dc``: ``E_{n,c}[(mean over positions of x[n, c])^2]``: the per-sample, per-channel constant;
- ``dcb``: ``E_c[(mean over batch and positions of x[:, c])^2]``: the per-channel constant a batch norm removes.

``mean^2 <= dcb <= dc <= q``. After a weight layer with independent zero-mean weights each channel's constant is
``w_c . (the input's constants)``: ``dc`` and ``dcb`` scale like ``q`` (Gaussian over channels, which is what
makes the dual kernel of the activation that follows the right rule for them). A :class:`Grad` carries the same
decomposition of a gradient (its ``dcb`` is what a training-mode batch norm's backward removes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch

__all__ = ["Sig", "Grad", "layout", "sig_of"]

SPREAD_CAP = 1e6  # a measured channel without variance: taken as this many times below the mean


@dataclass(frozen=True)
class Sig:
    """Forward moments of one tensor (see the module docstring)."""

    q: float
    mean: float = 0.0
    dc: float = 0.0
    dcb: float = 0.0
    # ``E_c[v / v_c]`` for the per-channel variances ``v_c`` (mean ``v``): how unevenly the channels' variances
    # are spread (1: evenly). A training-mode batch norm divides each channel's gradient by ``v_c``; after a
    # layer with a small fan-in (a depthwise conv: 9 taps) the channels' variances scatter like the squared
    # norms of its weight rows (chi-square with 9 degrees of freedom for Gaussian weights: ``9 / 7``)
    spread: float = 1.0
    # ``E_c[a_c / (a_c + b_c)] / (a / (a + b))`` for the channels' per-sample constants ``a_c`` (``dc - dcb``) and
    # positional variances ``b_c``: what a batch norm that divides each channel by its own variance keeps of the
    # constant share, over the ratio of the means. After a depthwise layer ``a_c = (sum_j w_cj)^2 a`` and
    # ``b_c = (sum_j w_cj^2) b`` scatter apart (9 taps: the row sum's square is chi-square with 1 degree of
    # freedom); 1 elsewhere, and lost by any op but the weight layer that sets it
    dc_share: float = 1.0
    # each channel's variance over the mean, ``v_c / v``: after a per-channel (depthwise) layer its row's squared
    # norm over their mean (or, for a correlated input, its quadratic form: ``initwise._rules_layer.
    # correlated_rows``), where ``spread`` is theirs alone; measured on a tensor the example fixes (``realized``);
    # a norm's eps caps ``1 / v_c`` for the channels whose rows are tiny (one-tap rows: ``E[1 / w^2]`` diverges,
    # ``E[1 / (w^2 v + eps)]`` does not)
    rows: tuple[float, ...] | None = None
    rows_rest: float = 1.0  # the input channels' own spread under those rows (``spread`` = the rows' times this)
    # the correlation between neighbouring positions of the part that varies over positions (0: independent;
    # :mod:`initwise._rules_near`)
    near: float = 0.0
    # the moments were measured on the example itself (``sig_of``): ``rows`` are this batch's own per-channel
    # variances, which a batch norm over the same batch divides by (no average over draws of them)
    realized: bool = False
    # with ``rows``: the producing per-channel layer's own squared row norms over their mean, where the channels'
    # variances are not proportional to them (a depthwise conv of a spatially correlated input: ``v_c ~ k_c^T P
    # k_c``); what that layer's backward multiplies each channel by, for the norm's cancelled share. None: the
    # rows themselves
    norms: tuple[float, ...] | None = None
    # the elements' shape where it is not Gaussian: ``relu(N(m1, v1)) + N(m2, v2)`` as ``(m1, v1, m2, v2)``
    # (a ReLU's output, or a join of one with a Gaussian-like signal: :mod:`initwise._rules_rect`); None: Gaussian
    rect: tuple[float, float, float, float] | None = None
    # of the positional part ``q - dc``, the power that every sample shares (a per-channel pattern over positions,
    # the same in each sample): a zero-padded convolution on a small map turns the input's batch constant into one
    # (the borders, ``1 - keep`` of :func:`initwise._taps.constant_factors`): one fixed pattern per channel, so a
    # batch norm's statistics see it on one direction, not spread over ``N (P - 1)`` (:mod:`initwise._batch_stats`);
    # set by a weight layer, scaled by a batch norm, dropped by every other op
    pos_shared: float = 0.0
    # the channels' correlation matrix over the batch and positions (C x C, float64), where it is known: measured
    # on a tensor the example fixes (a stem's output), carried by a batch norm, a ReLU of a centred input and max
    # pooling, and read by a kept dense layer, whose output channels' variances ``w_c^T C w_c`` it gives
    # (:mod:`initwise._rules_corr`): after a stem on a smooth image the channels span a few directions only, and
    # the variances a batch norm divides by scatter far more than independent channels' would; None elsewhere
    corr: torch.Tensor | None = field(default=None, compare=False, repr=False)
    # each position's power over the mean, for tokens ``(N, T, C)`` whose positions differ (ViT's class token
    # beside the patches: :mod:`initwise._rules_tokens`); None: the positions are alike
    prof: tuple[float, ...] | None = None

    def scaled(self, c2: float, c: float | None = None) -> "Sig":
        """The moments of ``a x`` for a constant with ``a^2 = c2`` (mean multiplied by ``c`` when given)."""
        a = c if c is not None else math.sqrt(c2)
        rect = None
        if self.rect is not None and a > 0 and abs(a * a - c2) <= 1e-12 * c2:
            m1, v1, m2, v2 = self.rect
            rect = (a * m1, c2 * v1, a * m2, c2 * v2)
        return Sig(self.q * c2, self.mean * a, self.dc * c2, self.dcb * c2,
                   self.spread, rows=self.rows, rows_rest=self.rows_rest, near=self.near, realized=self.realized,
                   norms=self.norms, rect=rect, prof=self.prof)

    def clean(self) -> "Sig":
        """Clip to ``mean^2 <= dcb <= dc <= q`` (rounding in rules that subtract)."""
        q = max(self.q, 0.0)
        dc = min(max(self.dc, 0.0), q)
        dcb = min(max(self.dcb, 0.0), dc)
        m = self.mean if self.mean * self.mean <= dcb else math.copysign(math.sqrt(dcb), self.mean)
        return Sig(q, m, dc, dcb, self.spread, self.dc_share, self.rows, self.rows_rest, self.near, self.realized,
                   self.norms, self.rect, min(max(self.pos_shared, 0.0), q - dc), self.corr, self.prof)

    def no_positions(self) -> "Sig":
        """The same tensor seen without positions (flattened to ``(N, features)``): every element is its own
        per-sample constant."""
        return replace(self, dc=self.q)


@dataclass(frozen=True)
class Grad:
    """Backward moments of one gradient: ``g = E[dx^2]`` and its constant parts ``dc``, ``dcb`` as for
    :class:`Sig`."""

    g: float
    dc: float = 0.0
    dcb: float = 0.0
    # the factor ``E_c[1 / v_c] v`` a batch or instance norm's backward applied for its input channels' uneven
    # variances (``Sig.spread``); the weight layer whose rows made them cancels its own share of it (its
    # backward multiplies each channel by the same row norm), and every other op drops it
    spread: float = 1.0
    # ``spread`` was taken against the producing layer's own row norms (``Sig.norms``): a dense layer whose rows
    # met a known channel correlation cancels it too (:mod:`initwise._rules_corr`)
    own: bool = False
    # each position's gradient power over the mean (tokens: ViT's head reads the class token only), as
    # ``Sig.prof``; None: alike
    prof: tuple[float, ...] | None = None

    def scaled(self, c2: float) -> "Grad":
        return Grad(self.g * c2, self.dc * c2, self.dcb * c2, prof=self.prof)

    def __add__(self, other: "Grad") -> "Grad":
        g = self.g + other.g
        # each part's spread applies to its own share: (g1 + g2) / (g1 / s1 + g2 / s2)
        base = self.g / self.spread + other.g / other.spread
        spread = g / base if base > 0 and (self.spread != 1.0 or other.spread != 1.0) else 1.0
        return Grad(g, self.dc + other.dc, self.dcb + other.dcb, spread, prof=mixed_profile(
            [(self.g, self.prof), (other.g, other.prof)]))


def mixed_profile(parts: list[tuple[float, tuple[float, ...] | None]]) -> tuple[float, ...] | None:
    """The position profile of a sum of independent parts of powers ``w`` and profiles ``p`` (None: flat):
    ``sum w p / sum w``; None when every part is flat, their lengths differ or the sum has no power."""
    if all(p is None for _, p in parts):
        return None
    n = {len(p) for _, p in parts if p is not None}
    total = sum(w for w, _ in parts)
    if len(n) != 1 or not total > 0:
        return None
    size = n.pop()
    out = [0.0] * size
    for w, p in parts:
        for i in range(size):
            out[i] += w * (p[i] if p is not None else 1.0)
    return flat_or(tuple(v / total for v in out))


PROFILE_FLAT = 1e-9  # a profile within this of 1 everywhere is flat (None)


def flat_or(p: tuple[float, ...] | None) -> tuple[float, ...] | None:
    """``p`` normalized to mean 1, or None when it is flat (or has no power)."""
    if p is None or not p:
        return None
    m = sum(p) / len(p)
    if not m > 0:
        return None
    out = tuple(v / m for v in p)
    return None if all(abs(v - 1.0) <= PROFILE_FLAT for v in out) else out


ZERO_GRAD = Grad(0.0)


def layout(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """``(batch, channels, positions)`` of a traced shape: channels are dim 1 for 4-D and wider tensors and for
    2-D ones, the last dim of 3-D ones (tokens ``(N, T, C)``); a 1-D tensor is one sample."""
    if not shape:
        return 1, 1, 1
    if len(shape) == 1:
        return 1, shape[0], 1
    if len(shape) == 2:
        return shape[0], shape[1], 1
    if len(shape) == 3:
        return shape[0], shape[2], shape[1]
    return shape[0], shape[1], math.prod(shape[2:])


def channel_dim(ndim: int) -> int:
    """The channel dim of :func:`layout` for a tensor of ``ndim`` dims."""
    return 2 if ndim == 3 else min(1, ndim - 1)


def sig_of(t: torch.Tensor) -> Sig:
    """The :class:`Sig` of an actual tensor (the example input): sums per (sample, channel) row in the tensor's
    precision, accumulated in float64 (a float64 copy of a 1x3x224x224 example costs ~100x more)."""
    x = t.detach()
    if x.numel() == 0:
        return Sig(0.0)
    if not x.is_floating_point():
        x = x.double()
    if x.dim() <= 1:
        q = float(torch.linalg.vector_norm(x).double().square()) / x.numel()
        return Sig(q, float(x.sum().double()) / x.numel(), q, q).clean()
    x = x.movedim(channel_dim(x.dim()), 1)
    rows = x.reshape(x.shape[0], x.shape[1], -1)  # (N, C, positions)
    q = float(torch.linalg.vector_norm(rows, dim=-1).double().square().sum()) / x.numel()
    per = rows.sum(-1).double() / rows.shape[-1]  # (N, C)
    ms_c = torch.linalg.vector_norm(rows, dim=-1).double().square().sum(0) / (rows.shape[0] * rows.shape[-1])
    a_c = (per.square().mean(0) - per.mean(0).square()).clamp(min=0.0)  # per-sample constants, batch mean removed
    b_c = (ms_c - per.square().mean(0)).clamp(min=0.0)  # positional part
    share, a, b = 1.0, float(a_c.sum()), float(b_c.sum())
    if a > 0 and b > 0 and bool((a_c + b_c > 0).all()):
        share = float((a_c / (a_c + b_c)).mean()) * (a + b) / a
    dc = float(per.square().mean())
    spread, rows = _channel_spread(ms_c - per.mean(0).square())
    return Sig(q, float(per.mean()), dc, float(per.mean(0).square().mean()), spread, share, rows,
               near=_near_of(x, q, dc) if x.dim() >= 4 else 0.0, realized=rows is not None,
               corr=_corr_of(x.reshape(x.shape[0], x.shape[1], -1)) if x.dim() >= 4 else None).clean()


CORR_CHANNELS = 512  # a channel correlation matrix is kept up to this many channels
CORR_COLUMNS = 8192  # ... estimated from at most this many (sample, position) values per channel


def _corr_of(rows: torch.Tensor) -> torch.Tensor | None:
    """The channels' correlation over the batch and positions of ``(N, C, positions)`` values (``Sig.corr``)."""
    c = rows.shape[1]
    if c < 2 or c > CORR_CHANNELS or rows.shape[0] * rows.shape[2] < 2:
        return None
    z = rows.transpose(0, 1).reshape(c, -1)
    if z.shape[1] > CORR_COLUMNS:  # evenly strided values: an estimate needs no more, and it costs C per value
        z = z[:, ::-(-z.shape[1] // CORR_COLUMNS)]
    z = z.float()
    z = z - z.mean(1, keepdim=True)
    cov = (z @ z.T).double()  # float32 products: a correlation needs no more
    d = cov.diagonal().clamp(min=0.0).sqrt()
    if not bool((d > 0).all()):
        return None
    return cov / d[:, None] / d[None, :]


def _channel_spread(v: torch.Tensor) -> tuple[float, tuple[float, ...] | None]:
    """``(E_c[v / v_c], v_c / v)`` (``Sig.spread``, ``Sig.rows``) of measured per-channel variances over the batch
    and positions (what a training-mode batch norm divides each channel by): a smooth image's channels, or a
    stem conv's output on it (its rows meet the RGB channels' correlation), are far from even. ``(1, None)`` for
    one channel or no variance; a channel without variance counts as ``SPREAD_CAP`` times the mean (the norm's
    eps caps it: see ``initwise._rules_layer.norm_backward``)."""
    v = v.clamp(min=0.0)
    mean = float(v.mean()) if v.numel() else 0.0
    if v.numel() < 2 or not mean > 0.0 or not math.isfinite(mean):
        return 1.0, None
    r = v / mean
    spread = float((1.0 / r.clamp(min=1.0 / SPREAD_CAP)).mean())
    if spread <= 1.0 + 1e-9:  # even (to rounding): nothing for a norm to apply
        return 1.0, None
    return spread, tuple(float(t) for t in r)


def _near_of(x: torch.Tensor, q: float, dc: float) -> float:
    """``Sig.near`` of an actual ``(N, C, *spatial)`` tensor: the lag-1 moment over each spatial dim of two or
    more positions, averaged over those dims, against the mean pair moment ``same`` of two positions of one
    sample and channel (``dc = q / P + (1 - 1 / P) same``)."""
    p = math.prod(x.shape[2:])
    dims = [d for d in range(2, x.dim()) if x.shape[d] > 1]
    if p <= 1 or not dims:
        return 0.0
    same = (p * dc - q) / (p - 1)
    if q - same <= 0:
        return 0.0
    lags = []
    for d in dims:
        a, b = x.narrow(d, 0, x.shape[d] - 1), x.narrow(d, 1, x.shape[d] - 1)
        lags.append(float((a * b).sum(dtype=torch.float64)) / a.numel())
    return min(max((sum(lags) / len(lags) - same) / (q - same), -1.0), 1.0)
