"""Which initializations to compare for one model, generated from their parts (used by :func:`initwise.advise`).

A candidate is put together from independent choices, and only the choices that make a difference on *this*
model are kept:

- **gain**: the traced activation's Kaiming gain (``kaiming_*``), 1 (``lecun``: LeCun normal), or the value of
  ``torch.nn.init.calculate_gain``'s table for the traced activation (``torch_gain_fan_in``; kept only when it
  differs from the traced gain on some layer), or the common ``nonlinearity='relu'`` call with torch's shape fans
  (``relu_fan_in``; kept only when it differs);
- **fan mode**: fan_in, fan_out (kept only when some layer has fan_in != fan_out);
- **distribution**: normal; a uniform variant is dropped because a same-variance uniform draw propagates the same
  second moments (it is available by name: ``kaiming_fan_in:distribution=uniform``);
- **residual handling** (only with residual branches): branch-end scale 0 (zero-init), 0.1, ``1/sqrt(blocks)``,
  1 (the plain scheme); and the **output scale** 0.1 for image-to-image models (a small first prediction);
- **other schemes**: orthogonal, Xavier (Glorot), PyTorch's default, the model's **current** initialization (kept
  only when it differs from PyTorch's default), and the data-driven **LSUV** (Mishkin & Matas 2016);
- **structured kernels** the model's own init wrote (bilinear upsampling, identity: :mod:`initwise._kept_kernels`)
  are kept by every candidate that draws (option ``structured="keep"``, also in its line of code); ``default``
  (PyTorch's constructors) and ``current`` are what they are.

Two candidates whose plans draw every parameter with the same method and standard deviation are the same
initialization; the later one is dropped.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import nn

from ._candidates import CANDIDATES, Candidate
from ._kept_kernels import structured_weights
from ._plan import Plan, plan as make_plan

__all__ = ["generate_candidates", "branch_ends", "keeping"]


def branch_ends(p: Plan) -> int:
    """How many residual branches end in a layer (the model's output layer never counts, see ``_plan``)."""
    return sum(1 for lp in p.layers if lp.residual_end)


def _signature(p: Plan) -> tuple:
    return tuple((pp.param, pp.method, None if pp.std is None else round(pp.std, 9)) for lp in p.layers
                 for pp in lp.params) + tuple((pp.param, pp.method) for pp in p.norm_params)


def _differs_from_default(model: nn.Module, example: Any, base: Plan) -> bool:
    """True when the model's current weights are not what PyTorch's constructors draw (measured per layer: the
    RMS of every drawn weight against the default's std, 5 standard errors of a Gaussian sample's RMS)."""
    default = make_plan(model, example, "torch_default", graph=base.graph)
    params = dict(model.named_parameters())
    for lp in default.layers:
        for pp in lp.params:
            w = params.get(pp.param)
            if w is None or pp.std is None or len(pp.shape) < 2 or pp.method == "keep":
                continue
            rms = float(w.detach().double().pow(2).mean().sqrt())
            se = pp.std * math.sqrt(1 / (2 * w.numel()))  # std of the RMS of n draws, normal approximation
            if abs(rms - pp.std) > 5 * se + 1e-12:
                return True
    return False


def keeping(c: Candidate, kernels: dict[str, str]) -> Candidate:
    """``c`` with ``structured="keep"`` when the model holds structured kernels (``kernels``: name -> what it is) and
    ``c`` draws; ``default`` (PyTorch's constructors) and ``current`` unchanged."""
    if not kernels or c.keeps_weights or c.scheme == "torch_default" or "structured" in c.options:
        return c
    what = ", ".join(f"{n} ({d})" for n, d in sorted(kernels.items()))
    return dataclasses.replace(c, options={**c.options, "structured": "keep"},
                               description=f"{c.description}; keeps the structured kernels the model set: {what}")


def generate_candidates(model: nn.Module, example: Any, base: Plan | None = None, *,
                        image_to_image: bool | None = None, plans: dict[str, Plan] | None = None,
                        keep_structured: bool = True) -> list[Candidate]:
    """The candidates worth comparing on ``model`` (see the module docstring for the parts and the pruning).

    Args:
        model: the model (not changed).
        example: its example input.
        base: its Kaiming fan_in plan, if already made.
        image_to_image: whether the output is an image (adds the output-scale candidate); None: the output has the
            input's batch and channel dimensions and is at least 3-D.
        plans: a dict that receives, by candidate name, the plan made for each kept candidate (to drop duplicates
            every one is planned on ``base``'s graph; :func:`initwise.advise` reuses them instead of planning again).
        keep_structured: every drawing candidate leaves the structured kernels the model's init wrote as they are
            (:func:`initwise._kept_kernels.structured_weights`); False: they are redrawn like any weight.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 3, 3, padding=1))
        >>> [c.name for c in generate_candidates(net, torch.rand(2, 3, 8, 8))][:3]
        ['default', 'kaiming_fan_in', 'kaiming_fan_out']
    """
    base = base if base is not None else make_plan(model, example, "kaiming", "fan_in")
    names = ["default"]
    if _differs_from_default(model, example, base):
        names.append("current")
    names += ["kaiming_fan_in"]
    rows = [lp.fans for lp in base.layers if lp.fans is not None]
    if any(abs(math.log(f.fan_out / f.fan_in)) > 1e-9 for f in rows if f.fan_in and f.fan_out):
        names.append("kaiming_fan_out")
    names += ["lecun", "torch_gain_fan_in", "relu_fan_in", "xavier", "orthogonal", "lsuv"]
    ends = branch_ends(base)
    extra: list[Candidate] = []
    if ends:
        names += ["kaiming_fan_in_zero_res", "kaiming_fan_in_res0.1"]
        s = 1 / math.sqrt(ends)
        if abs(s - 0.1) > 0.02 and ends > 1:
            extra.append(Candidate("kaiming_fan_in_res_isqrt", "kaiming", "fan_in", {"residual_scale": round(s, 4)},
                                   f"He fan_in, residual branch ends x1/sqrt({ends}) = {s:.3g} (one per block, so "
                                   "the trunk's variance grows by at most 2x over the blocks)"))
    if image_to_image is None:
        image_to_image = _image_to_image(example, base)
    if image_to_image:
        names.append("kaiming_fan_in_out0.1")
    cands = [CANDIDATES[n] for n in names] + extra
    if keep_structured:
        drawn = [pp.param for lp in base.layers for pp in lp.params if len(pp.shape) >= 2 and pp.method != "keep"]
        kernels = structured_weights(model, drawn)
        cands = [keeping(c, kernels) for c in cands]
    keep, seen = [], set()
    for c in cands:
        if c.lsuv is not None or c.keeps_weights:
            keep.append(c)
            continue
        try:
            p = make_plan(model, example, graph=base.graph, **c.plan_kwargs())
        except ValueError:  # e.g. torch's gain table has no value for the traced activation (PReLU, GELU, ...)
            continue
        sig = _signature(p)
        if sig in seen:
            continue
        seen.add(sig)
        keep.append(c)
        if plans is not None:
            plans[c.name] = p
    return keep


def _image_to_image(example: Any, base: Plan) -> bool:
    """The output layers are convolutions (weight dims = the input's dims) with the input's channel count."""
    x = example if isinstance(example, torch.Tensor) else None
    if x is None or x.dim() < 3:
        return False
    outs = [lp for lp in base.layers if lp.is_output]
    channels = lambda lp: lp.shape[1] if lp.type.startswith("ConvTranspose") else lp.shape[0]  # noqa: E731
    return bool(outs) and all(len(lp.shape) == x.dim() and channels(lp) == x.shape[1] for lp in outs)
