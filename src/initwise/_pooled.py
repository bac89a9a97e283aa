"""How much of a layer's measured backward is the averaging between it and the output, not the init.

diagnose measures the gradient per element (``E[dy^2] / E[c^2]``). An average over ``k`` values (a global
average pooling over ``k`` positions, an average pooling window, a mean over a dim) hands each of them ``1/k`` of
its output's gradient: per element, ``1/k^2`` of its power, whatever the weights are. A ResNet's last block sees
``1/49^2`` of the cotangent per element after its 7x7 global pooling: far below the vanishing threshold, and a
property of the architecture and of the per-element measure. :func:`pooling_factors` gives, per layer, the
product of those factors on the way from the output (a node used several times takes its users' factors in
proportion to the gradient power each sends back, as predicted); the flags divide it out before calling a
gradient vanishing.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from . import _rules_reduce as R

__all__ = ["pooling_factors"]


def _averages(n: Any) -> bool:
    return n.kind == "reduce" and n.op == "mean" or n.kind == "pass" and (n.op in R.AVG_POOLS or
                                                                          n.op in R.ADAPTIVE_AVG)


def pooling_factors(graph: Any, prop: Any) -> dict[str, float]:
    """Per layer name: the product of ``(numel out / numel in)^2`` over the averages between its output and the
    model's output (1 where there is none)."""
    nodes = graph.nodes
    gpow = prop.backward if prop is not None else {}
    parts: dict[int, list[tuple[float, float]]] = defaultdict(list)
    factor: dict[int, float] = {}
    for n in reversed(nodes):
        got = parts.pop(n.id, None)
        total = sum(w for w, _ in got) if got else 0.0
        f = (sum(w * v for w, v in got) / total if total > 0 else max(v for _, v in got)) if got else 1.0
        factor[n.id] = f
        for i in n.inputs:
            if _averages(n):
                r = math.prod(n.shape) / max(math.prod(nodes[i].shape), 1)
                parts[i].append((gpow.get(n.id, 1.0) * r * r, f * r * r))
            else:
                parts[i].append((gpow.get(n.id, 1.0), f))
    return {info.name: factor.get(info.nodes[0], 1.0) for info in graph.layers if info.nodes}
