"""What a plan tells the propagation (:mod:`initwise._propagate`): each layer's fans and weight/bias second
moments, each norm's statistics, the example's moments, and the propagated figures attached back to the
layers. :func:`initwise.plan` decides per parameter; this module turns those decisions into the rules' inputs.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from torch import nn

from ._fans import fans as layer_fans
from ._graph import Graph, LayerInfo
from ._plan_types import LayerPlan
from ._propagate import LayerMoments, propagate
from ._rules_layer import KERNEL_ROWS
from ._signal import CORR_CHANNELS
from ._reparam import effective_ms, reparams
from ._row_norms import row_ms, sharable
from ._plan_example import _batch, _input_moments, _measured_near, _patch_moments, _prefix_moments
from ._taps import chain_depths, constant_factors, tap_factors

__all__ = ["propagated", "propagation_inputs", "attach_propagation"]


_AFFINE = (nn.Linear, nn.Bilinear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
           nn.ConvTranspose3d)


def propagated(g: Graph, layers: list[LayerPlan], layer_ms: dict[str, LayerMoments],
               norm_ms: dict[str, tuple[float, float]],
               example_inputs: Any) -> tuple[float, float | None, list[str], Any]:
    """Propagate second moments from the example through ``g``; fills each layer's ``forward``/``backward``
    (which must be None) and returns the input's second moment, the output's relative forward moment, the
    ops propagated approximately and the :class:`initwise._propagate.Propagation` itself (every node's moments:
    diagnose's noise model reads them)."""
    return attach_propagation(g, layers, layer_ms, norm_ms, propagation_inputs(g, layers, layer_ms, example_inputs))


def propagation_inputs(g: Graph, layers: list[LayerPlan], layer_ms: dict[str, LayerMoments],
                       example_inputs: Any, consts: dict[str, torch.Tensor] | None = None) -> tuple:
    """What :func:`propagated` reads from the example and the model's values (the example's moments, the exact
    prefix, patch moments: filled into ``layer_ms``; ``consts``: :func:`initwise._plan_example.param_consts`), so
    that :func:`attach_propagation` can run later."""
    input_ms = _input_moments(g, example_inputs)
    known, values = _prefix_moments(g, example_inputs, layers)
    _patch_moments(g, layer_ms, example_inputs)
    return input_ms, known, _batch(example_inputs), _measured_near(g, layer_ms, values, known), consts or {}


def attach_propagation(g: Graph, layers: list[LayerPlan], layer_ms: dict[str, LayerMoments],
                       norm_ms: dict[str, tuple[float, float]],
                       inputs: tuple) -> tuple[float, float | None, list[str], Any]:
    """The second half of :func:`propagated`, from :func:`propagation_inputs`' result."""
    input_ms, known, batch, near, *rest = inputs
    prop = propagate(g, layer_ms, norm_ms, input_ms, batch, known, near, rest[0] if rest else None)
    q0 = next((v.q for v in input_ms.values() if v is not None and v.q > 0), 1.0)
    _attach(g, layers, prop, q0)
    out_f = [prop.forward.get(i) for i in g.output_ids]
    out_forward = (max(v for v in out_f if v is not None) / q0) if any(v is not None for v in out_f) else None
    spectral = [f"{lp.name}:spectral_norm" for lp in layers if any(p.note.startswith("spectral norm") or
                                                                    "; spectral norm" in p.note for p in lp.params)]
    return q0, out_forward, sorted(set(prop.approximate) | set(spectral)), prop


def _moments_of(info: LayerInfo, lp: LayerPlan, g: Graph | None = None) -> LayerMoments:
    """Fans and weight/bias second moments of one layer for the propagation, from the op that consumed its
    weight where the trace saw it (custom and functional layers are then modelled like nn.Conv2d), else from
    its class. A standardized weight contributes the second moment the op actually used (its scale does not
    depend on the draw); a weight nobody draws, its current values; with no values (meta), the layer is opaque."""
    primary = next((p for p in lp.params if len(p.shape) >= 2 and p.method != "weight_norm_g"), None)
    m = info.module
    role = g.params.get(primary.param) if g is not None and primary is not None else None
    functional = role is not None and role.role in ("weight", "table") and role.fans is not None and not role.computed
    if isinstance(m, nn.MultiheadAttention) and primary is not None:
        return _attention_moments(m, lp)
    if primary is not None and 0 in primary.shape and (isinstance(m, _AFFINE) or functional):
        # a zero-width layer (``nn.Linear(0, n)``, ``nn.Linear(n, 0)``: a tiny model's ``dim // 16``): its output
        # is its bias alone, and no gradient reaches its (empty) input
        b_ms, b_mean = _bias_moments(info, m, lp)
        return LayerMoments(0.0, 0.0, 0.0, b_ms, kind="bias", bias_mean=b_mean)
    if primary is None or 0 in primary.shape or isinstance(m, (nn.MultiheadAttention, nn.RNNBase)) or not (
            isinstance(m, (*_AFFINE, nn.Embedding, nn.EmbeddingBag)) or functional):
        return LayerMoments(1.0, 1.0, 1.0, kind="opaque")
    local = primary.param[len(info.owner_name) + 1:] if info.owner_name else primary.param
    w = dict(m.named_parameters(recurse=False)).get(local)
    rep = reparams(m).get(local)
    if rep is not None and rep.kind == "spectral_norm":
        w_ms = effective_ms(primary.shape, rep.dim)  # divided by its largest singular value: approximate
    elif role is not None and role.standardized and role.effective_ms is not None:
        w_ms = role.effective_ms
    elif primary.std is not None and not (role is not None and role.standardized):
        w_ms = primary.std ** 2
    elif w is None or w.is_meta or not w.is_floating_point():
        return LayerMoments(1.0, 1.0, 1.0, kind="opaque")
    else:
        w_ms = float(w.detach().double().pow(2).mean())
    if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) or role is not None and role.role == "table":
        return LayerMoments(1.0, 1.0, w_ms, kind="embedding")
    b_ms, _ = _bias_moments(info, m, lp)
    f = role.fans if functional else primary.fans if primary.fans is not None else role.fans if (
        role is not None and role.fans is not None) else layer_fans(m, "weight")
    t_in, t_out, b_in, b_out, dc_keep, dc_gain = _taps_of(info, m, role if functional else None, primary.shape, g)
    transposed = bool(role.transposed) if functional else bool(getattr(m, "transposed", False))
    stride = (role.stride if functional and role is not None and "conv" in role.op else
              getattr(m, "stride", ()) if isinstance(m, nn.modules.conv._ConvNd) else ()) or ()
    per_channel = len(primary.shape) >= 3 and (primary.shape[0 if transposed else 1] == 1)
    spread = _row_spread(w, primary.method, f.fan_in * t_in, transposed)
    centered = role is not None and role.standardized and len(primary.shape) >= 2 and not transposed
    return LayerMoments(f.fan_in, f.fan_out, w_ms, b_ms, in_taps=t_in, out_taps=t_out, taps_bound=(b_in, b_out),
                        dc_keep=dc_keep, dc_gain=dc_gain,
                        row_spread=spread, row_sums=_row_sums(w, primary.method, primary.shape) if per_channel
                        and not transposed else None,
                        row_norms=_row_norms(w, primary.method) if per_channel and not transposed and spread > 1.0
                        else None,
                        per_channel=per_channel, centered=centered, channels=int(primary.shape[1]),
                        taps=max(int(round(math.prod(primary.shape[2:]) * t_in)), 1),
                        kernels=_kernel_rows(w, primary.method, primary.shape) if per_channel and not transposed
                        else None, kernel_size=tuple(int(v) for v in primary.shape[2:]),
                        dilation=tuple(int(v) for v in getattr(m, "dilation", ())) if isinstance(
                            m, nn.modules.conv._ConvNd) else (),
                        matrix=_matrix(w, primary.method, primary.shape, transposed),
                        dc_back=1.0 if transposed else 1.0 / max(math.prod(int(v) for v in stride), 1))


