"""The advisor's identity gate (initwise._advise_gate; docs/evidence.md, "Ninth session"): its inputs against
direct arithmetic on the example and target, and what advise picks with it on real small nets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import initwise as iw
from initwise._advise_gate import GATE, gate_ratio, gated, homogeneous, identity_loss

L1 = lambda o, t: (o - t).abs().mean()  # noqa: E731


def test_identity_loss_same_size_is_the_smaller_of_input_and_zero():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 8, 8, generator=g)
    y = x + 0.05  # the input is the better prediction: 0.05
    assert identity_loss(x, y, L1) == pytest.approx(0.05, rel=1e-5)
    r = 0.01 * torch.randn(4, 1, 8, 8, generator=g)  # a residual target: zero is the better prediction
    assert identity_loss(x, r, L1) == pytest.approx(float(r.abs().mean()), rel=1e-6)


def test_identity_loss_resizes_the_input_to_the_target():
    x = torch.full((2, 3, 6, 6), 0.3)  # bicubic upsampling of a constant is that constant
    y = torch.full((2, 3, 12, 12), 0.4)
    assert identity_loss(x, y, L1) == pytest.approx(0.1, rel=1e-5)
    x1 = torch.full((2, 1, 5), 0.2)  # 1-D signals: linear
    assert identity_loss(x1, torch.full((2, 1, 10), 0.25), L1) == pytest.approx(0.05, rel=1e-5)


@pytest.mark.parametrize("example, target", [
    (torch.rand(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))),  # labels
    (torch.rand(2, 3, 8, 8), torch.rand(2, 1, 8, 8)),  # other channel count
    (torch.rand(2, 16), torch.rand(2, 16)),  # no spatial dims
    ((torch.rand(2, 1, 8, 8),), torch.rand(2, 1, 8, 8)),  # not a tensor
])
def test_identity_loss_is_none_where_there_is_no_identity(example, target):
    assert identity_loss(example, target, L1) is None


def test_homogeneous_and_ratio():
    assert homogeneous(["relu", "leaky_relu(negative_slope=0.2)", "prelu(negative_slope=0.25)", "linear"])
    assert not homogeneous(["relu", "silu"]) and not homogeneous(["gelu"]) and not homogeneous([])
    assert gate_ratio(0.3, 0.2) == pytest.approx(1.5) and gate_ratio(0.3, 0.0) is None
    assert gate_ratio(float("inf"), 0.2) is None and gate_ratio(None, 0.2) is None


class _R:  # the fields of CandidateResult the gate reads
    def __init__(self, name, init_loss, healthy=True, checked=True):
        self.name, self.init_loss, self.healthy, self.checked = name, init_loss, healthy, checked


def test_gated_needs_a_measured_healthy_xavier_within_the_gate():
    acts = ["relu", "linear"]
    assert gated([_R("orthogonal", 0.1), _R("xavier", 0.14)], 0.1, acts) == ("xavier", pytest.approx(1.4))
    assert gated([_R("xavier", 0.1 * GATE * 1.01)], 0.1, acts) is None
    assert gated([_R("xavier", 0.1, healthy=False)], 0.1, acts) is None
    assert gated([_R("xavier", 0.1, checked=False)], 0.1, acts) is None
    assert gated([_R("xavier", 0.1)], 0.1, ["silu", "linear"]) is None
    assert gated([_R("lecun", 0.1)], 0.1, acts) is None


class _Skip(nn.Module):
    """A plain conv stack predicting the noise, subtracted inside the model (DnCNN with the skip inside)."""

    def __init__(self, act: type[nn.Module] = nn.ReLU, depth: int = 6, nf: int = 8) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(1, nf, 3, padding=1), act()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(nf, nf, 3, padding=1), act()]
        self.body = nn.Sequential(*layers, nn.Conv2d(nf, 1, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.body(x)


def _batch():
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(8, 1, 16, 16, generator=g)
    return clean + 0.1 * torch.randn(8, 1, 16, 16, generator=g), clean


def test_advise_with_the_gate_picks_xavier_on_a_relu_net_that_starts_at_the_identity():
    torch.manual_seed(0)
    noisy, clean = _batch()
    adv = iw.advise(_Skip(), noisy, target=clean, seeds=2, probe_steps=2, identity_gate=True)
    assert adv.recommended.name == "xavier" and adv.confidence == "medium"
    xav = next(r for r in adv.results if r.name == "xavier")
    ratio = xav.init_loss / float((noisy - clean).abs().mean())  # the identity: the noisy input itself
    assert ratio <= GATE
    assert f"{ratio:.2f}x the identity" in adv.reasons[0]
    assert "gain 1 on every layer on purpose" in adv.answers["gain"]["text"]


@pytest.mark.parametrize("net", [_Skip(nn.SiLU), _Skip().body], ids=["silu-skip", "no-skip"])
def test_the_gate_does_not_apply_off_its_domain(net):
    noisy, clean = _batch()  # SiLU is not homogeneous; without the skip the gain-1 start is far from the identity
    adv = iw.advise(net, noisy, target=clean, seeds=2, probe_steps=2, identity_gate=True)
    assert not any("starts at the identity" in r for r in adv.reasons)


def test_the_gate_is_off_by_default():
    torch.manual_seed(0)  # the net the gate picks Xavier on: without identity_gate=True the rule is the probe's
    noisy, clean = _batch()
    adv = iw.advise(_Skip(), noisy, target=clean, seeds=2, probe_steps=2)
    assert not any("starts at the identity" in r for r in adv.reasons)
