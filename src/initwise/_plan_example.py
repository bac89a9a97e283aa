"""What the example itself tells the propagation (:mod:`initwise._plan_moments` passes it on): its moments, the
model's constant prefix evaluated on it, the patch moments a weight-standardized first layer sees, and how alike
neighbouring outputs of a drawn first layer are over its weights' draws.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Container
from typing import Any

import torch
from torch import nn

from ._graph import Graph
from ._nested import tensors as _nested_tensors
from ._plan_types import LayerPlan
from ._propagate import LayerMoments
from ._signal import Sig, sig_of


def _input_moments(g: Graph, example_inputs: Any) -> dict[int, Sig | None]:
    tensors = _nested_tensors(example_inputs)
    out: dict[int, Sig | None] = {}
    for nid, t in zip(g.input_ids, tensors):
        # a meta example has no values: its moments are unknown (None, as for integer inputs: unit)
        out[nid] = sig_of(t) if t.is_floating_point() and t.numel() and not t.is_meta else None
    return out


CONST_NUMEL = 1 << 20  # a parameter operand of a cat or a shift is copied for the propagation up to this size


def param_consts(model: Any, g: Graph) -> dict[str, torch.Tensor]:
    """The values (float64 copies, read now) of the parameters that the graph's cats and shifts take as
    operands the trace saw no values of (ViT's class token and position embedding: :mod:`initwise._rules_tokens`);
    none on the meta device, sharded, or above ``CONST_NUMEL`` elements."""
    names = {n.source for n in g.nodes if n.kind == "shift" and n.source is not None}
    names |= {src for n in g.nodes if n.kind == "cat" and n.parts for _, src in n.parts if isinstance(src, str)}
    if not names:
        return {}
    params = dict(model.named_parameters(remove_duplicate=False))
    out = {}
    with torch.no_grad(), torch._C.DisableTorchFunction():
        for k in sorted(names):
            p = params.get(k)
            if p is None or p.is_meta or not p.is_floating_point() or p.numel() > CONST_NUMEL or \
                    type(p.data) is not torch.Tensor:  # (a DTensor shard holds part of the values)
                continue
            out[k] = p.detach().to("cpu", torch.float64, copy=True)
    return out


_PURE_FORWARD = {nn.Conv1d.forward, nn.Conv2d.forward, nn.Conv3d.forward, nn.Linear.forward}


_SAME = frozenset(("to", "float", "double", "contiguous", "clone", "detach", "Identity", "type_as", "view",
                   "reshape", "identity"))


_PREFIX_LIMIT = 1 << 24  # elements: a prefix is evaluated on the example only while it is this small


def _prefix_moments(g: Graph, example_inputs: Any,
                    layers: list[LayerPlan]) -> tuple[dict[int, Sig], dict[int, torch.Tensor]]:
    """Exact moments of what the model computes from the example before its first drawn layer: scalar scales,
    value-preserving views, shifts by a constant the trace knows (``(x - self.mean) * 255``) and layers whose
    weights no scheme draws (EDSR's and RCAN's ``MeanShift``, a frozen stem), evaluated on the example itself,
    so that a mean subtracted by a constant layer is seen as subtracted (the rules treat a layer's weights as zero-mean and independent of the signal, which a mean shift is not).
    Only torch's own Conv/Linear forwards are evaluated (pure functions of the weights), without hooks.
    Returns the moments and the values themselves (the example's inputs among them)."""
    tensors = _nested_tensors(example_inputs)
    values: dict[int, torch.Tensor] = {}
    for nid, t in zip(g.input_ids, tensors):
        if t.is_floating_point() and not t.is_meta and t.numel() <= _PREFIX_LIMIT:
            values[nid] = t.detach()
    if not values:
        return {}, values
    plans = {lp.name: lp for lp in layers}
    modules = {i.name: i.module for i in g.layers}
    out: dict[int, Sig] = {}
    with torch.no_grad():
        for n in g.nodes:
            if n.kind == "input" or len(n.inputs) != 1 or n.inputs[0] not in values:
                continue
            x = values[n.inputs[0]]
            y = None
            if n.kind == "scale" and n.factor is not None and n.op in ("mul", "div", "neg", "alpha"):
                y = x * n.factor  # a scalar factor (a tensor factor is summarized by its RMS: not exact)
            elif n.kind == "pass" and n.op in _SAME and tuple(n.shape[1:]) == tuple(x.shape[1:]):
                y = x
            elif n.kind == "shift" and n.const is not None and n.op in ("add", "sub", "rsub"):
                c = torch.tensor(n.const[1], dtype=torch.float64).reshape(n.const[0]).to(x.dtype)
                y = x + c if n.op == "add" else x - c if n.op == "sub" else c - x
            elif n.kind == "layer" and n.module in plans and n.module in modules:
                m, lp = modules[n.module], plans[n.module]
                if type(m).forward in _PURE_FORWARD and lp.params and all(p.method == "keep" for p in lp.params) \
                        and not any(t.is_meta for t in m.parameters(recurse=False)):
                    try:
                        y = type(m).forward(m, x)
                    except RuntimeError:  # torch cannot run it (a conv with zero output channels): not evaluated
                        y = None
            if y is None or tuple(y.shape[1:]) != tuple(n.shape[1:]):  # the graph may be traced on one sample
                continue
            values[n.id] = y
            if n.kind in ("layer", "shift"):
                out[n.id] = sig_of(y)
    return out, values


def _patch_moments(g: Graph, layer_ms: dict[str, LayerMoments], example_inputs: Any) -> None:
    """A weight-standardized convolution on the example itself (NF-Nets' stem): ``E[mean_i x_i^2 - xbar^2]`` over
    its receptive fields, measured (smooth images keep most of their power in a patch's mean, which the zero-mean
    rows remove). Fills ``LayerMoments.patch_ms`` in place."""
    import torch.nn.functional as F

    tensors = dict(zip(g.input_ids, _nested_tensors(example_inputs)))
    for info in g.layers:
        lm = layer_ms.get(info.name)
        m = info.module
        if lm is None or not lm.centered or not info.nodes or not isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            continue
        n = g.nodes[info.nodes[0]]
        x = tensors.get(n.inputs[0]) if n.inputs else None
        sd = x.dim() - 2 if x is not None else 0
        if x is None or x.is_meta or not x.is_floating_point() or sd not in (1, 2, 3) or m.groups != 1 \
                or any(d != 1 for d in m.dilation) or isinstance(m.padding, str) or m.padding_mode != "zeros" \
                or x.numel() > _PREFIX_LIMIT:
            continue
        pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[sd - 1]
        with torch.no_grad():
            xd = x.detach().double()
            kw = dict(kernel_size=m.kernel_size, stride=m.stride, padding=m.padding, count_include_pad=True)
            mean = pool(xd.mean(1, keepdim=True), **kw)
            power = pool(xd.square().mean(1, keepdim=True), **kw)
            layer_ms[info.name] = dataclasses.replace(lm, patch_ms=float((power - mean.square()).mean()))


def _batch(example_inputs: Any) -> int | None:
    """The batch size of the example (the graph may have been traced on a one-sample slice of it)."""
    ts = [t for t in _nested_tensors(example_inputs) if t.dim() >= 1]
    return int(ts[0].shape[0]) if ts else None




def _measured_near(g: Graph, layer_ms: dict[str, LayerMoments], values: dict[int, torch.Tensor],
                   known: Container[int] = ()) -> dict[int, float]:
    """``Sig.near`` of each drawn 2-d convolution's output whose input the example fixes (the stem), over its
    weights' draws, measured on that input rather than taken geometric over lags: with independent zero-mean
    weights ``E_w[y_p y_p'] = E[w^2] sum_i a_ip a_ip'`` over the receptive field's values ``a_ip``; a standardized
    weight (rows of zero sum) pairs the fields' residuals from their own mean instead. ``near`` is then the
    neighbours' lag-1 moment against the mean pair moment, over each output dim, as :func:`initwise._signal.
    sig_of` measures it. Nodes in ``known`` (their moments are measured on the example itself, ``near``
    included: the propagation reads no rule there) are skipped: a "current" plan's kept stem, whose unfolded
    receptive fields would cost a ResNet-50 diagnose at batch 1 ~50 ms for a figure nothing reads."""
    import torch.nn.functional as F

    out: dict[int, float] = {}
    for info in g.layers:
        lm, m = layer_ms.get(info.name), info.module
        if lm is None or lm.kind != "affine" or not isinstance(m, nn.Conv2d) or isinstance(m.padding, str) \
                or m.padding_mode != "zeros" or m.groups != 1:
            continue
        for nid in info.nodes:
            n = g.nodes[nid]
            x = values.get(n.inputs[0]) if len(n.inputs) == 1 and nid not in known else None
            if x is None or x.dim() != 4 or len(n.shape) != 4 or n.shape[2] < 2 and n.shape[3] < 2 \
                    or x.numel() * math.prod(m.kernel_size) > _PREFIX_LIMIT:
                continue
            with torch.no_grad():
                a = F.unfold(x.double(), m.kernel_size, m.dilation, m.padding, m.stride)  # (N, C k, P)
                if lm.centered:
                    a = a - a.mean(1, keepdim=True)
                h, w = int(n.shape[2]), int(n.shape[3])
                if a.shape[-1] != h * w:
                    continue
                a = a.reshape(a.shape[0], a.shape[1], h, w)
                p = h * w
                q = float(a.square().sum(1).mean())
                same = float(((a.sum((2, 3)).square() - a.square().sum((2, 3))) / (p * (p - 1))).sum(1).mean()) \
                    if p > 1 else q
                lags = [float((a.narrow(d, 0, a.shape[d] - 1) * a.narrow(d, 1, a.shape[d] - 1)).sum(1).mean())
                        for d in (2, 3) if a.shape[d] > 1]
            if q - same > 0 and lags:
                out[nid] = min(max((sum(lags) / len(lags) - same) / (q - same), -1.0), 1.0)
    return out
