"""The evidence :func:`initwise.advise` weighs for each candidate: gradient health, the initial loss and the loss
after a few optimizer steps (the last two only when the user gives a target).

**Health** (from one :func:`initwise.diagnose` run per candidate; thresholds are statistical: a layer fails only
when its measurement is beyond the threshold by ``Z`` = 3 of its standard errors, the ``forward_noise`` /
``backward_noise`` that diagnose estimates from the spread of the realized gains over weight draws and samples):

- *dead gradient*: a weight tensor whose gradient at step 0 is exactly zero, unless zero by design (a zero-init
  branch end, or a layer whose every consumer is one); ``grads_live`` of ``grads_total`` weight tensors get one;
- *forward vanishes* at a hidden layer (below ``10^-HEALTH`` of the input's second moment: the output forgets
  the input; the output layer is exempt, a small first prediction is a choice), *forward explodes* (above
  ``10^HEALTH``) or is not finite;
- *backward explodes* (above ``10^HEALTH`` of the output's), or *spreads* over more than ``2 HEALTH`` decades across
  layers. A uniform shrink of every gradient is no problem for Adam, which normalizes each parameter's step.

Which kinds of finding reject a candidate is the decision rule's (``_advise_rule.REJECT``, chosen on the design set:
a vanishing hidden forward is reported as a note); :func:`kind` names them.

**Initial loss**: ``loss(model(example), target)`` over ``seeds`` weight draws. **Probe** (GradInit / MetaInit
style: Zhu et al. 2021, Dauphin & Schoenholz 2019): ``probe_steps`` Adam steps at the user's learning rate on the
first half of the example batch, then the loss on the second half (not trained on), over ``probe_seeds`` draws.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ._candidates import Candidate
from ._diagnose import SchemeProfile
from ._guard import fresh, seed_all
from ._nested import call

__all__ = ["CandidateResult", "HEALTH", "Z", "LEAD", "health", "lead_scale", "kind", "outputs", "Drawer",
           "initial_losses", "probe_losses"]

HEALTH = 3.0  # decades: forward below 1e-3 / above 1e3 of the input's, backward above 1e3 of the output's
Z = 3.0  # standard errors beyond a threshold before a layer fails it (two-sided p = 0.003 if normal)


@dataclass
class CandidateResult:
    """One candidate's evidence. Losses are means over weight draws, with their sample std."""

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
    grads_live: int = 0
    grads_total: int = 0
    zero_by_design: list[str] = field(default_factory=list)
    probe_loss: float | None = None
    probe_loss_std: float | None = None
    checked: bool = True  # health measured (False: skipped, it could not change the pick; see _advise.py)
    notes: list[str] = field(default_factory=list)  # health findings that do not reject (_advise_rule.REJECT)
    rank: int = 0
    trial_mean: float | None = None
    trial_std: float | None = None
    trial_p: float | None = None
    losses: list[float] = field(default_factory=list, repr=False)
    probe: list[float] = field(default_factory=list, repr=False)
    trial_scores: list[float] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def outputs(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    if isinstance(out, dict) and out:
        return outputs(next(iter(out.values())))
    raise TypeError(f"the model's output is a {type(out).__name__}; advise needs a tensor (or a tuple starting with one)")


def _zero_by_design(run: SchemeProfile) -> set[str]:
    """Layers zeroed by the plan, and layers whose every consumer is zero by design (their gradient is zero at
    step 0 and becomes non-zero after the first update of the zeroed layer)."""
    p = run.plan
    zeroed = {lp.name for lp in p.layers if lp.params and all(pp.method == "zeros" for pp in lp.params
                                                              if len(pp.shape) >= 2)
              and any(len(pp.shape) >= 2 for pp in lp.params)}
    zeroed |= {lp.name for lp in p.layers if lp.norm and any(pp.method == "zeros" and pp.param.startswith(lp.norm + ".")
                                                             and pp.param.endswith("weight") for pp in p.norm_params)}
    infos = {i.name: i for i in p.graph.layers}
    silent = set(zeroed)
    for info in reversed(p.graph.layers):
        if info.name not in silent and info.consumers and not info.is_output and all(c in silent
                                                                                    for c in info.consumers):
            silent.add(info.name)
    return {n for n in silent if n in infos}


def _beyond(v: float, noise: float | None, limit: float, above: bool) -> bool:
    """``v`` is beyond ``limit`` by more than ``Z`` relative standard errors (log scale)."""
    n = Z * (noise or 0.0)
    return math.log(v) - n > math.log(limit) if above else math.log(v) + n < math.log(limit)


def no_gradient(run: SchemeProfile) -> set[str]:
    """Layers whose weight gets an exactly zero gradient at step 0 under this run."""
    return {lp.name for lp in run.layers if lp.weight_grad is not None and lp.weight_grad.second_moment == 0}


def kept_zeros(model: nn.Module, runs: Sequence[SchemeProfile]) -> list[str]:
    """Parameters that every plan keeps and that are exactly zero: the model's own zero scales or gates (NAFNet's
    ``beta``/``gamma``, a LayerScale at 0), which silence the layers before them at step 0 by the model's design."""
    params = dict(model.named_parameters())
    keep = None
    for run in runs:
        names = {pp.param for lp in run.plan.layers for pp in lp.params if pp.method == "keep"}
        names |= {pp.param for pp in run.plan.norm_params if pp.method == "keep"}
        keep = names if keep is None else keep & names
    kept = sorted(keep or ())
    return [n for n in kept if n in params and params[n].numel() and not bool(params[n].detach().ne(0).any())]


LEAD = 1.0  # decades: a first layer receiving more than 10x (or less than 1/10) the input's mean square means the
# model scales its input itself before any drawn weight (RCAN/EDSR's x rgb_range = 255: 6.5e4); forward limits are
# then judged against what that layer receives. Every design and validation net is within it (none moves)


def lead_scale(model: nn.Module, example: Any, graph: Any) -> tuple[str, float] | None:
    """``(first layer, E[its input^2] / E[model input^2])`` on one forward of a copy of ``model`` (the first layer
    in execution order that is a module with a tensor input), or None when it cannot be measured."""
    layers = sorted(graph.layers, key=lambda i: i.order)
    if not layers or not isinstance(layers[0].module, nn.Module):
        return None
    first = layers[0]
    m = copy.deepcopy(model)
    mod = dict(m.named_modules()).get(first.name)
    x = fresh(example)
    flat = [x] if isinstance(x, torch.Tensor) else list(x.values()) if isinstance(x, dict) else \
        list(x) if isinstance(x, (tuple, list)) else []
    xs = next((t for t in flat if isinstance(t, torch.Tensor)), None)
    if mod is None or xs is None or not xs.is_floating_point():
        return None
    ref = float(xs.detach().double().pow(2).mean())
    seen: list[float] = []

    def hook(_m: nn.Module, args: tuple) -> None:
        if not seen and args and isinstance(args[0], torch.Tensor) and args[0].is_floating_point():
            seen.append(float(args[0].detach().double().pow(2).mean()))

    h = mod.register_forward_pre_hook(hook)
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            call(m, x)
    finally:
        h.remove()
    if not seen or not ref > 0 or not math.isfinite(seen[0]):
        return None
    return first.name, seen[0] / ref


def health(run: SchemeProfile, model_design: set[str] | frozenset[str] = frozenset(),
           lead: tuple[str, float] | None = None
           ) -> tuple[float | None, float | None, float | None, list[str], int, int, list[str]]:
    """``(min_backward, max_backward, max_forward, problems, grads_live, grads_total, zero_by_design)``.

    ``model_design``: layers silenced by the model's own zero parameters (see :func:`kept_zeros`); they count as
    zero by design, like the layers this run's plan zeroes. ``lead``: :func:`lead_scale`; beyond ``LEAD`` decades
    the forward limits are relative to what the first layer receives, not to the model's input."""
    design = _zero_by_design(run) | set(model_design)
    layers = run.layers
    weighted = [lp for lp in layers if lp.weight_grad is not None]
    live = [lp for lp in weighted if lp.weight_grad.second_moment > 0]
    problems: list[str] = []
    dead = [lp for lp in weighted if lp.weight_grad.second_moment == 0 and lp.name not in design]
    if dead:
        problems.append(f"no gradient at step 0 in {len(dead)} weight tensor(s) ('{dead[0].name}'{', ...' if len(dead) > 1 else ''}): "
                        f"only {len(live)} of {len(weighted)} get one")
    keep = [lp for lp in layers if lp.name not in design]
    if any(lp.forward is not None and not math.isfinite(lp.forward) for lp in layers):
        problems.append("forward is not finite")
    fwd = [lp for lp in keep if lp.forward is not None and math.isfinite(lp.forward) and lp.forward > 0]
    bwd = [lp for lp in keep if lp.backward is not None and math.isfinite(lp.backward) and lp.backward > 0]
    outs = {lp.name for lp in run.plan.layers if lp.is_output}
    ref, of = 1.0, "of the input's"
    if lead is not None and abs(math.log10(lead[1])) > LEAD:
        ref, of = lead[1], f"of what the first layer '{lead[0]}' receives ({lead[1]:.2g}x the input's)"
    vanish = [lp for lp in fwd if lp.name not in outs and
              _beyond(lp.forward, lp.forward_noise, ref * 10 ** -HEALTH, False)]
    if vanish:
        w = min(vanish, key=lambda lp: lp.forward)
        problems.append(f"forward vanishes: {w.forward / ref:.2g} {of} at '{w.name}' (a hidden layer)")
    boom = [lp for lp in fwd if _beyond(lp.forward, lp.forward_noise, ref * 10**HEALTH, True)]
    if boom:
        problems.append(f"forward explodes: {max(lp.forward for lp in boom) / ref:.2g} {of}")
    if any(_beyond(lp.backward, lp.backward_noise, 10**HEALTH, True) for lp in bwd):
        problems.append(f"backward explodes: {max(lp.backward for lp in bwd):.2g} of the output's")
    if len(bwd) > 1:
        hi, lo = max(bwd, key=lambda lp: lp.backward), min(bwd, key=lambda lp: lp.backward)
        spread = (math.log(hi.backward) - Z * (hi.backward_noise or 0.0)) - (
            math.log(lo.backward) + Z * (lo.backward_noise or 0.0))
        if spread > 2 * HEALTH * math.log(10):
            problems.append(f"backward spreads over {math.log10(hi.backward / lo.backward):.1f} decades "
                            f"({lo.backward:.2g} at '{lo.name}')")
    lo_v = min((lp.backward for lp in bwd), default=None)
    hi_v = max((lp.backward for lp in bwd), default=None)
    fmax = max((lp.forward for lp in fwd), default=None)
    return lo_v, hi_v, fmax, problems, len(live), len(weighted), sorted(design)


_KINDS = (("no gradient", "dead"), ("forward is not finite", "nonfinite"), ("initial loss is not finite", "nonfinite"),
          ("forward vanishes", "vanishes"), ("forward explodes", "explodes"), ("backward explodes", "explodes"),
          ("backward spreads", "spreads"))


def kind(problem: str) -> str:
    """The kind of a health finding (``dead``, ``nonfinite``, ``vanishes``, ``explodes``, ``spreads``), from the
    text :func:`health` writes."""
    for prefix, k in _KINDS:
        if problem.startswith(prefix):
            return k
    raise ValueError(f"unknown health finding {problem!r}")


def _draw_seed(seed: int, s: int) -> int:
    return seed * 1000 + 17 * s + 1


class Drawer:
    """Applies draw ``s`` of one candidate to a copy of the model: ``Drawer(...)(copy, s)``. A data-driven (LSUV)
    draw costs one forward per layer, so its result is kept and loaded again for the initial loss, the health run
    and the probe, which all start from the same draws."""

    def __init__(self, cand: Candidate, example: Any, plan: Any, seed: int) -> None:
        """``plan``: the candidate's plan, or a callable returning it (made on the first draw, if any)."""
        self.cand, self.example, self._plan, self.seed = cand, example, plan, seed
        self._kept: dict[int, dict[str, torch.Tensor]] = {}

    @property
    def plan(self) -> Any:
        if callable(self._plan):
            self._plan = self._plan()
        return self._plan

    def __call__(self, m: nn.Module, s: int) -> None:
        if self.cand.keeps_weights:
            return
        if self.cand.lsuv is not None and s in self._kept:
            with torch.no_grad():
                for n, p in m.named_parameters():
                    p.copy_(self._kept[s][n])
            return
        self.cand.init_(m, self.example, generator=torch.Generator().manual_seed(_draw_seed(self.seed, s)),
                        plan=self.plan)
        if self.cand.lsuv is not None:
            self._kept[s] = {n: p.detach().clone() for n, p in m.named_parameters()}


class Adam:
    """``torch.optim.Adam(params, lr)`` with its defaults (betas 0.9/0.999, eps 1e-8), the single-tensor update op
    for op, without ``torch.optim``: constructing a torch optimizer the first time imports ``torch._dynamo``, 3-7 s,
    more than the rest of a small model's advice (tests/test_advise.py compares the two step by step)."""

    def __init__(self, params: Sequence[torch.Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.params, self.lr, self.betas, self.eps = list(params), lr, betas, eps
        self.state: dict[int, list] = {}  # id(param) -> [step, exp_avg, exp_avg_sq], created at its first gradient

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        b1, b2 = self.betas
        for p in self.params:
            if p.grad is None:
                continue
            st = self.state.setdefault(id(p), [0, torch.zeros_like(p), torch.zeros_like(p)])
            st[0] += 1
            grad, exp_avg, exp_avg_sq = p.grad, st[1], st[2]
            exp_avg.lerp_(grad, 1 - b1)
            exp_avg_sq.mul_(b2).addcmul_(grad, grad, value=1 - b2)
            step_size = self.lr / (1 - b1 ** st[0])
            denom = (exp_avg_sq.sqrt() / (1 - b2 ** st[0]) ** 0.5).add_(self.eps)
            p.addcdiv_(exp_avg, denom, value=-step_size)


def initial_losses(model: nn.Module, example: Any, cand: Candidate, target: torch.Tensor,
                   loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], seeds: int, seed: int,
                   plan: Any = None, drawer: Drawer | None = None) -> tuple[list[float], list[float]]:
    """Initial losses and output RMS over ``seeds`` draws of ``cand`` on a copy of ``model``."""
    draw = drawer or Drawer(cand, example, plan, seed)
    probe = copy.deepcopy(model)
    losses, rms = [], []
    for s in range(seeds):
        draw(probe, s)
        seed_all(_draw_seed(seed, s))  # dropout draws from the seed (the caller's RNG is restored by advise's guard)
        with torch.no_grad():
            out = outputs(call(probe, fresh(example)))
        rms.append(float(out.double().pow(2).mean().sqrt()))
        losses.append(float(loss_fn(out, target)))
        if cand.keeps_weights:
            break  # the same weights every time: one draw is all there is
    return losses, rms


def split(example: Any, target: torch.Tensor) -> tuple[Any, torch.Tensor, Any, torch.Tensor] | None:
    """First half / second half of the batch (the probe trains on one and scores on the other)."""
    if not isinstance(example, torch.Tensor) or example.dim() < 1 or example.shape[0] < 2:
        return None
    h = example.shape[0] // 2
    return example[:h].clone(), target[:h], example[h:].clone(), target[h:]


def probe_losses(model: nn.Module, example: Any, cand: Candidate, target: torch.Tensor,
                 loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], steps: int, lr: float,
                 seeds: Sequence[int], seed: int, plan: Any = None, drawer: Drawer | None = None) -> list[float]:
    """Held-out loss after ``steps`` Adam steps (``lr``) on the first half of the batch, one per draw."""
    return [c[0] for c in probe_curves(model, example, cand, target, loss_fn, (steps,), lr, seeds, seed, plan,
                                       drawer)]


def probe_curves(model: nn.Module, example: Any, cand: Candidate, target: torch.Tensor,
                 loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], checkpoints: Sequence[int],
                 lr: float, seeds: Sequence[int], seed: int, plan: Any = None,
                 drawer: Drawer | None = None) -> list[list[float]]:
    """Per draw, the held-out loss after each of ``checkpoints`` Adam steps (one optimization per draw)."""
    parts = split(example, target)
    if parts is None:
        return []
    draw = drawer or Drawer(cand, example, plan, seed)
    xa, ya, xb, yb = parts
    marks = sorted(set(checkpoints))
    out = []
    for s in seeds:
        m = copy.deepcopy(model)
        draw(m, s)
        params = [p for p in m.parameters() if p.requires_grad and p.is_floating_point()]
        opt = Adam(params, lr)
        curve: dict[int, float] = {}
        with torch.random.fork_rng(devices=[]):
            seed_all(_draw_seed(seed, s))
            done, ok = 0, True
            for mark in marks:
                while ok and done < mark:
                    opt.zero_grad(set_to_none=True)
                    value = loss_fn(outputs(m(xa)), ya)
                    if not torch.isfinite(value):
                        ok = False
                        break
                    value.backward()
                    opt.step()
                    done += 1
                with torch.no_grad():
                    v = float(loss_fn(outputs(m(xb)), yb)) if ok else float("inf")
                curve[mark] = v if math.isfinite(v) else float("inf")
        out.append([curve[c] for c in checkpoints])
        if cand.keeps_weights:
            break
    return out
