"""Whole-model plans: per parameter, what an initialization scheme does, and its analytic forward/backward effect.

``plan(model, example, scheme, mode)`` traces the model once (which activation, norm, residual join and pixel
shuffle follows every layer), decides each weight's initializer, std and gain, and propagates second moments
through the traced graph (:mod:`initwise._propagate`). Nothing is changed until :meth:`Plan.apply` (or
:func:`initwise.init_`).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from ._activations import Activation, resolve_activation
from ._fans import Fans, fans as layer_fans
from ._gains import gain as activation_gain
from ._graph import _TORCH_NORMS, Graph, LayerInfo, trace
from ._nested import tensors as _nested_tensors
from ._plan_types import LayerPlan, ParamPlan, Plan
from ._propagate import LayerMoments, NormMoments, propagate
from ._signal import Sig, sig_of
from ._reparam import Reparam, effective_ms, reparams
from ._roles import ParamRole, keep_reason
from ._taps import tap_factors

__all__ = ["Plan", "LayerPlan", "ParamPlan", "plan", "SCHEMES", "parse_scheme"]

Scheme = Literal["kaiming", "xavier", "lecun", "orthogonal", "identity", "torch_default", "current"]
SCHEMES = ("kaiming", "xavier", "lecun", "orthogonal", "identity", "torch_default", "current")
_MODES = ("fan_in", "fan_out", "fan_avg")
_DISTRIBUTIONS = ("normal", "uniform", "truncated_normal")
_AFFINE = (nn.Linear, nn.Bilinear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
           nn.ConvTranspose3d)
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


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


def _check_options(opts: dict[str, Any]) -> _Options:
    allowed = {"gain", "gain_convention", "distribution", "residual_scale", "zero_init_residual", "output_scale",
               "icnr", "bias", "norm", "exclude", "fans", "frozen"}
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
    for key in ("zero_init_residual", "icnr"):  # bool("no") is True: a string here would switch it on
        v = opts.get(key, False)
        if not (isinstance(v, bool) or (isinstance(v, int) and v in (0, 1))):
            raise TypeError(f"{key} must be True or False, got {v!r}")
    return _Options(g, conv, dist, opts.get("residual_scale"), bool(opts.get("zero_init_residual", False)),
                    opts.get("output_scale"), bool(opts.get("icnr", False)), bias, norm, exclude, fans_kind,
                    frozen)


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


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _identity_ok(module: nn.Module, w: torch.Tensor) -> bool:
    if w.dim() < 2:
        return False
    groups = int(getattr(module, "groups", 1) or 1)
    return w.shape[0] // groups == w.shape[1]


def _weight_params(layer: LayerInfo) -> list[tuple[str, nn.Module, str, torch.Tensor]]:
    """(local dotted name, owning module, attribute name, tensor) of every parameter a layer owns."""
    m = layer.module
    out = [(n, m, n, p) for n, p in m.named_parameters(recurse=False) if not layer.params or n in layer.params]
    rp = reparams(m)  # torch.nn.utils.parametrizations: the parameters live in m.parametrizations.<name>
    out += [(n, m.get_submodule(n.rpartition(".")[0]), n.rpartition(".")[2], p) for n, p in m.named_parameters()
            if n.startswith("parametrizations.") and n in rp and not layer.params]
    if isinstance(m, nn.MultiheadAttention):
        out += [(f"out_proj.{n}", m.out_proj, n, p) for n, p in m.out_proj.named_parameters(recurse=False)]
    return out


def _param_plan(scheme: str, mode: str, o: _Options, layer: LayerInfo, local: str, owner: nn.Module, attr: str,
                w: torch.Tensor, act: Activation, role: ParamRole | None = None) -> ParamPlan:
    full = _full(layer, local)
    shape = tuple(w.shape)
    if w.dim() < 2 or role is not None and role.role == "bias":
        if o.bias == "keep" or isinstance(layer.module, nn.PReLU):
            return ParamPlan(full, layer.name, shape, "keep", note="bias kept" if o.bias == "keep" else "")
        return ParamPlan(full, layer.name, shape, "zeros", std=0.0)
    # fans from the op that consumed the weight (its layout, groups, stride), else from the module's class
    f = role.fans if role is not None and role.fans is not None else layer_fans(owner, attr)
    # MultiheadAttention's q/k/v projections feed the attention softmax: linear gain
    if isinstance(layer.module, nn.MultiheadAttention) and not local.startswith("out_proj"):
        act = resolve_activation("linear")
    if isinstance(layer.module, nn.RNNBase):
        act = resolve_activation("linear")  # gate pre-activations: sigmoid/tanh act per gate, LeCun-like scaling
    g = _gain_for(scheme, mode, act, o)
    if scheme == "identity" and not _identity_ok(owner, w):
        method, note = "normal", "identity impossible (in != out per group): Kaiming fan_in instead"
        g = _gain_for("kaiming", "fan_in", act, o)
        fan = _fan_of(f, "fan_in", o.fans)
    elif scheme == "identity":
        method, note, fan = "identity", "", None
    elif scheme == "orthogonal":
        method, note, fan = "orthogonal", "", None
    else:
        method, note = o.distribution, ""
        fan = _fan_of(f, "fan_in" if scheme == "lecun" else "fan_avg" if scheme == "xavier" else mode, o.fans)
    extra = 1.0
    branch_end = _branch_end(layer)
    if branch_end and o.residual_scale is not None:
        extra *= o.residual_scale
        note = (note + "; " if note else "") + f"residual branch end x{o.residual_scale:g}"
    if layer.is_output and o.output_scale is not None:
        extra *= o.output_scale
        note = (note + "; " if note else "") + f"output layer x{o.output_scale:g}"
    if branch_end and o.zero_init_residual and layer.norm is None:
        return ParamPlan(full, layer.name, shape, "zeros", f, None, 0.0, 0.0, 0.0, "zero-init residual branch end")
    if method in ("orthogonal", "identity"):
        rows = shape[0] // int(getattr(owner, "groups", 1) or 1)
        k = math.prod(shape[2:])
        ms = min(rows, shape[1]) / (rows * shape[1] * k)  # mean square of a (delta-)orthogonal or identity kernel
        std = g * extra * math.sqrt(ms)
    else:
        std = g * extra / math.sqrt(fan)
    _check_std(std, o, full, layer, w)
    if o.icnr and layer.pixel_shuffle and method in _DISTRIBUTIONS and local == "weight":
        note = (note + "; " if note else "") + f"ICNR for PixelShuffle({layer.pixel_shuffle})"
        method = "icnr"
    if role is not None and role.standardized:
        note = (note + "; " if note else "") + ("weight standardized by its op: the drawn scale does not matter, "
                                                "the effective weight has variance gain^2/fan_in")
    return ParamPlan(full, layer.name, shape, method, f, fan, g, extra, std, note)


def _check_std(std: float, o: _Options, full: str, layer: LayerInfo, w: torch.Tensor) -> None:
    """A ValueError naming the options when a planned std (or its square) is not finite in float64 or its draws
    (up to 10 std) would overflow the parameter's dtype."""
    top = torch.finfo(w.dtype).max
    if math.isfinite(std * std) and std * 10.0 <= top:  # 10 std: a N(0, 1) draw beyond it has probability 1.5e-23
        return
    given = [f"{k}={v!r}" for k, v in (("gain", o.gain), ("residual_scale", o.residual_scale),
                                        ("output_scale", o.output_scale))
             if isinstance(v, (int, float)) and not isinstance(v, bool)]
    raise ValueError(f"{' and '.join(given) or 'the gain'} gives parameter {full!r} (layer {layer.name!r}, "
                     f"{layer.type}) a std of {std:.3g}: its values would overflow {w.dtype} (largest finite "
                     f"{top:.3g})")


