"""Hooks that measure, per layer and in one forward + backward pass, the statistics :func:`initwise.diagnose` reports.

For every probed layer (its first call, the one the plan predicts) a :class:`Probe` reduces inside the hooks, and
stores no activation:

- the layer's output (the pre-activation): per (sample, channel) sums of squares and per-channel sums;
- the output of the activation that follows it: the layer's output is followed through views, norms, dropout,
  constant scalings and add/sub/cat joins (a ``TorchFunctionMode`` active during the forward pass, the path the
  tracer walks) to the first activation function applied to it; module activations (``nn.ReLU``) are seen through
  the function they call;
- the gradient with respect to the layer's output: a tensor hook registered in the forward hook (hooks registered
  before an in-place activation receive the gradient of the value the layer produced).

Each reduction is one ``vector_norm`` and one ``sum`` over the tensor (float32, partials kept in float64 on the
tensor's device; :mod:`initwise._probe_stats`); :meth:`Probe.results` converts everything to Python
numbers once.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ._activations import _FUNCTIONS
from ._nested import tensors as _tensors
from ._probe_stats import SATURATION_OUTPUT, Site, SiteStats, finish, reduce

__all__ = ["SATURATION_OUTPUT", "Probe", "Site", "SiteStats", "channel_dim", "finish", "reduce"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
# ops the activation search looks through (the tracer's look-through ops, norms and joins)
_LOOK = frozenset("""view view_as reshape reshape_as permute flatten unflatten transpose t contiguous clone squeeze
unsqueeze expand expand_as pad constant_pad_nd dropout dropout1d dropout2d dropout3d alpha_dropout
feature_alpha_dropout batch_norm layer_norm group_norm instance_norm rms_norm add sub mul div truediv neg cat concat
to float double half bfloat16 pixel_shuffle pixel_unshuffle chunk split getitem narrow select interpolate
max_pool1d max_pool2d max_pool3d avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d adaptive_avg_pool2d
adaptive_avg_pool3d""".split())
def channel_dim(module: nn.Module) -> int:
    """Which dimension of the module's output holds channels/units: 1 for convolutions, the last one otherwise."""
    return 1 if isinstance(module, _CONV) else -1


def _op(func: Any) -> str:
    name = (getattr(func, "__name__", None) or "").strip("_")
    if name[:1] in ("i", "r") and name[1:] in ("add", "sub", "mul", "div", "truediv"):
        name = name[1:]
    return name


class _Tap(TorchFunctionMode):
    """Follows each tracked layer output to the first activation function applied to it, and reduces that."""

    def __init__(self, probe: "Probe") -> None:
        super().__init__()
        self.probe = probe
        self.lineage: dict[int, tuple[weakref.ref, tuple[str, ...]]] = {}

    def track(self, t: torch.Tensor, owners: tuple[str, ...]) -> None:
        self.lineage[id(t)] = (weakref.ref(t), owners)

    def owners(self, t: Any) -> tuple[str, ...]:
        e = self.lineage.get(id(t)) if isinstance(t, torch.Tensor) else None
        return e[1] if e is not None and e[0]() is t else ()

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if self.probe.muted:
            return result
        if self.probe.by_param:
            for a in (*args[1:3], kwargs.get("weight")):  # F.linear(x, w) / F.conv2d(x, w): the weight's position
                layer = self.probe.by_param.get(id(a)) if isinstance(a, torch.Tensor) else None
                if layer is not None and self.probe.params[layer] is a and isinstance(result, torch.Tensor):
                    self.probe.record(layer, result)
                    break
        if not self.lineage:
            return result
        name = _op(func)
        a0 = args[0] if args else kwargs.get("input")
        if func in _FUNCTIONS or name in ("prelu", "rrelu"):
            owners = [o for o in self.owners(a0) if o not in self.probe.act]
            if owners and isinstance(result, torch.Tensor):
                self.probe.muted += 1
                try:
                    site = reduce(result, self.probe.cdims[owners[0]], _FUNCTIONS.get(func, name))
                finally:
                    self.probe.muted -= 1
                for o in owners:
                    self.probe.act[o] = site
        elif name in _LOOK:
            if name in ("mul", "div"):  # a constant factor, not a product of two signals
                other = args[1] if len(args) > 1 else kwargs.get("other")
                if isinstance(other, torch.Tensor) and other.requires_grad and not isinstance(other, nn.Parameter) \
                        and other.numel() > 1:
                    return result
                owners = self.owners(a0)
            else:
                owners = tuple(dict.fromkeys(o for t in _tensors((args, kwargs)) for o in self.owners(t)))
            owners = tuple(o for o in owners if o not in self.probe.act)
            if owners:
                for t in _tensors(result):
                    self.track(t, owners)
        return result


