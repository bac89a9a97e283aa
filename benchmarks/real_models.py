"""The real-world corpus: trace, plan, init_, diagnose and advise on the field's own architectures, checked.

For every model of the registry (:mod:`_corpus_models`: spandrel SR/restoration nets, torchvision and timm
classifiers, all built small, no pretrained weights) :func:`check` runs each initwise call on a freshly built
model (the same seed, so a call that breaks the model cannot hide the next call's behaviour) and checks:

- ``crash``: no call raises;
- ``guarantee``: trace, plan, diagnose and advise leave no trace (:class:`_corpus_state.Snapshot`: state_dict,
  every module attribute, requires_grad, .grad, training flags, hooks, RNGs, the example tensor) and the model's
  output on the same input is bit-equal before and after; ``init_`` changes nothing but parameter values;
- ``kept``: ``init_`` keeps frozen parameters (``requires_grad=False``) and per-channel scales (any parameter
  other than the weight/bias of torch's conv/linear/norm/embedding/attention modules whose shape has at most one
  dimension above 1 and whose name is not a bias, token or embedding: LayerScale gammas, ScaledStdConv gains,
  NAFNet's beta/gamma, Swin-V2's logit scale, GRN's weight);
- ``runs``: after ``init_`` the model runs and every output is finite;
- ``executed``: every parameter the plan calls "not executed" (``Plan.untouched`` modules, or a parameter plan
  whose note says so) is really unused: autograd reaches none of them from the output of a real forward;
- ``activations``: no layer is traced "linear" where the model's code applies an activation, and every traced
  activation is one the code applies: :func:`_corpus_acts.check_activations` reads, at the aten level, what
  follows each weight op in the real forward (independent of initwise's trace) and compares.

For issue 10 it reads, from ``diagnose`` of the model as built, each layer's predicted and measured forward and
backward second moments: the worst ratio (max over layers of ``max(p/m, m/p)``), the fraction of layers whose
both predictions are within 2x, and how many predictions marked exact are off by more than 10%, by more than 4 of
diagnose's standard errors, and by more than both (a miss: issue 10's "within 10% (4 standard errors)").

That fraction is a **single-draw** figure: one weight draw (the build seed) measured against a prediction that
is an expectation over draws. At the corpus' widths one draw moves a deep layer's backward by ~1.6x, so with
``--draws K`` (default 4; 1 turns it off) the harness also builds each model with K seeds (the build seed and
K - 1 more; diagnose's cotangent and dropout seed follow the build seed), averages each layer's measured and
predicted second moments over the K draws and counts the layers whose two averaged ratios are within 2x: the
**draw-averaged** fraction, printed beside the single-draw one (whose definition it does not change).

Run: ``PYTHONPATH=src python benchmarks/real_models.py [--only NAME[,NAME]] [--json OUT] [--draws K]`` (one row
per model and a summary line; needs spandrel, timm and torchvision: ``.ci/run`` builds that environment).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _corpus_acts import check_activations  # noqa: E402
from _corpus_models import REGISTRY, Entry, by_name  # noqa: E402
from _corpus_state import Snapshot, same_tensor, tensors_of  # noqa: E402

__all__ = ["INVARIANTS", "REGISTRY", "Result", "by_name", "check", "draw_averaged", "kept_params"]

INVARIANTS = ("crash", "guarantee", "kept", "runs", "executed", "activations")
CALLS = ("trace", "plan", "diagnose", "advise", "init_")
ADVISE = dict(candidates=["default", "kaiming_fan_in"], seeds=1)  # the small advise config of the corpus
BUILD_SEED = 0
OUTPUT_SEED = 1234
_STANDARD = (nn.modules.conv._ConvNd, nn.Linear, nn.Bilinear, nn.modules.batchnorm._NormBase, nn.LayerNorm,
             nn.GroupNorm, nn.Embedding, nn.EmbeddingBag, nn.MultiheadAttention)
_NOT_SCALES = ("bias", "token", "embed", "pos")


@dataclass
class Result:
    """What :func:`check` found on one model (``failures[invariant]`` lists the evidence, empty when it holds)."""

    name: str
    package: str
    params: int = 0
    layers: int | None = None
    linear_fraction: float | None = None
    unknown: int | None = None
    times: dict[str, float] = field(default_factory=dict)
    failures: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in INVARIANTS})
    tracebacks: dict[str, str] = field(default_factory=dict)
    kept_checked: list[str] = field(default_factory=list)
    worst_forward: float | None = None
    worst_backward: float | None = None
    compared: int = 0  # layers with both predictions and measurements
    within_2x: int = 0
    exact: int = 0  # predictions (forward and backward counted separately) marked exact
    exact_off: int = 0  # ... of them off by more than 10%
    exact_off_z: int = 0  # ... of them off by more than 4 of diagnose's own standard errors
    exact_miss: int = 0  # ... of them off by more than both: issue 10's "within 10% (4 standard errors)"
    ratio_layers: list[dict[str, Any]] = field(default_factory=list)
    warnings: int = 0
    act_layers: int = 0  # layers whose traced activation was compared with the code's (one per weight parameter)
    act_disagree: list[str] = field(default_factory=list)
    draws: int = 0  # weight draws behind the draw-averaged figures (0: not measured)
    draws_compared: int = 0  # layers with both averaged predictions and measurements
    draws_within_2x: int = 0

    def holds(self, invariant: str) -> bool:
        return not self.failures[invariant]

    @property
    def ok(self) -> bool:
        return all(self.holds(k) for k in INVARIANTS)


def kept_params(model: nn.Module) -> dict[str, str]:
    """The parameters ``init_`` must keep, with why: frozen ones and per-channel scales (see the module doc)."""
    out: dict[str, str] = {}
    for mname, m in model.named_modules():
        for attr, p in m.named_parameters(recurse=False):
            name = f"{mname}.{attr}" if mname else attr
            if not p.requires_grad:
                out[name] = "frozen"
            elif isinstance(m, _STANDARD) and attr in ("weight", "bias"):
                continue
            elif sum(s > 1 for s in p.shape) <= 1 and p.dim() >= 1 \
                    and not any(w in attr.lower() for w in _NOT_SCALES):
                out[name] = f"per-channel scale {tuple(p.shape)}"
    return out


def _build(entry: Entry) -> nn.Module:
    torch.manual_seed(BUILD_SEED)
    return entry.build()


def _output(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The output of a copy of ``model`` on a copy of ``x`` (fixed RNG for dropout/drop-path; the original model
    and the global RNG untouched)."""
    probe = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(OUTPUT_SEED)
        return [t.detach().clone() for t in tensors_of(probe(x.clone()))]


