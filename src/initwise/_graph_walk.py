"""What a traced layer's output meets downstream: walks over the signal DAG of :func:`initwise._graph.trace`.

The graph's builder asks, for each layer's call nodes, which activation (or gate) follows through shape-only and
scaling ops, whether a residual join or a pixel shuffle comes next, which layers consume it, and which ops the
rules do not know. Everything here reads ``nodes`` (execution order) and ``users`` (each node's consumers) only.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Any

import numpy as np

from ._activations import Activation, resolve_activation
from ._trace_vocab import Node

_LINEAR = resolve_activation("linear")
_GATE = resolve_activation("gate")
_LOOK = frozenset(("pass", "scale", "shift", "reduce"))


def _walk(start: int, users: list[list[int]]) -> Iterator[tuple[int, int]]:
    """``(node, came_from)`` pairs of the consumers of ``start`` in execution order; ``send(False)`` prunes."""
    heap = [(u, start) for u in users[start]]
    heapq.heapify(heap)
    seen: set[int] = set()
    while heap:
        n, src = heapq.heappop(heap)
        if n in seen:
            continue
        seen.add(n)
        if (yield n, src) is not False:
            for u in users[n]:
                heapq.heappush(heap, (u, n))


class _Reach:
    """What each node reaches, from one reverse pass over the DAG (users come after their inputs), so that a layer's
    context costs time in proportion to what it finds, not to the model's depth (a pre-norm transformer's residual
    stream reaches every later block):

    ``act[i]``: an activation (or a product, possibly a gate) is reachable from node i through the ops
    :func:`_activation_after` walks through;
    ``layers[i]``: bitmask of the layer nodes reachable from i through non-layer nodes (bit = node id; made when
    first read: only ``LayerInfo.consumers`` needs it, and its size grows with depth squared);
    ``output[i]``: an output node is reachable from i through non-layer nodes.
    """

    _THROUGH = _LOOK | {"norm", "add", "sub", "cat"}

    def __init__(self, nodes: list[Node], users: list[list[int]]) -> None:
        n = len(nodes)
        self._nodes, self._users = nodes, users
        self.act, self.output = [False] * n, [False] * n
        self._layers: list[int] | None = None  # made on the first layer_nodes() call (consumers only)
        self._bytes = (n + 7) // 8
        for x in range(n - 1, -1, -1):
            act, out = False, False
            for w in users[x]:
                kind = nodes[w].kind
                if kind == "layer":
                    continue
                # a product with another signal ends the walk as a gate: it counts as an activation ahead
                act = act or kind in ("act", "mul") or (kind in self._THROUGH and self.act[w])
                out = out or kind == "output" or self.output[w]
            self.act[x], self.output[x] = act, out

    @property
    def layers(self) -> list[int]:
        if self._layers is None:
            nodes, users = self._nodes, self._users
            masks = [0] * len(nodes)
            for x in range(len(nodes) - 1, -1, -1):
                mask = 0
                for w in users[x]:
                    mask |= (1 << w) if nodes[w].kind == "layer" else masks[w]
                masks[x] = mask
            self._layers = masks
        return self._layers

    def layer_nodes(self, i: int) -> list[int]:
        """Ids of the layer nodes reachable from node i through non-layer nodes, ascending (execution order)."""
        m = self.layers[i]
        if not m:
            return []
        bits = np.unpackbits(np.frombuffer(m.to_bytes(self._bytes, "little"), dtype=np.uint8), bitorder="little")
        return np.flatnonzero(bits).tolist()


class _Consumers:
    """A layer's consumers, computed on demand: the layers its calls' outputs reach through non-layer nodes."""

    __slots__ = ("ids", "nodes", "reach", "names")

    def __init__(self, ids: list[int], nodes: list[Node], reach: _Reach, names: dict[int, str]) -> None:
        self.ids, self.nodes, self.reach, self.names = ids, nodes, reach, names

    def __call__(self) -> tuple[str, ...]:
        names, nodes = self.names, self.nodes
        return tuple(dict.fromkeys(names.get(u, nodes[u].module) for i in self.ids
                                   for u in self.reach.layer_nodes(i)))


def _act_of(node: int | None, nodes: list[Node]) -> Activation:
    if node is None:
        return _LINEAR
    return _GATE if nodes[node].kind == "mul" else nodes[node].activation


def _send(walk: Any, go_on: bool) -> Any:
    try:
        return walk.send(go_on)
    except StopIteration:
        return None


def _activation_after(start: int, nodes: list[Node], users: list[list[int]],
                      reach: _Reach | None = None) -> tuple[int | None, str | None, bool, list[str]]:
    """First activation reached through look-through ops, norms and add/sub/cat joins: (node, norm, joined, notes).

    The norm reported is the one on the path to that activation, or without an activation the first norm reached
    before any join.
    """
    state: dict[int, tuple[str | None, bool]] = {start: (None, False)}
    found: list[int] = []
    plain_norm = None
    walk = _walk(start, users)
    step = next(walk, None)
    while step is not None:
        n, src = nodes[step[0]], step[1]
        norm, joined = state[src]
        go_on = True
        if n.kind == "act" or n.kind == "mul" and n.skip != src:  # a product with another signal: a gate
            found.append(n.id)
            go_on = False
        elif n.kind == "norm":
            here = n.module or n.op
            if not joined and plain_norm is None:
                plain_norm = here
            norm = norm or here
        elif n.kind in ("add", "sub", "cat"):
            joined = True
        elif n.kind not in _LOOK:
            go_on = False
        state.setdefault(n.id, (norm, joined))
        if go_on and reach is not None and not reach.act[n.id] and (joined or plain_norm is not None):
            go_on = False  # nothing beyond n can change the answer: no activation ahead, the plain norm settled
        step = _send(walk, go_on)
    if not found:
        return None, plain_norm, False, []
    first = found[0]
    norm, joined = state[first]
    notes = [f"also followed by {_act_of(f, nodes)} at node {f} (in '{nodes[f].scope}')" for f in found[1:]
             if _act_of(f, nodes) != _act_of(first, nodes)]
    return first, norm, joined, notes


def _residual_after(start: int, nodes: list[Node], users: list[list[int]]) -> float | None:
    """Product of the constant factors up to the residual add/sub that the output joins as the branch, or None."""
    gain: dict[int, float] = {start: 1.0}
    walk = _walk(start, users)
    step = next(walk, None)
    while step is not None:
        n, src = nodes[step[0]], step[1]
        g = gain[src] * (n.factor if n.kind == "scale" and n.factor is not None else 1.0)
        gain[n.id] = g
        if n.kind in ("add", "sub") and n.residual and n.branch == src:
            return g
        go_on = n.kind in _LOOK or n.kind in ("act", "norm") or n.kind == "mul" and n.skip == src
        step = _send(walk, go_on)
    return None


def _shuffle_after(start: int, nodes: list[Node], users: list[list[int]]) -> int | None:
    walk = _walk(start, users)
    step = next(walk, None)
    while step is not None:
        n = nodes[step[0]]
        if n.op == "pixel_shuffle" and n.factor is not None:
            return int(n.factor)
        step = _send(walk, n.kind in _LOOK)
    return None


def _unknown(nodes: list[Node], users: list[list[int]]) -> list[str]:
    """Unknown ops whose result reaches a layer, a norm or an output (a dead end such as the ``x.mean() > 0`` of
    Python control flow carries no signal and stays a node only)."""
    live = [False] * len(nodes)
    for n in reversed(nodes):
        live[n.id] = n.kind in ("layer", "norm", "output") or any(live[u] for u in users[n.id])
    out = []
    for n in nodes:
        if n.kind == "unknown" and live[n.id]:
            after = sorted(_producers(n.id, nodes))
            where = f"'{n.scope}'" if n.scope else "the model's forward"
            out.append(f"{n.op} in {where} (node {n.id}, consumes the output of {', '.join(after) or 'a constant'})")
    return out


def _producers(start: int, nodes: list[Node]) -> set[str]:
    """The layers (or inputs) whose output reaches node ``start`` without passing another layer."""
    found, todo, seen = set(), list(nodes[start].inputs), set()
    while todo:
        i = todo.pop()
        if i in seen:
            continue
        seen.add(i)
        n = nodes[i]
        if n.kind in ("layer", "input"):
            found.add(f"layer '{n.module}'" if n.kind == "layer" else f"input '{n.op}'")
        else:
            todo.extend(n.inputs)
    return found
