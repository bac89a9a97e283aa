"""Shape-only op results for the meta-device trace, memoized: the same op on the same metadata is computed once.

On the meta device a tensor has no values, so what an op returns (shape, strides, dtype) is a function of its
arguments' metadata alone. Many of torch's meta kernels are Python (convolution's shape checks, the elementwise
reference implementations behind ``add``/``mul``, the math decomposition of ``scaled_dot_product_attention``) and
cost 0.1-5 ms a call, which is most of the meta pass on a ResNet or a transformer whose blocks repeat the same
shapes. :func:`call` runs a listed op once per distinct argument metadata and afterwards answers with a fresh
meta tensor of the recorded shape and strides.

A few ops are not run on the meta device at all (:mod:`initwise._meta_rules`): linear, convolution, 2-d max pooling,
scaled dot-product attention (without mask or dropout), embedding lookups,
elementwise add/sub/mul/div, relu/hardswish/gelu/tanh/neg, mean/sum, cat and adaptive average pooling of floating
tensors with standard contiguous strides. Their meta kernels are Python: torch's reference implementations, whose
first call in a process imports ``torch._dynamo`` (about 800 modules: 1-2 s of CPU and ~70 MiB, once), and shape
checks through ``torch._check`` / ``torch.broadcast_shapes``, whose first call imports
``torch.fx.experimental.symbolic_shapes`` (~500 modules, 0.5 s); their result there is a contiguous tensor of the
broadcast (reduced, concatenated, pooled, convolved) shape and the promoted dtype, which the rule makes directly.
Anything outside a rule's narrow case (other strides, integer or bool operands, extra keyword arguments, a shape
the op would reject) runs the op itself. ``tests/test_meta_ops.py`` checks the rules against the meta kernels (and
the convolution and pooling rules against the real ops' shapes) on random shapes.

Only where this is provably the same as calling the op:

- the op is one of :data:`_OPS` (functional ops that make a new tensor: no views, no in-place variants, no
  ``out=``, no ``inplace=True``, no ops that update running statistics or renormalize a weight in place);
- every tensor argument is a plain ``torch.Tensor`` on the meta device, strided; every other argument is a
  number, string, bool, None, dtype, device, memory format or a tuple/list of those (anything else: the op runs);
- the recorded result was fresh meta tensors (not one of the arguments nor a view of one); grad mode and the
  default dtype are part of the key. An op that raised is never recorded, so it raises again on the next call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ._meta_rules import RULES as _RULES
from ._nested import tensors

__all__ = ["call"]

_nn = torch._C._nn
T = torch.Tensor


def _ops() -> dict[Any, int | None]:
    """op -> position of its ``inplace`` argument (None: it has none)."""
    plain: list[Any] = [
        torch.conv1d, torch.conv2d, torch.conv3d, torch.conv_transpose1d, torch.conv_transpose2d,
        torch.conv_transpose3d, _nn.linear, torch.bilinear, torch.matmul, T.matmul, T.__matmul__, torch.bmm, T.bmm,
        torch.mm, T.mm, _nn.scaled_dot_product_attention,
        torch.add, T.add, T.__add__, T.__radd__, torch.sub, T.sub, T.__sub__, T.__rsub__, torch.rsub,
        torch.mul, T.mul, T.__mul__, T.__rmul__, torch.div, T.div, T.__truediv__, T.__rtruediv__,
        torch.softmax, T.softmax, F.softmax, F.log_softmax, F.layer_norm, F.group_norm, F.rms_norm,
        torch.relu, T.relu, _nn.gelu, F.gelu, torch.neg, T.neg, T.__neg__, torch.sigmoid, T.sigmoid, torch.tanh, T.tanh,
        _nn.avg_pool2d, _nn.avg_pool3d, torch.avg_pool1d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
        F.adaptive_avg_pool3d, F.max_pool1d, F.max_pool2d, F.max_pool3d, F.pad, F.interpolate,
        torch.cat, torch.concat, torch.stack, torch.mean, T.mean, torch.sum, T.sum]
    ops: dict[Any, int | None] = dict.fromkeys(plain)
    ops.update({F.relu: 1, F.silu: 1, F.hardswish: 1, F.mish: 1, F.leaky_relu: 2, F.elu: 2})
    ops[F.embedding] = 3  # max_norm: renorms the table in place
    return ops


_OPS = _ops()
_SCALARS = (int, float, bool, str, complex, type(None), torch.dtype, torch.device, torch.memory_format,
            torch.layout)
_SCALAR_TYPES = frozenset(_SCALARS)
_MEMO: dict[tuple, tuple[tuple[tuple[int, ...], tuple[int, ...], torch.dtype], ...] | None] = {}
_LIMIT = 8192
_NO = object()  # an argument that cannot be part of a key


def _key(v: Any) -> Any:
    """A hashable description of an argument's metadata, or ``_NO``."""
    tv = type(v)
    if tv is torch.Tensor:
        if not v.is_meta or v.layout != torch.strided:
            return _NO
        return (v.shape, v.stride(), v.dtype, v.storage_offset(), v.requires_grad)
    if tv in _SCALAR_TYPES:
        return (tv, v)
    if tv is tuple or tv is list or isinstance(v, (tuple, list)):
        parts = tuple(map(_key, v))
        return _NO if _NO in parts else (tv, parts)
    if isinstance(v, _SCALARS):
        return (tv, v)
    return _NO


