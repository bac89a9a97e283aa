"""Canonical activation specs: one name-keyed table that accepts names, modules, classes and callables.

An :class:`Activation` is a hashable description of a pointwise nonlinearity (its canonical name and the
parameters that change its shape, e.g. LeakyReLU's slope). Everything that needs "the activation after a
layer" (gains, tracing, plans) speaks this one type, so that ``"leaky_relu"`` with slope 0.2,
``nn.LeakyReLU(0.2)`` and ``functools.partial(F.leaky_relu, negative_slope=0.2)`` are the same thing.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Activation", "resolve_activation", "activation_names"]

Fn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class _Rule:
    """How to evaluate one canonical activation.

    ``build(params) -> fn`` makes the tensor function; ``breakpoints(params)`` lists the points where the
    function or its derivative is not smooth (quadrature splits there); ``defaults`` are the parameters
    assumed when a name is given without them.
    """

    build: Callable[[Mapping[str, Any]], Fn]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    breakpoints: Callable[[Mapping[str, Any]], tuple[float, ...]] = lambda p: ()


def _slope_fn(p: Mapping[str, Any]) -> Fn:
    a = float(p["negative_slope"])
    return lambda x: torch.where(x >= 0, x, a * x)


_ZERO = lambda p: (0.0,)  # noqa: E731 - kink at the origin

_RULES: dict[str, _Rule] = {
    "linear": _Rule(lambda p: (lambda x: x)),
    "relu": _Rule(lambda p: torch.relu, breakpoints=_ZERO),
    "leaky_relu": _Rule(_slope_fn, {"negative_slope": 0.01}, _ZERO),
    # PReLU is LeakyReLU with a learned slope; the spec carries the slope read from the module.
    "prelu": _Rule(_slope_fn, {"negative_slope": 0.25}, _ZERO),
    "relu6": _Rule(lambda p: F.relu6, breakpoints=lambda p: (0.0, 6.0)),
    "elu": _Rule(lambda p: functools.partial(F.elu, alpha=float(p["alpha"])), {"alpha": 1.0}, _ZERO),
    "celu": _Rule(lambda p: functools.partial(F.celu, alpha=float(p["alpha"])), {"alpha": 1.0}, _ZERO),
    "selu": _Rule(lambda p: F.selu, breakpoints=_ZERO),
    "gelu": _Rule(lambda p: F.gelu),
    "gelu_tanh": _Rule(lambda p: functools.partial(F.gelu, approximate="tanh")),
    "silu": _Rule(lambda p: F.silu),
    "mish": _Rule(lambda p: F.mish),
    "tanh": _Rule(lambda p: torch.tanh),
    "sigmoid": _Rule(lambda p: torch.sigmoid),
    "softplus": _Rule(
        lambda p: functools.partial(F.softplus, beta=float(p["beta"]), threshold=float(p["threshold"])),
        {"beta": 1.0, "threshold": 20.0},
        lambda p: (float(p["threshold"]) / float(p["beta"]),),
    ),
    "hardswish": _Rule(lambda p: F.hardswish, breakpoints=lambda p: (-3.0, 3.0)),
    "hardsigmoid": _Rule(lambda p: F.hardsigmoid, breakpoints=lambda p: (-3.0, 3.0)),
    "hardtanh": _Rule(
        lambda p: functools.partial(F.hardtanh, min_val=float(p["min_val"]), max_val=float(p["max_val"])),
        {"min_val": -1.0, "max_val": 1.0},
        lambda p: (float(p["min_val"]), float(p["max_val"])),
    ),
    "softsign": _Rule(lambda p: F.softsign, breakpoints=_ZERO),
    "tanhshrink": _Rule(lambda p: F.tanhshrink),
    "logsigmoid": _Rule(lambda p: F.logsigmoid),
    "sin": _Rule(lambda p: torch.sin),
    # a product of two signals (NAFNet's SimpleGate x1 * x2, a channel attention without a sigmoid), as the
    # traced activation of the layers that feed it: for independent halves E[(x1 x2)^2] = E[x1^2] E[x2^2] and
    # E[(d(x1 x2)/dx1)^2] = E[x2^2], so at unit variance both moments equal the identity's (gain 1). It is not a
    # pointwise function: away from unit variance the graph's product node carries the moments, not this rule.
    "gate": _Rule(lambda p: (lambda x: x)),
}

_ALIASES = {
    "identity": "linear",
    "none": "linear",
    "swish": "silu",
    "leakyrelu": "leaky_relu",
    "gelu_approximate": "gelu_tanh",
    "gelu_new": "gelu_tanh",
    "hard_swish": "hardswish",
    "hard_sigmoid": "hardsigmoid",
    "rrelu": "leaky_relu",
    # torch.nn.init.calculate_gain treats every linear layer type as "linear"
    **{k: "linear" for k in ("conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                             "conv_transpose3d")},
}


def activation_names() -> list[str]:
    """The canonical activation names :func:`resolve_activation` knows (aliases excluded)."""
    return sorted(_RULES)


@dataclass(frozen=True)
class Activation:
    """A pointwise nonlinearity: canonical ``name`` plus the ``params`` that shape it.

    A user's own function is an Activation with ``name`` set to its qualified name and ``fn`` set;
    two such specs are equal when they hold the same function object.

    Example:
        >>> Activation("leaky_relu", (("negative_slope", 0.2),)).param("negative_slope")
        0.2
    """

    name: str
    params: tuple[tuple[str, Any], ...] = ()
    fn: Fn | None = field(default=None, compare=True, repr=False)

    @property
    def known(self) -> bool:
        """True for a canonical name from the table, False for a user's function."""
        return self.fn is None

    def param(self, key: str) -> Any:
        return dict(self.params)[key]

    def function(self) -> Fn:
        """The tensor function ``x -> phi(x)``."""
        if self.fn is not None:
            return self.fn
        return _RULES[self.name].build(dict(self.params))

    def breakpoints(self) -> tuple[float, ...]:
        """Where phi or phi' is not smooth; a user's function is assumed to possibly kink at 0."""
        if self.fn is not None:
            return (0.0,)
        return tuple(_RULES[self.name].breakpoints(dict(self.params)))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.function()(x)

    def __str__(self) -> str:
        if not self.params:
            return self.name
        inner = ", ".join(f"{k}={_fmt(v)}" for k, v in self.params)
        return f"{self.name}({inner})"


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _canonical(name: str, params: Mapping[str, Any] | None = None) -> Activation:
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in _RULES:
        raise ValueError(
            f"unknown activation {name!r}; valid names: {', '.join(activation_names())} "
            f"(aliases: {', '.join(sorted(_ALIASES))}), or pass an nn.Module, a class or a callable"
        )
    rule = _RULES[key]
    merged = dict(rule.defaults)
    for k, v in (params or {}).items():
        if k not in merged:
            raise ValueError(f"activation {key!r} has no parameter {k!r}; its parameters: {sorted(merged) or 'none'}")
        merged[k] = v
    for k, v in merged.items():
        if isinstance(v, (int, float)) and not math.isfinite(float(v)):
            raise ValueError(f"activation {key!r} parameter {k!r} must be finite, got {v!r}")
    return Activation(key, tuple(sorted((k, float(v) if isinstance(v, (int, float)) else v)
                                        for k, v in merged.items())))