def _check_dtype(full: str, info: LayerInfo, w: torch.Tensor) -> None:
    if not w.is_floating_point():
        raise TypeError(f"parameter {full!r} of layer {info.name!r} ({info.type}) has dtype {w.dtype}: initwise "
                        "draws floating-point weights only (float16, bfloat16, float32, float64); leave it out "
                        f"with exclude=[{full!r}] or convert the model")


def _full(layer: LayerInfo, local: str) -> str:
    return f"{layer.owner_name}.{local}" if layer.owner_name else local


def _role_keep(g: Graph, full: str, w: torch.Tensor, o: _Options, in_layer: bool) -> str | None:
    """Why ``full`` keeps its value (its role is none the scheme draws, frozen, unused), or None to draw it."""
    if w.numel() == 0:  # torch's own init treats a zero-element tensor as a no-op too
        return "empty: nothing to draw"
    if full in g.overwritten:
        return "overwritten by the model's forward (assigned from other values on every call): drawing it " \
               "would have no effect: kept"
    role = g.params.get(full)
    if role is None and not in_layer and full in g.read:
        return "read by the forward outside the signal path (e.g. fused into another parameter): kept"
    if role is None and in_layer:  # run inside a torch layer by an op the tracker has no role for (e.g. an RNN's)
        role = ParamRole(full, "module", "the layer's forward", "")
    return keep_reason(role, not w.requires_grad, o.frozen == "draw", in_layer)


