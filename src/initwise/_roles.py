"""Parameter roles from the op that consumes them (what the trace says each parameter *is*).

A module's class is a weak guide: ``ScaledStdConv2d.gain`` is a per-channel scale shaped like a 4-D weight,
a frozen Sobel mask is a constant, ``F.linear(x, self.qkv.weight)`` uses a weight without calling its module,
a weight-standardized conv draws a weight whose scale does not matter. While the model runs, the recorder
hands every torch function whose arguments hold a parameter (or a tensor computed from one) to
:class:`RoleTracker`, which follows the derivation (``view``, ``reshape``, standardization, products) and
records, at the op that meets the signal, the argument the parameter fills:

- ``weight`` of a conv / transposed conv / linear / bilinear map (layout, groups, stride and dilation from the
  op's own arguments: the fans follow), ``standardized`` when it was normalized by its own statistics first
  (Qiao et al. 2019; NF-Nets, Brock et al. 2021: the drawn scale then does not matter, the effective weight has
  variance ``gain^2 / fan_in``), ``computed`` when it is combined from several parameters (re-parameterized
  eval-mode convs);
- ``bias`` of such a map; ``norm_weight`` / ``norm_bias`` of a norm op; ``table`` of an embedding;
- ``scale`` (multiplies the signal or a weight: layer scale, NF-Net gain, NAFNet's beta), ``shift`` (added:
  position embeddings, hand-written biases), ``token`` (concatenated: ViT's class token), ``activation``
  (PReLU's slopes), ``other`` (any other op).

A scheme draws only the roles it defines (weights, tables, biases, norms' affine pairs); :func:`keep_reason`
says why any other parameter keeps its value.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import torch

from ._fans import Fans, tensor_fans
from ._nested import tensors as _tensors

__all__ = ["ParamRole", "RoleTracker", "keep_reason", "DRAWN_ROLES", "FACTORY", "NORM_ARGS", "WEIGHT_OPS"]

# op -> (weight index, bias index, stride index, dilation index, groups index, transposed)
_CONV = {f"conv{d}d": (1, 2, 3, 5, 6, False) for d in (1, 2, 3)}
_CONVT = {f"conv_transpose{d}d": (1, 2, 3, 7, 6, True) for d in (1, 2, 3)}
WEIGHT_OPS: dict[str, tuple[int, int | None, int | None, int | None, int | None, bool]] = {
    **_CONV, **_CONVT, "linear": (1, 2, None, None, None, False), "bilinear": (2, 3, None, None, None, False),
    "embedding": (1, None, None, None, None, False), "embedding_bag": (1, None, None, None, None, False),
}
_KW = {0: "input", 1: "weight", 2: "bias", 3: "stride", 5: "dilation", 6: "groups", 7: "dilation"}
# norm op -> (weight index, bias index) in torch.nn.functional's signature
NORM_ARGS = {"batch_norm": (3, 4), "instance_norm": (3, 4), "layer_norm": (2, 3), "group_norm": (2, 3),
             "rms_norm": (2, None)}
_MOVE = frozenset("""view view_as reshape reshape_as permute flatten unflatten transpose t contiguous clone
squeeze unsqueeze expand expand_as broadcast_to repeat repeat_interleave tile getitem narrow select index_select
movedim moveaxis swapaxes swapdims flip to float double half bfloat16 type type_as cpu cuda detach T mT data
chunk split unbind""".split())
_STATS = frozenset("mean std var norm sum amax amin var_mean std_mean".split())
DRAWN_ROLES = frozenset(("weight", "bias", "table", "norm_weight", "norm_bias", "module"))
_PRIORITY = ("weight", "table", "bias", "norm_weight", "norm_bias", "scale", "shift", "token", "activation",
             "module", "other")
# tensors made inside the forward from nothing but shapes: constants, not signal (``torch.ones(...) * self.b0``)
FACTORY = _FACTORY = frozenset("""ones zeros full empty arange linspace logspace eye tensor as_tensor rand randn randint
ones_like zeros_like full_like empty_like rand_like randn_like new_ones new_zeros new_full new_empty
new_tensor""".split())


@dataclass(frozen=True)
class ParamRole:
    """How the example's forward used one parameter (its first use of the highest-priority role).

    ``op`` is the consuming torch function, ``scope`` the module running when it was called, ``fans`` the fans
    of the op's weight argument (from its layout, groups and stride) for ``weight``/``table``; ``node`` the graph
    node the op produced (or the module-level node it belongs to), None if the op made none.
    """

    param: str
    role: str
    op: str
    scope: str
    fans: Fans | None = None
    groups: int = 1
    stride: tuple[int, ...] = ()
    dilation: tuple[int, ...] = ()
    transposed: bool = False
    standardized: bool = False
    computed: bool = False
    node: int | None = None
    effective_ms: float | None = None  # a standardized weight: E[w^2] of the tensor the op used (real pass only)

    def describe(self) -> str:
        """In words, for a plan: ``"weight of conv2d (standardized)"``."""
        what = {"norm_weight": "affine weight of", "norm_bias": "affine bias of", "table": "table of",
                "scale": "multiplicative scale in", "shift": "additive term in", "token": "token concatenated by",
                "activation": "activation parameter of", "other": "operand of", "module": "parameter of",
                "weight": "weight of", "bias": "bias of"}[self.role]
        flags = [f for f, on in (("standardized", self.standardized), ("computed from other parameters",
                                                                         self.computed)) if on]
        return f"{what} {self.op}" + (f" ({', '.join(flags)})" if flags else "")


@dataclass
class _Derived:
    ref: weakref.ref
    how: dict[str, str] = field(default_factory=dict)  # param name -> direct | standardized | scale | computed | stat


def _arg(args: tuple, kwargs: dict, i: int | None, key: str | None) -> Any:
    if i is None:
        return None
    if i < len(args):
        return args[i]
    return kwargs.get(key) if key else None


def _ints(v: Any, n: int) -> tuple[int, ...]:
    if isinstance(v, int):
        return (v,) * n
    if isinstance(v, (tuple, list)) and all(isinstance(x, int) for x in v):
        return tuple(v) if len(v) == n else (tuple(v) * n)[:n]
    return (1,) * n


class RoleTracker:
    """Follows parameters and tensors computed from them through one forward pass; records their roles."""

    def __init__(self, params: dict[int, str], constants: set[int] | None = None) -> None:
        self.params = params  # id(tensor as the forward sees it) -> canonical dotted parameter name
        self.constants = constants or set()  # ids of the buffers as the forward sees them
        self.roles: dict[str, ParamRole] = {}
        self.used: set[str] = set()  # every parameter an op of the forward read (also outside the signal path)
        self.overwritten: set[str] = set()  # parameters the forward replaced (``p.data = ...``, ``p.copy_(...)``)
        self._derived: dict[int, _Derived] = {}
        self._pending: list[str] = []  # roles noted since the last node was emitted
        self.last_weight: str | None = None  # the parameter the last weight op consumed as its weight
        self.value_gaps = 0  # roles whose numbers need values the meta pass does not have

    # ---- provenance
    def sources(self, t: Any) -> dict[str, str] | None:
        """``{param: how}`` if ``t`` is a parameter or was computed from parameters (and constants) only, ``{}``
        for a constant made inside the forward, else None (the signal, or a tensor from outside)."""
        if not isinstance(t, torch.Tensor):
            return None
        name = self.params.get(id(t))
        if name is not None:
            return {name: "direct"}
        d = self._derived.get(id(t))
        return d.how if d is not None and d.ref() is t else None

    def view_of(self, t: Any) -> str | None:
        """The one parameter ``t`` is (or is a view of: ``expand``, ``reshape``), whose values are then its own;
        None for anything else."""
        src = self.sources(t)
        return next(iter(src)) if src and len(src) == 1 and "direct" in src.values() else None

    def touches(self, args: tuple, kwargs: dict) -> bool:
        """A fast first look (every torch call of the forward passes here): does an argument, or an item of a
        list/tuple argument, hold a parameter or a tensor computed from parameters?"""
        p, d = self.params, self._derived
        for a in (*args, *kwargs.values()):
            if isinstance(a, torch.Tensor):
                if id(a) in p or id(a) in d:
                    return True
            elif isinstance(a, (list, tuple)):
                for b in a:
                    if isinstance(b, torch.Tensor) and (id(b) in p or id(b) in d):
                        return True
        return False

    def note_write(self, func: Any, args: tuple) -> None:
        """A forward that assigns a parameter (an eval-mode block fusing its convs into ``eval_conv.weight.data``
        on every call): whatever is drawn into it is replaced."""
        if args and isinstance(args[0], torch.Tensor) and getattr(func, "__name__", "") in ("__set__", "copy_",
                                                                                              "set_"):
            name = self.params.get(id(args[0]))
            if name is not None:
                self.overwritten.add(name)

    def _derive(self, result: Any, how: dict[str, str]) -> None:
        for t in _tensors(result):
            self._derived[id(t)] = _Derived(weakref.ref(t), dict(how))

    # ---- one torch function call
    def observe(self, name: str, args: tuple, kwargs: dict, result: Any, scope: str) -> str | None:
        """Record what ``name(*args, **kwargs)`` does with parameters (``name`` normalized: ``"mul"`` for
        ``__mul__``). Returns the module that owns the consumed weight of a weight op (or the affine weight of a
        norm op), so that the recorder can name its node; the scope module when several parameters make it.

        A tensor that is neither a parameter nor computed from parameters only is the signal (or a constant).
        """
        node = None
        if name in _FACTORY:
            self._derive(result, {})
            return None
        srcs = [(t, self.sources(t)) for t in _tensors((args, kwargs))]
        if not any(s is not None for _, s in srcs):
            return None
        for _, s in srcs:
            if s:
                self.used.update(s)
        has_signal = any(s is None and id(t) not in self.constants and (t.is_floating_point() or t.is_complex())
                         for t, s in srcs)
        if name in WEIGHT_OPS and self.sources(args[0] if args else kwargs.get("input")) is None:
            return self._weight_op(name, args, kwargs, scope, node)
        if name in NORM_ARGS:
            wi, bi = NORM_ARGS[name]
            x = self.sources(args[0] if args else kwargs.get("input"))
            w = self.sources(_arg(args, kwargs, wi, "weight"))
            b = self.sources(_arg(args, kwargs, bi, "bias"))
            if x is not None:  # the weight normalized by its own statistics: weight standardization
                how = {p: "standardized" for p in x}
                how.update({p: "scale" for p in (w or {})})
                how.update({p: "computed" for p in (b or {})})
                self._derive(result, how)
                return None
            for src, role in ((w, "norm_weight"), (b, "norm_bias")):
                for p in src or {}:
                    self._note(p, role, name, scope, node)
            owners = {p.rpartition(".")[0] for p in (w or {})} | {p.rpartition(".")[0] for p in (b or {})}
            return owners.pop() if len(owners) == 1 else None
        if name == "prelu":
            for p in self.sources(_arg(args, kwargs, 1, "weight")) or {}:
                self._note(p, "activation", name, scope, node)
            return None
        if not has_signal:
            self._derive(result, self._combine(name, [s for _, s in srcs if s is not None], args))
            return None
        role = ("scale" if name in ("mul", "multiply", "div", "true_divide", "divide", "truediv") else
                "shift" if name in ("add", "sub", "subtract", "rsub") else
                "token" if name in ("cat", "concat", "concatenate", "stack") else
                "module")  # an op of its own (attention, recurrence): the owning layer's rules decide
        if name == "addcmul":  # addcmul(t, a, b): t is added, a and b multiply
            t = self.sources(args[0] if args else kwargs.get("input"))
            for p in t or {}:
                self._note(p, "shift", name, scope, node)
            role = "scale"
            srcs = [(x, s) for x, s in srcs if s is not t]
        for _, s in srcs:
            for p in s or {}:
                self._note(p, role, name, scope, node)
        return None

    def _combine(self, name: str, srcs: list[dict[str, str]], args: tuple) -> dict[str, str]:
        """Provenance of an op on parameters only (no signal yet): moved, reduced to a statistic, standardized
        by its own statistics (``(w - w.mean()) / w.std()``), scaled per channel, or computed."""
        if name in _MOVE and args and self.sources(args[0]) is not None:  # reshape_as(other): other's shape only
            return dict(self.sources(args[0]) or {})
        if len(srcs) == 1:
            (s,) = srcs
            if name in _MOVE or name in ("neg", "abs") or name in ("mul", "div", "true_divide", "truediv") and \
                    not any(isinstance(a, torch.Tensor) and a.numel() > 1 and self.sources(a) is None for a in args):
                return dict(s)
            if name in _STATS or all(h == "stat" for h in s.values()):
                return {p: "stat" for p in s}
            return {p: "computed" for p in s}
        if len(srcs) == 2 and name in ("sub", "subtract", "div", "true_divide", "divide", "truediv", "mul"):
            a, b = srcs
            shared = set(a) & set(b)
            if shared and name != "mul" and all(b[p] == "stat" for p in shared):  # w - mean(w), w / std(w)
                return {**b, **{p: ("standardized" if name != "sub" else a[p]) for p in a}}
            if name == "mul" and not shared:  # a small factor times a weight: a per-channel scale of it
                na, nb = (_numel(args[0]) if args else 1), (_numel(args[1]) if len(args) > 1 else 1)
                big, small = (a, b) if na >= nb else (b, a)
                return {**{p: "scale" for p in small}, **big}
        merged: dict[str, str] = {}
        for s in srcs:
            for p, how in s.items():
                merged[p] = "stat" if how == "stat" and merged.get(p, "stat") == "stat" else "computed"
        return merged

    def _weight_op(self, name: str, args: tuple, kwargs: dict, scope: str, node: int | None) -> str | None:
        wi, bi, si, di, gi, transposed = WEIGHT_OPS[name]
        w = _arg(args, kwargs, wi, "weight")
        srcs = self.sources(w)
        owner = None
        if srcs:
            direct = [p for p, h in srcs.items() if h in ("direct", "standardized")]
            groups = _arg(args, kwargs, gi, "groups") if gi is not None else 1
            groups = groups if isinstance(groups, int) and groups > 0 else 1
            k = max(w.dim() - 2, 0)
            stride = _ints(_arg(args, kwargs, si, "stride"), k) if si is not None else ()
            dilation = _ints(_arg(args, kwargs, di, "dilation"), k) if di is not None else ()
            fans = _op_fans(name, w, groups, stride, transposed)
            computed = not direct
            eff = None
            if any(h == "standardized" for h in srcs.values()):
                if w.is_meta:
                    self.value_gaps += 1  # its scale is in its values: the real forward must tell
                else:
                    eff = float(w.detach().double().pow(2).mean())
            for p, how in srcs.items():
                if how in ("direct", "standardized", "computed"):
                    role = "table" if name.startswith("embedding") else "weight"
                    self._note(p, role, name, scope, node, fans=fans, groups=groups, stride=stride,
                               dilation=dilation, transposed=transposed, standardized=how == "standardized",
                               computed=computed or how == "computed",
                               effective_ms=eff if how == "standardized" else None)
                else:
                    self._note(p, "scale" if how == "scale" else "other", name, scope, node)
            owner = direct[0].rpartition(".")[0] if len(direct) == 1 else scope
            self.last_weight = direct[0] if len(direct) == 1 else None
        b = self.sources(_arg(args, kwargs, bi, "bias")) if bi is not None else None
        for p, how in (b or {}).items():
            self._note(p, "bias", name, scope, node, computed=how not in ("direct",))
        return owner if srcs else None

    def _note(self, param: str, role: str, op: str, scope: str, node: int | None, **kw: Any) -> None:
        old = self.roles.get(param)
        if old is None or _PRIORITY.index(role) < _PRIORITY.index(old.role):
            self.roles[param] = ParamRole(param, role, op, scope, node=node, **kw)
            self._pending.append(param)

    def attach(self, node: int) -> None:
        """The roles noted since the last node belong to ``node`` (the op's own node, or the module-level node
        of the leaf module whose forward ran them)."""
        for p in self._pending:
            r = self.roles[p]
            if r.node is None:
                self.roles[p] = _replace(r, node)
        self._pending.clear()

    def rebase(self, first: int) -> None:
        """Nodes from ``first`` on were dropped (a module call became one node): their roles wait for it."""
        for p, r in list(self.roles.items()):
            if r.node is not None and r.node >= first:
                self.roles[p] = _replace(r, None)
                self._pending.append(p)


def _replace(r: ParamRole, node: int | None) -> ParamRole:
    """``dataclasses.replace(r, node=node)`` without its per-call signature work (ParamRole has no
    ``__post_init__``: a copy of the fields is the same object)."""
    c = object.__new__(ParamRole)
    c.__dict__.update(r.__dict__)
    object.__setattr__(c, "node", node)
    return c


def _numel(t: Any) -> int:
    return t.numel() if isinstance(t, torch.Tensor) else 1


_FANS: dict[tuple, Fans | None] = {}  # (op, weight shape, groups, stride, transposed) -> its fans (frozen)


def _op_fans(name: str, w: torch.Tensor, groups: int, stride: tuple[int, ...], transposed: bool) -> Fans | None:
    """Fans of the weight as the op reads it (torch layouts: conv ``(out, in/g, *k)``, transposed conv
    ``(in, out/g, *k)``, linear ``(out, in)``, embedding ``(num, dim)``: one row per output). They depend on the
    shape and the op's arguments alone: computed once per distinct combination."""
    key = (name, tuple(w.shape), groups, stride, transposed)
    f = _FANS.get(key, _FANS)
    if f is _FANS:
        f = _FANS[key] = _shape_fans(name, w, groups, stride, transposed)
        if len(_FANS) > 4096:
            _FANS.clear()
    return f


