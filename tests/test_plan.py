"""plan() and init_(): variance flatness measured through real layers, equality with torch where torch is the
reference, reproducibility, transactional failure, options and bad input."""

from __future__ import annotations

import copy
import json
import math
import warnings

import pytest
import torch
from torch import nn

import initwise as iw
from zoo_models import ZOO


# ---------------------------------------------------------------- plain nets and measurement helpers

class Chain(nn.Module):
    """A plain chain; ``layers`` alternate weight layers and activations (no norm, no residual)."""

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def deep_mlp() -> tuple[nn.Module, torch.Tensor]:
    layers: list[nn.Module] = [nn.Linear(64, 1024), nn.ReLU()]
    for _ in range(5):
        layers += [nn.Linear(1024, 1024), nn.ReLU()]
    layers += [nn.Linear(1024, 32)]
    return Chain(*layers), torch.randn(64, 64)


def leaky_convnet(width: int = 128, depth: int = 4, size: int = 16) -> tuple[nn.Module, torch.Tensor]:
    c = dict(padding=1, padding_mode="circular")
    layers: list[nn.Module] = [nn.Conv2d(3, width, 3, **c), nn.LeakyReLU(0.2)]
    for _ in range(depth - 2):
        layers += [nn.Conv2d(width, width, 3, **c), nn.LeakyReLU(0.2)]
    layers += [nn.Conv2d(width, 3, 3, **c)]
    return Chain(*layers), torch.randn(4, 3, size, size)


def mixed_convnet() -> tuple[nn.Module, torch.Tensor]:
    """Thin first layer, depthwise, grouped, strided, transposed stride 2: fans differ from torch's everywhere."""
    c = dict(padding_mode="circular")
    return Chain(
        nn.Conv2d(3, 128, 3, padding=1, **c), nn.PReLU(),
        nn.Conv2d(128, 128, 3, padding=1, groups=128, **c), nn.ReLU(),
        nn.Conv2d(128, 128, 3, padding=1, groups=4, **c), nn.ReLU(),
        nn.Conv2d(128, 128, 4, stride=2, padding=1, **c), nn.ReLU(),
        nn.ConvTranspose2d(128, 64, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(64, 3, 3, padding=1, **c),
    ), torch.randn(2, 3, 16, 16)




PLAIN_NETS = {"deep_mlp": deep_mlp, "leaky_convnet": leaky_convnet, "mixed_convnet": mixed_convnet}
# independent weight draws per net: finite width makes each draw's per-layer gain fluctuate (ReLU's mean direction
# is a rank-one component), so the estimate of E_W[...] averages draws; chosen so that the SE is <= 0.025
SEEDS = {"deep_mlp": 32, "leaky_convnet": 32, "mixed_convnet": 96}


def _weight_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))]


def layer_input_moments(model: nn.Module, x: torch.Tensor) -> tuple[list[float], list[float], float]:
    """Measured E[x^2] of every weight layer's input (forward) and E[dx^2] of the gradient there for a
    unit-variance random cotangent at the output (backward). Interior crop for conv maps (borders excluded)."""
    ins: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda mod, a, out: ins.append(a[0])) for m in _weight_layers(model)]
    try:
        x = x.clone().requires_grad_(True)
        y = model(x)
        for t in ins:
            t.retain_grad()
        y.backward(torch.randn_like(y))
    finally:
        for h in hooks:
            h.remove()

    def interior(t: torch.Tensor) -> torch.Tensor:
        if t.dim() == 4:
            b = t.shape[-1] // 6
            return t[..., b:-b, b:-b]
        return t

    fwd = [float(interior(t.detach()).double().pow(2).mean()) for t in ins]
    bwd = [float(interior(t.grad).double().pow(2).mean()) for t in ins]
    return fwd, bwd, float(x.detach().double().pow(2).mean())


