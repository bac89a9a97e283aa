"""What a matrix product's operands are: the softmax whose weights one of them carries, and the dim each
contracts over ("positions" or "channels") in the layout its moments were taken in. The matmul and attention
rules (:mod:`initwise._rules_join`) read these; :mod:`initwise._propagate` finds them on the graph.
"""

from __future__ import annotations

from . import _rules_reduce as R
from ._signal import layout

__all__ = ["along", "contracted", "softmax_source"]


def softmax_source(nodes, i: int) -> int | None:
    """The softmax node whose weights reach node ``i`` through value-moving ops only (dropout, views)."""
    while True:
        n = nodes[i]
        if n.kind == "softmax":
            return n.id
        if n.kind == "pass" and n.op in R.EXACT_PASS and n.inputs:
            i = n.inputs[0]
            continue
        return None


def contracted(nodes, i: int, size: int) -> str | None:
    """What a matmul operand's contracted dim (of ``size``) is in the layout its moments were taken in (the node
    that made them, through views, moves, scales, ``F.normalize`` and elementwise ops of same-shaped tensors):
    "positions" (a transposed attention over tokens, a Gram matrix of feature maps), "channels" (a head split of
    them too), or None when the sizes cannot tell (positions as many as channels, or a dim neither)."""
    while True:
        n = nodes[i]
        if n.inputs and (n.kind == "pass" and n.op in R.EXACT_PASS or n.kind in ("scale", "shift", "act")
                         or n.kind == "norm" and n.op == "normalize"
                         or n.kind in ("mul", "add", "sub") and all(nodes[j].shape == n.shape for j in n.inputs)):
            i = n.inputs[0]
            continue
        break
    if n.kind == "layer" and n.op in ("Linear", "linear") and len(n.shape) != 3:
        return None  # a linear map over the last dim of a 4-D tensor: its moments' layout is not (N, C, H, W)
    _, c, p = layout(tuple(n.shape))
    if size <= 1 or size == p == c:
        return None
    if size == p and c % size != 0:  # every position (a part of the channels would divide them)
        return "positions"
    if size != p and (size == c or c % size == 0 and p % size != 0):  # the channels or a head's share of them
        return "channels"
    return None  # e.g. a window's share of the positions or a head's of the channels: the sizes cannot tell


def along(nodes, n, shapes, softmax: int | None = None) -> tuple[str | None, str | None]:
    """:func:`contracted` for both operands of the matmul node ``n`` (``a``'s last dim, ``b``'s second last).
    With ``a`` the weights of the softmax node ``softmax``: when its logits were a product over positions (a
    transposed attention), its keys are channels."""
    sa, sb = shapes[0], shapes[1]
    k = sa[-1] if sa else 1
    dims = (contracted(nodes, n.inputs[0], k) if len(sa) >= 2 else None,
            contracted(nodes, n.inputs[1], k) if len(sb) >= 2 else None)
    if softmax is not None and dims[1] is None and nodes[softmax].inputs:
        i = nodes[softmax].inputs[0]
        while nodes[i].kind in ("scale", "shift") or nodes[i].kind == "pass" and nodes[i].op in R.EXACT_PASS:
            i = nodes[i].inputs[0]
        m = nodes[i]
        if m.kind == "matmul" and len(m.inputs) == 2 and \
                along(nodes, m, [nodes[j].shape for j in m.inputs]) == ("positions", "positions"):
            dims = (dims[0], "channels")
    return dims
