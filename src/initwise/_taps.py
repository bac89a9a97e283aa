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
"""

from __future__ import annotations

import math

from torch import nn

__all__ = ["tap_factors", "pairs"]


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
                transposed: bool = False) -> tuple[float, float]:
    """``(t_in / nominal, t_out / nominal)`` for a convolution with ``kernel`` from ``in_shape`` to ``out_shape``
    (``(N, C, *spatial)``): the fraction of the fans' taps that read real input values, forward and backward.

    The nominal tap counts are those of :func:`initwise.fans`: ``prod(k)`` forward and ``prod(k / s)`` backward
    for a convolution, ``prod(k / s)`` forward and ``prod(k)`` backward for a transposed one. The padding comes
    from ``module`` (an ``nn`` convolution) or, for a functional one, from the shapes. A padding mode other than
    zeros reads real (reflected, replicated, wrapped) values at every tap: forward factor 1.
    """
    sd = len(kernel)
    if sd == 0 or len(in_shape) < sd + 2 or len(out_shape) < sd + 2:
        return 1.0, 1.0
    s = tuple(stride) or (1,) * sd
    d = tuple(dilation) or (1,) * sd
    pad = getattr(module, "padding", None)
    zeros = getattr(module, "padding_mode", "zeros") == "zeros"
    fwd = bwd = 1.0
    for i in range(sd):
        k, si, di = int(kernel[i]), int(s[i] if i < len(s) else s[-1]), int(d[i] if i < len(d) else d[-1])
        n_in, n_out = int(in_shape[2 + i]), int(out_shape[2 + i])
        if n_in <= 0 or n_out <= 0:
            return 1.0, 1.0
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
        fwd *= (t / n_out) / nominal_f
        bwd *= (t / n_in) / nominal_b
    return fwd, bwd
