"""Structured initializers: (delta-)orthogonal, identity (eye, dirac, nearest upsampling) and ICNR.

Same contract as :mod:`initwise._initializers` (in place under ``no_grad``, ``module=`` for the layer's groups,
padding and transposition, ``generator=``, float16 to float64, meta tensors validated and returned unchanged),
and the same argument checks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ._initializers import (Distribution, FansLike, Mode, _check_fits, _check_number, _check_tensor, resolve_fans,
                            variance_scaling_)

__all__ = ["icnr_", "identity_", "orthogonal_"]


_CONVT = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _groups(tensor: torch.Tensor, module: nn.Module | None, groups: int | None) -> int:
    g = groups if groups is not None else int(getattr(module, "groups", 1) or 1)
    if not isinstance(g, int) or g < 1 or tensor.shape[0] % g:
        raise ValueError(f"groups={g!r} must be a positive int dividing dim 0 of shape {tuple(tensor.shape)}")
    return g


def _semi_orthogonal(rows: int, cols: int, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """torch.nn.init.orthogonal_'s recipe: QR of a Gaussian matrix, signs fixed by diag(R)."""
    work = torch.float64 if like.dtype == torch.float64 else torch.float32
    flat = torch.empty(rows, cols, dtype=work, device=like.device).normal_(0, 1, generator=generator)
    if rows < cols:
        flat.t_()
    q, r = torch.linalg.qr(flat)
    q *= torch.diag(r, 0).sign()
    if rows < cols:
        q.t_()
    return q


