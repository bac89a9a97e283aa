"""Layer-aware fans: how many inputs meet one output (fan_in) and how many outputs one input reaches (fan_out).

PyTorch computes fans from the weight's shape alone (``size(1) * receptive_field`` and
``size(0) * receptive_field``). That is right for Linear and for plain stride-1 convolutions, and wrong for:

- ConvTranspose: the weight is stored ``(in, out/groups, *k)``, so the shape-only fans are swapped;
- grouped and depthwise Conv: each output channel meets ``in/groups`` inputs and each input feeds ``out/groups``
  outputs; the shape-only fan_out is ``groups`` times too large;
- strides: a Conv with stride s reaches ``k/s`` output positions per input position along each axis, and a
  ConvTranspose with stride s gathers ``k/s`` input positions per output position; the shape ignores this;
- packed weights: MultiheadAttention's ``in_proj_weight (3E, E)`` and recurrent ``weight_ih (gates*H, in)``
  hold several independent blocks, each with fan_out E (or H), not 3E (or gates*H).

The *effective* fans (``fan_in``, ``fan_out``) are what a variance computation needs: ``Var(y) = fan_in *
Var(w) * E[x^2]`` forward and ``Var(dx) = fan_out * Var(w) * Var(dy)`` backward, averaged over positions away
from the borders. The *nominal* fans count the kernel without the stride, and ``torch_fan_in/out`` is what
``torch.nn.init`` would use.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.parameter import UninitializedParameter

__all__ = ["Fans", "fans", "tensor_fans"]


@dataclass(frozen=True)
class Fans:
    """Fans of one weight (per block for packed weights).

    Attributes:
        fan_in: effective fan-in, used by the initializers by default.
        fan_out: effective fan-out, used by the initializers by default.
        nominal_fan_in: fan-in counting every kernel tap (stride ignored).
        nominal_fan_out: fan-out counting every kernel tap (stride ignored).
        torch_fan_in: what ``torch.nn.init`` computes from the shape.
        torch_fan_out: what ``torch.nn.init`` computes from the shape.
        rule: how the fans were derived, in words.
        blocks: independent blocks packed along dim 0 (3 for in_proj_weight, 4 for LSTM gates).
    """

    fan_in: float
    fan_out: float
    nominal_fan_in: float
    nominal_fan_out: float
    torch_fan_in: float
    torch_fan_out: float
    rule: str
    blocks: int = 1

    @property
    def fan_avg(self) -> float:
        """``(fan_in + fan_out) / 2`` (Glorot & Bengio, 2010)."""
        return (self.fan_in + self.fan_out) / 2

    def get(self, mode: str) -> float:
        """The fan for a mode: ``"fan_in"``, ``"fan_out"`` or ``"fan_avg"``."""
        if mode == "fan_in":
            return self.fan_in
        if mode == "fan_out":
            return self.fan_out
        if mode == "fan_avg":
            return self.fan_avg
        raise ValueError(f"unknown mode {mode!r}; valid: fan_in, fan_out, fan_avg")


def _torch_shape_fans(shape: Sequence[int]) -> tuple[float, float]:
    rf = math.prod(shape[2:])
    return float(shape[1] * rf), float(shape[0] * rf)


def _check_tensor(t: torch.Tensor, what: str) -> None:
    if isinstance(t, UninitializedParameter):
        raise ValueError(f"{what} is an uninitialized (lazy) parameter; run a forward pass to materialize it first")
    if t.dim() < 2:
        raise ValueError(
            f"{what} has shape {tuple(t.shape)}: fans need at least 2 dimensions (out, in, ...); "
            "pass fans= explicitly for 0-d and 1-d tensors"
        )
    if t.numel() == 0:
        raise ValueError(f"{what} has zero elements (shape {tuple(t.shape)}): it has no fans")


def _tuple(v: int | Sequence[int], n: int, what: str) -> tuple[int, ...]:
    out = tuple(v) if isinstance(v, Sequence) else (v,) * n
    if len(out) != n or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in out):
        raise ValueError(f"{what} must be a positive int or {n} positive ints, got {v!r}")
    return out


def _axis(axis: int, nd: int, what: str, t: torch.Tensor) -> int:
    """``axis`` in ``[-nd, nd)`` as a non-negative index; an out-of-range axis is an error, never wrapped."""
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise TypeError(f"{what} must be an int, got {type(axis).__name__}")
    if not -nd <= axis < nd:
        raise ValueError(f"{what}={axis} is out of range for a {nd}-d tensor of shape {tuple(t.shape)} "
                         f"(valid: {-nd}..{nd - 1})")
    return axis % nd


def tensor_fans(
    t: torch.Tensor,
    in_axis: int = 1,
    out_axis: int = 0,
    groups: int = 1,
    stride: int | Sequence[int] = 1,
    transposed: bool = False,
) -> Fans:
    """Fans of a raw weight tensor with the given layout.

    Every axis other than ``in_axis`` and ``out_axis`` is a kernel (receptive-field) axis. With ``groups``, the
    leading channel axis holds all channels and the other one holds one group's (torch's layout: Conv
    ``(out, in/g, *k)``, ConvTranspose ``(in, out/g, *k)`` with ``transposed=True``). ``stride`` divides each
    kernel axis: it reduces fan_out of a convolution and fan_in of a transposed one.

    Example:
        >>> tensor_fans(torch.empty(64, 1, 3, 3), groups=64).fan_out   # depthwise 3x3
        9.0
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"tensor_fans() expects a torch.Tensor, got {type(t).__name__}; use fans() for modules")
    _check_tensor(t, "tensor")
    nd = t.dim()
    ia = _axis(in_axis, nd, "in_axis", t)
    oa = _axis(out_axis, nd, "out_axis", t)
    if ia == oa:
        raise ValueError(f"in_axis and out_axis must differ, both are {in_axis} for shape {tuple(t.shape)}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    if not isinstance(transposed, bool):
        raise TypeError(f"transposed must be a bool, got {type(transposed).__name__}")
    k_axes = [a for a in range(nd) if a not in (ia, oa)]
    kernel = [t.shape[a] for a in k_axes]
    strides = _tuple(stride, len(kernel), "stride") if kernel else ()
    c_in, c_out = t.shape[ia], t.shape[oa]
    full = ia if transposed else oa  # the axis that holds every channel of all groups
    if t.shape[full] % groups:
        raise ValueError(f"groups={groups} does not divide axis {full} of shape {tuple(t.shape)}")
    if transposed:
        c_in //= groups
    else:
        c_out //= groups
    rf = math.prod(kernel)
    rf_strided = math.prod(k / s for k, s in zip(kernel, strides))
    nominal_in, nominal_out = float(c_in * rf), float(c_out * rf)
    if transposed:
        eff_in, eff_out = c_in * rf_strided, nominal_out
    else:
        eff_in, eff_out = nominal_in, c_out * rf_strided
    tfi, tfo = _torch_shape_fans(t.shape) if nd >= 2 else (float(c_in), float(c_out))
    rule = f"tensor layout in_axis={in_axis} out_axis={out_axis} groups={groups} stride={tuple(strides)}"
    return Fans(float(eff_in), float(eff_out), nominal_in, nominal_out, tfi, tfo, rule + (" (transposed)" if transposed else ""))


_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONVT = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_RNN_GATES = {nn.LSTM: 4, nn.GRU: 3, nn.RNN: 1}
_CELL_GATES = {nn.LSTMCell: 4, nn.GRUCell: 3, nn.RNNCell: 1}


def _packed(w: torch.Tensor, blocks: int, rule: str) -> Fans:
    rows, cols = w.shape
    if rows % blocks:
        raise ValueError(f"weight of shape {tuple(w.shape)} does not split into {blocks} blocks along dim 0")
    per = rows // blocks
    tfi, tfo = _torch_shape_fans(w.shape)
    return Fans(float(cols), float(per), float(cols), float(per), tfi, tfo, rule, blocks)


def fans(module: nn.Module, name: str = "weight") -> Fans:
    """Effective and nominal fans of ``module``'s parameter ``name``, from the layer, not the tensor shape.

    Rules: Linear ``(out, in)``; Bilinear ``(out, in1, in2)``: fan_in ``in1*in2``, fan_out ``out*in2`` (for the
    gradient of input 1, with unit-variance input 2); Conv ``(out, in/g, *k)``: fan_in ``in/g*prod(k)``,
    fan_out ``out/g*prod(k/s)``; ConvTranspose ``(in, out/g, *k)``: fan_in ``in/g*prod(k/s)``, fan_out
    ``out/g*prod(k)``; MultiheadAttention ``in_proj_weight (3E, E)`` per block (fan_out E), ``q/k/v_proj_weight``
    separately; RNN/LSTM/GRU ``weight_ih_l*``/``weight_hh_l*`` and their cells' ``weight_ih``/``weight_hh``
    per gate; Embedding ``(num, dim)``: fan_in 1 and fan_out 1 (an output is one looked-up row, so ``Var(y) = Var(w)``; fan_in mode then gives nn.Embedding's
    own N(0, 1)); any other >= 2-d weight falls back to torch's shape convention (the ``rule`` says so).

    Example:
        >>> f = fans(nn.ConvTranspose2d(64, 32, 4, stride=2))
        >>> f.fan_in, f.fan_out, f.torch_fan_in
        (256.0, 512.0, 512.0)
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"fans() expects an nn.Module, got {type(module).__name__}; use tensor_fans() for tensors")
    kind = type(module).__name__
    params = dict(module.named_parameters(recurse=False))
    if name not in params:
        raise ValueError(
            f"{kind} has no parameter {name!r}; its parameters: {', '.join(params) or 'none'}"
        )
    w = params[name]
    _check_tensor(w, f"{kind}.{name}")
    if isinstance(module, _CONVT):
        f = tensor_fans(w, in_axis=0, out_axis=1, groups=module.groups, stride=module.stride, transposed=True)
        return _with_rule(f, f"{kind}: weight (in, out/groups, *k), groups={module.groups}, stride={module.stride}")
    if isinstance(module, _CONV):
        f = tensor_fans(w, groups=module.groups, stride=module.stride)
        return _with_rule(f, f"{kind}: weight (out, in/groups, *k), groups={module.groups}, stride={module.stride}")
    if isinstance(module, nn.Linear):
        return _with_rule(tensor_fans(w), f"{kind}: weight (out, in)")
    if isinstance(module, nn.Bilinear):
        out, in1, in2 = w.shape
        tfi, tfo = _torch_shape_fans(w.shape)
        return Fans(float(in1 * in2), float(out * in2), float(in1 * in2), float(out * in2), tfi, tfo,
                    "Bilinear: weight (out, in1, in2); fan_out for input 1 with unit-variance input 2")
    if isinstance(module, nn.MultiheadAttention):
        if name == "in_proj_weight":
            return _packed(w, 3, "MultiheadAttention: packed q/k/v in_proj_weight (3E, E), per block")
        if name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
            return _packed(w, 1, f"MultiheadAttention: {name} (E, dim)")
    for cls, gates in _RNN_GATES.items():
        if isinstance(module, cls) and name.startswith(("weight_ih_l", "weight_hh_l")):
            return _packed(w, gates, f"{kind}: {name} ({gates}*hidden, in), per gate")
    for cls, gates in _CELL_GATES.items():
        if isinstance(module, cls) and name in ("weight_ih", "weight_hh"):
            return _packed(w, gates, f"{kind}: {name} ({gates}*hidden, in), per gate")
    if isinstance(module, (nn.RNNBase,)) and name.startswith("weight_hr_l"):
        return _packed(w, 1, f"{kind}: {name} projection (proj, hidden)")
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)) and name == "weight":
        tfi, tfo = _torch_shape_fans(w.shape)
        return Fans(1.0, 1.0, 1.0, 1.0, tfi, tfo, f"{kind}: a lookup, each output is one row: fan_in = fan_out = 1")
    f = tensor_fans(w)
    return _with_rule(f, f"{kind}.{name}: unknown layer type, torch's shape convention (out, in, *k)")


def _with_rule(f: Fans, rule: str) -> Fans:
    return dataclasses.replace(f, rule=rule)
