"""Tests of the training loop: it learns, it is deterministic, it leaves global state alone, it reports."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from initwise import zoo
from initwise.bench.data import get_task
from initwise.bench.train import RunResult, train

FAST = dict(batch_size=8, patch_size=32, eval_crop=48)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_loss_decreases_in_20_steps() -> None:
    model = zoo.build("espcn", scale=2, in_channels=3)
    r = train(model, get_task("sr-x2"), steps=20, lr=1e-3, seed=0, eval_at=(0,), **FAST)
    assert r.steps_done == 20 and len(r.losses) == 20 and not r.diverged
    first, last = sum(r.losses[:4]) / 4, sum(r.losses[-4:]) / 4
    # Default-initialised ESPCN starts near L1 = 0.27 (output ~0 vs images ~0.45); 20 Adam steps at 1e-3
    # roughly halve it. Require a 30% drop, far beyond the batch-to-batch noise of the L1 loss (~10%).
    assert last < 0.7 * first, r.losses
    assert r.eval_steps == [0, 20]
    assert r.final_psnr > r.eval_psnr[0] + 3


def test_denoiser_trains_with_mse() -> None:
    model = zoo.build("dncnn", depth=4, n_feats=16)
    r = train(model, get_task("denoise-s25"), steps=15, lr=1e-3, seed=1, eval_at=(), **FAST)
    assert r.loss == "mse"
    assert sum(r.losses[-3:]) < 0.7 * sum(r.losses[:3])
    assert math.isfinite(r.baseline_psnr) and math.isfinite(r.final_psnr)


def test_same_seed_same_numbers_and_state_restored() -> None:
    def model() -> nn.Module:
        torch.manual_seed(123)  # the caller's initialisation
        return zoo.build("edsr", scale=2, n_resblocks=1, n_feats=8)

    def run(m: nn.Module, seed: int) -> RunResult:
        return train(m, get_task("sr-x2"), steps=6, lr=5e-4, seed=seed, eval_at=(0, 3), **FAST)

    m = model()
    torch.manual_seed(7)
    expected_next = torch.rand(3)
    torch.manual_seed(7)
    det_before = torch.are_deterministic_algorithms_enabled()
    threads = torch.get_num_threads()
    a = run(m, 0)
    assert torch.equal(torch.rand(3), expected_next)  # global RNG restored
    assert torch.are_deterministic_algorithms_enabled() == det_before
    assert torch.get_num_threads() == threads
    b, c = run(model(), 0), run(model(), 1)
    assert a.losses == b.losses and a.eval_psnr == b.eval_psnr
    assert a.initial_output_std == b.initial_output_std
    assert a.losses != c.losses


def test_train_does_not_reinitialise_and_restores_mode() -> None:
    model = zoo.build("vdsr", in_channels=3, depth=3, n_feats=8).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    r = train(model, get_task("sr-x2"), steps=0, upsample_input=True, **FAST)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training
    assert r.steps_done == 0 and r.losses == [] and r.eval_steps == [0]
    # step-0 statistics come from the first batch, before the first update
    r = train(model, get_task("sr-x2"), steps=1, upsample_input=True, **FAST)
    x, y = get_task("sr-x2").train_batch(8, 32, torch.Generator().manual_seed(0), upsample=True)
    with torch.no_grad():
        model.load_state_dict(before)
        model.train()
        out = model(x)
    assert r.initial_loss == pytest.approx((out - y).abs().mean().item(), rel=1e-6)
    assert r.initial_output_std == pytest.approx(out.std().item(), rel=1e-6)


class _Exploding(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * float("inf")


def test_divergence_is_reported_and_json_clean() -> None:
    r = train(_Exploding(), get_task("denoise-s15"), steps=5, **FAST)
    assert r.diverged and r.diverged_at == 0 and r.steps_done == 0
    assert math.isnan(r.final_psnr)
    d = r.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["final_psnr"] is None and d["diverged"] is True


def test_bad_arguments() -> None:
    model = zoo.build("espcn", scale=2, in_channels=3)
    with pytest.raises(ValueError, match="loss"):
        train(model, get_task("sr-x2"), steps=1, loss="huber", **FAST)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="eval_at"):
        train(model, get_task("sr-x2"), steps=2, eval_at=(5,), **FAST)
