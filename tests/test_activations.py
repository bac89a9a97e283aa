"""resolve_activation: names, modules, classes, functions and partials map to one canonical, hashable spec whose
function is the activation torch computes."""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import initwise as iw
from initwise import Activation, resolve_activation

GRID = torch.linspace(-8, 8, 2001, dtype=torch.float64)  # includes 0 and the kinks at +-1, +-3, 6

MODULES = [
    (nn.ReLU(), "relu"),
    (nn.LeakyReLU(0.2), "leaky_relu(negative_slope=0.2)"),
    (nn.LeakyReLU(), "leaky_relu(negative_slope=0.01)"),
    (nn.PReLU(init=0.25), "prelu(negative_slope=0.25)"),
    (nn.RReLU(0.1, 0.3), "leaky_relu(negative_slope=0.2)"),  # eval-mode slope: the mean of [lower, upper]
    (nn.GELU(), "gelu"),
    (nn.GELU(approximate="tanh"), "gelu_tanh"),
    (nn.ELU(alpha=0.5), "elu(alpha=0.5)"),
    (nn.CELU(alpha=2.0), "celu(alpha=2)"),
    (nn.SELU(), "selu"),
    (nn.SiLU(), "silu"),
    (nn.Mish(), "mish"),
    (nn.Tanh(), "tanh"),
    (nn.Sigmoid(), "sigmoid"),
    (nn.Softplus(beta=2.0, threshold=10.0), "softplus(beta=2, threshold=10)"),
    (nn.Hardswish(), "hardswish"),
    (nn.Hardsigmoid(), "hardsigmoid"),
    (nn.Hardtanh(-2.0, 0.5), "hardtanh(max_val=0.5, min_val=-2)"),
    (nn.ReLU6(), "relu6"),  # a Hardtanh subclass: resolved as relu6, not hardtanh(0, 6)
    (nn.Identity(), "linear"),
    (nn.Softsign(), "softsign"),
    (nn.Tanhshrink(), "tanhshrink"),
    (nn.LogSigmoid(), "logsigmoid"),
]


@pytest.mark.parametrize(("module", "spec"), MODULES, ids=[s for _, s in MODULES])
def test_modules_map_to_specs_that_compute_what_the_module_computes(module: nn.Module, spec: str) -> None:
    act = resolve_activation(module)
    assert str(act) == spec
    assert act.known
    module = module.double().eval()  # RReLU: deterministic mean slope in eval mode
    torch.testing.assert_close(act(GRID), module(GRID), rtol=1e-12, atol=1e-12)


FUNCTIONS = [
    (F.relu, "relu"), (torch.relu, "relu"), (torch.Tensor.relu, "relu"), (F.relu6, "relu6"),
    (F.leaky_relu, "leaky_relu(negative_slope=0.01)"), (F.elu, "elu(alpha=1)"), (F.celu, "celu(alpha=1)"),
    (torch.selu, "selu"), (F.gelu, "gelu"), (F.silu, "silu"), (F.mish, "mish"), (torch.tanh, "tanh"),
    (F.tanh, "tanh"), (torch.sigmoid, "sigmoid"), (F.softplus, "softplus(beta=1, threshold=20)"),
    (F.hardswish, "hardswish"), (F.hardsigmoid, "hardsigmoid"), (F.hardtanh, "hardtanh(max_val=1, min_val=-1)"),
    (F.softsign, "softsign"), (F.tanhshrink, "tanhshrink"), (F.logsigmoid, "logsigmoid"), (torch.sin, "sin"),
]


@pytest.mark.parametrize(("fn", "spec"), FUNCTIONS, ids=[f"{f.__name__}-{s}" for f, s in FUNCTIONS])
def test_functions_map_to_specs_that_compute_the_function(fn, spec: str) -> None:
    act = resolve_activation(fn)
    assert str(act) == spec and act.known
    torch.testing.assert_close(act(GRID), fn(GRID), rtol=1e-12, atol=1e-12)