def _bias_moments(info: LayerInfo, m: nn.Module, lp: LayerPlan) -> tuple[float, float]:
    """The layer's bias's second moment and mean: drawn (its std, mean 0), kept (its values) or none (0, 0)."""
    bias = next((p for p in lp.params if p.param.endswith("bias") or len(p.shape) < 2), None)
    if bias is None:
        return 0.0, 0.0
    if bias.std is not None:
        return bias.std ** 2, 0.0
    b = dict(m.named_parameters(recurse=False)).get(bias.param[len(info.owner_name) + 1:] if info.owner_name
                                                     else bias.param)
    if b is None or b.is_meta or not b.is_floating_point() or not b.numel():
        return 0.0, 0.0
    v = b.detach().double()
    return float(v.pow(2).mean()), float(v.mean())


MATRIX_NUMEL = 1 << 16  # a kept weight is copied for its input's channel correlation up to this size (0.5 MiB)


def _matrix(w: torch.Tensor | None, method: str, shape: tuple[int, ...], transposed: bool) -> torch.Tensor | None:
    """A kept dense layer's weight as an (out x in x taps) float64 array (``LayerMoments.matrix``), for a channel
    correlation the example fixes; None for drawn weights, a transposed layer, too many inputs, or a weight above
    ``MATRIX_NUMEL`` (a copy per kept layer: the stems' followers it is for are small). A grouped layer's rows
    read fewer channels than the correlation has: :func:`initwise._rules_corr.layer_rows` finds no match."""
    if method != "keep" or transposed or w is None or w.is_meta or not w.is_floating_point() or len(shape) < 2 \
            or shape[1] > CORR_CHANNELS or shape[1] < 2 or math.prod(shape[2:]) > 49 or w.numel() > MATRIX_NUMEL:
        return None
    return w.detach().reshape(w.shape[0], w.shape[1], -1).double()


