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
tensor's device); :meth:`Probe.results` converts everything to Python numbers once.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ._activations import _FUNCTIONS
from ._nested import tensors as _tensors

__all__ = ["Probe", "Site", "SiteStats", "channel_dim", "reduce"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
# ops the activation search looks through (the tracer's look-through ops, norms and joins)
_LOOK = frozenset("""view view_as reshape reshape_as permute flatten unflatten transpose t contiguous clone squeeze
unsqueeze expand expand_as pad constant_pad_nd dropout dropout1d dropout2d dropout3d alpha_dropout
feature_alpha_dropout batch_norm layer_norm group_norm instance_norm rms_norm add sub mul div truediv neg cat concat
to float double half bfloat16 pixel_shuffle pixel_unshuffle chunk split getitem narrow select interpolate
max_pool1d max_pool2d max_pool3d avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d adaptive_avg_pool2d
adaptive_avg_pool3d""".split())
_RELU_LIKE = frozenset(("relu", "relu6"))  # output >= 0, zero exactly where the input is <= 0
_SIGN_KEEPING = frozenset(("leaky_relu", "prelu", "rrelu"))  # output > 0 exactly where the input is > 0
# saturation: |z| > 2.5 for tanh (tanh' < 0.027), |z| > 5 for sigmoid (sigmoid' < 0.0067), read from the output
SATURATION_OUTPUT = {"tanh": math.tanh(2.5), "sigmoid": 1.0 / (1.0 + math.exp(-5.0)) - 0.5}


def channel_dim(module: nn.Module) -> int:
    """Which dimension of the module's output holds channels/units: 1 for convolutions, the last one otherwise."""
    return 1 if isinstance(module, _CONV) else -1


@dataclass
class Site:
    """Reduced statistics of one tensor: ``ms`` per (sample, channel) ``(N, C)``, ``sums`` per channel ``(C,)``."""

    ms: torch.Tensor
    sums: torch.Tensor
    count: int
    dead: torch.Tensor | None = None  # per channel: 1.0 when never positive
    saturated: torch.Tensor | None = None  # number of saturated elements (scalar)
    op: str = ""
    positive: torch.Tensor | None = None  # per channel: elements > 0 (a ReLU's mask, what its backward passes)


@dataclass
class SiteStats:
    """Python numbers for one site: moments, relative standard errors (channel spread, sample spread), flags."""

    mean: float
    variance: float
    second_moment: float
    count: int
    channels: int
    samples: int
    se_channel: float | None
    se_sample: float | None
    dead_fraction: float | None = None
    saturated_fraction: float | None = None
    mean_ratio: float | None = None  # sum over channels of mean^2 / sum of second moments
    op: str = ""
    se_mask: float | None = None  # a ReLU's mask: relative SE of its kept fraction from the channels' spread

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("mean", "variance", "second_moment", "count", "channels", "samples",
                                              "se_channel", "se_sample", "dead_fraction", "saturated_fraction",
                                              "mean_ratio")}


def reduce(t: torch.Tensor, cdim: int, activation: str = "") -> Site:
    """Reduce ``t`` to a :class:`Site` (two passes over memory; a third for sign-keeping or saturating activations)."""
    x = t.detach()
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    if x.dim() < 2 or (cdim == 1 and x.dim() < 3):
        x, cdim = x.reshape(1, -1), -1
    keep = (0, *range(2, x.dim())) if cdim == 1 else tuple(range(x.dim() - 1))  # all but the channel dim
    inner = tuple(range(2, x.dim())) if cdim == 1 else tuple(range(1, x.dim() - 1))  # all but sample and channel
    k = math.prod(x.shape[d] for d in inner)
    ms = (torch.linalg.vector_norm(x, dim=inner) if inner else x.abs()).double().square_().div_(max(k, 1))
    sums = x.sum(dim=keep).double()
    site = Site(ms, sums, x.numel(), op=activation)
    if activation in _RELU_LIKE:
        site.dead = (ms.sum(0) == 0).double()
        site.positive = torch.count_nonzero(x, dim=keep).double()
    elif activation in _SIGN_KEEPING:
        site.dead = (x.amax(dim=keep) <= 0).double()
    elif activation == "tanh":
        site.saturated = (x.abs() > SATURATION_OUTPUT["tanh"]).sum().double()
    elif activation == "sigmoid":
        site.saturated = ((x - 0.5).abs() > SATURATION_OUTPUT["sigmoid"]).sum().double()
    return site


