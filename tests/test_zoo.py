"""Tests of the reference models: sizes, parameter counts against the papers' arithmetic, registry, structure."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from initwise import zoo


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def conv(k: int, cin: int, cout: int, bias: bool = True) -> int:
    """Parameters of a k x k convolution, written out independently of the implementation."""
    return k * k * cin * cout + (cout if bias else 0)


# ---------------------------------------------------------------- parameter counts (paper configurations)

def test_srcnn_915_count_matches_paper_arithmetic() -> None:
    # 9*9*1*64 + 64 + 1*1*64*32 + 32 + 5*5*32*1 + 1 (paper: 8,032 weights + 97 biases)
    assert 5184 + 64 + 2048 + 32 + 800 + 1 == 8129
    assert n_params(zoo.srcnn(in_channels=1)) == 8129
    assert n_params(zoo.srcnn(in_channels=3)) == conv(9, 3, 64) + conv(1, 64, 32) + conv(5, 32, 3) == 20099


def test_fsrcnn_weights_match_paper_formula() -> None:
    d, s, m = 56, 12, 4
    paper_weights = 25 * d + s * d + 9 * m * s * s + d * s + 81 * d  # Dong et al. 2016, Sec. 3.3
    assert paper_weights == 12464
    model = zoo.fsrcnn(2, in_channels=1)
    weights = sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1)
    assert weights == paper_weights
    biases, slopes = d + s + m * s + d + 1, d + s + m * s + d
    assert n_params(model) == paper_weights + biases + slopes == 12809


def test_espcn_count() -> None:
    for r, expected in ((2, 21284), (3, 22729)):
        assert conv(5, 1, 64) + conv(3, 64, 32) + conv(3, 32, r * r) == expected
        assert n_params(zoo.espcn(r)) == expected


def test_vdsr_paper_count_665k() -> None:
    expected = conv(3, 1, 64) + 18 * conv(3, 64, 64) + conv(3, 64, 1)
    assert expected == 665921
    assert n_params(zoo.vdsr(preset="paper")) == expected
    assert n_params(zoo.vdsr()) == conv(3, 1, 32) + 6 * conv(3, 32, 32) + conv(3, 32, 1) == 56097


def edsr_count(b: int, f: int, scale: int, c: int = 3) -> int:
    stages = [4, 4] if scale == 4 else [scale * scale]
    up = sum(conv(3, f, r2 * f) for r2 in stages)
    return conv(3, c, f) + (2 * b + 1) * conv(3, f, f) + up + conv(3, f, c)


def test_edsr_counts_match_official() -> None:
    # Official EDSR code (MeanShift frozen conv not counted): baseline x2 1,369,859; paper x2 40.7M.
    assert edsr_count(16, 64, 2) == 1369859
    assert n_params(zoo.edsr(2, preset="baseline")) == 1369859
    assert n_params(zoo.edsr(4, preset="baseline")) == edsr_count(16, 64, 4) == 1517571
    assert n_params(zoo.edsr(3, preset="baseline")) == edsr_count(16, 64, 3)
    assert edsr_count(32, 256, 2) == 40729603
    assert n_params(zoo.edsr(2, preset="paper")) == 40729603
    assert n_params(zoo.edsr(2)) == edsr_count(4, 32, 2) == 121987


def test_edsr_paper_preset_uses_residual_scaling() -> None:
    model = zoo.edsr(2, preset="paper", n_resblocks=2, n_feats=8)
    blocks = [m for m in model.modules() if isinstance(m, zoo.ResBlock)]
    assert len(blocks) == 2 and all(b.res_scale == 0.1 for b in blocks)
    # res_scale multiplies the branch in forward: with res_scale=0 a block is the identity.
    block = zoo.ResBlock(8, res_scale=0.0)
    x = torch.randn(1, 8, 5, 5)
    assert torch.equal(block(x), x)


def rcan_count(g: int, b: int, f: int, r: int, scale: int, c: int = 3) -> int:
    ca = conv(1, f, f // r) + conv(1, f // r, f)
    rcab = 2 * conv(3, f, f) + ca
    group = b * rcab + conv(3, f, f)
    stages = [4, 4] if scale == 4 else [scale * scale]
    up = sum(conv(3, f, r2 * f) for r2 in stages)
    return conv(3, c, f) + g * group + conv(3, f, f) + up + conv(3, f, c)


def test_rcan_paper_count_about_15_6m() -> None:
    assert rcan_count(10, 20, 64, 16, 4) == 15592355
    assert n_params(zoo.rcan(4, preset="paper")) == 15592355
    assert n_params(zoo.rcan(2)) == rcan_count(2, 4, 32, 8, 2) == 216803


def test_dncnn_s_count_556k() -> None:
    f = 64
    expected = conv(3, 1, f) + 15 * (conv(3, f, f, bias=False) + 2 * f) + conv(3, f, 1)
    assert expected == 556097
    assert n_params(zoo.dncnn(in_channels=1, preset="paper")) == expected
    plain = conv(3, 1, f) + 15 * conv(3, f, f) + conv(3, f, 1)
    assert n_params(zoo.dncnn(in_channels=1, preset="paper", bn=False)) == plain
    assert n_params(zoo.dncnn()) == conv(3, 3, 32) + 6 * (conv(3, 32, 32, bias=False) + 64) + conv(3, 32, 3)


def test_nafnet_count() -> None:
    w = 16
    block = (2 * w + conv(1, w, 2 * w) + (9 * 2 * w + 2 * w) + conv(1, w, w) + conv(1, w, w)
             + 2 * w + conv(1, w, 2 * w) + conv(1, w, w) + 2 * w)
    assert n_params(zoo.nafnet()) == conv(3, 3, w) + 4 * block + conv(3, w, 3) == 10163


# ---------------------------------------------------------------- behaviour

@pytest.mark.parametrize("name", ["fsrcnn", "espcn", "edsr", "rcan"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_lr_models_upscale_exactly(name: str, scale: int) -> None:
    c = zoo.info(name).in_channels
    out = zoo.build(name, scale=scale)(torch.rand(2, c, 7, 9))
    assert out.shape == (2, c, 7 * scale, 9 * scale)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["srcnn", "vdsr", "dncnn", "nafnet"])
def test_same_size_models(name: str) -> None:
    c = zoo.info(name).in_channels
    x = torch.rand(2, c, 13, 11)
    assert zoo.build(name)(x).shape == x.shape


def test_vdsr_global_residual_is_identity_when_body_is_silent() -> None:
    model = zoo.vdsr(in_channels=3)
    last = model.body[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    x = torch.rand(1, 3, 10, 10)
    assert torch.equal(model(x), x)


def test_dncnn_returns_input_minus_predicted_noise() -> None:
    model = zoo.dncnn(depth=4).eval()
    noise_model = zoo.dncnn(depth=4, return_noise=True).eval()
    noise_model.load_state_dict(model.state_dict())
    y = torch.rand(1, 3, 12, 12)
    torch.testing.assert_close(model(y), y - noise_model(y))


def test_edsr_mean_shift_is_a_fixed_buffer() -> None:
    model = zoo.edsr(2)
    assert "sub_mean.mean" in dict(model.named_buffers())
    assert all("mean" not in n for n, _ in model.named_parameters())
    without = zoo.edsr(2, mean_shift=False)
    assert n_params(without) == n_params(model)


def test_models_keep_pytorch_default_init() -> None:
    # torch's default: kaiming_uniform_(a=sqrt(5)) -> Var(w) = 1 / (3 fan_in); relative SE of a sample variance
    # of a uniform variable is sqrt(0.8 / n), so 5 SE is under 5% for n >= 9216.
    for name in zoo.list_models():
        for mod in zoo.build(name).modules():
            if isinstance(mod, nn.Conv2d) and mod.weight.numel() >= 9216:
                fan_in = mod.weight[0].numel()
                var = mod.weight.double().var(unbiased=False).item()
                tol = 5 * (0.8 / mod.weight.numel()) ** 0.5
                assert abs(var * 3 * fan_in - 1) < tol, (name, mod)


_ALLOWED_CUSTOM = (zoo.MeanShift, zoo.SimpleGate, zoo.LayerNorm2d)


@pytest.mark.parametrize("name", zoo.list_models())
def test_models_are_made_of_standard_layers(name: str) -> None:
    for mod in zoo.build(name).modules():
        if not list(mod.children()) and not isinstance(mod, _ALLOWED_CUSTOM):
            assert type(mod).__module__.startswith("torch.nn"), (name, type(mod))
    # activations are modules, not functional calls hidden in forward (for the graph tracer)
    acts = [m for m in zoo.build(name).modules() if isinstance(m, (nn.ReLU, nn.PReLU, nn.Tanh, zoo.SimpleGate))]
    assert acts


# ---------------------------------------------------------------- registry

def test_registry_names_and_info() -> None:
    names = zoo.list_models()
    assert names == list(zoo.MODELS)
    assert set(zoo.list_models("sr")) == {"srcnn", "fsrcnn", "espcn", "vdsr", "edsr", "rcan"}
    assert set(zoo.list_models("denoise")) == {"dncnn", "nafnet"}
    assert zoo.info("vdsr").upsampled_input and zoo.info("srcnn").upsampled_input
    assert not zoo.info("edsr").upsampled_input
    assert zoo.info("dncnn").predicts == "noise"
    for name in names:
        meta = zoo.info(name)
        model = zoo.build(name)
        x = torch.rand(meta.example_shape)
        out = model(x)
        assert out.shape[1] == meta.in_channels == x.shape[1]
        if meta.input == "lr":
            assert out.shape[-1] == 2 * x.shape[-1]
        else:
            assert out.shape == x.shape
    with pytest.raises(AttributeError):
        zoo.info("edsr").task = "denoise"  # type: ignore[misc]


def test_registry_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="valid models.*edsr"):
        zoo.build("edsr2")
    with pytest.raises(ValueError, match="scale"):
        zoo.build("vdsr", scale=5)
    with pytest.raises(ValueError, match="scale"):
        zoo.build("dncnn", scale=2)
    with pytest.raises(ValueError, match=r"preset.*\['baseline', 'paper', 'small'\]"):
        zoo.edsr(2, preset="large")
    with pytest.raises(ValueError, match="in_channels"):
        zoo.rcan(2, in_channels=2)
    with pytest.raises(ValueError, match="task"):
        zoo.list_models("segmentation")  # type: ignore[arg-type]


def test_build_accepts_scale_for_upsampled_input_models() -> None:
    model = zoo.build("srcnn", scale=3, in_channels=3)
    x = torch.rand(1, 3, 9, 9)
    assert model(x).shape == x.shape
