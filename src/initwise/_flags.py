"""Flags and their sentences for one measured layer: vanishing, exploding, dead, saturated, departing from the
prediction, and gradients removed by batch statistics (not by the init).

Thresholds are module constants (re-exported by :mod:`initwise._diagnose`). A flag is a code (``"backward_vanishing"``)
and a sentence that says what is wrong, where and by how much (:func:`messages`).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["VANISHING", "EXPLODING", "DEAD", "SATURATED", "MISMATCH_Z", "flags", "messages", "departs"]

VANISHING = 1e-2  # forward E[y^2] / E[x^2] (or backward E[dy^2] / E[c^2]) below this: vanishing
EXPLODING = 1e2  # ... above this: exploding (two decades either way: a 20-layer net at 0.8x or 1.25x per layer)
DEAD = 0.1  # flag when more than a tenth of a ReLU-like layer's channels are never positive over the batch
SATURATED = 0.1  # flag when more than a tenth of tanh (|z| > 2.5) / sigmoid (|z| > 5) inputs are saturated
MISMATCH_Z = 4.0  # departs from the prediction by more than 4 standard errors (two-sided p = 6e-5 if normal)


ZERO = 1e-12  # a measured ratio below this is a rounding residue of an exact zero (float32 sums of products)


def departs(measured: float | None, predicted: float | None, noise: float | None, bound: float = 1.0) -> bool:
    """Is ``|ln(measured / predicted)|`` beyond the prediction's error bound plus ``MISMATCH_Z`` standard errors?
    (A prediction the rules know to be approximate within ``bound`` is not flagged for departing by less; a
    prediction of exactly 0 agrees with a measurement below ``ZERO``.)"""
    if measured is None or predicted is None or noise is None or not (measured > ZERO and predicted > 0):
        return bool(measured is not None and predicted is not None and (measured > ZERO) != (predicted > 0))
    if not math.isfinite(bound):
        return False  # an op the rules do not know is on the path: no claim to depart from
    return abs(math.log(measured / predicted)) > math.log(max(bound, 1.0)) + MISMATCH_Z * noise


def _explained(r: Any) -> tuple[float, float]:
    """The factors of the backward that are the architecture's and the batch's, not the init's: removed by
    normalizations (their mean over what they normalize), and the averages' 1/k per element."""
    removed = getattr(r, "backward_removed", 1.0)
    pooled = getattr(r, "backward_pooled", 1.0)
    return (1.0 if removed is None else removed), (1.0 if pooled is None else pooled)


def _batch_statistics(r: Any) -> bool:
    """The backward vanishes only because normalizations remove the gradient's mean over what they normalize
    (after global pooling the gradient is constant over positions: a batch norm at batch 1 removes all of it, at
    batch N about 1/N; an instance norm all of it at any batch) and the averages hand each value 1/k of it."""
    removed, pooled = _explained(r)
    if r.backward is None or not r.backward < VANISHING or not removed < 1.0 or _pooling(r):
        return False
    return removed <= 0.0 or r.backward / (removed * pooled) >= VANISHING


def _pooling(r: Any) -> bool:
    """The backward is below the threshold per element only because averages spread each gradient over many
    values (a global pooling over k positions: 1/k^2 per element); takes precedence over the normalizations'
    removal when it explains the whole of it."""
    _, pooled = _explained(r)
    return r.backward is not None and r.backward < VANISHING and 0.0 < pooled < 1.0 and \
        r.backward / pooled >= VANISHING


def flags(r: Any) -> list[str]:
    f = []
    for direction, v in (("forward", r.forward), ("backward", r.backward)):
        if direction == "backward" and _batch_statistics(r):
            f.append("backward_batch_statistics")
        elif direction == "backward" and _pooling(r):
            f.append("backward_pooled")
        elif v is not None and v < VANISHING:
            f.append(f"{direction}_vanishing")
        elif v is not None and v > EXPLODING:
            f.append(f"{direction}_exploding")
    if r.dead_fraction is not None and r.dead_fraction > DEAD:
        f.append("dead")
    if r.saturated_fraction is not None and r.saturated_fraction > SATURATED:
        f.append("saturated")
    if departs(r.forward, r.predicted_forward, r.forward_noise, getattr(r, "forward_bound", 1.0)):
        f.append("forward_mismatch")
    if departs(r.backward, r.predicted_backward, r.backward_noise, getattr(r, "backward_bound", 1.0)):
        f.append("backward_mismatch")
    return f


def _g(v: float | None) -> str:
    return "-" if v is None else f"{v:.2g}"


def messages(r: Any, first: str | None = None, last: str | None = None) -> list[str]:
    """One sentence per flag of a :class:`initwise.LayerProfile` (``first``/``last``: the first and last layers'
    names, to say where a gradient or a signal is heading)."""
    out = []
    at = f"at {r.name or '(root)'}"
    for flag in r.flags:
        if flag == "forward_vanishing":
            out.append(f"forward {_g(r.forward)} of the input's {at}: the signal vanishes on its way here")
        elif flag == "forward_exploding":
            out.append(f"forward {_g(r.forward)} of the input's {at}: the signal grows on its way here")
        elif flag == "backward_vanishing":
            where = "before it reaches the first layer" if r.name == first else "on its way back here"
            out.append(f"backward {_g(r.backward)} of the output's {at}: the gradient vanishes {where}")
        elif flag == "backward_exploding":
            out.append(f"backward {_g(r.backward)} of the output's {at}: the gradient grows on its way back here")
        elif flag == "backward_batch_statistics":
            pooled = getattr(r, "backward_pooled", 1.0)
            also = f" and a factor {_g(pooled)} the averages spreading it over their inputs" if pooled < 1.0 else ""
            out.append(f"backward {_g(r.backward)} of the output's {at}, of which a factor "
                       f"{_g(r.backward_removed)} is the normalizations removing the gradient's mean over what "
                       f"they normalize{also} (global pooling makes it constant over positions; a batch norm at "
                       "a small batch, an instance norm at any, keeps little else): a property of the "
                       "architecture and batch size, not of the init")
        elif flag == "backward_pooled":
            out.append(f"backward {_g(r.backward)} of the output's {at} per element, of which a factor "
                       f"{_g(r.backward_pooled)} is the averages between here and the output handing each value "
                       "1/k of a gradient (a global pooling over k positions: 1/k^2 per element): the measure's "
                       "and the architecture's, not a vanishing gradient")
        elif flag == "dead":
            out.append(f"{100 * r.dead_fraction:.0f}% of the channels after {r.name} are never positive on this "
                       "batch: dead units")
        elif flag == "saturated":
            out.append(f"{100 * r.saturated_fraction:.0f}% of the units after {r.name} are saturated: their "
                       "gradient is nearly zero")
        elif flag in ("forward_mismatch", "backward_mismatch"):
            key = flag.split("_")[0]
            m, p = getattr(r, key), getattr(r, "predicted_" + key)
            bound = getattr(r, key + "_bound", 1.0)
            how = "exact" if bound == 1.0 else f"approximate within {bound:.3g}x"
            out.append(f"{key} measured {_g(m)} {at}, predicted {_g(p)} ({how}): the model does something here "
                       "the propagation rules do not see")
    return out
