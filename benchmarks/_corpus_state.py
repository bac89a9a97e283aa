"""Everything about a model that an initwise call could leave behind, recorded before and compared after.

Independent of initwise's own guard (the harness must not trust the mechanism it checks): the state_dict values
and identities, every plain attribute in every module's ``__dict__`` (identity and value, one level into lists,
tuples and dicts), parameters' ``requires_grad`` and ``.grad``, training flags (they live in ``__dict__``), every
hook dict (module and global), the global RNGs (torch CPU/CUDA, Python, NumPy), torch's global switches and the
caller's example tensors.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["Snapshot", "same_tensor", "tensors_of"]

_PRIMITIVE = (int, float, complex, str, bytes, bool, type(None))
# module.__dict__ entries compared through named_parameters/named_buffers/the module tree instead
_STRUCTURAL = frozenset(("_parameters", "_buffers", "_modules"))


def same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-level equality of two tensors, NaNs in the same places counting as equal; meta tensors never equal a
    real one (and two meta tensors compare by shape/dtype only: they hold no values)."""
    if a.device.type != b.device.type or a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.device.type == "meta":
        return True
    if a.is_floating_point() or a.is_complex():
        return bool(torch.equal(a, b) or ((a == b) | (torch.isnan(a) & torch.isnan(b))).all())
    return bool(torch.equal(a, b))