def plan(model: nn.Module, example_inputs: Any, scheme: str = "kaiming", mode: str | None = None, *,
         graph: Graph | None = None, **options: Any) -> Plan:
    """Plan the initialization of every parameterized layer of ``model`` (nothing is changed).

    Schemes: ``"kaiming"`` (``mode`` fan_in, fan_out or fan_avg; std = gain / sqrt(fan) with the gain of the
    traced activation: the Kaiming gain for fan_in and fan_avg, the backward gain ``1/sqrt(E[phi'^2])`` for
    fan_out, He et al. 2015 Eq. 10 and 14), ``"xavier"`` (1/fan_avg), ``"lecun"`` (1/fan_in), ``"orthogonal"``
    (delta-orthogonal for convs, traced gain), ``"identity"`` (eye/dirac/nearest where in == out per group, else
    Kaiming fan_in), ``"torch_default"`` (each module's own ``reset_parameters``: exactly PyTorch's constructors).
    Fans are effective (:func:`initwise.fans`). A name with a mode suffix (``"kaiming_fan_out"``) sets both.

    Options:
        gain: None (the scheme's: traced for kaiming/orthogonal, 1 for xavier/lecun/identity), ``"traced"``,
            a number, or an activation used for every layer (``"relu"`` reproduces the common usage).
        gain_convention: override the gain convention (``"kaiming"``, ``"backward"``, ``"variance"``, ``"torch"``).
        distribution: ``"normal"`` (default), ``"uniform"``, ``"truncated_normal"``.
        residual_scale: multiply the std of the last layer of every residual branch (ESRGAN's 0.1); never the
            model's output layer, even when a global skip is added to it (``output_scale`` is for that layer).
        zero_init_residual: zero the last layer of every residual branch (or the gamma of its norm); never the
            model's output layer.
        output_scale: multiply the std of the layers that produce the model's output.
        icnr: ICNR for convs feeding PixelShuffle.
        bias: ``"zero"`` (default) or ``"keep"``. norm: ``"reset"`` (weight 1, bias 0; default) or ``"keep"``.
        exclude: fnmatch patterns of layer or parameter names to leave untouched (warns if one matches nothing).
        fans: ``"effective"`` (default: stride, groups, transposition, packing), ``"nominal"`` (stride ignored) or
            ``"torch"`` (shape-only, exactly what ``torch.nn.init`` uses: reproduces common code).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(16, 3, 3, padding=1))
        >>> p = plan(net, torch.randn(1, 3, 16, 16), "kaiming", "fan_in")
        >>> p["0"].activation
        'leaky_relu(negative_slope=0.2)'
    """
    scheme, mode = parse_scheme(scheme, mode)
    o = _check_options(options)
    if scheme == "current":
        o = dataclasses.replace(o, norm="keep", bias="keep")
    g = graph if graph is not None else trace(model, example_inputs)
    layers: list[LayerPlan] = []
    seen: set[int] = set()
    touched: set[str] = set()
    used_patterns: set[str] = set()
    norm_ms: dict[str, tuple[float, float]] = {}
    layer_ms: dict[str, LayerMoments] = {}
    for info in g.layers:
        lp = _layer_plan(scheme, mode, o, info, seen, used_patterns, g)
        layers.append(lp)
        touched.add(info.name)
        lm = layer_ms[info.name] = _moments_of(info, lp, g)
        if lm.kind == "affine":
            lp.forward_gain, lp.backward_gain = lm.fan_in * lm.weight_ms, lm.fan_out * lm.weight_ms
    norms = _norm_modules(model, g)
    traced = {n.module for n in g.nodes}  # once: per norm it would grow with depth squared
    norm_params: list[ParamPlan] = []
    zeroed = {lp.norm for lp in layers if lp.residual_end and o.zero_init_residual}  # one pass: linear in depth
    for name, m in norms.items():
        zero = name in zeroed
        norm_ms[name] = _norm_ms(m, o, zero)
        norm_params += _norm_param_plans(name, m, o, zero, seen, used_patterns, g, traced)
    kept_params = _kept_params(model, g, o, seen)
    for pat in o.exclude:
        if pat not in used_patterns:
            warnings.warn(f"exclude pattern {pat!r} matches no layer or parameter of the model", UserWarning,
                          stacklevel=2)
    q0, out_forward, approximate = propagated(g, layers, layer_ms, norm_ms, example_inputs)
    # modules none of whose parameters the example's forward used (a functional F.linear(x, self.qkv.weight)
    # uses qkv without calling it)
    canonical = {id(p): k for k, p in model.named_parameters()}
    untouched = [n for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))
                 and n not in touched and n not in norms and not _is_child_of_layer(n, touched)
                 and not any(canonical[id(p)] in g.params for p in m.parameters(recurse=False))]
    reads_values = scheme == "current" or o.norm == "keep" or o.bias == "keep" or bool(o.exclude) or any(
        pp.method == "keep" for lp in layers for pp in lp.params)
    return Plan(scheme, mode, dict(options), layers, g, q0, out_forward, untouched, approximate, norm_params,
                kept_params, _moments=(layer_ms, norm_ms, reads_values))


def propagated(g: Graph, layers: list[LayerPlan], layer_ms: dict[str, LayerMoments],
               norm_ms: dict[str, tuple[float, float]], example_inputs: Any) -> tuple[float, float | None, list[str]]:
    """Propagate second moments from the example through ``g``; fills each layer's ``forward``/``backward``
    (which must be None) and returns the input's second moment, the output's relative forward moment and the
    ops propagated approximately."""
    input_ms = _input_moments(g, example_inputs)
    known = _prefix_moments(g, example_inputs, layers)
    _patch_moments(g, layer_ms, example_inputs)
    prop = propagate(g, layer_ms, norm_ms, input_ms, _batch(example_inputs), known)
    q0 = next((v.q for v in input_ms.values() if v is not None and v.q > 0), 1.0)
    _attach(g, layers, prop, q0)
    out_f = [prop.forward.get(i) for i in g.output_ids]
    out_forward = (max(v for v in out_f if v is not None) / q0) if any(v is not None for v in out_f) else None
    spectral = [f"{lp.name}:spectral_norm" for lp in layers if any(p.note.startswith("spectral norm") or
                                                                    "; spectral norm" in p.note for p in lp.params)]
    return q0, out_forward, sorted(set(prop.approximate) | set(spectral))


def _norm_param_plans(name: str, m: nn.Module, o: _Options, zero: bool, seen: set[int],
                      used: set[str], g: Graph, traced: set[str | None]) -> list[ParamPlan]:
    """A norm's affine pair (the weight and bias arguments of its norm op) is reset (or kept with norm='keep');
    any other parameter of a norm module (a hand-written norm's per-channel scale, ConvNeXt-V2's GRN weight)
    keeps its value: its role says so."""
    out = []
    for local, p in m.named_parameters(recurse=False):
        full = f"{name}.{local}" if name else local
        if id(p) in seen:
            continue
        seen.add(id(p))
        pats = [x for x in o.exclude if fnmatch.fnmatchcase(full, x) or fnmatch.fnmatchcase(name, x)]
        used.update(pats)
        role = g.params.get(full)
        if role is None and isinstance(m, _TORCH_NORMS) and name in traced:
            # a torch norm on the meta fast path runs a shape-only forward: its affine pair by name
            role = ParamRole(full, "norm_weight" if local == "weight" else "norm_bias", type(m).__name__, name)
        reason = "empty: nothing to draw" if p.numel() == 0 else keep_reason(role, not p.requires_grad,
                                                                            o.frozen == "draw", False)
        if reason is None and role is not None and role.role not in ("norm_weight", "norm_bias"):
            reason = f"{role.describe()}: kept (not a norm's affine parameter)"
        if _norm_kind(m)[0] == "grn" and not pats:  # x + gamma * x * N(x) + beta: gamma is no norm's gain
            out.append(ParamPlan(full, name, tuple(p.shape), "keep", note=reason or "response scale kept (GRN is no norm)"))
        elif pats or o.norm == "keep" or reason:
            out.append(ParamPlan(full, name, tuple(p.shape), "keep",
                                 note="excluded" if pats else reason or "norm kept"))
        elif role.role == "norm_weight" and not zero:
            out.append(ParamPlan(full, name, tuple(p.shape), "ones", std=1.0))
        else:
            out.append(ParamPlan(full, name, tuple(p.shape), "zeros", std=0.0,
                                 note="zero-init residual branch end" if zero and local == "weight" else ""))
    return out


