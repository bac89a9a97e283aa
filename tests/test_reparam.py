"""Layers under torch's spectral norm and weight norm (old hook API and torch.nn.utils.parametrizations): the
parameter underneath is drawn with the effective weight's fans, weight norm's magnitude follows, the plan says so."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations, spectral_norm, weight_norm

import initwise

WRAPS = {"spectral_norm": spectral_norm, "weight_norm": weight_norm,
         "parametrizations.spectral_norm": parametrizations.spectral_norm,
         "parametrizations.weight_norm": parametrizations.weight_norm}
DRAWN = {"spectral_norm": "weight_orig", "weight_norm": "weight_v",
         "parametrizations.spectral_norm": "parametrizations.weight.original",
         "parametrizations.weight_norm": "parametrizations.weight.original1"}


def _net(kind: str) -> nn.Module:
    wrap = WRAPS[kind]
    if kind == "weight_norm":  # torch deprecates the hook API in favour of parametrizations
        with pytest.warns(FutureWarning):
            return nn.Sequential(wrap(nn.Conv2d(16, 64, 3, padding=1)), nn.LeakyReLU(0.2),
                                 wrap(nn.Conv2d(64, 8, 3, padding=1)))
    return nn.Sequential(wrap(nn.Conv2d(16, 64, 3, padding=1)), nn.LeakyReLU(0.2), wrap(nn.Conv2d(64, 8, 3, padding=1)))


def _effective(layer: nn.Module) -> torch.Tensor:
    """The weight the layer's forward uses (after its hooks / parametrization), read through a forward."""
    seen = {}
    h = layer.register_forward_hook(lambda m, a, o: seen.setdefault("w", m.weight.detach().clone()))
    layer(torch.zeros(1, layer.in_channels, 4, 4))
    h.remove()
    return seen["w"]


@pytest.mark.parametrize("kind", sorted(WRAPS))
def test_plan_draws_the_parameter_underneath_with_the_effective_fans(kind: str) -> None:
    model, x = _net(kind), torch.randn(2, 16, 8, 8)
    p = initwise.plan(model, x)
    pp = {q.param: q for q in p.params}[f"0.{DRAWN[kind]}"]
    assert pp.method == "normal" and pp.fans.fan_in == 16 * 9
    assert pp.std == pytest.approx(initwise.gain("leaky_relu", param=0.2) / math.sqrt(16 * 9))
    assert f"0.{DRAWN[kind]}: {kind.split('.')[-1].replace('_', ' ')}:" in str(p)
    if "spectral" in kind:
        assert "0:spectral_norm" in p.approximate  # the drawn scale is divided away: predictions approximate


@pytest.mark.parametrize("kind", sorted(WRAPS))
def test_init_gives_the_effective_weight_what_the_plan_says(kind: str) -> None:
    """Measured on the weight the forward uses: weight norm's is the drawn one (std within 4 SE of the plan's);
    spectral norm's has largest singular value 1 once torch's power iteration has converged."""
    torch.manual_seed(0)
    model, x = _net(kind), torch.randn(2, 16, 8, 8)
    before = {n: q.detach().clone() for n, q in model.named_parameters()}
    p = initwise.init_(model, x, seed=3)
    drawn = dict(model.named_parameters())[f"0.{DRAWN[kind]}"]
    assert not torch.equal(before[f"0.{DRAWN[kind]}"], drawn)
    std = {q.param: q for q in p.params}[f"0.{DRAWN[kind]}"].std
    n = drawn.numel()
    assert abs(float(drawn.detach().pow(2).mean().sqrt()) - std) < 4 * std / math.sqrt(2 * n)
    layer = model[0]
    if "weight_norm" in kind:
        assert torch.allclose(_effective(layer), drawn.detach(), rtol=1e-5, atol=1e-6)
    else:
        for _ in range(30):  # torch refines sigma by one power iteration per training forward
            _effective(layer)
        w = _effective(layer)
        sigma = float(torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2))
        assert sigma == pytest.approx(1.0, rel=1e-3)
        ms = float(w.pow(2).mean())
        rows, cols = w.shape[0], w[0].numel()
        bai_yin = 1 / (math.sqrt(rows) + math.sqrt(cols)) ** 2  # what the plan predicts with (approximate)
        assert 0.7 < ms / bai_yin < 1.3
    assert torch.isfinite(model(x)).all()


@pytest.mark.parametrize("kind", sorted(WRAPS))
def test_torch_default_and_current_do_not_crash_and_keep_the_underlying_weight(kind: str) -> None:
    model, x = _net(kind), torch.randn(2, 16, 8, 8)
    before = dict(model.named_parameters())[f"0.{DRAWN[kind]}"].detach().clone()
    initwise.plan(model, x, "current")
    p = initwise.plan(model, x, "torch_default")
    assert {q.param: q.method for q in p.params}[f"0.{DRAWN[kind]}"] == "keep"
    initwise.init_(model, x, scheme="torch_default", seed=0)
    assert torch.equal(dict(model.named_parameters())[f"0.{DRAWN[kind]}"].detach(), before)
    initwise.diagnose(model, x)


class FusedEval(nn.Module):
    """SPAN's Conv3XC pattern: two training convs, fused into ``eval_conv`` through ``.data`` by every eval forward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv3, self.conv1 = nn.Conv2d(4, 8, 3, padding=1), nn.Conv2d(4, 8, 1)
        self.eval_conv = nn.Conv2d(4, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return torch.relu(self.conv3(x) + self.conv1(x))
        w = self.conv3.weight.data.clone() + nn.functional.pad(self.conv1.weight.data.clone(), [1, 1, 1, 1])
        self.eval_conv.weight.data = w
        self.eval_conv.bias.data = self.conv3.bias.data + self.conv1.bias.data
        return torch.relu(self.eval_conv(x))


def test_a_parameter_the_eval_forward_overwrites_is_kept_and_the_plan_says_why() -> None:
    model, x = FusedEval().eval(), torch.randn(2, 4, 8, 8)
    out = model(x)
    notes = {q.param: (q.method, q.note) for q in initwise.plan(model, x).params}
    assert notes["eval_conv.weight"][0] == "keep" and notes["eval_conv.weight"][1].startswith("overwritten by the")
    assert notes["conv3.weight"] == ("keep", "read by the forward outside the signal path (e.g. fused into "
                                             "another parameter): kept")
    assert not any("not used" in n for _, n in notes.values())  # every parameter is read by this forward
    state = {k: v.clone() for k, v in model.state_dict().items()}
    initwise.init_(model, x, seed=0)  # nothing it could draw would survive the next forward
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert torch.equal(model(x), out)
    train = {q.param: q.method for q in initwise.plan(FusedEval().train(), x).params}
    assert train["conv3.weight"] == train["conv1.weight"] == "normal"  # in train mode they are the layers
