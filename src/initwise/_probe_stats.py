"""What a probe keeps of one tensor, and the statistics :func:`initwise.diagnose` reads from it.

:func:`reduce` turns a tensor into a :class:`Site` (per (sample, channel) norms and per-channel sums: two passes
over memory, a third for sign-keeping or saturating activations); :func:`finish` turns many sites into
:class:`SiteStats` (Python numbers) with one device-to-host transfer per device. :mod:`initwise._probe` decides
which tensors are reduced (the hooks and the activation search).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["SATURATION_OUTPUT", "Site", "SiteStats", "finish", "reduce"]

_RELU_LIKE = frozenset(("relu", "relu6"))  # output >= 0, zero exactly where the input is <= 0
_SIGN_KEEPING = frozenset(("leaky_relu", "prelu", "rrelu"))  # output > 0 exactly where the input is > 0
# saturation: |z| > 2.5 for tanh (tanh' < 0.027), |z| > 5 for sigmoid (sigmoid' < 0.0067), read from the output
SATURATION_OUTPUT = {"tanh": math.tanh(2.5), "sigmoid": 1.0 / (1.0 + math.exp(-5.0)) - 0.5}



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