def _used_params(model: nn.Module, x: torch.Tensor) -> set[str]:
    """Names of the parameters that autograd reaches from the output of one real forward (on a copy, every
    parameter made trainable): what really ran, whatever the code path (modules, functional calls, tokens)."""
    probe = copy.deepcopy(model)
    named = list(probe.named_parameters())
    for _, p in named:
        p.requires_grad_(True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(OUTPUT_SEED)
        outs = [o for o in tensors_of(probe(x.clone())) if o.requires_grad]
    if not outs:
        return set()
    total = sum(o.float().sum() for o in outs)
    grads = torch.autograd.grad(total, [p for _, p in named], allow_unused=True)
    return {n for (n, _), g in zip(named, grads) if g is not None}


def _not_executed(model: nn.Module, plan: Any, used: set[str]) -> list[str]:
    """The plan's "not executed" claims that the forward contradicts."""
    out = []
    claimed = {f"{m}.{a}" if m else a for m in getattr(plan, "untouched", [])
               for a, _ in model.get_submodule(m).named_parameters(recurse=False)}
    claimed |= {pp.param for pp in plan.params if "not executed" in pp.note or "not used" in pp.note}
    for n in sorted(claimed & used):
        out.append(f"{n}: the plan says not executed, but the forward uses it")
    return out


def _short(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:300]}"


def _ratio(p: float | None, m: float | None) -> float | None:
    if p is None or m is None or not (math.isfinite(p) and math.isfinite(m)):
        return None
    if p == m:
        return 1.0
    if p <= 0 or m <= 0:
        return math.inf
    return max(p / m, m / p)


