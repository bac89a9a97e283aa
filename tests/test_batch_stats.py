"""A batch norm's statistics over a small set (2x2 maps at batch 2: M = 8 values per channel), against the
gradient measured through the real layers: ``E[1 / s]`` of the set's own variance and the projection on
``xhat`` (``_batch_stats``), and an activation after the norm that meets a pooled gradient (the classifier
head's batch norm before a global pool: ``_rules_act.slope_correlation``); a zero-padded convolution on a small
map moves power between the constant and the positional parts (``_taps.constant_factors``); a depthwise layer's
backward cancels the channel spread its rows made for the batch norm after it.

Each figure is the mean over draws of ln(measured / predicted), within 4 of its standard errors (plus 0.03 for
what the draws cannot resolve); the rule without the correction is outside that.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import initwise as iw
from initwise import _batch_stats, _propagate_backward, _rules_layer
from initwise._diagnose import MISMATCH_Z


def _stats(v):
    m = sum(v) / len(v)
    return m, math.sqrt(sum((t - m) ** 2 for t in v) / (len(v) - 1) / len(v))


def test_the_mean_inverse_is_the_chi_square_one():
    """``E[1 / (chi2(d) / d)] = d / (d - 2)``; a mix of two parts against 2e6 fixed draws."""
    for d in (3, 7, 30, 3000):
        i0, _ = _batch_stats._moments([(1.0, d)], 0.0)
        assert i0 == pytest.approx(d / (d - 2), rel=1e-6)
    rng = np.random.default_rng(0)
    x, y = rng.chisquare(1, 2_000_000), rng.chisquare(6, 2_000_000) / 6
    z = 0.5 * x + 0.5 * y + 0.01
    i0, (ix, iy) = _batch_stats._moments([(0.5, 1), (0.5, 6)], 0.01)
    for value, draws in ((i0, 1 / z), (ix, x / z**2), (iy, y / z**2)):
        assert abs(value - draws.mean()) <= 4 * draws.std() / math.sqrt(draws.size)


def test_independent_values_give_the_closed_form():
    """For ``M`` independent values the factor is ``(M - 2) / (M - 3)``; at ``M = 2`` the gradient is removed."""
    # 1x1 maps, batch 8: the per-sample part only (7 degrees of freedom)
    assert _batch_stats.finite_set_factor("batch", 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 8, 1, 0.0) == pytest.approx(1.2)
    assert _batch_stats.finite_set_factor("batch", 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 2, 1, 0.0) == 0.0


class NormBetween(nn.Module):
    def __init__(self, head: str | None = None):
        super().__init__()
        self.a = nn.Conv2d(64, 64, 1)
        self.bn = nn.BatchNorm2d(64)
        self.b = nn.Conv2d(64, 64, 1)
        self.fc = nn.Linear(64, 10)
        self.head = head

    def forward(self, x):
        y = self.bn(self.a(x))
        if self.head is None:
            return self.b(y)
        act = {"relu": torch.relu, "silu": nn.functional.silu}[self.head]
        return self.fc(act(y).mean((2, 3)))


def _logs(size, batch, const, head=None, draws=20):
    out = []
    for seed in range(draws):
        torch.manual_seed(seed)
        model = NormBetween(head)
        g = torch.Generator().manual_seed(1000 + seed)
        x = torch.randn(batch, 64, size, size, generator=g) + const * torch.randn(batch, 64, 1, 1, generator=g)
        run = iw.diagnose(model, x, schemes=["kaiming_fan_in"], generator=torch.Generator().manual_seed(seed)).runs[0]
        out.append(math.log(run["a"].backward / run["a"].predicted_backward))
    return _stats(out)


@pytest.mark.parametrize("size,batch,const", [(2, 2, 0.0), (2, 2, 1.0), (4, 2, 2.0), (1, 6, 0.0)])
def test_a_small_statistics_set_raises_the_backward(size, batch, const, monkeypatch):
    """``(M - 2) / (M - 3) = 1.2`` for 8 independent values; with per-sample constants (``const``) the set has
    fewer degrees of freedom and the factor grows (1.4-1.65 measured): the rule without it is outside."""
    mean, se = _logs(size, batch, const)
    assert abs(mean) <= MISMATCH_Z * se + 0.03, (mean, se)
    monkeypatch.setattr(_rules_layer, "finite_set_factor", lambda *a, **k: 1.0)
    old, old_se = _logs(size, batch, const)
    assert abs(old) > MISMATCH_Z * old_se + 0.03, (old, old_se)


@pytest.mark.parametrize("act", ["relu", "silu"])
def test_an_activation_after_the_norm_meets_a_pooled_gradient(act, monkeypatch):
    """Before a global pool the gradient is constant over each sample's positions; through ``phi'`` it leans on
    the norm's ``xhat`` by ``kappa`` per value, and the norm's backward removes that part too (the rule without
    it over-predicts ~1.5x at 2x2 maps and batch 2)."""
    mean, se = _logs(2, 2, 1.0, act)
    assert abs(mean) <= MISMATCH_Z * se + 0.03, (mean, se)
    monkeypatch.setattr(_propagate_backward, "_after", lambda *a: None)
    old, old_se = _logs(2, 2, 1.0, act)
    assert abs(old) > MISMATCH_Z * old_se + 0.03, (old, old_se)


class SmallMap(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(64, 64, 1)
        self.conv = nn.Conv2d(64, 64, 3, padding=1)

    def forward(self, x):
        return self.conv(torch.relu(self.a(x)))


@pytest.mark.parametrize("size", [2, 3])
def test_a_padded_convolution_on_a_small_map_moves_the_constant(size, monkeypatch):
    """On a 2x2 map a 3x3 convolution keeps 9/16 of its input's constant as a constant (``B / (A P)``) and turns
    part of the positional power into one (``gain``): the per-sample and batch constants of its output, measured
    over 16 draws, against the plan's moments; the rule that keeps them as they were is outside."""
    def shares(border):
        got = {"dc": [], "dcb": []}
        for seed in range(16):
            torch.manual_seed(seed)
            model = SmallMap()
            x = torch.randn(2, 64, size, size, generator=torch.Generator().manual_seed(500 + seed))
            with monkeypatch.context() as mp:
                if not border:
                    from initwise import _plan_moments
                    mp.setattr(_plan_moments, "constant_factors", lambda *a, **k: (1.0, 0.0))
                prop = iw.plan(model, x, "current")._propagation
            g = iw.trace(model, x)
            node = [n for n in g.nodes if n.module == "conv"][-1]
            s = prop.signals[node.id]
            with torch.no_grad():
                y = model(x).double()
            q = float(y.pow(2).mean())
            got["dc"].append(math.log(float(y.mean((2, 3)).pow(2).mean()) / q / (s.dc / s.q)))
            got["dcb"].append(math.log(float(y.mean((0, 2, 3)).pow(2).mean()) / q / (s.dcb / s.q)))
        return {k: _stats(v) for k, v in got.items()}

    for key, (mean, se) in shares(True).items():
        assert abs(mean) <= MISMATCH_Z * se + 0.05, (key, mean, se)
    old = shares(False)
    assert any(abs(m) > MISMATCH_Z * s + 0.05 for m, s in old.values()), old


class DepthwiseBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(8, 128, 1, bias=False)
        self.dw = nn.Conv2d(128, 128, 2, groups=128)  # 4-tap rows, no padding
        self.bn = nn.BatchNorm2d(128)
        self.out = nn.Conv2d(128, 8, 1)

    def forward(self, x):
        return self.out(torch.relu(self.bn(self.dw(torch.relu(self.a(x))))))


def test_a_depthwise_layer_cancels_the_spread_it_made(monkeypatch):
    """The batch norm divides channel c's gradient by ``|w_c|^2 v`` (4-tap rows: ``E[1 / |w|^2]`` is twice
    ``1 / E[|w|^2]`` for Gaussian rows); the depthwise backward multiplies each input position by the same
    row's squares: for an input mixed over channels before it (a dense layer) the spread cancels (the rule that
    cancels only one-tap rows is outside). A chain of depthwise layers keeps it (tests/test_rules_layer.py)."""
    def logs(cancel_all):
        out = []
        for seed in range(8):
            torch.manual_seed(seed)
            with monkeypatch.context() as mp:
                if not cancel_all:  # the old guard: one-tap rows only
                    orig = _rules_layer.layer_backward

                    def one_tap_only(lm, d, n_inputs, mixed=False):
                        return orig(lm, d, n_inputs, False)

                    mp.setattr(_propagate_backward, "layer_backward", one_tap_only)
                run = iw.diagnose(DepthwiseBN(), torch.randn(16, 8, 8, 8), schemes=["kaiming_fan_in"],
                                  generator=torch.Generator().manual_seed(seed)).runs[0]
            out.append(math.log(run["a"].backward / run["a"].predicted_backward))
        return _stats(out)

    mean, se = logs(True)
    assert abs(mean) <= MISMATCH_Z * se + 0.03, (mean, se)
    old, old_se = logs(False)
    assert abs(old) > MISMATCH_Z * old_se + 0.03, (old, old_se)


