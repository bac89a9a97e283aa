"""Analytic propagation of second moments through a traced graph, forward from the input and backward from the output.

Rules (independent zero-mean weights; see DESIGN.md, "Analytic propagation"):

- weight layer: ``E[y^2] = fan_in_eff * E[w^2] * E[x^2] + E[b^2]``; backward ``E[dx^2] = fan_out_eff * E[w^2] * E[dy^2]``;
- activation on ``y ~ N(0, q)``: forward ``E[phi(y)^2]``, backward factor ``E[phi'(y)^2]`` (quadrature at q;
  ReLU, leaky ReLU, PReLU and linear scale with q);
- normalization: forward ``E[gamma^2] + E[beta^2]``, backward ``E[gamma^2] / E[x^2]`` (the input is divided by its
  own scale);
- constant scale c: ``c^2`` both ways; add/sub: forward sum (independent branches), backward copies;
  concatenation: forward channel-weighted mean, backward copies; product of two signals: product of moments;
- ops that only move values (view, permute, pixel shuffle, slicing, nearest upsampling, max pooling): forward
  unchanged, backward scaled by ``numel(out)/numel(in)`` (each input receives that many output gradients on
  average, or none). Adding a constant (a mean shift: it changes E[x^2] by the input's mean, which is not
  tracked), max pooling (forward), average pooling, interpolation other than nearest, attention and
  recurrent layers are approximations (``Propagation.approximate`` lists them) and the measurement (``initwise.diagnose``) is the judge.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from ._gains import moments

__all__ = ["LayerMoments", "Propagation", "propagate"]

_HOMOGENEOUS = {"linear", "relu", "leaky_relu", "prelu"}
_EXACT_PASS = {"view", "reshape", "permute", "transpose", "flatten", "unflatten", "contiguous", "clone", "squeeze",
               "unsqueeze", "pixel_shuffle", "pixel_unshuffle", "PixelShuffle", "PixelUnshuffle", "getitem",
               "__getitem__", "chunk", "split", "unbind", "to", "float", "double", "type", "detach", "identity",
               "Identity", "dropout", "Dropout", "pad", "expand", "repeat", "Flatten", "Unflatten", "narrow",
               "select"}  # max pooling is not here: the largest value of a window has a larger second moment


@dataclass(frozen=True)
class LayerMoments:
    """What propagation needs of one weight layer: effective fans and the second moments of its parameters."""

    fan_in: float
    fan_out: float
    weight_ms: float
    bias_ms: float = 0.0
    kind: str = "affine"  # "affine" (Linear/Conv/...), "embedding", "opaque" (not modelled: passes the signal on)


@dataclass
class Propagation:
    """Per node: forward second moment ``q`` of its output, backward second moment ``g`` of the gradient there."""

    forward: dict[int, float] = field(default_factory=dict)
    backward: dict[int, float] = field(default_factory=dict)
    approximate: list[str] = field(default_factory=list)


def _act_moments(act, q: float) -> tuple[float, float]:
    if q <= 0 or not math.isfinite(q):
        return (0.0 if q <= 0 else q), 0.0
    if act.name in _HOMOGENEOUS:
        m = moments(act, 1.0)
        return m.second_moment * q, m.backward
    m = moments(act, q)
    return m.second_moment, m.backward


def propagate(graph, layers: Mapping[str, LayerMoments], norms: Mapping[str, tuple[float, float]],
              input_ms: Mapping[int, float | None]) -> Propagation:
    """Propagate second moments through ``graph`` (an :class:`initwise.Graph`).

    Args:
        graph: the traced graph.
        layers: per dotted layer name, its :class:`LayerMoments`.
        norms: per dotted norm-module name, ``(E[gamma^2], E[beta^2])``; a functional norm uses ``(1, 0)``.
        input_ms: per input node id, the example's second moment (None for integer inputs).
    """
    prop = Propagation()
    q = prop.forward
    nodes = {n.id: n for n in graph.nodes}
    for n in graph.nodes:
        ins = [q.get(i, 1.0) for i in n.inputs]
        qi = ins[0] if ins else 1.0
        k = n.kind
        if k == "input":
            q[n.id] = input_ms.get(n.id) or 1.0
        elif k == "layer":
            lm = layers.get(n.module or "")
            if lm is None or lm.kind == "opaque":
                q[n.id] = qi
                prop.approximate.append(f"{n.module or n.op}: {n.op} not modelled, signal passed on")
            elif lm.kind == "embedding":
                q[n.id] = lm.weight_ms
            else:
                q[n.id] = lm.fan_in * lm.weight_ms * qi + lm.bias_ms
        elif k == "norm":
            gm, bm = norms.get(n.module or "", (1.0, 0.0))
            q[n.id] = gm + bm
        elif k == "act":
            q[n.id] = _act_moments(n.activation, qi)[0]
        elif k == "scale":
            q[n.id] = (n.factor or 1.0) ** 2 * qi
        elif k in ("add", "sub"):
            q[n.id] = sum(ins)
        elif k == "cat":
            dim = n.cat_dim or 0
            sizes = [nodes[i].shape[dim] if len(nodes[i].shape) > dim else 1 for i in n.inputs]
            q[n.id] = sum(s * v for s, v in zip(sizes, ins)) / max(sum(sizes), 1)
        elif k == "mul":
            q[n.id] = math.prod(ins) if ins else 1.0
        else:  # pass, shift, output, unknown
            q[n.id] = qi
            if k in ("unknown", "shift") or (k == "pass" and n.op not in _EXACT_PASS):
                prop.approximate.append(f"{n.module or ''}:{n.op}".lstrip(":"))
    _backward(graph, nodes, layers, norms, prop)
    return prop


def _numel(shape) -> int:
    return math.prod(shape) if shape else 1


def _backward(graph, nodes, layers, norms, prop: Propagation) -> None:
    q, g = prop.forward, prop.backward
    for oid in graph.output_ids:
        g[oid] = g.get(oid, 0.0) + 1.0
    for n in reversed(graph.nodes):
        go = g.get(n.id, 0.0)
        if n.kind == "output":
            for i in n.inputs:
                g[i] = g.get(i, 0.0) + go
            continue
        if not n.inputs:
            continue
        k = n.kind
        first = n.inputs[0]
        if k == "layer":
            lm = layers.get(n.module or "")
            if lm is None or lm.kind == "opaque":
                contrib = [go] * len(n.inputs)
            elif lm.kind == "embedding":
                contrib = [0.0] * len(n.inputs)
            else:
                contrib = [lm.fan_out * lm.weight_ms * go] + [0.0] * (len(n.inputs) - 1)
        elif k == "norm":
            gm, _ = norms.get(n.module or "", (1.0, 0.0))
            qi = q.get(first, 1.0)
            contrib = [go * gm / qi if qi > 0 else 0.0]
        elif k == "act":
            contrib = [go * _act_moments(n.activation, q.get(first, 1.0))[1]]
        elif k == "scale":
            contrib = [go * (n.factor or 1.0) ** 2]
        elif k in ("add", "sub", "cat"):
            contrib = [go] * len(n.inputs)
        elif k == "mul":
            qs = [q.get(i, 1.0) for i in n.inputs]
            contrib = [go * math.prod(qs[:j] + qs[j + 1:]) for j in range(len(qs))]
        else:  # pass, shift, unknown: move values around
            ratio = _numel(n.shape) / max(_numel(nodes[first].shape), 1)
            contrib = [go * ratio] + [0.0] * (len(n.inputs) - 1)
        for i, c in zip(n.inputs, contrib):
            g[i] = g.get(i, 0.0) + c