def _ratios(res: Result, profile: Any) -> None:
    worst_f = worst_b = 1.0
    for lp in profile.layers:
        rf, rb = _ratio(lp.predicted_forward, lp.forward), _ratio(lp.predicted_backward, lp.backward)
        res.ratio_layers.append({"layer": lp.name, "type": lp.type, "forward": rf, "backward": rb,
                                 "forward_exact": lp.forward_exact, "backward_exact": lp.backward_exact,
                                 "forward_noise": lp.forward_noise, "backward_noise": lp.backward_noise,
                                 "predicted_forward": lp.predicted_forward, "forward_measured": lp.forward,
                                 "predicted_backward": lp.predicted_backward, "backward_measured": lp.backward})
        if rf is None or rb is None:
            continue
        res.compared += 1
        res.within_2x += rf <= 2.0 and rb <= 2.0
        worst_f, worst_b = max(worst_f, rf), max(worst_b, rb)
        for r, exact, noise in ((rf, lp.forward_exact, lp.forward_noise),
                                (rb, lp.backward_exact, lp.backward_noise)):
            if exact:
                res.exact += 1
                res.exact_off += r > 1.1
                res.exact_off_z += noise is not None and math.log(r) > 4.0 * noise
                res.exact_miss += math.log(r) > max(math.log(1.1), 4.0 * (noise or 0.0))
    if res.compared:
        res.worst_forward, res.worst_backward = worst_f, worst_b


def draw_averaged(res: Result, entry: Entry, draws: int) -> None:
    """The draw-averaged figures (module doc): ``draws`` builds of ``entry`` (seeds ``BUILD_SEED + i``), each
    diagnosed on the same example (cotangent seed ``i``; draw 0 is the single-draw run's own setting); per layer
    the mean over draws of the predicted and of the measured forward and backward, compared as ratios of means."""
    import initwise

    sums: dict[str, list[float]] = {}
    seen: dict[str, int] = {}
    x0 = entry.example()
    for i in range(draws):
        torch.manual_seed(BUILD_SEED + i)
        model = entry.build()
        gen = None if i == 0 else torch.Generator().manual_seed(i)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prof = initwise.diagnose(model, x0.clone(), generator=gen)
        for lp in prof.layers:
            vals = (lp.predicted_forward, lp.forward, lp.predicted_backward, lp.backward)
            if any(v is None or not math.isfinite(v) for v in vals):
                continue
            acc = sums.setdefault(lp.name, [0.0] * 4)
            for j, v in enumerate(vals):
                acc[j] += v
            seen[lp.name] = seen.get(lp.name, 0) + 1
    res.draws = draws
    for name, (pf, mf, pb, mb) in sums.items():
        if seen[name] != draws:
            continue
        rf, rb = _ratio(pf, mf), _ratio(pb, mb)
        if rf is None or rb is None:
            continue
        res.draws_compared += 1
        res.draws_within_2x += rf <= 2.0 and rb <= 2.0


def _call(res: Result, call: str, fn: Any) -> tuple[bool, Any]:
    t = time.perf_counter()
    try:
        return True, fn()
    except Exception as e:  # noqa: BLE001 - every failure of a call is a finding, recorded with its traceback
        res.failures["crash"].append(f"{call}: {_short(e)}")
        res.tracebacks[call] = traceback.format_exc(limit=-8)
        return False, None
    finally:
        res.times[call] = time.perf_counter() - t


