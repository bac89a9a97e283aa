"""Analytic propagation of second moments through a traced graph, forward from the input and backward from the output.

The walker visits the nodes of an :class:`initwise.Graph` in execution order (forward) and in reverse (backward)
and applies one rule per op family:

- weight layers and normalizations, constant scales: :mod:`initwise._rules_layer`;
- activations: :mod:`initwise._rules_act`;
- joins, products, matrix products, softmax and attention: :mod:`initwise._rules_join`;
- moving and averaging values (views, pooling, means), constant scales and shifts: :mod:`initwise._rules_reduce`;
- a signal joined with its own average pooling (``pool(x) - x``): :mod:`initwise._rules_window`;
- a product of two operands that share a source (``(o + x) * h(o)``): :mod:`initwise._rules_shared`.

Each tensor carries its moments (:class:`initwise._signal.Sig`: second moment, mean and the parts constant over
positions, which batch norm removes and pooling keeps); each gradient a :class:`initwise._signal.Grad`. Every
rule also returns an error bound: 1 when it is exact (under the mean-field assumptions of He et al., 2015:
independent zero-mean weights, Gaussian pre-activations, gradients independent of the forward signal), else the
largest ratio between its prediction and the measurement seen in the tests that pin it (``inf`` for an op the
rules do not know). A node's bound is the product of the bounds on its path: it is exact only when every rule on
the path is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from . import _rules_fft as F
from . import _rules_join as J
from . import _rules_near as N
from . import _rules_reduce as R
from . import _rules_shared as S
from . import _rules_window as W
from ._operands import along as _along, softmax_source as _softmax_source
from ._rules_act import act_backward, act_forward, slope_correlation
from ._rules_layer import (LayerMoments, NormMoments, layer_backward, layer_forward, norm_backward, norm_forward,
                           normalize_backward, normalize_forward)
from ._signal import Grad, Sig, layout

__all__ = ["LayerMoments", "NormMoments", "Propagation", "propagate", "EXACT_PASS"]

EXACT_PASS = R.EXACT_PASS
_EXACT_PASS = EXACT_PASS  # the old private name
_HOMOGENEOUS = {"linear", "relu", "leaky_relu", "prelu"}


@dataclass
class Propagation:
    """Per node: forward second moment ``q`` of its output, backward second moment ``g`` of the gradient there,
    the full moments (``signals``, ``grads``) and the error bounds (``forward_bound``, ``backward_bound``: 1.0 is
    exact)."""

    forward: dict[int, float] = field(default_factory=dict)
    backward: dict[int, float] = field(default_factory=dict)
    approximate: list[str] = field(default_factory=list)
    signals: dict[int, Sig] = field(default_factory=dict)
    grads: dict[int, Grad] = field(default_factory=dict)
    forward_bound: dict[int, float] = field(default_factory=dict)
    backward_bound: dict[int, float] = field(default_factory=dict)
    backward_removed: dict[int, float] = field(default_factory=dict)  # the factor batch statistics removed


def _as_norm(v) -> NormMoments:
    if isinstance(v, NormMoments):
        return v
    gm, bm = v
    return NormMoments("generic", gamma_ms=gm, beta_ms=bm)


def _as_sig(v) -> Sig:
    if isinstance(v, Sig):
        return v
    return Sig(float(v) if v else 1.0)


def propagate(graph, layers: Mapping[str, LayerMoments], norms: Mapping[str, NormMoments | tuple[float, float]],
              input_ms: Mapping[int, float | Sig | None], batch: int | None = None,
              known: Mapping[int, Sig] | None = None, near: Mapping[int, float] | None = None) -> Propagation:
    """Propagate moments through ``graph`` (an :class:`initwise.Graph`).

    Args:
        graph: the traced graph.
        layers: per dotted layer name, its :class:`LayerMoments`.
        norms: per dotted norm-module name, its :class:`NormMoments` (or the old ``(E[gamma^2], E[beta^2])``);
            a functional norm without an entry is taken with unit affine parameters and eps 1e-5.
        input_ms: per input node id, the example's moments (a :class:`initwise._signal.Sig`, or its second moment;
            None for integer inputs).
        batch: the batch size of the pass to predict, when the graph was traced on a slice of it (the
            constant parts of the output cotangent depend on it).
        known: per node id, moments measured on the example itself (the model's constant prefix: see
            :func:`initwise._plan_example._prefix_moments`); they replace the forward rule there.
        near: per node id, its output's neighbour correlation (``Sig.near``) measured on the example
            (:func:`initwise._plan_example._measured_near`); it replaces the rule's there.
    """
    known, near = known or {}, near or {}
    prop = Propagation()
    sig, fb = prop.signals, prop.forward_bound
    nodes = {n.id: n for n in graph.nodes}
    aux: dict[int, tuple[float, float]] = {}  # softmax / attention: rules_join.softmax_stats
    for n in graph.nodes:
        ins = [sig.get(i, Sig(1.0)) for i in n.inputs]
        x = ins[0] if ins else Sig(1.0)
        shapes = [nodes[i].shape for i in n.inputs]
        s_in = shapes[0] if shapes else n.shape
        k = n.kind
        if n.id in known:
            out, b = known[n.id], 1.0
        elif k == "input":
            out, b = _as_sig(input_ms.get(n.id)), 1.0
        elif 0 in n.shape and k != "output":  # no elements: nothing to predict, and nothing flows on from it
            out, b = Sig(0.0), 1.0
        elif k == "layer" and _attention(layers, n) is not None:
            out, b = J.mha_forward(_attention(layers, n), x, n.shape)
        elif k == "layer":
            out, b = layer_forward(layers.get(n.module or ""), x, n.shape, batch)
            if not n.inputs:  # its input is no traced tensor (a buffer, a table built in forward): taken as 1
                b = R.BOUND_UNKNOWN
        elif k == "norm" and n.op == "normalize" and n.dims:
            out, b = normalize_forward(x, s_in[n.dims[0]] if len(s_in) > n.dims[0] else 1)
        elif k == "norm":
            out, b = norm_forward(_norm_of(norms, n), x, s_in)
        elif k == "act":
            out, b = act_forward(n.activation, x, n.shape, batch)
        elif k == "scale":
            out, b = R.scale_forward(x, n.factor)
        elif k == "shift":
            out, b = R.shift_forward(x, _const_moments(n.const), n.op)
        elif k == "add" and _branch(nodes, n, norms) is not None:
            found = _branch(nodes, n, norms)
            out, b = W.branch_forward(nodes, found, R.EXACT_PASS, sig[found[1]], _norm_of(norms, nodes[found[5]]),
                                      n.shape)
        elif k in ("add", "sub") and W.pooled_pair(nodes, n, R.EXACT_PASS) is not None:
            pool, skip, signs = W.pooled_pair(nodes, n, R.EXACT_PASS)
            pn = nodes[n.inputs[pool]]
            out, b = W.window_join_forward(ins[skip], n.shape, pn.dims, pn.window, signs)
        elif k in ("add", "sub"):
            out, b = J.add_forward(ins, k == "sub")
        elif k == "cat":
            dim = n.cat_dim or 0
            sizes = [s[dim] if len(s) > dim else 1 for s in shapes]
            out, b = J.cat_forward(ins, sizes)
        elif k == "mul" and _spectral_pair(nodes, n) is not None:
            out, b = F.spectral_product_forward(ins[0], ins[1], *_spectral_pair(nodes, n))
        elif k == "mul" and S.shared_product(nodes, n, R.EXACT_PASS) is not None:
            sp = S.shared_product(nodes, n, R.EXACT_PASS)
            out, b = S.shared_forward(nodes, sp, sig, ins[sp.other], ins[sp.gate])
        elif k == "mul":
            out, b = J.mul_forward(ins, n.branch is not None)
        elif k == "reduce":
            out, b = R.reduce_forward(n.op, x, n.dims or (), s_in, n.shape)
        elif k == "pass" and (n.op in R.AVG_POOLS or n.op in R.ADAPTIVE_AVG):
            out, b = R.pool_forward(n.op, x, n.dims, s_in, n.shape)
        elif k == "pass" and n.op in R.DROPOUT and n.factor is not None:
            out, b = R.dropout_forward(n.op, x, n.factor), 1.0
        elif k == "pass" and n.op in R.MAX_POOLS:
            src = nodes[n.inputs[0]]
            pre = sig.get(src.inputs[0]) if src.kind == "act" and src.inputs else None
            out, b = R.max_pool_forward(x, n.dims, s_in, n.shape, src.activation if pre else None, pre)
            if x.corr is not None:  # the channels' correlation kept (approximate: :mod:`initwise._rules_corr`)
                out = replace(out, corr=x.corr)
        elif k == "pass" and n.op in R.INTERPOLATE and n.mode is not None:
            out, b = R.interpolate_forward(n.op, n.mode, x, s_in, n.shape)
        elif k == "pass":
            out, b = R.pass_forward(n.op, x, n.shape, True)
        elif k == "softmax":
            size = s_in[n.dims[0]] if n.dims and len(s_in) > n.dims[0] else 1
            out, b, aux[n.id] = J.softmax_forward(x, size)
        elif k == "matmul" and len(ins) == 2:
            src = _softmax_source(nodes, n.inputs[0])
            out, b = J.matmul_forward(ins[0], ins[1], shapes[0], aux.get(src) if src is not None else None,
                                      _along(nodes, n, shapes, src))
        elif k == "matmul" and len(ins) == 1 and n.dims and n.factor is not None:  # x @ W, W a constant
            out, b = J.constant_matmul_forward(x, s_in[n.dims[0]] if len(s_in) > n.dims[0] else 1, n.factor)
        elif k == "attention" and len(ins) == 3:
            out, b, aux[n.id] = J.attention_forward(*ins, shapes[0], shapes[1], n.factor, n.residual)
        elif k == "output":
            out, b = x, 1.0
        else:  # unknown (or a kind the rules do not know)
            out, b = R.pass_forward(n.op, x, n.shape, False)
        if k in ("act", "pass", "scale") and out.spread == 1.0 and x.spread != 1.0 and n.id not in known:
            out = replace(out, spread=x.spread, rows=x.rows, rows_rest=x.rows_rest, norms=x.norms)  # pointwise maps
        if n.id not in known and k not in ("input", "output"):
            nr = near[n.id] if n.id in near else N.near_after(n, out, ins, shapes, layers, batch)
            if nr != out.near:
                out = replace(out, near=nr)
        sig[n.id] = out
        if 0 not in n.shape:
            prop.forward[n.id] = out.q
        read = n.inputs if k not in ("add", "sub") or W.pooled_pair(nodes, n, R.EXACT_PASS) is None else \
            [n.inputs[W.pooled_pair(nodes, n, R.EXACT_PASS)[1]]]  # the join with its own pooling reads the skip
        fb[n.id] = b * max((fb.get(i, 1.0) for i in read), default=1.0)
        if b > 1.0:
            prop.approximate.append(f"{n.module or ''}:{n.op}".lstrip(":"))
    _backward(graph, nodes, layers, norms, prop, aux, batch)
    return prop


def _branch(nodes, n, norms):
    """:func:`initwise._rules_window.pooled_branch` for the add node ``n``."""
    return W.pooled_branch(nodes, n, R.EXACT_PASS, lambda m: _norm_of(norms, m))


def _spectral_pair(nodes, n) -> tuple[int, tuple[int, ...]] | None:
    """(positions transformed, the signal's shape) when both operands of the product ``n`` are spectra of the
    same size (:mod:`initwise._rules_fft`), else None."""
    if len(n.inputs) != 2:
        return None
    src = [F.spectral_source(nodes, i, R.EXACT_PASS) for i in n.inputs]
    if src[0] is None or src[1] is None:
        return None
    p = F.fft_size(nodes, src[0])
    if p is None or p != F.fft_size(nodes, src[1]):
        return None
    return p, nodes[nodes[src[0]].inputs[0]].shape


def _const_moments(const) -> tuple[float, float, int] | None:
    """(mean, mean square, number of values) of a shift's constant (``Node.const``), or None when the trace did
    not see it."""
    if not const or not const[1]:
        return None
    v = const[1]
    return sum(v) / len(v), sum(t * t for t in v) / len(v), len(v)


def _attention(layers, n):
    lm = layers.get(n.module or "")
    return lm.attention if lm is not None and lm.kind == "attention" and len(n.inputs) == 1 else None


def _norm_of(norms, n) -> NormMoments:
    v = norms.get(n.module or "") if n.module else None
    if v is not None:
        return _as_norm(v)
    kind = {"batch_norm": "batch", "instance_norm": "instance", "group_norm": "group", "rms_norm": "rms",
            "layer_norm": "layer"}.get(n.op, "generic")
    return NormMoments(kind, functional=True)


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


def _backward(graph, nodes, layers, norms, prop: Propagation, aux: dict[int, tuple[float, float]], batch: int | None) -> None:
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
            contrib, b = norm_backward(_norm_of(norms, n), d, x, shapes[0], batch, _after(n, users, grads, sig))
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
            found = _branch(nodes, n, norms) if k == "add" else None
            if found is not None:  # the fork's cross term, which the two paths to it cannot carry
                root = found[1]
                cross, cb = W.branch_cross(nodes, found, R.EXACT_PASS, sig.get(root, Sig(1.0)),
                                           _norm_of(norms, nodes[found[5]]), d, n.shape)
                grads[root] = grads.get(root, Grad(0.0)) + cross
                bb[root] = max(bb.get(root, 1.0), here * cb)
        elif k == "cat":
            contrib, b = [d] * len(n.inputs), 1.0
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