def _spec(result: Any, args: tuple, kwargs: dict) -> tuple | None:
    """What to answer next time: the shape, strides, dtype and requires_grad of each output, or None when the
    result is not plain fresh meta tensors (one of the arguments, or a view of one: aliasing matters then; a view
    of a temporary made inside the op, as ``linear`` returns for a 3-d input, is as good as fresh)."""
    outs = result if isinstance(result, tuple) else (result,)
    if not outs:
        return None
    inputs = set()
    for x in tensors((args, kwargs)):
        inputs.add(id(x))
        if x._base is not None:
            inputs.add(id(x._base))
    spec = []
    for t in outs:
        if type(t) is not torch.Tensor or not t.is_meta or t.layout != torch.strided or id(t) in inputs \
                or t._base is not None and (id(t._base) in inputs or t.storage_offset() != 0):
            return None
        spec.append((tuple(t.shape), t.stride(), t.dtype, t.requires_grad))
    return tuple(spec) if isinstance(result, tuple) else (spec[0], None)


def call(func: Callable, args: tuple, kwargs: dict) -> Any:
    """``func(*args, **kwargs)``, answered from the memo when it is provably the same (see the module docstring)."""
    pos = _OPS.get(func, _NO) if not isinstance(func, type) else _NO
    if pos is _NO or kwargs.get("out") is not None or kwargs.get("inplace") or kwargs.get("max_norm") is not None \
            or (pos is not None and len(args) > pos and args[pos] is not None and args[pos] is not False):
        return func(*args, **kwargs)
    with torch._C.DisableTorchFunction():  # its own metadata reads pass no mode
        k = _key(args)
        kk = _key(tuple(sorted(kwargs.items()))) if kwargs else ()
    if k is _NO or kk is _NO:
        return func(*args, **kwargs)
    key = (func, k, kk, torch.is_grad_enabled(), torch.get_default_dtype())
    spec = _MEMO.get(key, _NO)
    if spec is _NO:
        rule = _RULES.get(func)
        result = None
        if rule is not None:
            with torch._C.DisableTorchFunction():  # the rule's own shape calls pass no mode
                try:
                    result = rule(func, args, kwargs)
                except Exception:  # noqa: BLE001 - outside the rule's case: the op decides (and raises its error)
                    result = None
        if result is None:
            result = func(*args, **kwargs)
        if len(_MEMO) >= _LIMIT:
            _MEMO.clear()
        with torch._C.DisableTorchFunction():
            _MEMO[key] = _spec(result, args, kwargs)
        return result
    if spec is None:  # the op's result is not memoizable (a view, an argument)
        return func(*args, **kwargs)
    with torch._C.DisableTorchFunction():  # a factory call of initwise's own: no mode needs to see it
        if spec[-1] is None:
            return _empty(spec[0])
        return tuple(_empty(s) for s in spec)


def _empty(s: tuple) -> torch.Tensor:
    shape, stride, dtype, grad = s
    t = torch.empty_strided(shape, stride, dtype=dtype, device="meta")
    return t.requires_grad_() if grad else t
