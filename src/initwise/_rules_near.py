"""How alike neighbouring positions are: ``Sig.near``, the correlation between a value and its neighbour one step
along a spatial dim, of the part of the tensor that varies over positions.

With ``q = E[x^2]``, ``same`` the mean of ``E[x_p x_p']`` over two different positions of one sample and channel
(:func:`initwise._rules_act._pairs`: what ``dc`` holds besides ``q / P``) and ``lag`` the mean of
``E[x_p x_{p+1}]`` over neighbours along each spatial dim, ``near = (lag - same) / (q - same)``: 0 for values
independent between positions (the rules' assumption, and every op's here unless it is listed below), near 1 for
a smooth map (a natural image: ~0.9 between pixels).

Three rules read it. Max pooling (:func:`initwise._rules_reduce.max_pool_forward`): the values of a window are
alike, so their largest is much closer to their mean than the largest of independent draws (a ResNet's stem
pools the ReLU of a stride-2 convolution of the image: with independent neighbours its output's second moment is
over-stated ~2.2x, and in eval mode, where no batch norm renormalizes, every layer after it). Average pooling
(:func:`initwise._rules_reduce.window_mean`): the window's mean keeps the correlated share of the varying part.
A depthwise layer (:func:`initwise._rules_layer.correlated_rows`): each channel's variance is its row's
quadratic form over the correlated taps, which a norm after it divides by.

How it moves (``R(d)``: the lag-``d`` moment averaged over positions):

- a weight layer with independent zero-mean weights: ``E_w[y_p y_p'] = E[w^2] sum_{c,t} x_{c,p+t} x_{c,p'+t}``
  (only the same weight pairs with itself), so the output's lag-1 moment is the input's lag-``s`` one at stride
  ``s`` (interior positions): ``near^s`` with the lags taken geometric (``R(d) ~ near^d``, an exponential
  correlation); a per-channel (depthwise) layer whose rows the plan holds: its channels' own lag over their
  quadratic forms, equally weighted (:func:`channel_near`); a transposed convolution that upsamples reads
  neighbours through different taps: 0; a
  standardized weight (rows of zero sum: NF-Nets) is a high-pass filter of a smooth map: 0; a first layer
  (the example fixes its input) is measured instead (:func:`initwise._plan_example._measured_near`);
- a norm, a constant scale or shift, a value-preserving view: kept (per-channel and per-sample affine maps);
- a pointwise activation: the dual kernel ``E[phi(a) phi(b)]`` at the neighbours' covariance (Gaussian
  pre-activation, as :mod:`initwise._rules_act`), taken back to ``near`` with the output's own ``same``;
- a sum of independent signals: their varying powers' weighted mean;
- element dropout: the mask's noise is independent between positions (``near`` times the kept share);
- a gate broadcast over positions (SE): kept; pooling: ``near^s`` of its input at stride ``s``;
- anything else: 0 (independent), the rules' old assumption.
"""

from __future__ import annotations

import functools
import itertools
import math

from ._gains import dual
from ._rules_act import _pairs
from ._signal import Sig, layout

__all__ = ["channel_near", "lag_matrix", "near_after", "window_correlation", "varying"]

_KEEP = frozenset(("norm", "scale", "shift"))
_SAME_SHAPE = frozenset(("to", "float", "double", "contiguous", "clone", "detach", "Identity", "type_as",
                         "identity", "DropPath"))


def varying(x: Sig, shape, batch) -> float:
    """``q - same``: the power of the part of ``x`` that varies between the positions of one sample."""
    same, _ = _pairs(x.q, x.dc, x.dcb, shape, batch)
    return max(x.q - same, 0.0)


def _strides(s_in, s_out) -> list[float]:
    """The step between neighbouring outputs in input positions, per spatial dim (< 1: upsampled)."""
    return [a / b for a, b in zip(s_in[2:], s_out[2:]) if b > 1]


def _strided(near: float, s_in, s_out) -> float:
    if near <= 0.0 or len(s_in) < 4 or len(s_in) != len(s_out):
        return 0.0
    st = _strides(s_in, s_out)
    if not st or any(s < 1.0 for s in st):
        return 0.0
    return sum(near ** s for s in st) / len(st)


def _per_channel_near(n, lm, x: Sig, s_in) -> float | None:
    """``near`` after the per-channel layer ``lm``, its channels' own taken alike (:func:`channel_near`), or None
    where its rows or strides are not at hand."""
    if lm is None or not lm.per_channel or not lm.kernels or not 0.0 < x.near < 1.0 or len(s_in) != len(n.shape):
        return None
    st = _strides(s_in, n.shape)
    if not st or not all(v >= 1.0 and v == int(v) for v in st) or len(st) != len(lm.kernel_size):
        return None
    return channel_near(lm.kernels, lm.kernel_size, lm.dilation, tuple(int(v) for v in st), x.near,
                        max(x.q - x.dc, 0.0))


def lag_matrix(size: tuple[int, ...], dilation: tuple[int, ...], near: float, shift: tuple[int, ...] | None = None):
    """``P_tt' = prod_d near^|dilation_d (t_d - t'_d) + shift_d|`` over a kernel's taps (the input's geometric
    lags between two receptive fields ``shift`` input steps apart; 0: the same field), a float64 tensor."""
    import torch  # the rules are plain floats; the quadratic forms over a kernel's taps are torch's

    p = torch.ones((1, 1), dtype=torch.float64)
    for d, (n, dil) in enumerate(zip(size, dilation)):
        i = torch.arange(n, dtype=torch.float64) * dil
        p = torch.kron(p, near ** (i[:, None] - i[None, :] + (shift[d] if shift else 0)).abs())
    return p


