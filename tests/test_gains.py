"""Gains: closed forms where they exist, Monte Carlo against the quadrature for everything else.

The Monte Carlo reference uses 1e7 float64 standard-normal samples (one shared set, in chunks), evaluates each
activation with torch's own function (not initwise's table) and its derivative by autograd, and compares each
of ``E[phi^2]``, ``Var[phi]`` and ``E[phi'^2]`` with ``initwise.moments`` within 4 standard errors, where the
standard error is ``std(per-sample quantity) / sqrt(n)`` (for the variance, the per-sample quantity is
``(phi - mean)^2``; the error of the estimated mean is second order).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import initwise as iw
from initwise._gains import _moments_cached

N_MC = 10_000_000
CHUNK = 1_000_000
N_SE = 4.0
SQRT_2PI = math.sqrt(2 * math.pi)




# --- closed forms ------------------------------------------------------------------------------------------------


def _leaky_moments(a: float, q: float = 1.0) -> tuple[float, float, float]:
    """(E[phi], E[phi^2], E[phi'^2]) of the leaky ReLU with slope a on z ~ N(0, q).

    E[z; z > 0] = sqrt(q / (2 pi)), so E[phi] = (1 - a) sqrt(q / (2 pi)); E[phi^2] = q (1 + a^2) / 2;
    phi' is 1 or a with probability 1/2 each: E[phi'^2] = (1 + a^2) / 2.
    """
    return (1 - a) * math.sqrt(q) / SQRT_2PI, q * (1 + a * a) / 2, (1 + a * a) / 2


def test_relu_closed_forms() -> None:
    assert iw.gain("relu") == pytest.approx(math.sqrt(2), abs=1e-6)
    assert iw.gain("relu", "backward") == pytest.approx(math.sqrt(2), abs=1e-6)
    assert iw.gain("relu", "variance") == pytest.approx(1 / math.sqrt(0.5 - 1 / (2 * math.pi)), abs=1e-6)


@pytest.mark.parametrize("a", [0.01, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0])
def test_leaky_relu_closed_forms(a: float) -> None:
    mean, second, back = _leaky_moments(a)
    assert iw.gain("leaky_relu", param=a) == pytest.approx(math.sqrt(2 / (1 + a * a)), abs=1e-6)
    assert iw.gain("leaky_relu", "backward", param=a) == pytest.approx(1 / math.sqrt(back), abs=1e-6)
    assert iw.gain("leaky_relu", "variance", param=a) == pytest.approx(1 / math.sqrt(second - mean**2), abs=1e-6)
    assert iw.gain(nn.PReLU(init=a)) == pytest.approx(math.sqrt(2 / (1 + a * a)), abs=1e-6)


def test_linear_is_one_in_every_convention() -> None:
    for conv in ("kaiming", "backward", "variance", "torch"):
        assert iw.gain("linear", conv) == pytest.approx(1.0, abs=1e-6)
        assert iw.gain(None, conv) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("a", [0.0, 0.01, 0.2, 1.0])
def test_quadrature_path_matches_closed_form(a: float) -> None:
    """gain() short-cuts relu/leaky to the closed form; the quadrature itself must agree with it."""
    act = iw.resolve_activation("relu") if a == 0.0 else iw.resolve_activation("leaky_relu", a)
    m = _moments_cached(act, 1.0)
    mean, second, back = _leaky_moments(a)
    assert (m.mean, m.second_moment, m.backward) == pytest.approx((mean, second, back), abs=1e-10)
    assert m.variance == pytest.approx(second - mean**2, abs=1e-10)


@pytest.mark.parametrize("q", [0.01, 0.3, 2.5, 9.0, 100.0])
@pytest.mark.parametrize("a", [0.0, 0.2, -0.5])
def test_homogeneous_moments_scale_with_q(q: float, a: float) -> None:
    """Positively homogeneous functions: E[phi] ~ sqrt(q), E[phi^2] ~ q, E[phi'^2] independent of q."""
    m = iw.moments("relu", q) if a == 0.0 else iw.moments("leaky_relu", q, param=a)
    mean, second, back = _leaky_moments(a, q)
    assert (m.mean, m.second_moment, m.backward) == pytest.approx((mean, second, back), rel=1e-9, abs=1e-12)
    assert m.q == q
    lin = iw.moments("linear", q)
    assert (lin.mean, lin.second_moment, lin.variance, lin.backward) == pytest.approx((0.0, q, q, 1.0), abs=1e-9)


# --- Monte Carlo -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def normal_chunks() -> list[torch.Tensor]:
    """The shared 1e7 standard-normal float64 samples, in chunks of 1e6."""
    g = torch.Generator().manual_seed(0)
    return [torch.randn(CHUNK, dtype=torch.float64, generator=g) for _ in range(N_MC // CHUNK)]


def monte_carlo(fn: Callable[[torch.Tensor], torch.Tensor], chunks: list[torch.Tensor], q: float) -> dict:
    """Estimates and standard errors of E[phi^2], Var[phi], E[phi'^2] for z ~ N(0, q)."""
    s = torch.zeros(4, dtype=torch.float64)  # raw power sums of phi: 1, 2, 3, 4
    d = torch.zeros(2, dtype=torch.float64)  # power sums of phi'^2: 1, 2
    n = 0
    for c in chunks:
        z = (c * math.sqrt(q)).requires_grad_(True)
        y = fn(z)
        (dy,) = torch.autograd.grad(y.sum(), z)
        y, d2 = y.detach(), dy.pow(2)
        y2 = y * y
        s += torch.stack([y.sum(), y2.sum(), (y2 * y).sum(), (y2 * y2).sum()])
        d += torch.stack([d2.sum(), (d2 * d2).sum()])
        n += z.numel()
    m1, m2, m3, m4 = (s / n).tolist()
    b1, b2 = (d / n).tolist()
    var = m2 - m1 * m1
    central4 = m4 - 4 * m1 * m3 + 6 * m1 * m1 * m2 - 3 * m1**4  # E[(phi - mean)^4]
    return {
        "second_moment": (m2, math.sqrt(max(m4 - m2 * m2, 0.0) / n)),
        "variance": (var, math.sqrt(max(central4 - var * var, 0.0) / n)),
        "backward": (b1, math.sqrt(max(b2 - b1 * b1, 0.0) / n)),
    }


def _prelu_per_channel(slopes: list[float]) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    m = nn.PReLU(len(slopes))
    with torch.no_grad():
        m.weight.copy_(torch.tensor(slopes))
    ref = m.double()  # the real module, applied channel-wise to the samples laid out as (N, C)
    return m, lambda z: ref(z.view(-1, len(slopes))).view(-1)


_PRELU_SAME, _PRELU_SAME_FN = _prelu_per_channel([0.3] * 8)
_PRELU_MIXED, _PRELU_MIXED_FN = _prelu_per_channel([0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7])


def _user_fn(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)  # the "quick GELU" of CLIP


ALL_MOMENTS = ("second_moment", "variance", "backward")
# (id, what initwise is given, torch's own function for the Monte Carlo, q, moments to compare)
MC_CASES = [
    ("gelu", "gelu", F.gelu, 1.0, ALL_MOMENTS),
    ("gelu_tanh", nn.GELU(approximate="tanh"), functools.partial(F.gelu, approximate="tanh"), 1.0, ALL_MOMENTS),
    ("silu", nn.SiLU, F.silu, 1.0, ALL_MOMENTS),
    ("mish", "mish", F.mish, 1.0, ALL_MOMENTS),
    ("elu", nn.ELU(), F.elu, 1.0, ALL_MOMENTS),
    ("selu", "selu", F.selu, 1.0, ALL_MOMENTS),
    ("celu_0.5", nn.CELU(alpha=0.5), functools.partial(F.celu, alpha=0.5), 1.0, ALL_MOMENTS),
    ("tanh", "tanh", torch.tanh, 1.0, ALL_MOMENTS),
    ("sigmoid", "sigmoid", torch.sigmoid, 1.0, ALL_MOMENTS),
    ("softplus", "softplus", F.softplus, 1.0, ALL_MOMENTS),
    ("hardswish", "hardswish", F.hardswish, 1.0, ALL_MOMENTS),
    ("hardsigmoid", "hardsigmoid", F.hardsigmoid, 1.0, ALL_MOMENTS),
    ("hardtanh", "hardtanh", F.hardtanh, 1.0, ALL_MOMENTS),
    ("hardtanh_-2_0.5", nn.Hardtanh(-2.0, 0.5), functools.partial(F.hardtanh, min_val=-2.0, max_val=0.5), 1.0,
     ALL_MOMENTS),
    ("relu6_q9", "relu6", F.relu6, 9.0, ALL_MOMENTS),  # q = 9: the kink at 6 sits at 2 sigma
    ("softsign", "softsign", F.softsign, 1.0, ALL_MOMENTS),
    ("logsigmoid", "logsigmoid", F.logsigmoid, 1.0, ALL_MOMENTS),
    ("sin", torch.sin, torch.sin, 1.0, ALL_MOMENTS),
    ("prelu_same", _PRELU_SAME, _PRELU_SAME_FN, 1.0, ALL_MOMENTS),
    # mixed slopes: the spec carries one slope sqrt(mean a_c^2), exact for E[phi^2] and E[phi'^2] only
    ("prelu_mixed", _PRELU_MIXED, _PRELU_MIXED_FN, 1.0, ("second_moment", "backward")),
    ("user_callable", _user_fn, _user_fn, 1.0, ALL_MOMENTS),
    ("tanh_q4", "tanh", torch.tanh, 4.0, ALL_MOMENTS),
    ("tanh_q0.25", "tanh", torch.tanh, 0.25, ALL_MOMENTS),
    ("gelu_q4", "gelu", F.gelu, 4.0, ALL_MOMENTS),
    ("gelu_q0.25", "gelu", F.gelu, 0.25, ALL_MOMENTS),
]


@pytest.mark.parametrize(("spec", "ref", "q", "which"), [c[1:] for c in MC_CASES], ids=[c[0] for c in MC_CASES])
def test_quadrature_matches_monte_carlo(spec, ref, q: float, which: tuple[str, ...], normal_chunks) -> None:
    mc = monte_carlo(ref, normal_chunks, q)
    quad = iw.moments(spec, q)
    for key in which:
        est, se = mc[key]
        got = getattr(quad, key)
        assert se < 2e-3 * max(abs(est), 1e-3) + 1e-4, (key, se)  # the comparison is tight
        assert abs(got - est) < N_SE * se, f"{key}: quadrature {got:.6g}, Monte Carlo {est:.6g} +- {se:.2g}"


def test_gains_are_the_inverse_root_moments() -> None:
    m = iw.moments("gelu")
    assert iw.gain("gelu") == pytest.approx(1 / math.sqrt(m.second_moment), rel=1e-12)
    assert iw.gain("gelu", "backward") == pytest.approx(1 / math.sqrt(m.backward), rel=1e-12)
    assert iw.gain("gelu", "variance") == pytest.approx(1 / math.sqrt(m.variance), rel=1e-12)
    # tanh: the Kaiming gain differs from torch's 5/3 (the docstring quotes 1.5925)
    assert iw.gain("tanh") == pytest.approx(1.5925, abs=1e-4)


def test_smooth_activations_are_not_homogeneous() -> None:
    """tanh and GELU moments do not scale with q: a plan must evaluate them at each layer's q."""
    for name in ("tanh", "gelu"):
        m1, m4 = iw.moments(name, 1.0), iw.moments(name, 4.0)
        assert abs(m4.second_moment / m1.second_moment - 4.0) > 0.1


# --- torch convention --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "param"),
    [("linear", None), ("conv1d", None), ("conv2d", None), ("conv_transpose2d", None), ("sigmoid", None),
     ("tanh", None), ("relu", None), ("leaky_relu", None), ("leaky_relu", 0.2), ("leaky_relu", 0.01),
     ("leaky_relu", math.sqrt(5)), ("leaky_relu", 1), ("selu", None)],
)
def test_torch_convention_equals_calculate_gain(name: str, param) -> None:
    assert iw.gain(name, "torch", param=param) == torch.nn.init.calculate_gain(name, param)


def test_torch_convention_unknown_activation_lists_what_torch_knows() -> None:
    with pytest.raises(ValueError, match=r"it knows: linear \(and conv\*\), sigmoid, tanh, relu, leaky_relu, selu"):
        iw.gain("gelu", "torch")


# --- accepted forms ----------------------------------------------------------------------------------------------


def test_module_instances_are_read() -> None:
    assert iw.gain(nn.LeakyReLU(0.2)) == pytest.approx(math.sqrt(2 / 1.04), abs=1e-12)
    assert iw.gain(nn.LeakyReLU(0.2)) != iw.gain(nn.LeakyReLU())
    a = float(torch.tensor(0.3))  # PReLU stores its slope in float32
    assert iw.gain(nn.PReLU(init=0.3)) == pytest.approx(math.sqrt(2 / (1 + a * a)), abs=1e-12)
    assert iw.gain(nn.ELU(alpha=0.5)) == iw.gain(functools.partial(F.elu, alpha=0.5))
    assert iw.gain(nn.ELU(alpha=0.5)) != pytest.approx(iw.gain(nn.ELU()), rel=1e-3)
    assert iw.gain(nn.GELU(approximate="tanh")) == iw.gain("gelu_tanh")
    assert iw.gain(nn.GELU(approximate="tanh")) != iw.gain("gelu")


def test_classes_callables_partials_and_aliases() -> None:
    assert iw.gain(nn.SiLU) == iw.gain("silu") == iw.gain("swish") == iw.gain(F.silu)
    assert iw.gain(F.relu) == iw.gain(torch.relu) == math.sqrt(2.0)
    assert iw.gain(torch.tanh) == iw.gain("tanh")
    assert iw.gain(functools.partial(F.leaky_relu, negative_slope=0.3)) == pytest.approx(math.sqrt(2 / 1.09), abs=1e-12)
    assert iw.gain("Leaky-ReLU", param=0.3) == iw.gain(functools.partial(F.leaky_relu, negative_slope=0.3))


# --- bad input ---------------------------------------------------------------------------------------------------


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown activation 'gleu'; valid names: .*gelu.*silu"):
        iw.gain("gleu")


def test_unknown_convention() -> None:
    with pytest.raises(ValueError, match="valid: kaiming, backward, variance, torch"):
        iw.gain("relu", "he")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "fn",
    [torch.log, lambda x: x * math.inf, lambda x: torch.exp(x * x) * math.inf],
    ids=["log_nan", "times_inf", "exp_square_inf"],
)
def test_non_finite_activation_is_rejected(fn) -> None:
    with pytest.raises(ValueError, match="non-finite moments"):
        iw.gain(fn)


def test_activation_must_keep_the_shape() -> None:
    with pytest.raises(ValueError, match="same shape"):
        iw.gain(lambda x: x.sum())


def test_zero_activation_has_no_gain() -> None:
    with pytest.raises(ValueError, match="no finite gain"):
        iw.gain(lambda x: 0 * x)


def test_non_callable_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="got int"):
        iw.gain(3)
    with pytest.raises(TypeError, match="must be a number"):
        iw.gain("leaky_relu", param="0.2")  # type: ignore[arg-type]


def test_slope_param_only_for_leaky_relu() -> None:
    with pytest.raises(ValueError, match="applies to 'leaky_relu' and 'prelu' only, not 'relu'"):
        iw.gain("relu", param=0.2)
    with pytest.raises(ValueError, match="must be finite"):
        iw.gain("leaky_relu", param=math.nan)


@pytest.mark.parametrize("q", [0, -1.0, math.nan, math.inf, True])
def test_bad_q(q) -> None:
    with pytest.raises(ValueError, match="q \\(pre-activation variance\\) must be a positive finite number"):
        iw.moments("tanh", q)
