"""Tensor-level initializers, drop-in compatible with ``torch.nn.init``, built on layer-aware fans.

Every variance-preserving initializer is a one-line special case of :func:`variance_scaling_`
(as JAX's ``glorot_uniform = variance_scaling(1.0, "fan_avg", "uniform")``). All of them:

- mutate in place under ``torch.no_grad()`` and return the tensor (torch's contract);
- take ``module=`` (the layer that owns the tensor) and then use that layer's *effective* fans (stride,
  groups and transposition accounted for: see :func:`initwise.fans`); without it, torch's shape-only fans
  (``size(1) * k``, ``size(0) * k``); ``fans=`` overrides both;
- take ``generator=`` and are bit-reproducible with it;
- accept float16, bfloat16, float32 and float64 tensors (sampling happens in float32 or float64 where torch's
  own kernels would round badly, e.g. the truncated normal);
- on meta tensors, validate their arguments and return the tensor unchanged (there is no data to fill).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import nn

from ._fans import Fans, fans as layer_fans, tensor_fans
from ._gains import gain as activation_gain

__all__ = [
    "variance_scaling_", "kaiming_normal_", "kaiming_uniform_", "xavier_normal_", "xavier_uniform_",
    "lecun_normal_", "lecun_uniform_", "orthogonal_", "identity_", "icnr_", "truncated_normal_std",
]

Mode = Literal["fan_in", "fan_out", "fan_avg"]
Distribution = Literal["normal", "truncated_normal", "uniform"]
_MODES = ("fan_in", "fan_out", "fan_avg")
_DISTRIBUTIONS = ("normal", "truncated_normal", "uniform")
FansLike = Fans | tuple[float, float] | None


def truncated_normal_std(bound: float = 2.0) -> float:
    """Std of N(0, 1) truncated to ``[-bound, bound]``: ``sqrt(1 - 2 b phi(b) / (2 Phi(b) - 1))``.

    ``truncated_normal_std(2.0) = 0.8796256610342398`` (the constant JAX and TF divide by).
    """
    mass = math.erf(bound / math.sqrt(2.0))
    density = math.exp(-bound * bound / 2) / math.sqrt(2 * math.pi)
    return math.sqrt(1.0 - 2.0 * bound * density / mass)


def _check_tensor(tensor: Any, what: str = "tensor") -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(tensor).__name__}")
    if not tensor.is_floating_point():
        raise TypeError(
            f"{what} has dtype {tensor.dtype}; initializers need a floating dtype "
            "(float16, bfloat16, float32, float64)"
        )
    if tensor.numel() == 0:
        raise ValueError(f"{what} has zero elements (shape {tuple(tensor.shape)}): nothing to initialize")


def _check_number(value: Any, what: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise ValueError(f"{what} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
    return v


# a N(0, 1) draw beyond 10 has probability ~1.5e-23: a normal fill whose std * 10 is finite in the dtype never
# overflows in practice; uniform draws reach sqrt(3) std, truncated ones bound * std / truncated_normal_std(bound)
_NORMAL_PEAK = 10.0


def _check_fits(tensor: torch.Tensor, peak: float, what: str) -> None:
    """A ValueError naming ``what`` when values of magnitude ``peak`` are not finite in ``tensor``'s dtype."""
    top = torch.finfo(tensor.dtype).max
    if not math.isfinite(peak) or peak > top:
        raise ValueError(f"{what} is too large for {tensor.dtype}: the values would reach {peak:.3g}, beyond its "
                         f"largest finite value {top:.3g} (they would be filled with inf)")


def _param_name(module: nn.Module, tensor: torch.Tensor) -> str:
    for name, p in module.named_parameters(recurse=False):
        if p is tensor or (p.shape == tensor.shape and not p.is_meta and not tensor.is_meta
                           and p.data_ptr() == tensor.data_ptr()):
            return name
    names = [n for n, _ in module.named_parameters(recurse=False)]
    raise ValueError(
        f"tensor of shape {tuple(tensor.shape)} is not a parameter of the given {type(module).__name__} "
        f"(its parameters: {', '.join(names) or 'none'})"
    )


def resolve_fans(tensor: torch.Tensor, module: nn.Module | None = None, fans: FansLike = None) -> Fans:
    """The fans an initializer uses: ``fans`` if given, else the owning ``module``'s, else the shape's."""
    if fans is not None:
        if isinstance(fans, Fans):
            return fans
        if isinstance(fans, Sequence) and len(fans) == 2:
            fi = _check_number(fans[0], "fans[0] (fan_in)", positive=True)
            fo = _check_number(fans[1], "fans[1] (fan_out)", positive=True)
            return Fans(fi, fo, fi, fo, fi, fo, "given")
        raise TypeError(f"fans must be a Fans object or a (fan_in, fan_out) pair, got {fans!r}")
    if module is not None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
        return layer_fans(module, _param_name(module, tensor))
    return tensor_fans(tensor)


