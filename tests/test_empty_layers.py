"""Zero-element layers (DAT/RGT/CRAFT's DynamicPosBias at small widths has an ``nn.Linear(2, 0)``): nothing to draw,
kept and listed, and no initwise call crashes on them."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import initwise


class PosBias(nn.Module):
    """DynamicPosBias with ``dim // 4 == 0`` channels: Linear(2, 0) -> LayerNorm(0) -> ReLU -> Linear(0, 1)."""

    def __init__(self, channels: int = 8, pos_dim: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, padding=1)
        self.pos_proj = nn.Linear(2, pos_dim)
        self.pos = nn.Sequential(nn.LayerNorm(pos_dim), nn.ReLU(), nn.Linear(pos_dim, 1))
        self.out = nn.Conv2d(channels, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        coords = torch.stack(torch.meshgrid(torch.arange(h, dtype=x.dtype), torch.arange(w, dtype=x.dtype),
                                            indexing="ij"), -1)
        bias = self.pos(self.pos_proj(coords)).squeeze(-1)  # (h, w): the position bias
        return self.out(torch.relu(self.conv(x) + bias))


def _model() -> nn.Module:
    with pytest.warns(UserWarning, match="zero-element"):  # torch's own init says its draw is a no-op
        return PosBias()


EMPTY = ("pos_proj.weight", "pos_proj.bias", "pos.0.weight", "pos.0.bias", "pos.2.weight")


@pytest.mark.parametrize("scheme", ["kaiming", "xavier", "orthogonal", "torch_default"])
def test_plan_keeps_empty_parameters_and_says_why(scheme: str) -> None:
    model, x = _model(), torch.rand(2, 3, 8, 8)
    p = initwise.plan(model, x, scheme)
    notes = {pp.param: pp.note for pp in p.params}
    for name in EMPTY:
        assert dict(model.named_parameters())[name].numel() == 0
        assert notes[name] == "empty: nothing to draw", (name, notes.get(name))
    assert "kept (empty): 5 parameters" in str(p)


def _squeezed() -> nn.Module:
    """An empty layer on the signal path: Linear(8, 0) -> ReLU -> Linear(0, 3) (its output is its bias)."""
    with pytest.warns(UserWarning, match="zero-element"):
        return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 0), nn.ReLU(), nn.Linear(0, 3))


def test_init_draws_the_rest_and_the_bias_after_an_empty_weight_as_torch_does() -> None:
    """torch's reset_parameters gives a bias after a zero-fan weight the bound 0 (zeros); torch_default agrees,
    checked against the module's own reset_parameters on a copy."""
    model, x = _squeezed(), torch.randn(5, 4)
    with torch.no_grad():
        model[4].bias.fill_(0.7)
    ref = copy.deepcopy(model)
    with pytest.warns(UserWarning, match="zero-element"):
        ref[4].reset_parameters()
    initwise.init_(model, x, scheme="torch_default", seed=0)
    assert torch.equal(model[4].bias, ref[4].bias) and float(ref[4].bias.detach().abs().max()) == 0.0
    before = {n: q.detach().clone() for n, q in model.named_parameters()}
    initwise.init_(model, x, seed=1)
    assert not torch.equal(before["0.weight"], model[0].weight)
    assert torch.isfinite(model(x)).all()


def test_diagnose_and_advise_run_and_leave_the_model_as_it_was() -> None:
    model, x = _model(), torch.rand(2, 3, 8, 8)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    profile = initwise.diagnose(model, x)
    measured = {lp.name: lp.forward for lp in profile.layers}
    assert measured["conv"] is not None and measured["conv"] > 0
    assert measured.get("pos_proj") is None  # an empty output: nothing measured, no false number
    initwise.advise(model, x, candidates=["default", "kaiming_fan_in"], seeds=1)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_a_model_whose_output_layer_is_empty() -> None:
    with pytest.warns(UserWarning, match="zero-element"):
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 0))
    x = torch.randn(3, 4)
    p = initwise.plan(model, x)
    assert {pp.param: pp.note for pp in p.params}["2.weight"] == "empty: nothing to draw"
    initwise.init_(model, x, seed=0)
    initwise.diagnose(model, x)