@pytest.mark.parametrize("name", sorted(PLAIN_NETS))
@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
def test_kaiming_keeps_measured_variance_flat_across_depth(name: str, mode: str) -> None:
    """fan_in: E[x_l^2] of every layer input stays within 10% of the input's; fan_out: E[dx_l^2] stays within
    10% of the output cotangent's (He et al. 2015, Eq. 10 and 14), measured through the real layers. The
    estimate averages independent weight draws; its standard error must be small enough that 10% is >= 4 SE."""
    model, x = PLAIN_NETS[name]()
    p = iw.plan(model, x, "kaiming", mode)
    per_seed = []
    for seed in range(SEEDS[name]):
        p.apply(model, seed=seed)
        fwd, bwd, q0 = layer_input_moments(model, x)
        per_seed.append([v / q0 for v in fwd] if mode == "fan_in" else bwd)
    values = torch.tensor(per_seed, dtype=torch.float64)  # seeds x layers
    mean = values.mean(0)
    se = values.std(0) / math.sqrt(values.shape[0])
    assert float(se.max()) < 0.025, f"standard error too large for a 10% test: {se.tolist()}"
    dev = (mean - 1).abs()
    assert float(dev.max()) < 0.10, f"{name} {mode}: per-layer ratios {mean.tolist()}"


def test_the_other_mode_is_off_by_the_fan_ratio() -> None:
    """Under fan_in, the backward second moment at a layer is scaled by the product of fan_out/fan_in of the layers
    above it (He et al.'s telescoping product, 0.0234 here, times the padded borders' share); the plan predicts it and
    the measurement agrees."""
    model, x = mixed_convnet()
    p = iw.plan(model, x, "kaiming", "fan_in")
    draws = []
    for seed in range(24):
        p.apply(model, seed=seed)
        draws.append(layer_input_moments(model, x)[1][1])  # E[dx^2] at the input of body.2 (PReLU's output)
    measured = torch.tensor(draws, dtype=torch.float64)
    mean, se = float(measured.mean()), float(measured.std()) / math.sqrt(len(draws))
    prelu_backward = iw.moments(nn.PReLU()).backward  # E[phi'^2] = (1 + 0.25^2) / 2
    predicted = p.layers[0].backward / prelu_backward
    telescoped = math.prod(lp.fans.fan_out / lp.fans.fan_in for lp in p.layers[1:])
    assert telescoped == pytest.approx(1 * 1 * (512 / 2048) * (1024 / 512) * (27 / 576))
    # the transposed conv (zero padding: 8 -> 16 px) reads padding at its borders: its backward keeps 0.9375^2 of
    # the taps (initwise._taps), an approximate rule (bound 1.25) at that size
    assert predicted == pytest.approx(telescoped * 0.9375 ** 2, rel=1e-9)
    assert p.layers[0].backward_bound > 1.0
    assert abs(math.log(mean / predicted)) < math.log(p.layers[0].backward_bound) + 4 * se / mean, (mean, se, predicted)
    assert abs(mean - 1) > 0.9  # far from the unit variance fan_out would give


# ---------------------------------------------------------------- equal to torch where torch is the reference

def test_relu_fan_out_candidate_is_bit_equal_to_the_common_torch_usage() -> None:
    model, x = leaky_convnet()
    g = torch.Generator().manual_seed(3)
    ref = [torch.nn.init.kaiming_normal_(m.weight.detach().clone(), mode="fan_out", nonlinearity="relu", generator=g)
           for m in _weight_layers(model)]
    iw.init_(model, x, **iw.candidate("relu_fan_out").plan_kwargs(), generator=torch.Generator().manual_seed(3))
    for m, r in zip(_weight_layers(model), ref):
        assert torch.equal(m.weight, r)
        assert torch.count_nonzero(m.bias) == 0


def test_torch_default_reproduces_the_constructors_exactly() -> None:
    def make() -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Flatten(),
                             nn.Linear(8 * 4 * 4, 5))

    torch.manual_seed(11)
    fresh = make()
    torch.manual_seed(99)
    model = make()
    x = torch.randn(2, 3, 8, 8)
    torch.manual_seed(11)
    iw.init_(model, x, "torch_default")
    for (n, a), b in zip(fresh.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), n


