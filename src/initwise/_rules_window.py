"""A signal joined with its own average pooling: ``pool(x) - x`` (PoolFormer's token mixer), ``x - pool(x)``,
``x + pool(x)`` (a stride-1 pooling that keeps the map's size).

The two operands are not independent, so the join's rule for independent inputs (variances add) is wrong: for
``y = a x + b P x`` (``a, b = +-1``, ``P`` the pooling's averaging matrix)

    ``E[y^2] = a^2 E[x^2] + b^2 E[(P x)^2] + 2 a b E[x . P x]``

and on a small map, where every window covers it (PoolFormer's 2x2 stage at a 32-pixel input), ``P x`` is the
map's mean, so ``pool(x) - x`` keeps ``q - dc`` (the removed constant: 0.13 of the input's 1.0 there, where
independent operands gave 1.87, 14x; the norms after it then divided the gradient by that, 45x at the first
blocks). Likewise the gradient ``dx = a dy + b P^T dy``.

The moments come from the pair moments of the map's positions, ``C(i, j) = c0 + (q - c0) rho^|i - j|_1``
(``rho = Sig.near`` with geometric lags, :mod:`initwise._rules_near`; ``c0`` chosen so that the mean over all
pairs is the measured ``dc``), with each position's window clipped at the borders (padding counted or not, as
the pooling does). Window and correlation are products over the spatial dims, so every sum factorizes. Exact
when every window covers its whole dim (``P`` is then the mean, whatever the correlation); else approximate
(``BOUND_WINDOW_JOIN``, measured in tests/test_rules_window.py).
"""

from __future__ import annotations

import functools

from ._rules_layer import _shared
from ._signal import Grad, Sig, layout

__all__ = ["BOUND_BRANCH_GRAD", "BOUND_WINDOW_JOIN", "branch_cross", "branch_forward", "pooled_branch", "pooled_pair",
           "window_join_backward", "window_join_forward"]

BOUND_WINDOW_JOIN = 1.5  # the largest ratio seen in tests/test_rules_window.py (smooth maps, borders), rounded up
# PoolFormer's residual join on maps its windows do not cover: the gradient there is under-stated up to 7.4x
# (tests/test_rules_window.py, four blocks on a smooth 16x16 map, 4 draws; 1.7x on a 4x4 map), rounded up
BOUND_BRANCH_GRAD = 8.0


def pooled_pair(nodes, n, exact_pass) -> tuple[int, int, tuple[float, float]] | None:
    """``(pool, skip, (a, b))`` when the add/sub node ``n`` joins a stride-1, size-keeping average pooling (input
    index ``pool``) with the very tensor it pools (input index ``skip``, through value-preserving views), and
    the signs ``y = a skip + b pool``; else None."""
    if n.kind not in ("add", "sub") or len(n.inputs) != 2:
        return None

    def root(i: int) -> int:
        while nodes[i].kind == "pass" and nodes[i].op in exact_pass and len(nodes[i].inputs) == 1 \
                and tuple(nodes[nodes[i].inputs[0]].shape) == tuple(nodes[i].shape):
            i = nodes[i].inputs[0]
        return i

    for j in (0, 1):
        p = nodes[n.inputs[j]]
        if p.window is None or not p.inputs or not p.dims or tuple(p.shape) != tuple(n.shape) \
                or tuple(nodes[p.inputs[0]].shape) != tuple(p.shape) or any(s != 1 for s in p.window[0]):
            continue
        if len(p.shape) < 3 or len(p.dims) != len(p.shape) - 2:
            continue
        if root(p.inputs[0]) == root(n.inputs[1 - j]):
            b = -1.0 if n.kind == "sub" and j == 1 else 1.0
            a = -1.0 if n.kind == "sub" and j == 0 else 1.0
            return j, 1 - j, (a, b)
    return None


@functools.lru_cache(maxsize=1024)
def _dim_terms(size: int, kernel: int, pad: int, include_pad: bool, rho: float) -> tuple[float, ...]:
    """Per spatial dim, means over its positions ``i``: the window's weight sum ``T``, its square, the weighted
    pair correlation ``Q = sum_{a, b} w_a w_b rho^|a - b|``, the weighted correlation with the centre
    ``R = sum_a w_a rho^|i - a|``, the mean pair correlation over the whole dim ``M`` (diagonal included), and
    whether every window covers the whole dim."""
    t = t2 = qq = rr = 0.0
    full = True
    for i in range(size):
        lo, hi = max(0, i - pad), min(size - 1, i - pad + kernel - 1)
        cnt = hi - lo + 1
        full = full and cnt == size
        div = kernel if include_pad else cnt
        t += cnt / div
        t2 += (cnt / div) ** 2
        qq += sum(rho ** abs(u - v) for u in range(lo, hi + 1) for v in range(lo, hi + 1)) / (div * div)
        rr += sum(rho ** abs(i - u) for u in range(lo, hi + 1)) / div
    m = sum(rho ** abs(u - v) for u in range(size) for v in range(size)) / (size * size)
    return t / size, t2 / size, qq / size, rr / size, m, float(full)


