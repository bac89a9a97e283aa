"""Whole-model plans: per parameter, what an initialization scheme does, and its analytic forward/backward effect.

``plan(model, example, scheme, mode)`` traces the model once (which activation, norm, residual join and pixel
shuffle follows every layer), decides each weight's initializer, std and gain, and propagates second moments
through the traced graph (:mod:`initwise._propagate`). Nothing is changed until :meth:`Plan.apply` (or
:func:`initwise.init_`).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import warnings
from typing import Any

import torch
from torch import nn

from ._graph import Graph, LayerInfo, trace
from ._kept_kernels import kernel_kind
from ._meta_pass import TORCH_NORMS
from ._row_norms import shared as shared_rows
from ._plan_example import param_consts
from ._plan_moments import (_input_moments, _moments_of,  # noqa: F401
                            propagated, propagation_inputs)  # (propagated: importable from here)
from ._plan_norms import _norm_kind, _norm_modules, _norm_ms
from ._plan_options import SCHEMES, _Options, _check_options, parse_scheme
from ._plan_params import (_branch_end, _check_dtype, _current_param, _full, _param_plan, _reparam_plan, _role_keep,
                           _torch_default_param, _weight_params)
from ._plan_types import LayerPlan, ParamPlan, Plan
from ._propagate import LayerMoments
from ._reparam import reparams
from ._roles import ParamRole, keep_reason

__all__ = ["Plan", "LayerPlan", "ParamPlan", "plan", "SCHEMES", "parse_scheme"]


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
    inputs = propagation_inputs(g, layers, layer_ms, example_inputs, param_consts(model, g))
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
