"""init_'s plan cache: a second ``init_`` of the same architecture reuses the plan instead of tracing again.

The key is everything a plan is computed from except values: the module tree (dotted names, classes, every plain
attribute such as stride, groups, padding, slopes, flags, the training mode, the forward hooks), every parameter's
and buffer's name, shape, dtype, device and ties, the example's structure (shapes, dtypes, devices, non-tensor
arguments) and the scheme, mode and options. A hit is copied (the caller may change it) and bound to the model
passed in, and its moments are propagated again (when its predictions are first read, as for every plan) when
the example's second moment differs, so a cached plan is what ``plan`` would return. Plans that read parameter
values (``exclude``, tied or kept parameters, ``bias``/``norm="keep"``, ``"current"``) are never cached. The cache
holds no reference to any model; it keeps the :data:`MAX_ENTRIES` most recently used plans.
"""

from __future__ import annotations

import copy
import enum
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from ._plan import Plan, _input_moments, propagation_inputs
from ._plan_example import param_consts

__all__ = ["lookup", "store", "clear", "MAX_ENTRIES"]

MAX_ENTRIES = 8
_cache: OrderedDict[tuple, tuple[Plan, dict]] = OrderedDict()  # key -> (template, input moments)
_PLAIN = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device, torch.Size, enum.Enum)
_FAST = frozenset((type(None), bool, int, str))
_SKIP = frozenset(("_parameters", "_buffers", "_modules", "_non_persistent_buffers_set", "_state_dict_hooks",
                   "_state_dict_pre_hooks", "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks",
                   "_backward_hooks", "_backward_pre_hooks", "_is_full_backward_hook"))


class _Unkeyable(Exception):
    pass


def _freeze(v: Any, depth: int = 0) -> Any:
    """A hashable stand-in for ``v``, equal for values that a trace cannot tell apart."""
    t = type(v)
    if t in _FAST:
        return v
    if t is float:
        return (float, v)  # 1 == 1.0 == True must not collide
    if isinstance(v, _PLAIN):
        return (t, v)
    if isinstance(v, torch.Tensor):
        return ("tensor", tuple(v.shape), v.dtype, v.device.type)
    if depth < 4 and isinstance(v, (tuple, list)):
        return (t.__name__, tuple([_freeze(x, depth + 1) for x in v]))
    if depth < 4 and isinstance(v, dict):
        return ("dict", tuple([(_freeze(k, depth + 1), _freeze(x, depth + 1)) for k, x in v.items()]))
    if callable(v):
        # by identity, never by reference: a hook or a closure may hold the model, and the cache must not
        fn = getattr(v, "__func__", v)
        owner = getattr(v, "__self__", None)
        return ("callable", getattr(fn, "__qualname__", type(fn).__qualname__), id(fn), id(owner))
    raise _Unkeyable


def _structure(model: nn.Module) -> tuple:
    first: dict[int, str] = {}
    rows = []
    fast, skip = _FAST, _SKIP
    for name, m in model.named_modules(remove_duplicate=False):
        attrs = []
        for k, v in m.__dict__.items():
            if type(v) in fast:
                attrs.append((k, v))
            elif k in skip:
                continue
            elif k.startswith("_forward"):  # forward (pre-)hooks, with_kwargs/always_call flags
                if v:
                    attrs.append((k, tuple((hk, _freeze(h)) for hk, h in v.items()) if isinstance(v, dict) else v))
            else:
                try:
                    attrs.append((k, _freeze(v)))
                except _Unkeyable:
                    attrs.append((k, ("unkeyable", type(v))))  # e.g. a user object: the trace must not depend on it
        params = []
        for k, p in m._parameters.items():
            if p is None:
                params.append((k, None))
                continue
            tie = first.setdefault(id(p), f"{name}.{k}")
            params.append((k, p.shape, p.dtype, p.device, p.requires_grad, type(p), tie))
        bufs = tuple((k, None if b is None else (b.shape, b.dtype, b.device)) for k, b in m._buffers.items())
        rows.append((name, type(m), tuple(attrs), tuple(params), bufs))
    return tuple(rows)


def _key(model: nn.Module, example: Any, scheme: Any, mode: Any, options: dict[str, Any]) -> tuple | None:
    try:
        return (_structure(model), _freeze(example), _freeze(scheme), _freeze(mode),
                tuple(sorted((k, _freeze(v)) for k, v in options.items())))
    except _Unkeyable:
        return None


