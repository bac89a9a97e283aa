"""Plain-text tables for plans (and, later, profiles and advice). The library returns strings; the CLI prints."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["table", "fmt", "plan_table"]


def fmt(v: Any, digits: int = 3) -> str:
    """Compact number formatting: 3 significant digits, scientific outside [1e-3, 1e4)."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v != v:
            return "nan"
        if v == 0:
            return "0"
        if abs(v) >= 1e4 or abs(v) < 1e-3:
            return f"{v:.{digits - 1}e}"
        return f"{v:.{digits}g}"
    return str(v)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[int] = ()) -> str:
    """Columns padded to their widest cell; columns listed in ``right`` are right-aligned."""
    cells = [list(map(str, header))] + [[fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for k, r in enumerate(cells):
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(parts).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _flags(lp: Any) -> str:
    out = []
    if lp.norm:
        out.append("norm")
    if lp.residual_end:
        out.append("res")
    if lp.pixel_shuffle:
        out.append(f"ps{lp.pixel_shuffle}")
    if lp.is_output:
        out.append("out")
    return ",".join(out)


def plan_table(plan: Any) -> str:
    """The plan as a table: one row per layer, then notes."""
    head = f"plan: scheme={plan.scheme} mode={plan.mode}"
    if plan.options:
        head += " " + " ".join(f"{k}={v}" for k, v in plan.options.items())
    rows = []
    for lp in plan.layers:
        fi = lp.fans.fan_in if lp.fans else None
        fo = lp.fans.fan_out if lp.fans else None
        rows.append([lp.name or "(root)", lp.type, lp.activation, fi, fo, lp.gain, lp.method, lp.std,
                     lp.forward, lp.backward, _flags(lp)])
    body = table(["layer", "type", "activation", "fan_in", "fan_out", "gain", "init", "std", "fwd", "bwd", "flags"],
                 rows, right=(3, 4, 5, 7, 8, 9))
    notes = ["fwd: predicted E[y^2] at the layer output / input's; bwd: predicted E[dy^2] there, unit cotangent at "
             "the output"]
    if plan.untouched:
        notes.append("not executed by the example, left untouched: " + ", ".join(plan.untouched))
    if plan.approximate:
        notes.append("approximate propagation through: " + ", ".join(plan.approximate[:8])
                     + (" ..." if len(plan.approximate) > 8 else ""))
    if plan.graph.unknown:
        notes.append("ops not understood: " + "; ".join(plan.graph.unknown[:5]))
    return "\n".join([head, body, *notes])


def _wrap(text: str, width: int = 78, indent: str = "  ") -> list[str]:
    import textwrap

    return textwrap.wrap(text, width=width, initial_indent=indent, subsequent_indent=indent + "  ") or [indent]


def advice_report(advice: Any) -> str:
    """The advice as text: the answer in a few lines, then the candidates' evidence, then the model's facts."""
    rec = advice.recommended
    lines = [f"Recommendation: {rec.name}  (confidence: {advice.confidence})"]
    if rec.description:
        lines += _wrap(rec.description)
    opts = ", ".join(f"{k}={v!r}" for k, v in rec.options.items())
    mode = f", mode={rec.mode!r}" if rec.scheme == "kaiming" else ""
    lines.append(f"  initwise.init_(model, example, scheme={rec.scheme!r}{mode}" + (f", {opts}" if opts else "") + ")")
    lines.append("Why:")
    for r in advice.reasons:
        lines += _wrap(r)
    rows = []
    trial = any(r.trial_mean is not None for r in advice.results)
    for r in advice.results:
        loss = "-" if r.init_loss is None else f"{r.init_loss:.3g}+-{r.init_loss_std:.1g}"
        row = [r.rank, r.name, loss, r.output_rms, r.min_backward, r.max_backward, "ok" if r.healthy else "NO"]
        if trial:
            row.append("-" if r.trial_mean is None else f"{r.trial_mean:.4g}+-{r.trial_std:.1g}")
        rows.append(row)
    head = ["#", "candidate", "init loss", "out rms", "bwd min", "bwd max", "ok"] + (["trial"] if trial else [])
    lines += ["", f"Candidates (initial loss vs {advice.target_kind}; backward relative to the output's):",
              table(head, rows, right=(0, 3, 4, 5))]
    lines += ["", "Facts of this model:"]
    for f in advice.facts:
        lines += _wrap("- " + f, indent="  ")
    return "\n".join(lines)