def _prelu_slope(weight: torch.Tensor) -> float:
    """Effective slope of a PReLU: sqrt(mean(a^2)).

    For a per-channel PReLU the channel-averaged second moment ``(1 + a_c^2)/2`` equals that of a single
    slope ``sqrt(mean_c a_c^2)``; the first moment (used only by the "variance" convention) is approximate.
    """
    a = weight.detach().double()
    return float(a.pow(2).mean().sqrt()) if a.numel() > 1 else float(a.reshape(()))


def _from_module(m: nn.Module) -> Activation:
    t = type(m)
    if isinstance(m, nn.LeakyReLU):
        return _canonical("leaky_relu", {"negative_slope": m.negative_slope})
    if isinstance(m, nn.PReLU):
        return _canonical("prelu", {"negative_slope": _prelu_slope(m.weight)})
    if isinstance(m, nn.RReLU):
        # in eval mode RReLU is LeakyReLU with the mean slope; in training its slope is random in [lower, upper]
        return _canonical("leaky_relu", {"negative_slope": (m.lower + m.upper) / 2})
    if isinstance(m, nn.GELU):
        return _canonical("gelu_tanh" if m.approximate == "tanh" else "gelu")
    if isinstance(m, (nn.ELU, nn.CELU)):
        return _canonical("elu" if isinstance(m, nn.ELU) else "celu", {"alpha": m.alpha})
    if isinstance(m, nn.Softplus):
        return _canonical("softplus", {"beta": m.beta, "threshold": m.threshold})
    if isinstance(m, nn.Hardtanh) and not isinstance(m, nn.ReLU6):
        return _canonical("hardtanh", {"min_val": m.min_val, "max_val": m.max_val})
    simple = {
        nn.ReLU: "relu", nn.ReLU6: "relu6", nn.SELU: "selu", nn.SiLU: "silu", nn.Mish: "mish", nn.Tanh: "tanh",
        nn.Sigmoid: "sigmoid", nn.Hardswish: "hardswish", nn.Hardsigmoid: "hardsigmoid", nn.Identity: "linear",
        nn.Softsign: "softsign", nn.Tanhshrink: "tanhshrink", nn.LogSigmoid: "logsigmoid",
    }
    for cls, name in simple.items():
        if t is cls:
            return _canonical(name)
    # an unknown module: use it as a function on tensors
    return Activation(f"{t.__module__}.{t.__qualname__}", fn=m)