def _template(plan: Plan) -> Plan:
    """A copy that shares nothing mutable with ``plan`` and holds no module (LayerInfo.module is None)."""
    return _copy(plan, _bound(plan.graph, lambda name: None))


def _bound(g: Any, module_of) -> Any:
    """A copy of graph ``g`` whose layers point at ``module_of(name)`` (nodes are shared: never mutated)."""
    layers = []
    for info in g.layers:
        info = _copy1(info)
        info.module = module_of(info.owner_name)  # a layer "owner.param" lives in module owner
        layers.append(info)
    out = _copy1(g)
    out.layers = layers
    return out


def _copy(plan: Plan, graph: Any) -> Plan:
    """A copy of ``plan`` on ``graph`` that shares no list or dict with it (a shallow copy per object: ~8x faster than
    dataclasses.replace; every other field is immutable)."""
    out = _shallow(plan)
    out.graph = graph
    out.layers = [_shallow(lp) for lp in plan.layers]
    for lp in out.layers:
        lp.params = [_shallow(pp) for pp in lp.params]
    out.norm_params = [_shallow(pp) for pp in plan.norm_params]
    if "_lazy" in out.__dict__:  # propagation deferred: the copy's layers wait for the copy's own
        for lp in out.layers:
            lp.__dict__["_plan"] = out
    return out


def _copy1(obj: Any) -> Any:
    """``copy.copy(obj)`` for the plan's own classes (no ``__slots__``, ``__copy__``, ``__reduce__``,
    ``__setstate__``: copy makes a new instance and updates its ``__dict__``), without copy's protocol lookups
    (~4x faster; a first ``init_`` copies ~300 of them into the cache); any other class goes through copy."""
    cls = type(obj)
    if cls not in _PLAIN_COPY:
        _PLAIN_COPY[cls] = not any(hasattr(cls, k) for k in ("__slots__", "__copy__", "__setstate__")) and \
            cls.__reduce_ex__ is object.__reduce_ex__ and cls.__reduce__ is object.__reduce__ and \
            getattr(cls, "__getstate__", object.__getstate__) is object.__getstate__
    if not _PLAIN_COPY[cls]:
        return copy.copy(obj)
    out = object.__new__(cls)
    out.__dict__.update(obj.__dict__)
    return out


_PLAIN_COPY: dict[type, bool] = {}


def _shallow(obj: Any) -> Any:
    out = _copy1(obj)
    for k, v in vars(out).items():
        if isinstance(v, (list, dict)):
            setattr(out, k, copy.copy(v))
    return out


def lookup(model: nn.Module, example: Any, scheme: Any, mode: Any, options: dict[str, Any]) -> tuple[tuple | None,
                                                                                                   Plan | None]:
    """``(key, plan)``: the cached plan for this model and example bound to ``model``, or ``(key, None)``."""
    key = _key(model, example, scheme, mode, options)
    entry = _cache.get(key) if key is not None else None
    if entry is None:
        return key, None
    _cache.move_to_end(key)
    hit, input_ms = entry
    modules = dict(model.named_modules())
    graph = _bound(hit.graph, modules.__getitem__)
    out = _copy(hit, graph)
    consts = param_consts(model, graph)  # values of this model's parameter operands (a class token)
    if consts or _input_moments(graph, example) != input_ms:  # another example or such values: propagate again
        layer_ms, norm_ms, _ = hit._moments  # (when read)
        layer_ms = dict(layer_ms)  # patched for this example: the cached plan's own stay
        inputs = propagation_inputs(graph, out.layers, layer_ms, example, consts)
        out._defer((layer_ms, norm_ms, inputs))
    return key, out


def store(key: tuple | None, plan: Plan, example: Any) -> None:
    """Keep ``plan`` (made from ``example``) under ``key`` unless it read parameter values (then a value change
    would make it stale)."""
    if key is None or plan._moments is None or plan._moments[2]:
        return
    lazy = plan.__dict__.get("_lazy")  # the example's moments, read by the plan already (when not yet resolved)
    input_ms = lazy[2][0] if lazy is not None else _input_moments(plan.graph, example)
    _cache[key] = (_template(plan), input_ms)
    _cache.move_to_end(key)
    while len(_cache) > MAX_ENTRIES:
        _cache.popitem(last=False)


def clear() -> None:
    """Forget every cached plan."""
    _cache.clear()