def _kept_rows(w: torch.Tensor | None) -> torch.Tensor | None:
    """A kept weight's rows, one per output channel, in float64 (None without values)."""
    if w is None or w.is_meta or not w.is_floating_point():
        return None
    return w.detach().reshape(w.shape[0], -1).double()


def _kernel_rows(w: torch.Tensor | None, method: str, shape: tuple[int, ...]) -> tuple[tuple[float, ...], ...] | None:
    """A per-channel layer's rows (``LayerMoments.kernels``): its weights when kept (up to ``KERNEL_ROWS``
    channels, evenly spaced), else Gaussian rows of the kernel's size (a fixed generator: every independent
    zero-mean draw has their correlation structure, only the scale differs); None for one tap, for orthogonal
    and identity rows, and without values."""
    k = math.prod(shape[2:])
    if k <= 1:
        return None
    if method == "keep":
        rows = _kept_rows(w)
        if rows is None:
            return None
        if rows.shape[0] > KERNEL_ROWS:
            rows = rows[torch.linspace(0, rows.shape[0] - 1, KERNEL_ROWS).round().long()]
        return tuple(map(tuple, rows.tolist()))
    if method not in _KURTOSIS:
        return None
    return _gaussian_rows(k)


@functools.lru_cache(maxsize=64)
def _gaussian_rows(k: int) -> tuple[tuple[float, ...], ...]:
    g = torch.Generator().manual_seed(0)
    return tuple(map(tuple, torch.randn(KERNEL_ROWS, k, dtype=torch.float64, generator=g).tolist()))


def _row_sums(w: torch.Tensor | None, method: str, shape: tuple[int, ...]) -> tuple[float, ...] | None:
    """``t_c = (sum_j w_cj)^2 / sum_j w_cj^2`` per output channel of a per-channel (depthwise) layer: from the
    weights when they are kept, else of 4096 Gaussian rows of the kernel's size (a fixed generator: the caller's
    RNG untouched); ``t / k`` is then Beta(1/2, (k - 1)/2), mean 1/k. None for a 1-tap kernel (``t = 1``)."""
    k = math.prod(shape[2:])
    if k <= 1:
        return None
    if method == "keep":
        rows = _kept_rows(w)
        return _sums_of(rows) if rows is not None else None
    if method in ("orthogonal", "identity", "dirac"):
        return None
    return _gaussian_row_sums(k)