def _function_table() -> dict[Any, str]:
    table: dict[Any, str] = {}
    for name, fns in {
        "relu": (F.relu, torch.relu, torch.relu_, F.relu_, torch.Tensor.relu, torch.Tensor.relu_),
        "relu6": (F.relu6,),
        "leaky_relu": (F.leaky_relu, F.leaky_relu_, torch._C._nn.leaky_relu),
        "elu": (F.elu, F.elu_),
        "celu": (F.celu, F.celu_, torch.celu),
        "selu": (F.selu, F.selu_, torch.selu),
        "gelu": (F.gelu,),
        "silu": (F.silu,),
        "mish": (F.mish,),
        "tanh": (torch.tanh, F.tanh, torch.Tensor.tanh, torch.Tensor.tanh_, torch.tanh_),
        "sigmoid": (torch.sigmoid, F.sigmoid, torch.Tensor.sigmoid, torch.Tensor.sigmoid_, torch.sigmoid_),
        "softplus": (F.softplus,),
        "hardswish": (F.hardswish,),
        "hardsigmoid": (F.hardsigmoid,),
        "hardtanh": (F.hardtanh, F.hardtanh_),
        "softsign": (F.softsign,),
        "tanhshrink": (F.tanhshrink,),
        "logsigmoid": (F.logsigmoid,),
        "sin": (torch.sin, torch.Tensor.sin),
    }.items():
        for fn in fns:
            table[fn] = name
    return table


_FUNCTIONS = _function_table()


def _from_callable(fn: Callable[..., Any]) -> Activation:
    if isinstance(fn, functools.partial) and fn.func in _FUNCTIONS and not fn.args:
        name = _FUNCTIONS[fn.func]
        kw = {k: v for k, v in fn.keywords.items() if k != "inplace"}
        if name == "gelu":
            return _canonical("gelu_tanh" if kw.get("approximate") == "tanh" else "gelu")
        return _canonical(name, kw)
    if fn in _FUNCTIONS:
        return _canonical(_FUNCTIONS[fn])
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return Activation(f"{getattr(fn, '__module__', '') or ''}.{name}".lstrip("."), fn=fn)


def resolve_activation(activation: Any, param: float | None = None) -> Activation:
    """Turn a name, module instance, module class, callable or :class:`Activation` into an Activation.

    Args:
        activation: ``"relu"``, ``"leaky_relu"``, ``"gelu_tanh"``, ... (see :func:`activation_names`);
            an ``nn.Module`` whose parameters are read (LeakyReLU's slope, PReLU's current weight,
            ELU's alpha, GELU's ``approximate``); an ``nn.Module`` subclass (built with its defaults);
            any callable on tensors; ``None`` means linear.
        param: torch's ``calculate_gain`` second argument: the negative slope for ``"leaky_relu"``
            (and ``"prelu"``); ignored with a ValueError for activations that have no slope.

    Example:
        >>> str(resolve_activation(nn.LeakyReLU(0.2)))
        'leaky_relu(negative_slope=0.2)'
    """
    if isinstance(activation, Activation):
        act = activation
    elif activation is None:
        act = _canonical("linear")
    elif isinstance(activation, str):
        act = _canonical(activation)
    elif isinstance(activation, nn.Module):
        act = _from_module(activation)
    elif inspect.isclass(activation) and issubclass(activation, nn.Module):
        try:
            act = _from_module(activation())
        except TypeError as e:
            raise TypeError(f"activation class {activation.__qualname__} cannot be built without arguments: {e}; "
                            "pass an instance instead") from e
    elif callable(activation):
        act = _from_callable(activation)
    else:
        raise TypeError(
            f"activation must be a name, an nn.Module, an nn.Module class or a callable, got {type(activation).__name__}"
        )
    if param is None:
        return act
    if isinstance(param, bool) or not isinstance(param, (int, float)):
        raise TypeError(f"param (negative slope) must be a number, got {type(param).__name__}")
    if act.name not in ("leaky_relu", "prelu"):
        raise ValueError(f"param (negative slope) applies to 'leaky_relu' and 'prelu' only, not {act.name!r}")
    return _canonical(act.name, {"negative_slope": param})
