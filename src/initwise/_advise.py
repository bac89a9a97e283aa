"""Advise: which initialization to use for this model, why, and how sure we are.

The advisor answers, in this order (``_advise_answers.py``): fan_in or fan_out for this model; which gain; what
to do about residual branches; the recommended init as one line of code; what the model's current init does and
whether to keep it. Behind the answers:

1. **Candidates** generated from their parts for this model (:func:`initwise.generate_candidates`).
2. **Evidence** per candidate (``_advise_evidence.py``): gradient health from one :func:`initwise.diagnose` run,
   and, only when a target is given, the initial loss and the held-out loss after a few Adam steps.
3. **The decision rule** (``_advise_rule.py``), chosen on a design set of trained models and reported on a
   validation set it was never tuned on (docs/evidence.md). Without a target there is no output criterion: the
   pick is the first healthy candidate in a fixed order, and the report says so.
4. Optionally a **trial**: the user's short training of the finalists settles close calls.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._advise_evidence import HEALTH, CandidateResult, Drawer, initial_losses
from ._advise_gate import GATE, GATE_PICK, gate_ratio, gated, homogeneous, identity_loss
from ._advise_health import Health, needed
from ._advise_evidence import LEAD, lead_scale, outputs, probe_losses
from ._advise_rule import INIT_DRAWS, PRIOR, PROBE_DRAWS, PROBE_PRIOR, PROBE_STEPS, SCORE, SCREEN, TIE, TIE_PRIOR
from ._advise_rule import WALK, mean_std, prefer_prior, probed, rejects, to_front
from ._advise_rule import confidence as _confidence, equivalent as _equivalent, rank as _rank
from ._candidate_set import generate_candidates
from ._candidates import Candidate, candidate
from ._diagnose import Profile
from ._guard import fresh, guarded, seed_all
from ._nested import call, check_finite
from ._plan import Plan, plan as make_plan

__all__ = ["Advice", "CandidateResult", "advise", "default_candidates", "HEALTH", "TIE"]


@dataclass
class Advice:
    """The recommendation with its evidence. ``str()`` leads with the answers; :meth:`apply` initializes a model."""

    recommended: Candidate
    confidence: str
    equivalent: list[str]
    reasons: list[str]
    facts: list[str]
    results: list[CandidateResult]
    profile: Profile = field(repr=False)
    target_kind: str
    seed: int
    trial_steps: int | None = None
    example: Any = field(default=None, repr=False)
    answers: dict[str, Any] = field(default_factory=dict)
    score: str | None = None
    probe_steps: int | None = None
    lr: float | None = None
    screen: int | None = None  # how many healthy candidates (lowest initial loss) the probe ran on

    @property
    def draw_seed(self) -> int:
        """The seed of the first weight draw the advisor measured (what :meth:`apply` uses by default)."""
        return self.seed * 1000 + 1

    @property
    def candidates(self) -> list[str]:
        return [r.name for r in self.results]

    def result(self, name: str) -> CandidateResult:
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(f"no candidate {name!r}; candidates: {', '.join(self.candidates)}")

    def plan(self, model: nn.Module, example: Any = None) -> Plan:
        """The recommended plan for ``model`` (the advised model, or one of the same architecture)."""
        return make_plan(model, self.example if example is None else example, **self.recommended.plan_kwargs())

    def apply(self, model: nn.Module, example: Any = None, *, seed: int | None = None,
              generator: torch.Generator | None = None) -> Plan:
        """Initialize ``model`` as recommended: by default the first weight draw the advisor measured
        (``seed=advice.draw_seed``), or the draw of ``seed`` / ``generator``."""
        if generator is None and seed is None:
            seed = self.draw_seed
        ex = self.example if example is None else example
        if self.recommended.keeps_weights:
            return make_plan(model, ex, "current")
        return self.recommended.init_(model, ex, seed=seed, generator=generator)

    def to_dict(self) -> dict[str, Any]:
        return {
            "answers": self.answers,
            "recommended": {"name": self.recommended.name, "scheme": self.recommended.scheme,
                            "mode": self.recommended.mode, "options": dict(self.recommended.options),
                            "lsuv": self.recommended.lsuv, "description": self.recommended.description},
            "confidence": self.confidence, "equivalent": list(self.equivalent), "reasons": list(self.reasons),
            "facts": list(self.facts), "target_kind": self.target_kind, "score": self.score,
            "probe_steps": self.probe_steps, "screen": self.screen, "lr": self.lr, "seed": self.seed, "trial_steps": self.trial_steps,
            "candidates": [r.to_dict() for r in self.results], "profile": self.profile.to_dict(),
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **{"indent": 2, **kwargs})

    def plot(self, path: Any = None, *, finalists: int = 4, **kwargs: Any) -> Any:
        """Signal-propagation plot of the recommended candidate, its equivalents and PyTorch's default."""
        keep = [self.recommended.name, *self.equivalent, "default"]
        keep += [r.name for r in self.results if r.name not in keep]
        keep = list(dict.fromkeys(k for k in keep if k in self.profile.schemes))[:finalists]
        sub = Profile([self.profile[k] for k in keep], self.profile.cotangent, self.profile.input_shapes,
                      self.profile.thresholds)
        return sub.plot(path, **kwargs)

    def __str__(self) -> str:
        from ._report import advice_report

        return advice_report(self)


