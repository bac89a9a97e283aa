"""What the trace records and how it names things: the :class:`Node` of the signal DAG, the module roles
(activation, norm, pass-through, dropout, drop-path), and the tables of torch ops by kind (pass-through, norms,
concatenation, reductions, matmul, pooling, splits, conversions, binary and elementwise ops) that
:class:`initwise._trace.Recorder` classifies every call with. Data only and small pure helpers: no hooks, no
modes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ._activations import _FUNCTIONS, Activation
from ._nested import tensors as _tensors


@dataclass
class Node:
    """One op of the signal DAG, in execution order (``id`` is the position in ``Graph.nodes``).

    ``kind`` is one of "input", "layer", "norm", "act", "pass", "add", "sub", "cat", "mul", "scale", "shift",
    "reduce" (mean/sum over ``dims``), "softmax" (over ``dims[0]``), "matmul" (two signals), "attention"
    (``scaled_dot_product_attention(q, k, v)``, ``factor`` its scale if given), "output", "unknown".
    ``dims``: the reduced dims of a reduction, the dim of a softmax, the window of an average pooling. For the binary joins "add"/"sub"/"mul", ``branch`` is the operand that descends from the
    other one (the residual branch, or the gate of ``x * gate(x)``) and ``skip`` the other; ``residual`` marks
    an add/sub that rejoins a branch with its own input (or with a one-layer projection of it).
    """

    id: int
    kind: str
    op: str
    inputs: tuple[int, ...]
    shape: tuple[int, ...]
    module: str | None = None
    activation: Activation | None = None
    factor: float | None = None
    cat_dim: int | None = None
    residual: bool = False
    branch: int | None = None
    skip: int | None = None
    scope: str = ""
    inplace: bool = False
    dims: tuple[int, ...] | None = None
    # a functional layer node: the parameter its op consumed as the weight; when its module has several such
    # weights, ``module`` is the layer's name ``owner.param`` (see LayerInfo.owner)
    param: str | None = None
    # a "shift" by a small constant tensor whose values the trace saw (``x - self.mean``, also on the meta device
    # where the constant came from a buffer or a real attribute): ``(shape, values)``; None if unknown
    const: tuple[tuple[int, ...], tuple[float, ...]] | None = None
    # an interpolation ("interpolate", nn.Upsample): its mode ("nearest", "bilinear", "bicubic", ...), with "+ac"
    # appended when it aligns corners; None where the trace did not see it
    mode: str | None = None
    # an average pooling: ``(stride, padding, count_include_pad)``, one int per spatial dim for the first two (None
    # where the trace did not see them or a divisor override replaces the window's count)
    window: tuple[tuple[int, ...], tuple[int, ...], bool] | None = None
    # a "shift" by a parameter the trace has no values of (on the meta device; ViT's ``x + self.pos_embed``): its
    # dotted name, whose values (or drawn std) the plan reads
    source: str | None = None
    # a "cat" with operands that are no traced tensors (ViT's class token ``self.cls_token.expand(N, -1, -1)``):
    # every operand's size along ``cat_dim`` and what it is (a node id, a parameter's dotted name, None: unknown)
    parts: tuple[tuple[int, int | str | None], ...] | None = None
    # a "pass" getitem that keeps some positions of an ``(N, T, C)`` tensor (ViT's ``x[:, 0]``): those positions
    select: tuple[int, ...] | None = None


def _classes(*names: str) -> tuple[type, ...]:
    return tuple(c for c in (getattr(nn, n, None) for n in names) if isinstance(c, type))


_ACT_MODULES = _classes(
    "ReLU", "LeakyReLU", "PReLU", "RReLU", "GELU", "SiLU", "Mish", "ELU", "CELU", "SELU", "Tanh", "Sigmoid",
    "Hardswish", "Hardsigmoid", "Softplus", "Hardtanh", "ReLU6", "Softsign", "Tanhshrink", "LogSigmoid",
    "Threshold", "Softshrink", "Hardshrink")
_NORM_MODULES = _classes(
    "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm", "GroupNorm", "LayerNorm", "InstanceNorm1d",
    "InstanceNorm2d", "InstanceNorm3d", "RMSNorm", "LocalResponseNorm", "CrossMapLRN2d",
    "LazyBatchNorm1d", "LazyBatchNorm2d", "LazyBatchNorm3d", "LazyInstanceNorm1d", "LazyInstanceNorm2d",
    "LazyInstanceNorm3d")
_PASS_MODULES = _classes(
    "Identity", "Flatten", "Unflatten", "PixelShuffle", "PixelUnshuffle", "Upsample", "ChannelShuffle",
    "Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout",
    *(f"{p}{d}d" for p in ("MaxPool", "AvgPool", "AdaptiveAvgPool", "AdaptiveMaxPool", "LPPool") for d in (1, 2, 3)),
    "FractionalMaxPool2d", "FractionalMaxPool3d",
    *(f"{p}Pad{d}d" for p in ("Zero", "Constant", "Reflection", "Replication", "Circular") for d in (1, 2, 3)))


def _own_forward(m: nn.Module, base: tuple[type, ...]) -> bool:
    """A subclass of a torch layer/norm class that replaces ``forward`` outside torch (timm's BatchNormAct2d,
    ScaledStdConv2d): its forward does more than the base class's, so it is traced through."""
    fwd = getattr(type(m), "forward", None)
    return isinstance(m, base) and fwd is not None and not getattr(fwd, "__module__", "torch.").startswith("torch.")