@functools.lru_cache(maxsize=64)
def _gaussian_row_sums(k: int) -> tuple[float, ...] | None:
    """:func:`_row_sums` of 4096 Gaussian rows of ``k`` taps (a fixed generator): the same for every drawn layer
    of that kernel size, made once."""
    return _sums_of(torch.randn(4096, k, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))


def _row_norms(w: torch.Tensor | None, method: str) -> tuple[float, ...] | None:
    """Each output channel's squared row norm over their mean (a per-channel layer: ``Sig.rows``), when the
    weights are kept. Drawn rows of few taps have no typical spread to put there: for one tap ``E[1 / w^2]``
    diverges and the mean over C channels is ruled by the smallest draw, so they keep the spread's model."""
    if method != "keep" or w is None or w.is_meta or not w.is_floating_point():
        return None
    q = w.detach().reshape(w.shape[0], -1).double().square().sum(1)
    mean = float(q.mean())
    return tuple((q / mean).tolist()) if mean > 0 else None


def _sums_of(rows: torch.Tensor) -> tuple[float, ...] | None:
    q = rows.square().sum(1)
    ok = q > 0
    if not bool(ok.any()):
        return None
    return tuple((rows.sum(1)[ok].square() / q[ok]).tolist())


# kurtosis E[w^4] / E[w^2]^2 of the drawn distributions: the squared norm of a row of f entries has relative
# variance (kurtosis - 1) / f; truncated normal at +-2 std of the underlying normal: 2.36
_KURTOSIS = {"normal": 3.0, "uniform": 1.8, "torch_default": 1.8, "truncated_normal": 2.36, "icnr": 3.0}


def _row_spread(w: torch.Tensor | None, method: str, fan: float, transposed: bool) -> float:
    """``E_c[s / s_c]`` over the output channels' squared row norms ``s_c``: from the weights when they are kept
    (scheme "current"), else for ``fan`` independent draws of the scheme's distribution, ``1 / (1 - cv^2)`` with
    ``cv^2 = (kurtosis - 1) / fan`` (exact for Gaussian rows: the inverse of a chi-square's mean, ``f / (f - 2)``).
    Orthogonal and identity rows have equal norms (1)."""
    if method == "keep":
        if w is None or w.is_meta or not w.is_floating_point() or w.dim() < 2 or w.numel() == 0:
            return 1.0
        if sharable(w):  # float32 rows: no float64 copy of the weight (and read once: see _row_norms)
            s = row_ms(w, transposed)
        else:
            d = w.detach()
            rows = (d.transpose(0, 1) if transposed else d).reshape(d.shape[1] if transposed else d.shape[0], -1)
            s = torch.linalg.vector_norm(rows, dim=1).double().square()
        if not bool((s > 0).all()):
            return 1.0  # zero rows (a zero-init branch end): their channels carry no variance to spread
        return float(s.mean() * (1.0 / s).mean())
    k = _KURTOSIS.get(method)
    if k is None or fan <= 0:
        return 1.0
    cv2 = (k - 1.0) / fan
    return 1.0 / (1.0 - cv2) if cv2 < 0.5 else 2.0


def _taps_of(info: LayerInfo, m: nn.Module, role: Any, shape: tuple[int, ...],
             g: Graph | None) -> tuple[float, float, float, float, float, float]:
    """The fraction of a zero-padded convolution's taps that read the input at the example's size (its first
    call), forward and backward, their bounds (:func:`initwise._taps.tap_factors`) and what its borders do to the
    input's constant part (:func:`initwise._taps.constant_factors`); no change for any other layer."""
    if g is None or not info.nodes or len(shape) < 3:
        return 1.0, 1.0, 1.0, 1.0, 1.0, 0.0
    if isinstance(m, nn.modules.conv._ConvNd) and tuple(m.weight.shape) == tuple(shape):
        stride, dilation, transposed, module = m.stride, m.dilation, m.transposed, m
    elif role is not None and "conv" in role.op:
        stride, dilation, transposed = role.stride, role.dilation, role.transposed
        module = None  # padding from the shapes
    else:
        return 1.0, 1.0, 1.0, 1.0, 1.0, 0.0
    n = g.nodes[info.nodes[0]]
    if not n.inputs:
        return 1.0, 1.0, 1.0, 1.0, 1.0, 0.0
    fwd, bwd = _depths(g)
    in_shape = g.nodes[n.inputs[0]].shape
    taps = tap_factors(module, tuple(shape[2:]), in_shape, n.shape, stride, dilation, transposed,
                       (fwd.get(n.inputs[0], 0), bwd.get(n.id, 0)))
    # a transposed conv of stride s spreads a constant input over s^d output phases, each with its own taps: the
    # pattern's mean holds 1 / s^d of its power (as a strided conv's backward does to a constant gradient)
    const = (1.0 / max(math.prod(int(v) for v in stride), 1), 0.0) if transposed else constant_factors(
        module, tuple(shape[2:]), in_shape, n.shape, stride, dilation)
    return (*taps, *const)


