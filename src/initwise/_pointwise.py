"""Hand-written activations: a product ``x * f(x)`` whose two factors are computed elementwise from one signal.

A Swish written as ``x * torch.sigmoid(x)`` (or ``x.sigmoid() * x``), a GELU written as
``0.5 * x * (1 + torch.erf(x / math.sqrt(2)))`` or with the tanh formula, the quick GELU ``x * sigmoid(1.702 x)``:
op by op, the trace sees a sigmoid (or tanh, or unknown ``erf``/``pow``) and then a product of two signals, which
would give the layer before it the sigmoid's gain, or make the product a gate. :class:`Replays` keeps, for each
elementwise op the recorder emits, the function and its arguments (signal tensors replaced by their node ids,
constants as numbers); when a product's two factors go back, through such ops only, to one and the same signal
``x`` and none of the intermediate results is used elsewhere, the product is one pointwise function of ``x``.
Replayed on a grid it is compared with the canonical activations (SiLU, GELU, tanh-GELU, Mish: max deviation
1e-6); a match is that activation, anything else is a user activation whose function is the replayed chain (its
gain comes from quadrature through it, like any callable).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ._activations import Activation, resolve_activation

__all__ = ["Replays", "ELEMENTWISE_KINDS"]

# node kinds that act on each element alone (an "unknown" node only when its op is in the recorder's elementwise set)
ELEMENTWISE_KINDS = frozenset(("act", "scale", "shift", "add", "sub", "mul", "unknown", "pass"))
_CANONICAL = ("silu", "gelu", "gelu_tanh", "mish")
_GRID = torch.linspace(-8.0, 8.0, 4001, dtype=torch.float64)


class _Ref:
    """A signal argument of a replayed op: the node that produced it."""

    __slots__ = ("node",)

    def __init__(self, node: int) -> None:
        self.node = node


def _constant(v: Any) -> Any:
    """A replayable constant (a number), or raise ValueError (a tensor of several values, a meta tensor)."""
    if isinstance(v, torch.Tensor):
        if v.numel() != 1 or v.is_meta:
            raise ValueError("not a scalar")
        return float(v.detach().reshape(()))
    if isinstance(v, (list, tuple, dict)):
        raise ValueError("container")
    return v


class Replays:
    """The replayable elementwise ops of one trace, by node id."""

    def __init__(self) -> None:
        self.ops: dict[int, tuple[Callable[..., Any], tuple, dict]] = {}
        self._fns: dict[tuple, Callable[[torch.Tensor], torch.Tensor]] = {}

    def prepare(self, func: Callable[..., Any], args: tuple, kwargs: dict,
                nid: Callable[[Any], Any]) -> tuple[Callable[..., Any], tuple, dict] | None:
        """``func(*args, **kwargs)`` with its signal tensors as node references (``nid``: tensor -> node id or
        None), taken before the op runs (an in-place op re-maps its input); None if a constant is not a number.
        The caller stores it in :attr:`ops` under the node the op made."""
        try:
            a = tuple(self._arg(v, nid) for v in args)
            k = {key: self._arg(v, nid) for key, v in kwargs.items() if key not in ("out", "inplace")}
        except ValueError:
            return None
        return func, a, k

    def keep_act(self, node: int, act: Activation, source: int) -> None:
        """An activation module's node: its function applied to node ``source``."""
        self.ops[node] = (act, (_Ref(source),), {})

    @staticmethod
    def _arg(v: Any, nid: Callable[[Any], Any]) -> Any:
        i = nid(v) if isinstance(v, torch.Tensor) else None
        return _Ref(i) if i is not None else _constant(v)

    def compose(self, nodes: list, a: int, b: int) -> tuple[int, Activation, list[int]] | None:
        """If ``node a * node b`` is a pointwise function of one signal: (that signal's node, the activation, the
        intermediate nodes it replaces), else None."""
        chain: set[int] = set()
        roots = [self._roots(nodes, a, chain), self._roots(nodes, b, chain)]
        if len(roots[0]) != 1 or roots[0] != roots[1]:
            return None
        root = next(iter(roots[0]))
        if not any(nodes[c].kind in ("act", "unknown") for c in chain):
            return None  # a product of linear functions of x (x * 2x) is not a hand-written activation
        lo = min(chain)
        for n in nodes[lo + 1:]:  # every intermediate result feeds only the chain (else it is used elsewhere too)
            if n.id not in chain and any(i in chain for i in n.inputs):
                return None
        order = sorted(chain)
        key = (tuple((self.ops[c][0], _shape_of(self.ops[c][1:], order, root)) for c in order),
               order.index(a) if a in chain else -1, order.index(b) if b in chain else -1)
        fn = self._fns.get(key)
        if fn is None:
            fn = self._fn(order, root, a, b)
            try:
                with torch.no_grad():
                    y = fn(_GRID.clone())
            except Exception:  # noqa: BLE001 - an op that cannot be replayed on a plain tensor: not composed
                return None
            if not isinstance(y, torch.Tensor) or y.shape != _GRID.shape:
                return None
            fn = _canonical_or(fn, y)
            self._fns[key] = fn
        act = fn if isinstance(fn, Activation) else Activation(
            "x*f(x): " + " ".join(_name(self.ops[c][0]) for c in order), fn=fn)
        return root, act, order

    def _roots(self, nodes: list, start: int, chain: set[int]) -> set[int]:
        out, todo = set(), [start]
        while todo:
            i = todo.pop()
            n = nodes[i]
            if i in self.ops and n.kind in ELEMENTWISE_KINDS and n.inputs:
                if i not in chain:
                    chain.add(i)
                    todo.extend(n.inputs)
            else:
                out.add(i)
        return out

    def _fn(self, order: list[int], root: int, a: int, b: int) -> Callable[[torch.Tensor], torch.Tensor]:
        ops = [(c, *self.ops[c]) for c in order]

        def fn(x: torch.Tensor) -> torch.Tensor:
            vals = {root: x.clone()}  # an in-place op of the chain must not write the caller's tensor

            def sub(v: Any) -> Any:
                return vals[v.node] if isinstance(v, _Ref) else v

            for c, func, args, kwargs in ops:
                vals[c] = func(*(sub(v) for v in args), **{k: sub(v) for k, v in kwargs.items()})
            return vals[a] * vals[b]

        return fn


def _shape_of(argkw: tuple, order: list[int], root: int) -> tuple:
    """The replayed arguments with node ids made relative (same chain shape -> same function, one Activation)."""
    pos = {c: i for i, c in enumerate(order)}
    pos[root] = -1
    args, kwargs = argkw
    flat = [("ref", pos.get(v.node, v.node)) if isinstance(v, _Ref) else v for v in args]
    flat += [(k, ("ref", pos.get(v.node, v.node)) if isinstance(v, _Ref) else v) for k, v in sorted(kwargs.items())]
    return tuple(flat)


def _canonical_or(fn: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor) -> Any:
    """The canonical activation the replayed function equals on the grid (within 1e-6), or ``fn`` itself."""
    for name in _CANONICAL:
        act = resolve_activation(name)
        ref = act.function()(_GRID)
        if bool(((y.double() - ref).abs() <= 1e-6 * (1.0 + ref.abs())).all()):
            return act
    return fn


def _name(func: Any) -> str:
    name = getattr(func, "__name__", None) or type(func).__name__
    return name.strip("_") if not isinstance(func, Activation) else func.name

