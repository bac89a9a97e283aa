"""One guard around every run of the user's forward: whatever the run changes is put back, also when it raises.

DESIGN.md, "Nothing leaks into the user's model". :class:`Snapshot` records, cheaply, everything a forward (or an
initwise step around it) can change, and :meth:`Snapshot.restore` puts it back:

- every module's ``__dict__`` (identity of every entry, so a forward's ``self.mean = self.mean.type_as(x)`` is
  undone, also on the meta device; added entries such as patched forwards are removed) and, one level down, the
  contents of the dicts, lists and sets it holds: ``_parameters``, ``_buffers``, ``_modules``, every hook dict
  (forward, pre-forward, backward, state-dict, load hooks, ...), ``training``, the user's own containers;
  the module's class; torch's global module hooks;
- every tensor found there (parameters, buffers, plain tensor attributes) and in the example inputs: its storage
  (a ``param.data = new`` swap, what :meth:`initwise.Plan.apply` does, is swapped back), its values,
  ``requires_grad``, ``.grad`` (held aside during the run: nothing can accumulate into it) and its version
  counter (set back after a restore, so autograd graphs that saved the tensor before the call stay valid);
- the global CPU and CUDA RNG states, Python's ``random`` and NumPy's global RNG (when ``numpy.random`` is
  imported; one imported during the run is left seeded from the OS's entropy, as a fresh import is), grad mode
  and the default dtype.

Values without copying the model: buffers and plain tensor attributes (small: running statistics, constants) are
cloned; parameters and the example tensors are copied on write (:mod:`initwise._copy_on_write`). While the guard
is active a ``TorchFunctionMode`` looks at every in-place call (a method ending in ``_``, ``x[i] = ...``,
``out=``, ``inplace=True``, ``F.embedding(max_norm=...)``), also through ``.data`` or a view, and clones a watched
tensor just before its storage is first written. A write that bypasses Python (a TorchScript or C++ extension op)
is still seen by the version counter; such a tensor cannot be restored, and :meth:`Snapshot.restore` says so
(:class:`GuardError`).
Cost for a ResNet-50: see ``benchmarks/bench_guard.py``. Deeper state (objects inside a list attribute,
attributes of a Parameter object) is not inspected.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import operator
import random
import sys
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from ._copy_on_write import ACTIVE, NO_HOOKS, CopyOnWrite, Tracked, set_version, storage_moved, storage_ptr
from ._nested import map_tensors, tensors

__all__ = ["GuardError", "Snapshot", "fresh", "guarded", "preserved", "seed_all"]

_CONTAINERS = (dict, list, set)
_OPAQUE = frozenset((bool, int, float, str, type(None), tuple))  # what the guard does not look into


class GuardError(RuntimeError):
    """A tensor that was not snapshotted by value was written: the model could not be restored exactly."""


def _copy_container(c: Any) -> Any:
    return dict(c) if isinstance(c, dict) else list(c) if isinstance(c, list) else set(c)


def _container_changed(c: Any, saved: Any) -> bool:
    """Entries added, removed, reordered or replaced (compared by identity: never a tensor's ``==``)."""
    if len(c) != len(saved):
        return True
    if not saved:
        return False
    if isinstance(c, dict):
        return list(c) != list(saved) or not all(map(operator.is_, c.values(), saved.values()))
    if isinstance(c, list):
        return not all(map(operator.is_, c, saved))
    return c != saved


def _restore_container(c: Any, saved: Any) -> None:
    if isinstance(c, list):
        c[:] = saved
    else:  # dict (insertion order kept) or set
        c.clear()
        c.update(saved)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state(), "random": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    npr = sys.modules.get("numpy.random")  # only once imported: reading it would import it (~3 MiB)
    if npr is not None:
        state["numpy"] = npr.get_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    random.setstate(state["random"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])
    npr = sys.modules.get("numpy.random")
    if "numpy" in state and npr is not None:
        npr.set_state(state["numpy"])
    elif npr is not None:  # imported since the state was saved (by seed_all, or the run): as a fresh import is,
        npr.seed()  # seeded from the OS's entropy (no state of the caller's to put back)


def seed_all(seed: int) -> None:
    """Seed torch's CPU generator, the CUDA generators (only if CUDA is already initialized: a lazy seed would
    outlive the guard), Python's ``random`` and NumPy's global RNG. Only inside a guard, which restores them."""
    torch.default_generator.manual_seed(seed)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(seed)
    random.seed(seed)
    np = sys.modules.get("numpy")
    if np is not None:
        np.random.seed(int(seed) % 2**32)


def fresh(example: Any) -> Any:
    """``example`` with every tensor cloned: a forward that writes its input in place writes the clone."""
    return map_tensors(example, lambda t: t.clone())


class Snapshot:
    """What a run may change in ``model``, the ``examples`` and the global state; :meth:`restore` puts it back.

    Args:
        model: the module whose every submodule is recorded.
        examples: tensors or nested tuples/lists/dicts of tensors (the caller's inputs, targets).
        clone: False: buffers and plain tensor attributes are copied on write too, as parameters are (for a run
            that reaches them only through stand-ins, as the meta-device trace does: a write that bypasses Python
            is then reported, not undone).

    Creating it starts the copy-on-write mode; :meth:`restore` can be called many times (after each scheme or
    draw); :meth:`close` restores and ends (also the mode: create and close it around the block, as
    :func:`preserved` does).
    """

    def __init__(self, model: nn.Module, examples: tuple = (), *, clone: bool = True) -> None:
        with torch._C.DisableTorchFunction():  # its own tensor calls pass no mode (an outer guard's included)
            self._record(model, examples, clone)
        self._mode: CopyOnWrite | None = CopyOnWrite(self._watched)
        self._mode.__enter__()
        ACTIVE.append(self)

    def _record(self, model: nn.Module, examples: tuple, clone: bool) -> None:
        # per module: (module, class, its __dict__ copied, the containers it holds that are empty now, the others
        # each with a copy of its contents)
        self._modules: list[tuple[nn.Module, type, dict[str, Any], list[Any], list[tuple[Any, Any]]]] = []
        self._tensors: dict[int, Tracked] = {}
        found = self._tensors
        scalars, tensor = _OPAQUE, torch.Tensor
        for name, m in model.named_modules():
            saved = m.__dict__.copy()
            empty: list[Any] = []
            full: list[tuple[Any, Any]] = []
            self._modules.append((m, type(m), saved, empty, full))
            for k, v in saved.items():
                if type(v) in scalars:  # most of a module's entries (flags, sizes, names, tuples of them): nothing
                    continue  # inside (a tuple's items are not inspected)
                if isinstance(v, tensor):
                    if id(v) not in found:
                        found[id(v)] = Tracked(v, f"{name}.{k}" if name else k, clone)
                    continue
                if not isinstance(v, _CONTAINERS):
                    continue
                if not v:  # most hook dicts: nothing to copy (restore empties it again if the run filled it)
                    empty.append(v)
                    continue
                c = _copy_container(v)
                full.append((v, c))
                own = k in ("_parameters", "_buffers")
                for key, t in (c.items() if isinstance(c, dict) else enumerate(c)):
                    if isinstance(t, tensor) and id(t) not in found:
                        where = key if own else f"{k}[{key!r}]"
                        # buffers and plain tensors: cloned now (small); parameters: copied on write
                        found[id(t)] = Tracked(t, f"{name}.{where}" if name else where, clone and k != "_parameters")
        for i, t in enumerate(tensors(list(examples))):
            if id(t) not in self._tensors:
                self._tensors[id(t)] = Tracked(t, f"example tensor {i}", False)
        mod = nn.modules.module
        self._global_hooks = {k: (v, dict(v)) for k, v in vars(mod).items()
                              if k.startswith("_global_") and isinstance(v, dict)}
        self._rng = _rng_state()
        self._grad_enabled = torch.is_grad_enabled()
        self._dtype = torch.get_default_dtype()
        watched: dict[int, list[Tracked]] = {}
        for e in self._tensors.values():
            if e.grad is not None:  # held aside: nothing in the run can accumulate into it
                e.t.grad = None
            if e.clone is None and (ptr := storage_ptr(e.t)):
                watched.setdefault(ptr, []).append(e)
        self._watched = watched

    def seed(self, seed: int) -> None:
        """Seed the global RNGs (:func:`seed_all`): what the run draws no longer depends on the caller's state."""
        seed_all(seed)

    def restore_rng(self) -> None:
        """Put the global RNG states back as they were."""
        _set_rng_state(self._rng)

    def restore(self, *, hold_grads: bool = True) -> None:
        """Put everything back; raises :class:`GuardError` (after restoring all it can) when a tensor without a
        clone was written."""
        with torch._C.DisableTorchFunction():  # its own tensor calls pass no mode (an outer guard's included)
            self._restore(hold_grads)

    def _restore(self, hold_grads: bool) -> None:
        lost: list[str] = []
        mode = self._mode
        watched = mode.watched if mode is not None else {}
        if mode is not None:
            mode.watched = {}  # the restore's own copies are not writes to watch
        is_ = operator.is_
        for m, cls, saved, empty, full in self._modules:
            if type(m) is not cls:
                m.__class__ = cls
            d = m.__dict__
            # (the common case, nothing added, removed or replaced, is seen in one pass of identity checks)
            if len(d) != len(saved) or d.keys() != saved.keys() or not all(map(is_, d.values(), saved.values())):
                for k in [k for k in d if k not in saved]:
                    del d[k]
                for k, v in saved.items():
                    if d.get(k, d) is not v:
                        d[k] = v
            for v in empty:
                if v:
                    v.clear()
            for v, c in full:
                if _container_changed(v, c):
                    _restore_container(v, c)
        for v, c in self._global_hooks.values():
            if _container_changed(v, c):
                _restore_container(v, c)
        with torch.no_grad():
            for e in self._tensors.values():
                t = e.t
                moved = storage_moved(t, e.data)
                if moved:
                    t.data = e.data  # the storage was swapped (``t.data = new``): swap it back
                if e.clone is not None:
                    if t._version != e.version or not torch.equal(t.detach(), e.clone):
                        t.copy_(e.clone)
                elif t._version != e.version and not moved and t.device.type != "meta" and t.numel():
                    # (an empty tensor holds no values: a write to it loses nothing)
                    lost.append(e.where)  # written, unseen by the copy-on-write mode (TorchScript, C++)
                set_version(t, e.version)
                if t.is_leaf and t.requires_grad != e.requires_grad:
                    t.requires_grad_(e.requires_grad)
                if t.is_leaf:
                    grad = None if hold_grads else e.grad
                    if t.grad is not grad:
                        t.grad = grad
                for k, h, contents in e.hooks or NO_HOOKS:
                    now = getattr(t, k, None)
                    if now is None and h is None:  # none before, none now (most tensors)
                        continue
                    if now is not None and (now is not h or _container_changed(now, contents or {})):
                        now.clear()  # autograd holds this dict: emptying it is what removes the hooks
                        if now is h and contents:
                            now.update(contents)
                    if getattr(t, k, None) is not h:
                        setattr(t, k, h)
                if e.grad is not None and e.grad._version != e.grad_version:
                    lost.append(f"{e.where}.grad")
        _set_rng_state(self._rng)
        torch.set_grad_enabled(self._grad_enabled)
        torch.set_default_dtype(self._dtype)
        if mode is not None:
            mode.watched = watched
        if lost:
            raise GuardError(f"the forward wrote {', '.join(lost)} where initwise could not restore it")

    def close(self) -> None:
        """Restore everything, ``.grad`` included, and end (the copy-on-write mode is left)."""
        try:
            self.restore(hold_grads=False)
        finally:
            mode, self._mode = self._mode, None
            if mode is not None:
                mode.__exit__(None, None, None)
            if self in ACTIVE:
                ACTIVE.remove(self)


@contextlib.contextmanager
def preserved(model: nn.Module, *examples: Any, clone: bool = True) -> Iterator[Snapshot]:
    """Run the block, then put ``model``, ``examples`` and the global state back exactly (also on errors).
    ``clone``: see :class:`Snapshot`.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)).train()
        >>> state = torch.get_rng_state()
        >>> with preserved(net) as snap:
        ...     snap.seed(0)
        ...     _ = net(torch.ones(2, 4))
        >>> torch.equal(torch.get_rng_state(), state)
        True
    """
    snap = Snapshot(model, examples, clone=clone)
    try:
        yield snap
    finally:
        snap.close()


def guarded(model: str, *examples: str) -> Callable[[Callable], Callable]:
    """Decorate a function so that its whole body runs inside :func:`preserved` of the named arguments."""

    def wrap(fn: Callable) -> Callable:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                bound = sig.bind_partial(*args, **kwargs).arguments
            except TypeError:
                return fn(*args, **kwargs)  # let the call itself raise
            m = bound.get(model)
            if not isinstance(m, nn.Module):
                return fn(*args, **kwargs)  # the function's own check names the problem
            with preserved(m, *(bound.get(e) for e in examples)):
                return fn(*args, **kwargs)

        return run

    return wrap
