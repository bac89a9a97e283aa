"""The tracer's joins (a mixin of :class:`initwise._trace.Recorder`): binary ops between signals and constants
(add/sub/mul/div, negation, ``copy_``), a hand-written activation ``x * f(x)`` taken as one activation node, and
which operand of a join is the residual branch (the latest common ancestor of the two).

The methods read the recorder's state (``nodes``, ``ldepth``, ``replays``, ``_map``, ``_composed``) and emit
through its ``emit``; they hold none of their own.
"""

from __future__ import annotations

import dataclasses
import heapq
from typing import Any

import torch

from ._activations import Activation
from ._trace_vocab import _factor

__all__ = ["Joins"]


class Joins:
    """Binary ops and joins of :class:`initwise._trace.Recorder` (see the module docstring)."""

    def _binary(self, op: str, reflected: bool, args: tuple, kwargs: dict, outs: list, inplace: bool) -> bool:
        a = args[0] if args else kwargs.get("input")
        b = args[1] if len(args) > 1 else kwargs.get("other")
        na, nb = self.nid(a), self.nid(b)
        if op in ("neg", "negative"):
            if na is None:
                return False
            self.emit("scale", "neg", (na,), outs, factor=-1.0, inplace=inplace)
            return True
        if op == "copy":  # dst.copy_(src): dst now holds src
            if nb is not None:
                self.emit("pass", "copy", (nb,), outs, inplace=True)
            else:
                self._map.pop(id(a), None)
            return True
        if na is not None and nb is not None:
            if op == "mul" and na != nb and (hit := self.replays.compose(self.nodes, na, nb)) is not None:
                self._hand_written(*hit, outs, inplace, na, nb)
                return True
            if op == "div":
                return False
            alpha = kwargs.get("alpha", 1)
            if alpha != 1:
                nb = self.emit("scale", "alpha", (nb,), [], factor=float(alpha))
            self._join(op, na, nb, outs, inplace)
            return True
        n, other = (na, b) if na is not None else (nb, a)
        if n is None:
            return False
        if op in ("add", "sub"):
            const = self._const(other, kwargs.get("alpha", 1)) if na is not None else self._const(other) if \
                kwargs.get("alpha", 1) == 1 else None
            source = self.params.view_of(other) if const is None and kwargs.get("alpha", 1) == 1 else None
            self.emit("shift", "rsub" if op == "sub" and (reflected or na is None) else op, (n,), outs,
                      inplace=inplace, const=const, source=source)
            return True
        f = _factor(other)
        if f is None or op == "div" and (na is None or reflected or f == 0.0):
            return False
        if op == "div":
            f = 1.0 / f if isinstance(other, (int, float)) or other.numel() == 1 else _factor(1.0 / other)
            if f is None:
                return False
        self.emit("scale", op, (n,), outs, factor=f, inplace=inplace)
        return True

    def _hand_written(self, root: int, act: Activation, chain: list[int], outs: list, inplace: bool, na: int,
                      nb: int) -> None:
        """``x * f(x)`` as one activation node on ``x`` (see :mod:`initwise._pointwise`); the ops it was made of
        stay as dead-end pass nodes (ids are positions), so no walk meets their sigmoid or join. :meth:`settle`
        undoes it if one of them turns out to be used later in the forward."""
        saved = [dataclasses.replace(self.nodes[c]) for c in chain]
        residual, branch, skip = self._join_fields("mul", na, nb)
        for c in chain:
            n = self.nodes[c]
            n.kind, n.op, n.activation = "pass", f"{n.op} (in {act})", None
            n.residual, n.branch, n.skip, n.factor = False, None, None, None
        i = self.emit("act", "x*f(x)", (root,), outs, activation=act, inplace=inplace)
        join = dataclasses.replace(self.nodes[i], kind="mul", op="mul", inputs=(na, nb), activation=None,
                                   residual=residual, branch=branch, skip=skip)
        self._composed.append((i, saved, join))

    def _const(self, other: Any, alpha: Any = 1) -> tuple[tuple[int, ...], tuple[float, ...]] | None:
        """``(shape, values)`` of a shift's constant operand (times ``alpha``), when the trace knows them."""
        if isinstance(other, (int, float)) and not isinstance(other, bool):
            return (), (float(other) * float(alpha),)
        v = self.value(other)
        if v is None or not isinstance(alpha, (int, float)):
            return None
        d = v.detach().to("cpu", torch.float64) * float(alpha)
        return tuple(d.shape), tuple(d.reshape(-1).tolist())

    def _join(self, op: str, na: int, nb: int, outs: list, inplace: bool) -> None:
        residual, branch, skip = self._join_fields(op, na, nb)
        self.emit(op, op, (na, nb), outs, residual=residual, branch=branch, skip=skip, inplace=inplace)

    def _join_fields(self, op: str, na: int, nb: int) -> tuple[bool, int | None, int | None]:
        branch = skip = None
        if na != nb:
            f = self._lca(na, nb)
            if f == na or f == nb:
                skip, branch = (na, nb) if f == na else (nb, na)
            elif f is not None:  # a projection shortcut: one side has at most one layer, the other more
                da, db = self.ldepth[na] - self.ldepth[f], self.ldepth[nb] - self.ldepth[f]
                if min(da, db) <= 1 and da != db:
                    skip, branch = (na, nb) if da < db else (nb, na)
        return op in ("add", "sub") and branch is not None, branch, skip

    def _lca(self, a: int, b: int) -> int | None:
        """The latest common ancestor of nodes a and b (a or b itself when one descends from the other).

        Walks back in decreasing id order: a node's descendants all have larger ids, so its marks are final
        when it is popped, and the first node marked from both sides is the latest common ancestor.
        """
        marks = {a: 1, b: 2}
        heap = [-max(a, b), -min(a, b)]  # a valid heap: the larger id first
        while heap:
            n = -heapq.heappop(heap)
            m = marks[n]
            if m == 3:
                return n
            for i in self.nodes[n].inputs:
                old = marks.get(i, 0)
                if old | m != old:
                    marks[i] = old | m
                    if not old:
                        heapq.heappush(heap, -i)
        return None