def _kept_params(model: nn.Module, g: Graph, o: _Options, seen: set[int]) -> list[ParamPlan]:
    """Every parameter no layer or norm planned keeps its value; the plan says why."""
    out = []
    for full, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        reason = _role_keep(g, full, p, o, False) or "not part of a traced layer: kept"
        out.append(ParamPlan(full, full.rpartition(".")[0], tuple(p.shape), "keep", note=reason))
    return out


def _is_child_of_layer(name: str, layers: set[str]) -> bool:
    # by prefixes of the dotted name (linear in the model's size, not modules x layers)
    parts = name.split(".")
    return any(".".join(parts[:i]) in layers for i in range(1, len(parts)))


def _layer_plan(scheme: str, mode: str, o: _Options, info: LayerInfo, seen: set[int], used: set[str],
                g: Graph) -> LayerPlan:
    act = info.activation
    params: list[ParamPlan] = []
    layer_excluded = [p for p in o.exclude if fnmatch.fnmatchcase(info.name, p)]
    used.update(layer_excluded)
    for local, owner, attr, w in _weight_params(info):
        full = _full(info, local)
        if id(w) in seen:
            params.append(ParamPlan(full, info.name, tuple(w.shape), "keep", note="tied: planned at first use"))
            continue
        seen.add(id(w))
        pm = [p for p in o.exclude if fnmatch.fnmatchcase(full, p)]
        used.update(pm)
        reason = _role_keep(g, full, w, o, True) if scheme != "current" else None
        reps = reparams(info.module)  # torch_default cannot run reset_parameters() on a re-parameterized layer
        rep = reps.get(local) or (next(iter(reps.values())) if reps and scheme == "torch_default" else None)
        if rep is not None and reason is not None and "computed from several parameters" in reason:
            reason = None  # weight_orig / weight_v under spectral or weight norm: drawn as the effective weight
        if layer_excluded or pm:
            params.append(ParamPlan(full, info.name, tuple(w.shape), "keep", note="excluded"))
            continue
        if scheme != "current" and not (w.dim() < 2 and (o.bias == "keep" or isinstance(info.module, nn.PReLU))):
            _check_dtype(full, info, w)  # before the keep reasons: a non-float weight is named, also a frozen one
        if reason is not None:
            params.append(ParamPlan(full, info.name, tuple(w.shape), "keep", note=reason))
            continue
        if rep is not None and scheme not in ("current",):
            params.append(_reparam_plan(scheme, mode, o, info, local, owner, attr, w, act, g, rep))
        elif scheme == "torch_default":
            params.append(_torch_default_param(info, local, owner, attr, w))
        elif scheme == "current":
            params.append(_current_param(info, local, owner, attr, w))
        else:
            params.append(_param_plan(scheme, mode, o, info, local, owner, attr, w, act, g.params.get(full)))
    primary = next((p for p in params if len(p.shape) >= 2 and p.method != "weight_norm_g"),
                   params[0] if params else None)
    return LayerPlan(
        name=info.name, type=info.type, shape=primary.shape if primary else (), activation=str(act),
        gain=primary.gain if primary else None, mode=mode if scheme in ("kaiming",) else scheme,
        method=primary.method if primary else "keep", std=primary.std if primary else None,
        fans=primary.fans if primary else None, params=params, norm=info.norm, residual_end=_branch_end(info),
        pixel_shuffle=info.pixel_shuffle, is_output=info.is_output, notes=list(info.notes),
    )


def _reparam_plan(scheme: str, mode: str, o: _Options, info: LayerInfo, local: str, owner: nn.Module, attr: str,
                  w: torch.Tensor, act: Activation, g: Graph, rep: Reparam) -> ParamPlan:
    """A spectral- or weight-normed weight (see :mod:`initwise._reparam`): the parameter underneath drawn with the
    effective weight's fans, weight norm's magnitude set to the norm of the drawn direction."""
    full = _full(info, local)
    if scheme == "torch_default":
        return ParamPlan(full, info.name, tuple(w.shape), "keep",
                         note=f"torch_default: {rep.kind} re-parameterizes {rep.weight}, its reset_parameters() "
                              f"cannot redraw {local}: kept")
    if local == rep.magnitude:
        return ParamPlan(full, info.name, tuple(w.shape), "weight_norm_g", note=rep.magnitude_note())
    role = g.params.get(full)
    role = dataclasses.replace(role, computed=False) if role is not None else None
    pp = _param_plan(scheme, mode, o, info, local, owner, attr, w, act, role)
    return dataclasses.replace(pp, note="; ".join(x for x in (pp.note, rep.note(tuple(w.shape))) if x))