def check(entry: Entry) -> Result:
    """Run every initwise call on ``entry``'s model and check the invariants; never raises for a model's fault."""
    import initwise

    res = Result(entry.name, entry.package)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = time.perf_counter()
        try:
            model, x = _build(entry), entry.example()
        except Exception as e:  # noqa: BLE001
            res.failures["crash"].append(f"build: {_short(e)}")
            res.tracebacks["build"] = traceback.format_exc(limit=-8)
            return res
        res.times["build"] = time.perf_counter() - t
        res.params = sum(p.numel() for p in model.parameters())
        x0 = x.clone()  # the pristine example: outputs are compared on copies of it
        reference = _output(model, x0)
        used = _used_params(model, x0)
        runs = {
            "trace": lambda m: initwise.trace(m, x),
            "plan": lambda m: initwise.plan(m, x),
            "diagnose": lambda m: initwise.diagnose(m, x),
            "advise": lambda m: initwise.advise(m, x, **ADVISE),
        }
        for call, fn in runs.items():
            model = _build(entry) if call != "trace" else model
            x = x0.clone()
            snap = Snapshot(model, x)
            ok, value = _call(res, call, lambda: fn(model))
            res.failures["guarantee"] += [f"{call}: {d}" for d in snap.diff(model)]
            try:
                after = _output(model, x0)
                if len(after) != len(reference) or not all(same_tensor(a, b) for a, b in zip(reference, after)):
                    res.failures["guarantee"].append(f"{call}: the output on the same input changed")
            except Exception as e:  # noqa: BLE001
                res.failures["guarantee"].append(f"{call}: the model no longer runs: {_short(e)}")
            if ok and call == "trace":
                res.layers = len(value)
                res.linear_fraction = (sum(i.activation.name == "linear" for i in value) / len(value)
                                       if len(value) else None)
                res.unknown = len(value.unknown)
            if ok and call == "diagnose":
                _ratios(res, value)
            if ok and call == "plan":
                res.failures["executed"] += _not_executed(model, value, used)
        model = _build(entry)
        t = time.perf_counter()
        try:
            acts = check_activations(model, x0.clone())
            res.act_layers = len(acts.rows)
            res.act_disagree = [f"{r.layer} ({r.param}): {r.why}" for r in acts.disagreements]
            res.failures["activations"] += res.act_disagree + [f"{u}: a weight op initwise traces as no layer"
                                                               for u in acts.unmatched]
        except Exception as e:  # noqa: BLE001
            res.failures["activations"].append(f"the activation check raised: {_short(e)}")
            res.tracebacks["activations"] = traceback.format_exc(limit=-8)
        res.times["acts"] = time.perf_counter() - t
        keep = kept_params(model)
        res.kept_checked = [f"{n} ({why})" for n, why in keep.items()]
        before = {n: p.detach().clone() for n, p in model.named_parameters() if n in keep}
        x = x0.clone()
        snap = Snapshot(model, x)
        ok, _ = _call(res, "init_", lambda: initwise.init_(model, x, seed=0))
        res.failures["guarantee"] += [f"init_: {d}" for d in snap.diff(model, params=False)]
        if ok:
            now = dict(model.named_parameters())
            for n, old in before.items():
                if not same_tensor(old, now[n].detach()):
                    res.failures["kept"].append(f"{n} ({keep[n]}): drawn by init_ (rms {_rms(old):.3g} -> "
                                                f"{_rms(now[n]):.3g})")
            try:
                outs = _output(model, x0)
                bad = [i for i, o in enumerate(outs) if o.is_floating_point() and not torch.isfinite(o).all()]
                if bad:
                    res.failures["runs"].append(f"output {bad} not finite after init_")
            except Exception as e:  # noqa: BLE001
                res.failures["runs"].append(f"the model no longer runs after init_: {_short(e)}")
                res.tracebacks["runs"] = traceback.format_exc(limit=-8)
        else:
            res.failures["runs"].append("init_ raised (see crash)")
    res.warnings = len(caught)
    return res


def _rms(t: torch.Tensor) -> float:
    return float(t.detach().double().pow(2).mean().sqrt())


def _fmt(v: float | None, spec: str = ".3g") -> str:
    if v is None:
        return "-"
    return "inf" if math.isinf(v) else format(v, spec)


HEADER = ("model", "pkg", "params", "build", "trace", "plan", "init_", "diag", "advise", "layers", "lin%",
          "unk", "act!=", "fwd_worst", "bwd_worst", "in2x%", "in2x%_avg", "exact>10%", "exact>4se", "failures")


def row(r: Result) -> tuple[str, ...]:
    t = r.times
    fails = [k for k in INVARIANTS if not r.holds(k)]
    return (r.name, r.package, f"{r.params / 1e6:.2f}M", *(_fmt(t.get(c), ".2f") for c in
                                                           ("build", *CALLS[:2], "init_", *CALLS[2:4])),
            _fmt(r.layers, "d") if r.layers is not None else "-",
            _fmt(None if r.linear_fraction is None else 100 * r.linear_fraction, ".0f"),
            "-" if r.unknown is None else str(r.unknown), f"{len(r.act_disagree)}/{r.act_layers}",
            _fmt(r.worst_forward), _fmt(r.worst_backward),
            _fmt(100 * r.within_2x / r.compared if r.compared else None, ".0f"),
            _fmt(100 * r.draws_within_2x / r.draws_compared if r.draws_compared else None, ".0f"),
            f"{r.exact_off}/{r.exact}", f"{r.exact_off_z}/{r.exact}",
            ",".join(fails) or "ok")


