"""An independent check of the activations initwise traces: what the model's code applies after each weight op.

initwise's trace (:mod:`initwise._trace`) records torch functions and module calls. This check does not reuse
any of it: it runs the model's real forward (on a copy, under ``torch.no_grad()``) below autograd, under a
``TorchDispatchMode`` that sees every **aten** op, records which op produced each tensor (by object identity;
every tensor is held until the end, so identities are never reused) and which ops consume it. Parameters are
known by identity, the example inputs are the signal; a tensor is *signal* when it descends from an input and
*weight-derived* when it descends only from parameters (and constants).

A **weight op** is an aten ``convolution`` / ``addmm`` / ``mm`` / ``bmm`` / ``baddbmm`` / ``linear`` / ``matmul``
with one weight-derived operand and another that is not (the signal, or a constant: a position-bias MLP on
coordinates made in the forward); its output is signal. From its output the check walks forward through ops that
are linear in the signal or only move it, and through norms (which is where the model's code applies the
activation in ``conv -> norm -> act``):

- views, copies, padding, pixel (un)shuffle, interpolation, pooling, ``mean``/``sum``, dropout (train-mode
  dropout is a product with a random mask: a constant), ``add``/``sub`` of a constant or another signal (bias,
  residual joins), ``cat``/``stack``, products and quotients with a constant or a weight-derived tensor;
- ``native_batch_norm`` / ``native_layer_norm`` / ``native_group_norm`` and their variants;

and stops at

- another weight op (the output feeds a layer first: nothing applied in between);
- an elementwise activation (``relu``, ``leaky_relu`` with its slope, ``gelu`` (exact or tanh), ``silu``,
  ``sigmoid``, ``tanh``, ``hardswish``, ``hardsigmoid``, ``hardtanh`` (``relu6`` for 0..6), ``elu``, ``selu``,
  ``celu``, ``softplus``, ``mish``, ``_prelu_kernel``, ``log_sigmoid``, ``sin``): recorded by name;
- a product with another signal: ``silu`` when the other factor is ``sigmoid`` of this very tensor
  (a hand-written Swish), ``x*f(x)`` when the other factor is computed from this tensor alone by elementwise
  ops (a hand-written GELU / quick-GELU), ``gate`` otherwise (NAFNet's ``x1 * x2``, an attention map);
- anything else (``softmax``, a product of two signals by ``matmul``, a division by a signal, ...): "other".

The **comparison** (one row per parameter, at its first use as a weight, as initwise traces the first call):
a layer initwise traces as ``linear`` disagrees when an elementwise activation is reachable; a layer traced with an
activation disagrees when no reachable activation matches it (same name, same slope for leaky ReLU; a user's
pointwise module, which initwise takes as the function itself, matches any reachable activation); a layer
traced as ``gate`` disagrees when no product with another signal is reachable; a hand-written ``x*f(x)`` agrees
with a user activation or with the canonical SiLU / GELU / tanh-GELU / Mish initwise recognizes in such a
product (whether it is the right function is tested against the real module in ``tests/test_pointwise.py``). A product with another signal
reached from the operand the other one is computed from (the value side of ``x * attention(x)``) is not an
activation: ``linear`` agrees with it. A weight op whose weight initwise gives no layer is reported as
``unmatched``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["ActRow", "ActReport", "check_activations", "code_activations"]

_WEIGHT_OPS = frozenset("convolution _convolution addmm mm bmm baddbmm addbmm linear matmul".split())
_ACTS = {"relu": "relu", "leaky_relu": "leaky_relu", "gelu": "gelu", "silu": "silu", "sigmoid": "sigmoid",
         "tanh": "tanh", "hardswish": "hardswish", "hardsigmoid": "hardsigmoid", "hardtanh": "hardtanh",
         "elu": "elu", "selu": "selu", "celu": "celu", "softplus": "softplus", "mish": "mish",
         "_prelu_kernel": "prelu", "prelu": "prelu", "log_sigmoid_forward": "logsigmoid", "sin": "sin",
         "rrelu_with_noise": "leaky_relu"}
_MOVE = frozenset("""view _unsafe_view reshape permute transpose t expand squeeze unsqueeze slice select split
split_with_sizes chunk unbind clone contiguous _to_copy alias detach lift_fresh copy pixel_shuffle pixel_unshuffle
constant_pad_nd reflection_pad1d reflection_pad2d reflection_pad3d replication_pad1d replication_pad2d
replication_pad3d pad upsample_nearest1d upsample_nearest2d upsample_nearest3d upsample_bilinear2d
upsample_bicubic2d upsample_linear1d upsample_trilinear3d _upsample_nearest_exact2d _upsample_bilinear2d_aa roll
flip index index_select repeat unfold im2col col2im avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d
_adaptive_avg_pool2d adaptive_avg_pool2d _adaptive_avg_pool3d max_pool2d_with_indices max_pool3d_with_indices
max_pool1d max_pool2d adaptive_max_pool2d mean sum native_dropout add sub rsub neg cat stack
channel_shuffle native_channel_shuffle narrow unsafe_split as_strided movedim fill_ zero_ expand_as
""".split())
_NORMS = frozenset("""native_batch_norm _native_batch_norm_legit _native_batch_norm_legit_no_training
_native_batch_norm_legit_functional _batch_norm_with_update _batch_norm_no_update native_layer_norm
native_group_norm batch_norm layer_norm group_norm rms_norm _fused_rms_norm instance_norm""".split())
_SCALE = frozenset(("mul", "div"))
# ops a hand-written activation is made of (x * f(x): f computed from x alone, elementwise)
_POINTWISE = frozenset(set(_ACTS) | set("""mul div add sub rsub neg pow erf erfc exp tanh sigmoid abs sqrt rsqrt
reciprocal clamp clamp_min clamp_max log log1p expm1 square""".split()))


@dataclass
class _Node:
    op: str
    args: tuple
    kwargs: dict
    ins: list[tuple[int, int] | None]  # per flattened tensor input: (node, output index) or None (constant)
    signal: bool
    weight: bool
    params: frozenset[str]  # the parameters a weight-derived tensor is computed from
    users: list[tuple[int, int]] = field(default_factory=list)  # (consumer node, position in its ins)


class _Recorder(TorchDispatchMode):
    def __init__(self, params: dict[int, str], inputs: Iterable[torch.Tensor]) -> None:
        super().__init__()
        self.params = params
        self.nodes: list[_Node] = []
        self.where: dict[int, tuple[int, int]] = {}
        self.hold: list[Any] = []
        for t in inputs:
            self._put(_Node("input", (), {}, [], True, False, frozenset()), [t])

    def _put(self, node: _Node, outs: list) -> int:
        i = len(self.nodes)
        self.nodes.append(node)
        for k, t in enumerate(outs):
            if isinstance(t, torch.Tensor):
                self.where[id(t)] = (i, k)
        self.hold.append(outs)
        return i

    def _source(self, t: torch.Tensor) -> tuple[int, int] | None:
        if id(t) in self.where:
            return self.where[id(t)]
        name = self.params.get(id(t))
        if name is None:
            return None
        return (self._put(_Node("param", (), {}, [], False, True, frozenset((name,))), [t]), 0)

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        flat = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        ins = [self._source(t) for t in flat]  # before the call: an in-place op re-maps its input
        out = func(*args, **kwargs)
        srcs = [self.nodes[s[0]] for s in ins if s is not None]
        op = func.overloadpacket.__name__
        # a weight op's output is signal also when its other operand is a constant (a position-bias MLP on
        # coordinates made in the forward, Swin-V2's coordinate table buffer)
        signal = any(n.signal for n in srcs) or op in _WEIGHT_OPS and any(n.weight for n in srcs) and any(
            s is None or not self.nodes[s[0]].weight for s in ins)
        weight = not signal and any(n.weight for n in srcs)
        params = frozenset().union(*(n.params for n in srcs)) if weight else frozenset()
        node = _Node(op, args, kwargs, ins, signal, weight, params)
        i = self._put(node, [t for t in tree_flatten(out)[0]])
        for pos, s in enumerate(ins):
            if s is not None:
                self.nodes[s[0]].users.append((i, pos))
        return out


def _act_name(n: _Node) -> str:
    name = _ACTS[n.op.rstrip("_")] if n.op.rstrip("_") in _ACTS else _ACTS[n.op]
    a = n.args
    if name == "leaky_relu":
        slope = a[1] if len(a) > 1 else n.kwargs.get("negative_slope", 0.01)
        if n.op.startswith("rrelu"):
            lo, hi = (a[2] if len(a) > 2 else 1 / 8), (a[3] if len(a) > 3 else 1 / 3)
            slope = (lo + hi) / 2
        return f"leaky_relu({float(slope):.6g})"
    if name == "gelu":
        return "gelu_tanh" if n.kwargs.get("approximate", "none") == "tanh" else "gelu"
    if name == "hardtanh":
        lo, hi = (a[1] if len(a) > 1 else -1.0), (a[2] if len(a) > 2 else 1.0)
        return "relu6" if (float(lo), float(hi)) == (0.0, 6.0) else f"hardtanh({float(lo):g},{float(hi):g})"
    return name


def _tensor_ins(nodes: list[_Node], n: _Node) -> list[tuple[int, int]]:
    return [s for s in n.ins if s is not None and nodes[s[0]].signal]


def _users(nodes: list[_Node], s: tuple[int, int]) -> list[tuple[int, int]]:
    """(consumer, position) of every op that read output ``s[1]`` of node ``s[0]``."""
    return [(u, pos) for u, pos in nodes[s[0]].users if nodes[u].ins[pos] == s]


def _elementwise(n: _Node) -> bool:
    return n.signal and n.op.rstrip("_") in _POINTWISE


def _roots(nodes: list[_Node], s: tuple[int, int]) -> frozenset[tuple[int, int]]:
    """The signals ``s`` is computed from by elementwise ops only (``s`` itself if it is not elementwise)."""
    out, todo, seen = set(), [s], set()
    while todo:
        t = todo.pop()
        if t in seen:
            continue
        seen.add(t)
        n = nodes[t[0]]
        if _elementwise(n):
            todo.extend(_tensor_ins(nodes, n))
        else:
            out.add(t)
    return frozenset(out)


def _self_product(nodes: list[_Node], u: _Node) -> bool:
    """``u`` is a product of two signals computed elementwise from the same signals (``x * sigmoid(x)``,
    ``0.5 * x * (1 + erf(x / sqrt(2)))``): a hand-written activation."""
    sig = _tensor_ins(nodes, u)
    return u.op.rstrip("_") == "mul" and len(sig) == 2 and _roots(nodes, sig[0]) == _roots(nodes, sig[1])


def _feeds_self_product(nodes: list[_Node], s: tuple[int, int]) -> bool:
    """The output ``s`` of an activation only flows, through elementwise ops, into a hand-written activation's
    product (the ``sigmoid`` of ``x * sigmoid(x)``, the ``tanh`` of a hand-written tanh-GELU)."""
    todo, seen, hit = [s], set(), False
    while todo:
        t = todo.pop()
        if t in seen:
            continue
        seen.add(t)
        users = _users(nodes, t)
        if not users:
            return False
        for user, _ in users:
            u = nodes[user]
            if _self_product(nodes, u):
                hit = True
            elif _elementwise(u):
                todo.append((user, 0))
            else:
                return False
    return hit


def _after(nodes: list[_Node], start: int) -> set[str]:
    """What the code applies to the output of weight op ``start``: activation names, "silu", "x*f(x)", "gate",
    "value", "layer", "other:op" (see the module doc)."""
    found: set[str] = set()
    todo, seen = [(start, 0)], set()
    while todo:
        s = todo.pop()
        for user, pos in _users(nodes, s):
            if (user, s) in seen:
                continue
            seen.add((user, s))
            u = nodes[user]
            op = u.op if u.op in _MOVE else u.op.rstrip("_")
            sig = _tensor_ins(nodes, u)
            if u.op in _WEIGHT_OPS and any(x is not None and nodes[x[0]].weight for x in u.ins):
                found.add("layer")
            elif op in _ACTS:
                if not _feeds_self_product(nodes, (user, 0)):
                    found.add(_act_name(u))
            elif op == "mul" and len(sig) == 2:
                other = sig[1] if sig[0] == s else sig[0]
                o = nodes[other[0]]
                if _self_product(nodes, u):
                    sigmoid = o.op.rstrip("_") == "sigmoid" and _tensor_ins(nodes, o) == [s]
                    found.add("silu" if sigmoid else "x*f(x)")
                elif _descends(nodes, other, s):
                    found.add("value")  # this tensor is what a gate computed from it multiplies
                else:
                    found.add("gate")
            elif op == "div" and (len(sig) == 2 or pos != 0):
                found.add("other:div")
            elif op in _MOVE or op in _NORMS or op in _SCALE:
                todo.extend((user, k) for k in ([0] if op in _NORMS else range(_nouts(u))))
            else:
                found.add(f"other:{u.op}")
    return found


def _nouts(n: _Node) -> int:
    return n.__dict__.get("_nouts", 1)


def _descends(nodes: list[_Node], a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Signal ``a`` is computed from signal ``b`` (b an ancestor of a)."""
    todo, seen = [a], set()
    while todo:
        s = todo.pop()
        if s == b:
            return True
        if s in seen or s[0] < b[0]:
            continue
        seen.add(s)
        todo.extend(x for x in nodes[s[0]].ins if x is not None and nodes[x[0]].signal)
    return False


