"""Shifts by a constant (a tensor, a scalar of either sign) and dropout masks, against the variance measured through the real layers.

A shift ``x - self.mean`` before the first drawn layer is evaluated on the example (exact); without the
constant's values the old rule passed ``E[x^2]`` on unchanged, which the tests show to be far off. Dropout and
stochastic depth multiply second moments by ``E[mask^2] = 1 / keep`` in training (the trace once took the RMS of
the one mask it drew, zero when it dropped the traced sample).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import initwise as iw
from initwise._diagnose import MISMATCH_Z


def run_of(model, x, seed=0):
    return iw.diagnose(model, x, schemes=["kaiming_fan_in"], generator=torch.Generator().manual_seed(seed)).runs[0]


class MeanShifted(nn.Module):
    """SwinIR's head: ``self.mean = self.mean.type_as(x); x = (x - self.mean) * range`` (a plain attribute), or
    the same with a registered buffer."""

    def __init__(self, buffer: bool):
        super().__init__()
        mean = torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1)
        if buffer:
            self.register_buffer("mean", mean)
        else:
            self.mean = mean
        self.buffer = buffer
        self.conv = nn.Conv2d(3, 64, 3, padding=1, padding_mode="circular")
        self.out = nn.Conv2d(64, 8, 1)

    def forward(self, x):
        if not self.buffer:
            self.mean = self.mean.type_as(x)
        x = (x - self.mean) * 255.0
        return self.out(torch.relu(self.conv(x)))


@pytest.mark.parametrize("buffer", [False, True])
def test_a_shift_by_a_constant_tensor_is_evaluated_on_the_example(buffer):
    torch.manual_seed(0)
    model = MeanShifted(buffer)
    x = 0.45 + 0.1 * torch.randn(16, 3, 24, 24)  # an image-like input: its mean is most of its second moment
    g = iw.trace(model, x)
    shift = next(n for n in g.nodes if n.kind == "shift")
    assert shift.const is not None and len(shift.const[1]) == 3
    run = run_of(model, x)
    conv = run["conv"]
    assert conv.forward_exact
    assert abs(math.log(conv.forward / conv.predicted_forward)) <= MISMATCH_Z * conv.forward_noise
    # the old rule: E[x^2] passed through the shift unchanged, 20x the shifted signal's
    q, q_shifted = float(x.pow(2).mean()), float((x - model.mean).pow(2).mean())
    old = conv.predicted_forward * q / q_shifted
    assert abs(math.log(conv.forward / old)) > 10 * MISMATCH_Z * conv.forward_noise


class ScalarShifted(nn.Module):
    """A sigmoid gate centred by a scalar (SPAN's ``sigmoid(out3) - 0.5``), its reflection ``0.5 - sigmoid``, and
    ``1 + sigmoid`` written with the scalar first (Python's reflected add): the sigmoid's output has mean 0.5."""

    def __init__(self, form: str):
        super().__init__()
        self.form = form
        self.c1 = nn.Conv2d(8, 64, 1)
        self.c2 = nn.Conv2d(64, 256, 1)  # many output channels: their constant parts average

    def forward(self, x):
        s = torch.sigmoid(self.c1(x))
        s = {"sub": lambda: s - 0.5, "rsub": lambda: 0.5 - s, "radd": lambda: 1 + s}[self.form]()
        return self.c2(s)


@pytest.mark.parametrize("form", ["sub", "rsub", "radd"])
def test_a_scalar_shift_keeps_its_sign(form):
    """``E[(x + c)^2] = E[x^2] + 2 c E[x] + c^2`` exactly: for ``sigmoid - 0.5`` (measured 0.06 at unit
    pre-activation variance) the sign of ``c`` decides between that and 1.06 (read as ``+ 0.5``, SPAN's gates
    were over-predicted 20x each, its backward then 1e8x); ``1 + s`` must not be read as ``1 - s``."""
    torch.manual_seed(0)
    model, x = ScalarShifted(form), torch.randn(32, 8, 8, 8)
    run = run_of(model, x)
    c2 = run["c2"]
    assert c2.forward_exact
    assert abs(math.log(c2.forward / c2.predicted_forward)) <= MISMATCH_Z * c2.forward_noise
    # the other sign, the same E[s^2] and E[s] = 0.5: 2 |c| far from the truth
    with torch.no_grad():
        sq = float(torch.sigmoid(model.c1(x)).pow(2).mean())
    c = {"sub": -0.5, "rsub": 0.5, "radd": 1.0}[form]
    sign = -1.0 if form == "rsub" else 1.0
    right, wrong = sq + 2 * c * sign * 0.5 + c * c, sq - 2 * c * sign * 0.5 + c * c
    assert abs(math.log(c2.forward / (c2.predicted_forward * wrong / right))) > MISMATCH_Z * c2.forward_noise


class DropPath(nn.Module):
    """timm's stochastic depth: a per-sample Bernoulli(keep) mask divided by keep."""

    def __init__(self, drop_prob: float):
        super().__init__()
        self.drop_prob = drop_prob
        self.scale_by_keep = True

    def forward(self, x):
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)


class StochasticDepth(nn.Module):
    """torchvision's: ``p`` and a per-row mask, divided by the survival rate."""

    def __init__(self, p: float):
        super().__init__()
        self.p, self.mode = p, "row"

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        noise = torch.empty([x.shape[0]] + [1] * (x.ndim - 1)).bernoulli_(keep)
        return x * noise.div_(keep)


class Masked(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.c1 = nn.Conv2d(3, 64, 3, padding=1, padding_mode="circular")
        self.drop = {"droppath": DropPath, "stochastic": StochasticDepth, "dropout": nn.Dropout}[kind](0.5)
        self.c2 = nn.Conv2d(64, 64, 1)
        self.c3 = nn.Conv2d(64, 8, 1)

    def forward(self, x):
        return self.c3(torch.relu(self.c2(self.drop(torch.relu(self.c1(x))))))


@pytest.mark.parametrize("kind", ["droppath", "stochastic", "dropout"])
def test_dropout_masks_multiply_second_moments_by_one_over_keep(kind):
    """Over 12 seeds (weights, masks, cotangents) the mean log-ratio of c2's forward and c1's backward is within
    4 of its standard errors of 0; the old rule (masks as identity, or as the one mask the trace drew) is off
    by ln 2 = 0.69."""
    logs = {"f": [], "b": []}
    for seed in range(12):
        torch.manual_seed(seed)
        model = Masked(kind)
        x = torch.randn(64, 3, 8, 8)
        g = iw.trace(model, x)
        node = next(n for n in g.nodes if n.module == "drop")
        assert node.kind == "pass" and node.factor == pytest.approx(2.0)
        run = run_of(model, x, seed)
        assert run["c2"].forward_exact and run["c1"].backward_exact
        logs["f"].append(math.log(run["c2"].forward / run["c2"].predicted_forward))
        logs["b"].append(math.log(run["c1"].backward / run["c1"].predicted_backward))
    for v in logs.values():
        mean = sum(v) / len(v)
        se = math.sqrt(sum((t - mean) ** 2 for t in v) / (len(v) - 1) / len(v))
        assert abs(mean) <= MISMATCH_Z * se + 0.02, (mean, se)
        assert abs(mean + math.log(2.0)) > MISMATCH_Z * se + 0.02  # what a mask taken as identity predicts


class TableInput(nn.Module):
    """Swin-V2's continuous position bias: an MLP on a coordinate table built from buffers, not from the input."""

    def __init__(self):
        super().__init__()
        self.register_buffer("table", torch.linspace(-1, 1, 98).view(1, 49, 2))
        self.cpb = nn.Linear(2, 16)
        self.conv = nn.Conv2d(3, 16, 1)

    def forward(self, x):
        bias = self.cpb(self.table).mean()
        return self.conv(x) + bias


def test_a_layer_on_an_untraced_tensor_is_not_exact():
    """The table reaches the layer as no traced tensor: its moments are taken as 1, so the layer's forward is
    not marked exact (it was, and is off by 1.5x on Swin2SR's and GRL's tables)."""
    torch.manual_seed(0)
    run = run_of(TableInput(), torch.randn(4, 3, 8, 8))
    assert not run["cpb"].forward_exact
    assert run["conv"].forward_exact


class Squeeze(nn.Module):
    """An SE block's squeeze on a small map: a 1x1 conv, the mean over every position (``x.mean((2, 3))``,
    ``AdaptiveAvgPool2d(1)`` or an ``AvgPool2d`` the size of the map), a 1x1 conv."""

    def __init__(self, form: str, hw: int):
        super().__init__()
        self.form = form
        self.c1 = nn.Conv2d(16, 64, 1, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1) if form == "adaptive" else nn.AvgPool2d(hw) if form == "avgpool" else None
        self.c2 = nn.Conv2d(64, 64, 1, bias=False)

    def forward(self, x):
        y = self.c1(x)
        y = y.mean((2, 3), keepdim=True) if self.pool is None else self.pool(y)
        return self.c2(y)


@pytest.mark.parametrize("hw", [2, 3])
@pytest.mark.parametrize("form", ["mean", "adaptive", "avgpool"])
def test_a_mean_over_every_position_has_the_power_of_the_per_sample_constant(form, hw):
    """``dc`` is the power of the mean over a sample's positions, so the mean over all of them has ``E[m^2] =
    dc`` exactly (the old rule added ``(q - dc) / P`` of the positions' noise again, which ``dc`` already holds).
    Over 16 seeds the mean log-ratio of c2's forward is within 4 of its standard errors (+0.02) of 0 (measured:
    -0.003 and +0.008 +- 0.020 at 2x2 and 3x3), and the old rule's is outside that (-0.32 and -0.21)."""
    logs = []
    for seed in range(16):
        torch.manual_seed(seed)
        model = Squeeze(form, hw)
        x = torch.randn(32, 16, hw, hw) + 0.5 * torch.randn(32, 16, 1, 1)
        run = run_of(model, x, seed)
        logs.append(math.log(run["c2"].forward / run["c2"].predicted_forward))
    mean = sum(logs) / len(logs)
    se = math.sqrt(sum((t - mean) ** 2 for t in logs) / (len(logs) - 1) / len(logs))
    assert abs(mean) <= MISMATCH_Z * se + 0.02, (mean, se)
    # the old rule's prediction, from the same propagated moments of c1's output
    g = iw.trace(model, x)
    node = next(n for n in g.nodes if n.module == "c1")
    s = iw.plan(model, x, "kaiming_fan_in")._propagation.signals[node.id]
    old = math.log((s.dc + (s.q - s.dc) / (hw * hw)) / s.dc)
    assert abs(mean - old) > MISMATCH_Z * se + 0.02, (mean, old, se)


def test_max_pool_of_a_window_of_equal_values_is_them():
    """A stem's output measured on a smooth patch can have ``near`` 1 (neighbours equal): the window's max is
    its value (the rule had no variance left to take a max of and returned NaN)."""
    from initwise._activations import resolve_activation
    from initwise._rules_reduce import max_pool_forward
    from initwise._signal import Sig

    pre = Sig(1.0, 0.0, 0.45, 0.0, near=1.0)
    x = Sig(0.5, 0.4, 0.29, 0.18, near=1.0)
    out, _ = max_pool_forward(x, (3, 3), (2, 64, 24, 24), (2, 64, 12, 12), resolve_activation("relu"), pre)
    assert (out.q, out.mean) == (x.q, x.mean)
