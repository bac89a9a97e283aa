"""Trace a model once and say, for every parameterized layer, what follows it: activation, norm, residual join.

:func:`trace` runs one forward pass (no ``torch.fx``: Python control flow that depends on the data is fine) and
returns a :class:`Graph`: the DAG of signal ops in execution order (:class:`Node`) and one :class:`LayerInfo` per
layer, which is what the planner reads.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter

from ._activations import Activation, resolve_activation
from ._sharded import has_sharded, no_fsdp_hooks
from ._graph_walk import (_activation_after, _act_of, _Consumers, _Reach, _residual_after, _shuffle_after,
                          _unknown)
from ._guard import GuardError, preserved
from ._hooks import hooked
from ._meta_pass import TORCH_NORMS, meta_forwards, swap_to_meta
from ._roles import ParamRole
from ._nested import tensors as _tensors
from ._trace import Recorder
from ._trace_vocab import Node, module_role

__all__ = ["Graph", "LayerInfo", "Node", "trace"]



@dataclass
class LayerInfo:
    """One parameterized layer and what its output meets (derived from the DAG of its first call).

    ``activation``: the first activation reached through look-through ops, norms and add/sub/cat joins
    (``through_join`` says a join was passed, as in ResNet's ``relu(x + bn(conv(x)))``); linear if none.
    ``norm``: the norm on the path to that activation, or without one the first norm before any join.
    ``consumers``: the next layers reached through any non-layer node. ``residual_end``: the output reaches a
    residual add/sub as its branch operand through look-through ops, constant scales, activations, norms and the
    signal side of a gating product; ``residual_scale`` is then the product of the constant factors met
    (1.0 if none; the sign of a subtraction join is not included), else None. ``pixel_shuffle``: the upscale
    factor of a pixel shuffle reached through look-through ops only. ``nodes``: one node id per call.
    ``activation`` is ``gate`` when the output first meets a product with another signal (NAFNet's SimpleGate
    ``x1 * x2``, a channel attention without a sigmoid); ``gate`` is that product's node.
    ``owner`` is the dotted name of the module that holds the layer's parameters (the layer's own name, or,
    for a module whose several weights feed separate ops, the module of the ``owner.param`` layer); ``params``
    the owner's parameters that belong to this layer (empty: all of the owner's own).

    ``consumers`` is computed when first read: in a pre-norm transformer every block's output reaches every
    later block through the residual stream, so all layers' consumers together grow with depth squared, and
    planning does not need them.
    """

    name: str
    module: nn.Module = field(repr=False)
    type: str
    order: int
    calls: int
    activation: Activation
    activation_node: int | None
    norm: str | None
    consumers: tuple[str, ...]
    residual_end: bool
    residual_scale: float | None
    pixel_shuffle: int | None
    is_output: bool
    through_join: bool
    notes: tuple[str, ...] = ()
    nodes: tuple[int, ...] = ()  # one node id per call
    owner: str | None = None
    params: tuple[str, ...] = ()
    gate: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.consumers, _Consumers):  # computed when first read (see the class docstring)
            self.__dict__["_consumers"] = self.__dict__.pop("consumers")

    def __getattr__(self, name: str) -> Any:  # only for attributes not found the usual way
        lazy = self.__dict__.get("_consumers") if name == "consumers" else None
        if lazy is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        value = self.__dict__["consumers"] = lazy()
        del self.__dict__["_consumers"]
        return value

    @property
    def owner_name(self) -> str:
        return self.name if self.owner is None else self.owner

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "order": self.order, "calls": self.calls,
                "activation": _act_dict(self.activation), "activation_node": self.activation_node,
                "norm": self.norm, "consumers": list(self.consumers), "residual_end": self.residual_end,
                "residual_scale": self.residual_scale, "pixel_shuffle": self.pixel_shuffle,
                "is_output": self.is_output, "through_join": self.through_join, "notes": list(self.notes),
                "nodes": list(self.nodes), "owner": self.owner_name, "params": list(self.params),
                "gate": self.gate}


@dataclass
class Graph:
    """The traced signal path: ``nodes`` (execution order), ``layers`` (execution order of first call), the ops
    not understood (``unknown``), tied parameter groups, the input/output node ids, and ``params``: per dotted
    parameter name (the first name of a tied one), the :class:`~initwise._roles.ParamRole` its consuming op gave
    it; a parameter the example's forward never used has none.

    Iterating yields the layers; ``graph["body.0"]`` is the :class:`LayerInfo` of that dotted name.
    """

    nodes: list[Node]
    layers: list[LayerInfo]
    unknown: list[str]
    tied: list[tuple[str, ...]]
    input_ids: tuple[int, ...]
    output_ids: tuple[int, ...]
    params: dict[str, ParamRole] = field(default_factory=dict)
    # parameters the forward read (any op), and those it replaced (``p.data = ...``): see RoleTracker
    read: frozenset[str] = frozenset()
    overwritten: frozenset[str] = frozenset()

    def layer(self, name: str) -> LayerInfo:
        for info in self.layers:
            if info.name == name:
                return info
        raise KeyError(f"no traced layer named {name!r}; layers: {', '.join(i.name for i in self.layers)}")

    def __getitem__(self, name: str) -> LayerInfo:
        return self.layer(name)

    def __contains__(self, name: object) -> bool:
        return any(info.name == name for info in self.layers)

    def __iter__(self) -> Iterator[LayerInfo]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __str__(self) -> str:
        rows = [("layer", "type", "activation", "norm", "flags")]
        for i in self.layers:
            flags = [f"calls={i.calls}"] if i.calls > 1 else []
            if i.through_join:
                flags.append("after-join")
            if i.residual_end:
                flags.append(f"residual-end(x{i.residual_scale:g})")
            if i.pixel_shuffle:
                flags.append(f"pixel-shuffle({i.pixel_shuffle})")
            if i.is_output:
                flags.append("output")
            if any(self.params[p].standardized for p in _layer_params(i, self)):
                flags.append("weight-standardized")
            rows.append((i.name, i.type, str(i.activation), i.norm or "-", " ".join(flags)))
        widths = [max(len(r[c]) for r in rows) for c in range(4)]
        lines = ["  ".join(r[c].ljust(widths[c]) for c in range(4)) + "  " + r[4] for r in rows]
        lines += [f"tied: {', '.join(g)}" for g in self.tied]
        lines += [f"unknown: {u}" for u in self.unknown]
        return "\n".join(line.rstrip() for line in lines)

    def to_dict(self) -> dict[str, Any]:
        nodes = []
        for n in self.nodes:
            d = {k: getattr(n, k) for k in ("id", "kind", "op", "module", "factor", "cat_dim", "residual",
                                            "branch", "skip", "scope", "inplace")}
            d["param"] = n.param
            d.update(inputs=list(n.inputs), shape=list(n.shape),
                     activation=None if n.activation is None else _act_dict(n.activation))
            nodes.append(d)
        return {"nodes": nodes, "layers": [i.to_dict() for i in self.layers], "unknown": list(self.unknown),
                "tied": [list(g) for g in self.tied], "input_ids": list(self.input_ids),
                "output_ids": list(self.output_ids),
                "params": {k: _role_dict(r) for k, r in self.params.items()}}


def _layer_params(info: LayerInfo, g: Graph) -> list[str]:
    pre = info.owner_name + "." if info.owner_name else ""
    locals_ = info.params or tuple(n for n, _ in info.module.named_parameters(recurse=False))
    return [pre + n for n in locals_ if pre + n in g.params]


def _role_dict(r: ParamRole) -> dict[str, Any]:
    d = {k: getattr(r, k) for k in ("param", "role", "op", "scope", "groups", "stride", "dilation", "transposed",
                                    "standardized", "computed", "node")}
    d["stride"], d["dilation"] = list(r.stride), list(r.dilation)
    d["fans"] = None if r.fans is None else {"fan_in": r.fans.fan_in, "fan_out": r.fans.fan_out,
                                             "rule": r.fans.rule}
    d["describe"] = r.describe()
    return d


def _act_dict(a: Activation) -> dict[str, Any]:
    return {"name": a.name, "params": {k: v for k, v in a.params}, "str": str(a), "known": a.known}


def trace(model: nn.Module, example_inputs: Any, *, meta: bool = True) -> Graph:
    """Run ``model`` once on ``example_inputs`` and record the dataflow between its parameterized layers.

    The model is left exactly as it was: the pass runs under ``torch.no_grad()`` in the model's own train/eval
    mode inside :mod:`initwise._guard`, which puts back every module's attributes (also those the forward
    reassigns on the meta device), parameters, buffers (BatchNorm running stats), train flags, hooks and the RNG
    states, also when the forward raises. The example inputs are cloned, so in-place ops cannot change them.

    Args:
        model: any ``nn.Module``; Python control flow in ``forward`` is fine.
        example_inputs: a tensor, a tuple/list of positional arguments or a dict of keyword arguments.
        meta: first try the pass on the meta device (shapes only: a ResNet-50 traces in tens of milliseconds);
            whenever that fails or meets an op it does not understand, the real forward decides. ``False``
            always runs the real forward.

    Raises:
        TypeError: ``model`` is not an ``nn.Module`` or the inputs are of another kind.
        ValueError: a lazy module has not been materialized yet.
        RuntimeError: the forward failed; names the innermost module running and its input shapes.

    Example:
        >>> g = trace(nn.Sequential(nn.Linear(4, 8), nn.LeakyReLU(0.2), nn.Linear(8, 2)), torch.zeros(1, 4))
        >>> str(g["0"].activation), g["2"].is_output
        ('leaky_relu(negative_slope=0.2)', True)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(example_inputs, torch.Tensor):
        args, kwargs = (example_inputs,), {}
    elif isinstance(example_inputs, (tuple, list)):
        args, kwargs = tuple(example_inputs), {}
    elif isinstance(example_inputs, dict):
        args, kwargs = (), dict(example_inputs)
    else:
        raise TypeError("example_inputs must be a tensor, a tuple/list of positional arguments or a dict of "
                        f"keyword arguments, got {type(example_inputs).__name__}")
    named = list(model.named_modules())
    lazy = (UninitializedParameter, UninitializedBuffer)
    for name, m in named if any(isinstance(t, lazy) for _, m in named for d in (m._parameters, m._buffers)
                                for t in d.values()) else ():
        if any(isinstance(t, lazy) for t in (*m._parameters.values(), *m._buffers.values())):
            raise ValueError(f"module '{name or type(model).__name__}' ({type(m).__name__}) has uninitialized "
                             "(lazy) parameters; run one forward pass to materialize them before tracing")
    roles = {id(m): (name, module_role(m)) for name, m in named}
    # without storage (a meta model or example) or with sharded parameters, only the meta pass can run: its graph
    # is the answer even where it met ops it does not understand (the plan lists them)
    all_params = list(model.named_parameters(remove_duplicate=False))  # every name of every parameter (ties)
    meta_only = has_sharded(model) or any(t.is_meta for t in (*_tensors(args), *_tensors(kwargs))) or any(
        p.is_meta for _, p in all_params)
    with no_fsdp_hooks(model):
        if meta or meta_only:
            # fast path: the same forward on the meta device (shapes only, no arithmetic); anything it cannot do
            # (data-dependent control flow, values read from tensors, tensors made on another device) or any op it
            # could not understand sends the trace to the real forward below, so the result never depends on it
            acts = {id(m): resolve_activation(m) for _, m in named if roles[id(m)][1] == "act"}
            rec = Recorder(roles, acts)
            try:
                output = _run(model, named, all_params, rec, args, kwargs, meta=True)
                graph = _build(named, all_params, rec, output)
                if meta_only or not any(n.kind == "unknown" for n in graph.nodes) and not rec.gaps \
                        and not rec.params.value_gaps:
                    return graph
            except GuardError:
                raise
            except Exception as e:  # noqa: BLE001 - any failure on meta means: trace for real
                if meta_only:
                    why = "sharded (DTensor) parameters" if has_sharded(model) else "tensors on the meta device"
                    raise RuntimeError(f"the meta-device trace of {type(model).__name__} failed ({type(e).__name__}:"
                                       f" {e}); with {why} there is no real forward to fall back on") from e
        rec = Recorder(roles)
        output = _run(model, named, all_params, rec, args, kwargs)
        return _build(named, all_params, rec, output)


