"""Propagation rules of weight layers, normalizations and constant scales/shifts (forward and backward).

Weight layer with independent zero-mean weights (He et al., 2015): ``E[y^2] = fan_in * E[w^2] * E[x^2] + E[b^2]``,
the constant parts likewise; backward ``E[dx^2] = fan_out * E[w^2] * E[dy^2]``; a zero-padded convolution counts
only the taps that read real values at the example's size (:mod:`initwise._taps`).

Normalization ``y = gamma * (x - m) / sqrt(v + eps) + beta`` with the statistics ``m, v`` over its set S (batch
norm in training: batch and positions per channel; instance norm: positions per sample and channel; group and
layer norm: a group of channels (and positions) per sample; RMS norm: no mean):
``E[y^2] = E[gamma^2] * v / (v + eps) + E[beta^2]``, ``v`` the input's variance over S (its second moment minus
the constant part S shares, :mod:`initwise._signal`). Backward ``E[dx^2] = E[gamma^2] / (v + eps) * (E[dy^2] -
(the gradient's constant over S))`` (the projection on the normalized input is neglected: it is one direction
among |S|). In eval mode a batch norm with running statistics is the affine map ``a_c x + b_c``, ``a_c =
gamma_c / sqrt(running_var_c + eps)``, ``b_c = beta_c - a_c running_mean_c``: exact with their values.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

from ._batch_stats import finite_set_factor
from ._rules_corr import layer_rows
from ._rules_near import lag_matrix
from ._signal import Grad, Sig, layout

__all__ = ["LayerMoments", "NormMoments", "layer_forward", "layer_backward", "norm_forward", "norm_backward"]

# measured bounds (tests/test_propagate.py): a norm the rules know only by its class name; GRN at gamma = beta = 0
# is exact (the identity), elsewhere its response ratio ||x_c|| / mean_c ||x_c|| scatters around 1
BOUND_GENERIC_NORM = 2.0
BOUND_GRN = 1.5
BOUND_FUNCTIONAL_NORM = 1.5
# a zero-padded convolution where more than a tenth of the taps read padding (tiny maps, large kernels): its
# output's variance is then uneven over positions and the next layer reads the borders less often than the
# middle; tests/test_taps.py measured 12% (backward, 3x3 and 2x2 maps, mean of 12 draws)
BOUND_BORDER = 1.25
TAPS_EXACT = 0.9
BORDER_MOVED = 0.1  # positional power the borders turn into the constant part: approximate above this share
CHAIN_EXACT = 1.02  # a chain share whose settled and even-input values differ by more than this: approximate
# weight standardization's centering with positions taken as independent (tests/test_rules_layer.py)
BOUND_CENTERED = 1.5
SPREAD_EXACT = 1.02  # a batch norm's backward after channels whose variances scatter by more than this: approximate


@dataclass(frozen=True)
class LayerMoments:
    """What propagation needs of one weight layer: effective fans and the second moments of its parameters.

    ``kind``: "affine" (Linear/Conv/...), "embedding", "attention" (``nn.MultiheadAttention``: ``attention``
    holds its projections), "bias" (a zero-width weight: the output is the bias, ``bias_ms`` and ``bias_mean``),
    "opaque" (not modelled: passes the signal on).
    """

    fan_in: float
    fan_out: float
    weight_ms: float
    bias_ms: float = 0.0
    kind: str = "affine"
    attention: Any = None
    # a zero-padded convolution at this input size: the fraction of the fans' taps that read real values,
    # forward and backward (:mod:`initwise._taps`)
    in_taps: float = 1.0
    out_taps: float = 1.0
    # their bounds, forward and backward: deep in a chain of padded convolutions the share lies between the
    # even input's and the longest path's (:func:`initwise._taps.chain_share`)
    taps_bound: tuple[float, float] = (1.0, 1.0)
    # of the input's constant part, the share that stays constant over the output's positions, and of its
    # positional part the share that becomes constant (the borders: :func:`initwise._taps.constant_factors`)
    dc_keep: float = 1.0
    dc_gain: float = 0.0
    # of the gradient's parts constant over positions, the share that stays constant through the backward: a
    # stride-s convolution hands each input position the taps of its phase only (s^d phases), so a gradient
    # constant over the output becomes a periodic pattern whose mean holds 1 / s^d of its power (zero-mean
    # independent weights: E[(sum_t w_t / s^d)^2] over E_phase[sum_{t in phase} w_t^2]); 1 for stride 1
    dc_back: float = 1.0
    # ``E_c[s / s_c]`` for the squared norms ``s_c`` of the weight's rows (the output channels' fans), and whether
    # each output channel reads one input channel (depthwise: the input's own spread over channels carries over)
    row_spread: float = 1.0
    per_channel: bool = False
    # a per-channel layer: ``t_c = (sum_j w_cj)^2 / sum_j w_cj^2`` per channel (its weights kept; mean 1 for
    # independent zero-mean weights), or for drawn weights the same of Gaussian rows (:func:`initwise.
    # _plan_moments._row_sums`)
    row_sums: tuple[float, ...] | None = None
    # a per-channel layer whose rows spread its channels' variances: each row's squared norm over their mean
    # (weights kept), for the eps of the norm after it (``Sig.rows``)
    row_norms: tuple[float, ...] | None = None
    # a standardized weight (each output channel's row has zero mean: NF-Nets' ScaledStdConv2d): the layer sees
    # its input minus the mean over the row's receptive field of ``channels`` input channels and ``taps`` taps
    centered: bool = False
    channels: int = 1
    taps: int = 1
    patch_ms: float | None = None  # E[mean_i x_i^2 - xbar^2] measured on the example (a first layer)
    # a per-channel layer of more than one tap: its rows (kept weights, up to KERNEL_ROWS channels; drawn ones:
    # as many Gaussian rows of the kernel's size, a fixed generator), the kernel's spatial size and dilation, for
    # a spatially correlated input (:func:`correlated_rows`)
    kernels: tuple[tuple[float, ...], ...] | None = None
    kernel_size: tuple[int, ...] = ()
    dilation: tuple[int, ...] = ()
    # a kept dense layer of at most CORR_CHANNELS inputs: its weight (out x in x taps, float64), for an input
    # whose channel correlation the example fixes (``Sig.corr``: :mod:`initwise._rules_corr`)
    matrix: Any = field(default=None, compare=False, repr=False)
    bias_mean: float = 0.0  # kind "bias": the bias's mean (kept values; 0 when drawn)


@dataclass(frozen=True)
class NormMoments:
    """One normalization: its statistics set (``kind``), eps and the moments of its affine parameters.

    ``kind``: "batch" (training statistics), "running" (eval-mode batch norm: the affine map of the running
    statistics, given by ``a_ms = E[a_c^2]``, ``b_ms = E[b_c^2]``, ``ab = E[a_c b_c]``, ``a_mean``, ``b_mean``),
    "instance", "group" (``groups``), "layer" (over the last ``normalized`` elements of the channel dim, or
    over channels and positions when ``over_positions``), "rms", "grn" (ConvNeXt-V2 global response norm:
    ``x + gamma * x * N(x) + beta``, not a normalization), "generic" (a class the rules know by name only).
    """

    kind: str
    eps: float = 1e-5
    gamma_ms: float = 1.0
    gamma_mean: float = 1.0
    beta_ms: float = 0.0
    beta_mean: float = 0.0
    a_ms: float = 1.0
    b_ms: float = 0.0
    ab: float = 0.0
    a_mean: float = 1.0
    b_mean: float = 0.0
    groups: int = 1
    over_positions: bool = False
    functional: bool = False
    normalized: int = 0  # layer norm: how many trailing elements it normalizes over (0: the channel dim)


NEAR_MIN = 0.05  # below it a depthwise layer's input is taken as independent between positions
BOUND_CORRELATED = 1.5  # the geometric-lag correlation model of a depthwise layer's input (tests/test_propagate.py)
KERNEL_ROWS = 256  # rows of a per-channel layer kept for correlated_rows (evenly spaced channels beyond)


def layer_forward(lm: LayerMoments | None, x: Sig, shape: tuple[int, ...],
                  batch: int | None = None) -> tuple[Sig, float]:
    if lm is None or lm.kind == "opaque":
        return x, math.inf
    if lm.kind == "embedding":
        return Sig(lm.weight_ms, 0.0, lm.weight_ms / max(layout(shape)[2], 1), 0.0), 1.0
    if lm.kind == "bias":  # the same per-channel constant in every sample and position
        return Sig(lm.bias_ms, lm.bias_mean, lm.bias_ms, lm.bias_ms).clean(), 1.0
    g = lm.fan_in * lm.in_taps * lm.weight_ms
    spread = lm.row_spread * (x.spread if lm.per_channel else 1.0)
    q, dc, dcb, bound = x.q, x.dc, x.dcb, _border_bound(lm, 0)
    if lm.centered:
        q, dc, dcb = (_centered(v, x, lm) for v in (x.q, x.dc, x.dcb))
        if lm.patch_ms is not None and q > 0:  # the example's own patches: their correlation included
            dc, dcb, q = dc * lm.patch_ms / q, dcb * lm.patch_ms / q, lm.patch_ms
        n = max(lm.channels * lm.taps, 2)  # E[w_i w_j] = E[w^2] (delta_ij - 1/n) n / (n - 1) for a zero-sum row
        q, dc, dcb = (v * n / (n - 1) for v in (q, dc, dcb))
        bound *= BOUND_CENTERED
    shared = 0.0
    if lm.dc_keep != 1.0 or lm.dc_gain > 0.0:
        moved = lm.dc_gain * max(q - dc, 0.0)
        # the batch constant the borders spread over positions: one pattern per channel, shared by the samples
        shared = (1.0 - lm.dc_keep) * dcb if not lm.per_channel else 0.0
        # the moved part is each sample's own: the batch's mean keeps 1 / N of it
        dc, dcb = lm.dc_keep * dc + moved, lm.dc_keep * dcb + moved / max(batch or layout(shape)[0], 1)
        if moved > BORDER_MOVED * dc:  # positions taken as independent there
            bound *= BOUND_BORDER
    rows, norms = lm.row_norms if lm.per_channel and lm.bias_ms == 0.0 else None, None
    if lm.per_channel and lm.kernels and x.near > NEAR_MIN:
        corr = correlated_rows(lm.kernels, lm.kernel_size, lm.dilation, x.near, max(dc - dcb, 0.0),
                               max(q - dc, 0.0))
        if corr is not None:
            c_spread, c_rows, c_norms = corr
            spread = c_spread * x.spread
            rows, norms = (c_rows, c_norms) if lm.bias_ms == 0.0 else (None, None)
            if c_spread > SPREAD_EXACT:
                bound *= BOUND_CORRELATED
    corr, rest = None, x.spread if lm.per_channel else 1.0
    if lm.matrix is not None and x.corr is not None:
        lags = lag_matrix(lm.kernel_size, lm.dilation or (1,) * len(lm.kernel_size), x.near) \
            if lm.kernel_size and 0.0 < x.near < 1.0 and math.prod(lm.kernel_size) == lm.matrix.shape[2] else None
        exact = layer_rows(lm.matrix, x.corr, x.rows, lags)
        if exact is not None:
            spread, rows, norms, corr = exact
            rest = 1.0
            if spread > SPREAD_EXACT:
                bound *= BOUND_CORRELATED
    out = Sig(g * q + lm.bias_ms, 0.0, g * dc + lm.bias_ms, g * dcb + lm.bias_ms, spread,
              _dc_share(lm.row_sums, dc - dcb, q - dc) if lm.per_channel else 1.0,
              rows, rest, norms=norms, pos_shared=g * shared, corr=corr)
    return (out.no_positions() if len(shape) <= 2 else out).clean(), bound


def correlated_rows(kernels: tuple[tuple[float, ...], ...], size: tuple[int, ...], dilation: tuple[int, ...],
                    near: float, a: float, b: float) -> tuple[float, tuple[float, ...], tuple[float, ...]] | None:
    """The channels' variances after a per-channel (depthwise) layer whose input is correlated between
    neighbouring positions (``Sig.near``, the lags geometric: ``R(d) = near^d`` per spatial dim, separable):
    channel ``c`` has ``v_c = (sum_t k_ct)^2 a + k_c^T P k_c b`` for the input's per-sample constant part ``a``
    and varying part ``b``, ``P`` the input's geometric lags over the taps (:func:`initwise._rules_near.
    lag_matrix`). A smooth map meets a row that sums to
    ~0 as a high-pass filter: those channels carry little variance, and a norm after the layer divides by it
    (``E_c[v / v_c]`` far above the white input's ``E_c[s / s_c]``). Returns ``(E_c[v / v_c], v_c / v,
    |k_c|^2 / mean)`` (``Sig.spread``, ``Sig.rows``, ``Sig.norms``), None when the kernel's shape is unknown."""
    if not kernels or not size or math.prod(size) != len(kernels[0]) or not 0.0 < near < 1.0 or a + b <= 0:
        return None
    key = (kernels, size, dilation or (1,) * len(size), round(near, 3), float(f"{a / (a + b):.3g}"))
    return _correlated_rows(*key)


@functools.lru_cache(maxsize=256)
def _correlated_rows(kernels, size, dilation, near, share):
    import torch  # the rules are plain floats; one quadratic form per channel, in float64

    k = torch.tensor(kernels, dtype=torch.float64)  # (C, taps)
    norms = k.square().sum(1)
    v = share * k.sum(1).square() + (1.0 - share) * ((k @ lag_matrix(size, dilation, near)) * k).sum(1)
    if not bool((norms > 0).all()) or not bool((v > 0).all()):
        return None
    vm, nm = float(v.mean()), float(norms.mean())
    return float((vm / v).mean()), tuple((v / vm).tolist()), tuple((norms / nm).tolist())


def _dc_share(t: tuple[float, ...] | None, a: float, b: float) -> float:
    """``E_c[t_c a / (t_c a + b)] / (a / (a + b))``: the per-sample constant ``a`` of each channel scaled by its
    row sum's square, the positional part ``b`` by its squared norm (positions taken as independent)."""
    if not t or a <= 0 or b <= 0:
        return 1.0
    return sum(tc * a / (tc * a + b) for tc in t) / len(t) * (a + b) / a


def _centered(v: float, x: Sig, lm: LayerMoments) -> float:
    """``E[mean_i x_i^2 - xbar^2]`` over a zero-mean row's receptive field of ``n`` entries (``w = (v - vbar) / s``:
    ``E[y^2] = fan E[w^2] n / (n - 1) (mean_i x_i^2 - xbar^2)`` exactly): ``xbar^2`` keeps the mean, a
    ``1 / channels`` share of the per-channel constants and a ``1 / (channels taps)`` share of the rest (positions
    taken as independent: spatial correlation leaves more of the rest in ``xbar``, hence the bound); ``v`` is the
    part (q, dc or dcb) taken."""
    m2 = x.mean * x.mean
    c, t = max(lm.channels, 1), max(lm.taps, 1)
    const = min(x.dc, v)
    shared = m2 + max(const - m2, 0.0) / c + max(v - const, 0.0) / (c * t)
    return max(v - shared, 0.0)


def _border_bound(lm: LayerMoments, direction: int) -> float:
    chain = lm.taps_bound[direction]
    return max(BOUND_BORDER if min(lm.in_taps, lm.out_taps) < TAPS_EXACT else 1.0,
               chain if chain > CHAIN_EXACT else 1.0)


def layer_backward(lm: LayerMoments | None, d: Grad, n_inputs: int, mixed: bool = False) -> tuple[list[Grad], float]:
    """``mixed``: the layer's input was mixed over channels since the last per-channel layer (a dense layer
    between: the signal and the gradient it meets carry no structure of this layer's rows)."""
    if lm is None or lm.kind == "opaque":
        return [d] * n_inputs, math.inf
    if lm.kind in ("embedding", "bias"):
        return [Grad(0.0)] * n_inputs, 1.0
    f = lm.fan_out * lm.out_taps * lm.weight_ms
    bound = _border_bound(lm, 1)
    if d.spread > 1.0 and lm.matrix is not None and d.own:
        f /= d.spread  # the norm's spread came from this layer's own rows on a known correlation: its share
    elif d.spread > 1.0 and lm.row_spread > 1.0 and lm.per_channel and (lm.taps == 1 or mixed):
        # the norm after this per-channel layer divided channel c's gradient by its variance |w_c|^2 v (one
        # tap: w_c^2 v_c exactly; wider rows: for an input independent over the taps); this backward multiplies
        # each input position by the row's squares again: the rows' share of the spread cancels. A wider row
        # after another per-channel layer meets the spatial correlation that layer's row made in the same
        # channel (a chain of depthwise layers: measured to keep the spread, not cancelled)
        cancel = d.spread if lm.row_norms is not None else min(lm.row_spread, d.spread)  # rows: the norm's
        f /= cancel
        if lm.taps != 1:
            bound *= cancel  # approximate by as much as it moves (tests/test_batch_stats.py)
    out = d.scaled(f) if lm.dc_back == 1.0 else Grad(d.g * f, d.dc * f * lm.dc_back, d.dcb * f * lm.dc_back)
    return [out] + [Grad(0.0)] * (n_inputs - 1), bound


def _shared(nm: NormMoments, x: Sig, shape: tuple[int, ...]) -> tuple[float, float, float]:
    """(variance over the statistics set, the constant part it removes, the gradient's constant part key)."""
    _, c, p = layout(shape)
    if nm.kind == "batch":
        return x.q - x.dcb, x.dcb, 2
    if nm.kind == "instance":
        return x.q - x.dc, x.dc, 1
    if nm.kind == "rms":
        return x.q, 0.0, 0
    if nm.kind == "group" or (nm.kind == "layer" and nm.over_positions):
        cg = max(c // max(nm.groups, 1), 1)
        m2 = x.mean ** 2
        shared = m2 + (x.dc - m2) / cg + (x.q - x.dc) / (cg * max(p, 1))
        return x.q - shared, shared, 0
    # layer norm over the channel dim of each position (or token): the trailing dims it normalizes
    m2 = x.mean ** 2
    shared = m2 + (x.q - m2) / max(nm.normalized or c, 1)
    return x.q - shared, shared, 0


def norm_forward(nm: NormMoments, x: Sig, shape: tuple[int, ...]) -> tuple[Sig, float]:
    if nm.kind == "running":
        q = nm.a_ms * x.q + 2 * nm.ab * x.mean + nm.b_ms
        dc = nm.a_ms * x.dc + 2 * nm.ab * x.mean + nm.b_ms
        dcb = nm.a_ms * x.dcb + 2 * nm.ab * x.mean + nm.b_ms
        return Sig(q, nm.a_mean * x.mean + nm.b_mean, dc, dcb).clean(), 1.0
    if nm.kind == "grn":
        g2 = 1.0 + 2 * nm.gamma_mean + nm.gamma_ms  # E[(1 + gamma_c N_c)^2] with N_c ~ 1
        bound = 1.0 if nm.gamma_ms == 0 else BOUND_GRN
        return Sig(g2 * x.q + nm.beta_ms, x.mean + nm.beta_mean, g2 * x.dc + nm.beta_ms,
                   g2 * x.dcb + nm.beta_ms).clean(), bound
    var, shared, _ = _shared(nm, x, shape)
    var = max(var, 0.0)
    r = var / (var + nm.eps) if var + nm.eps > 0 else 0.0
    gm, bm = nm.gamma_ms, nm.beta_ms
    q = gm * r + bm
    if nm.kind == "batch":
        dc = gm * max(x.dc - x.dcb, 0.0) * x.dc_share / (var + nm.eps) + bm
        out = Sig(q, nm.beta_mean, dc, bm, pos_shared=gm * x.pos_shared / (var + nm.eps), corr=x.corr)
    elif nm.kind == "instance":
        out = Sig(q, nm.beta_mean, bm, bm)
    elif nm.kind == "rms":
        out = Sig(gm * x.q / (x.q + nm.eps) + bm, 0.0, gm * x.dc / (x.q + nm.eps) + bm,
                  gm * x.dcb / (x.q + nm.eps) + bm)
    else:
        scale = gm / (var + nm.eps)
        out = Sig(q, nm.beta_mean, scale * max(x.dc - shared, 0.0) + bm, scale * max(x.dcb - shared, 0.0) + bm)
    bound = BOUND_GENERIC_NORM if nm.kind == "generic" else BOUND_FUNCTIONAL_NORM if nm.functional else 1.0
    if nm.kind == "batch" and abs(math.log(x.dc_share)) > math.log(SPREAD_EXACT):
        bound *= max(x.dc_share, 1.0 / x.dc_share)  # approximate by as much as it moves (tests/test_rules_layer.py)
    return out.clean(), bound


def norm_backward(nm: NormMoments, d: Grad, x: Sig, shape: tuple[int, ...],
                  batch: int | None = None, after: tuple[float, Grad] | None = None) -> tuple[list[Grad], float]:
    """``batch``: the batch size of the pass (the graph may have been traced on a slice of it); ``after``: the
    activation right after the norm, as its ``kappa`` (:func:`initwise._rules_act.slope_correlation`) and the
    gradient at its output, whose parts constant over the statistics set meet the norm's ``xhat`` through
    ``phi'`` (:mod:`initwise._batch_stats`)."""
    if nm.kind == "running":
        return [d.scaled(nm.a_ms)], 1.0
    if nm.kind == "grn":
        g2 = 1.0 + 2 * nm.gamma_mean + nm.gamma_ms
        return [d.scaled(g2)], 1.0 if nm.gamma_ms == 0 else BOUND_GRN
    var, _, level = _shared(nm, x, shape)
    var = max(var, 0.0)
    if nm.kind == "rms":
        var = x.q
    f = nm.gamma_ms / (var + nm.eps) if var + nm.eps > 0 else 0.0
    bound = BOUND_GENERIC_NORM if nm.kind == "generic" else BOUND_FUNCTIONAL_NORM if nm.functional else 1.0
    applied = cancels = 1.0
    if nm.kind in ("batch", "instance") and x.spread > 1.0:
        # each channel's gradient is divided by its own variance: E_c[1 / v_c] = spread / v (eps neglected); the
        # spread comes from a model of the weights' row norms, so the rule is approximate by as much as it moves.
        # With the channels' variances r_c v at hand (Sig.rows): E_c[(v + eps) / (r_c v + eps)], and the layer
        # whose rows they are multiplies by r_c again: what its backward cancels leaves E_c[r_c (v + eps) /
        # (r_c v + eps)]
        applied = cancels = x.spread
        if x.rows and var > 0.0 and nm.eps > 0.0:
            # the input channels' own spread (rows_rest) enters as their harmonic mean 1 / rest: exact where the
            # variance dominates eps, and eps-held channels do not feel it
            rest = max(x.rows_rest, 1.0)
            h = [(var + nm.eps) / (r * var / rest + nm.eps) for r in x.rows]
            applied = sum(h) / len(h)
            own = x.norms if x.norms is not None and len(x.norms) == len(x.rows) else x.rows
            cancels = applied / max(sum(r * t for r, t in zip(own, h)) / len(h), 1e-300)
        f *= applied
        if x.spread > SPREAD_EXACT:
            bound *= x.spread
    if nm.kind in ("batch", "instance"):
        # the statistics of a finite set: E[1 / s] for the set's own variance s, and xhat's projection
        n, _, p = layout(shape)
        n = batch or n
        coherent = 0.0
        if after is not None:
            kappa, h = after
            # E[mean(dy xhat)]^2 beyond the independent part's share: kappa^2 over the set's pairs of distinct
            # values, (1 / M^2) sum_{j != k} E[h_j h_k]; the means' powers hold 1 / M of E[h^2] itself
            m = n * p if nm.kind == "batch" else p
            shared = (h.dcb if nm.kind == "batch" else h.dc) - h.g / max(m, 1)
            coherent = kappa * kappa * max(shared, 0.0)
        fs = finite_set_factor(nm.kind, x.q, x.dc, x.dcb, d.g, d.dc, d.dcb, n, p, nm.eps, coherent,
                               realized=x.realized and x.rows is not None and nm.kind == "batch",
                               shared=x.pos_shared)
        f *= fs
        if abs(math.log(fs)) > math.log(SPREAD_EXACT) if fs > 0 else False:
            bound *= max(fs, 1.0 / fs)  # Gaussian values: approximate by as much as it moves (tests)
    removed = d.dcb if level == 2 else d.dc if level == 1 else 0.0
    spread = nm.kind in ("batch", "instance") and x.spread > 1.0
    out = Grad(f * max(d.g - removed, 0.0), f * max(d.dc - removed, 0.0), f * max(d.dcb - removed, 0.0),
               cancels if spread else 1.0, spread and x.rows is not None and x.norms is not None)
    return [out], bound


def normalize_forward(x: Sig, size: int) -> tuple[Sig, float]:
    """``F.normalize(x, dim)`` (p = 2): every vector along ``dim`` has unit norm, so ``E[y^2] = 1 / size`` exactly
    (unless eps dominates); the constant parts scale as ``1 / (size E[x^2])`` (approximate: the norm of one vector
    is taken at its mean)."""
    if x.q <= 0 or size <= 0:
        return Sig(0.0), 1.0
    c2 = 1.0 / (size * x.q)
    return Sig(1.0 / size, x.mean * math.sqrt(c2), x.dc * c2, x.dcb * c2).clean(), 1.0


def normalize_backward(d: Grad, x: Sig, size: int) -> tuple[list[Grad], float]:
    """``dx = (I - y y^T) dy / |x|``: ``E[dx^2] = (1 - 1 / size) E[dy^2] / (size E[x^2])`` (the projection's share
    taken for a gradient independent of ``y``); approximate (the norm of one vector at its mean)."""
    if x.q <= 0 or size <= 0:
        return [Grad(0.0)], BOUND_FUNCTIONAL_NORM
    f = (1.0 - 1.0 / size) / (size * x.q) if size > 1 else 0.0
    return [d.scaled(f)], BOUND_FUNCTIONAL_NORM
