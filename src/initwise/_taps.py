"""Kernel taps that land inside the input: the fans a zero-padded convolution has at one input size.

A convolution's nominal fan-in counts every tap of its kernel, but at the border of a zero-padded input some taps
read padding. Averaged over the output positions, ``E[y^2] = (C_in / groups) * t_in * E[w^2] * E[x^2]`` with
``t_in = T / L_out`` taps per output position, where ``T`` is the number of (output position, tap) pairs that read
a real input value; backward every input position receives ``t_out = T / L_in`` (tap, output) pairs:
``E[dx^2] = (C_out / groups) * t_out * E[w^2] * E[dy^2]``. Per spatial dim ``T_d`` counts the pairs
``(a, k)`` with ``0 <= a * stride - pad + k * dilation < L`` (``a`` an output position of a convolution, an input
position of a transposed one); the product over dims is ``T``. At 32 px a 3x3 conv keeps 96% of its taps, a
17x17 one 75%; a 3x3 conv on ResNet-18's last 2x2 map (a 48 px input) 44%: that is the 2.25x its forward was
over-predicted.

:func:`tap_factors` returns the two ratios ``effective / nominal`` that the propagation applies to the fans the
initializers use (the fans themselves stay the layer's definition: they do not depend on the input size).

The mean share holds for an input whose variance is even over positions (the example). Deeper in a chain of
stride-1 same-size padded convolutions the variance profile is ``B^d 1`` per dim (``B`` the band operator of the
kernel, ``d`` the convolutions passed): it sags at the borders, which then cut less of it. The share of the next
layer is ``r(d) = 1' B^(d+1) 1 / (k 1' B^d 1)``, rising from the mean share ``r(0)`` to ``B``'s principal
eigenvalue over ``k`` (3x3 at 16 px per dim: 0.958 at d = 0, 0.984 at d = 8, 0.989 settled). Over ESRGAN's ~35
convolutions at 32 px the mean share under-predicted the backward ~2x. :func:`chain_depths` counts ``d`` along
the longest path (forward from the inputs, backward from the outputs); a profile that mixes shorter paths (skips,
concatenations: a sum of ``B^j 1``, ``j <= d``) has its share between ``r(0)`` and ``r(d)`` (the ratio of sums
lies between the terms' ratios, and ``r`` rises with ``d``): the bound ``r(d) / r(0)``.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from torch import nn

__all__ = ["tap_factors", "pairs", "chain_share", "chain_depths", "constant_factors"]


def pairs(n_src: int, n_dst: int, stride: int, pad: int, k: int, dilation: int) -> int:
    """``#{(a, j): 0 <= a < n_src, 0 <= j < k, 0 <= a * stride - pad + j * dilation < n_dst}``."""
    total = 0
    for j in range(k):
        off = j * dilation - pad  # a * stride + off in [0, n_dst)
        lo = 0 if off >= 0 else (-off + stride - 1) // stride  # smallest a with a * stride + off >= 0
        hi = (n_dst - 1 - off) // stride if n_dst - 1 - off >= 0 else -1  # largest a with a * stride + off < n_dst
        hi = min(hi, n_src - 1)
        total += max(hi - lo + 1, 0)
    return total


def _pad_conv(n_in: int, n_out: int, s: int, k: int, d: int) -> int:
    """The symmetric padding that makes a convolution map ``n_in`` to ``n_out`` (the smallest that does)."""
    need = (n_out - 1) * s + d * (k - 1) + 1 - n_in  # 2 p >= need
    return max(math.ceil(need / 2), 0)


