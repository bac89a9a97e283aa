"""Schemes and options of a plan: parsing and validation, and the fan and gain each scheme chooses.

Part of :func:`initwise.plan` (:mod:`initwise._plan`), apart so that the planner reads as bookkeeping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from ._activations import Activation, resolve_activation
from ._fans import Fans
from ._gains import gain as activation_gain

__all__ = ["SCHEMES", "parse_scheme"]


Scheme = Literal["kaiming", "xavier", "lecun", "orthogonal", "identity", "torch_default", "current"]


SCHEMES = ("kaiming", "xavier", "lecun", "orthogonal", "identity", "torch_default", "current")


_MODES = ("fan_in", "fan_out", "fan_avg")


_DISTRIBUTIONS = ("normal", "uniform", "truncated_normal")


def parse_scheme(name: str, mode: str | None = None) -> tuple[str, str]:
    """Split a candidate name such as ``"kaiming_fan_out"`` into ``("kaiming", "fan_out")``.

    ``"default"`` and ``"torch"`` are aliases of ``"torch_default"``; ``"fan_in"`` alone means Kaiming fan_in.
    """
    if not isinstance(name, str):
        raise TypeError(f"scheme must be a string, got {type(name).__name__}")
    key = name.strip().lower()
    key = {"default": "torch_default", "torch": "torch_default", "he": "kaiming", "glorot": "xavier"}.get(key, key)
    for m in _MODES:
        if key == m:
            return "kaiming", m
        if key.endswith("_" + m):
            key, mode = key[: -len(m) - 1], m
            break
    if key not in SCHEMES:
        raise ValueError(f"unknown scheme {name!r}; valid: {', '.join(SCHEMES)} "
                         f"(optionally with a mode suffix, e.g. kaiming_fan_out), or default")
    mode = mode or "fan_in"
    if mode not in _MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(_MODES)}")
    return key, mode


@dataclass(frozen=True)
class _Options:
    gain: Any
    gain_convention: str | None
    distribution: str
    residual_scale: float | None
    zero_init_residual: bool
    output_scale: float | None
    icnr: bool
    bias: str
    norm: str
    exclude: tuple[str, ...]
    fans: str = "effective"
    frozen: str = "keep"
    structured: str = "draw"


def _check_options(opts: dict[str, Any]) -> _Options:
    allowed = {"gain", "gain_convention", "distribution", "residual_scale", "zero_init_residual", "output_scale",
               "icnr", "bias", "norm", "exclude", "fans", "frozen", "structured"}
    extra = sorted(set(opts) - allowed)
    if extra:
        raise TypeError(f"unknown option(s) {', '.join(extra)}; valid: {', '.join(sorted(allowed))}")
    dist = opts.get("distribution", "normal")
    if dist not in _DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {dist!r}; valid: {', '.join(_DISTRIBUTIONS)}")
    bias = opts.get("bias", "zero")
    if bias not in ("zero", "keep"):
        raise ValueError(f"bias must be 'zero' or 'keep', got {bias!r}")
    norm = opts.get("norm", "reset")
    if norm not in ("reset", "keep"):
        raise ValueError(f"norm must be 'reset' (weight 1, bias 0) or 'keep', got {norm!r}")
    conv = opts.get("gain_convention")
    if conv not in (None, "kaiming", "backward", "variance", "torch"):
        raise ValueError(f"gain_convention must be one of kaiming, backward, variance, torch, got {conv!r}")
    for key in ("residual_scale", "output_scale"):
        v = opts.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0):
            raise ValueError(f"{key} must be a finite number >= 0, got {v!r}")
    g = opts.get("gain")
    if g is not None and not (g == "traced" or isinstance(g, (int, float, str, Activation)) or callable(g)):
        raise TypeError(f"gain must be None, 'traced', a number or an activation, got {type(g).__name__}")
    if isinstance(g, bool):
        raise TypeError("gain must be None, 'traced', a number or an activation, got bool")
    if isinstance(g, (str, Activation)) and g != "traced" or (callable(g) and not isinstance(g, (int, float))):
        try:
            resolve_activation(g)
        except (TypeError, ValueError) as e:
            raise type(e)(f"gain={g!r}: {e}") from None
    if isinstance(g, (int, float)) and not (math.isfinite(g) and g >= 0):
        raise ValueError(f"gain must be a finite number >= 0 (the std is gain / sqrt(fan)), got {g!r}")
    exclude = opts.get("exclude", ())
    if exclude is None:
        exclude = ()
    if not isinstance(exclude, (str, list, tuple, set, frozenset)):
        raise TypeError(f"exclude must be a pattern string or a list of pattern strings (fnmatch syntax), "
                        f"got {type(exclude).__name__}")
    exclude = (exclude,) if isinstance(exclude, str) else tuple(exclude)
    if not all(isinstance(p, str) for p in exclude):
        bad = next(p for p in exclude if not isinstance(p, str))
        raise TypeError(f"exclude must hold pattern strings (fnmatch syntax), got a {type(bad).__name__}: {bad!r}")
    fans_kind = opts.get("fans", "effective")
    if fans_kind not in ("effective", "nominal", "torch"):
        raise ValueError(f"fans must be 'effective', 'nominal' or 'torch' (shape-only, as torch.nn.init), got {fans_kind!r}")
    frozen = opts.get("frozen", "keep")
    if frozen not in ("keep", "draw"):
        raise ValueError(f"frozen must be 'keep' (parameters with requires_grad=False keep their values) or 'draw', "
                         f"got {frozen!r}")
    structured = opts.get("structured", "draw")
    if structured not in ("draw", "keep"):
        raise ValueError(f"structured must be 'draw' (every weight drawn) or 'keep' (weights the model set to a "
                         f"structured kernel, bilinear or identity, keep their values), got {structured!r}")
    for key in ("zero_init_residual", "icnr"):  # bool("no") is True: a string here would switch it on
        v = opts.get(key, False)
        if not (isinstance(v, bool) or (isinstance(v, int) and v in (0, 1))):
            raise TypeError(f"{key} must be True or False, got {v!r}")
    return _Options(g, conv, dist, opts.get("residual_scale"), bool(opts.get("zero_init_residual", False)),
                    opts.get("output_scale"), bool(opts.get("icnr", False)), bias, norm, exclude, fans_kind,
                    frozen, structured)


def _fan_of(f: Fans, mode: str, kind: str) -> float:
    if kind == "effective":
        return f.get(mode)
    fi, fo = (f.nominal_fan_in, f.nominal_fan_out) if kind == "nominal" else (f.torch_fan_in, f.torch_fan_out)
    return {"fan_in": fi, "fan_out": fo, "fan_avg": (fi + fo) / 2}[mode]


def _gain_for(scheme: str, mode: str, act: Activation, o: _Options) -> float:
    g = o.gain
    if isinstance(g, (int, float)) and not isinstance(g, bool):
        return float(g)
    if g is not None and g != "traced":
        # a fixed activation for every layer (e.g. "relu": the common kaiming_normal_(nonlinearity='relu') usage)
        act = resolve_activation(g)
    elif g is None and scheme in ("xavier", "lecun", "identity"):
        return 1.0
    convention = o.gain_convention or ("backward" if mode == "fan_out" else "kaiming")
    if convention == "torch":
        return activation_gain(act, "torch")
    return activation_gain(act, convention)