def variance_scaling_(
    tensor: torch.Tensor,
    scale: float = 1.0,
    mode: Mode = "fan_in",
    distribution: Distribution = "normal",
    *,
    module: nn.Module | None = None,
    fans: FansLike = None,
    generator: torch.Generator | None = None,
    bound: float = 2.0,
) -> torch.Tensor:
    """Fill ``tensor`` with zero-mean values of variance ``scale / fan``.

    ``fan`` is the effective fan_in, fan_out or their mean (``mode``) of the layer given by ``module=``
    (stride, groups, transposition and packing accounted for), else of the tensor's shape as torch reads it.
    Distributions: ``"normal"`` N(0, std^2); ``"uniform"`` U(-sqrt(3) std, sqrt(3) std);
    ``"truncated_normal"``: std is the std *after* truncation at ``+-bound`` standard deviations
    (sampled by the inverse CDF in float32/64, so no pile-up at the bounds in bfloat16/float16).

    Example:
        >>> conv = nn.Conv2d(16, 16, 3, groups=16)
        >>> w = variance_scaling_(conv.weight, 2.0, "fan_out", module=conv)   # std = sqrt(2 / 9)
    """
    return _variance_scaling(tensor, scale, mode, distribution, module=module, fans=fans, generator=generator,
                             bound=bound, what="scale")


def _variance_scaling(tensor: torch.Tensor, scale: float, mode: Mode, distribution: Distribution, *,
                      module: nn.Module | None, fans: FansLike, generator: torch.Generator | None, bound: float,
                      what: str) -> torch.Tensor:
    """:func:`variance_scaling_`; ``what`` names the user's option in errors (``scale``, or ``gain=...``)."""
    std, bound = _scaling_std(tensor, scale, mode, distribution, module=module, fans=fans, bound=bound, what=what)
    if tensor.is_meta:
        return tensor
    with torch.no_grad():
        if distribution in ("normal", "uniform"):
            return draw_scaled(tensor, distribution, std, generator)
        reach = min(bound, _NORMAL_PEAK)
        work = torch.float64 if tensor.dtype == torch.float64 else torch.float32
        lo = 0.5 * (1.0 + math.erf(-bound / math.sqrt(2.0)))
        u = torch.empty(tensor.shape, dtype=work, device=tensor.device).uniform_(lo, 1.0 - lo, generator=generator)
        z = torch.special.ndtri(u).clamp_(-reach, reach)
        return tensor.copy_(z.mul_(std / truncated_normal_std(bound)))


def draw_scaled(tensor: torch.Tensor, distribution: str, std: float, generator: torch.Generator | None) -> torch.Tensor:
    """The one torch call of a zero-mean normal or uniform draw of standard deviation ``std``, in place (no checks:
    :func:`_scaling_std` makes them)."""
    if distribution == "normal":
        return tensor.normal_(0.0, std, generator=generator)
    limit = math.sqrt(3.0) * std
    return tensor.uniform_(-limit, limit, generator=generator)


def _scaling_std(tensor: torch.Tensor, scale: float, mode: Mode, distribution: Distribution, *,
                 module: nn.Module | None, fans: FansLike, bound: float, what: str) -> tuple[float, float]:
    """Every check of :func:`_variance_scaling` (the errors a call would raise) and the ``(std, bound)`` it draws
    with, drawing nothing: validation and the draw itself (:mod:`initwise._apply`) use the same arithmetic."""
    _check_tensor(tensor)
    if what == "scale":
        scale = _check_number(scale, "scale")
    if mode not in _MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(_MODES)}")
    if distribution not in _DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {distribution!r}; valid: {', '.join(_DISTRIBUTIONS)}")
    bound = _check_number(bound, "bound", positive=True)
    f = resolve_fans(tensor, module, fans)
    if mode == "fan_avg":
        # torch's xavier expression gain * sqrt(2 / (fan_in + fan_out)) (sqrt(g * g) == g exactly in IEEE
        # arithmetic), so that xavier_* stays bit-equal to torch.nn.init's for the same generator
        std = math.sqrt(scale) * math.sqrt(2.0 / (f.fan_in + f.fan_out))
    else:
        std = math.sqrt(scale) / math.sqrt(f.get(mode))
    reach = min(bound, _NORMAL_PEAK)  # a truncation beyond 10 std is no truncation in any float dtype
    peak = std * {"normal": _NORMAL_PEAK, "uniform": math.sqrt(3.0)}.get(distribution,
                                                                          reach / truncated_normal_std(bound))
    _check_fits(tensor, peak, f"{what}={scale!r}" if what == "scale" else what)
    return std, bound