def _branch_end(info: LayerInfo) -> bool:
    """The last layer of a residual branch: its output reaches a residual join, and it is not the model's output
    layer. A global-residual output conv (``return x + conv_last(h)``: MSRResNet, SRVGG, DnCNN, RIDNet, NAFNet's
    ending) also reaches a join, but zeroing or scaling it makes the output equal the skip and cuts the gradient to
    every layer before it, so residual scaling and zero-init never touch it (``output_scale`` is for that layer)."""
    return bool(info.residual_end) and not info.is_output


def _torch_default_param(info: LayerInfo, local: str, owner: nn.Module, attr: str, w: torch.Tensor) -> ParamPlan:
    """The std PyTorch's constructor gives: kaiming_uniform_(a=sqrt(5)) -> U(+-1/sqrt(torch_fan_in)) for weights and
    biases of Linear/Conv; MultiheadAttention: xavier_uniform_ in_proj, zero biases; RNNs U(+-1/sqrt(hidden))."""
    full = _full(info, local)
    m = info.module
    if not callable(getattr(m, "reset_parameters", None)) and not callable(getattr(m, "_reset_parameters", None)):
        return ParamPlan(full, info.name, tuple(w.shape), "keep",
                         note=f"torch_default: {type(m).__name__} has no reset_parameters(), current values kept")
    f = layer_fans(owner, attr) if w.dim() >= 2 else None
    if isinstance(m, nn.MultiheadAttention):
        if local in ("in_proj_bias", "out_proj.bias", "bias_k", "bias_v"):
            std = 0.0 if "bias_" not in local else math.sqrt(2.0 / (1 + w.shape[-1]))
        elif local == "out_proj.weight":
            std = 1.0 / math.sqrt(3.0 * w.shape[1])
        else:
            std = math.sqrt(2.0 / (w.shape[0] + w.shape[1]))  # xavier_uniform_ with torch's shape fans
    elif isinstance(m, nn.RNNBase):
        std = 1.0 / math.sqrt(3.0 * m.hidden_size)
    elif isinstance(m, (nn.Embedding, nn.EmbeddingBag)):
        std = 1.0
    elif w.dim() >= 2 and f is not None:
        std = 1.0 / math.sqrt(3.0 * f.torch_fan_in)
    else:
        rep = next(iter(reparams(owner).values()), None)
        if rep is not None:  # spectral/weight norm: torch's fan_in of the effective weight, without computing it
            shape = tuple(dict(owner.named_parameters())[rep.draw].shape)
            fi = math.prod(shape) // shape[0] if len(shape) >= 2 else None
        else:
            wt = getattr(owner, "weight", None)
            fi = layer_fans(owner, "weight").torch_fan_in if isinstance(wt, torch.Tensor) and wt.dim() >= 2 \
                and wt.numel() else 0 if isinstance(wt, torch.Tensor) and wt.dim() >= 2 else None
        # torch: bound = 1/sqrt(fan_in) if fan_in > 0 else 0 (a bias after an empty weight is drawn as zeros)
        std = 1.0 / math.sqrt(3.0 * fi) if fi else 0.0 if fi == 0 else None
    return ParamPlan(full, info.name, tuple(w.shape), "torch_default", f, f.torch_fan_in if f else None,
                     math.sqrt(1.0 / 3.0) if w.dim() >= 2 else None, 1.0, std, "the module's reset_parameters()")


def _current_param(info: LayerInfo, local: str, owner: nn.Module, attr: str, w: torch.Tensor) -> ParamPlan:
    """The weights as they are now: nothing changes, std is their measured root mean square."""
    full = _full(info, local)
    f = layer_fans(owner, attr) if w.dim() >= 2 and not w.is_meta and w.numel() else None
    # per-row float32 norms summed in float64: the RMS to ~1e-8, without a float64 copy of the weight (18x faster)
    d = w.detach()
    d = d if d.is_floating_point() or d.is_complex() else d.double()  # integer weights: measured, never drawn
    rms = float(torch.linalg.vector_norm(d.reshape(d.shape[0] if d.dim() and d.numel() else 1, -1), dim=1).double().square().sum()
                .div(max(d.numel(), 1)).sqrt()) if not w.is_meta else None
    return ParamPlan(full, info.name, tuple(w.shape), "keep", f, None, None, 1.0, rms, "current weights")


