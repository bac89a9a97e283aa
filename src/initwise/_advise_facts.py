"""The facts of one model that decide its initialization, in words with numbers (used by :func:`initwise.advise`)."""

from __future__ import annotations

from typing import Any

from torch import nn

from ._diagnose import Profile
from ._plan import Plan

__all__ = ["facts"]

def _product_facts(base: Plan, profile: Profile) -> list[str]:
    out = []
    first = base.layers[0] if base.layers else None
    if first is not None and first.backward is not None:
        line = (f"under fan_in the backward signal reaching the first layer is predicted at {first.backward:.3g}x "
                "the output's (He et al.'s product of fan_out/fan_in over the layers above)")
        if "kaiming_fan_in" in profile.schemes:
            measured = profile["kaiming_fan_in"].layers[0].backward
            if measured is not None:
                line += f", measured {measured:.3g}x"
        out.append(line)
    if "kaiming_fan_out" in profile.schemes:
        run = profile["kaiming_fan_out"]
        pred = run.plan.output_forward
        measured = run.output_forward  # the same tensor: the model's output (after a global skip, if any)
        if pred is not None:
            out.append(f"under fan_out the forward output is predicted at {pred:.3g}x the input's second moment"
                       + (f" (measured {measured:.3g}x)" if measured is not None else ""))
    return out


def _default_facts(profile: Profile) -> list[str]:
    if "default" not in profile.schemes:
        return []
    run = profile["default"]
    pred = run.plan.output_forward
    line = ("PyTorch's default (kaiming_uniform_(a=sqrt(5))) draws Var = 1/(3 fan_in): a third of LeCun's, a sixth of "
            "He's for ReLU")
    if pred is not None:
        line += f"; predicted output second moment {pred:.3g}x the input's on average over fresh draws"
    if "kaiming_fan_in" in profile.schemes and profile["kaiming_fan_in"].plan.output_forward is not None:
        line += f" (Kaiming fan_in: {profile['kaiming_fan_in'].plan.output_forward:.3g}x)"
    return [line]


def _structure_facts(base: Plan) -> list[str]:
    out = []
    ends = [lp for lp in base.layers if lp.residual_end]
    if ends:
        infos = {i.name: i for i in base.graph.layers}
        scales = sorted({infos[lp.name].residual_scale for lp in ends if infos[lp.name].residual_scale is not None})
        unscaled = [lp for lp in ends if (infos[lp.name].residual_scale or 1.0) == 1.0]
        line = f"{len(ends)} residual branch(es) end in a layer"
        if scales:
            line += f" (constant scales on the branch: {', '.join(f'{s:g}' for s in scales)})"
        if unscaled:
            line += (f"; {len(unscaled)} unscaled: each adds its variance to the trunk (predicted output "
                     f"{base.output_forward:.3g}x the input's under Kaiming fan_in); residual scaling or zero-init of "
                     "the branch ends keeps the trunk near its input")
        out.append(line)
    shuffle = [lp.name for lp in base.layers if lp.pixel_shuffle]
    if shuffle:
        out.append(f"{', '.join(shuffle)} feed(s) PixelShuffle: ICNR (option icnr=True) starts them "
                   "checkerboard-free; the candidates here use the plain scheme")
    normed = [lp.name for lp in base.layers if lp.norm]
    if normed:
        out.append(f"{len(normed)} layer(s) are followed by normalization ({normed[0]}, ...): their weight scale does"
                   " not change the forward pass, only the size of their updates")
    if base.graph.unknown:
        out.append("ops not understood (propagation approximate there): " + "; ".join(base.graph.unknown[:3]))
    return out


def _unfrozen_facts(model: nn.Module, base: Plan) -> list[str]:
    """Modules that set ``requires_grad = False`` on themselves (an attribute that freezes nothing: EDSR/RCAN's
    MeanShift) while the plan draws their parameters."""
    drawn = {lp.name for lp in base.layers}
    names = [n for n, m in model.named_modules() if n in drawn and m.__dict__.get("requires_grad") is False
             and any(p.requires_grad for p in m.parameters(recurse=False))]
    if not names:
        return []
    return [f"{', '.join(names[:3])}{', ...' if len(names) > 3 else ''} set `requires_grad = False` on the module, "
            "which freezes none of its parameters: every candidate redraws them (and training updates them); to "
            "keep them fixed, call `p.requires_grad_(False)` on their parameters (initwise leaves frozen "
            "parameters as they are)"]


def facts(model: nn.Module, example: Any, base: Plan, profile: Profile, results: list) -> list[str]:
    """Everything about this model that bears on the choice, most decisive first."""
    return [*_unfrozen_facts(model, base), *_structure_facts(base), *_product_facts(base, profile),
            *_default_facts(profile)]
