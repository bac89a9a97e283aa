"""The probe's reductions and hooks against independent measurements of the same tensors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from initwise._probe import SATURATION_OUTPUT, Probe, finish, reduce


def _stats(t: torch.Tensor) -> tuple[float, float, float]:
    x = t.detach().double()
    return float(x.mean()), float(x.var(unbiased=False)), float(x.pow(2).mean())


@pytest.mark.parametrize("shape,cdim", [((4, 6, 5, 7), 1), ((3, 9, 8), -1), ((10, 12), -1), ((2, 3, 4), 1)])
def test_reduce_matches_direct_moments(shape, cdim):
    t = torch.randn(shape) * 1.7 + 0.3
    s = finish([reduce(t, cdim)])[0]
    mean, var, ms = _stats(t)
    assert s.mean == pytest.approx(mean, rel=1e-5, abs=1e-6)
    assert s.variance == pytest.approx(var, rel=1e-5)
    assert s.second_moment == pytest.approx(ms, rel=1e-5)
    assert s.count == t.numel()
    c = shape[1] if cdim == 1 else shape[-1]
    assert (s.samples, s.channels) == (shape[0], c)
    per_channel = t.double().movedim(cdim, 0).reshape(c, -1).pow(2).mean(1)
    assert s.se_channel == pytest.approx(float(per_channel.std() / math.sqrt(c) / per_channel.mean()), rel=1e-5)


def test_dead_and_saturated_fractions():
    z = torch.randn(8, 10, 6, 6)
    z[:, :3] = -z[:, :3].abs() - 0.1  # three of ten channels never positive
    assert finish([reduce(torch.relu(z), 1, "relu")])[0].dead_fraction == pytest.approx(0.3)
    assert finish([reduce(F.leaky_relu(z, 0.1), 1, "leaky_relu")])[0].dead_fraction == pytest.approx(0.3)
    z = torch.randn(64, 32) * 3
    want = float((z.abs() > 2.5).double().mean())
    got = finish([reduce(torch.tanh(z), -1, "tanh")])[0].saturated_fraction
    assert got == pytest.approx(want, abs=2e-3)  # float rounding of tanh at the threshold only
    want = float((z.abs() > 5).double().mean())
    assert finish([reduce(torch.sigmoid(z), -1, "sigmoid")])[0].saturated_fraction == pytest.approx(want, abs=2e-3)
    assert SATURATION_OUTPUT["tanh"] == pytest.approx(math.tanh(2.5))


class Net(nn.Module):
    """conv -> in-place ReLU; conv -> BN -> functional relu; linear reused twice; linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.c1(x))
        x = F.relu(self.bn(self.c2(x)))
        x = x.mean((2, 3))
        x = torch.tanh(self.fc(x))
        x = torch.tanh(self.fc(x))
        return self.head(x)


def test_probe_matches_retain_grad_measurement():
    net = Net()
    x = torch.randn(6, 3, 10, 10)
    layers = [("c1", True), ("c2", True), ("fc", True), ("head", False)]
    cot = torch.randn(6, 2)
    with torch.enable_grad():
        probe = Probe(net, layers)
        with probe:
            y = net(x)
        torch.autograd.grad(y, [net.c1.weight], cot)
    res = probe.results()
    # independent: the same forward written out, with retain_grad on every pre-activation
    z1 = net.c1(x)
    z1.retain_grad()
    a1 = torch.relu(z1)
    z2 = net.c2(a1)
    z2.retain_grad()
    a2 = F.relu(net.bn(z2))
    z3 = net.fc(a2.mean((2, 3)))
    z3.retain_grad()
    a3 = torch.tanh(z3)
    z4 = net.head(torch.tanh(net.fc(a3)))
    z4.retain_grad()
    z4.backward(cot)
    for name, z, a in (("c1", z1, a1), ("c2", z2, a2), ("fc", z3, a3), ("head", z4, None)):
        r = res[name]
        assert r["output"].second_moment == pytest.approx(_stats(z)[2], rel=1e-5)
        assert r["output"].mean == pytest.approx(_stats(z)[0], rel=1e-4, abs=1e-7)
        assert r["grad"].second_moment == pytest.approx(_stats(z.grad)[2], rel=1e-5)
        if a is None:
            assert r["activation"] is None
        else:
            assert r["activation"].second_moment == pytest.approx(_stats(a)[2], rel=1e-5)
    assert res["fc"]["calls"] == 2 and res["c1"]["calls"] == 1
    assert res["c1"]["activation"].op == "relu" and res["fc"]["activation"].op == "tanh"
    net.zero_grad()


def test_probe_removes_hooks_when_forward_raises():
    class Boom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.l = nn.Linear(4, 4)

        def forward(self, x):
            torch.relu(self.l(x))
            raise ValueError("boom")

    m = Boom()
    with pytest.raises(ValueError, match="boom"):
        with Probe(m, [("l", True)]):
            m(torch.randn(2, 4))
    assert not m.l._forward_hooks
    from torch.overrides import _get_current_function_mode_stack

    assert not _get_current_function_mode_stack()  # the activation tap was left


def test_relu_mask_spread_from_the_channels_moments():
    """The spread over channels of a ReLU's kept fraction, estimated from each channel's output mean and second
    moment (Gaussian pre-activation), against the fractions counted on the pre-activation."""
    torch.manual_seed(0)
    mu, sd = torch.linspace(-1.5, 1.5, 16).view(1, 16, 1, 1), torch.linspace(0.5, 2.0, 16).view(1, 16, 1, 1)
    z = torch.randn(8, 16, 32, 32) * sd + mu
    got = finish([reduce(torch.relu(z), 1, "relu")])[0].se_mask
    kept = (z > 0).double().mean((0, 2, 3))
    assert got == pytest.approx(float(kept.std() / kept.mean() / 4.0), rel=0.02)  # 16 channels
    assert finish([reduce(torch.tanh(z), 1, "tanh")])[0].se_mask is None