def _moments_of(info: LayerInfo, lp: LayerPlan, g: Graph | None = None) -> LayerMoments:
    """Fans and weight/bias second moments of one layer for the propagation, from the op that consumed its
    weight where the trace saw it (custom and functional layers are then modelled like nn.Conv2d), else from
    its class. A standardized weight contributes the second moment the op actually used (its scale does not
    depend on the draw); a weight nobody draws, its current values; with no values (meta), the layer is opaque."""
    primary = next((p for p in lp.params if len(p.shape) >= 2 and p.method != "weight_norm_g"), None)
    m = info.module
    role = g.params.get(primary.param) if g is not None and primary is not None else None
    functional = role is not None and role.role in ("weight", "table") and role.fans is not None and not role.computed
    if isinstance(m, nn.MultiheadAttention) and primary is not None:
        return _attention_moments(m, lp)
    if primary is None or 0 in primary.shape or isinstance(m, (nn.MultiheadAttention, nn.RNNBase)) or not (
            isinstance(m, (*_AFFINE, nn.Embedding, nn.EmbeddingBag)) or functional):
        return LayerMoments(1.0, 1.0, 1.0, kind="opaque")
    local = primary.param[len(info.owner_name) + 1:] if info.owner_name else primary.param
    w = dict(m.named_parameters(recurse=False)).get(local)
    rep = reparams(m).get(local)
    if rep is not None and rep.kind == "spectral_norm":
        w_ms = effective_ms(primary.shape, rep.dim)  # divided by its largest singular value: approximate
    elif role is not None and role.standardized and role.effective_ms is not None:
        w_ms = role.effective_ms
    elif primary.std is not None and not (role is not None and role.standardized):
        w_ms = primary.std ** 2
    elif w is None or w.is_meta or not w.is_floating_point():
        return LayerMoments(1.0, 1.0, 1.0, kind="opaque")
    else:
        w_ms = float(w.detach().double().pow(2).mean())
    if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) or role is not None and role.role == "table":
        return LayerMoments(1.0, 1.0, w_ms, kind="embedding")
    bias = next((p for p in lp.params if p.param.endswith("bias") or len(p.shape) < 2), None)
    b_ms = 0.0
    if bias is not None:
        b = dict(m.named_parameters(recurse=False)).get(bias.param[len(info.owner_name) + 1:] if info.owner_name
                                                         else bias.param)
        if bias.std is not None:
            b_ms = bias.std ** 2
        elif b is not None and not b.is_meta and b.is_floating_point():
            b_ms = float(b.detach().double().pow(2).mean())
    f = role.fans if functional else primary.fans if primary.fans is not None else role.fans if (
        role is not None and role.fans is not None) else layer_fans(m, "weight")
    t_in, t_out = _taps_of(info, m, role if functional else None, primary.shape, g)
    transposed = bool(role.transposed) if functional else bool(getattr(m, "transposed", False))
    per_channel = len(primary.shape) >= 3 and (primary.shape[0 if transposed else 1] == 1)
    spread = _row_spread(w, primary.method, f.fan_in * t_in, transposed)
    centered = role is not None and role.standardized and len(primary.shape) >= 2 and not transposed
    return LayerMoments(f.fan_in, f.fan_out, w_ms, b_ms, in_taps=t_in, out_taps=t_out, row_spread=spread,
                        per_channel=per_channel, centered=centered, channels=int(primary.shape[1]),
                        taps=max(int(round(math.prod(primary.shape[2:]) * t_in)), 1))


# kurtosis E[w^4] / E[w^2]^2 of the drawn distributions: the squared norm of a row of f entries has relative
# variance (kurtosis - 1) / f; truncated normal at +-2 std of the underlying normal: 2.36
_KURTOSIS = {"normal": 3.0, "uniform": 1.8, "torch_default": 1.8, "truncated_normal": 2.36, "icnr": 3.0}


def _row_spread(w: torch.Tensor | None, method: str, fan: float, transposed: bool) -> float:
    """``E_c[s / s_c]`` over the output channels' squared row norms ``s_c``: from the weights when they are kept
    (scheme "current"), else for ``fan`` independent draws of the scheme's distribution, ``1 / (1 - cv^2)`` with
    ``cv^2 = (kurtosis - 1) / fan`` (exact for Gaussian rows: the inverse of a chi-square's mean, ``f / (f - 2)``).
    Orthogonal and identity rows have equal norms (1)."""
    if method == "keep":
        if w is None or w.is_meta or not w.is_floating_point() or w.dim() < 2 or w.numel() == 0:
            return 1.0
        d = w.detach()
        rows = (d.transpose(0, 1) if transposed else d).reshape(d.shape[1] if transposed else d.shape[0], -1)
        s = torch.linalg.vector_norm(rows, dim=1).double().square()  # float32 rows: no float64 copy of the weight
        if not bool((s > 0).all()):
            return 1.0  # zero rows (a zero-init branch end): their channels carry no variance to spread
        return float(s.mean() * (1.0 / s).mean())
    k = _KURTOSIS.get(method)
    if k is None or fan <= 0:
        return 1.0
    cv2 = (k - 1.0) / fan
    return 1.0 / (1.0 - cv2) if cv2 < 0.5 else 2.0


def _taps_of(info: LayerInfo, m: nn.Module, role: Any, shape: tuple[int, ...], g: Graph | None) -> tuple[float, float]:
    """The fraction of a zero-padded convolution's taps that read the input at the example's size (its first
    call), forward and backward (:func:`initwise._taps.tap_factors`); 1.0 for any other layer."""
    if g is None or not info.nodes or len(shape) < 3:
        return 1.0, 1.0
    if isinstance(m, nn.modules.conv._ConvNd) and tuple(m.weight.shape) == tuple(shape):
        stride, dilation, transposed, module = m.stride, m.dilation, m.transposed, m
    elif role is not None and "conv" in role.op:
        stride, dilation, transposed = role.stride, role.dilation, role.transposed
        module = None  # padding from the shapes
    else:
        return 1.0, 1.0
    n = g.nodes[info.nodes[0]]
    if not n.inputs:
        return 1.0, 1.0
    return tap_factors(module, tuple(shape[2:]), g.nodes[n.inputs[0]].shape, n.shape, stride, dilation, transposed)