def orthogonal_(tensor: torch.Tensor, gain: float = 1.0, generator: torch.Generator | None = None, *,
                module: nn.Module | None = None, groups: int | None = None,
                delta: bool | None = None) -> torch.Tensor:
    """(Semi-)orthogonal init: ``W W^T = gain^2 I`` (or ``W^T W``) (Saxe et al., 2014).

    For a 2-d tensor this is torch's ``orthogonal_`` (bit-equal for float32 with the same generator). For conv
    kernels (>= 3 dims) the default is the delta-orthogonal form (Xiao et al., 2018): zero everywhere but the
    centre tap ``k // 2``, which holds a per-group orthogonal ``(dim0/groups, dim1)`` matrix, so the layer is an
    isometry at stride 1. ``delta=False`` flattens like torch instead.
    """
    _check_tensor(tensor)
    g = _check_number(gain, "gain")
    if tensor.dim() < 2:
        raise ValueError(f"orthogonal_ needs a tensor with at least 2 dimensions, got shape {tuple(tensor.shape)}")
    ng = _groups(tensor, module, groups)
    _check_fits(tensor, g, f"gain={gain!r}")  # entries of a gain-scaled orthogonal matrix are at most |gain|
    use_delta = tensor.dim() >= 3 if delta is None else bool(delta)
    if tensor.is_meta:
        return tensor
    with torch.no_grad():
        if not use_delta:
            rows = tensor.shape[0]
            q = _semi_orthogonal(rows, tensor.numel() // rows, generator, tensor)
            return tensor.copy_(q.view_as(tensor).mul_(g))
        out = torch.zeros(tensor.shape, dtype=torch.float64 if tensor.dtype == torch.float64 else torch.float32,
                          device=tensor.device)
        per = tensor.shape[0] // ng
        centre = tuple(k // 2 for k in tensor.shape[2:])
        for i in range(ng):
            out[(slice(i * per, (i + 1) * per), slice(None), *centre)] = _semi_orthogonal(
                per, tensor.shape[1], generator, tensor)
        return tensor.copy_(out.mul_(g))


def _tap_indices(tensor: torch.Tensor, module: nn.Module | None, transposed: bool) -> list[list[int]]:
    """Kernel taps that make a conv (or a transposed conv) the identity (or nearest upsampling)."""
    kernel = tensor.shape[2:]
    n = len(kernel)
    stride = tuple(getattr(module, "stride", (1,) * n))
    pad = getattr(module, "padding", None)
    dil = tuple(getattr(module, "dilation", (1,) * n))
    taps: list[list[int]] = []
    for d, k in enumerate(kernel):
        if isinstance(pad, tuple):
            p = pad[d]
        elif pad == "same":
            p = dil[d] * (k - 1) // 2
        else:
            p = None
        if transposed:
            s = stride[d]
            first = p if p is not None else (k - s) // 2
            if first < 0 or first + s > k:
                raise ValueError(f"a transposed conv with kernel {k}, stride {s}, padding {p} along dim {d} "
                                 "cannot copy each input to its output block: identity_ needs padding + stride <= kernel")
            taps.append(list(range(first, first + s)))
        else:
            t = (p // dil[d]) if p is not None and p % dil[d] == 0 and p // dil[d] < k else k // 2
            taps.append([t])
    return taps


def identity_(tensor: torch.Tensor, gain: float = 1.0, generator: torch.Generator | None = None, *,
              module: nn.Module | None = None, groups: int | None = None,
              transposed: bool | None = None) -> torch.Tensor:
    """Identity init: ``eye`` for Linear, ``dirac`` for Conv (per group), nearest-upsampling for ConvTranspose.

    A Conv gets a single 1 per (group-local) channel at the tap that its padding aligns with the output
    (``k // 2`` without a module, as torch's ``dirac_``), so conv(x) = x at stride 1 and a subsampling of x at
    stride s. A ConvTranspose ``(in, out/g, *k)`` gets 1s at taps ``padding .. padding+stride-1``, so each input
    value is copied to its stride-sized output block: nearest-neighbour upsampling, the identity at stride 1.
    Channels beyond ``min(in, out)`` per group are zero. ``generator`` is accepted for a uniform signature.
    """
    _check_tensor(tensor)
    g = _check_number(gain, "gain")
    if tensor.dim() < 2:
        raise ValueError(f"identity_ needs a tensor with at least 2 dimensions, got shape {tuple(tensor.shape)}")
    _check_fits(tensor, g, f"gain={gain!r}")
    is_t = isinstance(module, _CONVT) if transposed is None else bool(transposed)
    ng = _groups(tensor, module, groups)
    taps = _tap_indices(tensor, module, is_t) if tensor.dim() > 2 else []
    if tensor.is_meta:
        return tensor
    with torch.no_grad():
        out = torch.zeros(tensor.shape, dtype=tensor.dtype, device=tensor.device)
        per = tensor.shape[0] // ng
        n = min(per, tensor.shape[1])
        idx = torch.arange(n, device=tensor.device)
        grid = torch.meshgrid(*[torch.tensor(t, device=tensor.device) for t in taps], indexing="ij") if taps else ()
        for i in range(ng):
            rows = i * per + idx
            if taps:
                sel = (rows.view(-1, *[1] * len(taps)), idx.view(-1, *[1] * len(taps)), *[t.unsqueeze(0) for t in grid])
                out[sel] = g
            else:
                out[rows, idx] = g
        return tensor.copy_(out)


def icnr_(tensor: torch.Tensor, upscale_factor: int = 2, scale: float = 1.0, mode: Mode = "fan_in",
          distribution: Distribution = "normal", generator: torch.Generator | None = None, *,
          module: nn.Module | None = None, fans: FansLike = None,
          init: Callable[[torch.Tensor], Any] | None = None) -> torch.Tensor:
    """ICNR for a conv feeding ``PixelShuffle(r)`` (Aitken et al., 2017): checkerboard-free at init.

    A sub-kernel ``(C, in, *k)`` is drawn by :func:`variance_scaling_` (with the full layer's fans) or by
    ``init(sub)``, and each output channel's kernel is repeated ``r^d`` times with ``repeat_interleave`` (PixelShuffle
    maps channel ``c*r^2 + i*r + j`` to channel c at offset (i, j)), so conv + shuffle equals conv + nearest
    upsampling.
    """
    _check_tensor(tensor)
    if isinstance(upscale_factor, bool) or not isinstance(upscale_factor, int) or upscale_factor < 1:
        raise ValueError(f"upscale_factor must be a positive int, got {upscale_factor!r}")
    if tensor.dim() < 3:
        raise ValueError(f"icnr_ needs a conv weight (out, in, *k), got shape {tuple(tensor.shape)}")
    rep = upscale_factor ** (tensor.dim() - 2)
    if tensor.shape[0] % rep:
        raise ValueError(f"dim 0 of shape {tuple(tensor.shape)} must be divisible by upscale_factor^{tensor.dim() - 2}"
                         f" = {rep} to feed PixelShuffle({upscale_factor})")
    full = resolve_fans(tensor, module, fans)
    if tensor.is_meta:
        return tensor
    with torch.no_grad():
        sub = torch.empty((tensor.shape[0] // rep, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
        if init is None:
            variance_scaling_(sub, scale, mode, distribution, fans=full, generator=generator)
        else:
            init(sub)
        return tensor.copy_(sub.repeat_interleave(rep, dim=0))
