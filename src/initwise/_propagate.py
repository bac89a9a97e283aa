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
from dataclasses import replace
from typing import Any

from . import _rules_fft as F
from . import _rules_fusion as U
from . import _rules_join as J
from . import _rules_near as N
from . import _rules_reduce as R
from . import _rules_shared as S
from . import _rules_tokens as T
from . import _rules_window as W
from ._operands import along as _along, softmax_source as _softmax_source
from ._rules_act import act_forward
from ._rules_layer import LayerMoments, NormMoments, layer_forward, norm_forward, normalize_forward
from ._propagate_backward import backward
from ._propagate_nodes import Propagation, _as_sig, _attention, _branch, _const_moments, _norm_of, _spectral_pair
from ._signal import Sig

__all__ = ["LayerMoments", "NormMoments", "Propagation", "propagate", "EXACT_PASS"]

EXACT_PASS = R.EXACT_PASS
_EXACT_PASS = EXACT_PASS  # the old private name

def propagate(graph, layers: Mapping[str, LayerMoments], norms: Mapping[str, NormMoments | tuple[float, float]],
              input_ms: Mapping[int, float | Sig | None], batch: int | None = None,
              known: Mapping[int, Sig] | None = None, near: Mapping[int, float] | None = None,
              consts: Mapping[str, Any] | None = None) -> Propagation:
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
        consts: per dotted parameter name, the values (float64) of the parameters that a cat or a shift takes as
            an operand the trace has no values of (a class token, a position embedding:
            :mod:`initwise._rules_tokens`).
    """
    known, near, consts = known or {}, near or {}, dict(consts or {})
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
        cat = T.cat_parts(n, ins, shapes, consts) if k == "cat" else None
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
            const = _const_moments(n.const)
            out, b = R.shift_forward(x, const if const is not None else T.shift_const(n, consts), n.op)
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
            fused = U.fusion_skip(nodes, n, R.EXACT_PASS) if k == "add" else None
            if fused is not None:  # one operand is also stacked inside the other (rules_fusion)
                out, b = U.fusion_forward(out, sig.get(fused[1], Sig(1.0)), fused[2], fused[3]), U.BOUND_FUSION
        elif k == "cat" and cat is not None:  # with the operands that are parameters (a class token)
            out, b = J.cat_forward(*cat)
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
        elif k == "pass" and n.op in R.PIXEL_SHUFFLE:
            out, b = R.pixel_shuffle_forward(x, s_in, n.shape)
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
        if n.id not in known and k not in ("input", "output") and (out.prof is not None or any(
                s.prof is not None for s in ins) or k in ("cat", "shift")):
            before = out.q
            out = T.forward_profile(n, out, ins, shapes, layers.get(n.module or "") if k == "layer" else None,
                                    _norm_of(norms, n) if k == "norm" else None, consts, cat)
            if out.q != before and before > 0 and out.q > 0:  # a norm's rows held by eps: approximate by as much
                b *= max(out.q / before, before / out.q)
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
    backward(graph, nodes, layers, norms, prop, aux, batch)
    return prop
