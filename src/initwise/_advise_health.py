"""Health runs on demand for :func:`initwise.advise`: each candidate's gradient health from one
:func:`initwise.diagnose` run, measured only when the decision or an answer needs it, several candidates per
diagnose call where possible, and never twice (``_advise.py`` decides; this module measures)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ._advise_evidence import Drawer, health, kept_zeros, no_gradient
from ._advise_rule import rejects
from ._candidates import Candidate
from ._diagnose import Profile, diagnose
from ._plan import Plan

__all__ = ["Health", "needed"]


def _measure(model: nn.Module, example: Any, cands: list[Candidate], seed: int,
             drawers: dict[str, Drawer], plans: dict[str, Plan]) -> Profile:
    """One diagnose run per candidate; LSUV candidates are diagnosed on a copy they initialized ("as it is").
    The candidates' plans (made on one graph) are made here if missing and given to diagnose, which then neither
    traces nor plans again."""
    runs: dict[str, Any] = {}
    meta: Profile | None = None
    plain = [c for c in cands if c.lsuv is None]
    if plain:
        given = {c.name: drawers[c.name].plan for c in plain if not c.keeps_weights}
        meta = diagnose(model, example, schemes=plain, generator=torch.Generator().manual_seed(seed),
                        plans=given or None)
        runs.update({r.scheme: r for r in meta.runs})
    for c in cands:
        if c.lsuv is not None:
            m = copy.deepcopy(model)
            drawers[c.name](m, 0)  # draw 0: the draw the initial loss and the probe start from
            prof = diagnose(m, example, generator=torch.Generator().manual_seed(seed))
            run = prof.runs[0]
            run.scheme, run.description = c.name, c.description
            runs[c.name] = run
            meta = meta or prof
    assert meta is not None  # cands is not empty
    return Profile([runs[c.name] for c in cands], meta.cotangent, meta.input_shapes, meta.thresholds)


class Health:
    """Health runs on demand: a candidate is measured when the decision (or an answer) needs it, several at a
    time where possible (one diagnose call), and never twice."""

    def __init__(self, model: nn.Module, example: Any, seed: int, drawers: dict[str, Drawer],
                 plans: dict[str, Plan], lead: tuple[str, float] | None = None) -> None:
        self.model, self.example, self.seed, self.drawers, self.plans = model, example, seed, drawers, plans
        self.lead = lead
        self.runs: dict[str, Any] = {}
        self.meta: Profile | None = None
        self.silent: set[str] | None = None
        self.verdict: dict[str, tuple] = {}

    def measure(self, cands: Sequence[Candidate]) -> None:
        todo = [c for c in dict.fromkeys(cands) if c.name not in self.runs]
        if not todo:
            return
        prof = _measure(self.model, self.example, todo, self.seed, self.drawers, self.plans)
        self.meta = self.meta or prof
        self.runs.update({c.name: r for c, r in zip(todo, prof.runs)})
        if self.silent is None:
            # silent under every candidate of the first batch, and the model keeps zero parameters: the model's
            # own design (NAFNet's beta/gamma), not a dead init
            zeros = kept_zeros(self.model, prof.runs)
            self.silent = set.intersection(*(no_gradient(r) for r in prof.runs)) if zeros else set()
        for c in todo:
            self.verdict[c.name] = health(self.runs[c.name], self.silent, self.lead)

    def healthy(self, c: Candidate) -> bool:
        self.measure([c])
        return not rejects(self.verdict[c.name][3])[0]

    def profile(self, cands: Sequence[Candidate]) -> Profile:
        assert self.meta is not None
        runs = [self.runs[c.name] for c in cands if c.name in self.runs]
        return Profile(runs, self.meta.cotangent, self.meta.input_shapes, self.meta.thresholds)


def needed(cands: Sequence[Candidate], model: nn.Module, example: Any, base: Plan) -> list[Candidate]:
    """The candidates the answers read health from: fan_in and fan_out (question a) and the model's current init
    (question e: ``current`` when it differs from PyTorch's default, else ``default``)."""
    from ._candidate_set import _differs_from_default

    cur = "current" if any(c.name == "current" for c in cands) and _differs_from_default(model, example, base) \
        else "default"
    return [c for c in cands if c.name in ("kaiming_fan_in", "kaiming_fan_out", cur)]
