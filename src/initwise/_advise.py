"""Advise: which initialization to use for this model, why, and how sure we are.

The advisor compares candidate initializations (PyTorch's default; Kaiming fan_in, fan_out, fan_avg with the traced
gains; orthogonal; identity where the shapes allow; residual-scaled, zero-init and small-output variants where the
model has residual branches or predicts a residual) on three kinds of evidence:

1. **Analysis** (:func:`initwise.plan`): effective fans, the fan_in/fan_out mismatch of every layer and He et al.'s
   telescoping product, gains, residual accumulation, PixelShuffle, normalization.
2. **Measurement** (:func:`initwise.diagnose`): forward and backward second moments through the real model.
3. **The output at step 0**: the loss of each candidate's initial prediction against the target (or, for an
   image-to-image model without a target, against the input resized to the output: the identity mapping that
   restoration models start from), over several seeds.

Decision rule (DESIGN.md, "what training cares about"): a candidate is *healthy* when its measured signals
(forward relative to the input, backward relative to the output's cotangent) neither vanish nor explode (see
:func:`_health`). Among healthy candidates the one with the lowest initial loss wins: in the pilots of the advise
issue and in ``docs/evidence.md`` the scale of the step-0 output ranks the final PSNR of SR and denoising nets far
better than flat variance does (an EDSR under plain Kaiming starts with a large random output that training must
first undo; a deep DnCNN without BN under PyTorch's default starts with a small output but a dead input path, which
the health check rejects). Candidates within seed noise of the winner (Welch t, p > 0.05, and less than ``EFFECT``
= 1.5x apart, or within ``TIE`` = 5%) are reported as equivalent. ``trial=`` settles close calls with short training.
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

from ._candidates import Candidate, candidate
from ._diagnose import Profile, SchemeProfile, diagnose
from ._guard import fresh, guarded, seed_all
from ._nested import tensors
from ._plan import Plan, _identity_ok, plan as make_plan

__all__ = ["Advice", "CandidateResult", "advise", "default_candidates", "HEALTH", "TIE"]

HEALTH = 3.0  # decades: a forward below 1e-3 or above 1e3 of the input's second moment (or a backward above 1e3, or
# spread over 6 decades across layers) is unhealthy
TIE = 0.05  # initial losses within 5% of the best are equivalent whatever the seed noise says
EFFECT = 1.5  # ... and beyond 1.5x they are not, even when few seeds leave the difference short of significance
_P_EQUIVALENT = 0.05  # Welch t, two-sided: p above this means "not distinguishable from seed noise"


@dataclass
class CandidateResult:
    """One candidate's evidence. Losses and stds are means over ``seeds`` weight draws (with their std)."""

    name: str
    description: str
    init_loss: float | None
    init_loss_std: float | None
    output_rms: float | None
    target_rms: float | None
    min_backward: float | None
    max_backward: float | None
    max_forward: float | None
    output_forward: float | None
    healthy: bool
    problems: list[str] = field(default_factory=list)
    flagged_layers: int = 0
    rank: int = 0
    trial_mean: float | None = None
    trial_std: float | None = None
    trial_p: float | None = None
    losses: list[float] = field(default_factory=list, repr=False)
    trial_scores: list[float] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class Advice:
    """The recommendation with its evidence. ``str()`` leads with the answer; :meth:`apply` initializes a model."""

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
        """Initialize ``model`` as recommended (reproducible: the advice's seed unless ``seed``/``generator``)."""
        from ._init import init_

        if generator is None and seed is None:
            seed = self.seed
        return init_(model, self.example if example is None else example, **self.recommended.plan_kwargs(),
                     seed=seed, generator=generator)

    def to_dict(self) -> dict[str, Any]:
        return {
            "recommended": {"name": self.recommended.name, "scheme": self.recommended.scheme,
                            "mode": self.recommended.mode, "options": dict(self.recommended.options),
                            "description": self.recommended.description},
            "confidence": self.confidence, "equivalent": list(self.equivalent), "reasons": list(self.reasons),
            "facts": list(self.facts), "target_kind": self.target_kind, "seed": self.seed,
            "trial_steps": self.trial_steps, "candidates": [r.to_dict() for r in self.results],
            "profile": self.profile.to_dict(),
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


def default_candidates(p: Plan) -> list[str]:
    """The candidates worth comparing for the model behind plan ``p`` (a Kaiming fan_in plan): identity when at
    least half the weight layers are square per group, residual variants when the model has residual branches."""
    names = ["default", "kaiming_fan_in", "kaiming_fan_out", "kaiming_fan_avg", "orthogonal"]
    weights = [(i.module, w) for i in p.graph.layers
               if isinstance(w := getattr(i.module, "weight", None), torch.Tensor) and w.dim() >= 2]
    if weights and 2 * sum(_identity_ok(m, w) for m, w in weights) >= len(weights):
        names.append("identity")
    if any(lp.residual_end for lp in p.layers):
        names += ["kaiming_fan_in_res0.1", "kaiming_fan_in_zero_res"]
    names.append("kaiming_fan_in_out0.1")
    return names


def _outputs(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    if isinstance(out, dict) and out:
        return _outputs(next(iter(out.values())))
    raise TypeError(f"the model's output is a {type(out).__name__}; advise needs a tensor (or a tuple starting with one)")


def _call(model: nn.Module, example: Any) -> Any:
    if isinstance(example, dict):
        return model(**example)
    if isinstance(example, (tuple, list)):
        return model(*example)
    return model(example)


def _proxy_target(example: Any, out: torch.Tensor) -> torch.Tensor | None:
    """For an image-to-image model: the input resized to the output (the identity mapping restoration starts from)."""
    x = next(iter(tensors(example)), None)
    if x is None or not x.is_floating_point() or x.dim() != out.dim() or x.dim() < 3 or x.shape[:2] != out.shape[:2]:
        return None
    if x.shape == out.shape:
        return x.detach()
    mode = {3: "linear", 4: "bicubic", 5: "trilinear"}[x.dim()]
    return F.interpolate(x.detach(), size=out.shape[2:], mode=mode, align_corners=False)


def _welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    if len(a) < 2 or len(b) < 2:
        return None
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1)
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1)
    se2 = va / len(a) + vb / len(b)
    if se2 == 0:
        return 1.0 if ma == mb else 0.0
    t = (ma - mb) / math.sqrt(se2)
    df = se2**2 / ((va / len(a)) ** 2 / (len(a) - 1) + (vb / len(b)) ** 2 / (len(b) - 1)) if va + vb > 0 else 1e9
    try:
        from scipy import stats

        return float(2 * stats.t.sf(abs(t), df))
    except ImportError:  # normal approximation
        return float(math.erfc(abs(t) / math.sqrt(2)))


