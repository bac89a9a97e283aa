"""Structured kernels a model's init set (bilinear upsampling, identity, few-valued kernels): found, kept by
``structured="keep"``, kept by every drawing candidate of ``generate_candidates``, and never found in random draws."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import initwise as iw
from initwise._advise_answers import code_line
from initwise._kept_kernels import kernel_kind, structured_weights


def _bilinear_1d(size: int) -> torch.Tensor:
    factor = (size + 1) // 2
    centre = factor - 1 if size % 2 == 1 else factor - 0.5
    return 1 - (torch.arange(size, dtype=torch.float32) - centre).abs() / factor


def _bilinear(c_in: int, c_out: int, size: int, diagonal: bool) -> torch.Tensor:
    f = _bilinear_1d(size)
    k = f[:, None] * f[None, :]
    if not diagonal:  # LapSRN's port: every (in, out) slice
        return k.expand(c_in, c_out, size, size).clone()
    w = torch.zeros(c_in, c_out, size, size)  # FCN's bilinear_kernel: the channel diagonal
    for i in range(min(c_in, c_out)):
        w[i, i] = k
    return w


class Upsampler(nn.Module):
    """A LapSRN-like net: features, a bilinear transposed conv, and an image branch upsampled bilinearly."""

    def __init__(self, structured: bool = True) -> None:
        super().__init__()
        self.head = nn.Conv2d(1, 8, 3, padding=1)
        self.act = nn.LeakyReLU(0.2)
        self.up = nn.ConvTranspose2d(8, 8, 4, stride=2, padding=1, bias=False)
        self.tail = nn.Conv2d(8, 1, 3, padding=1)
        self.image = nn.ConvTranspose2d(1, 1, 4, stride=2, padding=1, bias=False)
        if structured:
            with torch.no_grad():
                self.up.weight.copy_(_bilinear(8, 8, 4, diagonal=True))
                self.image.weight.copy_(_bilinear(1, 1, 4, diagonal=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.image(x) + self.tail(self.act(self.up(self.act(self.head(x)))))


def _x() -> torch.Tensor:
    return torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("make, kind", [
    (lambda: _bilinear(8, 8, 4, diagonal=True), "bilinear upsampling"),
    (lambda: _bilinear(4, 6, 3, diagonal=False), "bilinear upsampling"),
    (lambda: _bilinear(1, 1, 4, diagonal=False), "bilinear upsampling"),  # 16 elements, 3 values
    (lambda: nn.init.dirac_(torch.empty(8, 8, 3, 3)), "identity (dirac/eye)"),
    (lambda: nn.init.dirac_(torch.empty(8, 4, 3, 3), groups=2), "identity (dirac/eye)"),
    (lambda: 0.5 * nn.init.eye_(torch.empty(16, 16)), "identity (dirac/eye)"),
    (lambda: torch.full((4, 4, 3, 3), 1 / 9), "a fixed kernel of 1 distinct values"),  # a box filter
])
def test_structured_kernels_are_found(make, kind):
    assert kernel_kind(make()) == kind


@pytest.mark.parametrize("shape", [(16, 16, 3, 3), (4, 1, 4, 4), (1, 1, 4, 4), (64, 64, 3, 3), (10, 300), (2, 8)])
def test_random_draws_are_never_structured(shape):
    # 200 draws of each of four distributions, including the smallest shapes a draw can be flagged at
    g = torch.Generator().manual_seed(1)
    for _ in range(50):
        for draw in (lambda t: nn.init.kaiming_normal_(t, generator=g), lambda t: nn.init.uniform_(t, -1, 1, g),
                     lambda t: nn.init.kaiming_uniform_(t, a=math.sqrt(5), generator=g),
                     lambda t: nn.init.trunc_normal_(t, std=0.02, generator=g)):
            assert kernel_kind(draw(torch.empty(shape))) is None


def test_zero_tiny_and_integer_weights_are_not_structured():
    assert kernel_kind(torch.zeros(8, 8, 3, 3)) is None  # zero-init is the health check's business
    assert kernel_kind(torch.ones(1, 1, 1, 1)) is None  # one element: nothing to tell a draw from
    assert kernel_kind(torch.eye(4, dtype=torch.int64)) is None


def test_structured_weights_names_the_model_s_kernels_only():
    net = Upsampler()
    assert structured_weights(net) == {"up.weight": "bilinear upsampling", "image.weight": "bilinear upsampling"}
    assert structured_weights(net, ["up.weight"]) == {"up.weight": "bilinear upsampling"}
    assert structured_weights(Upsampler(structured=False)) == {}


def test_structured_keep_keeps_the_kernels_and_draws_the_rest():
    net, x = Upsampler(), _x()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    p = iw.plan(net, x, "orthogonal", structured="keep")
    kept = {pp.param: pp.note for lp in p.layers for pp in lp.params if pp.method == "keep"}
    assert kept == {"up.weight": "structured kernel kept: bilinear upsampling",
                    "image.weight": "structured kernel kept: bilinear upsampling"}
    iw.init_(net, x, "orthogonal", structured="keep", seed=0)
    after = dict(net.named_parameters())
    assert torch.equal(after["up.weight"], before["up.weight"])
    assert torch.equal(after["image.weight"], before["image.weight"])
    assert not torch.equal(after["head.weight"], before["head.weight"])
    assert not torch.equal(after["tail.weight"], before["tail.weight"])


def test_default_still_draws_every_weight_and_a_second_init_after_identity_draws():
    net, x = Upsampler(), _x()
    w = net.up.weight.detach().clone()
    iw.init_(net, x, "kaiming", seed=0)
    assert not torch.equal(net.up.weight, w)
    conv = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
    xi = torch.rand(2, 4, 8, 8)
    iw.init_(conv, xi, "identity")
    assert kernel_kind(conv[0].weight) == "identity (dirac/eye)"
    iw.init_(conv, xi, "kaiming", seed=0)
    assert kernel_kind(conv[0].weight) is None


def test_a_plan_that_keeps_structured_kernels_is_not_reused_for_a_model_without_them():
    # the plan cache keys on structure and shapes; a keep plan reads values, so it must not be cached
    x = _x()
    plain, bilinear = Upsampler(structured=False), Upsampler()
    iw.init_(plain, x, "orthogonal", structured="keep", seed=0)
    w = bilinear.image.weight.detach().clone()
    iw.init_(bilinear, x, "orthogonal", structured="keep", seed=0)
    assert torch.equal(bilinear.image.weight, w)
    other = Upsampler(structured=False)  # and the other way round (PyTorch's default draw: nothing to keep)
    w = other.image.weight.detach().clone()
    iw.init_(other, x, "orthogonal", structured="keep", seed=0)
    assert not torch.equal(other.image.weight, w)


def test_structured_option_is_checked():
    with pytest.raises(ValueError, match="structured must be 'draw'"):
        iw.plan(Upsampler(), _x(), "kaiming", structured="yes")


def test_every_drawing_candidate_keeps_the_kernels_and_says_so():
    net, x = Upsampler(), _x()
    cands = iw.generate_candidates(net, x)
    for c in cands:
        if c.name in ("default", "current"):
            assert "structured" not in c.options
        else:
            assert c.options.get("structured") == "keep", c.name
            assert "keeps the structured kernels the model set: image.weight (bilinear upsampling)" in c.description
            assert "structured='keep'" in code_line(c)
    plain = iw.generate_candidates(Upsampler(structured=False), x)
    assert all("structured" not in c.options for c in plain)
    assert [c.name for c in plain] == [c.name for c in cands if c.name != "current"]


def test_advise_keeps_the_kernels_in_its_pick_and_its_answer():
    net, x = Upsampler(), _x()
    y = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear")
    state = {n: t.detach().clone() for n, t in net.state_dict().items()}
    adv = iw.advise(net, x, target=y, seeds=1, probe_steps=1)
    assert all(torch.equal(t, state[n]) for n, t in net.state_dict().items())  # advise changes nothing
    cur = adv.answers["current_init"]
    assert cur["structured_kernels"] == {"up.weight": "bilinear upsampling", "image.weight": "bilinear upsampling"}
    assert "every candidate that draws keeps them" in cur["text"]
    if adv.recommended.name not in ("default", "current"):
        assert "structured='keep'" in adv.answers["code"]
        fresh = Upsampler()
        adv.apply(fresh, x)
        assert torch.equal(fresh.image.weight, state["image.weight"])