def _copy(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone() if t.device.type != "meta" else t.detach()


def _desc(t: Any) -> str:
    if isinstance(t, torch.Tensor):
        return f"tensor{tuple(t.shape)} {t.dtype} on {t.device.type}"
    return type(t).__name__


def tensors_of(obj: Any) -> list[torch.Tensor]:
    """The tensors in a nested output (tensor, tuple/list, dict, dataclass-like with ``__dict__`` not followed)."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in tensors_of(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in tensors_of(o)]
    return []


class _Value:
    """Identity plus a comparable value of one attribute (tensors by bits, primitives by ==, containers one level
    deep, anything else by identity only)."""

    def __init__(self, v: Any, depth: int = 0) -> None:
        self.id = id(v)
        self.obj = v  # keep it alive so that the id cannot be reused
        self.kind = "other"
        self.value: Any = None
        if isinstance(v, torch.Tensor):
            self.kind, self.value = "tensor", _copy(v)
            self.meta = (v.device.type, v.dtype, tuple(v.shape), v.requires_grad)
        elif isinstance(v, _PRIMITIVE):
            self.kind, self.value = "primitive", v
        elif depth == 0 and isinstance(v, (list, tuple)):
            self.kind, self.value = "seq", [_Value(x, 1) for x in v]
        elif depth == 0 and isinstance(v, dict):
            self.kind, self.value = "dict", {k: _Value(x, 1) for k, x in v.items()}

    def diff(self, v: Any, where: str) -> list[str]:
        if id(v) != self.id:
            if self.kind == "primitive" and isinstance(v, _PRIMITIVE) and type(v) is type(self.value) \
                    and v == self.value:
                return []  # an equal small int/str rebuilt: not a change anyone can observe
            return [f"{where}: replaced ({_desc(self.obj)} -> {_desc(v)})"]
        if self.kind == "tensor":
            now = (v.device.type, v.dtype, tuple(v.shape), v.requires_grad)
            if now != self.meta:
                return [f"{where}: changed in place {self.meta} -> {now}"]
            if not same_tensor(self.value, v.detach()):
                return [f"{where}: values changed in place"]
        elif self.kind == "seq":
            if len(v) != len(self.value):
                return [f"{where}: length {len(self.value)} -> {len(v)}"]
            return [d for i, (old, new) in enumerate(zip(self.value, v)) for d in old.diff(new, f"{where}[{i}]")]
        elif self.kind == "dict":
            if list(v) != list(self.value):
                return [f"{where}: keys {sorted(map(str, self.value))} -> {sorted(map(str, v))}"]
            return [d for k, old in self.value.items() for d in old.diff(v[k], f"{where}[{k!r}]")]
        return []


def _rng() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _switches() -> dict[str, Any]:
    return {"grad_enabled": torch.is_grad_enabled(), "default_dtype": torch.get_default_dtype(),
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "inference_mode": torch.is_inference_mode_enabled()}


def _global_hooks() -> dict[str, tuple]:
    from torch.nn.modules import module as mm

    names = [n for n in dir(mm) if n.startswith("_global_") and n.endswith("hooks")]
    return {n: tuple((k, id(h)) for k, h in getattr(mm, n).items()) for n in names}


class Snapshot:
    """The state of ``model`` (and the globals, and ``examples``) now; :meth:`diff` lists what changed since.

    ``params=False`` in :meth:`diff` skips parameter values (what ``init_`` is asked to write), but not their
    identity, ``requires_grad`` or ``.grad``.
    """

    def __init__(self, model: nn.Module, examples: Any = ()) -> None:
        self.modules = [(name, m, id(m)) for name, m in model.named_modules(remove_duplicate=False)]
        self.attrs = {name: {k: _Value(v) for k, v in vars(m).items() if k not in _STRUCTURAL}
                      for name, m, _ in self.modules}
        self.params = {n: (id(p), p.requires_grad, None if p.grad is None else _copy(p.grad), _copy(p))
                       for n, p in model.named_parameters(remove_duplicate=False)}
        self.buffers = {n: (id(b), _Value(b)) for n, b in model.named_buffers(remove_duplicate=False)}
        self.state = {k: (id(v), _copy(v)) for k, v in model.state_dict(keep_vars=True).items()}
        self.examples = [(t, _copy(t)) for t in tensors_of(examples)]
        self.rng = _rng()
        self.switches = _switches()
        self.hooks = _global_hooks()

    def diff(self, model: nn.Module, *, params: bool = True) -> list[str]:
        out: list[str] = []
        now = [(name, m, id(m)) for name, m in model.named_modules(remove_duplicate=False)]
        if [(n, i) for n, _, i in now] != [(n, i) for n, _, i in self.modules]:
            out.append("module tree: modules added, removed or replaced")
        for name, m, _ in now:
            old = self.attrs.get(name)
            if old is None:
                continue
            where = name or "<root>"
            cur = {k: v for k, v in vars(m).items() if k not in _STRUCTURAL}
            for k in sorted(set(cur) - set(old)):
                out.append(f"{where}.{k}: attribute added ({_desc(cur[k])})")
            for k in sorted(set(old) - set(cur)):
                out.append(f"{where}.{k}: attribute removed")
            for k, v in old.items():
                if k in cur:
                    out += v.diff(cur[k], f"{where}.{k}")
        cur_p = dict(model.named_parameters(remove_duplicate=False))
        if list(cur_p) != list(self.params):
            out.append(f"parameters: names changed ({len(self.params)} -> {len(cur_p)})")
        for n, (pid, rg, grad, val) in self.params.items():
            p = cur_p.get(n)
            if p is None:
                continue
            if id(p) != pid:
                out.append(f"parameter {n}: replaced by another object")
            if p.requires_grad != rg:
                out.append(f"parameter {n}: requires_grad {rg} -> {p.requires_grad}")
            if (grad is None) != (p.grad is None) or (grad is not None and not same_tensor(grad, p.grad)):
                out.append(f"parameter {n}: .grad changed ({'None' if grad is None else 'set'} -> "
                           f"{'None' if p.grad is None else 'set'})")
            if params and not same_tensor(val, p.detach()):
                out.append(f"parameter {n}: values changed")
        cur_b = dict(model.named_buffers(remove_duplicate=False))
        if list(cur_b) != list(self.buffers):
            out.append(f"buffers: names changed ({sorted(self.buffers)} -> {sorted(cur_b)})")
        for n, (bid, v) in self.buffers.items():
            if n in cur_b:
                out += v.diff(cur_b[n], f"buffer {n}")
        sd = model.state_dict(keep_vars=True)
        if list(sd) != list(self.state):
            out.append("state_dict: keys changed")
        param_keys = set(self.params)
        for k, (vid, val) in self.state.items():
            if k in sd and (params or k not in param_keys) and not same_tensor(val, sd[k].detach()):
                out.append(f"state_dict[{k!r}]: values changed")
        for i, (t, val) in enumerate(self.examples):
            if not same_tensor(val, t.detach()):
                out.append(f"example tensor {i}: values changed")
        rng = _rng()
        for k, v in self.rng.items():
            same = (all(torch.equal(a, b) for a, b in zip(v, rng.get(k, []))) if k == "cuda"
                    else torch.equal(v, rng[k]) if k == "torch"
                    else _np_state_equal(v, rng[k]) if k == "numpy" else v == rng[k])
            if not same:
                out.append(f"global {k} RNG state changed")
        if _switches() != self.switches:
            out.append(f"torch global switches changed: {self.switches} -> {_switches()}")
        if _global_hooks() != self.hooks:
            out.append("global module hooks changed")
        return _dedupe(out)


def _np_state_equal(a: tuple, b: tuple) -> bool:
    return a[0] == b[0] and bool(np.array_equal(a[1], b[1])) and tuple(a[2:]) == tuple(b[2:])


def _dedupe(lines: list[str]) -> list[str]:
    return list(dict.fromkeys(lines))