PARTIALS = [
    (functools.partial(F.leaky_relu, negative_slope=0.3, inplace=False), "leaky_relu(negative_slope=0.3)"),
    (functools.partial(F.gelu, approximate="tanh"), "gelu_tanh"),
    (functools.partial(F.gelu, approximate="none"), "gelu"),
    (functools.partial(F.elu, alpha=0.3), "elu(alpha=0.3)"),
    (functools.partial(F.softplus, beta=2.0), "softplus(beta=2, threshold=20)"),
    (functools.partial(F.hardtanh, min_val=-3.0, max_val=3.0), "hardtanh(max_val=3, min_val=-3)"),
]


@pytest.mark.parametrize(("fn", "spec"), PARTIALS, ids=[s for _, s in PARTIALS])
def test_partials_read_their_keywords(fn, spec: str) -> None:
    act = resolve_activation(fn)
    assert str(act) == spec and act.known
    torch.testing.assert_close(act(GRID), fn(GRID), rtol=1e-12, atol=1e-12)


def test_classes_are_built_with_their_defaults() -> None:
    assert resolve_activation(nn.SiLU) == resolve_activation("silu")
    assert resolve_activation(nn.LeakyReLU) == resolve_activation("leaky_relu", 0.01)
    assert resolve_activation(nn.GELU) == resolve_activation("gelu")


def test_class_that_needs_arguments_asks_for_an_instance() -> None:
    class Scaled(nn.Module):
        def __init__(self, k: float) -> None:
            super().__init__()
            self.k = k

    with pytest.raises(TypeError, match="Scaled cannot be built without arguments.*pass an instance"):
        resolve_activation(Scaled)


def test_names_are_normalized_and_aliases_resolved() -> None:
    assert resolve_activation("ReLU") == resolve_activation(" relu ") == resolve_activation(nn.ReLU())
    assert resolve_activation("Leaky-ReLU") == resolve_activation("leakyrelu") == resolve_activation(nn.LeakyReLU())
    assert resolve_activation("swish") == resolve_activation(nn.SiLU())
    assert resolve_activation("gelu_new") == resolve_activation(nn.GELU(approximate="tanh"))
    assert resolve_activation("hard_swish") == resolve_activation(F.hardswish)
    for name in ("identity", "none", "conv2d", "conv_transpose3d"):
        assert resolve_activation(name) == resolve_activation(None) == Activation("linear")


def test_param_sets_the_slope() -> None:
    a = resolve_activation("leaky_relu", 0.2)
    assert a == resolve_activation(nn.LeakyReLU(0.2)) == resolve_activation(
        functools.partial(F.leaky_relu, negative_slope=0.2))
    assert a.param("negative_slope") == 0.2
    assert resolve_activation(nn.LeakyReLU(0.5), 0.2) == a  # an explicit param wins, as in torch
    assert str(resolve_activation("prelu", 0.1)) == "prelu(negative_slope=0.1)"


def test_per_channel_prelu_uses_the_rms_slope() -> None:
    """sqrt(mean a_c^2) gives the same E[phi^2] = (1 + a^2) / 2 as averaging over channels."""
    m = nn.PReLU(4)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([0.0, 0.1, 0.2, 0.5]))
    a = resolve_activation(m).param("negative_slope")
    assert (1 + a * a) / 2 == pytest.approx(sum((1 + s * s) / 2 for s in (0.0, 0.1, 0.2, 0.5)) / 4, rel=1e-6)


def test_spec_equality_and_hash() -> None:
    a, b = resolve_activation(nn.LeakyReLU(0.2)), resolve_activation("leaky_relu", 0.2)
    assert a == b and hash(a) == hash(b)
    assert len({a, b, resolve_activation("leaky_relu", 0.3), resolve_activation("relu")}) == 3
    assert resolve_activation("elu") != resolve_activation(nn.ELU(0.5))
    assert resolve_activation("gelu") != resolve_activation("gelu_tanh")
    assert {resolve_activation(nn.GELU()): 1}[resolve_activation(F.gelu)] == 1
    act = resolve_activation("tanh")
    assert resolve_activation(act) is act