def _terms(shape, dims, window, rho: float) -> tuple[float, float, float, float, float, bool]:
    """:func:`_dim_terms` multiplied over the spatial dims of ``shape`` (``(N, C, *spatial)``)."""
    _, pads, incl = window
    out = [1.0] * 5
    full = True
    for size, k, p in zip(shape[2:], dims, pads):
        d = _dim_terms(int(size), int(k), int(p), bool(incl), float(rho))
        out = [o * v for o, v in zip(out, d[:5])]
        full = full and bool(d[5])
    return (*out, full)


def _moments(q: float, dc: float, terms) -> tuple[float, float]:
    """``(E[(P x)^2], E[x . P x])`` per element for positions with pair moments ``c0 + (q - c0) rho^d``."""
    t, t2, qq, rr, m, _ = terms
    c0 = (dc - q * m) / (1.0 - m) if m < 1.0 else q
    c0 = min(max(c0, -q), q)
    return c0 * t2 + (q - c0) * qq, c0 * t + (q - c0) * rr


def window_join_forward(x: Sig, shape, dims, window, signs) -> tuple[Sig, float]:
    """``y = a x + b P x`` for ``x`` of moments ``x`` (``shape``: the map's; ``dims``, ``window``: the pooling's
    kernel and ``Node.window``)."""
    a, b = signs
    terms = _terms(shape, dims, window, max(x.near, 0.0))
    pp, xp = _moments(x.q, x.dc, terms)
    q = a * a * x.q + b * b * pp + 2 * a * b * xp
    u = terms[0]  # the pooled map's spatial mean is u times the input's (each window's weights sum to u on average)
    c = (a + b * u) ** 2
    return Sig(max(q, 0.0), (a + b * u) * x.mean, c * x.dc, c * x.dcb).clean(), 1.0 if terms[5] else BOUND_WINDOW_JOIN


def window_join_backward(d: Grad, shape, dims, window, signs, pooled: Grad) -> tuple[Grad, float]:
    """What the skip operand receives so that, with ``pooled`` (what the pooling's own backward hands it for
    ``d``), the input's gradient is ``a dy + b P^T dy``: ``E = a^2 g + b^2 E[(P^T dy)^2] + 2 a b E[dy . P dy]``
    (the gradient's positions independent besides its constant ``dc``; ``P^T dy`` taken with ``P``'s moments)."""
    a, b = signs
    terms = _terms(shape, dims, window, 0.0)
    n, _, p = layout(tuple(shape))
    pp, xp = _moments(d.g, d.dc, terms) if p > 1 else (d.g, d.g)
    g = a * a * d.g + b * b * pp + 2 * a * b * xp
    c = (a + b * terms[0]) ** 2
    total = Grad(max(g, 0.0), min(c * d.dc, max(g, 0.0)), min(c * d.dcb, max(g, 0.0)))
    bound = 1.0 if terms[5] else BOUND_WINDOW_JOIN
    return Grad(total.g - pooled.g, total.dc - pooled.dc, total.dcb - pooled.dcb), bound


# ---------------------------------------------------------------- the residual join around a pooling token mixer


def _walk(nodes, i: int, exact_pass) -> tuple[int, float]:
    """``(root, c)``: node ``i``'s value is ``c`` times ``root``'s, through value-preserving views and constant
    scales."""
    c = 1.0
    while True:
        m = nodes[i]
        if len(m.inputs) == 1 and tuple(nodes[m.inputs[0]].shape) == tuple(m.shape) and (
                m.kind == "pass" and m.op in exact_pass or m.kind == "scale" and m.factor is not None):
            c *= m.factor if m.kind == "scale" else 1.0
            i = m.inputs[0]
            continue
        return i, c


def _scalar_norm(nm) -> bool:
    """A norm that, at its parameters' values, multiplies each sample by one number (after removing the sample's
    mean): statistics over every channel and position (GroupNorm with one group, a LayerNorm over C, H, W), a
    constant gamma (``E[gamma^2] = E[gamma]^2``) and no beta."""
    per_sample = nm.kind == "group" and nm.groups == 1 or nm.kind == "layer" and nm.over_positions
    return per_sample and nm.beta_ms == 0.0 and abs(nm.gamma_ms - nm.gamma_mean ** 2) <= 1e-9 * max(nm.gamma_ms, 1e-30)


