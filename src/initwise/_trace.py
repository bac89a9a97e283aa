"""Record one forward pass as a DAG of signal ops (the engine behind :func:`initwise._graph.trace`).

Module hooks say which module is running; a ``TorchFunctionMode`` sees every torch function and tensor method
called outside leaf modules. Each produced tensor is mapped to its node by ``id`` (checked against a weak
reference, so a reused id is never confused with a dead tensor); an in-place op returns the same object and
simply re-maps it to the new node. Nothing is guessed: an op outside the tables of :mod:`initwise._trace_vocab`
becomes an ``unknown`` node.
"""

from __future__ import annotations

import functools
import sys
import weakref
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from . import _meta_ops
from ._activations import _FUNCTIONS, Activation, resolve_activation
from ._nested import tensors as _tensors
from ._pointwise import Replays
from ._roles import FACTORY, NORM_ARGS, WEIGHT_OPS, RoleTracker
from ._trace_joins import Joins
from ._trace_vocab import (_ACT_POSITIONAL, _AVG_POOLS, _BINARY, _CAT_OPS, _CONST_LIMIT, _CONVERT_OPS,
                           _INTERPOLATE_OPS, _MATMUL_OPS, _NORM_OPS, _PASS_OPS, _REDUCE_OPS, _SOURCE_OPS, _SPLIT_OPS,
                           Node, _avg_window, _drop_path, _dropout, _factor, _interp_mode, _ints, _normalize, _op_name,
                           _pointwise, _replayable, _selected, _shape, einsum_is_matmul, shapes_str)

__all__ = ["Recorder"]


