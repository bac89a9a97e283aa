"""Products of spectra (``irfft2(rfft2(q) * rfft2(k))``, FFTformer's attention) against the variance measured
through the real ops: a circular convolution over the ``P`` transformed positions (``_rules_fft``), where the
independent-product rule is ``P``-fold (and more, for the constants) too small; a spectrum scaled by a constant
and transformed back is the signal itself."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import initwise as iw
from initwise import _propagate, _propagate_backward
from initwise._diagnose import MISMATCH_Z
from initwise._rules_fft import BOUND_SPECTRAL


class SpectralProduct(nn.Module):
    def __init__(self, per_patch: bool):
        super().__init__()
        self.qk = nn.Conv2d(8, 64, 1)
        self.out = nn.Conv2d(32, 8, 1)
        self.per_patch = per_patch

    def forward(self, x):
        q, k = self.qk(x).chunk(2, dim=1)
        if self.per_patch:  # 4x4 patches of 4x4 positions, transformed per patch
            n, c, h, w = q.shape
            q = q.reshape(n, c, h // 4, 4, w // 4, 4).permute(0, 1, 2, 4, 3, 5)
            k = k.reshape(n, c, h // 4, 4, w // 4, 4).permute(0, 1, 2, 4, 3, 5)
        y = torch.fft.irfft2(torch.fft.rfft2(q.float()) * torch.fft.rfft2(k.float()), s=q.shape[-2:])
        if self.per_patch:
            y = y.permute(0, 1, 2, 4, 3, 5).reshape(x.shape[0], 32, x.shape[2], x.shape[3])
        return self.out(y)


def _logs(per_patch: bool, monkeypatch=None):
    fwd, bwd = [], []
    for seed in range(8):
        torch.manual_seed(seed)
        model = SpectralProduct(per_patch)
        g = torch.Generator().manual_seed(100 + seed)
        # a per-sample, per-channel constant beside the positional part: the P^2 term
        x = 0.7 * torch.randn(4, 8, 1, 1, generator=g) + torch.randn(4, 8, 16, 16, generator=g)
        run = iw.diagnose(model, x, schemes=["kaiming_fan_in"], generator=torch.Generator().manual_seed(seed)).runs[0]
        fwd.append(math.log(run["out"].forward / run["out"].predicted_forward))
        bwd.append(math.log(run["qk"].backward / run["qk"].predicted_backward))

    def stats(v):
        m = sum(v) / len(v)
        return m, math.sqrt(sum((t - m) ** 2 for t in v) / (len(v) - 1) / len(v))

    return stats(fwd), stats(bwd)


@pytest.mark.parametrize("per_patch", [False, True])
def test_a_product_of_spectra_is_a_circular_convolution(per_patch):
    """Mean over 8 draws of ln(measured / predicted): within the rule's bound plus 4 standard errors, forward
    (the layer after the product) and backward (the layer before it)."""
    for mean, se in _logs(per_patch):
        assert abs(mean) <= math.log(BOUND_SPECTRAL) + MISMATCH_Z * se, (mean, se)
        assert abs(mean) <= 0.25 + MISMATCH_Z * se, (mean, se)  # in fact close: the bound is not all used


def test_the_independent_product_rule_is_far_off_there(monkeypatch):
    """Without the spectral rule (the product of two spectra taken as an elementwise product of independent
    signals) the forward is off by about P = 256 (more with the constants): the test above can tell."""
    monkeypatch.setattr(_propagate, "_spectral_pair", lambda nodes, n: None)
    monkeypatch.setattr(_propagate_backward, "_spectral_pair", lambda nodes, n: None)
    (mean, se), _ = _logs(False)
    assert mean > math.log(100.0), (mean, se)


class SpectralScale(nn.Module):
    """FFTformer's feed-forward: a spectrum scaled by a parameter (ones at init) and transformed back."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(8, 32, 1)
        self.fft = nn.Parameter(torch.ones(32, 1, 1, 1, 9))
        self.b = nn.Conv2d(32, 8, 1)

    def forward(self, x):
        n, c, h, w = x.shape
        y = self.a(x).reshape(n, 32, 1, 16, 1, 16).permute(0, 1, 2, 4, 3, 5)
        y = torch.fft.irfft2(torch.fft.rfft2(y.float()) * self.fft, s=(16, 16))
        return self.b(torch.relu(y.permute(0, 1, 2, 4, 3, 5).reshape(n, 32, h, w)))


def test_a_spectrum_round_trip_keeps_the_moments():
    """rfft2, a scale by ones and irfft2 are the identity: the layers on either side are predicted as without
    them."""
    torch.manual_seed(0)
    x = torch.randn(8, 8, 16, 16)
    run = iw.diagnose(SpectralScale(), x, schemes=["kaiming_fan_in"],
                      generator=torch.Generator().manual_seed(0)).runs[0]
    for name in ("a", "b"):
        lp = run[name]
        assert abs(math.log(lp.forward / lp.predicted_forward)) <= MISMATCH_Z * lp.forward_noise + 0.02
        assert abs(math.log(lp.backward / lp.predicted_backward)) <= MISMATCH_Z * lp.backward_noise + 0.02
