"""The standard errors diagnose reports: how far a layer's measurement moves when the weights are drawn again.

A measurement ``m = E[y^2] / E[x^2]`` (or ``E[dy^2] / E[c^2]``) is one draw of the weights; the plan predicts its
expectation over draws. Its relative standard error is that of ``ln m`` over draws, given the example and the
cotangent. ``ln m`` is a sum of the log realized gains of the layers on its paths, each weighted by how much of
the signal (or gradient) goes through it: a *source* per layer, with a *sensitivity* per tensor that the graph
walk below carries (``d ln m / d ln gain``), and a variance per source measured on the pass itself:

- ``w``: the weight's overall scale (the spread of its rows' squared norms over the rows: ``(kurtosis - 1) /
  numel`` for i.i.d. entries, 0 for orthogonal ones), shared by the layer's forward and backward gain;
- ``f``: the rest of the forward gain: the spread of the layer's output channels' second moments
  (``Var_c / C``, channels are independent given the layer's input), less ``w``; the activation that follows
  adds the spread its own output shows beyond that (a ReLU keeps more or less than half of a channel whose
  mean is not zero);
- ``b``: the rest of the backward gain ``W^T``: each input channel's gradient is a quadratic form of its weight
  column in the output gradient's rows, whose Gram matrix has rank ``min(rows, fan_out)`` (few samples and
  positions: fewer than the fan-out): ``2 / (rank x input channels)``;
- ``m``: a ReLU's mask, which passes the gradient of a fraction of each channel's units: the spread of the
  kept fractions over the channels (from each channel's output moments, :func:`initwise._probe.finish`); where the layer's input is another layer's output through pointwise ops
  (a chain), the spread of the gradient measured at that output when it is larger (it shows every fresh
  factor between the two: a smooth activation's derivative, a norm's division channel by channel).

Sensitivities: 1 through pointwise ops, views and weight layers; the share of each operand's second moment at an
add or a concatenation; summed at a product (both scales multiply); 0 after a normalization (it divides the
realized scale out, forward) and -1 times the forward's sources through its backward (it divides the gradient
by that scale: a conv followed by batch norm has a backward that does not depend on the conv's scale, so its
``w`` cancels). A node used several times takes its users' gradients in proportion to their predicted power.
Sources are taken independent; the variance of ``ln m`` is the sum over sources of sensitivity^2 x variance.
Where no source is left (the output layer's gradient is the cotangent itself) the noise is the sampling floor
of a mean of ``count`` squares, ``sqrt(2 / count)``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from torch import nn

from . import _rules_reduce as R
from ._gains import moments
from ._plan_norms import _norm_kind
from ._signal import layout

__all__ = ["noises"]

_FUNCTIONAL_NORMS = frozenset(("batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm", "normalize"))


def _normalizes(n: Any, modules: dict[str, nn.Module]) -> bool:
    """A norm node that divides by statistics of the signal itself (not an eval-mode batch norm's running ones)."""
    m = modules.get(n.module or "")
    if m is not None:
        return _norm_kind(m)[0] in ("batch", "instance", "group", "layer", "rms")
    return n.op in _FUNCTIONAL_NORMS


_HOMOGENEOUS = frozenset(("linear", "relu", "leaky_relu", "prelu", "relu6"))
_STEP = 1.1  # the relative change of the input's second moment the activations' sensitivities are taken over


def _act_sensitivity(act: Any, x: Any) -> tuple[float, float, float | None]:
    """``d ln E[phi^2] / d ln s`` and ``d ln E[phi'^2] / d ln s`` for the pre-activation ``x`` scaled by ``s``
    (a realized gain scales its mean and its spread alike): 1 and 0 for a positively homogeneous activation, a
    sigmoid gate near 0.5 hardly follows its input's scale (both near 0). Third: ``E[phi'^2]`` there (None for
    a homogeneous one: the ratio of second moments)."""
    if act is None or x is None or (act.name in _HOMOGENEOUS and act.known):
        return 1.0, 0.0, None
    v, mu = max(x.q - x.mean * x.mean, 0.0), x.mean
    try:
        hi, lo = moments(act, v * _STEP, mean=mu * math.sqrt(_STEP)), moments(act, v / _STEP, mean=mu / math.sqrt(_STEP))
        at = moments(act, v, mean=mu).backward
    except (ValueError, TypeError, RuntimeError):
        return 1.0, 0.0, None
    step = 2.0 * math.log(_STEP)

    def d(a: float, b: float) -> float:
        return math.log(a / b) / step if a > 0 and b > 0 and math.isfinite(a / b) else 0.0

    return d(hi.second_moment, lo.second_moment), d(hi.backward, lo.backward), at


class _Logits:
    """A zero-mean signal of second moment ``q`` (the logits of an attention)."""

    def __init__(self, q: float) -> None:
        self.q, self.mean = q, 0.0


def _softmax_sensitivity(x: Any, size: int) -> float:
    """``d ln E[p^2] / d ln s`` for a softmax over ``size`` logits scaled by ``s`` (in second moment): ``E[p^2] ~
    e^v / size^2`` for near-uniform weights (logits' variance ``v``), so ``v``, falling to 0 as the weights
    peak (``size E[p^2]`` reaching 1)."""
    if x is None or size <= 1:
        return 0.0
    v = max(x.q - x.mean * x.mean, 0.0)
    return v * max(0.0, 1.0 - math.exp(min(v, 50.0)) / size)


def _add(acc: dict[str, float], d: dict[str, float], c: float = 1.0) -> None:
    for k, v in d.items():
        acc[k] = acc.get(k, 0.0) + c * v


def _combine(parts: list[tuple[float, dict[str, float]]]) -> dict[str, float]:
    total = sum(w for w, _ in parts)
    out: dict[str, float] = {}
    for w, d in parts:
        _add(out, d, w / total if total > 0 else 1.0 / len(parts))
    return out


def _se2(site: Any) -> float | None:
    return site.se_channel ** 2 if site is not None and site.se_channel is not None else None


def noises(graph: Any, prop: Any, results: dict[str, dict[str, Any]], weight_sites: dict[str, Any],
           fans: dict[str, tuple[float | None, float | None]],
           modules: dict[str, nn.Module]) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """Per layer name: the relative standard error of its forward and of its backward measurement (None where
    the probe measured nothing). ``results``: the probe's sites per layer; ``weight_sites``: per layer the
    weight's rows (:func:`initwise._probe.reduce` of ``(1, rows, -1)``); ``fans``: ``(fan_in, fan_out)``."""
    nodes = graph.nodes
    q = prop.forward if prop is not None else {}
    gpow = prop.backward if prop is not None else {}
    users: dict[int, list[int]] = defaultdict(list)
    for n in nodes:
        for i in n.inputs:
            users[i].append(n.id)
    var: dict[str, float] = {}
    for info in graph.layers:
        name, r = info.name, results.get(info.name) or {}
        ws, out = weight_sites.get(name), r.get("output")
        cw = _se2(ws) or 0.0
        own = _se2(out)
        rho = (out.mean_ratio or 0.0) if out is not None else 0.0
        floor = cw + (2.0 * rho * rho / out.channels if out is not None and out.channels else 0.0)
        f2 = max(own if own is not None else 0.0, floor)
        var[name + ":w"] = min(cw, f2)
        var[name + ":f"] = f2 - var[name + ":w"]
    first = {info.nodes[0]: info for info in graph.layers if info.nodes}
    acts = {info.activation_node: info for info in graph.layers if info.activation_node is not None}

    # forward: sources per tensor
    sigs = prop.signals if prop is not None else {}
    sens: dict[int, float] = {}  # per activation node: d ln E[phi'^2] / d ln(its input's scale)
    dphi: dict[int, float] = {}  # ... and E[phi'^2] (non-homogeneous ones)
    kappa: dict[int, float] = {}  # per softmax / attention node: d ln E[p^2] / d ln(the logits' scale)
    fw: dict[int, dict[str, float]] = {}
    for n in nodes:
        ins = [fw.get(i, {}) for i in n.inputs]
        x = ins[0] if ins else {}
        k = n.kind
        if k == "layer" and (n.module or "") + ":w" in var:
            out = dict(x)
            _add(out, {n.module + ":w": 1.0, n.module + ":f": 1.0})
        elif k == "norm":
            out = {} if _normalizes(n, modules) else dict(x)
        elif k in ("add", "sub"):
            out = _combine([(q.get(i, 1.0), d) for i, d in zip(n.inputs, ins)])
        elif k == "cat":
            dim = n.cat_dim or 0
            out = _combine([(q.get(i, 1.0) * (nodes[i].shape[dim] if len(nodes[i].shape) > dim else 1), d)
                            for i, d in zip(n.inputs, ins)])
        elif k in ("mul", "matmul"):
            out = {}
            for d in ins:
                _add(out, d)
        elif k == "softmax":
            kappa[n.id] = _softmax_sensitivity(sigs.get(n.inputs[0]) if n.inputs else None,
                                               nodes[n.inputs[0]].shape[n.dims[0]] if n.inputs and n.dims and
                                               len(nodes[n.inputs[0]].shape) > n.dims[0] else 1)
            out = {s: c * kappa[n.id] for s, c in x.items()}
        elif k == "attention" and len(ins) == 3:
            qs, ks = (sigs.get(i) for i in n.inputs[:2])
            d, t = (nodes[n.inputs[1]].shape[-1], nodes[n.inputs[1]].shape[-2]) if len(nodes[n.inputs[1]].shape) >= 2 \
                else (1, 1)
            scale2 = (n.factor if n.factor is not None else 1.0 / math.sqrt(max(d, 1))) ** 2
            logits = _Logits(d * scale2 * qs.q * ks.q) if qs is not None and ks is not None else None
            kappa[n.id] = _softmax_sensitivity(logits, t)
            out = dict(ins[2])
            _add(out, ins[0], kappa[n.id])
            _add(out, ins[1], kappa[n.id])
        elif k == "act":
            kf, kb, dp = _act_sensitivity(n.activation, sigs.get(n.inputs[0]) if n.inputs else None)
            sens[n.id] = kb
            if dp is not None:
                dphi[n.id] = dp
            out = {s: c * kf for s, c in x.items()}
        else:
            out = dict(x)
        info = acts.get(n.id)
        if info is not None and k == "act":
            act = (results.get(info.name) or {}).get("activation")
            seen = sum(out.get(info.name + s, 0.0) ** 2 * var[info.name + s] for s in (":w", ":f"))
            if act is not None and _se2(act) is not None:
                var[info.name + ":a"] = max(_se2(act) - seen, 0.0)
                out[info.name + ":a"] = out.get(info.name + ":a", 0.0) + 1.0
        fw[n.id] = out

    # backward: W^T's gain, from the spread over input channels of the gradient this layer alone sends back
    for info in graph.layers:
        r = results.get(info.name) or {}
        dx, grad = None, r.get("grad")
        if grad is not None and info.nodes and nodes[info.nodes[0]].inputs:
            # each input channel's gradient is a quadratic form of its weight column in the output gradient's
            # rows, whose Gram matrix has rank min(rows, fan_out): relative variance 2 / (rank x input channels)
            c_in = layout(nodes[nodes[info.nodes[0]].inputs[0]].shape)[1]
            fo = fans.get(info.name, (None, None))[1]
            rank = min(grad.count / max(grad.channels, 1), fo or math.inf)
            dx = 2.0 / (rank * c_in) if rank > 0 and c_in else None
        var[info.name + ":b"] = max(dx if dx is not None else 0.0, var[info.name + ":w"]) - var[info.name + ":w"]
    for info in graph.layers:
        act = (results.get(info.name) or {}).get("activation")
        if act is None or act.se_mask is None or info.activation_node is None:
            continue
        # the mask multiplies, channel by channel, the gradient of the layer it feeds: with few units per
        # channel (a small batch without positions) the product's spread is more than the two spreads added
        i = info.activation_node
        while len(users[i]) == 1 and nodes[users[i][0]].kind in ("pass", "scale"):
            i = users[i][0]
        nxt = first.get(users[i][0]) if len(users[i]) == 1 else None
        b2 = var.get(nxt.name + ":b", 0.0) + var.get(nxt.name + ":w", 0.0) if nxt is not None else 0.0
        var[info.name + ":m"] = act.se_mask ** 2 * (1.0 + act.channels * b2)
    # where a layer's input is another layer's output through pointwise ops only (a chain), the gradient measured
    # at that output shows everything fresh between the two (W^T, the activation's derivative, a norm's division
    # channel by channel): what the mask above does not account for goes to W^T's term
    for info in graph.layers:
        n = nodes[info.nodes[0]] if info.nodes else None
        src = n.inputs[0] if n is not None and n.inputs else None
        while src is not None and nodes[src].kind in ("act", "pass", "scale", "norm") and len(users[src]) == 1 \
                and nodes[src].inputs:
            src = nodes[src].inputs[0]
        if src is None or nodes[src].kind != "layer" or len(users[src]) != 1 or src not in first:
            continue
        dy = _se2((results.get(first[src].name) or {}).get("grad"))
        m2 = var.get(first[src].name + ":m", 0.0)
        if dy is not None and dy - m2 > var[info.name + ":b"] + var[info.name + ":w"]:
            var[info.name + ":b"] = dy - m2 - var[info.name + ":w"]
    bw: dict[int, dict[str, float]] = {}
    parts: dict[int, list[tuple[float, dict[str, float]]]] = defaultdict(list)
    for n in reversed(nodes):
        g = _combine(parts.pop(n.id)) if n.id in parts else {}
        bw[n.id] = g
        k = n.kind
        power = gpow.get(n.id, 1.0)
        for j, i in enumerate(n.inputs):
            d = dict(g)
            w = power * (q.get(n.id, 1.0) / q[i] if q.get(i) else 1.0)
            if k == "layer" and (n.module or "") + ":w" in var:
                _add(d, {n.module + ":w": 1.0, n.module + ":b": 1.0})
                fi, fo = fans.get(n.module, (None, None))
                w *= (fo / fi) if fi and fo else 1.0
            elif k == "norm" and _normalizes(n, modules):
                _add(d, fw.get(i, {}), -1.0)
            elif k == "act":
                w = power * dphi.get(n.id, q.get(n.id, 1.0) / q[i] if q.get(i) else 1.0)
                _add(d, fw.get(i, {}), sens.get(n.id, 0.0))  # phi' at the realized scale of its input
                if n.id in acts and acts[n.id].name + ":m" in var:
                    _add(d, {acts[n.id].name + ":m": 1.0})  # which units a ReLU passes the gradient through
            elif k in ("mul", "matmul"):
                others = [o for jj, o in enumerate(n.inputs) if jj != j]
                for o in others:
                    _add(d, fw.get(o, {}))
                w = power * (q.get(others[0], 1.0) if others else 1.0)
            elif k == "attention" and len(n.inputs) == 3:
                if j < 2:
                    _add(d, fw.get(n.inputs[2], {}))
                    _add(d, fw.get(n.inputs[1 - j], {}))
                else:  # the values' gradient is the weights' transpose times the output's: E[sum p^2] moves it
                    _add(d, fw.get(n.inputs[0], {}), kappa.get(n.id, 0.0))
                    _add(d, fw.get(n.inputs[1], {}), kappa.get(n.id, 0.0))
            elif k in ("add", "sub", "cat"):
                w = power
            elif k == "reduce" or k == "pass" and (n.op in R.AVG_POOLS or n.op in R.ADAPTIVE_AVG):
                r = math.prod(n.shape) / max(math.prod(nodes[i].shape), 1)
                w = power * r * r  # each input gets 1/window of each output's gradient
            elif k == "pass":
                w = power * min(math.prod(n.shape) / max(math.prod(nodes[i].shape), 1), 1.0)
            parts[i].append((w, d))

    def se(sens: dict[str, float], site: Any) -> float | None:
        if site is None:
            return None
        v = sum(c * c * var.get(s, 0.0) for s, c in sens.items())
        return math.sqrt(v) if v > 0 else math.sqrt(2.0 / max(site.count, 1))

    fwd, bwd = {}, {}
    for info in graph.layers:
        r = results.get(info.name) or {}
        i = info.nodes[0] if info.nodes else None
        fwd[info.name] = se(fw.get(i, {}), r.get("output")) if i is not None else None
        bwd[info.name] = se(bw.get(i, {}), r.get("grad")) if i is not None else None
    return fwd, bwd