def test_torch_default_with_a_seed_seeds_no_other_generator() -> None:
    # each layer's reset draws from a CPU generator seeded from the init's seed: on a machine whose CUDA is not
    # started, no lazy CUDA seed may be queued (it would seed the user's CUDA generator when CUDA starts); the
    # global CPU state is untouched, and the draws are reproducible from the seed
    import torch.cuda

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Linear(6, 5))
    x = torch.randn(2, 3, 8, 8)
    def lazy() -> list:  # what torch queues for CUDA's start (seeds are kept apart from the other calls)
        return list(torch.cuda._queued_calls) + list(torch.cuda._lazy_seed_tracker.get_calls())

    queued, state = lazy(), torch.get_rng_state()
    iw.init_(model, x, "torch_default", seed=4)
    first = _snapshot(model)
    iw.init_(model, x, "torch_default", seed=4)
    assert lazy() == queued and torch.equal(torch.get_rng_state(), state)
    assert _same(model, first)
    iw.init_(model, x, "torch_default", seed=5)
    assert not _same(model, first)


def test_applied_stds_match_the_plan_and_effective_fans() -> None:
    """The measured std of the applied weights equals the planned std, and the planned std uses the layer's
    effective fans: depthwise fan_out = 9 not 9*128, transposed fan_in = in*k^2/s^2."""
    model, x = mixed_convnet()
    p = iw.init_(model, x, "kaiming", "fan_out", seed=0)
    for lp in p.layers:
        w = dict(model.named_parameters())[lp.name + ".weight"]
        n = w.numel()
        se = lp.std * math.sqrt(2.0 / n)  # SE of a std estimate from n normal draws
        assert abs(float(w.detach().std()) - lp.std) < 5 * se + 1e-12, lp.name
    dw = p["body.2"]
    assert dw.fans.fan_out == 9.0 and dw.fans.torch_fan_out == 9.0 * 128
    assert dw.std == pytest.approx(iw.gain("relu", "backward") / 3.0)
    tconv = p["body.8"]
    assert tconv.fans.fan_in == 128 * 4 * 4 / 4


# ---------------------------------------------------------------- reproducibility and transactions

def test_init_is_bit_reproducible_with_a_seed_or_generator() -> None:
    model, x = ZOO["edsr"]()
    states = []
    for kw in ({"seed": 5}, {"seed": 5}, {"generator": torch.Generator().manual_seed(5)}, {"seed": 6}):
        iw.init_(model, x, "orthogonal", **kw)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    assert all(torch.equal(states[0][k], states[1][k]) and torch.equal(states[0][k], states[2][k]) for k in states[0])
    assert any(not torch.equal(states[0][k], states[3][k]) for k in states[0])


class NoReset(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(4, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.scale


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(model: nn.Module, snap: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, snap[k]) for k, v in model.state_dict().items())


def test_failed_init_leaves_the_model_exactly_as_it_was() -> None:
    # the first layer's tensors are drawn before the mismatch of the last one is found: nothing is assigned
    p = iw.plan(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4)), torch.randn(3, 4), "kaiming")
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 3))
    snap = _snapshot(model)
    with pytest.raises(ValueError, match=r"'2\.weight'.*plan and model differ"):
        p.apply(model, seed=0)
    assert _same(model, snap)


def test_torch_default_keeps_a_module_without_reset_parameters_and_says_so() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), NoReset())
    with torch.no_grad():
        model[2].scale.mul_(3.0)
    snap = _snapshot(model)
    p = iw.init_(model, torch.randn(3, 4), "torch_default", seed=0)
    (pp,) = [q for q in p.params if q.param == "2.scale"]
    assert pp.method == "keep" and "NoReset has no reset_parameters()" in pp.note and "kept" in pp.note
    assert torch.equal(model[2].scale, snap["2.scale"])
    assert not torch.equal(model[0].weight, snap["0.weight"])  # the Linear still gets its constructor's init