def _attention_moments(m: nn.MultiheadAttention, lp: LayerPlan) -> LayerMoments:
    """Self-attention of ``nn.MultiheadAttention`` with packed projections (:class:`initwise._rules_join.
    AttentionMoments`): each projection's ``E * E[w^2]`` from the plan's std, or the weights as they are."""
    from ._rules_join import AttentionMoments

    e = m.embed_dim
    w = m.in_proj_weight
    if w is None or w.is_meta or m.bias_k is not None or not m._qkv_same_embed_dim:
        return LayerMoments(1.0, 1.0, 1.0, kind="opaque")
    stds = {p.param.rsplit(".", 1)[-1] if "out_proj" not in p.param else "out_" + p.param.rsplit(".", 1)[-1]: p.std
            for p in lp.params}

    def ms(t: torch.Tensor | None, std: float | None) -> list[float]:
        if std is not None:
            return [std * std] * (3 if t is not None and t.shape[0] == 3 * e else 1)
        if t is None:
            return [0.0, 0.0, 0.0]
        d = t.detach().double()
        return [float(c.square().mean()) for c in d.chunk(3)] if d.shape[0] == 3 * e else [float(d.square().mean())]

    wq, wk, wv = ms(w, stds.get("in_proj_weight"))
    bq, bk, bv = ms(m.in_proj_bias, stds.get("in_proj_bias")) if m.in_proj_bias is not None else (0.0, 0.0, 0.0)
    (wo,) = ms(m.out_proj.weight, stds.get("out_weight"))
    (bo,) = ms(m.out_proj.bias, stds.get("out_bias")) if m.out_proj.bias is not None else (0.0,)
    a = AttentionMoments(e, m.num_heads, 1 if m.batch_first else 0, e * wq, e * wk, e * wv, e * wo, bq, bk, bv, bo)
    return LayerMoments(e, e, wv, bo, kind="attention", attention=a)


def _norm_modules(model: nn.Module, g: Graph) -> dict[str, nn.Module]:
    names = {n.module for n in g.nodes if n.kind == "norm" and n.module}
    return {n: m for n, m in model.named_modules() if n in names}


def _norm_kind(m: nn.Module) -> tuple[str, dict[str, Any]]:
    """Which statistics a normalization module uses (see :class:`initwise._rules_layer.NormMoments`)."""
    name = type(m).__name__
    if "GlobalResponse" in name or name in ("GRN", "GRNwithNHWC"):
        return "grn", {}
    if isinstance(m, nn.modules.instancenorm._InstanceNorm):
        return ("running" if not m.training and m.track_running_stats else "instance"), {}
    if isinstance(m, nn.modules.batchnorm._NormBase):
        stats = m.track_running_stats and m.running_mean is not None and m.running_var is not None
        return ("running" if stats and not m.training else "batch"), {}
    if isinstance(m, nn.GroupNorm):
        return "group", {"groups": int(m.num_groups), "over_positions": True}
    if isinstance(m, nn.LayerNorm):
        return "layer", {"over_positions": len(m.normalized_shape) > 1,
                         "normalized": int(math.prod(m.normalized_shape))}
    if hasattr(nn, "RMSNorm") and isinstance(m, nn.RMSNorm):
        return "rms", {}
    for key, kind in (("LayerNorm", "layer"), ("GroupNorm", "group"), ("BatchNorm", "batch"),
                      ("InstanceNorm", "instance"), ("RMSNorm", "rms")):
        if key in name:
            extra = {"groups": int(getattr(m, "num_groups", 1) or 1), "over_positions": True} if kind == "group" else {}
            return kind, extra
    return "generic", {}


def _ms(t: Any) -> tuple[float, float]:
    """(mean square, mean) of a tensor, (1, 1) for None."""
    if not isinstance(t, torch.Tensor) or t.numel() == 0 or t.is_meta:
        return 1.0, 1.0
    x = t.detach().double()
    return float(x.square().mean()), float(x.mean())


def _norm_ms(m: nn.Module, o: _Options, zero: bool) -> NormMoments:
    kind, extra = _norm_kind(m)
    w = getattr(m, "weight", None)
    b = getattr(m, "bias", None)
    eps = getattr(m, "eps", 1e-5)
    eps = float(eps) if isinstance(eps, (int, float)) else 1e-5
    keep = o.norm == "keep" or kind == "grn"  # GRN's scale is a response gain, not a norm's: kept (see plan)
    if zero:
        gm = gmean = bm = bmean = 0.0
    elif keep:
        gm, gmean = _ms(w) if isinstance(w, torch.Tensor) else (1.0, 1.0)
        bm, bmean = _ms(b) if isinstance(b, torch.Tensor) else (0.0, 0.0)
    else:  # reset: weight 1, bias 0
        gm, gmean, bm, bmean = 1.0, 1.0, 0.0, 0.0
    if kind == "running":
        a, c = _running_affine(m, zero, keep, eps)
        return NormMoments("running", eps, gm, gmean, bm, bmean, *a, *c)
    return NormMoments(kind, eps, gm, gmean, bm, bmean, **extra)


def _running_affine(m: nn.Module, zero: bool, keep: bool, eps: float) -> tuple[tuple[float, float, float],
                                                                              tuple[float, float]]:
    """``((E[a^2], E[b^2], E[a b]), (E[a], E[b]))`` of the eval-mode map ``a_c x + b_c`` from the running stats."""
    rm = m.running_mean.detach().double()
    rv = m.running_var.detach().double()
    ones = torch.ones_like(rm)
    w = m.weight.detach().double() if keep and isinstance(m.weight, torch.Tensor) else ones
    b = m.bias.detach().double() if keep and isinstance(m.bias, torch.Tensor) else torch.zeros_like(rm)
    if zero:
        w, b = torch.zeros_like(rm), torch.zeros_like(rm)
    a = w / torch.sqrt(rv + eps)
    c = b - a * rm
    return ((float(a.square().mean()), float(c.square().mean()), float((a * c).mean())),
            (float(a.mean()), float(c.mean())))


def _input_moments(g: Graph, example_inputs: Any) -> dict[int, Sig | None]:
    tensors = _nested_tensors(example_inputs)
    out: dict[int, Sig | None] = {}
    for nid, t in zip(g.input_ids, tensors):
        # a meta example has no values: its moments are unknown (None, as for integer inputs: unit)
        out[nid] = sig_of(t) if t.is_floating_point() and t.numel() and not t.is_meta else None
    return out