def default_candidates(p: Plan, model: nn.Module | None = None, example: Any = None) -> list[str]:
    """Names of the candidates :func:`advise` compares by default (see :func:`initwise.generate_candidates`)."""
    if model is None:
        raise TypeError("default_candidates needs the model and its example: default_candidates(plan, model, x)")
    return [c.name for c in generate_candidates(model, example, p)]


def _default_loss(target: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if not target.is_floating_point():
        return lambda out, tgt: F.cross_entropy(out, tgt)  # class labels
    return lambda out, tgt: (out - tgt).abs().mean()  # L1, as EDSR/RCAN train


def _check_target(target: Any, loss: Any) -> None:
    """``target`` is None or a tensor; a floating one must be finite (a nan loss cannot rank candidates)."""
    if target is None:
        return
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor (what the model should output), got {type(target).__name__}")
    if loss is not None and not callable(loss):
        raise TypeError(f"loss must be a callable (output, target) -> scalar, got {type(loss).__name__}")
    if (target.is_floating_point() or target.is_complex()) and target.numel():
        bad = int((~torch.isfinite(target)).sum())
        if bad:
            raise ValueError(f"target has {bad} non-finite value(s) (nan or inf) out of {target.numel()}, shape "
                             f"{tuple(target.shape)}: the initial loss would be nan and could not rank the candidates")
    if target.numel() == 0:
        raise ValueError(f"target is empty (shape {tuple(target.shape)})")


@guarded("model", "example", "target")  # the model, the example, the target and every RNG come back as they were
def advise(model: nn.Module, example: Any, *, target: torch.Tensor | None = None,
           loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
           candidates: Sequence[str | Candidate] | None = None, seeds: int = INIT_DRAWS, lr: float = 1e-3,
           probe_steps: int | None = None, probe_seeds: int = PROBE_DRAWS, screen: int = SCREEN,
           score: str | None = None,
           trial: Callable[[nn.Module, int], float] | None = None, trial_seeds: int = 3, finalists: int = 3,
           trial_steps: int | None = None, seed: int = 0, identity_gate: bool = False) -> Advice:
    """Recommend an initialization for ``model`` with answers, reasons, evidence and a confidence; the model is not
    changed.

    Args:
        model: any ``nn.Module``.
        example: an input batch (tensor, tuple or dict, as :func:`initwise.trace`); real data is best.
        target: what the model should output for ``example`` (the HR patches, the clean images, the residual a net
            predicts, or class labels). None: no output criterion at all (the pick is the first healthy candidate
            in the design set's fixed order, with confidence "low"); nothing is made up in its place.
        loss: ``loss(output, target) -> scalar``; default L1 for a float target, cross-entropy for integer labels.
        candidates: names for :func:`initwise.candidate`; default :func:`initwise.generate_candidates`.
        seeds: weight draws per candidate for the initial loss.
        lr: the learning rate you will train with (Adam); the probe uses it.
        probe_steps: Adam steps of the probe (default ``_advise_rule.PROBE_STEPS``); 0 disables the probe.
        probe_seeds: weight draws per candidate for the probe.
        screen: how many healthy candidates, those with the lowest initial loss, the probe runs on, beside the
            first healthy one in the fixed order ``_advise_rule.PRIOR`` (the others keep their initial loss).
            With the generated candidates (``candidates=None``) and no trial, health is
            measured only where it can change the pick (and for the answers' fan_in, fan_out and current init);
            the others are reported as not measured (``checked=False``).
        score: ``"probe"`` or ``"init_loss"``: what ranks healthy candidates when there is a target (default
            ``_advise_rule.SCORE``, the design set's choice).
        trial: ``trial(initialized_model, seed) -> score`` (higher is better, e.g. test PSNR after a short training
            on data it does not score on): run for the finalists over ``trial_seeds`` seeds; its winner replaces the
            analytic choice when better beyond seed noise (Welch's t-test, p < 0.05, needs 2 or more seeds).
        finalists: how many candidates the trial runs.
        trial_steps: how long ``trial`` trains (stated in the report with the horizon's bias).
        seed: seeds the weight draws, the cotangent and :meth:`Advice.apply`.
        identity_gate: the ninth session's identity gate (:mod:`initwise._advise_gate`): Xavier when it starts at
            the identity on a ReLU-like net. Off by default: chosen on 50 trained cells, it did not hold on the 10
            cells trained blind after it (within seed noise on 6, the rule without it on 7; docs/evidence.md).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 3, 3, padding=1))
        >>> x = torch.rand(4, 3, 16, 16)
        >>> adv = advise(net, x, target=x, seeds=2, probe_steps=2)
        >>> adv.recommended.name in adv.candidates
        True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    for name, v, lo in (("seeds", seeds, 1), ("probe_seeds", probe_seeds, 1), ("trial_seeds", trial_seeds, 1),
                        ("screen", screen, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if probe_steps is not None and (isinstance(probe_steps, bool) or not isinstance(probe_steps, int)
                                    or probe_steps < 0):
        raise ValueError(f"probe_steps must be an int >= 0, got {probe_steps!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if score not in (None, "probe", "init_loss"):
        raise ValueError(f"score must be 'probe', 'init_loss' or None, got {score!r}")
    if trial is not None and not callable(trial):
        raise TypeError(f"trial must be a callable (model, seed) -> score, got {type(trial).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    if not 0 <= seed < 2**53:  # the weight draws seed generators with seed * 1000 + ...: must stay a valid seed
        raise ValueError(f"seed must be in [0, 2**53), got {seed!r}")
    if isinstance(finalists, bool) or not isinstance(finalists, int) or finalists < 1:
        raise ValueError(f"finalists must be a positive int, got {finalists!r}")
    _check_target(target, loss)
    check_finite(example, "the example input")
    on_meta = next((n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta), None)
    if on_meta is not None:  # a deferred-init model: nothing to draw a loss or a gradient from
        raise ValueError(f"{on_meta} is on the meta device: advise measures real forward and backward passes; "
                         "materialize the model first (model.to_empty(device=...), then initwise.init_)")
    base = make_plan(model, example, "kaiming", "fan_in")
    plans: dict[str, Plan] = {}  # by candidate name, on base's graph: made once, for the draws and the health runs
    if candidates is None:
        cands = generate_candidates(model, example, base, plans=plans)
    else:
        cands = list(dict.fromkeys(candidate(c) for c in candidates))
    if not cands:
        raise ValueError("candidates is empty")
    steps = PROBE_STEPS if probe_steps is None else probe_steps
    rule = None
    if target is not None:
        rule = score or SCORE
        if rule == "probe" and steps == 0:
            rule = "init_loss"
        seed_all(seed)  # dropout/stochastic depth draw from the seed, not the caller's RNG (restored by the guard)
        with torch.no_grad():
            out0 = outputs(call(copy.deepcopy(model), fresh(example)))
        labels = not target.is_floating_point()
        want = tuple(out0.shape[:1]) + tuple(out0.shape[2:]) if labels else tuple(out0.shape)
        if tuple(target.shape) != want:
            raise ValueError(f"target has shape {tuple(target.shape)} but the model's output has shape "
                             f"{tuple(out0.shape)}" + (f": integer labels (class indices) need shape {want}, the "
                                                        "output's without its class dim 1 (a float target needs "
                                                        "the output's shape)" if labels else ""))
    def plan_of(c: Candidate) -> Callable[[], Plan]:
        def made() -> Plan:
            if c.name not in plans:
                plans[c.name] = make_plan(model, example, graph=base.graph, **c.plan_kwargs())
            return plans[c.name]
        return made

    drawers = {c.name: Drawer(c, example, plan_of(c), seed) for c in cands}  # plans made when first drawn
    loss_fn = loss or (_default_loss(target) if target is not None else None)
    target_kind = "none" if target is None else ("labels" if not target.is_floating_point() else "given target")
    trms = float(target.double().pow(2).mean().sqrt()) if target is not None and target.is_floating_point() else None
    lead = lead_scale(model, example, base.graph)
    hc = Health(model, example, seed, drawers, plans, lead)
    need = needed(cands, model, example, base)
    init: dict[str, tuple[list[float], list[float]]] = {}
    identity: float | None = None  # the identity prediction's loss (the gate, _advise_gate)
    acts = [lp.activation for lp in base.layers] if identity_gate else []
    if trial is not None or candidates is not None:
        hc.measure(cands)  # the trial trains the healthy finalists; a list you gave gets each one's health
    if target is None:
        # no output criterion: the pick is the first healthy candidate in PRIOR's order, so health is measured
        # in that order until one passes (and for the answers' candidates); the rest cannot change the pick
        order = {n: i for i, n in enumerate(PRIOR)}
        walk = sorted(cands, key=lambda c: order.get(c.name, len(order)))
        hc.measure([*need, walk[0]])
        for c in walk[:WALK]:
            if hc.healthy(c):
                break
    else:
        for c in cands:
            init[c.name] = initial_losses(model, example, c, target, loss_fn, seeds, seed, drawer=drawers[c.name])
        mean_init = {n: (sum(v[0]) / len(v[0]) if all(math.isfinite(x) for x in v[0]) else math.inf)
                     for n, v in init.items()}
        walk = sorted(cands, key=lambda c: mean_init[c.name])
        k = screen if rule == "probe" else 1  # ranked by the initial loss: the first healthy one is the pick
        hc.measure([*need, *walk[:k]])
        found: list[str] = []
        for c in walk[:k + WALK]:  # health in initial-loss order until `k` healthy ones with a finite loss
            if len(found) >= k:
                break
            if hc.healthy(c) and math.isfinite(mean_init[c.name]):
                found.append(c.name)
        if rule == "probe" and PROBE_PRIOR:  # and in PRIOR's order until one healthy beside the screen
            order = {n: i for i, n in enumerate(PRIOR)}
            for c in sorted((c for c in cands if c.name in order), key=lambda c: order[c.name])[:WALK]:
                if c.name not in found and hc.healthy(c) and math.isfinite(mean_init[c.name]):
                    break
        if identity_gate:
            identity = identity_loss(example, target, loss_fn)
            gate_cand = next((c for c in cands if c.name == GATE_PICK), None)
            ratio = gate_ratio(mean_init.get(GATE_PICK), identity)
            if gate_cand is not None and ratio is not None and ratio <= GATE and homogeneous(acts):
                hc.measure([gate_cand])  # the identity gate may pick it: its health decides
    results: list[CandidateResult] = []
    for cand in cands:
        run = hc.runs.get(cand.name)
        losses, rms = init.get(cand.name, ([], []))
        if run is None:
            m, sd = mean_std(losses)
            results.append(CandidateResult(cand.name, cand.description, m, sd, sum(rms) / len(rms) if rms else None,
                                           trms, None, None, None, None, False, [], 0, 0, 0, [], checked=False,
                                           losses=losses))
            continue
        lo, hi, fmax, found_problems, live, total, design = hc.verdict[cand.name]
        if losses and not all(math.isfinite(v) for v in losses):
            found_problems = [*found_problems, "initial loss is not finite"]
        problems, notes = rejects(found_problems)
        m, sd = mean_std(losses)
        results.append(CandidateResult(
            cand.name, cand.description, m, sd, sum(rms) / len(rms) if rms else None, trms, lo, hi, fmax,
            run.plan.output_forward, not problems, problems, len(run.flagged), live, total, design,
            notes=notes, losses=losses))
    if rule == "probe":
        chosen_for_probe = set(probed(results, screen))
        for r, cand in zip(results, cands):
            if r.name in chosen_for_probe:
                r.probe = probe_losses(model, example, cand, target, loss_fn, steps, lr, range(probe_seeds), seed,
                                       drawer=drawers[cand.name])
                r.probe_loss, r.probe_loss_std = mean_std(r.probe)
    profile = hc.profile(cands)
    if rule == "probe" and not any(r.probe for r in results):
        rule = "init_loss"  # the batch cannot be split (one sample, or not a tensor)
    _rank(results, rule)
    equivalent = _equivalent(results, rule)
    confidence = _confidence(results, equivalent, rule)
    scored_first = None
    if TIE_PRIOR:
        equivalent, scored_first = prefer_prior(results, equivalent)
    gate = gated(results, identity, acts) if rule is not None and identity_gate else None
    if gate is not None and results[0].name != gate[0]:
        scored_first = None
        to_front(results, gate[0])
        equivalent = _equivalent(results, rule)
        confidence = "medium"  # the score did not rank it first: what the gate's picks meant is in docs/evidence.md
    chosen = next(c for c in cands if c.name == results[0].name)
    from ._advise_answers import answers, facts, reasons

    why = reasons(results, equivalent, target_kind, rule, steps, lr, scored_first, gate, identity)
    if trial is not None:
        from ._advise_trial import run_trial

        chosen, confidence, why, equivalent = run_trial(model, example, cands, results, equivalent, trial,
                                                        trial_seeds, finalists, seed, chosen, confidence, why,
                                                        trial_steps, {n: d.plan for n, d in drawers.items()})
    found = facts(model, base, profile)
    if lead is not None and abs(math.log10(lead[1])) > LEAD:
        found.insert(0, f"the model scales its input before its first layer: '{lead[0]}' receives "
                        f"{lead[1]:.3g}x the input's mean square (a fixed factor in the forward, e.g. rgb_range); "
                        "the health limits on the forward are taken relative to what it receives")
    adv = Advice(chosen, confidence, equivalent, why, found, results, profile, target_kind,
                 seed, trial_steps, example, {}, rule, steps if rule == "probe" else None, lr,
                 screen if rule == "probe" else None)
    adv.answers = answers(model, example, base, adv, cands)
    return adv