def _shape_fans(name: str, w: torch.Tensor, groups: int, stride: tuple[int, ...], transposed: bool) -> Fans | None:
    """:func:`_op_fans` computed (None where the layout has no fans)."""
    try:
        if name.startswith("embedding"):
            f = tensor_fans(w)
            return Fans(1.0, 1.0, 1.0, 1.0, f.torch_fan_in, f.torch_fan_out,
                        f"{name}: a lookup, each output is one row: fan_in = fan_out = 1")
        if name == "bilinear":
            out, in1, in2 = w.shape
            f = tensor_fans(w)
            return Fans(float(in1 * in2), float(out * in2), float(in1 * in2), float(out * in2), f.torch_fan_in,
                        f.torch_fan_out, "bilinear: weight (out, in1, in2)")
        if w.dim() < 2:
            return None
        if transposed:
            f = tensor_fans(w, in_axis=0, out_axis=1, groups=groups, stride=stride or 1, transposed=True)
            rule = f"{name}: weight (in, out/groups, *k), groups={groups}, stride={stride}"
        elif name == "linear":
            f, rule = tensor_fans(w), f"{name}: weight (out, in)"
        else:
            f = tensor_fans(w, groups=groups, stride=stride or 1)
            rule = f"{name}: weight (out, in/groups, *k), groups={groups}, stride={stride}"
    except (ValueError, TypeError):
        return None
    import dataclasses

    return dataclasses.replace(f, rule=rule)


def keep_reason(role: ParamRole | None, frozen: bool, draw_frozen: bool, in_layer: bool) -> str | None:
    """Why a scheme leaves a parameter as it is, or None when the scheme draws it.

    Args:
        role: what the trace recorded for the parameter (None: the example's forward never used it).
        frozen: ``requires_grad`` is False; kept unless ``draw_frozen``.
        in_layer: the parameter belongs to a traced layer (a ``module`` role is then drawn by the layer's rules).
    """
    if role is None:
        return "not used by the example: kept"
    if frozen and not draw_frozen:
        return "frozen (requires_grad=False): kept"
    if role.role in ("weight", "bias", "table") and role.computed:
        return f"{role.describe()}: kept (the op's weight is computed from several parameters)"
    if role.role in DRAWN_ROLES and (role.role != "module" or in_layer):
        return None
    label = {"scale": "per-channel scale", "shift": "additive term", "token": "token",
             "activation": "activation parameter", "module": "parameter"}.get(role.role, role.role)
    return f"{label} ({role.describe()}): kept"
