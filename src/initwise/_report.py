"""Plain-text tables for plans (and, later, profiles and advice). The library returns strings; the CLI prints."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["table", "fmt", "plan_table", "advice_report", "glossary_text"]


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
    notes += _kept_notes(plan)
    notes += [f"{pp.param}: {part}" for pp in plan.params for part in pp.note.split("; ")
              if part.startswith(("spectral norm:", "weight norm:"))]  # a re-parameterized weight: what was drawn
    if plan.approximate:
        notes.append("approximate propagation through: " + ", ".join(plan.approximate[:8])
                     + (" ..." if len(plan.approximate) > 8 else ""))
    if plan.graph.unknown:
        notes.append("ops not understood: " + "; ".join(plan.graph.unknown[:5]))
    return "\n".join([head, body, *notes])


def _kept_notes(plan: Any) -> list[str]:
    """Parameters the plan keeps, grouped by the reason (their role, frozen, unused, an option), a few names each."""
    groups: dict[str, list[str]] = {}
    for pp in plan.params:
        if pp.method == "keep" and pp.note:
            groups.setdefault(pp.note.split(" (")[0].split(":")[0], []).append(pp.param)
    return [f"kept ({reason}): {len(names)} parameter{'s' if len(names) > 1 else ''}: " + ", ".join(names[:4])
            + (" ..." if len(names) > 4 else "") for reason, names in groups.items()]


def _wrap(text: str, width: int = 78, indent: str = "  ") -> list[str]:
    import textwrap

    return textwrap.wrap(text, width=width, initial_indent=indent, subsequent_indent=indent + "  ") or [indent]


def advice_report(advice: Any) -> str:
    """The advice as text: the five answers first (fan mode, gain, residuals, the line of code, the current init),
    then why, then the candidates' evidence, then the model's facts."""
    a = advice.answers
    rec = advice.recommended
    lines = []
    for title, key in (("fan_in or fan_out?", "fan_mode"), ("Which nonlinearity / gain?", "gain"),
                       ("Residual branches?", "residual")):
        if key in a:
            lines.append(title)
            lines += _wrap(a[key]["text"])
    from ._advise_answers import confidence_note

    lines.append(f"Recommended init: {rec.name}  (confidence: {advice.confidence})")
    lines += _wrap(confidence_note(advice.confidence))
    if rec.description:
        lines += _wrap(rec.description)
    if "code" in a:
        lines.append("  " + a["code"])
    if "current_init" in a:
        lines.append("Your current init?")
        lines += _wrap(a["current_init"]["text"])
    lines.append("Why:")
    for r in advice.reasons:
        lines += _wrap(r)
    rows = []
    trial = any(r.trial_mean is not None for r in advice.results)
    probe = any(r.probe_loss is not None for r in advice.results)
    for r in advice.results:
        loss = "-" if r.init_loss is None else f"{r.init_loss:.3g}" + (
            f"+-{(r.init_loss_std or 0):.1g}" if len(r.losses) > 1 else "")
        row = [r.rank, r.name, f"{r.grads_live}/{r.grads_total}" if r.checked else "-", loss]
        if probe:
            row.append("-" if r.probe_loss is None else f"{r.probe_loss:.3g}" + (
                f"+-{(r.probe_loss_std or 0):.1g}" if len(r.probe) > 1 else ""))
        row += [r.output_rms, "ok" if r.healthy else ("NO" if r.checked else "-")]
        if trial:
            row.append("-" if r.trial_mean is None else f"{r.trial_mean:.4g}" +
                       (f"+-{r.trial_std:.1g}" if len(r.trial_scores) > 1 else ""))
        rows.append(row)
    head = (["#", "candidate", "grads", "init loss"] + (["probe loss"] if probe else []) + ["out rms", "healthy"]
            + (["trial"] if trial else []))
    what = ("no target: no output criterion" if advice.target_kind == "none" else
            f"losses vs {advice.target_kind}" + (f"; probe: {advice.probe_steps} Adam steps, lr {advice.lr:g}, "
                                                 "scored on held-out patches" if probe else ""))
    lines += ["", f"Candidates ({what}; grads: weight tensors with a gradient at step 0):",
              table(head, rows, right=(0, 4, 5) if probe else (0, 4))]
    skipped = [r.name for r in advice.results if not r.checked]
    if skipped:
        lines += _wrap(f"healthy '-': not measured ({', '.join(skipped)}): "
                       + (("without a target only the fixed order's first healthy candidate can be the pick"
                           if advice.target_kind == "none" else
                           "they could not change the pick (the probe runs on the healthy candidate"
                           + ("s" if (advice.screen or 1) > 1 else "") + " with the lowest initial loss and on the "
                           "fixed order's first healthy one)")
                          if any(r.healthy for r in advice.results) else
                          "none of the measured candidates passed, and advise stops measuring after a few "
                          "(a cost bound)")
                       + "; pass candidates=[...] (--candidates) to measure each one")
    notes = [f"{r.name}: {n}" for r in advice.results for n in r.notes]
    if notes:
        lines += _wrap("notes (findings that do not reject a candidate): " + "; ".join(notes))
    lines += ["", "Facts of this model:"]
    for f in advice.facts:
        lines += _wrap("- " + f, indent="  ")
    lines += ["", "Terms (fan_in, gain, residual branch end, probe, confidence, ...): initwise advise --explain"]
    return "\n".join(lines)


def glossary_text() -> str:
    """Every term the advice uses, defined once (``initwise advise --explain``)."""
    from ._advise_answers import GLOSSARY

    out = []
    for k, v in GLOSSARY.items():
        out.append(k)
        out += _wrap(v)
    return "\n".join(out)
