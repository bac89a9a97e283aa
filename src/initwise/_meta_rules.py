"""The shape rules of the meta pass: ops answered with a fresh meta tensor of the shape they would return,
without running them (torch's meta kernels for these are Python; see :mod:`initwise._meta_ops`, which memoizes
every op and consults :data:`RULES` first).

Each rule takes ``(func, args, kwargs)`` and returns the result, or None outside its narrow case (other strides,
integer or bool operands, extra keyword arguments, a shape the op would reject): the op itself runs then and
raises its own error. ``tests/test_meta_ops.py`` checks every rule against the meta kernels (and the convolution
and pooling rules against the real ops' shapes) on random shapes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["RULES"]

_nn = torch._C._nn
T = torch.Tensor


def _canon(shape: tuple[int, ...]) -> tuple[int, ...]:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return tuple(reversed(out))


def _plain(t: Any) -> bool:
    """A floating meta tensor with the standard contiguous strides, no zero-size dim, no grad to track."""
    return type(t) is torch.Tensor and t.is_meta and t.layout == torch.strided and t.dtype.is_floating_point \
        and 0 not in t.shape and t.stride() == _canon(tuple(t.shape)) and not (t.requires_grad and
                                                                               torch.is_grad_enabled())


def _new(shape: Any, dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(tuple(shape), dtype=dtype, device="meta")


def _binary(func: Any, args: tuple, kwargs: dict) -> torch.Tensor | None:
    if kwargs or len(args) != 2:
        return None
    ts = [a for a in args if isinstance(a, torch.Tensor)]
    if not ts or not all(map(_plain, ts)) or not all(isinstance(a, torch.Tensor) or type(a) in (int, float)
                                                     for a in args):
        return None
    dtype = torch.result_type(*args)
    if not dtype.is_floating_point:
        return None
    shape = _broadcast([tuple(t.shape) for t in ts])
    return None if shape is None else _new(shape, dtype)


def _broadcast(shapes: list[tuple[int, ...]]) -> tuple[int, ...] | None:
    """``torch.broadcast_shapes`` of shapes without a zero-size dim, None where they do not broadcast (in Python:
    torch's is a Python reference whose first call imports ``torch.fx.experimental.symbolic_shapes``, ~500
    modules)."""
    out: list[int] = []
    for dims in zip(*(((1,) * (max(map(len, shapes)) - len(sh)) + sh) for sh in shapes)):
        big = max(dims)
        if any(d != 1 and d != big for d in dims):
            return None
        out.append(big)
    return tuple(out)


def _unary(func: Any, args: tuple, kwargs: dict) -> torch.Tensor | None:
    x = args[0] if len(args) == 1 else None
    if func is F.gelu:
        ok = not kwargs or set(kwargs) == {"approximate"} and kwargs["approximate"] in ("none", "tanh")
    else:
        ok = not kwargs or func in (F.relu, F.hardswish) and kwargs == {"inplace": False}
    return _new(x.shape, x.dtype) if ok and _plain(x) else None


def _reduce(func: Any, args: tuple, kwargs: dict) -> torch.Tensor | None:
    if not args or not _plain(args[0]) or len(args) > 3 or set(kwargs) - {"dim", "keepdim"}:
        return None
    x, nd = args[0], args[0].dim()
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    keep = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
    if type(keep) is not bool or nd == 0:
        return None
    if dim is None:
        if len(args) > 1 or "dim" in kwargs or keep:
            return None
        return _new((), x.dtype)
    dims = (dim,) if type(dim) is int else tuple(dim) if isinstance(dim, (tuple, list)) else None
    if not dims or not all(type(d) is int and -nd <= d < nd for d in dims):
        return None
    red = {d % nd for d in dims}
    if len(red) != len(dims):
        return None
    return _new([1 if i in red else n for i, n in enumerate(x.shape) if keep or i not in red], x.dtype)


def _cat(func: Any, args: tuple, kwargs: dict) -> torch.Tensor | None:
    if not args or len(args) > 2 or set(kwargs) - {"dim"} or not isinstance(args[0], (tuple, list)) or not args[0]:
        return None
    ts = args[0]
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    if not all(map(_plain, ts)) or type(dim) is not int:
        return None
    nd, dtype = ts[0].dim(), ts[0].dtype
    if nd == 0 or not -nd <= dim < nd or any(t.dim() != nd or t.dtype != dtype for t in ts):
        return None
    d = dim % nd
    if any(t.shape[i] != ts[0].shape[i] for t in ts for i in range(nd) if i != d):
        return None
    shape = list(ts[0].shape)
    shape[d] = sum(t.shape[d] for t in ts)
    return _new(shape, dtype)


def _adaptive_avg_pool2d(func: Any, args: tuple, kwargs: dict) -> torch.Tensor | None:
    if len(args) != 2 or kwargs or not _plain(args[0]) or args[0].dim() not in (3, 4):
        return None
    x, size = args
    size = (size, size) if type(size) is int else tuple(size) if isinstance(size, (tuple, list)) else None
    if size is None or len(size) != 2 or not all(s is None or type(s) is int and s >= 1 for s in size):
        return None
    return _new((*x.shape[:-2], *(x.shape[-2 + i] if s is None else s for i, s in enumerate(size))), x.dtype)


def _linear(func: Any, args: tuple, kwargs: dict) -> torch.Tensor | None:
    if kwargs or len(args) not in (2, 3):
        return None
    x, w = args[:2]
    b = args[2] if len(args) == 3 else None
    if not (_plain(x) and _plain(w) and (b is None or _plain(b))) or w.dim() != 2 or x.dim() == 0 \
            or w.shape[1] != x.shape[-1] or w.dtype != x.dtype or b is not None and (
            b.dim() != 1 or b.shape[0] != w.shape[0] or b.dtype != x.dtype):
        return None
    return _new((*x.shape[:-1], w.shape[0]), x.dtype)


def _bind(names: tuple[str, ...], args: tuple, kwargs: dict) -> dict[str, Any] | None:
    """The call's arguments by parameter name (``names`` in the op's order), None when it passes more positional
    arguments than there are names, or a keyword that is not one of the names after them."""
    if len(args) > len(names) or set(kwargs) - set(names[len(args):]):
        return None
    return dict(zip(names, args), **kwargs)


_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_CONV_DIMS = {torch.conv1d: 1, torch.conv2d: 2, torch.conv3d: 3}


def _per_dim(v: Any, n: int, low: int) -> tuple[int, ...] | None:
    """An int or a sequence of ``n`` ints, each >= ``low``, as ``n`` ints (None otherwise)."""
    vs = (v,) * n if type(v) is int else tuple(v) if isinstance(v, (tuple, list)) and len(v) == n else None
    return vs if vs is not None and all(type(x) is int and x >= low for x in vs) else None


def _conv(func: Any, args: tuple, kwargs: dict) -> torch.Tensor | None:
    """A batched convolution (``torch.conv1d/2d/3d``, what ``nn.Conv*d`` calls for ``padding_mode="zeros"``):
    ``out = (L + 2 p - d (k - 1) - 1) // s + 1`` per spatial dim (padding ``"valid"``: 0; ``"same"``, stride 1:
    ``out = L``), ``C_out = weight.shape[0]``; contiguous, as the meta kernel answers (``new_empty``)."""
    a = _bind(_CONV_ARGS, args, kwargs)
    if a is None:
        return None
    x, w, b = a.get("input"), a.get("weight"), a.get("bias")
    n = _CONV_DIMS[func]
    if not (_plain(x) and _plain(w) and (b is None or _plain(b))) or x.dim() != n + 2 or w.dim() != n + 2 \
            or w.dtype != x.dtype or b is not None and (b.dim() != 1 or b.shape[0] != w.shape[0] or b.dtype != x.dtype):
        return None
    groups = a.get("groups", 1)
    stride, dilation = _per_dim(a.get("stride", 1), n, 1), _per_dim(a.get("dilation", 1), n, 1)
    if type(groups) is not int or groups < 1 or stride is None or dilation is None \
            or x.shape[1] != w.shape[1] * groups or w.shape[0] % groups:
        return None
    pad = a.get("padding", 0)
    spatial, kernel = tuple(x.shape[2:]), tuple(w.shape[2:])
    reach = tuple(d * (k - 1) for d, k in zip(dilation, kernel))  # the dilated kernel's extent - 1
    if pad == "same":  # stride 1 only (torch rejects others); an odd total padding takes another path in torch
        if any(s != 1 for s in stride) or any(r % 2 for r in reach):
            return None
        out = spatial
    else:
        p = (0,) * n if pad == "valid" else _per_dim(pad, n, 0)
        if p is None or any(L + 2 * q < r + 1 for L, q, r in zip(spatial, p, reach)):
            return None  # the op rejects a kernel larger than the padded input
        out = tuple((L + 2 * q - r - 1) // s + 1 for L, q, r, s in zip(spatial, p, reach, stride))
    return _new((x.shape[0], w.shape[0], *out), x.dtype)


_POOL_ARGS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")


def _max_pool2d(func: Any, args: tuple, kwargs: dict) -> torch.Tensor | None:
    """``F.max_pool2d`` of a batched input without indices: per spatial dim ``(L + 2 p - d (k - 1) - 1) / s + 1``
    rounded down (up with ``ceil_mode``, less a last window that would start in the padding); contiguous, as the
    meta kernel answers for a contiguous input with several channels and positions (its kernel checks call
    ``torch._check``, whose first call in a process imports ``torch.fx.experimental.symbolic_shapes``: ~500
    modules, 0.5 s)."""
    a = _bind(_POOL_ARGS, args, kwargs)
    if a is None:
        return None
    x = a.get("input")
    if not _plain(x) or x.dim() != 4 or x.shape[1] < 2 or x.shape[2] * x.shape[3] < 2 \
            or a.get("return_indices", False) is not False or type(a.get("ceil_mode", False)) is not bool:
        return None
    k = _per_dim(a.get("kernel_size"), 2, 1)
    s = a.get("stride")
    s = k if s is None or isinstance(s, (tuple, list)) and len(s) == 0 else _per_dim(s, 2, 1)
    p, d = _per_dim(a.get("padding", 0), 2, 0), _per_dim(a.get("dilation", 1), 2, 1)
    if k is None or s is None or p is None or d is None:
        return None
    out = []
    for L, kk, ss, pp, dd in zip(x.shape[2:], k, s, p, d):
        if pp > kk // 2:  # torch: the padding at most half the kernel
            return None
        span = L + 2 * pp - dd * (kk - 1) - 1
        if span < 0:
            return None
        o = (span + (ss - 1 if a.get("ceil_mode", False) else 0)) // ss + 1
        if a.get("ceil_mode", False) and (o - 1) * ss >= L + pp:
            o -= 1
        if o < 1:
            return None
        out.append(o)
    return _new((*x.shape[:2], *out), x.dtype)


_SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")


def _sdpa(func: Any, args: tuple, kwargs: dict) -> torch.Tensor | None:
    """``F.scaled_dot_product_attention`` without a mask, dropout or grouped heads: ``query (B, H, L, E)``, ``key
    (B, H, S, E)``, ``value (B, H, S, Ev)`` of one floating dtype, any strides (heads split by a transpose, as
    transformers do): ``(B, H, L, Ev)``, contiguous, as the meta kernel answers (its math decomposition is Python
    whose first call in a process imports ``torch._dynamo``: ~800 modules, ~2 s)."""
    a = _bind(_SDPA_ARGS, args, kwargs)
    if a is None:
        return None
    q, k, v = a.get("query"), a.get("key"), a.get("value")
    scale, p = a.get("scale"), a.get("dropout_p", 0.0)
    if not all(type(t) is torch.Tensor and t.is_meta and t.layout == torch.strided and t.dim() == 4
               and 0 not in t.shape and not (t.requires_grad and torch.is_grad_enabled()) for t in (q, k, v)):
        return None
    if not q.dtype.is_floating_point or not q.dtype == k.dtype == v.dtype or a.get("attn_mask") is not None \
            or type(p) not in (int, float) or p != 0 or type(a.get("is_causal", False)) is not bool \
            or a.get("enable_gqa", False) is not False or scale is not None and type(scale) not in (int, float):
        return None
    if q.shape[:2] != k.shape[:2] or k.shape[:3] != v.shape[:3] or q.shape[3] != k.shape[3]:
        return None
    return _new((*q.shape[:3], v.shape[3]), q.dtype)


_EMBEDDING_ARGS = ("input", "weight", "padding_idx", "max_norm", "norm_type", "scale_grad_by_freq", "sparse")


def _embedding(func: Any, args: tuple, kwargs: dict) -> torch.Tensor | None:
    """``F.embedding`` without ``max_norm`` of a 2-d floating table and integer indices of any shape:
    ``indices.shape + (dim,)``, contiguous, as the meta kernel answers (its checks call ``torch._check``: the first
    call in a process imports ``torch.fx.experimental.symbolic_shapes``, 0.5 s)."""
    a = _bind(_EMBEDDING_ARGS, args, kwargs)
    if a is None or a.get("max_norm") is not None or a.get("padding_idx") is not None and (
            type(a["padding_idx"]) is not int or not -a["weight"].shape[0] <= a["padding_idx"] < a["weight"].shape[0]):
        return None
    w, i = a.get("weight"), a.get("input")
    if not (type(w) is torch.Tensor and type(i) is torch.Tensor and w.is_meta and i.is_meta) \
            or w.layout != torch.strided or i.layout != torch.strided or w.dim() != 2 or 0 in w.shape \
            or 0 in i.shape or not w.dtype.is_floating_point or i.dtype not in (torch.int64, torch.int32) \
            or w.requires_grad and torch.is_grad_enabled() \
            or a.get("scale_grad_by_freq", False) is not False or a.get("sparse", False) is not False:
        return None
    return _new((*i.shape, w.shape[1]), w.dtype)


RULES: dict[Any, Callable[[Any, tuple, dict], torch.Tensor | None]] = {
    **dict.fromkeys((T.__add__, T.__radd__, T.add, torch.add, T.__sub__, T.__rsub__, T.sub, torch.sub,
                     T.__mul__, T.__rmul__, T.mul, torch.mul, T.__truediv__, T.div, torch.div), _binary),
    **dict.fromkeys((torch.relu, T.relu, F.relu, F.hardswish, F.gelu, torch.tanh, T.tanh, torch.neg, T.neg,
                     T.__neg__), _unary),
    **dict.fromkeys((torch.mean, T.mean, torch.sum, T.sum), _reduce),
    **dict.fromkeys((torch.cat, torch.concat), _cat),
    F.adaptive_avg_pool2d: _adaptive_avg_pool2d,
    _nn.linear: _linear,
    **dict.fromkeys(_CONV_DIMS, _conv),
    F.max_pool2d: _max_pool2d,
    _nn.scaled_dot_product_attention: _sdpa,
    F.embedding: _embedding,
}
