"""Hand-written activations (``x * sigmoid(x)``, GELU by formula, quick GELU) are traced as the function they
compute, and its moments match the ones measured through the real module."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import initwise


class Swish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


class SwishF(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * nn.functional.sigmoid(x)


class SwishMethod(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sigmoid() * x


class SwishModule(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class GeluErf(nn.Module):  # BERT's gelu
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


class GeluTanh(nn.Module):  # GPT-2's gelu_new
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class QuickGelu(nn.Module):  # CLIP's quick_gelu: no canonical activation equals it
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


CASES = {Swish: "silu", SwishF: "silu", SwishMethod: "silu", SwishModule: "silu", GeluErf: "gelu",
         GeluTanh: "gelu_tanh", QuickGelu: None}


def _net(act: type[nn.Module]) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), act(), nn.Conv2d(16, 4, 1))


@pytest.mark.parametrize("meta", [True, False])
@pytest.mark.parametrize("act", list(CASES), ids=lambda c: c.__name__)
def test_hand_written_activation_is_traced_as_its_function(act: type[nn.Module], meta: bool) -> None:
    g = initwise.trace(_net(act), torch.randn(2, 3, 8, 8), meta=meta)
    traced = g["0"].activation
    if CASES[act] is not None:
        assert traced == initwise.resolve_activation(CASES[act])
    else:
        assert not traced.known and traced.name.startswith("x*f(x)")
    assert not g.unknown and g["2"].activation.name == "linear"


@pytest.mark.parametrize("act", list(CASES), ids=lambda c: c.__name__)
def test_traced_moments_match_the_real_module(act: type[nn.Module]) -> None:
    """E[phi(z)^2] and E[phi'(z)^2] of the traced activation (quadrature) against a Monte Carlo through the real
    module (z ~ N(0, 1), 400k draws, 5 standard errors), and the kaiming gain that follows."""
    traced = initwise.trace(_net(act), torch.randn(2, 3, 8, 8))["0"].activation
    z = torch.randn(400_000, dtype=torch.float64, requires_grad=True)
    y = act()(z)
    (dy,) = torch.autograd.grad(y.sum(), z)
    m = initwise.moments(traced)
    for predicted, sample in ((m.second_moment, y.detach() ** 2), (m.backward, dy ** 2)):
        se = float(sample.std()) / math.sqrt(sample.numel())
        assert abs(predicted - float(sample.mean())) < 5 * se, (predicted, float(sample.mean()), se)
        assert se < 0.01 * float(sample.mean())  # the tolerance is tight
    assert initwise.gain(traced) == pytest.approx(1.0 / math.sqrt(m.second_moment), rel=1e-9)


def test_a_sigmoid_used_elsewhere_too_stays_a_sigmoid() -> None:
    """When sigmoid(x) also feeds something else, the product is not a pointwise function of x alone."""

    class Both(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Conv2d(16, 4, 1)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            s = torch.sigmoid(x)
            return x * s, self.head(s)

    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), Both())
    g = initwise.trace(model, torch.randn(2, 3, 8, 8))
    assert g["0"].activation.name == "sigmoid"


def test_plan_init_and_diagnose_run_on_a_hand_written_activation() -> None:
    model, x = _net(QuickGelu), torch.randn(4, 3, 16, 16)
    before = [p.detach().clone() for p in model.parameters()]
    p = initwise.plan(model, x)
    assert "x*f(x)" in str(p)
    initwise.init_(model, x, seed=0)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert torch.isfinite(model(x)).all()
    profile = initwise.diagnose(model, x)
    assert [lp.name for lp in profile.layers] == ["0", "2"]