def _drop_path(m: nn.Module) -> float | None:
    """A stochastic-depth module (timm's and the SR codebases' ``DropPath`` with ``drop_prob``, torchvision's
    ``StochasticDepth`` with ``p``; no parameters): the factor ``E[mask^2]`` it multiplies second moments by in
    training, ``1 / keep`` (or ``keep`` when it does not rescale); None for any other module."""
    name = type(m).__name__
    if not ("DropPath" in name or "StochasticDepth" in name) or next(m.parameters(), None) is not None:
        return None
    p = getattr(m, "drop_prob", getattr(m, "p", None))
    if not isinstance(p, (int, float)) or not 0 <= p < 1:
        return None
    keep = 1.0 - float(p)
    if not m.training or p == 0:
        return 1.0
    return 1.0 / keep if getattr(m, "scale_by_keep", True) else keep


def _dropout(m: nn.Module) -> float | None:
    """``E[mask^2]`` of a torch dropout module in training (``1 / (1 - p)``), 1 in eval; None otherwise."""
    if isinstance(m, (nn.AlphaDropout, nn.FeatureAlphaDropout)) or not isinstance(m, nn.modules.dropout._DropoutNd):
        return None
    return 1.0 / (1.0 - m.p) if m.training and 0 < m.p < 1 else 1.0


def module_role(m: nn.Module) -> str:
    """"act", "norm", "pass" (leaf modules recorded as one node), "layer" (leaf with weights), "through", or
    "through:layer" / "through:norm" (traced op by op, one node as a layer or norm if an op is not understood).

    torch's own layers and norms are leaves. A user module with its own parameters and none in its children
    (a hand-written layer or norm: NAFNet's ``LayerNorm2d``, timm's ``LayerScale2d``), and a subclass of a torch
    layer or norm that replaces ``forward`` (timm's ``BatchNormAct2d``, ``ScaledStdConv2d``), are traced
    through: their functional convolutions, norms, activations and scales become nodes; when one of their ops
    is not understood, the whole call becomes one node, as a layer (or a norm, for a class whose name contains
    "Norm"). A user module whose children hold parameters too is traced through (its own parameters are
    constants of its forward, e.g. NAFNet's ``beta``).
    """
    if isinstance(m, _ACT_MODULES):
        return "act"
    if isinstance(m, _NORM_MODULES):
        return "through:norm" if _own_forward(m, _NORM_MODULES) else "norm"
    if isinstance(m, _PASS_MODULES) or _drop_path(m) is not None:
        return "pass"
    direct = next(m.parameters(recurse=False), None) is not None
    child_params = any(next(c.parameters(), None) is not None for c in m.children())
    torch_class = type(m).__module__.startswith("torch.")
    if direct and torch_class:
        return "layer"
    if direct and not child_params:
        if any(c.__module__.startswith("torch.") for c in type(m).__mro__[1:] if c is not nn.Module
               and c is not object) and not _own_forward(m, (nn.Module,)):
            return "layer"  # a torch layer subclass that keeps torch's forward (EDSR's MeanShift)
        return "through:norm" if "Norm" in type(m).__name__ else "through:layer"
    return "through"


