"""The backward walker of :mod:`initwise._propagate`: from the output's unit cotangent to every node, in reverse
execution order, one rule per op family (the same rule modules as the forward walker)."""

from __future__ import annotations

from dataclasses import replace

from . import _rules_fft as F
from . import _rules_fusion as U
from . import _rules_join as J
from . import _rules_reduce as R
from . import _rules_shared as S
from . import _rules_tokens as T
from . import _rules_window as W
from ._operands import softmax_source as _softmax_source
from ._propagate_nodes import Propagation, _attention, _branch, _norm_of, _spectral_pair
from ._rules_act import _HOMOGENEOUS, act_backward, slope_correlation
from ._rules_layer import layer_backward, norm_backward, normalize_backward
from ._signal import Grad, Sig, layout

__all__ = ["backward"]

def _after(n, users, grads, sig) -> tuple[float, Grad] | None:
    """The activation that alone reads the norm ``n``'s output (through value-moving ops: timm's fused norm-act
    modules pass an Identity first): its ``kappa`` and the gradient at its output."""
    u = users.get(n.id, [])
    while len(u) == 1 and u[0].kind == "pass" and u[0].op in R.EXACT_PASS and u[0].op not in R.MAX_POOLS:
        u = users.get(u[0].id, [])
    if len(u) != 1 or u[0].kind != "act" or u[0].id not in grads:
        return None
    return slope_correlation(u[0].activation, sig.get(u[0].inputs[0], Sig(1.0))), grads[u[0].id]


def _max_pool_after(n, users, nodes):
    """The max pool that alone reads the activation ``n``'s output (directly), or None."""
    u = users.get(n.id, [])
    if len(u) != 1 or u[0].kind != "pass" or u[0].op not in R.MAX_POOLS or n.activation is None:
        return None
    return u[0]


def _mixed_since(nodes, n, layers) -> bool:
    """Was the per-channel layer ``n``'s input mixed over channels by a dense layer since the last per-channel
    one (through pointwise ops, norms, value moves and joins of the first operand)?"""
    i, steps = (n.inputs[0] if n.inputs else None), 0
    while i is not None and steps < 256:
        m = nodes[i]
        if m.kind == "layer":
            lm = layers.get(m.module or "")
            return lm is not None and not lm.per_channel
        if m.kind in ("input", "output") or not m.inputs:
            return True
        i, steps = m.inputs[0], steps + 1
    return True


def _depends_on_forward(n) -> bool:
    """Does the node's backward rule read the forward moments of its input?"""
    if n.kind == "act":
        return n.activation is None or n.activation.name not in _HOMOGENEOUS
    return n.kind in ("norm", "mul", "matmul", "attention", "softmax")


