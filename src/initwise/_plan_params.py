"""One parameter's plan: which initializer draws it, with which fans, gain and std, or why it keeps its value; and
the checks that name the parameter when a plan cannot be drawn (a std that overflows its dtype, a non-float
weight). :mod:`initwise._plan` assembles these into layers and the whole model's plan.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from ._activations import Activation, resolve_activation
from ._fans import fans as layer_fans
from ._graph import Graph, LayerInfo
from ._plan_options import _DISTRIBUTIONS, _Options, _fan_of, _gain_for
from ._plan_types import ParamPlan
from ._reparam import Reparam, reparams
from ._roles import ParamRole, keep_reason
from ._row_norms import row_ms, sharable


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