_PASS_OPS = frozenset("""
view view_as reshape reshape_as permute flatten unflatten transpose t contiguous clone squeeze unsqueeze
expand expand_as broadcast_to repeat repeat_interleave tile pad constant_pad_nd pixel_shuffle pixel_unshuffle
channel_shuffle native_channel_shuffle interpolate upsample upsample_nearest upsample_bilinear getitem chunk
split split_with_sizes tensor_split unbind narrow select index_select movedim moveaxis swapaxes swapdims roll
flip fliplr flipud rot90 to float double half bfloat16 type type_as cpu cuda detach requires_grad
dropout dropout1d dropout2d dropout3d alpha_dropout feature_alpha_dropout feature_dropout
max_pool1d max_pool2d max_pool3d max_pool1d_with_indices max_pool2d_with_indices max_pool3d_with_indices
avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d
adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d adaptive_max_pool1d_with_indices
adaptive_max_pool2d_with_indices adaptive_max_pool3d_with_indices lp_pool1d lp_pool2d lp_pool3d
fractional_max_pool2d fractional_max_pool3d fractional_max_pool2d_with_indices fractional_max_pool3d_with_indices
T mT H mH data
""".split())
_NORM_OPS = frozenset("layer_norm batch_norm group_norm instance_norm rms_norm local_response_norm normalize".split())
_CAT_OPS = frozenset(("cat", "concat", "concatenate", "stack"))
_REDUCE_OPS = frozenset(("mean", "sum", "nanmean", "nansum"))
_MATMUL_OPS = frozenset(("matmul", "bmm", "mm"))
_AVG_POOLS = frozenset(("avg_pool1d", "avg_pool2d", "avg_pool3d", "max_pool1d", "max_pool2d", "max_pool3d",
                        "max_pool1d_with_indices", "max_pool2d_with_indices", "max_pool3d_with_indices"))
_INTERPOLATE_OPS = frozenset(("interpolate", "upsample", "upsample_nearest", "upsample_bilinear"))
_SPLIT_OPS = frozenset(("chunk", "split", "split_with_sizes", "tensor_split", "unbind", "hsplit", "vsplit",
                        "dsplit", "unsafe_chunk", "unsafe_split"))
# ops that make a new tensor from another one's shape only: their output carries no signal
# conversions of a constant (``self.mean.type_as(x)``): its values pass through, also to a meta stand-in
_CONVERT_OPS = frozenset("type_as to float double half bfloat16 type detach clone contiguous cpu cuda".split())
_CONST_LIMIT = 4096  # the largest shift constant whose values a node keeps
_SOURCE_OPS = frozenset("""zeros_like ones_like empty_like full_like rand_like randn_like randint_like new_zeros
new_ones new_empty new_full new_tensor size""".split())
_BINARY = {"add": "add", "sub": "sub", "subtract": "sub", "mul": "mul", "multiply": "mul", "div": "div",
           "truediv": "div", "true_divide": "div", "divide": "div"}
# positional parameters after the input, per canonical activation (F signatures; builtins have none to inspect)
_ACT_POSITIONAL = {"leaky_relu": ("negative_slope", "inplace"), "elu": ("alpha", "inplace"),
                   "celu": ("alpha", "inplace"), "softplus": ("beta", "threshold"),
                   "hardtanh": ("min_val", "max_val", "inplace"), "gelu": ("approximate",)}


# unknown ops that act on each element alone (a module made of them and of activations/scales is pointwise)
_ELEMENTWISE = frozenset("""pow square sqrt rsqrt exp expm1 exp2 log log1p log2 abs clamp clip clamp_min clamp_max
erf erfc reciprocal sin cos sign maximum minimum div true_divide""".split())
_SAME_SHAPE = frozenset("clone contiguous to float double half bfloat16 type_as detach".split())


def _pointwise(n: Node) -> bool:
    if n.kind in ("act", "scale", "shift", "add", "sub", "mul"):
        return True
    name = _normalize(n.op.split(" ")[0])[0]
    return n.kind == "unknown" and name in _ELEMENTWISE or n.kind == "pass" and name in _SAME_SHAPE


def _replayable(func: Any) -> bool:
    name = _normalize(_op_name(func))[0]
    return func in _FUNCTIONS or name in _BINARY or name in _ELEMENTWISE or name in _SAME_SHAPE or name == "neg"


def _op_name(func: Any) -> str:
    name = getattr(func, "__name__", None) or type(func).__name__
    if name == "__get__":  # a Tensor property such as .T or .data
        name = getattr(getattr(func, "__self__", None), "__name__", "attribute")
    return name


