"""What both walkers of :mod:`initwise._propagate` share: the :class:`Propagation` they fill and the lookups of a
node's layer, norm, constant and operands."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import _rules_fft as F
from . import _rules_reduce as R
from . import _rules_window as W
from ._rules_layer import NormMoments
from ._signal import Grad, Sig

__all__ = ["Propagation"]


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