def channel_near(kernels: tuple[tuple[float, ...], ...], size: tuple[int, ...], dilation: tuple[int, ...],
                 strides: tuple[int, ...], near: float, b: float) -> float | None:
    """``near`` after a per-channel (depthwise) layer of a correlated input, each channel's own taken alike:
    channel ``c``'s output neighbours (``stride`` input steps apart) correlate ``k_c^T P_s k_c / k_c^T P_0 k_c``
    (:func:`lag_matrix`). A row that sums to ~0 is a high-pass filter: its channel is far less smooth than the
    input, and a norm after the layer gives it the weight of any other (the variance-weighted mean over channels,
    ``near^s`` for independent weights, is what the layer's output shows before that norm; such a layer is
    followed by a norm in every net seen here). None when the kernel's shape is unknown."""
    if not kernels or not size or math.prod(size) != len(kernels[0]) or len(strides) != len(size) or b <= 0:
        return None
    return _channel_near(kernels, size, dilation or (1,) * len(size), strides, round(near, 3))


@functools.lru_cache(maxsize=256)
def _channel_near(kernels, size, dilation, strides, near):
    import torch

    k = torch.tensor(kernels, dtype=torch.float64)
    v0 = ((k @ lag_matrix(size, dilation, near)) * k).sum(1)
    if not bool((v0 > 0).all()):
        return None
    lags = []
    for axis in range(len(size)):
        shift = tuple(strides[d] if d == axis else 0 for d in range(len(size)))
        vs = ((k @ lag_matrix(size, dilation, near, shift)) * k).sum(1)
        lags.append(float((vs / v0).clamp(-1.0, 1.0).mean()))
    return sum(lags) / len(lags)


@functools.lru_cache(maxsize=256)
def window_correlation(near: float, window: tuple[int, ...]) -> float:
    """The mean correlation between two different values of a window (``window``: its size per dim) whose
    neighbours correlate ``near`` and whose lags are geometric: ``near^(|d_1| + ... + |d_k|)``."""
    if near <= 0.0 or math.prod(window) <= 1:
        return 0.0
    offsets = list(itertools.product(*(range(w) for w in window)))
    total, count = 0.0, 0
    for a, b in itertools.combinations(offsets, 2):
        total += near ** sum(abs(i - j) for i, j in zip(a, b))
        count += 1
    return total / count


def _act_near(act, x: Sig, out: Sig, shape, batch) -> float:
    if act is None or not act.known or x.near <= 0.0:
        return 0.0
    v, mu = max(x.q - x.mean * x.mean, 0.0), x.mean
    vx, vy = varying(x, shape, batch), varying(out, shape, batch)
    if v <= 0.0 or vx <= 0.0 or vy <= 0.0:
        return 0.0
    same_x, _ = _pairs(x.q, x.dc, x.dcb, shape, batch)
    same_y, _ = _pairs(out.q, out.dc, out.dcb, shape, batch)
    lag_x = same_x + x.near * vx
    lag_y = dual(act, v, min(max(lag_x - mu * mu, -v), v), mu)
    # the same dual kernel at the pair moment gives the output's ``same`` (act_forward): the difference is the
    # neighbours' own share, free of the quadrature's rounding
    base = dual(act, v, min(max(same_x - mu * mu, -v), v), mu)
    return min(max((lag_y - base) / vy, 0.0), 1.0) if math.isfinite(lag_y) else 0.0


def near_after(n, out: Sig, ins: list[Sig], shapes: list, layers, batch: int | None) -> float:
    """``near`` of node ``n``'s output (moments ``out`` from its rule; ``ins``: its inputs' moments)."""
    k = n.kind
    if not ins or len(n.shape) < 4:
        return 0.0
    x, s_in = ins[0], shapes[0]
    if k == "layer":
        lm = layers.get(n.module or "")
        if lm is None or lm.kind != "affine" or len(n.inputs) != 1 or lm.centered:
            return 0.0  # a standardized weight's rows sum to zero: a high-pass of a smooth map (unless measured)
        own = _per_channel_near(n, lm, x, s_in)  # its channels' own, alike: what the norm after it shows
        return own if own is not None else _strided(x.near, s_in, n.shape)
    if k in _KEEP:
        return x.near if tuple(s_in) == tuple(n.shape) else 0.0
    if k == "act":
        return _act_near(n.activation, x, out, n.shape, batch)
    if k in ("add", "sub"):
        if any(len(s) != len(n.shape) for s in shapes):
            return 0.0
        parts = [(s.near, varying(s, n.shape, batch)) for s in ins]
        total = sum(p for _, p in parts)
        return sum(a * p for a, p in parts) / total if total > 0 else 0.0
    if k == "mul" and len(ins) == 2:
        main = [j for j, s in enumerate(shapes) if layout(tuple(s))[2] > 1]
        if len(main) == 1 and tuple(shapes[main[0]]) == tuple(n.shape):
            return ins[main[0]].near  # a gate broadcast over positions: a per-channel scale
        return 0.0
    if k == "pass" and n.op == "Dropout" and n.factor:
        vx, vy = varying(x, n.shape, batch), varying(out, n.shape, batch)
        return x.near * vx / vy if vy > 0 else 0.0
    if k == "pass" and n.op in _SAME_SHAPE and tuple(s_in) == tuple(n.shape):
        return x.near
    if k == "pass" and ("pool" in n.op.lower()) and "adaptive" not in n.op.lower():
        return _strided(x.near, s_in, n.shape)
    return 0.0