def _pad_transposed(n_in: int, n_out: int, s: int, k: int, d: int) -> int:
    """The padding of a transposed convolution from ``n_in`` to ``n_out`` (output padding takes the remainder)."""
    return max(((n_in - 1) * s + d * (k - 1) + 1 - n_out + 1) // 2, 0)


def tap_factors(module: nn.Module | None, kernel: tuple[int, ...], in_shape: tuple[int, ...],
                out_shape: tuple[int, ...], stride: tuple[int, ...] = (), dilation: tuple[int, ...] = (),
                transposed: bool = False, depth: tuple[int, int] = (0, 0)) -> tuple[float, float, float, float]:
    """``(t_in / nominal, t_out / nominal, forward bound, backward bound)`` for a convolution with ``kernel``
    from ``in_shape`` to ``out_shape`` (``(N, C, *spatial)``): the fraction of the fans' taps that read real
    input values, forward and backward.

    The nominal tap counts are those of :func:`initwise.fans`: ``prod(k)`` forward and ``prod(k / s)`` backward
    for a convolution, ``prod(k / s)`` forward and ``prod(k)`` backward for a transposed one. The padding comes
    from ``module`` (an ``nn`` convolution) or, for a functional one, from the shapes. A padding mode other than
    zeros reads real (reflected, replicated, wrapped) values at every tap: forward factor 1. ``depth``: the
    stride-1 same-size padded convolutions the input (forward) and the output's gradient (backward) passed
    (:func:`chain_depths`); for such a layer at depth ``d`` > 0 the share is :func:`chain_share`'s ``r(d)``, and
    the bound of that direction ``r(d) / r(0)`` (1.0 at depth 0).
    """
    sd = len(kernel)
    if sd == 0 or len(in_shape) < sd + 2 or len(out_shape) < sd + 2:
        return 1.0, 1.0, 1.0, 1.0
    s = tuple(stride) or (1,) * sd
    d = tuple(dilation) or (1,) * sd
    pad = getattr(module, "padding", None)
    zeros = getattr(module, "padding_mode", "zeros") == "zeros"
    fwd = bwd = bound_f = bound_b = 1.0
    for i in range(sd):
        k, si, di = int(kernel[i]), int(s[i] if i < len(s) else s[-1]), int(d[i] if i < len(d) else d[-1])
        n_in, n_out = int(in_shape[2 + i]), int(out_shape[2 + i])
        if n_in <= 0 or n_out <= 0:
            return 1.0, 1.0, 1.0, 1.0
        if isinstance(pad, tuple) and len(pad) == sd and not isinstance(pad[i], str):
            p = int(pad[i])
        else:  # 'same' / 'valid' strings, or a functional convolution: from the shapes
            p = (_pad_transposed if transposed else _pad_conv)(n_in, n_out, si, k, di)
        if transposed:
            t = pairs(n_in, n_out, si, p, k, di)
            nominal_f, nominal_b = k / si, k
        else:
            t = n_out * k if not zeros else pairs(n_out, n_in, si, p, k, di)
            nominal_f, nominal_b = k, k / si
        if zeros and not transposed and si == 1 and n_in == n_out and p > 0 and any(depth):
            r = chain_share(n_in, k, p, di, 64)
            fwd *= r[min(depth[0], 64)]
            bwd *= r[min(depth[1], 64)]
            bound_f *= r[min(depth[0], 64)] / r[0]
            bound_b *= r[min(depth[1], 64)] / r[0]
            continue
        fwd *= (t / n_out) / nominal_f
        bwd *= (t / n_in) / nominal_b
    return fwd, bwd, bound_f, bound_b


def constant_factors(module: nn.Module | None, kernel: tuple[int, ...], in_shape: tuple[int, ...],
                     out_shape: tuple[int, ...], stride: tuple[int, ...] = (),
                     dilation: tuple[int, ...] = ()) -> tuple[float, float]:
    """``(keep, gain)``: how a convolution moves the power of its input's per-sample, per-channel constant
    (the mean over positions) at the borders. With ``n_j`` the output positions where tap ``j`` reads a real
    value, a constant input ``c`` gives ``y_o = c sum_{j real at o} w_j``, whose mean over the ``P_out`` outputs
    is ``c sum_j w_j n_j / P_out``: in expectation over the weights its power is ``B / (A P_out)`` of what every
    position carries (``A = sum_j n_j``, ``B = sum_j n_j^2``; 1 on a map large against the kernel, 9/16 for a
    3x3 convolution on a 2x2 map): the rest varies over positions. Conversely the positional part (zero mean
    over the ``P_in`` input positions) leaves each tap's subset sum over ``n_j`` positions, of variance
    ``v n_j (P_in - n_j) / (P_in - 1)`` for independent positions: ``gain = (P_in A - B) / ((P_in - 1) A
    P_out)`` of it becomes the output's constant. Both relative to the layer's gain on the second moment."""
    sd = len(kernel)
    if sd == 0 or len(in_shape) < sd + 2 or len(out_shape) < sd + 2:
        return 1.0, 0.0
    s = tuple(stride) or (1,) * sd
    d = tuple(dilation) or (1,) * sd
    pad = getattr(module, "padding", None)
    zeros = getattr(module, "padding_mode", "zeros") == "zeros"
    a_tot = b_tot = 1.0
    p_in = p_out = 1
    for i in range(sd):
        k, si, di = int(kernel[i]), int(s[i] if i < len(s) else s[-1]), int(d[i] if i < len(d) else d[-1])
        n_in, n_out = int(in_shape[2 + i]), int(out_shape[2 + i])
        if n_in <= 0 or n_out <= 0:
            return 1.0, 0.0
        if isinstance(pad, tuple) and len(pad) == sd and not isinstance(pad[i], str):
            p = int(pad[i])
        else:
            p = _pad_conv(n_in, n_out, si, k, di)
        counts = [n_out if not zeros else pairs(n_out, n_in, si, p - j * di, 1, 1) for j in range(k)]
        a_tot *= sum(counts)
        b_tot *= sum(c * c for c in counts)
        p_in, p_out = p_in * n_in, p_out * n_out
    if a_tot <= 0:
        return 1.0, 0.0
    keep = b_tot / (a_tot * p_out)
    gain = (p_in * a_tot - b_tot) / ((p_in - 1) * a_tot * p_out) if p_in > 1 else 0.0
    return min(keep, 1.0), max(gain, 0.0)


@functools.lru_cache(maxsize=256)
def chain_share(n: int, k: int, pad: int, dilation: int, depth: int) -> tuple[float, ...]:
    """``r(0), ..., r(depth - 1)`` and last the settled share: the share of the taps of a stride-1 same-size
    convolution (``n`` positions, kernel ``k``, zero padding ``pad``) that read real values, for an input whose
    variance profile is ``B^d 1`` (``d`` such convolutions after an even input; module doc). ``r(0)`` is the
    mean share; the settled one is ``B``'s principal eigenvalue over ``k`` (:func:`_top_eigenvalue`)."""
    import torch

    def band(v: torch.Tensor) -> torch.Tensor:  # (B v)[o] = sum_j v[o - pad + j * dilation], in range
        out = torch.zeros_like(v)
        for j in range(k):
            off = j * dilation - pad
            lo, hi = max(0, -off), min(n, n - off)
            if hi > lo:
                out[lo:hi] += v[lo + off:hi + off]
        return out

    v = torch.ones(n, dtype=torch.float64)
    out = []
    for _ in range(depth):
        w = band(v)
        out.append(min(float(w.sum() / v.sum()) / k, 1.0))
        v = w / w.max()
    lam = min(_top_eigenvalue(n, k, pad, dilation) / k, 1.0)
    return (*out, max(lam, *out))


def _top_eigenvalue(n: int, k: int, pad: int, dilation: int) -> float:
    """The principal eigenvalue of the band operator ``B`` (``n`` positions, ``k`` taps)."""
    if k == 3 and pad == dilation:  # offsets -d, 0, d: d independent paths, B = I + a path's adjacency on each;
        # the longest path's top eigenvalue in closed form (no LAPACK call: its first use loads ~3 MiB of code
        # into a process whose init_ needs none of the predictions)
        return 1.0 + 2.0 * math.cos(math.pi / (-(-n // dilation) + 1))
    import torch

    b = torch.zeros(n, n, dtype=torch.float64)
    idx = torch.arange(n)
    for j in range(k):
        src = idx + j * dilation - pad
        ok = (src >= 0) & (src < n)
        b[idx[ok], src[ok]] = 1.0
    if 2 * pad == (k - 1) * dilation:  # centred: symmetric
        return float(torch.linalg.eigvalsh(b)[-1])
    return float(torch.linalg.eigvals(b).real.max())  # the Perron root is real and the largest


def chain_depths(nodes: list, convs: dict[str, nn.Module]) -> tuple[dict[int, int], dict[int, int]]:
    """For every node: how many stride-1 same-size zero-padded convolutions (``convs``: such layers by module
    name) lie on the longest path from an input to it (its output's profile, forward), and from it to an output
    (its output's gradient, backward). ``nodes`` in execution order (``Graph.nodes``)."""
    def counts(n: Any) -> bool:
        return n.kind == "layer" and n.module in convs and n.inputs and nodes[n.inputs[0]].shape[2:] == n.shape[2:]

    fwd: dict[int, int] = {}
    for n in nodes:
        d = max((fwd.get(i, 0) for i in n.inputs), default=0)
        fwd[n.id] = d + 1 if counts(n) else d
    bwd: dict[int, int] = {n.id: 0 for n in nodes}
    for n in reversed(nodes):
        d = bwd[n.id] + (1 if counts(n) else 0)
        for i in n.inputs:
            bwd[i] = max(bwd[i], d)
    return fwd, bwd
