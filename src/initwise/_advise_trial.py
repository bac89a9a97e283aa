"""The advisor's optional trial: the user's short training of the finalists settles close calls.

The trial's score must come from data it did not train on (the CLI's trial trains on random patches of the
training images and scores the test images' PSNR). A short trial favours the inits that *start* fastest; at the
real training horizon they may be tied or reversed (docs/evidence.md, step 100 against the last step), so the
report states the horizon and that bias. With one seed per finalist there is no test of seed noise: the trial is
reported, never used to override the analysis.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ._advise_rule import P_EQUIVALENT, mean_std, welch_p

__all__ = ["run_trial"]


def run_trial(model: nn.Module, example: Any, cands: list, results: list, equivalent: list[str], trial: Any,
              trial_seeds: int, finalists: int, seed: int, chosen: Any, confidence: str, reasons: list[str],
              trial_steps: int | None, plans: dict[str, Any] | None = None) -> tuple[Any, str, list[str], list[str]]:
    """Train the finalists (the pick, its equivalents, the default, then the next healthy ones) and decide."""
    healthy = {r.name for r in results if r.healthy}
    order = [results[0].name, *equivalent, "default"] + [r.name for r in results]
    names = [n for n in dict.fromkeys(order) if n in healthy or n == "default" and any(r.name == n for r in results)]
    names = names[:max(2, finalists)]
    by = {r.name: r for r in results}
    cand_of = {c.name: c for c in cands}
    for n in names:
        scores = []
        for s in range(trial_seeds):
            m = copy.deepcopy(model)
            if not cand_of[n].keeps_weights:
                cand_of[n].init_(m, example, generator=torch.Generator().manual_seed(seed * 1000 + 17 * s + 1),
                                 plan=(plans or {}).get(n))
            scores.append(float(trial(m, s)))
        by[n].trial_scores = scores
        by[n].trial_mean, by[n].trial_std = mean_std(scores)
    top = max(names, key=lambda n: by[n].trial_mean)
    for n in names:
        by[n].trial_p = welch_p(by[top].trial_scores, by[n].trial_scores) if n != top else None
    horizon = f"{trial_steps} steps" if trial_steps is not None else "the trial's horizon (steps not given)"
    bias = (f"trial: {len(names)} finalists x {trial_seeds} seed(s), {horizon}, scored on data it did not train "
            "on; a short trial favours inits that start fastest, the ranking at your full training length may differ")
    table = ", ".join(f"{n} {by[n].trial_mean:.4g}" + (f" +- {by[n].trial_std:.2g}" if trial_seeds > 1 else "")
                      for n in names)
    reasons = [r for r in reasons if not r.startswith("equivalent for your model")]
    if trial_seeds < 2:
        reasons = [bias, f"trial scores (one seed each, no test of seed noise possible; the analysis stands): "
                         f"{table}"] + reasons
        return chosen, confidence, reasons, [n for n in equivalent if n in names and n != chosen.name]
    tied = [n for n in names if n != top and (by[n].trial_p is None or by[n].trial_p > P_EQUIVALENT)]
    p_chosen = by[chosen.name].trial_p if chosen.name in by else None
    if top != chosen.name and p_chosen is not None and p_chosen < P_EQUIVALENT:
        line = (f"trial: {top} scored {by[top].trial_mean:.4g} +- {by[top].trial_std:.2g} vs {chosen.name} "
                f"{by[chosen.name].trial_mean:.4g} (Welch's t-test over {trial_seeds} seeds, p = {p_chosen:.3g}): "
                "the trial overrides the analysis")
        chosen = cand_of[top]
        confidence = "medium" if tied else "high"
        equivalent = tied
    else:
        line = f"trial ({trial_seeds} seeds each): {table}"
        others = [n for n in names if n != chosen.name]
        if top == chosen.name:
            significant = all((by[n].trial_p or 1.0) < P_EQUIVALENT for n in others)
            confidence = "high" if significant else "medium"
            equivalent = [n for n in tied if n != chosen.name]
        else:  # the trial's best is within seed noise of the pick: both stay, the trial trained only `names`
            confidence = "medium"
            equivalent = sorted(({top} | set(tied) | {n for n in equivalent if n in names}) - {chosen.name})
    reasons = [bias, line] + reasons
    if equivalent:
        reasons.append("equivalent in the trial (Welch's t-test, p > 0.05): " + ", ".join(equivalent))
    return chosen, confidence, reasons, equivalent
