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


def test_predictions_through_empty_layers_match_the_real_layers() -> None:
    """An empty layer's output has no values: no prediction (None), as nothing is measured there; a layer with an
    empty weight outputs its bias alone, exactly (checked against the real ``nn.Linear`` on an empty input), and
    no gradient flows back through it. Before, the empty layers passed their input's moments on (0.81 against
    nothing measured) and the bias-only layer predicted that too (against 0 measured)."""
    model, x = _squeezed(), torch.randn(64, 4)
    with torch.no_grad():
        model[4].bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
    profile = initwise.diagnose(model, x)
    rows = {lp.name: lp for lp in profile.layers}
    assert rows["2"].predicted_forward is None and rows["2"].forward is None  # Linear(8, 0): no elements
    assert rows["2"].predicted_backward is None and rows["2"].backward is None
    out = model[4](torch.empty(7, 0))  # the real layer: its bias in every row
    measured = float(out.detach().double().pow(2).mean())
    p = initwise.plan(model, x, "current")
    lp = {lp.name: lp for lp in p.layers}["4"]
    q0 = float(x.double().pow(2).mean())
    assert lp.forward * q0 == pytest.approx(measured, rel=1e-9)
    assert lp.forward_bound == 1.0  # exact: the bias is the whole output
    assert rows["4"].forward * q0 == pytest.approx(measured, rel=1e-6)  # diagnose measured the same
    # the first layer gets no gradient through the empty one (the model's output does not depend on it)
    assert rows["0"].predicted_backward == 0.0 and rows["0"].backward == 0.0


def test_an_empty_side_branch_does_not_leak_into_the_signal_path() -> None:
    """DynamicPosBias's pattern: an empty MLP on a coordinate table whose (bias-only) output is added to the
    signal; the layer after the join is predicted from the signal plus the bias, not from the table's moments."""
    model, x = _model(), torch.rand(4, 3, 8, 8)
    with torch.no_grad():
        model.pos[2].bias.fill_(0.0)
    p = initwise.plan(model, x, "current")
    rows = {lp.name: lp for lp in p.layers}
    assert rows["pos_proj"].forward is None and rows["pos.2"].forward == 0.0
    ref = nn.Sequential(model.conv, nn.ReLU(), model.out)  # the same model without the (zero) position bias
    p_ref = initwise.plan(ref, x, "current")
    assert rows["out"].forward == pytest.approx({lp.name: lp for lp in p_ref.layers}["2"].forward, rel=1e-9)
