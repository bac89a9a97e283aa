"""Propagation rules of ops that move or average values: views, slicing, repeats, pooling, means and sums,
interpolation, and constant scales and shifts.

Moving values (view, permute, pixel shuffle, slicing, nearest upsampling): the forward moments are unchanged;
backward, each input receives ``numel(out) / numel(in)`` output gradients on average (a repeat sums them: see
:mod:`initwise._rules_join` for the constant part), or none (slicing). Max pooling routes each gradient to one
input (exact); its forward keeps the largest value of a window (approximate).

Averaging ``K`` values (a mean over positions, average pooling with window K and stride S): the part constant over
positions passes, the rest averages down by ``1/K`` (taken as uncorrelated between positions: approximate);
backward each input receives ``K / S`` gradients divided by ``K``: ``E[dx^2] = (E[dy^2] - dc) / (K S) + dc /
S^2``, exact. A mean over channels averages independent channels around the common mean (exact).
"""

from __future__ import annotations

import functools
import itertools
import math

import torch
import torch.nn.functional as F

from ._activations import resolve_activation
from ._gains import max_moments, max_slope
from ._rules_near import window_correlation
from ._signal import Grad, Sig, channel_dim, layout

__all__ = ["pass_forward", "pass_backward", "interpolate_forward", "interpolate_backward", "reduce_forward",
           "reduce_backward", "window_mean", "pool_forward", "pool_backward", "scale_forward", "shift_forward",
           "pixel_shuffle_forward"]

EXACT_PASS = frozenset({
    "view", "reshape", "permute", "transpose", "flatten", "unflatten", "contiguous", "clone", "squeeze",
    "unsqueeze", "pixel_shuffle", "pixel_unshuffle", "PixelShuffle", "PixelUnshuffle", "getitem", "__getitem__",
    "chunk", "split", "unbind", "to", "float", "double", "type", "detach", "identity", "Identity", "dropout",
    "Dropout", "pad", "expand", "expand_as", "broadcast_to", "repeat", "Flatten", "Unflatten", "narrow", "select",
    "view_as", "reshape_as", "movedim", "moveaxis", "swapaxes", "swapdims", "t", "T", "mT", "copy", "roll", "flip",
    "max_pool1d", "max_pool2d", "max_pool3d", "MaxPool1d", "MaxPool2d", "MaxPool3d", "max_pool2d_with_indices",
    "split_with_sizes", "tensor_split", "half", "bfloat16", "type_as", "data"})
MAX_POOLS = frozenset(("max_pool1d", "max_pool2d", "max_pool3d", "MaxPool1d", "MaxPool2d", "MaxPool3d",
                       "max_pool2d_with_indices", "adaptive_max_pool1d", "adaptive_max_pool2d",
                       "adaptive_max_pool3d", "AdaptiveMaxPool1d", "AdaptiveMaxPool2d", "AdaptiveMaxPool3d"))
AVG_POOLS = frozenset(("avg_pool1d", "avg_pool2d", "avg_pool3d", "AvgPool1d", "AvgPool2d", "AvgPool3d"))
ADAPTIVE_AVG = frozenset(("adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
                          "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d"))
_MONOTONE = frozenset(("linear", "relu", "leaky_relu", "prelu", "relu6", "elu", "celu", "selu", "tanh", "sigmoid",
                       "softplus", "hardtanh", "hardsigmoid", "softsign", "logsigmoid"))
_LINEAR = resolve_activation("linear")
INTERPOLATE = frozenset(("interpolate", "upsample", "Upsample", "upsample_bilinear", "upsample_nearest"))
REPEATS = frozenset(("expand", "expand_as", "broadcast_to", "repeat", "repeat_interleave", "tile"))

# measured bounds (tests/test_propagate.py)
BOUND_AVERAGE = 1.5  # averaging positions as if uncorrelated (convolutions of smooth images correlate them)
BOUND_MAX_POOL = 1.5  # max pooling's forward: neighbours taken as independent
BOUND_INTERPOLATE = 1.5  # bilinear/bicubic interpolation: a weighted mean of correlated neighbours
BOUND_UNKNOWN = math.inf  # an op the rules do not know: the signal is passed on, with no bound


def _numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape) if shape else 1


