"""Initializers: exact distributions (KS tests and moments), torch bit-compatibility, layer-aware fans measured
through the real layer, structured inits (orthogonal, identity, ICNR) checked by running the real modules."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

import initwise as iw

P_MIN = 1e-3  # KS p-value threshold
N_SE = 4.0
ROWS, COLS = 400, 500  # 2e5 elements; shape-only fans: fan_in 500, fan_out 400, fan_avg 450
FANS = {"fan_in": 500.0, "fan_out": 400.0, "fan_avg": 450.0}




def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _truncated(std: float, bound: float) -> stats.rv_continuous:
    """The intended truncated normal: N(0, sigma0^2) cut at +-bound*sigma0, with std after truncation = std."""
    sigma0 = std / iw.truncated_normal_std(bound)
    return stats.truncnorm(-bound, bound, loc=0.0, scale=sigma0)


def _intended(distribution: str, std: float, bound: float = 2.0) -> stats.rv_continuous:
    if distribution == "normal":
        return stats.norm(0.0, std)
    if distribution == "uniform":
        limit = math.sqrt(3.0) * std
        return stats.uniform(-limit, 2 * limit)
    return _truncated(std, bound)


def check_moments(x: np.ndarray, std: float) -> None:
    """Mean 0 and variance std^2, each within 4 standard errors: SE(mean) = s / sqrt(n), SE(var) = std(x^2) / sqrt(n)."""
    n = x.size
    assert abs(x.mean()) < N_SE * x.std() / math.sqrt(n), x.mean()
    se_var = (x * x).std() / math.sqrt(n)
    assert se_var < 0.01 * std * std  # the test is tight: SE of the variance below 1%
    assert abs(x.var() - std * std) < N_SE * se_var, (x.var(), std * std, se_var)


def check_distribution(t: torch.Tensor, dist: stats.rv_continuous, std: float) -> None:
    x = t.detach().double().numpy().ravel()
    p = stats.kstest(x, dist.cdf).pvalue
    assert p > P_MIN, f"KS p-value {p:.2g}"
    check_moments(x, std)


# --- variance_scaling_ -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("distribution", ["normal", "truncated_normal", "uniform"])
@pytest.mark.parametrize("mode", ["fan_in", "fan_out", "fan_avg"])
def test_variance_scaling_distribution(mode: str, distribution: str) -> None:
    t = iw.variance_scaling_(torch.empty(ROWS, COLS), 2.0, mode, distribution, generator=_gen())
    std = math.sqrt(2.0 / FANS[mode])
    check_distribution(t, _intended(distribution, std), std)


@pytest.mark.parametrize("bound", [1.0, 2.0, 3.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_truncated_normal_bounds_and_std(bound: float, dtype: torch.dtype) -> None:
    t = iw.variance_scaling_(torch.empty(ROWS, COLS, dtype=dtype), 1.0, "fan_in", "truncated_normal",
                             generator=_gen(), bound=bound)
    assert t.dtype == dtype
    std = 1 / math.sqrt(500)
    sigma0 = std / iw.truncated_normal_std(bound)
    limit = bound * sigma0 * (1 + 2 * torch.finfo(dtype).eps)  # the last multiply rounds: one ulp of slack
    assert float(t.abs().max()) <= limit
    assert float(t.abs().max()) > bound * sigma0 * 0.99  # and the tails are actually reached
    check_distribution(t, _truncated(std, bound), std)


@pytest.mark.parametrize("bound", [0.5, 1.0, 2.0, 3.0])
def test_truncated_normal_std_constant(bound: float) -> None:
    assert iw.truncated_normal_std(bound) == pytest.approx(stats.truncnorm(-bound, bound).std(), abs=1e-12)
    assert iw.truncated_normal_std() == pytest.approx(0.87962566, abs=1e-8)


# --- named initializers against their exact intended distributions ---------------------------------------------

SQ3 = math.sqrt(3.0)
NAMED = [
    ("kaiming_normal_relu", lambda t, g: iw.kaiming_normal_(t, nonlinearity="relu", generator=g),
     stats.norm(0, math.sqrt(2 / 500)), math.sqrt(2 / 500)),
    ("kaiming_normal_leaky_fan_out", lambda t, g: iw.kaiming_normal_(t, a=0.2, mode="fan_out", generator=g),
     stats.norm(0, math.sqrt(2 / 1.04 / 400)), math.sqrt(2 / 1.04 / 400)),
    ("kaiming_uniform_torch_default", lambda t, g: iw.kaiming_uniform_(t, a=math.sqrt(5), generator=g),
     stats.uniform(-1 / math.sqrt(500), 2 / math.sqrt(500)), 1 / math.sqrt(3 * 500)),  # torch's Linear default
    ("kaiming_uniform_relu_fan_out", lambda t, g: iw.kaiming_uniform_(t, mode="fan_out", nonlinearity="relu",
                                                                      generator=g),
     stats.uniform(-math.sqrt(6 / 400), 2 * math.sqrt(6 / 400)), math.sqrt(2 / 400)),
    ("xavier_normal_gain2", lambda t, g: iw.xavier_normal_(t, gain=2.0, generator=g),
     stats.norm(0, 2 * math.sqrt(2 / 900)), 2 * math.sqrt(2 / 900)),
    ("xavier_uniform", lambda t, g: iw.xavier_uniform_(t, generator=g),
     stats.uniform(-math.sqrt(6 / 900), 2 * math.sqrt(6 / 900)), math.sqrt(2 / 900)),
    ("lecun_normal", lambda t, g: iw.lecun_normal_(t, generator=g), stats.norm(0, 1 / math.sqrt(500)),
     1 / math.sqrt(500)),
    ("lecun_uniform", lambda t, g: iw.lecun_uniform_(t, generator=g),
     stats.uniform(-SQ3 / math.sqrt(500), 2 * SQ3 / math.sqrt(500)), 1 / math.sqrt(500)),
]


@pytest.mark.parametrize(("init", "dist", "std"), [n[1:] for n in NAMED], ids=[n[0] for n in NAMED])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_named_initializer_distribution(init, dist, std: float, dtype: torch.dtype) -> None:
    t = init(torch.empty(ROWS, COLS, dtype=dtype), _gen())
    assert t.dtype == dtype
    check_distribution(t, dist, std)


# --- low precision -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("distribution", ["normal", "truncated_normal", "uniform"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_dtype_and_variance(dtype: torch.dtype, distribution: str) -> None:
    t = torch.empty(ROWS, COLS, dtype=dtype)
    out = iw.variance_scaling_(t, 1.0, "fan_in", distribution, generator=_gen())
    assert out is t and t.dtype == dtype
    check_moments(t.double().numpy().ravel(), 1 / math.sqrt(500))


def _below(v: torch.Tensor, k: int) -> torch.Tensor:
    for _ in range(k):
        v = torch.nextafter(v, torch.zeros_like(v))
    return v


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("bound", [2.0, 3.0])
def test_truncated_normal_no_pile_up_at_the_bound(dtype: torch.dtype, bound: float) -> None:
    """Values rounded into the last few steps of the grid below the bound occur as often as the density says.

    A sample lands on a grid value >= t after rounding iff it is >= the midpoint between t and the next lower
    grid value; the expected count is n * P(|X| >= midpoint) for the intended truncated normal; the count is
    binomial, SE ~ sqrt(expected). Clamping instead of truncating would put ~P(|z| > bound) of all samples there.
    """
    std = 1 / math.sqrt(500)
    t = iw.variance_scaling_(torch.empty(ROWS, COLS, dtype=dtype), 1.0, "fan_in", "truncated_normal",
                             generator=_gen(), bound=bound)
    dist = _truncated(std, bound)
    b = bound * std / iw.truncated_normal_std(bound)  # bound * sigma0
    top = torch.tensor(b, dtype=torch.float64).to(dtype)
    if float(top) > b:
        top = _below(top, 1)  # the largest grid value <= the bound
    above = torch.nextafter(top, torch.full_like(top, math.inf))
    assert float(t.abs().max()) <= float(above)  # rounding can reach the next grid value, never further
    thr, expected = top, 0.0
    while expected < 200:  # walk down the grid until the window holds enough counts to mean something
        thr = _below(thr, 1)
        mid = (float(thr) + float(_below(thr, 1))) / 2
        expected = t.numel() * 2 * dist.sf(mid)
    got = int((t.abs() >= thr).sum())
    assert expected < 0.01 * t.numel()  # a thin window: a clamp would put P(|z| > bound) > 0.27% right here
    assert abs(got - expected) < N_SE * math.sqrt(expected), (got, expected)


# --- bit-compatibility with torch.nn.init ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"a": math.sqrt(5)}, {"a": 0.2, "mode": "fan_out"}, {"nonlinearity": "relu"},
     {"nonlinearity": "linear", "mode": "fan_out"}, {"a": 0.1, "nonlinearity": "leaky_relu"}],
)
@pytest.mark.parametrize("with_module", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kaiming_bit_equal_to_torch_on_linear(kwargs: dict, with_module: bool, dtype: torch.dtype) -> None:
    lin = nn.Linear(96, 40, dtype=dtype)
    extra = {"module": lin} if with_module else {}
    for ours, theirs in ((iw.kaiming_normal_, nn.init.kaiming_normal_), (iw.kaiming_uniform_, nn.init.kaiming_uniform_)):
        ours(lin.weight, generator=_gen(3), **kwargs, **extra)
        want = theirs(torch.empty(40, 96, dtype=dtype), generator=_gen(3), **kwargs)
        assert torch.equal(lin.weight.detach(), want)


@pytest.mark.parametrize("shape", [(40, 96), (96, 40), (7, 3), (16, 8, 3, 3)])
@pytest.mark.parametrize("gain", [1.0, 0.37, 5 / 3, math.sqrt(2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_xavier_bit_equal_to_torch(shape: tuple[int, ...], gain: float, dtype: torch.dtype) -> None:
    for ours, theirs in ((iw.xavier_normal_, nn.init.xavier_normal_), (iw.xavier_uniform_, nn.init.xavier_uniform_)):
        got = ours(torch.empty(shape, dtype=dtype), gain=gain, generator=_gen(5))
        assert torch.equal(got, theirs(torch.empty(shape, dtype=dtype), gain=gain, generator=_gen(5)))


@pytest.mark.parametrize("shape", [(64, 256), (256, 64), (50, 50), (16, 8, 3, 3)])
def test_orthogonal_bit_equal_to_torch(shape: tuple[int, ...]) -> None:
    got = iw.orthogonal_(torch.empty(shape), gain=1.5, generator=_gen(7), delta=False)
    assert torch.equal(got, nn.init.orthogonal_(torch.empty(shape), gain=1.5, generator=_gen(7)))


# --- generators --------------------------------------------------------------------------------------------------

RANDOM_INITS: list[tuple[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]]] = [
    ("vs_normal", lambda t, g: iw.variance_scaling_(t, generator=g)),
    ("vs_truncated", lambda t, g: iw.variance_scaling_(t, distribution="truncated_normal", generator=g)),
    ("vs_uniform", lambda t, g: iw.variance_scaling_(t, distribution="uniform", generator=g)),
    ("kaiming_normal", lambda t, g: iw.kaiming_normal_(t, generator=g)),
    ("kaiming_uniform", lambda t, g: iw.kaiming_uniform_(t, generator=g)),
    ("xavier_normal", lambda t, g: iw.xavier_normal_(t, generator=g)),
    ("xavier_uniform", lambda t, g: iw.xavier_uniform_(t, generator=g)),
    ("lecun_normal", lambda t, g: iw.lecun_normal_(t, generator=g)),
    ("lecun_uniform", lambda t, g: iw.lecun_uniform_(t, generator=g)),
    ("orthogonal_delta", lambda t, g: iw.orthogonal_(t, generator=g)),
    ("orthogonal_flat", lambda t, g: iw.orthogonal_(t, generator=g, delta=False)),
    ("icnr", lambda t, g: iw.icnr_(t, 2, generator=g)),
]


@pytest.mark.parametrize("init", [i[1] for i in RANDOM_INITS], ids=[i[0] for i in RANDOM_INITS])
def test_generator_reproducible_and_global_rng_untouched(init) -> None:
    state = torch.get_rng_state()
    a = init(torch.empty(16, 8, 3, 3), _gen(1))
    b = init(torch.empty(16, 8, 3, 3), _gen(1))
    c = init(torch.empty(16, 8, 3, 3), _gen(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), state)  # generator= is honoured: the global RNG is not consumed


def test_identity_is_deterministic() -> None:
    a = iw.identity_(torch.empty(8, 8, 3, 3), generator=_gen(1))
    assert torch.equal(a, iw.identity_(torch.empty(8, 8, 3, 3), generator=_gen(2)))


# --- module= : effective fans, measured through the real layer --------------------------------------------------

REPEATS = 24


def _mean_se(v: list[float]) -> tuple[float, float]:
    a = np.asarray(v)
    return float(a.mean()), float(a.std(ddof=1) / math.sqrt(a.size))


def _through_layer(build: Callable[[], nn.Module], shape: tuple[int, ...], init, crop: int, backward: bool):
    """Per-repeat second moment of the output (or input gradient) of the real layer after ``init(module)``,
    biases zeroed, unit-variance input and output gradient; interior positions only. Returns (mean, SE)."""
    est = []
    for _ in range(REPEATS):
        m = build()
        init(m)
        with torch.no_grad():
            m.bias.zero_()
        x = torch.randn(shape, requires_grad=True)
        y = m(x)
        t = torch.autograd.grad(y, x, torch.randn_like(y))[0] if backward else y.detach()
        if crop:
            t = t[..., crop:-crop, crop:-crop]
        est.append(float(t.double().pow(2).mean()))
    return _mean_se(est)


def _depthwise_s2() -> nn.Module:
    return nn.Conv2d(64, 64, 3, stride=2, padding=1, groups=64, padding_mode="circular")


def _convt() -> nn.Module:
    return nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1)


MODULE_CASES = [
    # (id, build, input shape, crop, backward?, mode, expected second moment with torch's shape-only fans)
    ("depthwise_s2_fan_out", _depthwise_s2, (8, 64, 32, 32), 0, True, "fan_out", 1 / (64 * 4)),
    ("convT_k4_s2_fan_in", _convt, (8, 32, 20, 20), 4, False, "fan_in", 32 * 4 / (16 * 16)),
    ("convT_k4_s2_fan_out", _convt, (8, 32, 20, 20), 2, True, "fan_out", 16 * 16 / (32 * 16)),
]


@pytest.mark.parametrize(("build", "shape", "crop", "backward", "mode", "torch_factor"),
                         [c[1:] for c in MODULE_CASES], ids=[c[0] for c in MODULE_CASES])
@pytest.mark.parametrize("dist", ["normal", "uniform"])
def test_module_uses_effective_fans_through_the_real_layer(build, shape, crop, backward, mode, torch_factor,
                                                           dist) -> None:
    ours = iw.kaiming_normal_ if dist == "normal" else iw.kaiming_uniform_
    theirs = nn.init.kaiming_normal_ if dist == "normal" else nn.init.kaiming_uniform_
    got, se = _through_layer(build, shape, lambda m: ours(m.weight, mode=mode, nonlinearity="linear", module=m),
                             crop, backward)
    assert se < 0.02 and abs(got - 1.0) < N_SE * se, (got, se)
    # torch's shape-only fans, same layer, same measurement: off by the predicted factor
    got_t, se_t = _through_layer(build, shape, lambda m: theirs(m.weight, mode=mode, nonlinearity="linear"),
                                 crop, backward)
    assert abs(got_t / torch_factor - 1.0) < N_SE * se_t / torch_factor, (got_t, torch_factor)


def test_module_fans_for_packed_attention_weight() -> None:
    """in_proj_weight (3E, E): fan_out mode uses E per block, torch uses 3E."""
    mha = nn.MultiheadAttention(256, 4)
    w = iw.kaiming_normal_(mha.in_proj_weight, mode="fan_out", nonlinearity="linear", module=mha, generator=_gen())
    check_moments(w.detach().double().numpy().ravel(), 1 / math.sqrt(256))


def test_xavier_with_module_uses_effective_fan_avg() -> None:
    """ConvTranspose2d(64, 32, 4, stride=2): effective (fan_in, fan_out) = (64*4, 32*16) = (256, 512)."""
    m = nn.ConvTranspose2d(64, 32, 4, stride=2)
    ratios = []
    for seed in range(REPEATS):
        iw.xavier_normal_(m.weight, generator=_gen(seed), module=m)
        ratios.append(float(m.weight.detach().double().pow(2).mean()) * (256 + 512) / 2)
    got, se = _mean_se(ratios)
    assert se < 0.01 and abs(got - 1.0) < N_SE * se


# --- orthogonal --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(64, 256), (256, 64)])
def test_orthogonal_2d_gram(shape: tuple[int, int]) -> None:
    w = iw.orthogonal_(torch.empty(shape, dtype=torch.float64), gain=2.0, generator=_gen())
    gram = w @ w.T if shape[0] < shape[1] else w.T @ w
    torch.testing.assert_close(gram, 4.0 * torch.eye(min(shape), dtype=torch.float64), atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    "build",
    [lambda: nn.Conv2d(16, 16, 3, padding=1, padding_mode="circular"),
     lambda: nn.Conv2d(16, 16, 3, padding=1, groups=4, padding_mode="circular"),
     lambda: nn.Conv2d(8, 16, 5, padding=2, padding_mode="circular"),
     lambda: nn.Conv1d(16, 16, 3, padding=1, padding_mode="circular"),
     lambda: nn.Conv3d(8, 8, 3, padding=1, padding_mode="circular")],
    ids=["conv2d", "conv2d_groups4", "conv2d_tall_k5", "conv1d", "conv3d"],
)
def test_delta_orthogonal_conv_is_an_isometry(build) -> None:
    conv = build().double()
    iw.orthogonal_(conv.weight, gain=1.5, generator=_gen(), module=conv)
    with torch.no_grad():
        conv.bias.zero_()
        x = torch.randn(4, conv.in_channels, *[6] * (conv.weight.dim() - 2), dtype=torch.float64)
        y = conv(x)
    norms_x = x.flatten(1).norm(dim=1)
    torch.testing.assert_close(y.flatten(1).norm(dim=1), 1.5 * norms_x, rtol=1e-12, atol=0)
    assert not torch.allclose(y[:, : min(conv.in_channels, conv.out_channels)], 1.5 * x[:, : conv.out_channels])


# --- identity ----------------------------------------------------------------------------------------------------

IDENTITY_CONV = [
    ("conv2d_k3_p1", lambda: nn.Conv2d(8, 8, 3, padding=1), (2, 8, 9, 9)),
    ("conv2d_k5_p2", lambda: nn.Conv2d(8, 8, 5, padding=2), (2, 8, 9, 9)),
    ("conv2d_groups4", lambda: nn.Conv2d(16, 16, 3, padding=1, groups=4), (2, 16, 9, 9)),
    ("conv2d_depthwise", lambda: nn.Conv2d(8, 8, 3, padding=1, groups=8), (2, 8, 9, 9)),
    ("conv2d_dilated", lambda: nn.Conv2d(8, 8, 3, padding=2, dilation=2), (2, 8, 9, 9)),
    ("conv2d_same_k3_d2", lambda: nn.Conv2d(8, 8, 3, padding="same", dilation=2), (2, 8, 9, 9)),
    ("conv2d_same_k4", lambda: nn.Conv2d(8, 8, 4, padding="same"), (2, 8, 9, 9)),  # asymmetric padding 1 / 2
    ("conv1d", lambda: nn.Conv1d(8, 8, 3, padding=1), (2, 8, 17)),
    ("conv3d", lambda: nn.Conv3d(4, 4, 3, padding=1), (2, 4, 6, 6, 6)),
    ("convT2d_k3_s1_p1", lambda: nn.ConvTranspose2d(8, 8, 3, padding=1), (2, 8, 9, 9)),
]


@pytest.mark.parametrize(("build", "shape"), [c[1:] for c in IDENTITY_CONV], ids=[c[0] for c in IDENTITY_CONV])
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")  # torch's perf note
def test_identity_through_the_real_conv(build, shape) -> None:
    m = build()
    iw.identity_(m.weight, module=m)
    with torch.no_grad():
        m.bias.zero_()
        x = torch.randn(shape)
        assert torch.equal(m(x), x)


def test_identity_conv_stride_2_subsamples() -> None:
    m = nn.Conv2d(8, 8, 3, stride=2, padding=1)
    iw.identity_(m.weight, module=m)
    with torch.no_grad():
        m.bias.zero_()
        x = torch.randn(2, 8, 10, 10)
        assert torch.equal(m(x), x[..., ::2, ::2])


def test_identity_rectangular_channels_and_gain() -> None:
    wide = nn.Conv2d(8, 12, 3, padding=1)
    iw.identity_(wide.weight, gain=2.0, module=wide)
    narrow = nn.Conv2d(12, 8, 3, padding=1)
    iw.identity_(narrow.weight, module=narrow)
    with torch.no_grad():
        for m in (wide, narrow):
            m.bias.zero_()
        x = torch.randn(2, 8, 7, 7)
        y = wide(x)
        assert torch.equal(y[:, :8], 2 * x) and torch.equal(y[:, 8:], torch.zeros_like(y[:, 8:]))
        x12 = torch.randn(2, 12, 7, 7)
        assert torch.equal(narrow(x12), x12[:, :8])


IDENTITY_CONVT = [
    ("k4_s2_p1", lambda: nn.ConvTranspose2d(8, 8, 4, stride=2, padding=1), 2),
    ("k3_s3_p0", lambda: nn.ConvTranspose2d(8, 8, 3, stride=3), 3),
    ("k2_s2_p0", lambda: nn.ConvTranspose2d(8, 8, 2, stride=2), 2),
    ("k4_s2_p1_groups4", lambda: nn.ConvTranspose2d(16, 16, 4, stride=2, padding=1, groups=4), 2),
    ("k4_s2_p1_depthwise", lambda: nn.ConvTranspose2d(8, 8, 4, stride=2, padding=1, groups=8), 2),
]


@pytest.mark.parametrize(("build", "s"), [c[1:] for c in IDENTITY_CONVT], ids=[c[0] for c in IDENTITY_CONVT])
def test_identity_conv_transpose_is_nearest_upsampling(build, s: int) -> None:
    m = build()
    iw.identity_(m.weight, module=m)
    with torch.no_grad():
        m.bias.zero_()
        x = torch.randn(2, m.in_channels, 7, 7)
        assert torch.equal(m(x), F.interpolate(x, scale_factor=s, mode="nearest"))


def test_identity_conv_transpose_1d() -> None:
    m = nn.ConvTranspose1d(8, 8, 4, stride=2, padding=1)
    iw.identity_(m.weight, module=m)
    with torch.no_grad():
        m.bias.zero_()
        x = torch.randn(2, 8, 11)
        assert torch.equal(m(x), x.repeat_interleave(2, dim=-1))


def test_identity_linear_is_eye() -> None:
    lin = nn.Linear(8, 8)
    iw.identity_(lin.weight)
    with torch.no_grad():
        lin.bias.zero_()
        x = torch.randn(5, 8)
        assert torch.equal(lin(x), x)
    assert torch.equal(iw.identity_(torch.empty(3, 5)), torch.eye(3, 5))


# --- ICNR --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("r", [2, 3])
def test_icnr_conv_then_pixel_shuffle_is_nearest_upsampling(r: int) -> None:
    conv = nn.Conv2d(4, 3 * r * r, 3, padding=1)
    iw.icnr_(conv.weight, r, generator=_gen(), module=conv)
    with torch.no_grad():
        conv.bias.zero_()
        x = torch.randn(2, 4, 8, 8)
        y = nn.PixelShuffle(r)(conv(x))
        sub = conv.weight[:: r * r]  # channel c * r^2 + k holds sub-kernel c
        want = F.interpolate(F.conv2d(x, sub, padding=1), scale_factor=r, mode="nearest")
    torch.testing.assert_close(y, want, rtol=1e-6, atol=1e-6)
    # the sub-kernels are distinct random draws, each repeated exactly r^2 times
    assert len({tuple(k.flatten().tolist()) for k in conv.weight.detach()}) == 3


def test_icnr_sub_kernel_variance_uses_the_full_layer_fans() -> None:
    conv = nn.Conv2d(64, 64 * 4, 3, padding=1)
    iw.icnr_(conv.weight, 2, scale=2.0, generator=_gen(), module=conv)
    sub = conv.weight.detach()[::4]
    check_moments(sub.double().numpy().ravel(), math.sqrt(2.0 / (64 * 9)))


# --- meta tensors ------------------------------------------------------------------------------------------------

META_INITS = [*RANDOM_INITS, ("identity", lambda t, g: iw.identity_(t, generator=g))]


@pytest.mark.parametrize("init", [i[1] for i in META_INITS], ids=[i[0] for i in META_INITS])
def test_meta_tensor_is_returned_unchanged(init) -> None:
    t = torch.empty(16, 8, 3, 3, device="meta")
    assert init(t, None) is t
    assert t.is_meta


def test_meta_module() -> None:
    conv = nn.Conv2d(8, 16, 3, device="meta")
    assert iw.kaiming_normal_(conv.weight, module=conv) is conv.weight
    assert iw.identity_(conv.weight, module=conv) is conv.weight
    assert conv.weight.is_meta


# --- bad input ---------------------------------------------------------------------------------------------------


def test_one_dimensional_without_fans() -> None:
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        iw.kaiming_normal_(torch.empty(5))
    t = iw.variance_scaling_(torch.empty(10_000), 1.0, fans=(4.0, 4.0), generator=_gen())
    assert 0.45 < float(t.std()) < 0.55  # given fans work for any shape: std = 1 / sqrt(4)
    for f in (iw.orthogonal_, iw.identity_):
        with pytest.raises(ValueError, match="at least 2 dimensions"):
            f(torch.empty(5))


def test_zero_element_tensor() -> None:
    for f in (iw.kaiming_normal_, iw.xavier_uniform_, iw.orthogonal_, iw.identity_):
        with pytest.raises(ValueError, match="zero elements"):
            f(torch.empty(0, 3))


def test_integer_dtype_and_non_tensor() -> None:
    with pytest.raises(TypeError, match="floating dtype"):
        iw.kaiming_normal_(torch.zeros(3, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        iw.kaiming_normal_(np.zeros((3, 3)))  # type: ignore[arg-type]


def test_unknown_mode_and_distribution() -> None:
    with pytest.raises(ValueError, match="valid: fan_in, fan_out, fan_avg"):
        iw.variance_scaling_(torch.empty(3, 3), mode="fan_sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="valid: normal, truncated_normal, uniform"):
        iw.variance_scaling_(torch.empty(3, 3), distribution="laplace")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="valid: fan_in, fan_out, fan_avg"):
        iw.kaiming_uniform_(torch.empty(3, 3), mode="in")  # type: ignore[arg-type]


@pytest.mark.parametrize("scale", [-1.0, math.nan, math.inf])
def test_bad_scale(scale: float) -> None:
    t = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="scale must be a finite number >= 0"):
        iw.variance_scaling_(t, scale)
    with pytest.raises(ValueError, match="gain must be"):
        iw.xavier_normal_(t, gain=scale)
    assert torch.equal(t, torch.zeros(3, 3))  # nothing written


def test_bad_bound() -> None:
    with pytest.raises(ValueError, match="bound must be a finite number > 0"):
        iw.variance_scaling_(torch.empty(3, 3), distribution="truncated_normal", bound=0.0)


def test_tensor_not_in_module() -> None:
    with pytest.raises(ValueError, match=r"not a parameter of the given Linear \(its parameters: weight, bias\)"):
        iw.kaiming_normal_(torch.empty(4, 3), module=nn.Linear(3, 4))
    with pytest.raises(TypeError, match="module must be an nn.Module"):
        iw.kaiming_normal_(torch.empty(4, 3), module="conv")  # type: ignore[arg-type]


@pytest.mark.parametrize("r", [0, -2, 2.0, True])
def test_icnr_bad_upscale_factor(r) -> None:
    with pytest.raises(ValueError, match="upscale_factor must be a positive int"):
        iw.icnr_(torch.empty(12, 4, 3, 3), r)


def test_icnr_channels_not_divisible() -> None:
    with pytest.raises(ValueError, match=r"divisible by upscale_factor\^2 = 9"):
        iw.icnr_(torch.empty(12, 4, 3, 3), 3)
    with pytest.raises(ValueError, match="needs a conv weight"):
        iw.icnr_(torch.empty(12, 4), 2)


def test_identity_conv_transpose_that_cannot_copy_blocks() -> None:
    m = nn.ConvTranspose2d(8, 8, 3, stride=2, padding=2)
    with pytest.raises(ValueError, match="padding \\+ stride <= kernel"):
        iw.identity_(m.weight, module=m)


def test_bad_groups() -> None:
    with pytest.raises(ValueError, match="groups=3"):
        iw.orthogonal_(torch.empty(8, 4, 3, 3), groups=3)