def _run(model: nn.Module, named: list, all_params: list, rec: Recorder, args: tuple, kwargs: dict,
         meta: bool = False) -> Any:
    # on the meta device: the forwards that spare torch's machinery, and the modules that get the recorder's hooks
    # (all of them for a real forward); decided before any hook is added
    forwards, calls, hooked_modules = meta_forwards(named, rec) if meta else ({}, {}, [m for _, m in named])
    # the guard puts back every module's __dict__ (the patched forwards, attributes the forward reassigns: on the
    # meta device ``self.mean = self.mean.type_as(x)`` would leave a meta tensor), hooks, buffers, parameters,
    # train flags, RNG states and the inputs; on the meta device the forward sees meta stand-ins of the parameters
    # and buffers, so buffers are copied on write as parameters are (not cloned up front)
    with preserved(model, args, kwargs, clone=not meta), contextlib.ExitStack() as hooks, torch.no_grad():
        hooks.enter_context(hooked(hooked_modules, rec.pre_hook, rec.post_hook))
        for m, forward in forwards.items():
            m.__dict__["forward"] = forward
        for m, call in calls.items():
            m.__dict__["_compiled_call_impl"] = call
        move = (lambda t: t.to("meta")) if meta else (lambda t: t.clone())
        args = tuple(move(a) if isinstance(a, torch.Tensor) else a for a in args)
        kwargs = {k: move(v) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
        for i, (key, v) in enumerate([*enumerate(args), *kwargs.items()]):
            if isinstance(v, torch.Tensor):
                rec.emit("input", "input" if isinstance(key, int) else str(key), (), [v])
        # the role tracker knows parameters by identity, as the forward will see them (meta stand-ins, or the
        # model's own), and by their first dotted name; buffers are constants
        canonical: dict[int, str] = {}
        for k, p in all_params:
            canonical.setdefault(id(p), k)
        rec.meta = meta
        swapped: list[tuple[dict, str, torch.Tensor]] = []
        try:
            if meta:
                swapped, stand = swap_to_meta(named)
                rec.params.params = {id(stand[i]): k for i, k in canonical.items()}
                rec.params.constants = {id(s) for i, s in stand.items() if i not in canonical}
                with torch._C.DisableTorchFunction():  # initwise's own reads: no mode needs to see them
                    for _, _, v in swapped:  # the originals (the modules now hold the stand-ins)
                        if id(v) not in canonical:
                            rec.know(stand[id(v)], v)  # a shift by a buffer (``x - self.mean``) keeps its values
            else:
                rec.params.params = {id(p): canonical[id(p)] for _, p in all_params}
                rec.params.constants = {id(b) for b in model.buffers()}
            with rec:
                return model(*args, **kwargs)
        except Exception as e:
            if meta:
                raise
            where = rec.failures.get(id(e)) or (next(iter(rec.failures.values()), None) if rec.failures
                                                else f"the model ({type(model).__name__})")
            raise RuntimeError(f"forward failed in {where}: {type(e).__name__}: {e}") from e
        finally:
            for d, k, v in swapped:
                d[k] = v


def _build(named: list, all_params: list, rec: Recorder, output: Any) -> Graph:
    input_ids = tuple(n.id for n in rec.nodes if n.kind == "input")
    outs = []
    for t in _tensors(output if not hasattr(output, "_asdict") else tuple(output)):
        n = rec.nid(t)
        if n is not None:
            outs.append(rec.emit("output", "output", (n,), []))
            rec.nodes[-1].shape = tuple(t.shape)
    rec.settle()
    nodes = rec.nodes
    users: list[list[int]] = [[] for _ in nodes]
    for n in nodes:
        for i in dict.fromkeys(n.inputs):
            users[i].append(n.id)
    modules = dict(named)
    weights: dict[str, set[str | None]] = {}
    for n in nodes:
        if n.kind == "layer":
            weights.setdefault(n.module, set()).add(n.param)
    calls: dict[tuple[str, str | None], list[int]] = {}
    for n in nodes:  # a module whose several weights feed separate ops (ECBSR's k0, k1) gives one layer per weight
        if n.kind == "layer":
            calls.setdefault((n.module, n.param if len(weights[n.module]) > 1 else None), []).append(n.id)
    roles = dict(rec.params.roles)
    names = {}  # node id -> layer name
    for (name, param), ids in calls.items():
        for i in ids:
            names[i] = name if param is None else f"{param}" if not name else f"{name}.{param[len(name) + 1:]}"
    reach = _Reach(nodes, users)
    layers = []
    for order, ((name, param), ids) in enumerate(calls.items()):
        info = _layer_info(name, modules[name], order, ids, nodes, users, reach, names)
        if param is not None:
            local = param[len(name) + 1:] if name else param
            mine = [local] + [p[len(name) + 1:] if name else p for p, r in roles.items() if r.role == "bias"
                              and r.node in ids and p.startswith(name + "." if name else "")]
            info = dataclasses.replace(info, name=f"{name}.{local}" if name else local, owner=name,
                                       params=tuple(dict.fromkeys(mine)))
            for i in ids:  # the node belongs to this layer: propagation and plans look layers up by node.module
                nodes[i].module = info.name
        layers.append(info)
    return Graph(nodes, layers, _unknown(nodes, users), _tied(all_params), input_ids, tuple(outs), roles,
                 frozenset(rec.params.used), frozenset(rec.params.overwritten))


def _layer_info(name: str, module: nn.Module, order: int, ids: list[int], nodes: list[Node],
                users: list[list[int]], reach: _Reach, names: dict[int, str]) -> LayerInfo:
    act_node, norm, through, notes = _activation_after(ids[0], nodes, users, reach)
    activation = _act_of(act_node, nodes)
    for i in ids[1:]:
        other = _activation_after(i, nodes, users, reach)[0]
        a = _act_of(other, nodes)
        if a != activation:
            notes.append(f"call at node {i} is followed by {a}, not {activation}")
    is_output = any(reach.output[i] for i in ids)
    res = _residual_after(ids[0], nodes, users)
    gate = act_node if act_node is not None and nodes[act_node].kind == "mul" else None
    return LayerInfo(name, module, type(module).__name__, order, len(ids), activation, act_node, norm,
                     _Consumers(ids, nodes, reach, names), res is not None, res,
                     _shuffle_after(ids[0], nodes, users), is_output,
                     through, tuple(notes), tuple(ids), gate=gate)


def _tied(all_params: list) -> list[tuple[str, ...]]:
    groups: dict[int, list[str]] = {}
    for name, p in all_params:
        groups.setdefault(id(p), []).append(name)
    return [tuple(g) for g in groups.values() if len(g) > 1]