def _kaiming_gain(nonlinearity: Any, a: float) -> float:
    name = nonlinearity.lower() if isinstance(nonlinearity, str) else None
    if name in ("leaky_relu", "prelu", "leakyrelu"):
        return activation_gain(name, param=a)
    return activation_gain(nonlinearity)


def kaiming_normal_(
    tensor: torch.Tensor, a: float = 0, mode: Mode = "fan_in", nonlinearity: Any = "leaky_relu",
    generator: torch.Generator | None = None, *, module: nn.Module | None = None, fans: FansLike = None,
) -> torch.Tensor:
    """He normal: std = gain / sqrt(fan) (He et al., 2015), with effective fans when ``module`` is given.

    ``nonlinearity`` is the activation *after* the layer: a name, module, class or callable; the gain is
    ``1/sqrt(E[phi(z)^2])`` (:func:`initwise.gain`), equal to torch's for relu/leaky_relu/linear and computed
    for the rest (tanh 1.5925 where torch uses 5/3). With a Linear (or no module) this is bit-equal to
    ``torch.nn.init.kaiming_normal_`` for the same generator.

    Example:
        >>> lin = nn.Linear(64, 32)
        >>> _ = kaiming_normal_(lin.weight, nonlinearity="relu", module=lin)
    """
    g = _kaiming_gain(nonlinearity, a)
    return _variance_scaling(tensor, g * g, mode, "normal", module=module, fans=fans, generator=generator,
                             bound=2.0, what=f"the gain {g:.4g} of nonlinearity={nonlinearity!r}")


def kaiming_uniform_(
    tensor: torch.Tensor, a: float = 0, mode: Mode = "fan_in", nonlinearity: Any = "leaky_relu",
    generator: torch.Generator | None = None, *, module: nn.Module | None = None, fans: FansLike = None,
) -> torch.Tensor:
    """He uniform: U(-b, b), b = gain * sqrt(3 / fan); see :func:`kaiming_normal_`."""
    g = _kaiming_gain(nonlinearity, a)
    return _variance_scaling(tensor, g * g, mode, "uniform", module=module, fans=fans, generator=generator,
                             bound=2.0, what=f"the gain {g:.4g} of nonlinearity={nonlinearity!r}")


def xavier_normal_(tensor: torch.Tensor, gain: float = 1.0, generator: torch.Generator | None = None, *,
                   module: nn.Module | None = None, fans: FansLike = None) -> torch.Tensor:
    """Glorot normal: std = gain * sqrt(2 / (fan_in + fan_out)) (Glorot & Bengio, 2010), effective fans."""
    g = _check_number(gain, "gain")
    return _variance_scaling(tensor, g * g, "fan_avg", "normal", module=module, fans=fans, generator=generator,
                             bound=2.0, what=f"gain={gain!r}")


def xavier_uniform_(tensor: torch.Tensor, gain: float = 1.0, generator: torch.Generator | None = None, *,
                    module: nn.Module | None = None, fans: FansLike = None) -> torch.Tensor:
    """Glorot uniform: U(-b, b), b = gain * sqrt(6 / (fan_in + fan_out)), effective fans."""
    g = _check_number(gain, "gain")
    return _variance_scaling(tensor, g * g, "fan_avg", "uniform", module=module, fans=fans, generator=generator,
                             bound=2.0, what=f"gain={gain!r}")


def lecun_normal_(tensor: torch.Tensor, generator: torch.Generator | None = None, *,
                  module: nn.Module | None = None, fans: FansLike = None) -> torch.Tensor:
    """LeCun normal: std = 1 / sqrt(fan_in) (LeCun et al., 1998). JAX's version truncates: use
    ``variance_scaling_(t, 1.0, "fan_in", "truncated_normal")`` for that."""
    return variance_scaling_(tensor, 1.0, "fan_in", "normal", module=module, fans=fans, generator=generator)


def lecun_uniform_(tensor: torch.Tensor, generator: torch.Generator | None = None, *,
                   module: nn.Module | None = None, fans: FansLike = None) -> torch.Tensor:
    """LeCun uniform: U(-b, b), b = sqrt(3 / fan_in)."""
    return variance_scaling_(tensor, 1.0, "fan_in", "uniform", module=module, fans=fans, generator=generator)


_CONVT = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


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