def code_activations(model: nn.Module, example: Any) -> dict[str, set[str]]:
    """Per parameter used as a weight (dotted name): what the code applies after its first weight op."""
    probe = copy.deepcopy(model)
    params = {id(p): n for n, p in probe.named_parameters(remove_duplicate=False)}
    inputs = [t for t in tree_flatten(example)[0] if isinstance(t, torch.Tensor)]
    inputs = [t.clone() for t in inputs]
    rec = _Recorder(params, inputs)
    with torch.random.fork_rng(devices=[]), torch.no_grad(), rec:
        torch.manual_seed(0)
        if isinstance(example, dict):
            probe(**dict(zip(example, inputs)))
        elif isinstance(example, (tuple, list)):
            probe(*inputs)
        else:
            probe(inputs[0])
    for n in rec.nodes:  # how many tensors each op returned (views of split/unbind: one index each)
        n.__dict__["_nouts"] = 1
    for n in rec.nodes:
        for s in n.ins:
            if s is not None:
                m = rec.nodes[s[0]]
                m.__dict__["_nouts"] = max(m.__dict__["_nouts"], s[1] + 1)
    out: dict[str, set[str]] = {}
    for i, n in enumerate(rec.nodes):
        if n.op not in _WEIGHT_OPS or not n.signal:
            continue
        names = _weight_params(rec.nodes, n)
        found = None
        for p in sorted(names):
            if p not in out:
                found = found if found is not None else _after(rec.nodes, i)
                out[p] = found
    return out


