"""A selective-kernel fusion joined with one of its own inputs: ``y = sum_h a_h f_h + r f_i``.

SKFusion (MixDehazeNet, DehazeFormer; SKNet's selection) stacks ``height`` feature maps ``f_h`` (a ``cat`` along
channels, viewed as ``(B, height, C, ...)``), weighs them with a softmax over ``height`` of a gate computed from
their pooled sum, and sums; the decoder then adds one of the stacked inputs back (``fusion([x, skip(s)]) + x``).
The two operands of that join share ``f_i``, so they are not independent: with ``a_i`` independent of ``f_i``
(a gate of pooled means), ``E[y^2]`` holds the cross term ``2 r E[a_i] E[f_i^2]`` beyond the independent join's
sum, and the gradient reaching ``f_i`` through both paths, ``dy (r + a_i)``, the cross term ``2 r E[a_i]
E[dy^2]`` beyond the two paths' powers. At init the gate's logits are small, so ``E[a_i] = 1 / height`` (a
softmax's mean over its dim is exactly that; per slot approximate: :data:`BOUND_FUSION`). Measured on
MixDehazeNet's first decoder join: forward 0.060 (the independent rule 0.035, with the cross term 0.056),
backward into the upsampled branch 0.647 (0.254; with the cross term 0.684); tests/test_rules_fusion.py.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ._signal import Grad, Sig

__all__ = ["BOUND_FUSION", "fusion_skip", "fusion_forward", "fusion_cross"]

BOUND_FUSION = 1.25  # E[a_i] = 1 / height per slot: the gate's logits small at init, not zero


def _walk(nodes: Any, i: int, exact_pass: frozenset) -> tuple[int, float]:
    """``(root, c)``: node ``i``'s value is ``c`` times ``root``'s, through value-preserving same-shape views and
    constant scales."""
    c = 1.0
    while True:
        m = nodes[i]
        if len(m.inputs) == 1 and tuple(nodes[m.inputs[0]].shape) == tuple(m.shape) and (
                m.kind == "pass" and m.op in exact_pass or m.kind == "scale" and m.factor is not None):
            c *= m.factor if m.kind == "scale" else 1.0
            i = m.inputs[0]
            continue
        return i, c


def fusion_skip(nodes: Any, n: Any, exact_pass: frozenset) -> tuple[int, int, float, int] | None:
    """For the join ``n``: ``(skip operand index, root node id, r, height)`` when one operand is ``r f_i`` and the
    other the fusion ``sum over dim 1 of view(cat(f_1..f_height)) * softmax(gate, dim 1)`` with ``f_i`` among the
    stacked maps; None otherwise."""
    if n.kind != "add" or len(n.inputs) != 2:
        return None
    for j in (0, 1):
        root, r = _walk(nodes, n.inputs[j], exact_pass)
        red = nodes[n.inputs[1 - j]]
        if red.kind != "reduce" or red.op != "sum" or tuple(red.dims or ()) != (1,) or len(red.inputs) != 1:
            continue
        mul = nodes[red.inputs[0]]
        if mul.kind != "mul" or len(mul.inputs) != 2 or len(mul.shape) < 3:
            continue
        height = mul.shape[1]
        for g_i in (0, 1):
            gate, stacked = nodes[mul.inputs[g_i]], nodes[mul.inputs[1 - g_i]]
            if gate.kind != "softmax" or tuple(gate.dims or ()) != (1,) or tuple(stacked.shape) != tuple(mul.shape):
                continue
            if stacked.kind != "pass" or stacked.op not in ("view", "reshape") or len(stacked.inputs) != 1:
                continue
            cat = nodes[stacked.inputs[0]]
            if cat.kind != "cat" or (cat.cat_dim or 0) != 1 or len(cat.inputs) != height or height < 2:
                continue
            parts = [tuple(nodes[i].shape) for i in cat.inputs]
            want = (mul.shape[0], *mul.shape[2:])
            if any(p != want for p in parts) or tuple(red.shape) != want or tuple(nodes[root].shape) != want:
                continue
            if root in cat.inputs:
                return j, root, r, height
    return None


def fusion_forward(out: Sig, f: Sig, r: float, height: int) -> Sig:
    """The independent join's moments ``out`` with the cross term ``2 r E[a_i] E[f_i^2]`` (and its constant parts)
    added."""
    c = 2.0 * r / height
    return replace(out, q=out.q + c * f.q, dc=out.dc + c * f.dc, dcb=out.dcb + c * f.dcb).clean()


def fusion_cross(d: Grad, r: float, height: int) -> Grad:
    """What the root ``f_i`` gets beyond the two paths' gradients: ``2 r E[a_i] E[dy^2]``."""
    c = 2.0 * r / height
    return Grad(c * d.g, c * d.dc, c * d.dcb)
