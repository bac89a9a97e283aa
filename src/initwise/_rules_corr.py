"""The channels' correlation where the example fixes it: what a kept 1x1 layer's output channels' variances are.

A stem on a smooth image gives channels that are linear filters of the same few colours: over the batch and
positions they span a few directions only (a ResNet-50's stem on 48 px patches: effective rank ``(tr R)^2 / tr
R^2`` 2.3 of 64 channels, 2.6 after its ReLU and max pool). A 1x1 layer after it has output channel variances
``w_c^T C w_c`` that scatter far more than for independent channels (``E_c[v / v_c]`` 1.8 measured on the first
bottleneck's 1x1 convs, against 1.03 for independent ones), and the batch norm after it divides each channel's
gradient by its own: the backward into the first block was under-predicted 1.7x.

``Sig.corr`` carries the correlation matrix from a tensor measured on the example (:func:`initwise._signal.
sig_of`) through a batch norm (a per-channel affine map of batch-centred values: unchanged), a ReLU of a centred
Gaussian input (the arc-cosine kernel, Cho and Saul 2009, centred and normalized per pair: :func:`relu_corr`) and
max pooling (kept: approximate), to a 1x1 layer whose weights are kept (:func:`layer_rows`): its output's per
channel variances (``Sig.rows``), its rows' squared norms (``Sig.norms``, which its backward multiplies by
again) and the output's own correlation. Every other op drops it.
"""

from __future__ import annotations

import math

import torch

from ._signal import _channel_spread

__all__ = ["layer_rows", "relu_corr"]


def relu_corr(r: torch.Tensor) -> torch.Tensor:
    """The correlation of ``relu(a), relu(b)`` for centred jointly Gaussian ``a, b`` of correlation ``r``:
    ``(k(r) - k(0)) / (k(1) - k(0))``, ``k(r) = (sqrt(1 - r^2) + r (pi - arccos r)) / (2 pi)``."""
    rc = r.clamp(-1.0, 1.0)
    k = (torch.sqrt((1.0 - rc * rc).clamp(min=0.0)) + rc * (math.pi - torch.arccos(rc))) / (2.0 * math.pi)
    k0, k1 = 1.0 / (2.0 * math.pi), 0.5
    out = (k - k0) / (k1 - k0)
    out.fill_diagonal_(1.0)
    return out


def layer_rows(w: torch.Tensor, corr: torch.Tensor, rows: tuple[float, ...] | None, lags: torch.Tensor | None = None
               ) -> tuple[float, tuple[float, ...], tuple[float, ...], torch.Tensor] | None:
    """For a dense layer of weight ``w`` (out x in x taps, float64) on an input of channel correlation ``corr``
    and per channel variances ``rows`` (over their mean; None: even): ``(E_c[v / v_c], v_c / v, |w_c|^2 / mean,
    the output's correlation)``; None where the shapes disagree or a channel has no variance. A kernel's taps
    read different positions: ``sum_tt' P_tt' W_t C W_t'^T`` with ``lags`` ``P`` the input's correlation between
    them (taps x taps: the geometric model of :func:`initwise._rules_near.lag_matrix`; None: independent), the
    same for every pair of channels (approximate), the borders' missing taps not counted."""
    if w.dim() != 3 or corr.shape != (w.shape[1], w.shape[1]):
        return None
    s = torch.ones(w.shape[1], dtype=torch.float64) if rows is None or len(rows) != w.shape[1] else \
        torch.tensor(rows, dtype=torch.float64).clamp(min=0.0).sqrt()
    ws = w * s[None, :, None]
    wc = torch.einsum("oit,ij->otj", ws, corr)  # W_t C, per tap
    if lags is not None and lags.shape == (w.shape[2], w.shape[2]) and w.shape[2] > 1:
        wc = torch.einsum("tu,ouj->otj", lags, wc)  # sum_u P_tu W_u C
    cov = torch.einsum("pit,oti->op", ws, wc)
    v = cov.diagonal().clamp(min=0.0)
    norms = w.square().sum((1, 2))
    if not bool((v > 0).all()) or not float(norms.mean()) > 0.0:
        return None
    spread, r = _channel_spread(v)
    if r is None:
        return None
    d = v.sqrt()
    return spread, r, tuple((norms / norms.mean()).tolist()), cov / d[:, None] / d[None, :]