def _mean_std(xs: Sequence[float]) -> tuple[float | None, float | None]:
    if not xs:
        return None, None
    m = sum(xs) / len(xs)
    s = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, s


def _health(run: SchemeProfile, zero_init: bool) -> tuple[float | None, float | None, float | None, list[str]]:
    """Measured extremes of a candidate and what is wrong with them.

    Unhealthy: the forward signal vanishes (some layer's output below ``10^-HEALTH`` of the input's second moment:
    the output forgets the input) or explodes (above ``10^HEALTH``); the backward signal explodes, or spreads over
    more than ``2 * HEALTH`` decades across layers. A uniform shrink of every gradient (a small output layer, a
    scaled residual branch) is not a problem for Adam, which normalizes each parameter's step, so backward
    magnitudes count only through their spread. Layers whose signal is exactly zero by a zero-init design are
    skipped.
    """
    def keep(v: float | None) -> bool:
        return v is not None and math.isfinite(v) and (v > 0 or not zero_init)

    layers = run.layers
    backs = [lp.backward for lp in layers if keep(lp.backward)]
    fwds = [lp.forward for lp in layers if keep(lp.forward)]
    lo, hi = (min(backs), max(backs)) if backs else (None, None)
    fmin, fmax = (min(fwds), max(fwds)) if fwds else (None, None)
    problems = []
    if any(lp.forward is not None and not math.isfinite(lp.forward) for lp in layers):
        problems.append("forward is not finite")
    if fmin is not None and fmin < 10 ** -HEALTH:
        worst = min((lp for lp in layers if keep(lp.forward)), key=lambda lp: lp.forward)
        problems.append(f"forward vanishes: {fmin:.2g} of the input's at '{worst.name}'")
    if fmax is not None and fmax > 10**HEALTH:
        problems.append(f"forward explodes: {fmax:.2g} of the input's")
    if hi is not None and hi > 10**HEALTH:
        problems.append(f"backward explodes: {hi:.2g} of the output's")
    if lo is not None and hi and lo / hi < 10 ** (-2 * HEALTH):
        worst = min((lp for lp in layers if keep(lp.backward)), key=lambda lp: lp.backward)
        problems.append(f"backward is zero at '{worst.name}'" if lo == 0 else
                        f"backward spreads over {math.log10(hi / lo):.1f} decades ({lo:.2g} at '{worst.name}')")
    return lo, hi, fmax, problems


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
           candidates: Sequence[str | Candidate] | None = None, seeds: int = 8,
           trial: Callable[[nn.Module, int], float] | None = None, trial_seeds: int = 3, finalists: int = 3,
           trial_steps: int | None = None, seed: int = 0) -> Advice:
    """Recommend an initialization for ``model`` with reasons, evidence and a confidence; the model is not changed.

    Args:
        model: any ``nn.Module``.
        example: an input batch (tensor, tuple or dict, as :func:`initwise.trace`); real data is best.
        target: what the model should output for ``example`` (e.g. the HR patches); None: for image-to-image
            models the input resized to the output is the proxy, otherwise no output criterion.
        loss: ``loss(output, target) -> scalar``; default mean absolute error (L1, as EDSR/RCAN train).
        candidates: names for :func:`initwise.candidate`; default :func:`default_candidates`.
        seeds: weight draws per candidate for the initial loss (its seed noise).
        trial: ``trial(initialized_model, seed) -> score`` (higher is better, e.g. PSNR after a short training):
            run for the finalists over ``trial_seeds`` seeds; the trial's winner replaces the analytic choice when
            it is better beyond seed noise (Welch t, p < 0.05).
        finalists: how many candidates the trial runs (the recommendation, its equivalents, the default, ...).
        trial_steps: recorded in the report (how long ``trial`` trains), for information.
        seed: seeds the weight draws, the cotangent and :meth:`Advice.apply`.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 3, 3, padding=1))
        >>> adv = advise(net, torch.rand(4, 3, 16, 16), seeds=2)
        >>> adv.recommended.name in adv.candidates
        True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a positive int, got {seeds!r}")
    if trial is not None and not callable(trial):
        raise TypeError(f"trial must be a callable (model, seed) -> score, got {type(trial).__name__}")
    if isinstance(trial_seeds, bool) or not isinstance(trial_seeds, int) or trial_seeds < 1:
        raise ValueError(f"trial_seeds must be a positive int, got {trial_seeds!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    if not 0 <= seed < 2**53:  # the weight draws seed generators with seed * 1000 + ...: must stay a valid seed
        raise ValueError(f"seed must be in [0, 2**53), got {seed!r}")
    if isinstance(finalists, bool) or not isinstance(finalists, int) or finalists < 1:
        raise ValueError(f"finalists must be a positive int, got {finalists!r}")
    _check_target(target, loss)
    base = make_plan(model, example, "kaiming", "fan_in")
    names = list(candidates) if candidates is not None else default_candidates(base)
    cands = list(dict.fromkeys(candidate(c) for c in names))
    if not cands:
        raise ValueError("candidates is empty")
    profile = diagnose(model, example, schemes=cands, generator=torch.Generator().manual_seed(seed))
    loss_fn = loss or (lambda out, tgt: (out - tgt).abs().mean())
    target_kind = "given target" if target is not None else "none"
    results: list[CandidateResult] = []
    probe = copy.deepcopy(model)
    seed_all(seed)  # dropout/stochastic depth draw from the seed, not the caller's RNG (restored by the guard)
    with torch.no_grad():
        out0 = _outputs(_call(probe, fresh(example)))
    tgt = target
    if tgt is None:
        tgt = _proxy_target(example, out0)
        if tgt is not None:
            target_kind = "proxy: the input resized to the output"
    if tgt is not None and tuple(tgt.shape) != tuple(out0.shape):
        raise ValueError(f"target has shape {tuple(tgt.shape)} but the model's output has shape {tuple(out0.shape)}")
    trms = float(tgt.double().pow(2).mean().sqrt()) if tgt is not None else None
    for cand, run in zip(cands, profile.runs):
        p = run.plan
        losses, rms = [], []
        for s in range(seeds):
            p.apply(probe, generator=torch.Generator().manual_seed(seed * 1000 + 17 * s + 1))
            seed_all(seed * 1000 + 17 * s + 1)
            with torch.no_grad():
                out = _outputs(_call(probe, fresh(example)))
            rms.append(float(out.double().pow(2).mean().sqrt()))
            if tgt is not None:
                losses.append(float(loss_fn(out, tgt)))
        lo, hi, fmax, problems = _health(run, bool(cand.options.get("zero_init_residual")))
        if losses and not all(math.isfinite(v) for v in losses):
            problems.append("initial loss is not finite")
        m, sd = _mean_std(losses)
        results.append(CandidateResult(
            cand.name, cand.description, m, sd, sum(rms) / len(rms), trms, lo, hi, fmax, p.output_forward,
            not problems, problems, len(run.flagged), losses=losses))
    _rank(results)
    best = results[0]
    equivalent = [r.name for r in results[1:] if _equivalent(best, r)]
    confidence = _confidence(results, equivalent, target_kind)
    reasons = _reasons(best, results, equivalent, target_kind)
    chosen = next(c for c in cands if c.name == best.name)
    if trial is not None:
        chosen, confidence, reasons, equivalent = _run_trial(model, example, cands, results, equivalent, trial,
                                                              trial_seeds, finalists, seed, chosen, confidence,
                                                              reasons, profile)
    facts = _facts(model, example, base, profile, results)
    return Advice(chosen, confidence, equivalent, reasons, facts, results, profile, target_kind, seed, trial_steps,
                  example)


def _key(r: CandidateResult) -> tuple:
    return (not r.healthy, r.init_loss if r.init_loss is not None else 0.0, r.flagged_layers)


def _rank(results: list[CandidateResult]) -> None:
    results.sort(key=_key)
    for i, r in enumerate(results):
        r.rank = i + 1


def _equivalent(best: CandidateResult, r: CandidateResult) -> bool:
    if not r.healthy:
        return False
    if best.init_loss is None or r.init_loss is None:
        return r.flagged_layers == best.flagged_layers
    if r.init_loss <= best.init_loss * (1 + TIE):
        return True
    if r.init_loss > best.init_loss * EFFECT:
        return False
    p = _welch_p(best.losses, r.losses)
    return p is not None and p > _P_EQUIVALENT


def _confidence(results: list[CandidateResult], equivalent: list[str], target_kind: str) -> str:
    best = results[0]
    if not best.healthy:
        return "low"
    if target_kind == "none":
        return "low"
    rest = [r for r in results[1:] if r.name not in equivalent]
    if equivalent or not rest:
        return "medium"
    runner = rest[0]
    if runner.init_loss and best.init_loss and runner.init_loss > 2 * best.init_loss:
        return "high"
    return "medium"


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


def _reasons(best: CandidateResult, results: list[CandidateResult], equivalent: list[str], target_kind: str) -> list[str]:
    out = []
    default = next((r for r in results if r.name == "default"), None)
    if best.init_loss is not None:
        line = f"lowest initial loss among healthy candidates: {best.init_loss:.3g} +- {best.init_loss_std:.2g}"
        if default is not None and default is not best and default.init_loss:
            line += f" (PyTorch default {default.init_loss:.3g}"
            worst = max((r for r in results if r.init_loss is not None), key=lambda r: r.init_loss)
            line += f"; worst {worst.name} {worst.init_loss:.3g})"
        out.append(line + f" [{target_kind}]")
        out.append(f"output rms at init {best.output_rms:.3g} (target rms {best.target_rms:.3g})")
    else:
        out.append("no target: ranked by gradient health and flagged layers only")
    if best.healthy:
        out.append(f"gradients healthy at every layer: backward between {_fmt(best.min_backward)} and "
                   f"{_fmt(best.max_backward)} of the output's")
    else:
        out.append("no candidate is healthy: " + "; ".join(best.problems))
    sick = [r for r in results if not r.healthy]
    for r in sick[:3]:
        out.append(f"{r.name} rejected: {'; '.join(r.problems)}")
    if equivalent:
        out.append("equivalent for your model (within seed noise): " + ", ".join(equivalent))
    return out


def _run_trial(model, example, cands, results, equivalent, trial, trial_seeds, finalists, seed, chosen,
               confidence, reasons, profile):
    order = [results[0].name, *equivalent, "default"] + [r.name for r in results]
    names = [n for n in dict.fromkeys(order) if any(r.name == n and r.healthy or n == "default" and r.name == n
                                                      for r in results)][:max(2, finalists)]
    by = {r.name: r for r in results}
    runs = {r.scheme: r for r in profile.runs}
    for n in names:
        scores = []
        for s in range(trial_seeds):
            m = copy.deepcopy(model)
            runs[n].plan.apply(m, generator=torch.Generator().manual_seed(seed * 1000 + 17 * s + 1))
            seed_all(seed * 1000 + 17 * s + 1)
            scores.append(float(trial(m, s)))
        by[n].trial_scores = scores
        by[n].trial_mean, by[n].trial_std = _mean_std(scores)
    top = max(names, key=lambda n: by[n].trial_mean)
    for n in names:
        by[n].trial_p = _welch_p(by[top].trial_scores, by[n].trial_scores) if n != top else None
    reasons = list(reasons)
    tied = [n for n in names if n != top and (by[n].trial_p is None or by[n].trial_p > _P_EQUIVALENT)]
    if top != chosen.name and by[chosen.name].trial_p is not None and by[chosen.name].trial_p < _P_EQUIVALENT:
        reasons.insert(0, f"trial: {top} scored {by[top].trial_mean:.4g} +- {by[top].trial_std:.2g} vs "
                          f"{chosen.name} {by[chosen.name].trial_mean:.4g} (Welch t p={by[chosen.name].trial_p:.3g}):"
                          " the trial overrides the analysis")
        chosen = next(c for c in cands if c.name == top)
        confidence = "high" if not tied else "medium"
        equivalent = tied
    else:
        line = (f"trial ({trial_seeds} seeds): " + ", ".join(f"{n} {by[n].trial_mean:.4g} +- {by[n].trial_std:.2g}"
                                                              for n in names))
        reasons.insert(0, line)
        others = [n for n in names if n != chosen.name]
        beaten = all(by[n].trial_mean <= by[chosen.name].trial_mean for n in others)
        significant = all((by[n].trial_p or 1.0) < _P_EQUIVALENT for n in others) if top == chosen.name else False
        confidence = "high" if beaten and significant else "medium"
        equivalent = [n for n in tied if n != chosen.name] if top == chosen.name else sorted(
            set(equivalent) | {top} - {chosen.name})
    reasons = [r for r in reasons if not r.startswith("equivalent for your model")]
    if equivalent:
        reasons.append("equivalent in the trial (Welch t, p > 0.05): " + ", ".join(equivalent))
    return chosen, confidence, reasons, equivalent


def _facts(model: nn.Module, example: Any, base: Plan, profile: Profile, results: list[CandidateResult]) -> list[str]:
    from ._advise_facts import facts

    return facts(model, example, base, profile, results)