class NormAct(nn.Module):
    """A train-mode batch norm, an activation, then a 1x1 conv (the gradient independent between positions) or a
    global mean (a pooled head: the gradient constant over each sample's positions)."""

    def __init__(self, c: int, act: type[nn.Module], pooled: bool):
        super().__init__()
        self.bn, self.act, self.pooled = nn.BatchNorm2d(c), act(), pooled
        self.out = nn.Conv2d(c, c, 1, bias=False)

    def forward(self, x):
        y = self.out(self.act(self.bn(x)))
        return y.mean((2, 3)) if self.pooled else y


@pytest.mark.parametrize("pooled", [False, True])
@pytest.mark.parametrize("act", [nn.ReLU, nn.SiLU])
def test_the_activation_after_a_norm_on_a_small_map_keeps_its_constants_as_sample_means(act, pooled):
    """On 2x2 maps at batch 2 (``M = 8``) the means over a sample's positions and over the batch hold ``1 / P``
    and ``1 / (N P)`` of the power itself: the activation maps the pairs' moments through its dual kernel and back
    (``_rules_act._pairs``, ``_sampled``), forward and for the gradient's constants, and the norm's projection on
    ``xhat`` of a gradient that meets ``phi'`` adds ``kappa^2`` times the set's pairs of distinct values only
    (``h.dcb - h.g / M``). Over 40 draws the input's gradient (through the real layers, autograd) is within 4 of
    its standard errors (+0.03) of the prediction: ln(measured / predicted) ReLU -0.021 +- 0.014 / -0.028 +- 0.024,
    SiLU -0.046 +- 0.014 / -0.057 +- 0.025 (independent / pooled gradient); the rules before, on the pooled
    gradient: ReLU +0.126, SiLU +0.191 (5 and 7.6 SE out)."""
    logs = []
    for seed in range(40):
        torch.manual_seed(seed)
        model = NormAct(256, act, pooled)
        x = torch.randn(2, 256, 2, 2) + 0.7 * torch.randn(2, 256, 1, 1)
        g = iw.trace(model, x)
        node = next(n.id for n in g.nodes if n.kind == "input")
        predicted = iw.plan(model, x, "current")._propagation.grads[node].g
        xx = x.clone().requires_grad_(True)
        out = model(xx)
        out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(1000 + seed)))
        logs.append(math.log(float(xx.grad.double().pow(2).mean()) / predicted))
    mean, se = _stats(logs)
    assert abs(mean) <= MISMATCH_Z * se + 0.03, (mean, se)