def _normalize(name: str) -> tuple[str, bool]:
    """``"__rsub__" -> ("sub", True)`` (reflected), ``"add_" -> ("add", False)``, ``"__getitem__" -> "getitem"``."""
    reflected = False
    if name.startswith("__") and name.endswith("__"):
        name = name[2:-2]
        if name[:1] in ("r", "i") and name[1:] in _BINARY:
            reflected, name = name[0] == "r", name[1:]
    elif name.endswith("_") and not name.startswith("_"):
        name = name[:-1]
    return name.lstrip("_"), reflected


def _shape(ts: list[torch.Tensor]) -> tuple[int, ...]:
    return tuple(ts[0].shape) if ts else ()


def _factor(v: Any) -> float | None:
    """A constant multiplier as one number: itself, or the RMS of a constant tensor (second-moment equivalent)."""
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, torch.Tensor) and v.numel() > 0:
        x = v.detach().double()
        f = float(x.reshape(())) if x.numel() == 1 else float(x.pow(2).mean().sqrt())
        return f if f == f and abs(f) != float("inf") else None
    return None


def _interp_mode(name: str, args: tuple, kwargs: dict) -> str:
    """``F.interpolate(x, size, scale_factor, mode, align_corners)``'s mode, "+ac" appended when it aligns
    corners (``F.upsample_bilinear`` always does)."""
    if name in ("upsample_nearest", "upsample_bilinear"):
        return "nearest" if name == "upsample_nearest" else "bilinear+ac"
    mode = args[3] if len(args) > 3 else kwargs.get("mode", "nearest")
    corners = args[4] if len(args) > 4 else kwargs.get("align_corners")
    return str(mode) + ("+ac" if corners else "")


def _ints(v: Any, n: int) -> tuple[int, ...]:
    """A pooling window as one int per spatial dim."""
    return tuple(int(x) for x in v) if isinstance(v, (tuple, list)) else (int(v),) * max(n, 1)


def _avg_window(kernel: Any, stride: Any, padding: Any, include_pad: Any, divisor: Any,
                n: int) -> tuple[tuple[int, ...], tuple[int, ...], bool] | None:
    """An average pooling's ``Node.window``: stride (the kernel's when None or empty) and padding per spatial dim,
    and whether padded values count; None with a divisor override or arguments that are not plain ints."""
    if divisor is not None:
        return None
    try:
        k = _ints(kernel, n)
        s = k if stride is None or isinstance(stride, (tuple, list)) and not stride else _ints(stride, n)
        return s, _ints(padding, n), bool(include_pad)
    except (TypeError, ValueError):
        return None


def shapes_str(args: Any) -> str:
    return ", ".join("x".join(map(str, t.shape)) or "scalar" for t in _tensors(args)) or "no tensors"


def einsum_is_matmul(equation: Any) -> bool:
    """Whether a two-operand ``einsum`` is a batched ``a @ b`` (or ``a @ b^T``): ``a = B i j``, ``b = B j k`` or
    ``B k j``, out ``B i k`` with the same leading batch indices ``B`` (``...`` counts as one), ``j`` summed.
    The matmul rules then read the contraction size from ``a``'s last dim and the output's last two dims."""
    if not isinstance(equation, str) or equation.count("->") != 1:
        return False
    lhs, out = equation.replace(" ", "").replace("...", "E").split("->")
    ops = lhs.split(",")
    if len(ops) != 2 or any(len(set(s)) != len(s) for s in (*ops, out)):
        return False
    a, b = ops
    if len(a) < 2 or len(b) < 2 or len(out) < 2 or not (a[:-2] == b[:-2] == out[:-2]):
        return False
    i, j = a[-2:]
    k = b[-1] if b[-2] == j else b[-2] if b[-1] == j else None
    return k is not None and k not in (i, j) and out[-2:] == i + k


def _selected(index: Any, size: int) -> tuple[int, ...] | None:
    """The positions of dim 1 that ``x[index]`` keeps, for an ``(N, T, C)`` tensor indexed ``[:, i]``,
    ``[:, a:b]`` (also with a trailing ``:`` or ``...``); None for any other index."""
    if not isinstance(index, tuple) or len(index) < 2 or index[0] != slice(None):
        return None
    if any(not (i == slice(None) or i is Ellipsis) for i in index[2:]):
        return None
    i = index[1]
    if isinstance(i, bool) or not isinstance(i, (int, slice)):
        return None
    if isinstance(i, int):
        return (i % size,) if -size <= i < size else None
    return tuple(range(size))[i] or None