def _quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


def test_user_functions_are_specs_by_identity() -> None:
    a = resolve_activation(_quick_gelu)
    assert not a.known and a.fn is _quick_gelu
    assert a.name == f"{__name__}._quick_gelu"
    assert a == resolve_activation(_quick_gelu) and hash(a) == hash(resolve_activation(_quick_gelu))
    other = lambda x: x * torch.sigmoid(1.702 * x)  # noqa: E731 - same body, different object
    assert resolve_activation(other) != a
    assert a.breakpoints() == (0.0,)
    torch.testing.assert_close(a(GRID), _quick_gelu(GRID))


def test_unknown_module_is_used_as_a_function() -> None:
    class Double(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * x

    act = resolve_activation(Double())
    assert not act.known and "Double" in act.name
    assert iw.gain(Double()) == pytest.approx(0.5, abs=1e-12)  # E[(2z)^2] = 4


def test_partial_of_an_unknown_function_is_a_user_function() -> None:
    fn = functools.partial(torch.clamp, min=-1.0, max=1.0)
    act = resolve_activation(fn)
    assert not act.known and act.fn is fn
    assert iw.gain(fn) == pytest.approx(iw.gain("hardtanh"), rel=1e-9)  # same function, different route


def test_breakpoints_follow_the_parameters() -> None:
    assert resolve_activation(nn.Hardtanh(-2.0, 0.5)).breakpoints() == (-2.0, 0.5)
    assert resolve_activation("relu6").breakpoints() == (0.0, 6.0)
    assert resolve_activation(nn.Softplus(beta=2.0, threshold=10.0)).breakpoints() == (5.0,)
    assert resolve_activation("gelu").breakpoints() == ()


def test_activation_names() -> None:
    names = iw.activation_names()
    assert names == sorted(names)
    assert {"relu", "gelu", "gelu_tanh", "silu", "prelu", "softplus"} <= set(names)
    assert "swish" not in names  # aliases are not canonical names
    for n in names:
        assert resolve_activation(n).name == n


# --- errors ------------------------------------------------------------------------------------------------------


def test_unknown_name_message() -> None:
    with pytest.raises(ValueError) as e:
        resolve_activation("reLu2")
    msg = str(e.value)
    assert "unknown activation 'reLu2'" in msg
    assert "valid names: " + ", ".join(iw.activation_names()) in msg
    assert "swish" in msg and "or pass an nn.Module, a class or a callable" in msg


def test_unknown_keyword_names_the_parameters() -> None:
    with pytest.raises(ValueError, match=r"activation 'elu' has no parameter 'beta'; its parameters: \['alpha'\]"):
        resolve_activation(functools.partial(F.elu, beta=1.0))
    with pytest.raises(ValueError, match="activation 'relu6' has no parameter 'lo'; its parameters: none"):
        resolve_activation(functools.partial(F.relu6, lo=1.0))


def test_non_finite_parameter() -> None:
    with pytest.raises(ValueError, match="'negative_slope' must be finite, got nan"):
        resolve_activation(nn.LeakyReLU(math.nan))
    with pytest.raises(ValueError, match="must be finite"):
        resolve_activation("leaky_relu", math.inf)


def test_bad_types() -> None:
    with pytest.raises(TypeError, match="got int"):
        resolve_activation(3)
    with pytest.raises(TypeError, match="must be a number, got str"):
        resolve_activation("leaky_relu", "0.2")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a number, got bool"):
        resolve_activation("leaky_relu", True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="applies to 'leaky_relu' and 'prelu' only, not 'gelu'"):
        resolve_activation(nn.GELU(), 0.2)
