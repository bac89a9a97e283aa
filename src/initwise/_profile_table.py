"""The diagnose table: one scheme per block, 80 columns, flags abbreviated and spelled out below it."""

from __future__ import annotations

import math
import textwrap
from typing import TYPE_CHECKING, Any

from ._flags import EXPLODING, MISMATCH_Z, VANISHING

if TYPE_CHECKING:  # annotations only
    from ._profile import LayerProfile

__all__ = ["run_table", "profile_table"]


_CODES = {"forward_vanishing": "f-", "forward_exploding": "f+", "backward_vanishing": "b-",
          "backward_exploding": "b+", "forward_mismatch": "f?", "backward_mismatch": "b?",
          "backward_batch_statistics": "bB", "backward_pooled": "bP"}
_ACT_SHORT = {"linear": "-", "leaky_relu": "lrelu", "hardswish": "hswish", "hardsigmoid": "hsigm", "sigmoid": "sigm",
              "gelu_tanh": "gelu_t", "softplus": "splus", "hardtanh": "htanh"}


def _num(v: float | None, approx: bool = False) -> str:
    if v is None or v != v:
        return "-"
    if v == 0:
        s = "0"
    elif 1e-2 <= abs(v) < 1e3:
        s = f"{v:.3g}"
    else:
        m, e = f"{v:.1e}".split("e")
        s = f"{m}e{int(e)}"
    return ("~" + s) if approx else s


def _cell_flags(r: LayerProfile) -> str:
    out = [_CODES[f] for f in r.flags if f in _CODES]
    if "dead" in r.flags:
        out.append(f"d{100 * r.dead_fraction:.0f}%")
    if "saturated" in r.flags:
        out.append(f"s{100 * r.saturated_fraction:.0f}%")
    return ",".join(out)


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else ".." + text[-(width - 2):]


def run_table(run: Any) -> str:
    """One scheme's profile as a table that fits 80 columns (flags abbreviated, legend in :func:`profile_table`)."""
    header = ["layer", "act", "fan i/o", "std", "fwd", "pred", "bwd", "pred", "flags"]
    rows = [header]
    for r in run.layers:
        act = r.activation.split("(")[0]
        fans = "-" if r.fan_in is None else f"{r.fan_in:g}/{r.fan_out:g}"
        rows.append([_short(r.name or "(root)", 16), _short(_ACT_SHORT.get(act, act), 6), _short(fans, 10),
                     _num(r.std), _num(r.forward), _num(r.predicted_forward, not r.forward_exact),
                     _num(r.backward), _num(r.predicted_backward, not r.backward_exact), _cell_flags(r)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    right = set(range(3, 8))
    lines = [" ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
             for row in rows]
    lines.insert(1, " ".join("-" * w for w in widths))
    title = f"scheme: {run.scheme}" + (f" ({run.description})" if run.description else "")
    return "\n".join([title if len(title) <= 80 else title[:77] + "...", *lines, *_bounds(run), *_sentences(run)])


def _bounds(run: Any) -> list[str]:
    """How far the approximate (~) predictions may be off: the measured error bounds of their rules."""
    out = []
    for key in ("forward", "backward"):
        bounds = [getattr(r, key + "_bound") for r in run.layers if getattr(r, key + "_bound") != 1.0]
        if not bounds:
            continue
        finite = [b for b in bounds if math.isfinite(b)]
        parts = []
        if finite:
            parts.append(f"{len(finite)} within {max(finite):.3g}x")
        if len(finite) < len(bounds):
            parts.append(f"{len(bounds) - len(finite)} through ops the rules do not know (no bound)")
        out.append(f"~ {key} predictions: " + ", ".join(parts))
    return out


def _sentences(run: Any) -> list[str]:
    out = []
    for r in run.layers:
        for m in getattr(r, "messages", ()):
            out += textwrap.wrap(m, 80, initial_indent="- ", subsequent_indent="  ")
    return out


def profile_table(profile: Any) -> str:
    """Every scheme's table, then the legend."""
    legend = [
        "fwd: E[y^2]/E[x^2] at the layer output (pre-activation); bwd: E[dy^2]/E[c^2]",
        f"there, c = cotangent at the output ({profile.cotangent}); pred: plan's, ~ approx.",
        f"flags: f-/f+ b-/b+ vanishing (<{VANISHING:g}) / exploding (>{EXPLODING:g}); f?/b? measured departs",
        f"from pred by >{MISMATCH_Z:g} std errors beyond its bound; bB backward small only through",
        "normalizations removing its mean (the batch size, not the init); bP backward",
        "small per element only through averages (global pooling: 1/k^2 per element);",
        "dN% dead ReLU channels; sN% saturated units.",
    ]
    return "\n\n".join([*(run_table(r) for r in profile.runs), "\n".join(legend)])