_PURE_FORWARD = {nn.Conv1d.forward, nn.Conv2d.forward, nn.Conv3d.forward, nn.Linear.forward}
_SAME = frozenset(("to", "float", "double", "contiguous", "clone", "detach", "Identity", "type_as", "view",
                   "reshape", "identity"))
_PREFIX_LIMIT = 1 << 24  # elements: a prefix is evaluated on the example only while it is this small


def _prefix_moments(g: Graph, example_inputs: Any, layers: list[LayerPlan]) -> dict[int, Sig]:
    """Exact moments of what the model computes from the example before its first drawn layer: scalar scales,
    value-preserving views, shifts by a constant the trace knows (``(x - self.mean) * 255``) and layers whose
    weights no scheme draws (EDSR's and RCAN's ``MeanShift``, a frozen stem), evaluated on the example itself,
    so that a mean subtracted by a constant layer is seen as subtracted (the rules treat a layer's weights as zero-mean and independent of the signal, which a mean shift is not).
    Only torch's own Conv/Linear forwards are evaluated (pure functions of the weights), without hooks."""
    tensors = _nested_tensors(example_inputs)
    values: dict[int, torch.Tensor] = {}
    for nid, t in zip(g.input_ids, tensors):
        if t.is_floating_point() and not t.is_meta and t.numel() <= _PREFIX_LIMIT:
            values[nid] = t.detach()
    if not values:
        return {}
    plans = {lp.name: lp for lp in layers}
    modules = {i.name: i.module for i in g.layers}
    out: dict[int, Sig] = {}
    with torch.no_grad():
        for n in g.nodes:
            if n.kind == "input" or len(n.inputs) != 1 or n.inputs[0] not in values:
                continue
            x = values[n.inputs[0]]
            y = None
            if n.kind == "scale" and n.factor is not None and n.op in ("mul", "div", "neg", "alpha"):
                y = x * n.factor  # a scalar factor (a tensor factor is summarized by its RMS: not exact)
            elif n.kind == "pass" and n.op in _SAME and tuple(n.shape[1:]) == tuple(x.shape[1:]):
                y = x
            elif n.kind == "shift" and n.const is not None and n.op in ("add", "sub", "rsub"):
                c = torch.tensor(n.const[1], dtype=torch.float64).reshape(n.const[0]).to(x.dtype)
                y = x + c if n.op == "add" else x - c if n.op == "sub" else c - x
            elif n.kind == "layer" and n.module in plans and n.module in modules:
                m, lp = modules[n.module], plans[n.module]
                if type(m).forward in _PURE_FORWARD and lp.params and all(p.method == "keep" for p in lp.params) \
                        and not any(t.is_meta for t in m.parameters(recurse=False)):
                    try:
                        y = type(m).forward(m, x)
                    except RuntimeError:  # torch cannot run it (a conv with zero output channels): not evaluated
                        y = None
            if y is None or tuple(y.shape[1:]) != tuple(n.shape[1:]):  # the graph may be traced on one sample
                continue
            values[n.id] = y
            if n.kind in ("layer", "shift"):
                out[n.id] = sig_of(y)
    return out


def _patch_moments(g: Graph, layer_ms: dict[str, LayerMoments], example_inputs: Any) -> None:
    """A weight-standardized convolution on the example itself (NF-Nets' stem): ``E[mean_i x_i^2 - xbar^2]`` over
    its receptive fields, measured (smooth images keep most of their power in a patch's mean, which the zero-mean
    rows remove). Fills ``LayerMoments.patch_ms`` in place."""
    import torch.nn.functional as F

    tensors = dict(zip(g.input_ids, _nested_tensors(example_inputs)))
    for info in g.layers:
        lm = layer_ms.get(info.name)
        m = info.module
        if lm is None or not lm.centered or not info.nodes or not isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            continue
        n = g.nodes[info.nodes[0]]
        x = tensors.get(n.inputs[0]) if n.inputs else None
        sd = x.dim() - 2 if x is not None else 0
        if x is None or x.is_meta or not x.is_floating_point() or sd not in (1, 2, 3) or m.groups != 1 \
                or any(d != 1 for d in m.dilation) or isinstance(m.padding, str) or m.padding_mode != "zeros" \
                or x.numel() > _PREFIX_LIMIT:
            continue
        pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[sd - 1]
        with torch.no_grad():
            xd = x.detach().double()
            kw = dict(kernel_size=m.kernel_size, stride=m.stride, padding=m.padding, count_include_pad=True)
            mean = pool(xd.mean(1, keepdim=True), **kw)
            power = pool(xd.square().mean(1, keepdim=True), **kw)
            layer_ms[info.name] = dataclasses.replace(lm, patch_ms=float((power - mean.square()).mean()))


def _batch(example_inputs: Any) -> int | None:
    """The batch size of the example (the graph may have been traced on a one-sample slice of it)."""
    ts = [t for t in _nested_tensors(example_inputs) if t.dim() >= 1]
    return int(ts[0].shape[0]) if ts else None


def _attach(g: Graph, layers: list[LayerPlan], prop, q0: float) -> None:
    by_name = {lp.name: lp for lp in layers}
    for n in g.nodes:
        if n.kind != "layer" or n.module not in by_name:
            continue
        lp = by_name[n.module]
        if lp.forward is None:  # first call of a reused layer
            f = prop.forward.get(n.id)
            lp.forward = f / q0 if f is not None and q0 else None
            lp.backward = prop.backward.get(n.id)
            lp.forward_bound = prop.forward_bound.get(n.id, 1.0)
            lp.backward_bound = prop.backward_bound.get(n.id, 1.0)
            lp.backward_removed = prop.backward_removed.get(n.id, 1.0)