_DEPTHS: list[Any] = [None, None]  # the last graph and its chain depths (plan asks once per layer)


def _depths(g: Graph) -> tuple[dict[int, int], dict[int, int]]:
    """:func:`initwise._taps.chain_depths` of ``g``'s nodes (its stride-1 zero-padded ``nn`` convolutions)."""
    if _DEPTHS[0] is not g:
        convs = {i.name: i.module for i in g.layers if isinstance(i.module, nn.modules.conv._ConvNd)
                 and not i.module.transposed and all(s == 1 for s in i.module.stride)
                 and i.module.padding_mode == "zeros" and i.module.padding != "valid"
                 and any(p > 0 for p in (i.module.padding if isinstance(i.module.padding, tuple) else (1,)))}
        _DEPTHS[:] = [g, chain_depths(g.nodes, convs)]
    return _DEPTHS[1]


def _attention_moments(m: nn.MultiheadAttention, lp: LayerPlan) -> LayerMoments:
    """Self-attention of ``nn.MultiheadAttention`` with packed projections (:class:`initwise._rules_join.
    AttentionMoments`): each projection's ``E * E[w^2]`` from the plan's std, or the weights as they are."""
    from ._rules_join import AttentionMoments

    e = m.embed_dim
    w = m.in_proj_weight
    if w is None or w.is_meta or m.bias_k is not None or not m._qkv_same_embed_dim:
        return LayerMoments(1.0, 1.0, 1.0, kind="opaque")
    stds = {p.param.rsplit(".", 1)[-1] if "out_proj" not in p.param else "out_" + p.param.rsplit(".", 1)[-1]: p.std
            for p in lp.params}

    def ms(t: torch.Tensor | None, std: float | None) -> list[float]:
        if std is not None:
            return [std * std] * (3 if t is not None and t.shape[0] == 3 * e else 1)
        if t is None:
            return [0.0, 0.0, 0.0]
        d = t.detach().double()
        return [float(c.square().mean()) for c in d.chunk(3)] if d.shape[0] == 3 * e else [float(d.square().mean())]

    wq, wk, wv = ms(w, stds.get("in_proj_weight"))
    bq, bk, bv = ms(m.in_proj_bias, stds.get("in_proj_bias")) if m.in_proj_bias is not None else (0.0, 0.0, 0.0)
    (wo,) = ms(m.out_proj.weight, stds.get("out_weight"))
    (bo,) = ms(m.out_proj.bias, stds.get("out_bias")) if m.out_proj.bias is not None else (0.0,)
    a = AttentionMoments(e, m.num_heads, 1 if m.batch_first else 0, e * wq, e * wk, e * wv, e * wo, bq, bk, bv, bo)
    return LayerMoments(e, e, wv, bo, kind="attention", attention=a)


def _attach(g: Graph, layers: list[LayerPlan], prop, q0: float) -> None:
    by_name = {lp.name: lp for lp in layers}
    for n in g.nodes:
        if n.kind != "layer" or n.module not in by_name:
            continue
        lp = by_name[n.module]
        if lp.forward is None:  # first call of a reused layer
            f = prop.forward.get(n.id)
            lp.forward = f / q0 if f is not None and q0 else None
            lp.backward = prop.backward.get(n.id)
            lp.forward_bound = prop.forward_bound.get(n.id, 1.0)
            lp.backward_bound = prop.backward_bound.get(n.id, 1.0)
            lp.backward_removed = prop.backward_removed.get(n.id, 1.0)