def _max_window(x: Sig, window: tuple[int, ...] | None, shape_in: tuple[int, ...], shape_out: tuple[int, ...],
                act=None, pre: Sig | None = None):
    """``(k, act, src, v, shared)`` of a max pool's window: its size, the activation the max commutes with and the
    Gaussian it is taken of, the independent and the shared variance (None when the window holds one value or
    the values do not vary)."""
    win = tuple(window) if window else tuple(max(1, round(a / max(b, 1))) for a, b in zip(shape_in[2:],
                                                                                      shape_out[2:]))
    k = _numel(win)
    if k <= 1:
        return None
    # the window shares its channel's constant (``dc``): the max picks from the rest of the variance only
    if act is not None and pre is not None and act.name in _MONOTONE and act.known:
        src = pre
    else:
        act, src = _LINEAR, x
    v = max(src.q - src.dc, 0.0)
    shared = max(src.dc - src.mean ** 2, 0.0)
    if v <= 0:
        return None
    if src.near > 0:  # neighbours alike (``Sig.near``): their mean correlation is shared by the window too
        rho = window_correlation(src.near, win)
        v, shared = v * (1.0 - rho), shared + v * rho
        if not v > 0:  # a window of equal values (a smooth stem output measured with near 1): its max is them
            return None
    return k, act, src, v, shared


def max_pool_forward(x: Sig, window: tuple[int, ...] | None, shape_in: tuple[int, ...],
                     shape_out: tuple[int, ...], act=None, pre: Sig | None = None) -> tuple[Sig, float]:
    """The largest of ``K`` values: of ``phi(z)`` with ``z`` the Gaussian pre-activation ``pre`` when the input is
    a non-decreasing activation's output (the max commutes with it), else of Gaussian values with the input's
    mean and variance."""
    w = _max_window(x, window, shape_in, shape_out, act, pre)
    if w is None:
        return x, 1.0
    k, act, src, v, shared = w
    q, mean = max_moments(act, k, v, src.mean, shared)
    # the common mean moves to the max's; the per-channel fluctuations of the constant part scale with the rest
    r = (q - mean * mean) / max(x.q - x.mean ** 2, 1e-300)
    m2 = mean * mean
    out = Sig(q, mean, m2 + max(x.dc - x.mean ** 2, 0.0) * r, m2 + max(x.dcb - x.mean ** 2, 0.0) * r)
    return (out.no_positions() if layout(shape_out)[2] == 1 else out).clean(), BOUND_MAX_POOL


def max_pool_slope(act, pre: Sig, window: tuple[int, ...] | None, shape_in: tuple[int, ...],
                   shape_out: tuple[int, ...]) -> float | None:
    """``E[phi'(M)^2] / E[phi'(z)^2]`` for an activation read only by a max pool: the pool's gradient reaches only
    each window's largest value, whose pre-activation ``M`` is the window's largest (a ReLU passes it when the
    max is positive: at a zero-mean pre-activation ~1 rather than 1 / 2). None when the rule does not apply."""
    w = _max_window(pre, window, shape_in, shape_out, act, pre)
    if w is None or w[1] is _LINEAR:
        return None
    k, act, src, v, shared = w
    at_max = max_slope(act, k, v, src.mean, shared)
    whole = max_slope(act, 1, v + shared, src.mean, 0.0)
    return at_max / whole if whole > 0 and math.isfinite(at_max) else None


