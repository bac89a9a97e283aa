"""Interpolation (``F.interpolate``, ``nn.Upsample``) with its own weights, against the variance measured through
the real layers.

Bilinear and bicubic interpolation take weighted means of neighbours: for values independent between positions
``E[y^2]`` keeps ``|W|^2 / n_out`` of the positional part per dim (MobileViT's 3 -> 4 bilinear resize before its
transformer: 0.59 over two dims, which the old rule passed on as 1, and its LayerNorm then divided the gradient
by that), and the backward ``W^T dy`` keeps ``|W|^2 / n_in``. Nearest upsampling is the rule of repeated
values, unchanged.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import initwise as iw
from initwise import _rules_reduce as R
from initwise._diagnose import MISMATCH_Z


class Resized(nn.Module):
    """1x1 convolutions around a resize: positions stay independent (an iid input, an iid cotangent)."""

    def __init__(self, size, mode, corners, module):
        super().__init__()
        self.a = nn.Conv2d(16, 64, 1)
        self.b = nn.Conv2d(64, 64, 1)
        kw = {} if mode in ("nearest", "area") else {"align_corners": corners}
        self.up = nn.Upsample(size=size, mode=mode, **kw) if module else None
        self.size, self.mode, self.kw = size, mode, kw

    def forward(self, x):
        x = self.a(x)
        x = self.up(x) if self.up is not None else F.interpolate(x, size=self.size, mode=self.mode, **self.kw)
        return self.b(x)


CASES = [((4, 4), "bilinear", False, False), ((3, 3), "bilinear", False, True), ((12, 9), "bilinear", True, False),
         ((13, 13), "bicubic", False, False), ((4, 4), "bicubic", True, True), ((16, 16), "nearest", None, True),
         ((3, 5), "area", None, False)]


def _draws(model, x, n=8):
    runs = [iw.diagnose(model, x, schemes=["kaiming_fan_in"], generator=torch.Generator().manual_seed(s)).runs[0]
            for s in range(n)]
    return runs


@pytest.mark.parametrize("size, mode, corners, module", CASES)
def test_interpolation_keeps_the_share_its_weights_give(size, mode, corners, module):
    torch.manual_seed(0)
    model, x = Resized(size, mode, corners, module), torch.randn(16, 16, 6, 6)
    node = next(n for n in iw.trace(model, x).nodes if n.op in ("interpolate", "Upsample"))
    assert node.mode == mode + ("+ac" if corners else "")
    runs = _draws(model, x)
    # forward at b (E[y^2] of the resized map times b's gain), backward at a (W^T of b's input gradient); the
    # mean log ratio over the draws and its standard error
    for layer, meas, pred, kind in (("b", "forward", "predicted_forward", "f"), ("a", "backward", "predicted_backward", "b")):
        logs = [math.log(getattr(r[layer], meas) / getattr(r[layer], pred)) for r in runs]
        mean = sum(logs) / len(logs)
        se = math.sqrt(sum((v - mean) ** 2 for v in logs) / (len(logs) - 1) / len(logs))
        noise = max(se, max(getattr(r[layer], f"{meas}_noise") or 0.0 for r in runs) / math.sqrt(len(logs)))
        assert abs(mean) <= MISMATCH_Z * noise, (layer, kind, mean, noise)
        if mode in ("bilinear", "bicubic"):
            # the old rule (every value passed on; backward numel(out) / numel(in) copies) is far outside
            fs = R._interp_factors(node.mode, (16, 64, 6, 6), (16, 64, *size))
            old = 1.0 / fs[0] if kind == "f" else (math.prod(size) / 36) / fs[1]
            assert abs(mean - math.log(old)) > MISMATCH_Z * noise + 0.1, (layer, kind, mean, old)


def test_the_weights_are_torchs():
    """The one-dim factors against the interpolation matrix written out: bilinear 3 -> 4 without aligned corners
    has rows (1, 0, 0), (.375, .625, 0), (0, .625, .375), (0, 0, 1)."""
    w = torch.tensor([[1, 0, 0], [.375, .625, 0], [0, .625, .375], [0, 0, 1]], dtype=torch.float64)
    r, f, c = R._interp_dim("bilinear", 3, 4)
    assert r == pytest.approx(float(w.pow(2).sum()) / 4)
    assert f == pytest.approx(float(w.pow(2).sum()) / 3)
    assert c == pytest.approx(float(w.sum(0).pow(2).sum()) / 3)
    # nearest upsampling by 2: each value twice (the repeat rule: s and s^2)
    assert R._interp_dim("nearest", 5, 10) == pytest.approx((1.0, 2.0, 4.0))
