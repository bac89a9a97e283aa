"""The advisor's answers to the questions people ask, in their words, with this model's numbers.

(a) fan_in or fan_out; (b) which nonlinearity / gain; (c) residual handling; (d) the init as one line of code;
(e) the model's current init and a verdict. Each answer is a dict (the JSON) with a ``text`` (the report).
Terms are defined once in :data:`GLOSSARY` (``initwise advise --explain``).
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from ._advise_rule import TIE, draws_of, score_of, welch_p
from ._candidate_set import _differs_from_default, branch_ends
from ._gains import gain
from ._plan import Plan, plan as make_plan
from ._advise_glossary import CONFIDENCE_RECORD, CONFIDENCE_SETS, GLOSSARY, confidence_note  # noqa: F401 (re-exported)

__all__ = ["answers", "facts", "reasons", "GLOSSARY", "CONFIDENCE_RECORD", "CONFIDENCE_SETS", "confidence_note",
           "code_line"]

def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _ratio_rows(base: Plan) -> list[tuple[Any, float]]:
    return [(lp, lp.fans.fan_out / lp.fans.fan_in) for lp in base.layers
            if lp.fans is not None and lp.fans.fan_in and lp.fans.fan_out]


_CONVT = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _why(lp: Any, module: nn.Module | None, first: bool) -> str:
    """Why fan_in and fan_out differ at one layer, in words (the one place this is said)."""
    parts = []
    if first:
        parts.append("first layer: few input channels")
    if lp.is_output:
        parts.append("output layer: few output channels")
    if lp.pixel_shuffle:
        parts.append(f"feeds PixelShuffle({lp.pixel_shuffle}): {lp.pixel_shuffle}^2 x the channels")
    groups = int(getattr(module, "groups", 1) or 1)
    if groups > 1:
        depthwise = groups == getattr(module, "in_channels", -1)
        parts.append(("depthwise" if depthwise else f"groups={groups}") + f": torch's fan_out is {groups}x too big")
    if isinstance(module, _CONVT) or lp.type.startswith("ConvTranspose"):
        parts.append("transposed conv: torch swaps fan_in and fan_out")
    stride = getattr(module, "stride", None)
    if isinstance(stride, tuple) and any(s > 1 for s in stride):
        parts.append(f"stride {stride}")
    return ", ".join(parts) or "in and out widths differ"


def _score(r: Any, rule: str | None) -> tuple[float | None, list[float]]:
    if rule not in ("probe", "init_loss"):
        return None, []
    return score_of(r, rule), draws_of(r, rule)


def _fan_answer(model: nn.Module, base: Plan, adv: Any) -> dict[str, Any]:
    modules = dict(model.named_modules())
    rows = _ratio_rows(base)
    uneven = sorted([(lp, r) for lp, r in rows if r > 1.5 or r < 1 / 1.5], key=lambda t: -abs(math.log(t[1])))
    layers = [{"layer": lp.name, "type": lp.type, "fan_in": lp.fans.fan_in, "fan_out": lp.fans.fan_out,
               "fan_out_over_fan_in": r, "why": _why(lp, modules.get(lp.name), lp is base.layers[0])} for lp, r in uneven]
    by = {r.name: r for r in adv.results}
    fi, fo = by.get("kaiming_fan_in"), by.get("kaiming_fan_out")
    runs = {r.scheme: r for r in adv.profile.runs}
    fwd_out = runs["kaiming_fan_out"].plan.output_forward if "kaiming_fan_out" in runs else None
    first_b = base.layers[0].backward if base.layers else None
    if not uneven:
        text = (f"It hardly matters: all {len(rows)} layers have fan_in ~= fan_out (within 1.5x), so the two modes "
                "draw nearly the same weights. Use fan_in.")
        return {"matters": False, "safer": "fan_in", "layers": [], "text": text}
    parts = [f"{d['layer']} ({d['fan_in']:g} in, {d['fan_out']:g} out: fan_out = {d['fan_out_over_fan_in']:.3g} x "
             f"fan_in; {d['why']})" for d in layers[:4]]
    more = f" and {len(layers) - 4} more" if len(layers) > 4 else ""
    text = f"They differ on {len(uneven)} of {len(rows)} layers: " + "; ".join(parts) + more + ". "
    pred = []
    if fwd_out is not None:
        pred.append(f"under fan_out the output starts at {fwd_out:.3g}x the input's mean square (predicted)")
    if first_b is not None:
        pred.append(f"under fan_in the gradient reaching the first layer is {first_b:.3g}x the output's (predicted; "
                    "Adam rescales each parameter's step, so this matters less)")
    if pred:
        text += _cap("; ".join(pred)) + ". "
    matters, safer, measured = None, "fan_in", False
    if fi is not None and fo is not None:
        if fi.healthy != fo.healthy:
            matters, safer = True, "fan_in" if fi.healthy else "fan_out"
            bad = fo if fi.healthy else fi
            text += f"Here it matters: kaiming_{bad.name.split('_', 1)[1]} fails the health check ({bad.problems[0]}). "
        else:
            rule = adv.score
            if rule == "probe" and (fi.probe_loss is None or fo.probe_loss is None):
                rule = "init_loss"  # not both in the probe's screen: compare what both have
            (a, da), (b, db) = _score(fi, rule), _score(fo, rule)
            if a is not None and b is not None:
                p = welch_p(da, db)
                close = max(a, b) <= 1.05 * min(a, b)
                matters = measured = bool(p is not None and p < 0.05 and not close)
                safer = "fan_out" if matters and b < a else "fan_in"
                what = "loss after the probe" if rule == "probe" else "initial loss"
                n = min(len(da), len(db))
                if close:
                    said = "within 5% of each other: it hardly matters here. "
                elif p is None:
                    said = "one weight draw each, so seed noise cannot be told apart from the difference. "
                elif matters:
                    said = f"a difference beyond seed noise ({n} weight draws each, Welch p = {p:.2g}). "
                else:
                    said = (f"not beyond seed noise over {n} weight draws each (Welch p = {p:.2g}), so whether it "
                            "matters is not established here. ")
                text += f"On your batch the {what} is {a:.3g} under fan_in and {b:.3g} under fan_out: " + said
    if matters is None:
        far = fwd_out is not None and abs(math.log10(max(fwd_out, 1e-30))) > 1
        matters = bool(far)
        text += ("The predicted mismatch exceeds 10x: it can matter. " if far else
                 "The predicted mismatch stays within 10x: it matters little. ")
    if measured:
        text += f"Safer here: {safer} (it did better on your batch, beyond seed noise)."
    elif matters and fi is not None and fo is not None and fi.healthy != fo.healthy:
        text += f"Safer here: {safer} (the other fails the health check)."
    else:
        fwd_in = runs["kaiming_fan_in"].plan.output_forward if "kaiming_fan_in" in runs else None
        text += "Safer: fan_in (it keeps each layer's forward at the size of that layer's input"
        if fwd_in is not None and fwd_out is not None:  # what that means for this model's output, both ways
            text += (f"; this model's output is predicted at {fwd_in:.3g}x the input's mean square under fan_in, "
                     f"{fwd_out:.3g}x under fan_out")
        text += ")."
    return {"matters": matters, "safer": safer, "layers": layers, "text": text}


def _gain_answer(base: Plan) -> dict[str, Any]:
    acts: dict[str, list[Any]] = {}
    for lp in base.layers:
        acts.setdefault(lp.activation, []).append(lp)
    relu = gain("relu")
    rows, bits = [], []
    for act, lps in acts.items():
        g = lps[0].gain
        if g is None:
            continue
        try:
            tg: float | None = gain(_act_of(base, act), "torch")
        except ValueError:
            tg = None
        per = (relu / g) ** 2
        rows.append({"activation": act, "layers": len(lps), "first": lps[0].name, "gain": g, "torch_table_gain": tg,
                     "relu_variance_factor": per})
        line = f"{act} after {len(lps)} layer(s) (e.g. {lps[0].name}): gain {g:.4g}"
        if act == "linear":
            line = f"no activation after {len(lps)} layer(s) (e.g. {lps[0].name}): gain 1"
        if abs(per - 1) > 0.01:
            line += f"; nonlinearity='relu' gives {per:.3g}x the variance there"
            if len(lps) > 1 and act != "linear":
                line += f" ({per ** len(lps):.3g}x compounded over {len(lps)} in a chain)"
        if tg is not None and abs(tg - g) > 1e-6 and act != "linear":
            line += f"; torch.nn.init.calculate_gain says {tg:.4g}"
        elif tg is None:
            line += "; torch.nn.init.calculate_gain has no entry for it"
        bits.append(line)
    wrong = [r for r in rows if abs(r["relu_variance_factor"] - 1) > 0.01]
    text = "Traced: " + "; ".join(bits) + ". "
    text += ("So nonlinearity='relu' is right for every layer here." if not wrong else
             "So nonlinearity='relu' is wrong on " + ", ".join(f"the {r['activation']} layers" for r in wrong) + ".")
    return {"activations": rows, "text": text}


def _act_of(base: Plan, name: str) -> Any:
    for info in base.graph.layers:
        if str(info.activation) == name:
            return info.activation
    return name


def _scaled_compared(adv: Any, cands: list) -> str:
    """What the candidates with scaled or zeroed branch ends were compared on, in words (only what was done)."""
    opts = {c.name: c.options for c in cands}
    scaled = [r for r in adv.results if opts.get(r.name, {}).get("zero_init_residual")
              or opts.get(r.name, {}).get("residual_scale") is not None]
    if not scaled:
        return "no candidate with scaled or zeroed branch ends was compared"
    names = ", ".join(r.name for r in scaled[:3]) + (", ..." if len(scaled) > 3 else "")
    same = [r.name for r in scaled if r.name in adv.equivalent]
    if same:
        return f"{', '.join(same)} (scaled branch ends) within seed noise of the pick"
    if adv.score is None:
        return (f"the candidates with scaled branch ends ({names}) come after the pick in the fixed order (no "
                "target: nothing compared them on your data)")
    if any(r.probe for r in scaled):
        return f"the candidates with scaled branch ends ({names}) ranked below the pick on the probe"
    if any(r.init_loss is not None for r in scaled):
        return (f"the candidates with scaled branch ends ({names}) ranked below the pick on the initial loss (the "
                "probe did not run on them)")
    return f"the candidates with scaled branch ends ({names}) were not measured"


def _residual_answer(base: Plan, adv: Any, cands: list | None = None) -> dict[str, Any]:
    ends = branch_ends(base)
    infos = {i.name: i for i in base.graph.layers}
    global_res = [lp.name for lp in base.layers if lp.is_output and infos[lp.name].residual_end]
    scales = sorted({infos[lp.name].residual_scale for lp in base.layers if lp.residual_end
                     and infos[lp.name].residual_scale not in (None, 1.0)})
    rec = adv.recommended
    how = ("zero-init" if rec.options.get("zero_init_residual") else
           f"x{rec.options['residual_scale']:g}" if rec.options.get("residual_scale") is not None else "none")
    out_scale = rec.options.get("output_scale")
    bits = []
    if ends:
        bits.append(f"{ends} residual branch(es) end in a layer" + (f" (the code already scales them by "
                                                                   f"{', '.join(f'{s:g}' for s in scales)})"
                                                                   if scales else ""))
    else:
        bits.append("no residual branches end in a layer")
    if global_res:
        bits.append(f"the output layer {global_res[0]} gets the input added (a global residual): it is never "
                    "zeroed, or the output would be the input and no other layer would get a gradient")
    if ends or out_scale:
        bits.append(f"recommended branch-end handling: {how}" + (f", output layer x{out_scale:g}" if out_scale else ""))
        if ends and how == "none":
            bits.append(_scaled_compared(adv, cands or []))
    return {"branch_ends": ends, "global_residual_output": global_res, "code_scales": scales,
            "recommended": how, "output_scale": out_scale, "text": _cap("; ".join(bits)) + "."}


def code_line(c: Any) -> str:
    """The recommended init as one line to paste."""
    if c.keeps_weights:
        return "# keep your model's own init: nothing to call"
    opts = "".join(f", {k}={v!r}" for k, v in c.options.items())
    if c.lsuv is not None:
        return f"initwise.lsuv_(model, example, scheme={c.scheme!r}, target={c.lsuv:g}{opts})"
    mode = f", mode={c.mode!r}" if c.scheme == "kaiming" else ""
    return f"initwise.init_(model, example, scheme={c.scheme!r}{mode}{opts})"


def _current_answer(model: nn.Module, example: Any, base: Plan, adv: Any,
                    cands: list | None = None) -> dict[str, Any]:
    differs = _differs_from_default(model, example, base)
    cur = make_plan(model, example, "current", graph=base.graph)
    name = "current" if differs else "default"
    what = ("your constructor's own init (weights differ from PyTorch's default)" if differs else
            "PyTorch's default (kaiming_uniform_(a=sqrt(5)), Var = 1/(3 fan_in)): nothing re-initializes it")
    pred = cur.output_forward
    r = next((x for x in adv.results if x.name == name), None)
    picked = adv.recommended.name
    if r is None:
        verdict, why = "unknown", f"{name} was not among the candidates compared"
    elif picked == name or name in adv.equivalent:
        verdict, why = "keep", ("it is the pick" if picked == name else "it is within seed noise of the pick")
    elif not r.checked:
        verdict, why = "unknown", f"{name}'s health was not measured"
    elif not r.healthy:
        verdict, why = "change", f"it fails the health check: {r.problems[0]}"
    else:
        verdict, why = "change", f"it ranks {r.rank} of {len(adv.results)}; the pick is {picked}"
        if adv.target_kind == "none":
            verdict, why = "probably keep", ("healthy, and without a target there is no evidence against it "
                                             f"(the fixed order prefers {picked})")
    text = f"Your model's current init is {what}"
    if pred is not None:
        text += f"; predicted output mean square {pred:.3g}x the input's for the weights it holds now"
    text += f". Verdict: {verdict} ({why})."
    kept = _kept_by_candidates(model, base, cands)
    if kept:
        text += (f" It sets {len(kept)} weight(s) to a structured kernel ("
                 + ", ".join(f"{n}: {d}" for n, d in sorted(kept.items()))
                 + "); every candidate that draws keeps them (structured='keep'), since redrawing them throws away "
                   "what they already do.")
    return {"differs_from_default": differs, "candidate": name, "predicted_output_forward": pred,
            "verdict": verdict, "why": why, "structured_kernels": kept, "text": text}


def _kept_by_candidates(model: nn.Module, base: Plan, cands: list | None) -> dict[str, str]:
    """The structured kernels the compared candidates keep (name -> what it is); empty when none keeps any."""
    if not any(c.options.get("structured") == "keep" for c in cands or ()):
        return {}
    from ._kept_kernels import structured_weights

    return structured_weights(model, [pp.param for lp in base.layers for pp in lp.params
                                      if len(pp.shape) >= 2 and pp.method != "keep"])


def answers(model: nn.Module, example: Any, base: Plan, adv: Any, cands: list | None = None) -> dict[str, Any]:
    """The five answers (a)-(e) as a JSON-able dict (``cands``: the candidates compared, for their options)."""
    gain_answer = _gain_answer(base)
    if adv.recommended.plan_kwargs().get("scheme") in ("xavier", "lecun") and \
            any(abs(r["gain"] - 1) > 0.01 for r in gain_answer["activations"]):
        gain_answer["recommended_gain"] = 1.0
        gain_answer["text"] += (f" The recommended init ({adv.recommended.name}) uses gain 1 on every layer on "
                                "purpose: each layer's forward second moment then shrinks by the traced gain squared (2x "
                                "per ReLU layer), so the learned part of the model starts small (see Why).")
    return {"fan_mode": _fan_answer(model, base, adv), "gain": gain_answer,
            "residual": _residual_answer(base, adv, cands),
            "code": code_line(adv.recommended), "current_init": _current_answer(model, example, base, adv, cands)}


def reasons(results: list, equivalent: list[str], target_kind: str, rule: str | None, steps: int,
            lr: float, scored_first: str | None = None, gate: tuple[str, float] | None = None,
            identity: float | None = None) -> list[str]:
    """Why the pick: the score it won on (or that there was none), health, rejections, equivalents;
    ``scored_first``: the candidate the score ranked first when the tie-break (PRIOR's order among candidates
    within seed noise) picked another; ``gate``: ``(pick, ratio)`` when the identity gate made the pick
    (:mod:`initwise._advise_gate`), ``identity`` the identity prediction's loss."""
    best = results[0]
    out = []
    if gate is not None and identity is not None:
        from ._advise_gate import GATE

        out.append(f"{gate[0]} (gain 1) starts at the identity: its initial loss is {gate[1]:.2f}x the identity "
                   f"prediction's ({identity:.3g}: the input itself, or a zero output for a residual target), within "
                   f"{GATE:g}x, and every activation of the net is ReLU-like (positively homogeneous), so the small "
                   "start keeps the function's shape; the short probe favours the inits that start fastest. You "
                   "asked for this gate (identity_gate=True); its record (docs/evidence.md, \"Ninth session\"): "
                   "within seed noise of the best on all 11 cells where it changed the pick among the 50 it was "
                   "designed on, but on only 6 of 10 cells trained blind after it, where the rule without it was "
                   "within noise on 7")
    if scored_first is not None and rule is not None:
        top = next(r for r in results if r.name == scored_first)
        what = "held-out loss after the probe" if rule == "probe" else "initial loss"
        value = score_of(top, rule)
        out.append(f"{scored_first} had the lowest {what} ({value:.3g}); the pick is within seed noise of it "
                   f"(Welch p > 0.05, or within {TIE:.0%}: one probe draw varies by about that much) and comes first "
                   "among them in the fixed order that did best over every model trained so far (docs/evidence.md)")
    if rule is None:
        out.append("no target given: nothing measures the output, so the pick is the first healthy candidate in "
                   "the fixed order that did best over every model trained so far (docs/evidence.md); give a "
                   "target (--task, or "
                   "target=) for a pick based on your data")
    elif gate is not None:
        top = min((r for r in results if score_of(r, rule) is not None), key=lambda r: score_of(r, rule),
                  default=None)
        if top is not None and top.name != best.name:
            what = "held-out loss after the probe" if rule == "probe" else "initial loss"
            out.append(f"{top.name} had the lowest {what} ({score_of(top, rule):.3g})" +
                       (f"; {best.name}'s: {score_of(best, rule):.3g}" if score_of(best, rule) is not None else
                        f"; {best.name} was not probed"))
    elif rule == "probe":
        out.append(f"{'its' if scored_first else 'lowest'} loss on held-out patches after {steps} Adam steps "
                   f"(lr {lr:g}) on the others: "
                   f"{best.probe_loss:.3g}" + (f" +- {best.probe_loss_std or 0:.2g}" if len(best.probe) > 1 else
                                               " (one weight draw)") + f" [{target_kind}]")
    else:
        out.append(f"{'its' if scored_first else 'lowest'} initial loss among healthy candidates: "
                   f"{best.init_loss:.3g} +- "
                   f"{best.init_loss_std or 0:.2g} [{target_kind}]")
    if best.output_rms is not None and best.target_rms is not None:
        out.append(f"output rms at init {best.output_rms:.3g} (target rms {best.target_rms:.3g})")
    if best.healthy:
        line = f"healthy: {best.grads_live} of {best.grads_total} weight tensors get a gradient at step 0"
        if best.zero_by_design:
            line += f" (the others are zero by design: {', '.join(best.zero_by_design[:3])}" + (
                ", ..." if len(best.zero_by_design) > 3 else "") + ")"
        if best.min_backward is not None:
            line += (f"; gradients between {best.min_backward:.3g} and {best.max_backward:.3g} of the output's")
        out.append(line)
    else:
        skipped = sum(not r.checked for r in results)
        out.append("no measured candidate is healthy" + (f" ({skipped} not measured)" if skipped else "") + ": "
                   + "; ".join(best.problems))
    for r in [r for r in results if not r.healthy and r.checked][:3]:
        out.append(f"{r.name} rejected: {'; '.join(r.problems)}")
    if equivalent:
        out.append("equivalent for your model (within seed noise): " + ", ".join(equivalent))
    return out


def facts(model: nn.Module, base: Plan, profile: Any) -> list[str]:
    from ._advise_facts import facts as _facts

    return _facts(model, None, base, profile, [])