def _weight_params(nodes: list[_Node], n: _Node) -> frozenset[str]:
    """The parameters the weight operand of weight op ``n`` is computed from (not its bias)."""
    if n.op in ("convolution", "_convolution", "linear"):
        slots = [1]
    elif n.op in ("addmm", "baddbmm", "addbmm"):
        slots = [1, 2]
    else:
        slots = [0, 1]
    for k in slots:
        s = n.ins[k] if k < len(n.ins) else None
        if s is not None and nodes[s[0]].weight:
            return nodes[s[0]].params
    return frozenset()


@dataclass
class ActRow:
    layer: str
    param: str
    traced: str
    code: tuple[str, ...]
    agree: bool
    why: str = ""


@dataclass
class ActReport:
    rows: list[ActRow]
    unmatched: list[str]

    @property
    def disagreements(self) -> list[ActRow]:
        return [r for r in self.rows if not r.agree]


_REAL_ACTS = lambda found: {a for a in found if a not in ("layer", "gate", "value") and  # noqa: E731
                            not a.startswith("other:")}


def _traced_name(act: Any) -> str:
    if act.name == "leaky_relu" or act.name == "prelu":
        return f"{act.name}({float(act.param('negative_slope')):.6g})"
    return act.name


# canonical activations initwise recognizes in a hand-written product x * f(x) (:mod:`initwise._pointwise`)
_PRODUCTS = frozenset(("silu", "gelu", "gelu_tanh", "mish"))


