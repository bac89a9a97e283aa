"""The identity gate of the advisor's rule (ninth session, issue 11; docs/evidence.md, "Ninth session").

What it captures: on a net whose activations are positively homogeneous (ReLU, LeakyReLU, PReLU, none) a gain-1
draw (Xavier) is He's draw scaled down layer by layer, so the learned part of the function starts small without
changing its shape. When the net has a path that carries the identity (a global skip inside the model, or a
residual target the training loop adds to the input), a small learned part means the model starts at the identity:
the gain-1 draw's initial loss is then close to the identity's. On the 50 cells seen before the ninth session
(design set, validation sets one to six, v5kept), the gate changed 11 of the previous rule's picks to Xavier, each
within seed noise of the best after training (mean regret 0.50 -> 0.38 dB, within noise 28 -> 38 of 50; gates from
1.3 to 2 make the same picks; ``python benchmarks/advise_quality.py --ninth``): the probe's 5 steps favour the inits
that start fastest and missed it there. The gate was chosen on those cells only. Blind, on validation sets v8 and
v9 (8 cells where it acts), it was within seed noise of the best on 5, as often as the previous rule's picks there,
with a higher mean regret (0.41 against 0.25 dB: MWCNN-lite lost 0.75 and 1.92 dB); with v10 (DIDN-lite), on 6 of
its 10 blind cells against the previous rule's 7, mean regret 0.40 against 0.23 dB. Not supported out of sample: it
is off by default (``advise(..., identity_gate=True)`` turns it on).

The identity's loss is the lower of two: the example resized to the target's size (the model's input as its
output: SR and denoising nets with the skip inside), and a zero output (the target is a residual the training
loop adds back). Pure arithmetic on the example and the target; nothing of the model runs here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["GATE", "GATE_PICK", "identity_loss", "homogeneous", "gate_ratio", "gated"]

GATE = 1.5  # the gain-1 draw's initial loss within 1.5x of the identity's (seen cells: 1.3 to 2 pick the same)
GATE_PICK = "xavier"  # the gain-1 candidate the gate picks (LeCun, the other one, did worse on the seen cells)
_HOMOGENEOUS = ("linear", "relu", "leaky_relu", "prelu")  # f(a x) = a f(x) for a > 0


def identity_loss(example: Any, target: torch.Tensor | None,
                  loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None) -> float | None:
    """The loss of the identity prediction: the lower of ``loss(example resized to the target, target)`` and
    ``loss(0, target)``; None when the example is not a tensor shaped like the target (batch, channels, then
    spatial dims of the same rank) or the target is not a float tensor (labels)."""
    if loss is None or target is None or not isinstance(example, torch.Tensor) or not target.is_floating_point():
        return None
    x = example
    if x.dim() != target.dim() or not 3 <= x.dim() <= 5 or x.shape[:2] != target.shape[:2] \
            or not x.is_floating_point():
        return None
    with torch.no_grad():
        x = x.to(target.dtype)
        if x.shape[2:] != target.shape[2:]:
            mode = {3: "linear", 4: "bicubic", 5: "trilinear"}[x.dim()]
            x = F.interpolate(x, size=tuple(target.shape[2:]), mode=mode, align_corners=False)
        values = [float(loss(x, target)), float(loss(torch.zeros_like(target), target))]
    values = [v for v in values if math.isfinite(v)]
    return min(values) if values else None


def homogeneous(activations: Iterable[str]) -> bool:
    """Every traced activation is positively homogeneous (``"leaky_relu(negative_slope=0.2)"`` counts)."""
    acts = list(activations)
    return bool(acts) and all(a.split("(")[0] in _HOMOGENEOUS for a in acts)


def gate_ratio(init_loss: float | None, identity: float | None) -> float | None:
    """The gain-1 draw's initial loss over the identity's; None when either is missing or not positive."""
    if init_loss is None or identity is None or not (math.isfinite(init_loss) and identity > 0):
        return None
    return init_loss / identity


def gated(results: list, identity: float | None, activations: Iterable[str], gate: float = GATE,
          pick: str = GATE_PICK) -> tuple[str, float] | None:
    """``(pick, ratio)`` when the gate applies: ``pick`` is among ``results``, measured and healthy, the net's
    activations are homogeneous and its initial loss is within ``gate`` x the identity's; else None."""
    r = next((r for r in results if r.name == pick), None)
    if r is None or not (r.healthy and r.checked) or not homogeneous(activations):
        return None
    ratio = gate_ratio(r.init_loss, identity)
    return (pick, ratio) if ratio is not None and ratio <= gate else None
