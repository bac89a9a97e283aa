"""Propagation rules of ops that combine signals: add/sub, concatenation, products (gates, squeeze-excite),
matrix products, softmax and attention.

Broadcasting: an operand that is repeated ``R`` times in the output (a ``(N, C, 1, 1)`` gate over ``H x W``)
receives the sum of ``R`` gradients: ``E[(sum_p d_p)^2] = R (E[d^2] - dc) + R^2 dc`` with ``dc`` the constant
part of what is summed (the gradient's, times the other operand's for a product). For a product summed over
positions, ``d_p = dy_p x_p`` with ``dy = delta + dy'`` and ``x = mu + x'`` (constant over positions + the rest):
the sum is ``R delta mu + sum_p dy'_p x'_p`` (the mixed terms sum to zero), so what adds up ``R`` times is the
product of the two fluctuations, ``(E[dy^2] - dc_dy) (E[x^2] - dc_x)``, not ``E[dy^2] E[x^2] - dc_dy dc_x``: a
gate after a ReLU (``dc_x / E[x^2] ~ 1/pi``) took ~1.5x too much per squeeze-excite block before. Both ``dc`` are
a sample's: its mean over the ``R`` positions squared, which for a gradient white over positions is ``E[dy^2] / R``
(where the propagated constant part is below that, the floor is taken).

Attention at initialization (Vaswani et al., 2017): logits with variance ``L`` over ``n`` keys give softmax
weights with ``s2 = E[sum_j p_j^2]`` (estimated on fixed Gaussian draws: ``~e^L / n`` while that is small, up to
1 for a peaked softmax, where a few keys share the weight); the output ``sum_j p_j v_j`` has
``E[o^2] = s2 E[v^2] + (1 - s2) dc_v``: a near-uniform softmax averages the values (their constant part passes,
the rest shrinks by ``1/n``), a peaked one selects one of them.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace

import torch

from ._rules_rect import consistent, joined
from ._signal import Grad, Sig, layout

__all__ = ["AttentionMoments", "mha_forward", "mha_backward", "add_forward", "add_backward", "cat_forward", "mul_forward", "mul_backward", "softmax_stats",
           "softmax_forward", "softmax_backward", "matmul_forward", "matmul_backward", "constant_matmul_forward",
           "constant_matmul_backward", "attention_forward",
           "attention_backward"]

# measured bounds (tests/test_propagate.py)
BOUND_GATE = 1.5  # x * gate(x): the gate depends on the signal it multiplies (squeeze-excite, spatial attention)
BOUND_MATMUL = 1.5  # a product of two signals as independent zero-mean factors
BOUND_ATTENTION = 2.0  # the log-normal softmax approximation


def _numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape) if shape else 1


def _summed(d: Grad, r: float, dc: float, shape_in: tuple[int, ...]) -> Grad:
    """The gradient of an operand broadcast ``r`` times (see the module docstring)."""
    if r <= 1:
        return d
    g = r * max(d.g - dc, 0.0) + r * r * dc
    dcb = r * r * d.dcb
    return Grad(g, g if layout(shape_in)[2] == 1 else r * r * d.dc, min(dcb, g))


def _over_positions(shape: tuple[int, ...], out_shape: tuple[int, ...]) -> bool:
    """Is an operand of ``shape`` broadcast over the positions of ``out_shape`` only (a ``(N, C, 1, 1)`` gate over
    ``H x W``), its samples and channels those of the output?"""
    if len(shape) != len(out_shape):
        return False
    (nb, cb, pb), (no, co, po) = layout(shape), layout(out_shape)
    return pb == 1 and po > 1 and cb == co and nb == no


def add_forward(ins: list[Sig], sub: bool) -> tuple[Sig, float]:
    mean = ins[0].mean + sum((-1 if sub else 1) * s.mean for s in ins[1:])
    out = Sig(sum(s.q for s in ins), mean, sum(s.dc for s in ins), sum(s.dcb for s in ins)).clean()
    signs = [1] + [-1 if sub else 1] * (len(ins) - 1)
    rect = joined([s.rect for s in ins], [s.mean for s in ins], [s.q for s in ins], signs)
    return (replace(out, rect=rect) if consistent(rect, out.q, out.mean) else out), 1.0


def add_backward(d: Grad, shapes: list[tuple[int, ...]], out_shape: tuple[int, ...]) -> tuple[list[Grad], float]:
    n = _numel(out_shape)
    return [_summed(d, n / max(_numel(s), 1), d.dc, s) for s in shapes], 1.0


def cat_forward(ins: list[Sig], sizes: list[int]) -> tuple[Sig, float]:
    total = max(sum(sizes), 1)

    def avg(key: str) -> float:
        return sum(n * getattr(s, key) for n, s in zip(sizes, ins)) / total

    return Sig(avg("q"), avg("mean"), avg("dc"), avg("dcb")).clean(), 1.0


def mul_forward(ins: list[Sig], gated: bool) -> tuple[Sig, float]:
    q, mean, dc, dcb = 1.0, 1.0, 1.0, 1.0
    for s in ins:
        q, mean, dc, dcb = q * s.q, mean * s.mean, dc * s.dc, dcb * s.dcb
    return Sig(q, mean, dc, dcb).clean(), BOUND_GATE if gated else 1.0


def mul_backward(d: Grad, ins: list[Sig], shapes: list[tuple[int, ...]], out_shape: tuple[int, ...],
                 gated: bool) -> tuple[list[Grad], float]:
    n = _numel(out_shape)
    out = []
    for j, s in enumerate(shapes):
        others = [x for i, x in enumerate(ins) if i != j]
        q_o = math.prod(x.q for x in others)
        dc_o = math.prod(x.dc for x in others)
        dcb_o = math.prod(x.dcb for x in others)
        local = Grad(d.g * q_o, d.dc * dc_o, d.dcb * dcb_o)
        r = n / max(_numel(s), 1)
        if _over_positions(s, out_shape):  # summed over positions: the fluctuations' product (module doc)
            dc = min(max(d.dc, d.g / r), d.g)  # a sample's mean over r positions holds at least 1/r of a white one
            local = Grad(max(d.g - dc, 0.0) * max(q_o - dc_o, 0.0) + dc * dc_o, dc * dc_o, local.dcb)
        out.append(_summed(local, r, local.dc, s))
    return out, BOUND_GATE if gated else 1.0


@functools.lru_cache(maxsize=1024)
def _softmax_stats(var: float, n: int) -> tuple[float, float]:
    """``(E[sum_j p_j^2], E[sum_j p_j^2 (1 - 2 p_j + sum_k p_k^2)])`` of a softmax over ``n`` logits drawn from
    ``N(0, var)``, estimated on a fixed set of rows (``65536 / n`` of them, at least 16: relative error < 1%).
    The second is what a white gradient of unit variance becomes through the softmax's backward:
    ``dl_j = p_j (e_j - sum_k p_k e_k)``. Near-uniform weights give ``(1/n, ~1/n)``, one-hot ones ``(1, 0)``;
    between, a few keys share the weight (the "frozen" phase of the random energy model)."""
    if n <= 1:
        return 1.0, 0.0
    rows = max(16, 65536 // n)
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(rows, n, generator=g, dtype=torch.float64) * math.sqrt(var), dim=-1)
    s2 = p.square().sum(-1)
    spread = (p.square() * (1 - 2 * p + s2[:, None])).sum(-1)
    return float(s2.mean()), float(spread.mean())


def softmax_stats(logits: Sig, n: int, causal: bool = False) -> tuple[float, float]:
    """:func:`_softmax_stats` for logits with the given moments (their part constant over the keys cancels;
    a causal mask is taken as half the keys on average)."""
    var = max(logits.q - logits.dc, 0.0)
    n = max(1, n // 2) if causal else n
    key = float(f"{min(var, 1e4):.3g}")  # 3 significant digits: the statistics are smooth in the variance
    return _softmax_stats(key, int(n))


def softmax_forward(x: Sig, n: int) -> tuple[Sig, float, tuple[float, float]]:
    st = softmax_stats(x, n)
    q = st[0] / n
    c = 1.0 / (n * n)
    return Sig(q, 1.0 / n, min(c, q), min(c, q)), BOUND_ATTENTION, st


def softmax_backward(d: Grad, st: tuple[float, float], n: int) -> tuple[list[Grad], float]:
    if n <= 1:
        return [Grad(0.0)], 1.0
    return [Grad(d.g * st[1] / n, 0.0, 0.0)], BOUND_ATTENTION


def matmul_forward(a: Sig, b: Sig, sa: tuple[int, ...], st: tuple[float, float] | None,
                   along: tuple[str | None, str | None] = (None, None)) -> tuple[Sig, float]:
    """``a @ b``; ``st`` (:func:`softmax_stats`) is set when ``a`` holds softmax weights (attention). ``along``:
    what each operand's contracted dim is in its moments' layout ("positions", "channels", None: unknown). The
    products of entries ``k != k'`` along it meet the operands' shared part there: the constant over positions
    (``dc``) along positions, the mean along channels. Unknown keeps the usual attention: keys along positions
    for the weighted sum, query-key products over channels."""
    if st is not None:
        s2 = st[0]
        if along[1] == "channels":  # keys are channels: what they share is the mean; each keeps its constants
            m2 = min(b.mean * b.mean, b.q)
            q = s2 * b.q + (1 - s2) * m2
            return Sig(q, b.mean, s2 * b.dc + (1 - s2) * min(m2, b.dc),
                       s2 * b.dcb + (1 - s2) * min(m2, b.dcb)).clean(), BOUND_ATTENTION
        q = s2 * b.q + (1 - s2) * b.dc
        return Sig(q, b.mean, b.dc, b.dcb).clean(), BOUND_ATTENTION
    # the constant part of a row of ``a @ b`` (what a softmax over the last dim ignores) is ``a_i . mean_j b_j``
    k = sa[-1] if sa else 1
    q = k * a.q * b.q
    if along == ("positions", "positions"):  # rows of feature maps over their positions: their constants add up
        q += k * (k - 1) * a.dc * b.dc
    return Sig(q, k * a.mean * b.mean, min(k * a.q * b.dc, q), min(k * a.dcb * b.dcb, q)).clean(), BOUND_MATMUL


def matmul_backward(d: Grad, a: Sig, b: Sig, sa: tuple[int, ...], out_shape: tuple[int, ...],
                    st: tuple[float, float] | None) -> tuple[list[Grad], float]:
    m = out_shape[-2] if len(out_shape) >= 2 else 1
    n = out_shape[-1] if out_shape else 1
    if st is not None:
        s2 = st[0]
        keys = sa[-1] if sa else 1
        gv = (m / keys) * s2 * max(d.g - d.dc, 0.0) + (m / keys) ** 2 * d.dc
        gp = n * d.g * max(b.q - b.dc, 0.0)
        return [Grad(gp), Grad(gv, min(gv, (m / keys) ** 2 * d.dc), 0.0)], BOUND_ATTENTION
    return [Grad(n * d.g * b.q), Grad(m * d.g * a.q)], BOUND_MATMUL


def constant_matmul_forward(x: Sig, contracted: int, rms: float) -> tuple[Sig, float]:
    """``x @ W`` (or ``W @ x``) with ``W`` a constant of RMS ``rms`` summing ``contracted`` entries of ``x``: each
    output is ``sum_k x_k W_kn``, ``contracted * E[W^2]`` times ``x``'s moments for entries independent over ``k``
    (a mean shared over ``k`` meets ``W``'s column sums instead: approximate, the matmul bound)."""
    c2 = contracted * rms * rms
    return Sig(x.q * c2, 0.0, x.dc * c2, x.dcb * c2).clean(), BOUND_MATMUL


def constant_matmul_backward(d: Grad, fanout: int, rms: float) -> tuple[list[Grad], float]:
    """Each entry of ``x`` feeds ``fanout`` outputs through ``W``'s entries: ``fanout * E[W^2]`` of the gradient."""
    return [d.scaled(fanout * rms * rms)], BOUND_MATMUL


def attention_forward(q: Sig, k: Sig, v: Sig, sq: tuple[int, ...], sk: tuple[int, ...],
                      scale: float | None, causal: bool) -> tuple[Sig, float, tuple[float, float]]:
    e = sq[-1] if sq else 1
    scale = 1 / math.sqrt(e) if scale is None else scale
    logits = Sig(e * scale * scale * q.q * max(k.q - k.dc, 0.0))  # the part of k constant over keys cancels
    n = sk[-2] if len(sk) >= 2 else 1
    st = softmax_stats(logits, n, causal)
    s2 = st[0]
    out = s2 * v.q + (1 - s2) * v.dc
    dc = v.dc + max(v.q - v.dc, 0.0) / max(n, 1)
    return Sig(out, v.mean, min(dc, out), min(v.dcb, out)).clean(), BOUND_ATTENTION, st


def attention_backward(d: Grad, q: Sig, k: Sig, v: Sig, sq: tuple[int, ...], sk: tuple[int, ...],
                       scale: float | None, st: tuple[float, float]) -> tuple[list[Grad], float]:
    """To v: each key receives its weights' share of the gradient; to q and k: the softmax's backward of
    ``dy . (v_j - mean v)`` (``spread``, :func:`softmax_stats`) times the other operand."""
    e = sq[-1] if sq else 1
    scale = 1 / math.sqrt(e) if scale is None else scale
    nq = sq[-2] if len(sq) >= 2 else 1
    nk = sk[-2] if len(sk) >= 2 else 1
    s2, spread = st
    ratio = nq / max(nk, 1)
    gv = ratio * s2 * max(d.g - d.dc, 0.0) + ratio * ratio * d.dc
    common = e * scale * scale * spread * d.g * max(v.q - v.dc, 0.0)
    return [Grad(common * k.q), Grad(ratio * common * q.q), Grad(gv)], BOUND_ATTENTION


@dataclass(frozen=True)
class AttentionMoments:
    """``nn.MultiheadAttention``: embedding size, heads, token dim of its input, and per projection (q, k, v, out)
    ``E * E[w^2]`` (the forward gain of a linear map with fan_in ``E``) and ``E[b^2]``."""

    embed: int
    heads: int
    token_dim: int
    gq: float
    gk: float
    gv: float
    go: float
    bq: float = 0.0
    bk: float = 0.0
    bv: float = 0.0
    bo: float = 0.0


def _mha_parts(a: AttentionMoments, x: Sig, shape: tuple[int, ...]):
    t = shape[a.token_dim] if len(shape) > a.token_dim else 1
    qq = a.gq * x.q + a.bq
    kq, kdc = a.gk * x.q + a.bk, a.gk * x.dc + a.bk
    vq, vdc = a.gv * x.q + a.bv, a.gv * x.dc + a.bv
    st = softmax_stats(Sig(qq * max(kq - kdc, 0.0)), t)  # head dim d: d * (1/d) * E[q^2] E[k^2] per logit
    return t, qq, kq, vq, vdc, st


def mha_forward(a: AttentionMoments, x: Sig, shape: tuple[int, ...]) -> tuple[Sig, float]:
    """Self-attention ``out_proj(softmax(q k^T / sqrt(d)) v)`` with ``q, k, v`` linear maps of one input."""
    t, qq, kq, vq, vdc, st = _mha_parts(a, x, shape)
    s2 = st[0]
    attn = s2 * vq + (1 - s2) * vdc
    attn_dc = vdc + max(vq - vdc, 0.0) / max(t, 1)
    return Sig(a.go * attn + a.bo, 0.0, a.go * min(attn_dc, attn) + a.bo, a.bo + a.go * x.dcb * a.gv).clean(), \
        BOUND_ATTENTION


def mha_backward(a: AttentionMoments, d: Grad, x: Sig, shape: tuple[int, ...]) -> tuple[Grad, float]:
    t, qq, kq, vq, vdc, (s2, spread) = _mha_parts(a, x, shape)
    ga = d.scaled(a.go)  # at the attention output (before out_proj)
    gv = s2 * max(ga.g - ga.dc, 0.0) + ga.dc
    common = spread * ga.g * max(vq - vdc, 0.0)
    g = a.gv * gv + a.gq * common * kq + a.gk * common * qq
    return Grad(g, min(a.gv * ga.dc, g), min(a.gv * ga.dcb, g)), BOUND_ATTENTION
