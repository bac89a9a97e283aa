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

import numpy as np
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
    # set by reduce: ``ms`` still holds the per (sample, channel) norms as ``vector_norm`` gave them; :func:`finish`
    # squares them in float64 and divides by this (each site's positions), all sites at once (the same
    # elementwise arithmetic, in fewer torch calls); ``dead_from_ms``: a ReLU's channels never positive, read from
    # the finished ``ms`` there
    divisor: int = 0
    dead_from_ms: bool = False


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
    """Reduce ``t`` to a :class:`Site` (two passes over memory; a third for sign-keeping or saturating activations).
    Its own tensor calls pass no torch-function mode (the guard's copy-on-write, the probe's tap: read-only)."""
    with torch._C.DisableTorchFunction():
        return _reduce(t, cdim, activation)


def _reduce(t: torch.Tensor, cdim: int, activation: str) -> Site:
    x = t.detach()
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    if x.dim() < 2 or (cdim == 1 and x.dim() < 3):
        x, cdim = x.reshape(1, -1), -1
    keep = (0, *range(2, x.dim())) if cdim == 1 else tuple(range(x.dim() - 1))  # all but the channel dim
    inner = tuple(range(2, x.dim())) if cdim == 1 else tuple(range(1, x.dim() - 1))  # all but sample and channel
    k = math.prod(x.shape[d] for d in inner)
    # ``ms`` is finished in finish(): ``.double().square_().div_(max(k, 1))`` there, for every site at once
    norms = torch.linalg.vector_norm(x, dim=inner) if inner else x.abs()
    sums = (x.sum(dim=inner) if inner else x).double().sum(0)  # per (sample, channel) first: contiguous, fast
    site = Site(norms, sums, x.numel(), op=activation, divisor=max(k, 1))
    if activation in _RELU_LIKE:
        site.dead_from_ms = True  # no channel's ms above 0 over the batch (read in finish)
    elif activation in _SIGN_KEEPING:
        site.dead = (x.amax(dim=keep) <= 0).double()
    elif activation == "tanh":
        site.saturated = (x.abs() > SATURATION_OUTPUT["tanh"]).sum().double()
    elif activation == "sigmoid":
        site.saturated = ((x - 0.5).abs() > SATURATION_OUTPUT["sigmoid"]).sum().double()
    return site