def test_wrong_example_shape_names_the_layer_and_changes_nothing() -> None:
    model, _ = leaky_convnet()
    snap = _snapshot(model)
    with pytest.raises(RuntimeError, match=r"body\.0"):
        iw.init_(model, torch.randn(2, 5, 16, 16), "kaiming", seed=0)
    assert _same(model, snap)


def test_forward_that_raises_changes_nothing() -> None:
    class Boom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise KeyError("boom")

    model = Boom()
    snap = _snapshot(model)
    with pytest.raises(RuntimeError, match="boom"):
        iw.init_(model, torch.randn(2, 4), seed=0)
    assert _same(model, snap)


def test_bad_arguments() -> None:
    model, x = leaky_convnet()
    snap = _snapshot(model)
    with pytest.raises(TypeError, match="nn.Module"):
        iw.plan("not a model", x)
    with pytest.raises(ValueError, match="unknown scheme 'he_normal'.*kaiming"):
        iw.plan(model, x, "he_normal")
    with pytest.raises(ValueError, match="unknown mode 'fan_mid'"):
        iw.plan(model, x, "kaiming", "fan_mid")
    with pytest.raises(TypeError, match="unknown option.*bogus"):
        iw.plan(model, x, bogus=1)
    with pytest.raises(ValueError, match="residual_scale"):
        iw.plan(model, x, residual_scale=float("nan"))
    with pytest.raises(ValueError, match="either generator= or seed="):
        iw.init_(model, x, seed=1, generator=torch.Generator())
    lazy = nn.Sequential(nn.LazyLinear(4))
    with pytest.raises(ValueError, match="0"):
        iw.plan(lazy, torch.randn(2, 3))
    assert _same(model, snap)