def backward(graph, nodes, layers, norms, prop: Propagation, aux: dict[int, tuple[float, float]], batch: int | None) -> None:
    sig, grads, bb, fb = prop.signals, prop.grads, prop.backward_bound, prop.forward_bound
    rm = prop.backward_removed
    users: dict[int, list] = {}
    for n in graph.nodes:
        for i in n.inputs:
            users.setdefault(i, []).append(n)
    for oid in graph.output_ids:
        nb, _, p = layout(nodes[oid].shape)
        nb = batch or nb
        grads[oid] = grads.get(oid, Grad(0.0)) + Grad(1.0, 1.0 / max(p, 1), 1.0 / max(p * nb, 1))
        bb[oid] = 1.0
    for n in reversed(graph.nodes):
        prof_norm = None
        d = grads.get(n.id)
        if d is None or not n.inputs:
            continue
        here = bb.get(n.id, 1.0)
        ins = [sig.get(i, Sig(1.0)) for i in n.inputs]
        x = ins[0]
        shapes = [nodes[i].shape for i in n.inputs]
        k = n.kind
        if k == "output":
            contrib, b = [d] * len(n.inputs), 1.0
        elif 0 in n.shape:  # an empty output: no gradient flows back through it
            contrib, b = [Grad(0.0)] * len(n.inputs), 1.0
        elif k == "layer" and _attention(layers, n) is not None:
            one, b = J.mha_backward(_attention(layers, n), d, x, shapes[0])
            contrib = [one] + [Grad(0.0)] * (len(n.inputs) - 1)
        elif k == "layer":
            lm = layers.get(n.module or "")
            contrib, b = layer_backward(lm, d, len(n.inputs), lm is not None and lm.per_channel
                                        and _mixed_since(nodes, n, layers))
        elif k == "norm" and n.op == "normalize" and n.dims:
            contrib, b = normalize_backward(d, x, shapes[0][n.dims[0]] if len(shapes[0]) > n.dims[0] else 1)
        elif k == "norm":
            nm = _norm_of(norms, n)
            contrib, b = norm_backward(nm, d, x, shapes[0], batch, _after(n, users, grads, sig))
            fac, prof_norm = T.norm_backward_factor(nm, d, x, shapes[0])
            if fac != 1.0:  # rows of different variance (a class token): each divided by its own
                contrib = [replace(c, g=c.g * fac, dc=c.dc * fac, dcb=c.dcb * fac) for c in contrib]
                b *= max(fac, 1.0 / fac)  # the rows' variances from the profile rules: approximate by as much
        elif k == "act":
            contrib, b = act_backward(n.activation, d, x, n.shape, batch)
            pool = _max_pool_after(n, users, nodes)
            if pool is not None:  # the pool's gradient reaches each window's largest value only
                f = R.max_pool_slope(n.activation, x, pool.dims, n.shape, pool.shape)
                if f is not None:
                    contrib, b = [c.scaled(f) for c in contrib], R.BOUND_MAX_POOL
        elif k == "scale":
            f = n.factor
            contrib, b = [d.scaled(f * f) if f is not None else d], 1.0 if f is not None else R.BOUND_UNKNOWN
        elif k == "shift":
            contrib, b = [d], 1.0
        elif k in ("add", "sub") and W.pooled_pair(nodes, n, R.EXACT_PASS) is not None:
            pool, skip, signs = W.pooled_pair(nodes, n, R.EXACT_PASS)
            pn = nodes[n.inputs[pool]]
            pooled, _ = R.pool_backward(pn.op, d, pn.dims, nodes[pn.inputs[0]].shape, pn.shape)
            contrib, b = [d, d], 1.0
            contrib[skip], b = W.window_join_backward(d, n.shape, pn.dims, pn.window, signs, pooled)
        elif k in ("add", "sub"):
            contrib, b = J.add_backward(d, shapes, n.shape)
            fused = U.fusion_skip(nodes, n, R.EXACT_PASS) if k == "add" else None
            if fused is not None:  # the root reached through both operands, coherently (rules_fusion)
                root = fused[1]
                grads[root] = grads.get(root, Grad(0.0)) + U.fusion_cross(d, fused[2], fused[3])
                bb[root] = max(bb.get(root, 1.0), here * U.BOUND_FUSION)
            found = _branch(nodes, n, norms) if k == "add" else None
            if found is not None:  # the fork's cross term, which the two paths to it cannot carry
                root = found[1]
                cross, cb = W.branch_cross(nodes, found, R.EXACT_PASS, sig.get(root, Sig(1.0)),
                                           _norm_of(norms, nodes[found[5]]), d, n.shape)
                grads[root] = grads.get(root, Grad(0.0)) + cross
                bb[root] = max(bb.get(root, 1.0), here * cb)
        elif k == "cat":
            contrib, b = T.cat_backward(n, d, shapes) or [d] * len(n.inputs), 1.0
        elif k == "mul" and _spectral_pair(nodes, n) is not None:
            contrib, b = F.spectral_product_backward(d, ins[0], ins[1], *_spectral_pair(nodes, n))
        elif k == "mul":
            contrib, b = J.mul_backward(d, ins, shapes, n.shape, n.branch is not None)
            sp = S.shared_product(nodes, n, R.EXACT_PASS)
            if sp is not None:  # the two paths to the shared source are correlated (rules_shared)
                grads[sp.root] = grads.get(sp.root, Grad(0.0)) + S.shared_cross(nodes, sp, sig, d, ins[sp.other],
                                                                                ins[sp.gate])
                bb[sp.root] = max(bb.get(sp.root, 1.0), here)
        elif k == "reduce":
            one, b = R.reduce_backward(n.op, d, n.dims or (), shapes[0])
            contrib = [one]
        elif k == "pass" and n.op in R.DROPOUT and n.factor is not None:
            # the same mask multiplies the gradient: E[dx^2] = E[m^2] E[dy^2]; its constant parts as forward
            contrib, b = [Grad(d.g * n.factor, d.dc * (n.factor if n.op == "DropPath" else 1.0), d.dcb)], 1.0
        elif k == "pass" and (n.op in R.AVG_POOLS or n.op in R.ADAPTIVE_AVG):
            one, b = R.pool_backward(n.op, d, n.dims, shapes[0], n.shape)
            contrib = [one]
        elif k == "pass" and n.op in R.INTERPOLATE and n.mode is not None:
            one, b = R.interpolate_backward(n.op, n.mode, d, shapes[0], n.shape)
            contrib = [one] + [Grad(0.0)] * (len(n.inputs) - 1)
        elif k == "pass":
            one, b = R.pass_backward(n.op, d, shapes[0], n.shape, True, n.dims)
            contrib = [one] + [Grad(0.0)] * (len(n.inputs) - 1)
        elif k == "softmax":
            size = shapes[0][n.dims[0]] if n.dims and len(shapes[0]) > n.dims[0] else 1
            contrib, b = J.softmax_backward(d, aux.get(n.id, (1.0, 0.0)), size)
        elif k == "matmul" and len(ins) == 2:
            src = _softmax_source(nodes, n.inputs[0])
            contrib, b = J.matmul_backward(d, ins[0], ins[1], shapes[0], n.shape,
                                           aux.get(src) if src is not None else None)
        elif k == "matmul" and len(ins) == 1 and n.dims and n.factor is not None:
            left = n.dims[0] == len(shapes[0]) - 1  # x @ W: x's rows feed the output's last dim
            fanout = (n.shape[-1] if left else n.shape[-2]) if len(n.shape) >= 2 else 1
            contrib, b = J.constant_matmul_backward(d, fanout, n.factor)
        elif k == "attention" and len(ins) == 3:
            contrib, b = J.attention_backward(d, *ins, shapes[0], shapes[1], n.factor, aux.get(n.id, (1.0, 0.0)))
        elif n.op in F.FFT_OPS:  # a spectrum carries its signal's moments (rules_fft)
            contrib, b = [d] + [Grad(0.0)] * (len(n.inputs) - 1), R.BOUND_UNKNOWN
        else:  # unknown: move values around
            one, b = R.pass_backward(n.op, d, shapes[0], n.shape, False)
            contrib = [one] + [Grad(0.0)] * (len(n.inputs) - 1)
        if d.prof is not None or k == "pass" and n.select is not None or any(c.prof is not None for c in contrib) \
                or k == "norm" and prof_norm is not None:
            contrib = T.backward_profiles(n, d, contrib, shapes, layers.get(n.module or "") if k == "layer" else
                                          None, prof_norm if k == "norm" else None)
        dep = _depends_on_forward(n)
        removed = rm.get(n.id, 1.0)
        if k == "norm" and d.g > 0 and contrib and _norm_of(norms, n).kind in ("batch", "instance"):
            kept = max(d.g - (d.dcb if _norm_of(norms, n).kind == "batch" else d.dc), 0.0) / d.g
            removed *= kept
        for i, c in zip(n.inputs, contrib):
            grads[i] = grads.get(i, Grad(0.0)) + c
            bound = here * b * (fb.get(i, 1.0) if dep else 1.0)
            bb[i] = max(bb.get(i, 1.0), bound)
            rm[i] = max(rm.get(i, 0.0), removed)
    prop.backward.update({i: g.g for i, g in grads.items() if 0 not in nodes[i].shape})