class Probe:
    """Forward/backward hooks on named layers of ``model``; use as a context manager around one forward pass.

    Args:
        model: the model whose layers are probed (its hooks dicts are restored on exit, also on errors).
        layers: ``(dotted name, follow_activation)`` per layer; with ``follow_activation`` the activation's output
            is measured too.
        functional: per layer name, the weight a functional op consumes (the layer is seen at that op, not at a
            module's forward).

    After the backward pass, :meth:`results` gives per layer ``{"output", "activation", "grad"}``
    :class:`SiteStats` (None where not reached) and ``calls`` (how often each layer ran).
    """

    def __init__(self, model: nn.Module, layers: Iterable[tuple[str, bool]],
                 functional: dict[str, torch.Tensor] | None = None) -> None:
        modules = dict(model.named_modules())
        functional = functional or {}
        layers = list(layers)
        # a layer whose weight a functional op consumes (``F.linear(x, self.qkv.weight)``, or one of a module's
        # several weights, "owner.param") is seen at the op: the tap finds the op by its weight argument
        self.layers = [(name, modules[name], follow) for name, follow in layers
                       if name in modules and name not in functional]
        self.params = {name: functional[name] for name, _ in layers if name in functional}
        self.by_param = {id(t): name for name, t in self.params.items()}
        self.follow = dict(layers)
        self.names = [name for name, _ in layers if name in self.params or any(n == name for n, _, _ in self.layers)]
        self.cdims = {name: channel_dim(m) for name, m, _ in self.layers}
        self.cdims.update({name: 1 if t.dim() > 2 else -1 for name, t in self.params.items()})  # conv / linear
        self.out: dict[str, Site] = {}
        self.act: dict[str, Site] = {}
        self.grad: dict[str, Site] = {}
        self.calls: dict[str, int] = {}
        self.order: dict[str, int] = {}  # first-call order
        self.muted = 0
        self._stack: contextlib.ExitStack | None = None
        self._tap = _Tap(self) if self.params or any(f for _, _, f in self.layers) else None
        self._tap_on = False

    def __enter__(self) -> "Probe":
        stack = contextlib.ExitStack()
        try:
            for name, m, follow in self.layers:
                stack.enter_context(m.register_forward_hook(self._hook(name, follow)))
            if self._tap is not None:
                stack.enter_context(self._tap)
                self._tap_on = True
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def stop_forward(self) -> None:
        """Leave the forward pass: remove the module hooks and the function mode (the gradient hooks stay)."""
        if self._stack is not None:
            stack, self._stack = self._stack, None
            self._tap_on = False
            stack.close()

    def __exit__(self, *exc: Any) -> None:
        self.stop_forward()

    def _hook(self, name: str, follow: bool):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self.record(name, output)

        return hook

    def record(self, name: str, output: Any) -> None:
        """One call of layer ``name`` produced ``output``: count it; on the first call reduce the output, hook its
        gradient and follow it to its activation."""
        self.calls[name] = self.calls.get(name, 0) + 1
        self.order.setdefault(name, len(self.order))
        if self.calls[name] > 1 or self.muted:
            return
        t = next((x for x in _tensors(output) if x.is_floating_point()), None)
        if t is None:
            return
        cdim = self.cdims[name]
        self.muted += 1
        try:
            self.out[name] = reduce(t, cdim)
            if t.requires_grad:
                t.register_hook(self._grad_hook(name, cdim))
        finally:
            self.muted -= 1
        if self.follow.get(name) and self._tap_on:
            self._tap.track(t, (name,))

    def _grad_hook(self, name: str, cdim: int):
        def hook(grad: torch.Tensor) -> None:
            if name not in self.grad:
                self.grad[name] = reduce(grad, cdim)

        return hook

    def results(self) -> dict[str, dict[str, Any]]:
        names = self.names
        sites = [d.get(n) for n in names for d in (self.out, self.act, self.grad)]
        stats = finish(sites)
        return {n: {"output": stats[3 * i], "activation": stats[3 * i + 1], "grad": stats[3 * i + 2],
                    "calls": self.calls.get(n, 0)} for i, n in enumerate(names)}