def pooled_branch(nodes, n, exact_pass, norm_of) -> tuple[int, int, float, float, int, int] | None:
    """PoolFormer's residual join ``y = r x + c (a N(x) + b P N(x))`` (``N`` a per-sample norm of ``x`` itself,
    :func:`_scalar_norm`; the bracket a :func:`pooled_pair`): no drawn weight lies between the fork and the join,
    so its operands are correlated. Returns ``(skip index, root, r, c, pair node, norm node)`` or None."""
    if n.kind != "add" or len(n.inputs) != 2:
        return None
    for j in (0, 1):
        p_id, c = _walk(nodes, n.inputs[1 - j], exact_pass)
        pair = nodes[p_id]
        pp = pooled_pair(nodes, pair, exact_pass)
        if pp is None or tuple(pair.shape) != tuple(n.shape):
            continue
        m_id, c0 = _walk(nodes, pair.inputs[pp[1]], exact_pass)
        m = nodes[m_id]
        if m.kind != "norm" or len(m.inputs) != 1 or c0 != 1.0 or not _scalar_norm(norm_of(m)):
            continue
        root, r = _walk(nodes, n.inputs[j], exact_pass)
        root_m, r0 = _walk(nodes, m.inputs[0], exact_pass)
        if root == root_m and r0 == 1.0 and tuple(nodes[root].shape) == tuple(n.shape):
            return j, root, r, c, p_id, m_id
    return None


def _pieces(nodes, found, exact_pass, x: Sig, nm):
    """``(A, B, r, c lambda, a, b)`` of ``y = A x + B P x`` for :func:`pooled_branch`'s ``found`` and the pooling
    node, with the norm's per-sample factor ``lambda = gamma / sqrt(var + eps)`` (``var``: the variance over its
    statistics set, as the norm's rule takes it)."""
    _, root, r, c, p_id, _ = found
    pool, _, (a, b) = pooled_pair(nodes, nodes[p_id], exact_pass)
    var = max(_shared(nm, x, tuple(nodes[root].shape))[0], 0.0)
    lam = nm.gamma_mean / (var + nm.eps) ** 0.5 if var + nm.eps > 0 else 0.0
    return (r + c * a * lam, c * b * lam, r, c * lam, a, b), nodes[nodes[p_id].inputs[pool]]


def branch_forward(nodes, found, exact_pass, x: Sig, nm, shape) -> tuple[Sig, float]:
    """:func:`pooled_branch`'s join: ``y = A x + B P x`` with ``A = r + c a lambda``, ``B = c b lambda`` (the
    sample's mean, which the norm removes, is kept by ``P``'s averaging and cancels in ``a + b = 0``); approximate
    (``lambda`` is one per sample, taken at its mean)."""
    (big_a, big_b, *_), pn = _pieces(nodes, found, exact_pass, x, nm)
    out, _ = window_join_forward(x, shape, pn.dims, pn.window, (big_a, big_b))
    return out, BOUND_WINDOW_JOIN


def branch_cross(nodes, found, exact_pass, x: Sig, nm, d: Grad, shape) -> tuple[Grad, float]:
    """The cross term the separate paths miss at the fork: ``dx = r dy + c lambda (a dy + b P^T dy)`` reaches
    ``x`` along the skip (``r^2 E[dy^2]``) and the branch (through the pooling and the norm) as if independent;
    their cross term is ``2 r c lambda E[dy . (a dy + b P dy)]`` (the constant parts with the pooled map's weight
    ``u``). The gradient's positions are taken independent besides its constant: where a window does not cover
    the map, the poolings downstream (``P^T`` of the blocks after) correlate neighbouring gradients and the
    gradient is under-stated (``BOUND_BRANCH_GRAD``); where every window covers it, ``BOUND_WINDOW_JOIN``."""
    (_, _, r, cl, a, b), pn = _pieces(nodes, found, exact_pass, x, nm)
    terms = _terms(shape, pn.dims, pn.window, 0.0)
    _, xp = _moments(d.g, d.dc, terms) if layout(tuple(shape))[2] > 1 else (d.g, d.g)
    k, u = 2.0 * r * cl, terms[0]
    cross = Grad(k * (a * d.g + b * xp), k * (a + b * u) * d.dc, k * (a + b * u) * d.dcb)
    return cross, BOUND_WINDOW_JOIN if terms[5] else BOUND_BRANCH_GRAD