def test_a_pattern_the_samples_share_has_fewer_degrees_of_freedom():
    """``x = alpha a[n, c] + sigma s[c, p] + beta b[n, c, p]``: the pattern ``s`` over positions is the same in every
    sample (``Sig.pos_shared``), so a batch norm's variance sees it on ``P - 1`` directions, not ``N (P - 1)``:
    the backward of the real ``F.batch_norm`` (20000 channels, 2x2 maps at batch 2) against the factor with the
    shared part and without it."""
    n, c, p, eps = 2, 20000, 4, 1e-5
    alpha, sigma, beta = 0.4, 0.9, 0.6
    gen = torch.Generator().manual_seed(0)
    s = torch.randn(1, c, p, generator=gen, dtype=torch.float64)
    x = (alpha * torch.randn(n, c, 1, generator=gen, dtype=torch.float64) + sigma * (s - s.mean(2, keepdim=True))
         + beta * torch.randn(n, c, p, generator=gen, dtype=torch.float64)).reshape(n, c, 2, 2).requires_grad_(True)
    dy = torch.randn(n, c, 2, 2, generator=gen, dtype=torch.float64)
    y = nn.functional.batch_norm(x, None, None, training=True, eps=eps)
    (dx,) = torch.autograd.grad(y, x, dy)
    per = dx.pow(2).mean((0, 2, 3))  # per channel: independent draws
    measured, se = float(per.mean()), float(per.std()) / math.sqrt(c)
    q = alpha**2 + sigma**2 * (p - 1) / p + beta**2
    dc, dcb = alpha**2 + beta**2 / p, alpha**2 / n + beta**2 / (n * p)
    g, gdc, gdcb = 1.0, 1.0 / p, 1.0 / (n * p)

    def predicted(shared):
        f = _batch_stats.finite_set_factor("batch", q, dc, dcb, g, gdc, gdcb, n, p, eps, shared=shared,
                                           shared_dims=p - 1)
        return f * (g - gdcb) / (q - dcb + eps)

    assert abs(measured - predicted(sigma**2 * (p - 1) / p)) <= 4 * se, (measured, predicted(sigma**2 * 0.75), se)
    assert abs(measured - predicted(0.0)) > 4 * se, (measured, predicted(0.0), se)


def test_a_padded_convolutions_border_pattern_is_one_direction():
    """A 3x3 convolution on a 2x2 map turns its input's batch constant ``m_c`` into ``m_c k_c[p]``: one fixed
    pattern per channel (its rows' tap sums at each position), the same in every sample: on one direction of the
    positional part (``shared_dims=1``), not spread over all ``P - 1`` (the real ``F.batch_norm``, 20000
    channels, batch 2)."""
    n, c, p, eps = 2, 20000, 4, 1e-5
    sigma, beta = 0.9, 0.6
    gen = torch.Generator().manual_seed(1)
    k = torch.randn(1, c, p, generator=gen, dtype=torch.float64)
    k = (k - k.mean(2, keepdim=True)) / (k - k.mean(2, keepdim=True)).pow(2).mean(2, keepdim=True).sqrt()
    m = torch.randn(1, c, 1, generator=gen, dtype=torch.float64)
    x = (sigma * m * k + beta * torch.randn(n, c, p, generator=gen, dtype=torch.float64)).reshape(n, c, 2, 2)
    x.requires_grad_(True)
    dy = torch.randn(n, c, 2, 2, generator=gen, dtype=torch.float64)
    (dx,) = torch.autograd.grad(nn.functional.batch_norm(x, None, None, training=True, eps=eps), x, dy)
    per = dx.pow(2).mean((0, 2, 3))
    measured, se = float(per.mean()), float(per.std()) / math.sqrt(c)
    q, dc, dcb = sigma**2 + beta**2, beta**2 / p, beta**2 / (n * p)
    g, gdc, gdcb = 1.0, 1.0 / p, 1.0 / (n * p)

    def predicted(dims):
        f = _batch_stats.finite_set_factor("batch", q, dc, dcb, g, gdc, gdcb, n, p, eps, shared=sigma**2,
                                           shared_dims=dims)
        return f * (g - gdcb) / (q - dcb + eps)

    assert abs(measured - predicted(1)) <= 4 * se, (measured, predicted(1), se)
    assert abs(measured - predicted(p - 1)) > 4 * se, (measured, predicted(p - 1), se)