def finish(sites: Iterable[Site | None]) -> list[SiteStats | None]:
    """Python numbers for many sites with one device-to-host transfer."""
    sites = list(sites)
    rows = []
    for s in sites:
        if s is None:
            continue
        n, c = s.ms.shape
        second = s.ms.mean()
        chan, samp = s.ms.mean(0), s.ms.mean(1)
        nan = second.new_tensor(float("nan"))
        se_c = chan.std() / math.sqrt(c) / second if c > 1 else nan
        se_n = samp.std() / math.sqrt(n) / second if n > 1 else nan
        dead = s.dead.mean() if s.dead is not None else nan
        sat = s.saturated / s.count if s.saturated is not None else nan
        rho = (s.sums * (c / s.count)).square().sum() / chan.sum() if chan.sum() > 0 else nan
        pos = s.positive
        se_m = pos.std() / math.sqrt(c) / pos.mean() if pos is not None and c > 1 and pos.sum() > 0 else nan
        rows.append(torch.stack([s.sums.sum() / s.count, second, se_c, se_n, dead, sat, rho, se_m]))
    values = torch.stack(rows).cpu().tolist() if rows else []
    out: list[SiteStats | None] = []
    it = iter(values)
    for s in sites:
        if s is None:
            out.append(None)
            continue
        mean, second, se_c, se_n, dead, sat, rho, se_m = (None if v != v else v for v in next(it))
        if mean is None or second is None:  # an empty output (a layer with zero output channels): nothing measured
            out.append(None)
            continue
        n, c = s.ms.shape
        out.append(SiteStats(mean, max(second - mean * mean, 0.0), second, s.count, c, n, se_c, se_n, dead, sat,
                             rho, s.op, se_m))
    return out


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
        if self.probe.muted or not self.lineage:
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

    After the backward pass, :meth:`results` gives per layer ``{"output", "activation", "grad"}``
    :class:`SiteStats` (None where not reached) and ``calls`` (how often each layer ran).
    """

    def __init__(self, model: nn.Module, layers: Iterable[tuple[str, bool]]) -> None:
        modules = dict(model.named_modules())
        # a layer that is not a module (one of a module's several functional weights, "owner.param") has no
        # module hook: its sites stay unmeasured
        self.layers = [(name, modules[name], follow) for name, follow in layers if name in modules]
        self.cdims = {name: channel_dim(m) for name, m, _ in self.layers}
        self.out: dict[str, Site] = {}
        self.act: dict[str, Site] = {}
        self.grad: dict[str, Site] = {}
        self.input_grad: dict[str, Site] = {}  # the gradient this layer alone sends to its input (W^T dy)
        self.calls: dict[str, int] = {}
        self.order: dict[str, int] = {}  # first-call order
        self.muted = 0
        self._stack: contextlib.ExitStack | None = None
        self._tap = _Tap(self) if any(f for _, _, f in self.layers) else None
        self._tap_on = False

    def __enter__(self) -> "Probe":
        stack = contextlib.ExitStack()
        try:
            for name, m, follow in self.layers:
                stack.enter_context(m.register_forward_pre_hook(self._pre_hook(name)))
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

    def _pre_hook(self, name: str):
        cdim = self.cdims[name]

        def hook(module: nn.Module, args: Any) -> Any:
            # the first call's input, seen through a view of its own: the gradient that reaches the view is this
            # layer's contribution alone (the input may feed other ops too)
            if self.calls.get(name, 0) or self.muted or not args or not isinstance(args[0], torch.Tensor) or \
                    not args[0].requires_grad or not args[0].is_floating_point():
                return None
            x = args[0].view_as(args[0])
            x.register_hook(self._grad_hook(name, cdim, self.input_grad))
            return (x, *args[1:])

        return hook

    def _hook(self, name: str, follow: bool):
        cdim = self.cdims[name]

        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self.calls[name] = self.calls.get(name, 0) + 1
            self.order.setdefault(name, len(self.order))
            if self.calls[name] > 1 or self.muted:
                return
            t = next((x for x in _tensors(output) if x.is_floating_point()), None)
            if t is None:
                return
            self.muted += 1
            try:
                self.out[name] = reduce(t, cdim)
                if t.requires_grad:
                    t.register_hook(self._grad_hook(name, cdim))
            finally:
                self.muted -= 1
            if follow and self._tap_on:
                self._tap.track(t, (name,))

        return hook

    def _grad_hook(self, name: str, cdim: int, into: dict[str, Site] | None = None):
        into = self.grad if into is None else into

        def hook(grad: torch.Tensor) -> None:
            if name not in into:
                into[name] = reduce(grad, cdim)

        return hook

    def results(self) -> dict[str, dict[str, Any]]:
        names = [name for name, _, _ in self.layers]
        sites = [d.get(n) for n in names for d in (self.out, self.act, self.grad, self.input_grad)]
        stats = finish(sites)
        return {n: {"output": stats[4 * i], "activation": stats[4 * i + 1], "grad": stats[4 * i + 2],
                    "input_grad": stats[4 * i + 3], "calls": self.calls.get(n, 0)} for i, n in enumerate(names)}