def _kept_fraction(mean: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Per channel, the fraction of units a ReLU passes, from its output's mean and second moment: for a Gaussian
    pre-activation ``N(mu, s^2)``, ``t = mu / s`` fixes ``E[relu]^2 / E[relu^2] = (t Phi + phi)^2 / ((t^2 + 1) Phi
    + t phi)`` (increasing in ``t``) and the fraction is ``Phi(t)`` (no pass over the tensor)."""
    r = np.clip(np.divide(mean * mean, second, out=np.zeros_like(second), where=second > 0), 0.0, 1.0)
    return np.where(second > 0, np.interp(r, _RATIO, _CDF), 0.0)


_T = np.linspace(-6.0, 6.0, 481)
_CDF = np.array([0.5 * math.erfc(-t / math.sqrt(2.0)) for t in _T])
_PDF = np.exp(-0.5 * _T * _T) / math.sqrt(2.0 * math.pi)
_RATIO = (_T * _CDF + _PDF) ** 2 / ((_T * _T + 1.0) * _CDF + _T * _PDF)


def _settle(sites: list[Site]) -> dict[Any, tuple[torch.Tensor, dict[int, int]]]:
    """The ``ms`` of the sites :func:`reduce` left pending, finished: per device, one float64 tensor of every such
    site's ``norms.double().square_().div_(divisor)`` (elementwise, so the same values as site by site; each
    site's part divided by its own Python number, as before), the sites in order of their divisor, and where each
    site's part starts. The sites are not changed."""
    by_device: dict[Any, list[Site]] = {}
    for s in sites:
        if s.divisor:
            by_device.setdefault(s.ms.device, []).append(s)
    out = {}
    for d, group in by_device.items():
        group.sort(key=lambda s: s.divisor)
        flat = torch.cat([s.ms.reshape(-1) for s in group]).double().square_()
        starts: dict[int, int] = {}
        at, start = 0, 0
        for i, s in enumerate(group):
            starts[id(s)] = at
            at += s.ms.numel()
            if i + 1 == len(group) or group[i + 1].divisor != s.divisor:
                if at > start:
                    flat[start:at].div_(s.divisor)
                start = at
        out[d] = (flat, starts)
    return out


def _to_host(sites: list[Site]) -> list[list[np.ndarray]]:
    """Every site's tensors as float64 numpy arrays, with one transfer per device."""
    settled = _settle(sites)
    parts: dict[Any, list[torch.Tensor]] = {d: [flat] for d, (flat, _) in settled.items()}
    for s in sites:
        for t in (None if s.divisor else s.ms, s.sums, s.dead, s.saturated):
            if t is not None:
                parts.setdefault(t.device, []).append(t.reshape(-1))
    flat = {d: torch.cat(ts).double().cpu().numpy() if len(ts) > 1 else ts[0].double().cpu().numpy()
            for d, ts in parts.items()}
    at = {d: settled[d][0].numel() if d in settled else 0 for d in parts}
    out = []
    for s in sites:
        row = []
        for j, t in enumerate((s.ms, s.sums, s.dead, s.saturated)):
            if t is None:
                row.append(None)
                continue
            k, d = t.numel(), t.device
            if j == 0 and s.divisor:  # its ms: its part of the settled tensor
                i = settled[d][1][id(s)]
                row.append(flat[d][i:i + k].reshape(t.shape))
                continue
            row.append(flat[d][at[d]:at[d] + k].reshape(t.shape))
            at[d] += k
        out.append(row)
    return out


_sum = np.add.reduce  # what ndarray.sum/mean/std reduce with, without their Python-level wrappers (~5 us a call)


def _mean(v: np.ndarray) -> float:
    """``float(v.mean())``, the same arithmetic (the whole array's pairwise sum over its size)."""
    return float(_sum(v, axis=None) / v.size)


def _std1(v: np.ndarray) -> float:
    """``float(v.std(ddof=1))`` of a 1-d array, the same arithmetic as numpy's (its mean, the squared deviations'
    pairwise sum over ``n - 1``, the square root)."""
    d = v - _sum(v) / v.size
    return math.sqrt(float(_sum(d * d) / (v.size - 1)))


def finish(sites: Iterable[Site | None]) -> list[SiteStats | None]:
    """Python numbers for many sites with one device-to-host transfer (per device); the statistics in numpy
    (per site a few whole-array reductions: each as numpy's own ``mean``/``std`` computes it)."""
    sites = list(sites)
    live = [s for s in sites if s is not None]
    with torch._C.DisableTorchFunction():
        host = iter(_to_host(live))
    out: list[SiteStats | None] = []
    with np.errstate(all="ignore"):
        for s in sites:
            if s is None:
                out.append(None)
                continue
            ms, sums, dead, sat = next(host)
            if s.dead_from_ms:  # (ms.sum(0) == 0) in float64: ms >= 0, so exactly "every entry 0"
                dead = np.logical_and.reduce(ms == 0, axis=0).astype(np.float64)
            n, c = ms.shape
            if ms.size == 0:  # an empty output (a layer with zero output channels): nothing measured
                out.append(None)
                continue
            second = _mean(ms)
            chan = _sum(ms, axis=0) / n
            mean = float(_sum(sums, axis=None)) / s.count
            ok = second > 0
            se_c = _std1(chan) / math.sqrt(c) / second if c > 1 and ok else None
            se_n = _std1(_sum(ms, axis=1) / c) / math.sqrt(n) / second if n > 1 and ok else None
            cmean = sums * (c / s.count)
            csum = float(_sum(chan))
            rho = float(_sum(cmean * cmean) / csum) if csum > 0 else None
            se_m = None
            if s.op in _RELU_LIKE and c > 1:
                pos = _kept_fraction(cmean, chan)
                se_m = _std1(pos) / math.sqrt(c) / _mean(pos) if _sum(pos) > 0 else None
            out.append(SiteStats(mean, max(second - mean * mean, 0.0), second, s.count, c, n, se_c, se_n,
                                 _mean(dead) if dead is not None else None,
                                 float(_sum(sat, axis=None)) / s.count if sat is not None else None, rho, s.op, se_m))
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
