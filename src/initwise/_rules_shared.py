"""A product of two operands that share a source: ``(o + x) * h(o)`` with ``h`` a pointwise map of ``o`` (SPAN's
parameter-free attention ``(out3 + x) * (sigmoid(out3) - 0.5)``), or ``o * h(o)``.

The product rule for independent operands (``E[(a b)^2] = E[a^2] E[b^2]``) is wrong here: ``h(o)`` is large where
``o`` is. For ``y = (s o + X) h(o)`` (``s = +-1``, ``X`` the sum of the other terms of the join, independent of
``o``) and ``o ~ N(mu, v)``:

    ``E[y^2] = E[o^2 h^2] + E[X^2] E[h^2] + 2 s E[X] E[o h^2]``

(SPAN: ``h(o) ~ o / 4`` near 0, so ``E[o^2 h^2] ~ 3 E[o^2] E[h^2]``; the product rule under-states the block's
output 2x). The gradient reaching ``o`` through both operands is ``dy (s h + (s o + X) h')``, whose second moment
``E[dy^2] (E[(h + o h')^2] + E[X^2] E[h'^2] + 2 s E[X] E[(h + o h') h'])`` differs from what the two paths carry
apart (``E[dy^2] E[h^2]`` through the join, ``E[dy^2] E[a^2] E[h'^2]`` through ``h``'s backward): the difference is
added at ``o`` (:func:`shared_cross`). ``X``'s own gradient ``dy h(o)`` is the product rule's. The expectations
are taken by quadrature on the activation's nodes, as the activation moments are (:mod:`initwise._gains`): exact
for a Gaussian ``o`` (a weight layer's output) and ``X`` independent of it, as the mean-field rules assume. The
constant parts (``dc``, ``dcb``) keep the product rule's share of ``q`` (approximate; no norm reads them in SPAN).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from ._gains import _nodes
from ._signal import Grad, Sig

__all__ = ["SharedProduct", "shared_product", "shared_forward", "shared_cross"]


@dataclass(frozen=True)
class SharedProduct:
    """The product node's operands: ``gate`` (the input index of ``h(o)``), ``other`` (of ``s o + X``), ``root``
    (the node id of ``o``), ``sign`` (``s``), ``terms`` (node ids and signs of ``X``'s terms) and the pointwise
    chain from ``o`` to ``h(o)`` (its nodes' ids, in order)."""

    gate: int
    other: int
    root: int
    sign: float
    terms: tuple[tuple[int, float], ...]
    chain: tuple[int, ...]


def _root(nodes, i: int, exact_pass) -> int:
    while nodes[i].kind == "pass" and nodes[i].op in exact_pass and len(nodes[i].inputs) == 1 \
            and tuple(nodes[nodes[i].inputs[0]].shape) == tuple(nodes[i].shape):
        i = nodes[i].inputs[0]
    return i


def _pointwise(m) -> bool:
    if len(m.inputs) != 1:
        return False
    if m.kind == "act":
        return m.activation is not None and m.activation.known
    if m.kind == "scale":
        return m.factor is not None
    if m.kind == "shift":
        return bool(m.const) and len(m.const[1]) == 1
    return False


def shared_product(nodes, n, exact_pass) -> SharedProduct | None:
    """The :class:`SharedProduct` when the two-operand product ``n`` multiplies ``h(o)`` (one activation and
    scalar shifts and scales of ``o``, through same-shape views) by ``o`` or by a join of ``o`` with other terms
    (all of ``n``'s shape); else None."""
    if n.kind != "mul" or len(n.inputs) != 2:
        return None
    shape = tuple(n.shape)
    if any(tuple(nodes[i].shape) != shape for i in n.inputs):
        return None
    for gi in (0, 1):
        ai = n.inputs[1 - gi]
        a = nodes[_root(nodes, ai, exact_pass)]
        cands = {a.id: (1.0, ())}
        if a.kind in ("add", "sub") and len(a.inputs) >= 2 and all(tuple(nodes[i].shape) == shape for i in a.inputs):
            signs = [1.0] + [-1.0 if a.kind == "sub" else 1.0] * (len(a.inputs) - 1)
            for j, i in enumerate(a.inputs):
                rest = tuple((k, signs[t]) for t, k in enumerate(a.inputs) if t != j)
                cands.setdefault(_root(nodes, i, exact_pass), (signs[j], rest))
        cur, chain = n.inputs[gi], []
        while cur not in cands and len(chain) < 8:
            m = nodes[cur]
            if m.kind == "pass" and m.op in exact_pass and len(m.inputs) == 1 and tuple(m.shape) == shape:
                cur = m.inputs[0]
                continue
            if not _pointwise(m) or tuple(m.shape) != shape:
                break
            chain.append(cur)
            cur = m.inputs[0]
        if cur in cands and sum(nodes[c].kind == "act" for c in chain) == 1:
            sign, terms = cands[cur]
            if any(_root(nodes, k, exact_pass) == cur for k, _ in terms):
                continue
            return SharedProduct(gi, 1 - gi, cur, sign, terms, tuple(reversed(chain)))
    return None


def _chain_fn(nodes, chain):
    steps = []
    for c in chain:
        m = nodes[c]
        if m.kind == "act":
            steps.append(m.activation.function())
        elif m.kind == "scale":
            steps.append(lambda z, f=m.factor: z * f)
        elif m.op == "rsub":
            steps.append(lambda z, v=m.const[1][0]: v - z)
        else:
            steps.append(lambda z, v=m.const[1][0] * (-1 if m.op == "sub" else 1): z + v)

    def h(z):
        for f in steps:
            z = f(z)
        return z
    return h


def _act(nodes, chain):
    return next(nodes[c].activation for c in chain if nodes[c].kind == "act")


@functools.lru_cache(maxsize=1024)
def _expect(key, v: float, mu: float) -> tuple[float, ...]:
    """``E[h^2], E[o h], E[h], E[o^2 h^2], E[o h^2], E[h'^2], E[(h + o h')^2], E[(h + o h') h']`` for
    ``o ~ N(mu, v)`` (``key``: the chain's nodes and function, hashable)."""
    nodes, chain = key
    z, w = _nodes(_act(nodes, chain), v, mu)
    h_of = _chain_fn(nodes, chain)
    with torch.enable_grad():
        zz = z.detach().to(torch.float64).requires_grad_(True)
        h = h_of(zz)
        (dh,) = torch.autograd.grad(h.sum(), zz, allow_unused=True)
    h, z, w = h.detach(), zz.detach(), w.to(torch.float64)
    dh = torch.zeros_like(z) if dh is None else dh.detach()
    both = h + z * dh
    vals = (h * h, z * h, h, z * z * h * h, z * h * h, dh * dh, both * both, both * dh)
    return tuple(float((w * t).sum()) for t in vals)


class _Key:
    """Hashable handle of (nodes, chain) for the cache: the chain's ops, activations and constants."""

    def __init__(self, nodes, chain):
        self.nodes, self.chain = nodes, chain
        self._id = tuple((nodes[c].kind, nodes[c].op, nodes[c].activation, nodes[c].factor,
                          tuple(nodes[c].const[1]) if nodes[c].const else None) for c in chain)

    def __iter__(self):
        return iter((self.nodes, self.chain))

    def __hash__(self):
        return hash(self._id)

    def __eq__(self, other):
        return isinstance(other, _Key) and self._id == other._id


def _moments(nodes, sp: SharedProduct, o: Sig) -> tuple[float, ...]:
    v = max(o.q - o.mean * o.mean, 1e-12)
    return _expect(_Key(nodes, sp.chain), float(f"{v:.6g}"), float(f"{o.mean:.6g}"))


def _x(sig, sp: SharedProduct) -> tuple[float, float]:
    """``E[X^2]`` and ``E[X]`` of the other terms (independent of each other, as the join's rule takes them)."""
    x2 = sum(sig[k].q for k, _ in sp.terms)
    xm = sum(s * sig[k].mean for k, s in sp.terms)
    return x2, xm


def shared_forward(nodes, sp: SharedProduct, sig, a: Sig, g: Sig) -> tuple[Sig, float]:
    """The product's moments (module docstring); ``a``, ``g``: the operands' moments as the walker has them."""
    o = sig[sp.root]
    eh2, eoh, eh, eo2h2, eoh2, _, _, _ = _moments(nodes, sp, o)
    x2, xm = _x(sig, sp)
    q = eo2h2 + x2 * eh2 + 2 * sp.sign * xm * eoh2
    mean = sp.sign * eoh + xm * eh
    share = q / (a.q * g.q) if a.q * g.q > 0 else 1.0
    dcb = max(a.dcb * g.dcb * share, mean * mean)
    return Sig(q, mean, max(a.dc * g.dc * share, dcb), dcb).clean(), 1.0


def shared_cross(nodes, sp: SharedProduct, sig, d: Grad, a: Sig, g: Sig) -> Grad:
    """What to add at ``o`` to the two paths' gradients (module docstring); it may be negative."""
    o = sig[sp.root]
    eh2, _, _, _, _, edh2, eb2, ebdh = _moments(nodes, sp, o)
    x2, xm = _x(sig, sp)
    true = eb2 + x2 * edh2 + 2 * sp.sign * xm * ebdh
    c = d.g * (true - g.q - a.q * edh2)
    fdc = d.dc / d.g if d.g > 0 else 0.0
    fdcb = d.dcb / d.g if d.g > 0 else 0.0
    return Grad(c, c * fdc, c * fdcb)
