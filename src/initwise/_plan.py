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
from typing import Any

import torch
from torch import nn

from ._activations import Activation, resolve_activation
from ._fans import fans as layer_fans
from ._graph import Graph, LayerInfo, trace
from ._kept_kernels import kernel_kind
from ._meta_pass import TORCH_NORMS
from ._row_norms import row_ms, sharable
from ._row_norms import shared as shared_rows
from ._plan_moments import (_input_moments, _moments_of, _norm_kind, _norm_modules, _norm_ms,  # noqa: F401
                            propagated, propagation_inputs)  # (propagated: importable from here)
from ._plan_options import SCHEMES, _DISTRIBUTIONS, _Options, _check_options, _fan_of, _gain_for, parse_scheme
from ._plan_types import LayerPlan, ParamPlan, Plan
from ._propagate import LayerMoments
from ._reparam import Reparam, reparams
from ._roles import ParamRole, keep_reason

__all__ = ["Plan", "LayerPlan", "ParamPlan", "plan", "SCHEMES", "parse_scheme"]

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _identity_ok(module: nn.Module, w: torch.Tensor) -> bool:
    if w.dim() < 2:
        return False
    groups = int(getattr(module, "groups", 1) or 1)
    return w.shape[0] // groups == w.shape[1]


def _weight_params(layer: LayerInfo, reps: dict[str, Reparam] | None = None) -> list[tuple[str, nn.Module, str,
                                                                                         torch.Tensor]]:
    """(local dotted name, owning module, attribute name, tensor) of every parameter a layer owns (``reps``: the
    layer module's :func:`reparams`, when the caller has them)."""
    m = layer.module
    out = [(n, m, n, p) for n, p in m.named_parameters(recurse=False) if not layer.params or n in layer.params]
    rp = reparams(m) if reps is None else reps  # torch.nn.utils.parametrizations: the parameters live in
    if rp and not layer.params:  # m.parametrizations.<name>
        out += [(n, m.get_submodule(n.rpartition(".")[0]), n.rpartition(".")[2], p) for n, p in m.named_parameters()
                if n.startswith("parametrizations.") and n in rp]
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
        structured: ``"draw"`` (default) or ``"keep"``: weights the model's own init set to a structured kernel
            (bilinear upsampling, a scaled identity, a kernel of few distinct values: ``_kept_kernels``) keep their
            values, as LapSRN's bilinear transposed convs or a mean-shift conv's identity should.
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
    # the planning itself reads shapes and weights only: no torch-function mode needs to see those calls (under a
    # guard, as in diagnose and advise, each would pass the guard's copy-on-write mode: ~4000 calls for a ResNet-50)
    with torch._C.DisableTorchFunction(), shared_rows():
        return _plan_graph(model, example_inputs, scheme, mode, o, options, g)


def _plan_graph(model: nn.Module, example_inputs: Any, scheme: str, mode: str, o: _Options, options: dict,
                g: Graph) -> Plan:
    """:func:`plan` after the trace."""
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
        if scheme != "current" and _moments_deferrable(info, lp, g):
            # fans and planned stds only, no parameter value: computed with the propagation, when a prediction or
            # a layer's forward_gain/backward_gain is first read (init_ reads none; Plan._resolve)
            del lp.forward_gain, lp.backward_gain
            continue
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
                          stacklevel=3)
    # what the propagation reads from the example and the model is read now; the propagation itself runs when a
    # prediction is first read (init_ never reads one)
    inputs = propagation_inputs(g, layers, layer_ms, example_inputs)
    # modules none of whose parameters the example's forward used (a functional F.linear(x, self.qkv.weight)
    # uses qkv without calling it)
    canonical = {id(p): k for k, p in model.named_parameters()}
    untouched = [n for n, m in model.named_modules() if n not in touched and n not in norms
                 and any(p is not None for p in m._parameters.values()) and not _is_child_of_layer(n, touched)
                 and not any(canonical[id(p)] in g.params for p in m.parameters(recurse=False))]
    reads_values = scheme == "current" or o.norm == "keep" or o.bias == "keep" or bool(o.exclude) \
        or o.structured == "keep" or any(
        pp.method == "keep" for lp in layers for pp in lp.params)
    p = Plan(scheme, mode, dict(options), layers, g, 1.0, None, untouched, [], norm_params, kept_params,
             _moments=(layer_ms, norm_ms, reads_values))
    p._defer((layer_ms, norm_ms, inputs))
    return p


def _moments_deferrable(info: LayerInfo, lp: LayerPlan, g: Graph) -> bool:
    """Whether :func:`initwise._plan_moments._moments_of` reads nothing but the graph, the layer module's
    hyper-parameters and the plan's stds for this layer (so computing it later gives the same answer even after the
    parameters were drawn or materialized): every parameter drawn with a planned std, no standardized weight (its
    moments and the example's patch statistics are read now), no ``nn.MultiheadAttention`` (it reads whether its
    weights are on the meta device)."""
    if isinstance(info.module, nn.MultiheadAttention):
        return False
    for pp in lp.params:
        if pp.std is None or pp.method in ("keep", "weight_norm_g", "torch_default"):
            return False
        role = g.params.get(pp.param)
        if role is not None and role.standardized:
            return False
    return True


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
        if role is None and isinstance(m, TORCH_NORMS) and name in traced:
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
    reps = reparams(info.module)  # torch_default cannot run reset_parameters() on a re-parameterized layer
    for local, owner, attr, w in _weight_params(info, reps):
        full = _full(info, local)
        if id(w) in seen:
            params.append(ParamPlan(full, info.name, tuple(w.shape), "keep", note="tied: planned at first use"))
            continue
        seen.add(id(w))
        pm = [p for p in o.exclude if fnmatch.fnmatchcase(full, p)]
        used.update(pm)
        reason = _role_keep(g, full, w, o, True) if scheme != "current" else None
        rep = reps.get(local) or (next(iter(reps.values())) if reps and scheme == "torch_default" else None)
        if rep is not None and reason is not None and "computed from several parameters" in reason:
            reason = None  # weight_orig / weight_v under spectral or weight norm: drawn as the effective weight
        if layer_excluded or pm:
            params.append(ParamPlan(full, info.name, tuple(w.shape), "keep", note="excluded"))
            continue
        if scheme != "current" and not (w.dim() < 2 and (o.bias == "keep" or isinstance(info.module, nn.PReLU))):
            _check_dtype(full, info, w)  # before the keep reasons: a non-float weight is named, also a frozen one
        if reason is None and o.structured == "keep" and scheme not in ("current", "torch_default") and w.dim() >= 2:
            kind = kernel_kind(w)
            reason = None if kind is None else f"structured kernel kept: {kind}"
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
    if sharable(w):  # the rows' norms are read again for their spread (and by diagnose): computed once
        rms = float(row_ms(w).sum().div(w.numel()).sqrt())
    else:
        rms = float(torch.linalg.vector_norm(d.reshape(d.shape[0] if d.dim() and d.numel() else 1, -1), dim=1)
                    .double().square().sum().div(max(d.numel(), 1)).sqrt()) if not w.is_meta else None
    return ParamPlan(full, info.name, tuple(w.shape), "keep", f, None, None, 1.0, rms, "current weights")


