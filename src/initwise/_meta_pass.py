"""The trace's meta-device pass (see :func:`initwise._graph.trace`): meta stand-ins of the parameters and buffers,
and the calls that spare torch's machinery where its answer is known.

- :func:`swap_to_meta` puts one meta stand-in per tensor in the modules (tied parameters stay tied).
- :func:`meta_forwards` says what the pass puts in the modules' ``__dict__`` (the guard removes it afterwards):
  torch's norm layers and elementwise activations get a ``forward`` that answers with a tensor of their input's
  shape (their node comes from the recorder's hooks); torch's plain ``Conv1d/2d/3d`` and ``Linear`` hand their
  functional op to the recorder directly (the call their forward makes, with the same arguments, past the
  torch-function modes); and those leaf modules, when they have no hooks of their own, run the recorder's two
  hooks themselves (torch's module call runs an instance's ``_compiled_call_impl`` instead of its own hook
  machinery). Every other module keeps its forward and gets the hooks (:func:`initwise._hooks.hooked`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import _meta_ops
from ._sharded import is_sharded
from ._trace import Recorder
from ._trace_vocab import _ACT_MODULES, _NORM_MODULES, _own_forward

__all__ = ["TORCH_NORMS", "meta_forwards", "swap_to_meta"]


def swap_to_meta(named: list) -> tuple[list[tuple[dict, str, torch.Tensor]], dict[int, torch.Tensor]]:
    """Put a meta stand-in of every parameter and buffer in its module's ``_parameters`` / ``_buffers`` (what
    ``torch.func.functional_call(..., tie_weights=True)`` does, without its per-name bookkeeping): one stand-in
    per tensor, so that tied parameters stay tied. Returns what to put back and ``{id(original): stand-in}``."""
    swapped: list[tuple[dict, str, torch.Tensor]] = []
    stand: dict[int, torch.Tensor] = {}
    with torch._C.DisableTorchFunction():  # initwise's own tensors: no mode needs to see them
        for _, m in named:
            for d in (m._parameters, m._buffers):
                for k, v in d.items():
                    if v is None:
                        continue
                    s = stand.get(id(v))
                    if s is None:
                        s = stand[id(v)] = _to_meta(v)
                    swapped.append((d, k, v))
        for d, k, v in swapped:
            d[k] = stand[id(v)]
    return swapped, stand


def _to_meta(v: torch.Tensor) -> torch.Tensor:
    # a sharded (DTensor) parameter becomes a plain meta tensor of its global shape
    if is_sharded(v):
        return torch.empty(v.shape, dtype=v.dtype, device="meta")
    if v.is_meta and v.layout == torch.strided and (v.is_contiguous() or v.dim() == 4 and v.is_contiguous(
            memory_format=torch.channels_last)):
        # what empty_like gives a dense tensor; torch's empty_like of a meta tensor is a Python reference whose
        # first call in a process loads ~500 modules (0.7 s)
        return torch.empty_strided(v.shape, v.stride(), dtype=v.dtype, device="meta")
    return torch.empty_like(v, device="meta")


TORCH_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm,
               *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()))


# torch's elementwise activation modules whose forward is one same-shape op (PReLU: a parameter, RReLU: draws)
_ELEMENTWISE_ACTS = tuple(c for c in _ACT_MODULES if c not in (nn.PReLU, nn.RReLU))

# torch's weight layers whose forward is one functional call of the module's own parameters and attributes
_WEIGHT_LEAVES: dict[type, Callable] = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d,
                                        nn.Linear: F.linear}

_HOOK_DICTS = ("_forward_pre_hooks", "_forward_hooks", "_backward_hooks", "_backward_pre_hooks")
_GLOBAL_HOOKS = ("_global_forward_pre_hooks", "_global_forward_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks")
_MODULE = nn.Module


def meta_forwards(named: list, rec: Recorder) -> tuple[dict[nn.Module, Callable], dict[nn.Module, Callable],
                                                      list[nn.Module]]:
    """What the meta pass puts in the modules' ``__dict__`` (see the module docstring): ``forward`` of torch's
    norms and elementwise activations, the call (``_compiled_call_impl``, what torch's module call runs instead of
    its hook machinery when set) of the leaf modules that run the recorder's hooks themselves; and the modules
    that get the hooks (all the others). A direct ``m.forward(x)`` call is then what it was (no hooks)."""
    forwards: dict[nn.Module, Callable] = {}
    calls: dict[nn.Module, Callable] = {}
    hooked: list[nn.Module] = []
    mod = nn.modules.module
    no_globals = _CALL_SLOT and not any(getattr(mod, k, None) for k in _GLOBAL_HOOKS)
    for _, m in named:
        cls = type(m)
        kind = _KINDS.get(cls)
        if kind is None:
            if len(_KINDS) > 4096:  # (classes made on the fly, e.g. per wrapped module)
                _KINDS.clear()
            kind = _KINDS[cls] = _kind(m)
        forward = call = None
        if kind[0] and "forward" not in m.__dict__:
            if kind[0] == "shape":
                forward = call = _shape_only(m, rec)
            elif _plain_weight_leaf(m):
                call = _weight_op(m, rec, _WEIGHT_LEAVES[cls])
        if forward is not None:
            forwards[m] = forward
        if call is not None and no_globals and kind[1] and m.__dict__.get("_compiled_call_impl") is None \
                and not any(getattr(m, k, None) for k in _HOOK_DICTS):
            calls[m] = _self_hooked(m, rec, call)
        else:
            hooked.append(m)
    return forwards, calls, hooked


_KINDS: dict[type, tuple[str | None, bool]] = {}  # module class -> what _kind says


def _kind(m: nn.Module) -> tuple[str | None, bool]:
    """What the class of ``m`` says (nothing here reads the instance): ``"shape"`` (a torch norm or elementwise
    activation with torch's forward), ``"weight"`` (exactly one of :data:`_WEIGHT_LEAVES`) or None; and whether a
    call of an instance is torch's (its class neither calls nor registers hooks its own way), when it has no hooks
    of its own and is not compiled."""
    cls = type(m)
    shape = isinstance(m, TORCH_NORMS) and not _own_forward(m, _NORM_MODULES) or \
        isinstance(m, _ELEMENTWISE_ACTS) and not _own_forward(m, _ACT_MODULES)
    plain = (cls.__call__ is _MODULE.__call__ and cls._call_impl is _MODULE._call_impl
             and cls._wrapped_call_impl is _MODULE._wrapped_call_impl
             and cls.register_forward_pre_hook is _MODULE.register_forward_pre_hook
             and cls.register_forward_hook is _MODULE.register_forward_hook)
    return ("shape" if shape else "weight" if cls in _WEIGHT_LEAVES else None), plain


def _call_slot() -> bool:
    """Does torch's module call run an instance's ``_compiled_call_impl`` when one is set (torch >= 2.2: what
    ``Module.compile`` sets)? Tried once on a throwaway module; without it every module gets the hooks."""
    probe = nn.Identity()
    seen = []
    probe.__dict__["_compiled_call_impl"] = lambda *a, **k: seen.append(a) or "called"
    try:
        return probe(0) == "called" and seen == [(0,)]
    except Exception:  # noqa: BLE001 - another torch: the hooks it is
        return False


def _plain_weight_leaf(m: nn.Module) -> bool:
    """``m`` (exactly one of :data:`_WEIGHT_LEAVES`) reads its weight and bias from ``_parameters`` (none shadowed by
    an instance attribute) and pads with zeros (other modes pad in its forward first)."""
    d = m.__dict__
    return "weight" in m._parameters and "bias" in m._parameters and "weight" not in d and "bias" not in d and (
        type(m) is nn.Linear or getattr(m, "padding_mode", None) == "zeros")


def _self_hooked(m: nn.Module, rec: Recorder, forward: Callable) -> Callable:
    """``forward`` between the recorder's two hooks, as torch's module call runs them when they are the module's
    only hooks (registered ``with_kwargs=True``, the post-hook ``always_call=True``: it also runs, with no output,
    when the forward raises an ``Exception``)."""
    pre, post = rec.pre_hook, rec.post_hook

    def call(*args: Any, **kwargs: Any) -> Any:
        pre(m, args, kwargs)
        try:
            output = forward(*args, **kwargs)
        except Exception:
            post(m, args, kwargs, None)
            raise
        post(m, args, kwargs, output)
        return output

    return call


def _weight_op(m: nn.Module, rec: Recorder, func: Callable) -> Callable:
    """The meta forward of a plain torch conv / linear layer: its functional call, with the arguments its forward
    passes, given to the recorder as its torch-function mode would be (the op's meta result, then the role
    tracking), past the other modes (the op writes nothing the guard must see). Anything but one dense meta tensor
    runs the module's own forward."""
    own = type(m).forward
    linear = func is F.linear

    def forward(input: Any, *args: Any, **kwargs: Any) -> Any:
        with torch._C.DisableTorchFunction():
            if not args and not kwargs and type(input) is torch.Tensor and input.is_meta:
                p = m._parameters
                a = (input, p["weight"], p["bias"]) if linear else \
                    (input, p["weight"], p["bias"], m.stride, m.padding, m.dilation, m.groups)
                return rec._bookkeep(func, a, {}, _meta_ops.call(func, a, {}))
        return own(m, input, *args, **kwargs)

    return forward


def _shape_only(m: nn.Module, rec: Recorder) -> Any:
    """The meta-device forward of a torch norm layer (:data:`TORCH_NORMS`) or elementwise activation
    (:data:`_ELEMENTWISE_ACTS`): a tensor of the input's shape and strides (the input itself for an in-place
    activation), made past every torch-function mode. It spares torch's Python meta kernels, the recorder's and the
    guard's per-op work: inside a leaf module the recorder records none of its ops (the module's node comes from
    its hooks, which map the output to it) and the op writes nothing the guard must see. The module's own forward
    runs for anything else (a norm: its input's clone, through the modes): an input other than one dense floating
    meta tensor, or one computed from parameters (the role tracker follows what parameters become)."""
    act = isinstance(m, _ELEMENTWISE_ACTS)
    forward = type(m).forward if act else lambda m, input, *args, **kwargs: input.clone()
    inplace = act and bool(getattr(m, "inplace", False))

    def shape_only(input: Any, *args: Any, **kwargs: Any) -> Any:
        with torch._C.DisableTorchFunction():
            if not args and not kwargs and type(input) is torch.Tensor and input.is_meta and \
                    input.is_floating_point() and (input.is_contiguous() or input.dim() == 4 and
                                                   input.is_contiguous(memory_format=torch.channels_last)) and \
                    not rec.params.touches((input,), {}):
                # (empty_strided: torch's empty_like of a meta tensor is a Python reference, ~10x slower)
                return input if inplace else torch.empty_strided(input.shape, input.stride(), dtype=input.dtype,
                                                                 device="meta")
        return forward(m, input, *args, **kwargs)

    return shape_only


_CALL_SLOT = _call_slot()