def table(results: list[Result]) -> str:
    rows = [HEADER] + [row(r) for r in results]
    widths = [max(len(r[c]) for r in rows) for c in range(len(HEADER))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def summary(results: list[Result]) -> str:
    compared = sum(r.compared for r in results)
    within = sum(r.within_2x for r in results)
    exact = sum(r.exact for r in results)
    off = sum(r.exact_off for r in results)
    off_z = sum(r.exact_off_z for r in results)
    miss = sum(r.exact_miss for r in results)
    holds = ", ".join(f"{k} {sum(r.holds(k) for r in results)}/{len(results)}" for k in INVARIANTS)
    d_comp, d_within = sum(r.draws_compared for r in results), sum(r.draws_within_2x for r in results)
    k = max((r.draws for r in results), default=0)
    averaged = (f"; draw-averaged ({k} weight draws per model, measured and predicted second moments averaged "
                f"over the draws): {d_within}/{d_comp} layers ({100 * d_within / d_comp:.1f}%) within 2x"
                if d_comp else "")
    acts = (f"layers traced with another activation than the code applies: "
            f"{sum(len(r.act_disagree) for r in results)}/{sum(r.act_layers for r in results)}")
    return (f"{len(results)} models; invariants hold: {holds}; all invariants: {sum(r.ok for r in results)}/"
            f"{len(results)}; {acts}\nissue 10: single draw (the build seed): {within}/{compared} layers "
            f"({100 * within / compared if compared else 0:.1f}%) have forward and backward predictions within 2x "
            f"(target 95%){averaged}; exact predictions off by more than 10%: {off}/{exact}"
            f", by more than 4 standard errors: {off_z}/{exact}, by more than both (a miss): {miss}/{exact} "
            f"({'every exact layer within 10% or 4 SE' if miss == 0 else 'FAILS'}); "
            f"total {sum(sum(r.times.values()) for r in results):.0f} s")


def known_failures(results: list[Result]) -> str:
    """The failing (model, invariant) pairs with their first evidence, as the ``KNOWN`` dict entries of
    ``tests/real/test_real_models.py`` (strict xfails: a pair that starts to hold turns into a test error)."""
    lines = []
    for r in results:
        for k, v in r.failures.items():
            if not v:
                continue
            first = v[0]
            if k == "runs" and first.startswith("init_ raised") and r.failures["crash"]:
                first = "init_ raises: " + r.failures["crash"][-1].split(": ", 1)[1]
            reason = " ".join((first if len(v) == 1 else f"{first} (+{len(v) - 1} more)").split())
            reason = reason if len(reason) <= 160 else reason[:157] + "..."
            lines.append(f"    ({r.name!r}, {k!r}):\n        {reason!r},")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="comma-separated model names (default: the whole corpus)")
    ap.add_argument("--json", help="write every result (with tracebacks and per-layer ratios) here")
    ap.add_argument("--known", action="store_true", help="also print the failing pairs as the tests' KNOWN entries")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--draws", type=int, default=4,
                    help="weight draws for the draw-averaged within-2x figure (default 4; 1 or less: skip it)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    entries = [by_name(n) for n in a.only.split(",")] if a.only else REGISTRY
    results = []
    print("  ".join(HEADER), flush=True)
    for e in entries:
        r = check(e)
        if a.draws > 1 and r.compared:
            t = time.perf_counter()
            try:
                draw_averaged(r, e, a.draws)
            except Exception as ex:  # noqa: BLE001 - a draw that fails is a finding, not the harness's end
                r.failures["crash"].append(f"draw-averaged diagnose: {_short(ex)}")
            r.times["draws"] = time.perf_counter() - t
        results.append(r)
        print("  ".join(row(r)), flush=True)
    print()
    print(table(results))
    print(summary(results))
    for r in results:
        for k in INVARIANTS:
            for f in r.failures[k]:
                print(f"  {r.name} [{k}] {f}")
    if a.known:
        print("KNOWN = {")
        print(known_failures(results))
        print("}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump([asdict(r) for r in results], fh, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