class Recorder(Joins, TorchFunctionMode):
    """Collects :class:`Node` s while active (as a torch function mode) and while its hooks are registered."""

    def __init__(self, roles: dict[int, tuple[str, str]], acts: dict[int, Activation] | None = None,
                 params: dict[int, str] | None = None) -> None:
        super().__init__()
        self.roles = roles  # id(module) -> (dotted name, role)
        self.params = RoleTracker(params or {})  # what every parameter is used as
        self.acts = acts or {}  # id(module) -> its Activation, read from the real module before a meta-device run
        self.nodes: list[Node] = []
        self.ldepth: list[int] = []  # layers on the longest path from an input, per node
        self.failures: dict[int, str] = {}  # id(exception) -> where it happened
        self._map: dict[int, tuple[weakref.ref, int]] = {}
        self._stack: list[tuple[nn.Module, str, str, Any, bool, tuple]] = []  # module, name, role, args, muted,
        # (first node of the call, input nodes)
        self._mute = 0
        self._hook = 0  # > 0 while the recorder's own hook code runs tensor ops
        self.gaps = 0  # ops the recorder failed on (the meta fast path then defers to the real forward)
        self.replays = Replays()  # elementwise ops by node id: a hand-written x * f(x) becomes one activation
        self._composed: list[tuple[int, list[Node], Node]] = []  # (act node, the ops it replaced, the product)
        self._values: dict[int, tuple[weakref.ref, torch.Tensor]] = {}  # meta stand-in -> its real values
        self.meta = False  # a meta-device pass: repeated shape-only ops are answered by _meta_ops

    def know(self, stand_in: torch.Tensor, value: torch.Tensor) -> None:
        """``stand_in`` (a meta tensor) holds ``value``'s values (a buffer of the model, a converted constant)."""
        if value.numel() <= _CONST_LIMIT and not value.is_meta:
            self._values[id(stand_in)] = (weakref.ref(stand_in), value)

    def value(self, t: Any) -> torch.Tensor | None:
        """The values of a small constant tensor, or None."""
        if not isinstance(t, torch.Tensor) or t.numel() > _CONST_LIMIT or t.is_complex():
            return None
        if not t.is_meta:
            return t
        e = self._values.get(id(t))
        return e[1] if e is not None and e[0]() is t else None

    # ---- tensors and nodes
    def nid(self, t: Any) -> int | None:
        if not isinstance(t, torch.Tensor):
            return None
        e = self._map.get(id(t))
        return e[1] if e is not None and e[0]() is t else None

    def emit(self, kind: str, op: str, inputs: tuple[int, ...], outs: list[torch.Tensor], **kw: Any) -> int:
        i = len(self.nodes)
        self.nodes.append(Node(i, kind, op, inputs, _shape(outs), scope=self.scope(), **kw))
        self.ldepth.append(max((self.ldepth[j] for j in inputs), default=0) + (kind == "layer"))
        for t in outs:
            self._map[id(t)] = (weakref.ref(t), i)
        self.params.attach(i)
        return i

    def scope(self) -> str:
        return self._stack[-1][1] if self._stack else ""

    # ---- module hooks
    def pre_hook(self, module: nn.Module, args: Any, kwargs: Any) -> None:
        name, role = self.roles[id(module)]
        muted = self._mute > 0
        # the input nodes, kept for a call that may become one node after its ops rewrote its input in place
        # (only such a call reads them: a traced-through module that may collapse into one node)
        ins = tuple(dict.fromkeys(n for n in map(self.nid, _tensors((args, kwargs))) if n is not None)) \
            if not muted and role.startswith("through:") else ()
        self._stack.append((module, name, role, (args, kwargs), muted, (len(self.nodes), ins)))
        if muted or not role.startswith("through"):
            self._mute += 1

    def post_hook(self, module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        frame = None
        while self._stack:
            frame = self._stack.pop()
            if frame[4] or not frame[2].startswith("through"):
                self._mute -= 1
            if frame[0] is module:
                break
        if frame is None or frame[0] is not module:
            return
        _, name, role, inputs, muted, (start, in_ids) = frame
        err = sys.exc_info()[1]
        self._mute += 1  # the code below uses tensor methods: keep it out of the record (and out of every mode)
        self._hook += 1
        try:
            with torch._C.DisableTorchFunction():
                self._post(module, name, role, inputs, output, muted, start, in_ids, err)
        finally:
            self._mute -= 1
            self._hook -= 1

    def _post(self, module: nn.Module, name: str, role: str, inputs: Any, output: Any, muted: bool, start: int,
              in_ids: tuple[int, ...], err: BaseException | None) -> None:
        if err is not None and output is None:
            self.failures.setdefault(id(err), f"'{name}' ({type(module).__name__}, input {shapes_str(inputs)})")
        elif not muted and role.startswith("through:") and (
                as_ := self._collapse(start, output, in_ids, role[len("through:"):])):
            self._module_node(module, name, as_, inputs, output, in_ids)
        elif not muted and not role.startswith("through"):
            self._module_node(module, name, role, inputs, output)

    def _collapse(self, start: int, output: Any, in_ids: tuple[int, ...], role: str) -> str | None:
        """A module traced through whose ops were not all understood (or whose output no op produced) becomes one
        node: drop the nodes its call made and return the node's kind (None: the traced ops stay). A would-be
        layer whose ops were all pointwise, without a weight (poolformer's StarReLU ``s * relu(x)**2 + b``), is
        an activation: the module itself is the function its gain is computed from."""
        outs = _tensors(output)
        removed = self.nodes[start:]
        if all(n.kind != "unknown" for n in removed) and outs and all(self.nid(t) is not None for t in outs):
            return None
        if role == "layer" and removed and len(outs) == 1 and len(in_ids) == 1 and all(map(_pointwise, removed)) \
                and tuple(outs[0].shape) == self.nodes[in_ids[0]].shape:
            role = "act"
        del self.nodes[start:], self.ldepth[start:]
        for k in [k for k, (_, i) in self._map.items() if i >= start]:
            del self._map[k]
        self.params.rebase(start)
        return role

    def _module_node(self, module: nn.Module, name: str, role: str, inputs: Any, output: Any,
                     in_ids: tuple[int, ...] | None = None) -> None:
        ins = in_ids if in_ids is not None else tuple(
            dict.fromkeys(n for n in map(self.nid, _tensors(inputs)) if n is not None))
        outs = _tensors(output)
        if not outs or (not ins and role != "layer"):
            return
        op, kw = type(module).__name__, {}
        if role == "act":
            kw["activation"] = self.acts.get(id(module)) or resolve_activation(module)
        elif isinstance(module, (nn.PixelShuffle, nn.PixelUnshuffle)):
            shuffle = isinstance(module, nn.PixelShuffle)
            op = "pixel_shuffle" if shuffle else "pixel_unshuffle"
            kw["factor"] = float(module.upscale_factor if shuffle else module.downscale_factor)
        elif isinstance(module, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)):
            kw["dims"] = _ints(module.kernel_size, outs[0].dim() - 2)
            if isinstance(module, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)):
                kw["window"] = _avg_window(module.kernel_size, module.stride, module.padding, module.count_include_pad,
                                           getattr(module, "divisor_override", None), outs[0].dim() - 2)
        elif isinstance(module, nn.Upsample):
            kw["mode"] = str(module.mode) + ("+ac" if module.align_corners else "")
        elif _drop_path(module) is not None or _dropout(module) is not None:
            op = "DropPath" if _drop_path(module) is not None else op
            kw["factor"] = _drop_path(module) if op == "DropPath" else _dropout(module)
        i = self.emit(role, op, ins, outs, module=name, **kw)
        if role == "act" and len(ins) == 1:
            self.replays.keep_act(i, kw["activation"], ins[0])

    # ---- functions and methods
    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        result = _meta_ops.call(func, args, kwargs) if self.meta else func(*args, **kwargs)
        # the recorder's own bookkeeping (shape reads, roles, nodes) passes no mode: the guard's copy-on-write mode
        # sees only the model's ops
        with torch._C.DisableTorchFunction():
            return self._bookkeep(func, args, kwargs, result)

    def _bookkeep(self, func: Any, args: tuple, kwargs: dict, result: Any) -> Any:
        owner = None
        if not self._hook and self.params.params and (self.params.touches(args, kwargs)
                                                      or getattr(func, "__name__", None) in FACTORY):
            try:
                self.params.note_write(func, args)
                owner = self.params.observe(_normalize(_op_name(func))[0], args, kwargs, result, self.scope())
            except Exception:  # noqa: BLE001 - a gap in role tracking must not break the forward
                owner = None
        if self._mute:
            return result
        i = len(self.nodes)
        replay = self.replays.prepare(func, args, kwargs, self.nid) if _replayable(func) else None
        try:
            self._record(func, args, kwargs, result, owner)
            if replay is not None and len(self.nodes) == i + 1 and _pointwise(self.nodes[i]):
                self.replays.ops[i] = replay
        except Exception as e:  # a gap in the tracer must not break the user's forward: report it instead
            self.gaps += 1  # (a module call that becomes one node hides the unknown node: the count stays)
            ins = tuple(n for n in map(self.nid, _tensors((args, kwargs))) if n is not None)
            if ins:
                self.emit("unknown", f"{_op_name(func)} (tracer error: {type(e).__name__}: {e})", ins,
                          _tensors(result))
        return result

    def _record(self, func: Any, args: tuple, kwargs: dict, result: Any, owner: str | None = None) -> None:
        raw = _op_name(func)
        name, reflected = _normalize(raw)
        if name == "setitem":  # x[i] = y mutates x: not understood as a signal op
            ins = tuple(n for n in map(self.nid, _tensors(args)) if n is not None)
            if ins and isinstance(args[0], torch.Tensor):
                if ins == (self.nid(args[0]),) and all(self.params.sources(t) is not None for t in _tensors(args[2:])):
                    # values computed from parameters written into the signal (ECBSR pads with its bias)
                    self.emit("pass", "setitem", ins, [args[0]], inplace=True)
                else:
                    self.emit("unknown", raw, ins, [args[0]], inplace=True)
            return
        outs = _tensors(result)
        if not outs or name in _SOURCE_OPS:
            return
        a0 = args[0] if args else kwargs.get("input")
        n0 = self.nid(a0)
        if n0 is None and name in _CONVERT_OPS and len(outs) == 1 and outs[0].is_meta:
            v = self.value(a0)
            if v is not None:
                self.know(outs[0], v)
        inplace = result is a0
        if name in WEIGHT_OPS and owner is not None and (n0 is not None or name.startswith("embedding")):
            # a functional conv / linear / embedding on a parameter (or a tensor computed from parameters)
            # the signal may come as a keyword (Swin-V2: F.linear(input=x, weight=..., bias=...))
            firsts = [a0] if name != "bilinear" else list(args[:2]) if len(args) >= 2 else [
                args[0] if args else kwargs.get("input1"), kwargs.get("input2")]
            ins = tuple(n for n in map(self.nid, _tensors(firsts)) if n is not None)
            self.emit("layer", name, ins, outs, module=owner, param=self.params.last_weight)
            return
        if func in _FUNCTIONS or name in ("rrelu", "prelu"):
            if n0 is not None:
                self.emit("act", raw, (n0,), outs, activation=self._activation(func, name, args, kwargs),
                          inplace=inplace)
                return
        elif name == "einsum" and einsum_is_matmul(a0):  # attention written as einsum: a batched matmul
            ops = list(args[1]) if len(args) == 2 and isinstance(args[1], (list, tuple)) else list(args[1:])
            ids = [self.nid(t) for t in ops]
            if len(ids) == 2 and None not in ids:
                self.emit("matmul", name, (ids[0], ids[1]), outs)
                return
        elif name in _REDUCE_OPS or name in ("softmax", "scaled_dot_product_attention") or name in _MATMUL_OPS:
            if self._reduction(name, a0, n0, args, kwargs, outs):
                return
        elif name in _PASS_OPS or name in _NORM_OPS:
            if n0 is not None:
                kw: dict[str, Any] = {}
                if name in ("pixel_shuffle", "pixel_unshuffle"):
                    kw["factor"] = float(args[1] if len(args) > 1 else next(iter(kwargs.values())))
                elif name in _AVG_POOLS:
                    k = args[1] if len(args) > 1 else kwargs.get("kernel_size")
                    kw["dims"] = _ints(k, a0.dim() - 2)
                    if name.startswith("avg_pool"):  # (input, kernel, stride, padding, ceil, count_include_pad, div)
                        arg = lambda i, key, d: args[i] if len(args) > i else kwargs.get(key, d)  # noqa: E731
                        kw["window"] = _avg_window(k, arg(2, "stride", None), arg(3, "padding", 0),
                                                   arg(5, "count_include_pad", True), arg(6, "divisor_override", None),
                                                   a0.dim() - 2)
                elif name in _INTERPOLATE_OPS:
                    kw["mode"] = _interp_mode(name, args, kwargs)
                elif name == "normalize":  # F.normalize(x, p, dim): the dim it makes unit-norm (p = 2 only)
                    pw = args[1] if len(args) > 1 else kwargs.get("p", 2.0)
                    dim = args[2] if len(args) > 2 else kwargs.get("dim", 1)
                    if pw == 2 and isinstance(dim, int):
                        kw["dims"] = (dim % max(a0.dim(), 1),)
                if name in NORM_ARGS and owner is not None:
                    kw["module"] = owner  # F.batch_norm(x, ..., self.weight, self.bias): this module's norm
                if name == "getitem" and a0.dim() == 3 and len(args) > 1:
                    sel = _selected(args[1], a0.shape[1])
                    if sel is not None:
                        kw["select"] = sel
                if name in _SPLIT_OPS and len(outs) > 1:  # one node per piece: x1 * x2 is then a product
                    for t in outs:
                        self.emit("pass", name, (n0,), [t])
                    return
                self.emit("norm" if name in _NORM_OPS else "pass", name, (n0,), outs, inplace=inplace, **kw)
            return
        elif name in _CAT_OPS:
            seq = a0 if isinstance(a0, (list, tuple)) else ()
            ins = tuple(n for n in map(self.nid, seq) if n is not None)
            if ins:
                dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
                kw = {}
                if len(ins) != len(seq) and name != "stack" and all(isinstance(t, torch.Tensor) for t in seq):
                    kw["parts"] = tuple(self._part(t, int(dim)) for t in seq)
                self.emit("cat", name, ins, outs, cat_dim=int(dim), **kw)
                return
        elif name in _BINARY or name in ("neg", "negative", "copy"):
            if self._binary(_BINARY.get(name, name), reflected, args, kwargs, outs, inplace):
                return
        ins = tuple(dict.fromkeys(n for n in map(self.nid, _tensors((args, kwargs))) if n is not None))
        if ins:
            self.emit("unknown", raw, ins, outs, inplace=inplace)

    def _part(self, t: torch.Tensor, dim: int) -> tuple[int, int | str | None]:
        """One operand of a cat: its size along ``dim`` and its node, or the parameter it is a view of."""
        size = int(t.shape[dim]) if t.dim() else 1
        n = self.nid(t)
        if n is not None:
            return size, n
        return size, self.params.view_of(t)

    def _reduction(self, name: str, a0: Any, n0: int | None, args: tuple, kwargs: dict, outs: list) -> bool:
        """mean/sum (reduced dims), softmax (its dim), matmul of two signals or of a signal and a constant
        (a parameter: ``att @ self.w``), scaled_dot_product_attention."""
        if name in _MATMUL_OPS and (one := self._constant_matmul(a0, n0, args, kwargs)) is not None:
            self.emit("matmul", name, (one[0],), outs, factor=one[1], dims=(one[2],))
            return True
        if n0 is None or not isinstance(a0, torch.Tensor):
            return False
        if name in _MATMUL_OPS or name == "scaled_dot_product_attention":
            others = [args[i] if len(args) > i else kwargs.get(k) for i, k in ((1, "other"), (2, "value"))]
            ids = [self.nid(t) for t in others[: 1 if name in _MATMUL_OPS else 2]]
            if any(i is None for i in ids):
                return False
            if name in _MATMUL_OPS:
                self.emit("matmul", name, (n0, ids[0]), outs)
                return True
            if kwargs.get("attn_mask") is not None or len(args) > 3 or kwargs.get("dropout_p", 0.0):
                return False  # masks and attention dropout: not modelled
            scale = kwargs.get("scale")
            self.emit("attention", name, (n0, *ids), outs, factor=None if scale is None else float(scale),
                      residual=bool(kwargs.get("is_causal", False)))
            return True
        dim = args[1] if len(args) > 1 else kwargs.get("dim")
        if name == "softmax":
            if not isinstance(dim, int):
                return False
            self.emit("softmax", name, (n0,), outs, dims=(dim % a0.dim(),))
            return True
        if dim is None:
            dims = tuple(range(a0.dim()))
        else:
            dims = tuple(d % max(a0.dim(), 1) for d in ((dim,) if isinstance(dim, int) else dim))
        self.emit("reduce", name, (n0,), outs, dims=dims)
        return True

    def _constant_matmul(self, a: Any, na: int | None, args: tuple, kwargs: dict) -> tuple[int, float, int] | None:
        """``x @ W`` or ``W @ x`` with ``W`` not a signal (a parameter, a constant; 2-D or more): the signal's
        node, ``W``'s RMS and the signal's contracted dim (its last for ``x @ W``, its second last for ``W @ x``).
        Not inside a hand-written layer (``through:layer``: ``x @ self.weight`` is its weight, drawn by the scheme
        once the call becomes one layer node)."""
        if self._stack and self._stack[-1][2].startswith("through:"):
            return None
        b = args[1] if len(args) > 1 else kwargs.get("other")
        nb = self.nid(b)
        if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or (na is None) == (nb is None):
            return None
        x, w = (a, b) if na is not None else (b, a)
        if x.dim() < 2 or w.dim() < 2 or not (w.is_floating_point() and x.is_floating_point()):
            return None
        f = _factor(w)
        if f is None:
            return None
        return (na, f, x.dim() - 1) if na is not None else (nb, f, x.dim() - 2)

    def _activation(self, func: Any, name: str, args: tuple, kwargs: dict) -> Activation:
        if name == "rrelu":
            lower = args[1] if len(args) > 1 else kwargs.get("lower", 1.0 / 8)
            upper = args[2] if len(args) > 2 else kwargs.get("upper", 1.0 / 3)
            return resolve_activation("leaky_relu", (lower + upper) / 2)
        if name == "prelu":
            weight = args[1] if len(args) > 1 else kwargs["weight"]
            # same convention as a PReLU module: the RMS of the slopes (see _activations._prelu_slope)
            return resolve_activation("prelu", float(weight.detach().double().pow(2).mean().sqrt()))
        canonical = _FUNCTIONS[func]
        kw = {k: v for k, v in kwargs.items() if k != "inplace"}
        kw.update((k, v) for k, v in zip(_ACT_POSITIONAL.get(canonical, ()), args[1:]) if k != "inplace")
        return resolve_activation(functools.partial(func, **kw) if kw else func)

    def settle(self) -> None:
        """After the forward (outputs emitted): a hand-written activation one of whose intermediate results is
        used elsewhere too (``s = sigmoid(x)`` feeding ``x * s`` and a head) is put back as the ops it was."""
        for i, saved, join in reversed(self._composed):
            chain = {n.id for n in saved}
            lo = min(chain)
            if any(n.id not in chain and n.id != i and any(k in chain for k in n.inputs) for n in self.nodes[lo:]):
                for n in saved:
                    self.nodes[n.id] = n
                self.nodes[i] = join
        self._composed.clear()

