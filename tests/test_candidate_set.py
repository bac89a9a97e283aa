"""generate_candidates: the parts that differ on this model, and nothing that draws the same weights twice."""

from __future__ import annotations

import torch
from torch import nn

import initwise as iw
from initwise import zoo


def test_square_linear_chain_has_no_fan_out_and_no_residual_variants() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16))
    names = [c.name for c in iw.generate_candidates(net, torch.randn(8, 16))]
    assert "kaiming_fan_out" not in names  # fan_in == fan_out everywhere: the same weights as fan_in
    assert not any("res" in n for n in names) and "kaiming_fan_in_out0.1" not in names
    assert {"default", "kaiming_fan_in", "lecun", "orthogonal", "lsuv"} <= set(names)
    assert "xavier" not in names  # Var = 1/fan_avg = 1/fan_in here: the same weights as LeCun
    assert "current" not in names  # PyTorch's default is what the constructor drew


def test_residual_model_gets_branch_end_scales_and_a_custom_init_is_a_candidate() -> None:
    torch.manual_seed(0)
    model = zoo.build("edsr", scale=2, n_resblocks=4, n_feats=8)
    x = torch.rand(2, 3, 12, 12)
    cands = {c.name: c for c in iw.generate_candidates(model, x)}
    assert {"kaiming_fan_in_zero_res", "kaiming_fan_in_res0.1", "kaiming_fan_in_out0.1"} <= set(cands)
    ends = sum(lp.residual_end for lp in iw.plan(model, x).layers)
    assert cands["kaiming_fan_in_res_isqrt"].options["residual_scale"] == round(ends ** -0.5, 4)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(0.1)  # what basicsr's default_init_weights(scale=0.1) leaves
    assert "current" in [c.name for c in iw.generate_candidates(model, x)]


def test_torch_gain_candidate_only_where_the_table_differs() -> None:
    relu = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 1, 3))
    lrelu = nn.Sequential(nn.Conv2d(1, 4, 3), nn.LeakyReLU(0.2), nn.Conv2d(4, 4, 3), nn.Tanh(), nn.Conv2d(4, 1, 3))
    x = torch.rand(2, 1, 12, 12)
    assert "torch_gain_fan_in" not in [c.name for c in iw.generate_candidates(relu, x)]
    assert "torch_gain_fan_in" in [c.name for c in iw.generate_candidates(lrelu, x)]  # tanh: 5/3 vs 1.59


def test_generate_candidates_hands_back_the_plans_it_made():
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 3, 3, padding=1))
    x = torch.rand(2, 3, 8, 8)
    plans: dict = {}
    cands = iw.generate_candidates(net, x, plans=plans)
    planned = [c for c in cands if c.lsuv is None and not c.keeps_weights]
    assert sorted(plans) == sorted(c.name for c in planned)
    for c in planned:
        again = iw.plan(net, x, **c.plan_kwargs())
        assert [(pp.method, pp.std) for lp in plans[c.name].layers for pp in lp.params] == \
            [(pp.method, pp.std) for lp in again.layers for pp in lp.params]
