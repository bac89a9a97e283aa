"""Copy-on-write for the guard (:mod:`initwise._guard`): the tensors it tracks and the mode that clones one
just before an in-place call first writes its storage.

:class:`Tracked` is one tensor found in the model or the examples (where, its storage, version counter,
``requires_grad``, ``.grad``, its hook dicts and, once written or when small, a clone). :class:`CopyOnWrite` is the
``TorchFunctionMode`` active while a guard is held: it looks at every in-place call (a method ending in ``_``,
``x[i] = ...``, ``out=``, ``inplace=True``, ``F.embedding(max_norm=...)``), also through ``.data`` or a view, and
clones a watched tensor before the write; guards nested around one model share the copy (:data:`ACTIVE`).
:func:`storage_moved` and :func:`set_version` are what a restore needs to put a tensor back.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from ._nested import tensors

__all__ = ["ACTIVE", "CopyOnWrite", "NO_HOOKS", "TENSOR_HOOKS", "Tracked", "set_version", "storage_moved",
           "storage_ptr"]

# in-place calls whose first argument is written, besides the methods named ``..._``
_WRITE_FIRST = frozenset(("__setitem__", "__iadd__", "__isub__", "__imul__", "__itruediv__", "__ifloordiv__",
                          "__imod__", "__ipow__", "__iand__", "__ior__", "__ixor__", "__ilshift__", "__irshift__",
                          "__imatmul__"))
_NOT_WRITES = frozenset(("requires_grad_", "retain_grad_", "share_memory_"))
TENSOR_HOOKS = ("_backward_hooks", "_post_accumulate_grad_hooks")
NO_HOOKS = tuple((k, None, None) for k in TENSOR_HOOKS)  # what Tracked.hooks = None stands for
_ABSENT = object()
ACTIVE: list[Any] = []  # the guards (_guard.Snapshot) held now, outermost first


def set_version(t: torch.Tensor, version: int) -> None:
    """Set the version counter back (a private torch call: where it is missing or refuses, the counter stays)."""
    if t._version == version:
        return
    setter = getattr(torch._C._autograd, "_unsafe_set_version_counter", None)
    if setter is None:
        return
    try:
        setter((t,), (version,))
    except TypeError:  # older signature: one tensor, one int
        try:
            setter(t, version)
        except (TypeError, RuntimeError):
            pass
    except RuntimeError:  # e.g. a tensor subclass without its own counter
        pass


class Tracked:
    """One tracked tensor: where it was found, its storage, version, ``requires_grad``, ``.grad`` and a clone."""

    __slots__ = ("t", "where", "data", "version", "requires_grad", "grad", "grad_version", "clone", "hooks")

    def __init__(self, t: torch.Tensor, where: str, clone: bool) -> None:
        self.t, self.where = t, where
        self.data = t.data  # shares the storage: a later ``t.data = other`` can be swapped back
        self.version = t._version
        self.requires_grad = t.requires_grad
        self.grad = t.grad if t.is_leaf else None
        self.grad_version = self.grad._version if self.grad is not None else None
        # the tensor's own hook dicts (``p.register_hook`` in a forward would pile up): object and contents
        # (None, the common case: every one of them None; nothing allocated per tensor for it)
        self.hooks = None
        for k in TENSOR_HOOKS:
            h = getattr(t, k, _ABSENT)
            if h is not None:
                self.hooks = [(k, h, None if h is None else dict(h)) for k in TENSOR_HOOKS
                              if (h := getattr(t, k, _ABSENT)) is not _ABSENT]
                break
        self.clone: torch.Tensor | None = None
        if clone:
            self.copy()

    def copy(self) -> None:
        if self.clone is None and self.t.device.type != "meta" and self.t.layout == torch.strided:
            self.clone = self.t.detach().clone()


def storage_ptr(t: Any) -> int:
    """The address of ``t``'s storage (0 for meta, empty or storage-less tensors)."""
    try:
        return t.untyped_storage().data_ptr() if isinstance(t, torch.Tensor) else 0
    except (RuntimeError, NotImplementedError, TypeError):
        return 0


_KIND: dict[Any, int] = {}  # torch function -> 1: writes its first argument, 2: embedding, 0: neither


def _kind(func: Any) -> int:
    """What an in-place call of ``func`` writes, from its name alone (cached per function object)."""
    name = getattr(func, "__name__", "")
    base = name.split(".", 1)[0]  # torch.ops overloads: "add_.Tensor"
    kind = 1 if (base.endswith("_") and not base.startswith("__") and base not in _NOT_WRITES) or \
        base in _WRITE_FIRST else 2 if base == "embedding" else 0
    try:
        if len(_KIND) < 4096:
            _KIND[func] = kind
    except TypeError:  # an unhashable callable: not cached
        pass
    return kind


class CopyOnWrite(TorchFunctionMode):
    """Clones a watched tensor just before an in-place call first writes its storage (see the module docstring)."""

    def __init__(self, watched: dict[int, list["Tracked"]]) -> None:
        super().__init__()
        self.watched = watched

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if self.watched:
            try:
                kind = _KIND.get(func)
            except TypeError:  # an unhashable callable
                kind = None
            if kind is None:
                kind = _kind(func)
            target: Any = None
            if kind == 1 or kwargs.get("inplace") is True:
                target = args[0] if args else next(iter(kwargs.values()), None)  # nn.init: tensor=
            elif kind == 2 and (kwargs.get("max_norm") is not None or (len(args) > 3 and args[3] is not None)):
                target = args[1] if len(args) > 1 else kwargs.get("weight")  # renormed in place
            if target is not None:
                self._before_write(target)
            if kwargs.get("out") is not None:
                self._before_write(kwargs["out"])
        return func(*args, **kwargs)

    def _before_write(self, obj: Any) -> None:
        for t in tensors(obj if isinstance(obj, (tuple, list)) else [obj]):
            ptr = storage_ptr(t)
            entries = self.watched.pop(ptr, None)
            for e in entries or ():
                e.copy()
                # guards nested around the same model (advise > diagnose > trace) share the copy: an outer guard
                # that has not copied this tensor yet saw no write since it began, so the value is its original too
                for outer in ACTIVE:
                    if outer._mode is not None and outer._mode is not self and ptr in outer._mode.watched:
                        for o in outer._mode.watched.pop(ptr):
                            if o.t is e.t and o.version == e.version and o.clone is None and e.clone is not None:
                                o.clone = e.clone
                            else:
                                o.copy()


def storage_moved(t: torch.Tensor, data: torch.Tensor) -> bool:
    """Does ``t`` now look at other memory than ``data`` (``t.data = new``, ``set_``, a resize)?"""
    if type(data) is torch.Tensor and not data.is_meta:  # one call for storage, offset, sizes and strides
        try:
            return not t.is_set_to(data) or t.dtype != data.dtype
        except (RuntimeError, NotImplementedError, TypeError):  # e.g. sparse: no such kernel
            pass
    if t.dtype != data.dtype or t.shape != data.shape:
        return True
    try:
        if t.data_ptr() != data.data_ptr() or t.stride() != data.stride() or \
                t.storage_offset() != data.storage_offset():
            return True
    except (RuntimeError, NotImplementedError):  # sparse or wrapper subclasses: no storage to compare
        pass
    return t.device != data.device