def _agree(act: Any, found: set[str]) -> tuple[bool, str]:
    acts = _REAL_ACTS(found)
    if act.name == "linear":
        return (not acts, f"traced linear, the code applies {', '.join(sorted(acts))}" if acts else "")
    if act.name == "gate":
        return ("gate" in found, "" if "gate" in found else "traced gate, the code multiplies by no other signal")
    if not act.known:  # a user's pointwise module: initwise uses the module itself as the function
        return (bool(acts), "" if acts else f"traced {act.name}, the code applies no activation")
    name = _traced_name(act)
    names = {a.split("(")[0] if act.name == "prelu" else a for a in acts}
    ok = name in names or (act.name == "prelu" and "prelu" in names) or (
        act.name in _PRODUCTS and "x*f(x)" in acts)
    return ok, "" if ok else f"traced {name}, the code applies {', '.join(sorted(acts)) or 'no activation'}"


def check_activations(model: nn.Module, example: Any, graph: Any = None) -> ActReport:
    """Compare initwise's traced activation of every weight parameter's layer with :func:`code_activations`."""
    import initwise

    g = graph if graph is not None else initwise.trace(model, example)
    layer_of: dict[str, Any] = {}
    by_name = {i.name: i for i in g.layers}
    for pname, role in g.params.items():
        if role.role == "weight" and role.node is not None:
            info = by_name.get(g.nodes[role.node].module)
            if info is not None:
                layer_of[pname] = info
    for pname in g.params:  # a traced layer whose weight got another role (a Linear on a learned token table or
        # on a constant grid: "module", "shift"): the layer of the module that holds it
        owner, _, attr = pname.rpartition(".")
        if pname not in layer_of and attr == "weight" and owner in by_name:
            layer_of[pname] = by_name[owner]
    canonical = {n: n for n in g.params}
    for name, p in model.named_parameters(remove_duplicate=False):  # tied names -> the first
        first = next((k for k, q in model.named_parameters() if q is p), name)
        canonical[name] = first
    rows, unmatched = [], []
    for pname, found in code_activations(model, example).items():
        info = layer_of.get(canonical.get(pname, pname))
        if info is None:
            role = g.params.get(canonical.get(pname, pname))
            if role is None or role.role == "weight":
                unmatched.append(f"{pname} ({'no role' if role is None else role.describe()})")
            continue
        ok, why = _agree(info.activation, found)
        rows.append(ActRow(info.name, pname, str(info.activation), tuple(sorted(found)), ok, why))
    return ActReport(rows, unmatched)