def test_exclude_pattern_that_matches_nothing_warns_and_exclusions_are_kept() -> None:
    model, x = leaky_convnet()
    before = model.body[0].weight.detach().clone()
    with pytest.warns(UserWarning, match="nothing_here"):
        iw.plan(model, x, exclude=["nothing_here*"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        iw.init_(model, x, seed=0, exclude=["body.0"])
    assert torch.equal(model.body[0].weight, before)


# ---------------------------------------------------------------- options for SR/denoise codebases

def test_zero_init_residual_makes_every_block_the_identity() -> None:
    model, x = ZOO["edsr"]()
    p = iw.init_(model, x, "kaiming", zero_init_residual=True, seed=0)
    ends = [lp for lp in p.layers if lp.residual_end]
    assert ends, "the EDSR test model has residual branches"
    for lp in ends:
        assert torch.count_nonzero(dict(model.named_parameters())[lp.name + ".weight"]) == 0


class GlobalResidual(nn.Module):
    """SRVGG / DnCNN-without-BN style: one residual block, then an output conv whose result is added to the input."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 8, 3, padding=1)
        self.b1, self.b2 = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.conv_last = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.head(x))
        h = h + self.b2(torch.relu(self.b1(h)))
        return x + self.conv_last(h)


@pytest.mark.parametrize("options", [{"zero_init_residual": True}, {"residual_scale": 0.1}])
def test_zero_init_and_residual_scale_never_touch_the_output_layer(options: dict) -> None:
    model, x = GlobalResidual(), torch.rand(2, 3, 12, 12)
    ref = iw.init_(copy.deepcopy(model), x, "kaiming", seed=0)
    p = iw.init_(model, x, "kaiming", seed=0, **options)
    by = {lp.name: lp for lp in p.layers}
    assert by["b2"].residual_end and not by["conv_last"].residual_end and by["conv_last"].is_output
    # the output conv keeps its full Kaiming std (measured), so the output is not the skip and every layer learns
    w = model.conv_last.weight.detach()
    full = {lp.name: lp.std for lp in ref.layers}["conv_last"]
    assert float(w.pow(2).mean().sqrt()) == pytest.approx(full, rel=5 * math.sqrt(2 / w.numel()))
    out = model(x)
    assert not torch.equal(out, x)
    out.pow(2).mean().backward()
    assert all(m.weight.grad is not None and m.weight.grad.abs().sum() > 0 for m in (model.head, model.conv_last))
    if options.get("zero_init_residual"):
        assert torch.count_nonzero(model.b2.weight) == 0


def test_residual_scale_and_output_scale_shrink_the_measured_weights() -> None:
    model, x = ZOO["edsr"]()
    base = iw.init_(model, x, "kaiming", seed=0)
    scaled = iw.init_(model, x, "kaiming", seed=0, residual_scale=0.1, output_scale=0.5)
    params = dict(model.named_parameters())
    for a, b in zip(base.layers, scaled.layers):
        factor = (0.1 if a.residual_end else 1.0) * (0.5 if a.is_output else 1.0)
        assert b.std == pytest.approx(a.std * factor)
        w = params[b.name + ".weight"].detach()
        assert float(w.pow(2).mean().sqrt()) == pytest.approx(b.std, rel=5 * math.sqrt(2 / w.numel()) + 1e-9)


def test_icnr_option_makes_conv_plus_pixel_shuffle_a_nearest_upsampling() -> None:
    model, x = ZOO["edsr"]()
    p = iw.init_(model, x, "kaiming", icnr=True, seed=0)
    shuffled = [lp for lp in p.layers if lp.pixel_shuffle]
    assert shuffled and all(lp.method == "icnr" for lp in shuffled)
    conv = dict(model.named_modules())[shuffled[0].name]
    r = shuffled[0].pixel_shuffle
    feats = torch.randn(2, conv.in_channels, 8, 8)
    y = nn.functional.pixel_shuffle(conv(feats), r)
    sub = nn.functional.conv2d(feats, conv.weight[:: r * r], conv.bias[:: r * r], padding=conv.padding)
    assert torch.allclose(y, nn.functional.interpolate(sub, scale_factor=r, mode="nearest"), atol=1e-6)


def test_norm_layers_reset_and_biases_zeroed() -> None:
    model, x = ZOO["resnet"]()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight)
            nn.init.normal_(m.bias)
    iw.init_(model, x, "kaiming", seed=0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight)) and torch.count_nonzero(m.bias) == 0
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
            assert torch.count_nonzero(m.bias) == 0


def test_tied_parameters_are_planned_once() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(8, 8)
            self.b = nn.Linear(8, 8)
            self.b.weight = self.a.weight

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.relu(self.a(x)))

    p = iw.plan(Tied(), torch.randn(2, 8))
    weights = [pp for pp in p.params if pp.param.endswith("weight")]
    assert [pp.method for pp in weights] == ["normal", "keep"]


def test_plan_prints_and_converts_to_json() -> None:
    model, x = ZOO["fsrcnn"]()
    p = iw.plan(model, x, "kaiming", "fan_out")
    text = str(p)
    assert "prelu" in text and "ConvTranspose2d" in text
    d = json.loads(p.to_json())
    assert [row["name"] for row in d["layers"]] == [lp.name for lp in p.layers]
    assert d["layers"][-1]["fan_in"] == p.layers[-1].fans.fan_in


@pytest.mark.parametrize("name", sorted(ZOO))
@pytest.mark.parametrize("cand", ["default", "kaiming_fan_in", "kaiming_fan_out", "orthogonal", "identity",
                                  "xavier", "kaiming_fan_in_zero_res"])
def test_every_zoo_model_plans_and_initializes(name: str, cand: str) -> None:
    model, x = ZOO[name]()
    p = iw.init_(model, x, **iw.candidate(cand).plan_kwargs(), seed=0)
    assert len(p.layers) > 0
    for pp in p.params:
        t = dict(model.named_parameters())[pp.param]
        assert torch.isfinite(t).all(), pp.param
    with torch.no_grad():
        out = model(*x) if isinstance(x, tuple) else model(x)
    assert all(torch.isfinite(o).all() for o in (out if isinstance(out, tuple) else (out,)))