DROPOUT = frozenset(("Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "DropPath"))


def dropout_forward(op: str, x: Sig, factor: float) -> Sig:
    """Dropout in training, ``y = m x`` with ``E[m] = 1`` and ``E[m^2] = factor`` (``1 / keep``): the second moment
    is multiplied by ``factor``, the mean kept. An element mask (``Dropout``) leaves the per-sample and batch
    constants as they were (it adds zero-mean noise per element); a per-sample mask (``DropPath``) multiplies the
    per-sample constant by ``factor`` too."""
    dc = x.dc * factor if op == "DropPath" else x.dc
    return Sig(x.q * factor, x.mean, dc, x.dcb).clean()


PIXEL_SHUFFLE = frozenset(("pixel_shuffle", "PixelShuffle"))


def pixel_shuffle_forward(x: Sig, shape_in: tuple[int, ...], shape_out: tuple[int, ...]) -> tuple[Sig, float]:
    """``PixelShuffle(r)``: each output channel's ``r^2`` positions of a block come from ``r^2`` input channels, so
    a constant per input channel becomes a pattern of period ``r``: of the channels' constants (``dc - mean^2``,
    independent between channels, as a conv's output channels are) the output's mean over positions keeps
    ``1 / r^2`` (the rest varies over positions), and of the batch's constant the same share, the rest a pattern
    every sample shares (``pos_shared``). The elements and their power are the input's (a permutation)."""
    c_in, c_out = (shape_in[1], shape_out[1]) if len(shape_in) >= 4 and len(shape_out) >= 4 else (1, 1)
    r2 = c_in // c_out if c_out and c_in % c_out == 0 else 1
    if r2 <= 1:
        return x, 1.0
    m2 = x.mean * x.mean
    dc = m2 + max(x.dc - m2, 0.0) / r2
    dcb = m2 + max(x.dcb - m2, 0.0) / r2
    shared = x.pos_shared + max(x.dcb - m2, 0.0) * (1.0 - 1.0 / r2)
    return Sig(x.q, x.mean, dc, dcb, x.spread, near=x.near, pos_shared=shared, rect=x.rect).clean(), 1.0


def pass_forward(op: str, x: Sig, shape: tuple[int, ...], known: bool) -> tuple[Sig, float]:
    out = x.no_positions() if len(shape) <= 2 else x
    if op in MAX_POOLS:
        return out, BOUND_MAX_POOL
    if op in INTERPOLATE:
        return out, 1.0 if op == "upsample_nearest" else BOUND_INTERPOLATE
    return out, 1.0 if op in EXACT_PASS else BOUND_INTERPOLATE if known else BOUND_UNKNOWN


@functools.lru_cache(maxsize=512)
def _interp_dim(mode: str, n_in: int, n_out: int) -> tuple[float, float, float]:
    """``(|W|^2 / n_out, |W|^2 / n_in, |W^T 1|^2 / n_in)`` of the one-dim matrix ``W`` (``n_out x n_in``) that
    interpolation ``mode`` ("bilinear+ac": aligned corners) applies along one spatial dim, read off torch's own
    interpolation of the identity (bilinear, bicubic and trilinear are separable)."""
    base, corners = mode.split("+")[0], mode.endswith("+ac")
    eye = torch.eye(n_in, dtype=torch.float64)[None]  # channel j: the j-th unit vector; W e_j is W's column j
    with torch.no_grad():
        if base == "area":
            wt = F.adaptive_avg_pool1d(eye, n_out)[0]
        elif base in ("linear", "bilinear", "trilinear"):
            wt = F.interpolate(eye, size=n_out, mode="linear", align_corners=corners)[0]
        elif base == "bicubic":
            wt = F.interpolate(eye[..., None], size=(n_out, 1), mode="bicubic", align_corners=corners)[0, :, :, 0]
        else:
            wt = F.interpolate(eye, size=n_out, mode=base)[0]
    f2 = float(wt.pow(2).sum())
    return f2 / n_out, f2 / n_in, float(wt.sum(1).pow(2).sum()) / n_in


_INTERP_MODES = frozenset(("nearest", "nearest-exact", "linear", "bilinear", "bicubic", "trilinear", "area"))


def _interp_factors(mode: str | None, shape_in: tuple[int, ...],
                    shape_out: tuple[int, ...]) -> tuple[float, float, float] | None:
    if mode is None or mode.split("+")[0] not in _INTERP_MODES or len(shape_in) != len(shape_out) \
            or len(shape_in) < 3 or shape_in[:2] != shape_out[:2] or min(shape_in[2:]) < 1:
        return None
    keep = back = const = 1.0
    for a, b in zip(shape_in[2:], shape_out[2:]):
        r, f, c = _interp_dim(mode, a, b)
        keep, back, const = keep * r, back * f, const * c
    return keep, back, const


def interpolate_forward(op: str, mode: str | None, x: Sig, shape_in: tuple[int, ...],
                        shape_out: tuple[int, ...]) -> tuple[Sig, float]:
    """``y = W x`` along each spatial dim with the interpolation's own weights ``W`` (rows summing to 1): the
    part constant over positions passes, the rest, taken as independent between positions, keeps ``|W|^2 /
    n_out`` (bilinear 3 -> 4 positions: 0.77 per dim; nearest: 1). Neighbours of a smooth map correlate, which
    keeps more (the bound)."""
    fs = _interp_factors(mode, shape_in, shape_out)
    if fs is None:
        return pass_forward(op, x, shape_out, True)
    # ``dc`` (the square of the mean over P positions) holds ``1 / P`` of the independent part ``b`` too
    p_in, p_out = _numel(shape_in[2:]), _numel(shape_out[2:])
    b = max(x.q - x.dc, 0.0) * p_in / (p_in - 1) if p_in > 1 else 0.0
    c2 = max(x.q - b, 0.0)
    spread = fs[2] * p_in / (p_out * p_out)  # the output's mean: sum_j (W^T 1)_j e_j / n_out
    out = Sig(c2 + b * fs[0], x.mean, c2 + b * spread, x.dcb, x.spread)
    # positions correlated as in a smooth map keep up to all of it: the bound spans the two
    return out.clean(), 1.0 if op == "upsample_nearest" else max(BOUND_INTERPOLATE, 1.0 / max(fs[0], 1e-12))


def interpolate_backward(op: str, mode: str | None, d: Grad, shape_in: tuple[int, ...],
                         shape_out: tuple[int, ...]) -> tuple[Grad, float]:
    """``dx = W^T dy``: the gradient's part independent between positions keeps ``|W|^2 / n_in``, its constant
    part ``|W^T 1|^2 / n_in`` (each input gets the sum of its columns' weights); nearest upsampling by ``s``
    gives ``s`` and ``s^2`` per dim, the rule of repeated values."""
    fs = _interp_factors(mode, shape_in, shape_out)
    if fs is None:
        return pass_backward(op, d, shape_in, shape_out, True)
    p_in, p_out = _numel(shape_in[2:]), _numel(shape_out[2:])
    r2 = (p_out / max(p_in, 1)) ** 2
    b = max(d.g - d.dc, 0.0) * p_out / (p_out - 1) if p_out > 1 else 0.0  # as forward: dc holds b / P
    c2 = max(d.g - b, 0.0)
    g = b * fs[1] + c2 * fs[2]
    dc = g if layout(shape_in)[2] == 1 else min(r2 * c2 + b * fs[2] / p_in, g)
    # a gradient correlated between neighbours (after another interpolation's transpose: FFTformer's decoder,
    # 4.5x the independent rule through a 2x bilinear upsampling) gets up to the constant part's factor
    bound = max(BOUND_INTERPOLATE, fs[2] / max(fs[1], 1e-12), fs[1] / max(fs[2], 1e-12))
    return Grad(g, dc, min(r2 * d.dcb, dc)), 1.0 if op == "upsample_nearest" else bound


def _shared_argmax(window: tuple[int, ...], stride: tuple[int, ...]) -> float:
    """``E[m^2] / E[m]`` for ``m`` the number of windows whose largest value an input is (independent values):
    ``1 + sum over overlapping windows of o / (2K - o)`` (``o`` shared values, ``K`` per window: the largest of
    the union lies in the overlap with probability ``o / (2K - o)``). 3x3 stride 2: 2.0; 3x3 stride 1: 6.1."""
    k = math.prod(window)
    ranges = [range(-(w // max(s, 1)) - 1, w // max(s, 1) + 2) for w, s in zip(window, stride)]
    total = 1.0
    for offset in itertools.product(*ranges):
        if not any(offset):
            continue
        o = math.prod(max(w - abs(a) * s, 0) for w, s, a in zip(window, stride, offset))
        if o > 0:
            total += o / (2 * k - o)
    return total


def pass_backward(op: str, d: Grad, shape_in: tuple[int, ...], shape_out: tuple[int, ...],
                  known: bool, window: tuple[int, ...] | None = None) -> tuple[Grad, float]:
    """Each input receives ``ratio = numel(out) / numel(in)`` gradients on average: summed copies for a repeat
    (their constant part adds coherently), one or none for slicing and routing (the constant part of a
    gradient that reaches a fraction of the inputs is that fraction squared)."""
    ratio = _numel(shape_out) / max(_numel(shape_in), 1)
    interp = op in INTERPOLATE
    if (op in REPEATS or interp) and ratio > 1:
        g = ratio * max(d.g - d.dc, 0.0) + ratio * ratio * d.dc
        bound = BOUND_INTERPOLATE if interp and op != "upsample_nearest" else 1.0
        return Grad(g, g if layout(shape_in)[2] == 1 else ratio * ratio * d.dc, min(ratio * ratio * d.dcb, g)), bound
    r2 = ratio * ratio
    if op in MAX_POOLS and window and len(shape_in) > 2:
        stride = tuple(max(1, round(a / max(b, 1))) for a, b in zip(shape_in[2:], shape_out[2:]))
        c = _shared_argmax(tuple(window), stride[-len(window):] if len(stride) >= len(window) else stride)
        g = ratio * max(d.g - d.dc, 0.0) + ratio * c * d.dc
        return Grad(g, min(r2 * d.dc, g), min(r2 * d.dcb, g)), 1.0
    bound = 1.0 if op in EXACT_PASS or op in MAX_POOLS else BOUND_INTERPOLATE if known else BOUND_UNKNOWN
    if interp:
        bound = 1.0 if op == "upsample_nearest" else BOUND_INTERPOLATE
    if ratio >= 1:
        return d.scaled(ratio), bound
    return Grad(ratio * d.g, r2 * d.dc, r2 * d.dcb), bound


def _split(dims: tuple[int, ...], shape: tuple[int, ...]) -> tuple[int, int, int]:
    """How many values a reduction over ``dims`` averages, per kind: (batch, channels, positions)."""
    cd = channel_dim(len(shape))
    rb = rc = rp = 1
    for d in dims:
        size = shape[d] if d < len(shape) else 1
        if d == 0 and len(shape) > 1:
            rb *= size
        elif d == cd or len(shape) == 1:
            rc *= size
        else:
            rp *= size
    return rb, rc, rp


def window_mean(x: Sig, k: float, p: int, rho: float = 0.0) -> float:
    """``E[m^2]`` for ``m`` the mean of ``k`` of a map's ``p`` positions. ``x.dc`` is the power of the mean over
    all ``p`` (:class:`initwise._signal.Sig`): a window that covers the map gives it back, exactly, whatever
    the positions' correlation. A smaller window of positions exchangeable around the constant ``c`` keeps
    ``c^2 + (q - c^2) (1 / k + (1 - 1 / k) rho)``, ``rho`` the mean correlation of two of its positions'
    varying parts (:func:`initwise._rules_near.window_correlation` of ``Sig.near``; 0: uncorrelated), where the
    measured ``dc = c^2 + (q - c^2) / p`` holds ``1 / p`` of the rest: ``c^2 = (p dc - q) / (p - 1)``."""
    if k >= p:
        return x.dc
    c2 = min(max((p * x.dc - x.q) / (p - 1), 0.0), x.q) if p > 1 else x.q
    k = max(k, 1.0)
    return c2 + (x.q - c2) * (1.0 / k + (1.0 - 1.0 / k) * min(max(rho, 0.0), 1.0))


def reduce_forward(op: str, x: Sig, dims: tuple[int, ...], shape_in: tuple[int, ...],
                   shape_out: tuple[int, ...]) -> tuple[Sig, float]:
    rb, rc, rp = _split(dims, shape_in)
    p = layout(shape_in)[2]
    q, dc, dcb, mu = x.q, x.dc, x.dcb, x.mean
    if rp > 1:
        q = window_mean(x, rp, p)
        if rp >= p:
            dc = q
    if rc > 1:
        m2 = mu * mu
        q, dc, dcb = m2 + (q - m2) / rc, m2 + (dc - m2) / rc, m2 + (dcb - m2) / rc
    if rb > 1:
        q, dc = dcb + (q - dcb) / rb, dcb + (dc - dcb) / rb
    r = rb * rc * rp
    if op in ("sum", "nansum"):
        q, dc, dcb, mu = q * r * r, dc * r * r, dcb * r * r, mu * r
    out = Sig(q, mu, dc, dcb)
    if len(shape_out) <= 2 or layout(shape_out)[2] == 1:
        out = out.no_positions()
    return out.clean(), BOUND_AVERAGE if rp > 1 or rb > 1 else 1.0


def reduce_backward(op: str, d: Grad, dims: tuple[int, ...], shape_in: tuple[int, ...]) -> tuple[Grad, float]:
    rb, rc, rp = _split(dims, shape_in)
    r = rb * rc * rp
    f = 1.0 if op in ("sum", "nansum") else 1.0 / (r * r)
    g = d.g * f
    # the gradient is now constant over the reduced positions
    dc = g if rp >= layout(shape_in)[2] else d.dc * f
    return Grad(g, dc, min(d.dcb * f, dc)), 1.0


def _window(op: str, dims: tuple[int, ...] | None, shape_in: tuple[int, ...],
            shape_out: tuple[int, ...]) -> tuple[float, float]:
    """(window size K, stride S) of an average pooling, from its kernel or (adaptive) the shapes."""
    spatial_in, spatial_out = shape_in[2:], shape_out[2:]
    s = _numel(spatial_in) / max(_numel(spatial_out), 1)
    if op in ADAPTIVE_AVG or not dims:
        return s, s
    return float(_numel(dims)), s


def _window_dims(op: str, dims: tuple[int, ...] | None, shape_in: tuple[int, ...],
                 shape_out: tuple[int, ...]) -> tuple[int, ...] | None:
    """An average pooling's window per spatial dim (its kernel; adaptive: input over output size, rounded up),
    None when the shapes do not say."""
    spatial_in, spatial_out = tuple(shape_in[2:]), tuple(shape_out[2:])
    if not spatial_in or len(spatial_in) != len(spatial_out) or not all(spatial_out):
        return None
    if op in ADAPTIVE_AVG or not dims:
        return tuple(-(-a // b) for a, b in zip(spatial_in, spatial_out))
    if len(dims) == 1:
        return tuple(dims) * len(spatial_in)
    return tuple(dims) if len(dims) == len(spatial_in) else None


def pool_forward(op: str, x: Sig, dims: tuple[int, ...] | None, shape_in: tuple[int, ...],
                 shape_out: tuple[int, ...]) -> tuple[Sig, float]:
    k, _ = _window(op, dims, shape_in, shape_out)
    p = layout(shape_in)[2]
    win = _window_dims(op, dims, shape_in, shape_out)
    rho = window_correlation(x.near, win) if x.near > 0.0 and win is not None and k < p else 0.0
    q = window_mean(x, max(k, 1.0), p, rho)
    out = Sig(q, x.mean, x.dc, x.dcb)
    if layout(shape_out)[2] == 1:
        out = out.no_positions()
    return out.clean(), BOUND_AVERAGE if k > 1 else 1.0


def pool_backward(op: str, d: Grad, dims: tuple[int, ...] | None, shape_in: tuple[int, ...],
                  shape_out: tuple[int, ...]) -> tuple[Grad, float]:
    k, s = _window(op, dims, shape_in, shape_out)
    k, s = max(k, 1.0), max(s, 1.0)
    g = max(d.g - d.dc, 0.0) / (k * s) + d.dc / (s * s)
    return Grad(g, min(d.dc / (s * s) if layout(shape_in)[2] > 1 else g, g), min(d.dcb / (s * s), g)), 1.0


def scale_forward(x: Sig, factor: float | None) -> tuple[Sig, float]:
    if factor is None:
        return x, BOUND_UNKNOWN
    return x.scaled(factor * factor, factor), 1.0


def shift_forward(x: Sig, const: tuple[float, float, int] | None, op: str = "add") -> tuple[Sig, float]:
    """``x + c`` (op "add"), ``x - c`` ("sub") or ``c - x`` ("rsub") for a constant ``c`` with (mean, mean
    square, number of values) ``const``, independent of the signal's channels. A scalar constant is exact:
    ``E[(x + c)^2] = E[x^2] + 2 c E[x] + c^2``, likewise for the per-channel and per-sample constant parts; a
    tensor constant pairs its values with the channels' means as if they were unrelated (bound)."""
    if const is None:
        return x, BOUND_UNKNOWN
    cm, cms, count = const
    if op == "sub":
        cm = -cm
    m = -x.mean if op == "rsub" else x.mean
    return Sig(x.q + 2 * m * cm + cms, m + cm, x.dc + 2 * m * cm + cms, x.dcb + 2 * m * cm + cms,
               x.spread).clean(), 1.0 if count == 1 else BOUND_AVERAGE
