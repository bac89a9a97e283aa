"""Structured kernels a model's own init wrote: weights that are not random draws (reads values, changes nothing).

Some models set chosen weights to a fixed kernel in their constructor: LapSRN's and FCN's transposed convolutions
start as bilinear upsampling, RepVGG-style and ZerO-style nets start convolutions as the identity (``dirac_``,
``eye_``), a box filter starts as an average. Such a kernel is part of the architecture's design (an upsampler that
already upsamples, a path that already passes its input) and redrawing it at random throws that away: on the fifth
validation set's LapSRN-lite every candidate that redrew its bilinear transposed convs lost 1.3-6 dB to the model's
own init (docs/evidence.md, "Seventh session").

A weight is taken for structured when it is not all zero and is a scaled identity (``dirac_``/``eye_``), a
bilinear upsampling filter in every (out, in) slice, or, with at least ``MIN_ELEMENTS`` elements, holds at most
4 distinct values or one per ``STRUCTURE_RATIO`` elements (a Gaussian or uniform draw in float32 has as many
distinct values as elements, up to a few coincidences per million). All-zero weights are not structured: they are
the model's zero-init, which the health check handles (``_advise_evidence.kept_zeros``).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["structured_weights", "kernel_kind", "describe_kernel", "STRUCTURE_RATIO", "MIN_ELEMENTS"]

STRUCTURE_RATIO = 16  # at most numel / 16 distinct values
MIN_ELEMENTS = 16  # smaller weights (a 1x1 conv of 2 -> 3 channels) cannot be told from a draw by this count
_PEEK = 4096  # distinct values are counted on the first elements first: a draw is rejected without a full sort
_FEW = 4  # a kernel of 4 or fewer distinct values is structured at any size (a 4x4 bilinear filter has 3)


def _distinct(t: torch.Tensor) -> int:
    return int(torch.unique(t).numel())


def _structured(w: torch.Tensor) -> bool:
    flat = w.detach().reshape(-1)
    n = flat.numel()
    if n < 2 or flat.is_meta or not flat.is_floating_point():
        return False
    head = flat[:_PEEK]
    if _distinct(head) > max(_FEW, head.numel() // STRUCTURE_RATIO):
        return False  # a draw: rejected on its first elements, without sorting the whole weight
    if not bool(flat.ne(0).any()):
        return False  # zero-init: not a kernel
    if _is_dirac(w) or _is_bilinear(w):
        return True
    return n >= MIN_ELEMENTS and _distinct(flat) <= max(_FEW, n // STRUCTURE_RATIO)


def _is_dirac(w: torch.Tensor) -> bool:
    """Every nonzero entry, all of one value, at the spatial centre with output index == input index (``dirac_``
    / ``eye_`` at any scale, per group), and some entry zero."""
    if w.dim() < 2 or bool(w.ne(0).all()) or _distinct(w[w.ne(0)]) != 1:
        return False
    out, inp = w.shape[:2]
    centre = tuple(k // 2 for k in w.shape[2:])
    ref = torch.zeros_like(w)
    for o in range(out):
        ref[(o, o % inp) + centre] = 1
    nz = w.ne(0)
    return bool(nz.any()) and bool((nz & ref.eq(0)).sum() == 0)


def _is_bilinear(w: torch.Tensor) -> bool:
    """Every nonzero (out, in) slice of a 2-D kernel is the same separable bilinear upsampling filter (up to scale),
    as ``get_upsample_filter`` / FCN's ``bilinear_kernel`` write it."""
    if w.dim() != 4 or w.shape[2] != w.shape[3] or w.shape[2] < 2:
        return False
    size = w.shape[2]
    factor = (size + 1) // 2
    centre = factor - 1 if size % 2 == 1 else factor - 0.5
    og = torch.arange(size, dtype=torch.float64)
    f = 1 - (og - centre).abs() / factor
    ref = f[:, None] * f[None, :]
    slices = w.detach().double().reshape(-1, size, size)
    nz = slices.abs().flatten(1).amax(1) > 0
    if not bool(nz.any()):
        return False
    s = slices[nz]
    scale = s[:, size // 2, size // 2] / ref[size // 2, size // 2]
    return bool(torch.allclose(s, scale[:, None, None] * ref, rtol=1e-5, atol=1e-7))


def describe_kernel(w: torch.Tensor) -> str:
    """A few words on what a structured weight is: ``"identity (dirac)"``, ``"bilinear upsampling"``, or the count
    of its distinct values."""
    with torch.no_grad():
        if _is_dirac(w):
            return "identity (dirac/eye)"
        if _is_bilinear(w):
            return "bilinear upsampling"
        return f"a fixed kernel of {torch.unique(w.detach()).numel()} distinct values"


def kernel_kind(w: torch.Tensor) -> str | None:
    """:func:`describe_kernel`'s words when ``w`` holds a structured kernel (module docstring), else None."""
    with torch.no_grad():
        return describe_kernel(w) if _structured(w) else None


def structured_weights(model: nn.Module, names: Iterable[str] | None = None) -> dict[str, str]:
    """The weights of ``model`` (or only those named in ``names``) that its current values show to be a structured
    kernel (module docstring), by parameter name, each with :func:`describe_kernel`'s words.

    Example:
        >>> up = nn.ConvTranspose2d(4, 4, 4, stride=2, padding=1, bias=False)
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), up)
        >>> with torch.no_grad():
        ...     f = torch.tensor([0.25, 0.75, 0.75, 0.25])
        ...     _ = up.weight.copy_((f[:, None] * f[None, :]).expand(4, 4, 4, 4))
        >>> structured_weights(net)
        {'2.weight': 'bilinear upsampling'}
    """
    wanted = None if names is None else set(names)
    found: dict[str, str] = {}
    for name, p in model.named_parameters():
        if p.dim() < 2 or (wanted is not None and name not in wanted):
            continue
        kind = kernel_kind(p)
        if kind is not None:
            found[name] = kind
    return found
