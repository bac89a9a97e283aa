"""Propagation rules of Fourier transforms (``torch.fft``) and of products of spectra.

A spectrum is carried by the moments of the real signal it is the transform of: ``rfft2`` and ``irfft2`` (and
the 1-D and complex variants) pass a :class:`initwise._signal.Sig` and a :class:`initwise._signal.Grad`
unchanged (Parseval: with the unnormalized forward and ``1 / P`` inverse the round trip is the identity, and a
spectrum's scale by a constant is the signal's). Only ops whose spatial meaning is known are modelled in
between; any other consumer of a spectrum stays unknown (bound ``inf``).

A product of two spectra is a circular convolution of the two signals over the ``P`` transformed positions
(FFTformer's frequency-domain attention, ``irfft2(rfft2(q) * rfft2(k))``): ``y_i = sum_j a_j b_{i-j}``. With
``a = c_a + e_a`` (``c_a`` the block's constant, ``e_a`` its zero-sum rest) the constants multiply ``P``-fold
and the rest sums ``P`` products: ``E[y^2] = P^2 E[c_a^2] E[c_b^2] + P v_a v_b`` (the cross terms vanish:
``sum_j e_j = 0``). Its backward is the circular correlation of the gradient with the other operand, likewise:
``E[da^2] = P^2 E[c_d^2] E[c_b^2] + P (g - E[c_d^2]) v_b``. The operands are taken independent (different
channels of one layer) and the transformed block's constant is the finite-population mean of ``P`` of the
map's positions; approximate (:data:`BOUND_SPECTRAL`).
"""

from __future__ import annotations

import math

from ._signal import Grad, Sig, layout

__all__ = ["FFT_OPS", "spectral_source", "fft_size", "spectral_product_forward", "spectral_product_backward"]

FFT_FORWARD = frozenset(("fft_rfft2", "fft_fft2", "fft_rfft", "fft_fft"))
FFT_INVERSE = frozenset(("fft_irfft2", "fft_ifft2", "fft_irfft", "fft_ifft"))
FFT_OPS = FFT_FORWARD | FFT_INVERSE
BOUND_SPECTRAL = 1.5  # tests/test_rules_fft.py


def spectral_source(nodes, i: int, passes) -> int | None:
    """The forward-transform node whose spectrum reaches node ``i`` through value-moving ops (``passes``) and
    constant scales only, else None."""
    seen = 0
    while seen < 64:
        n = nodes[i]
        if n.op in FFT_FORWARD:
            return n.id
        if n.inputs and (n.kind == "scale" and n.factor is not None or n.kind == "pass" and n.op in passes):
            i, seen = n.inputs[0], seen + 1
            continue
        return None
    return None


def fft_size(nodes, fft_id: int) -> int | None:
    """``P``: how many positions the forward transform at ``fft_id`` mixes (its input's last 2 dims for the
    2-D transforms, the last for the 1-D ones)."""
    n = nodes[fft_id]
    if not n.inputs:
        return None
    shape = nodes[n.inputs[0]].shape
    k = 2 if n.op.endswith("2") else 1
    if len(shape) < k + 1:
        return None
    return math.prod(shape[-k:])


def _block(q: float, dc: float, p_block: int, shape: tuple[int, ...]) -> tuple[float, float]:
    """(constant power, rest) of a block of ``p_block`` of the map's positions: the block's mean keeps ``dc``
    and ``(P - k) / (k (P - 1))`` of the positional rest (finite population, positions exchangeable)."""
    p = layout(shape)[2]
    rest = max(q - dc, 0.0)
    c = dc if p_block >= p else dc + rest * (p - p_block) / (p_block * max(p - 1.0, 1.0))
    return min(c, q), max(q - c, 0.0)


def spectral_product_forward(a: Sig, b: Sig, p: int, shape: tuple[int, ...]) -> tuple[Sig, float]:
    """The circular convolution of two signals over ``p`` positions (module docstring); ``shape`` is the
    signals' shape before the transform (where their constants were measured)."""
    ca, va = _block(a.q, a.dc, p, shape)
    cb, vb = _block(b.q, b.dc, p, shape)
    const = p * p * ca * cb
    q = const + p * va * vb
    return Sig(q, 0.0, const, min(p * p * a.dcb * b.dcb, const)).clean(), BOUND_SPECTRAL


def spectral_product_backward(d: Grad, a: Sig, b: Sig, p: int, shape: tuple[int, ...]) -> tuple[list[Grad], float]:
    """The gradients of both operands (module docstring)."""
    cd, vd = _block(d.g, d.dc, p, shape)
    out = []
    for other in (b, a):
        co, vo = _block(other.q, other.dc, p, shape)
        const = p * p * cd * co
        g = const + p * vd * vo
        out.append(Grad(g, const, min(p * p * d.dcb * other.dcb, const)))
    return out, BOUND_SPECTRAL
