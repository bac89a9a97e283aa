"""Named candidate initializations: the vocabulary shared by diagnose, bench and advise.

A candidate is ``(scheme, mode, options)`` for :func:`initwise.plan`, optionally followed by a data-driven
rescaling (``lsuv``: :func:`initwise.lsuv_`). Names are either registered below or written inline as
``SCHEME[_MODE][:option=value,...]``, e.g. ``"kaiming_fan_in:residual_scale=0.1"`` or
``"kaiming_fan_out:gain=relu,fans=torch"``. Which candidates a given model gets is decided from their parts by
:func:`initwise.generate_candidates` (``_candidate_set.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._plan import parse_scheme

__all__ = ["Candidate", "CANDIDATES", "candidate"]


@dataclass(frozen=True)
class Candidate:
    """One initialization to compare: a name, the plan's scheme and mode, and its options."""

    name: str
    scheme: str
    mode: str
    options: dict[str, Any] = field(default_factory=dict, hash=False)
    description: str = ""
    lsuv: float | None = None  # after the plan, rescale layers in execution order to this output second moment

    def plan_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`initwise.plan` / :func:`initwise.init_` (the starting plan for LSUV)."""
        return {"scheme": self.scheme, "mode": self.mode, **self.options}

    @property
    def keeps_weights(self) -> bool:
        """True for ``current``: the model's own initialization, nothing drawn."""
        return self.scheme == "current"

    def init_(self, model: Any, example: Any, *, generator: Any = None, seed: int | None = None,
              plan: Any = None) -> Any:
        """Initialize ``model`` as this candidate says (the plan, then LSUV where asked); returns the plan.
        ``plan``: this candidate's plan for ``model``'s architecture, made before (saves a trace per call)."""
        if plan is not None:
            plan.apply(model, generator=generator, seed=seed)
            if self.lsuv is not None:
                from ._lsuv import rescale_

                rescale_(model, example, plan, target=self.lsuv)
            return plan
        if self.lsuv is not None:
            from ._lsuv import lsuv_

            return lsuv_(model, example, **self.plan_kwargs(), target=self.lsuv, generator=generator, seed=seed)
        from ._init import init_

        return init_(model, example, **self.plan_kwargs(), generator=generator, seed=seed)


def _c(name: str, scheme: str, mode: str = "fan_in", description: str = "", lsuv: float | None = None,
       **options: Any) -> Candidate:
    return Candidate(name, scheme, mode, options, description, lsuv)


CANDIDATES: dict[str, Candidate] = {c.name: c for c in (
    _c("default", "torch_default", description="PyTorch's constructors: kaiming_uniform_(a=sqrt(5)), Var = 1/(3 fan_in)"),
    _c("kaiming_fan_in", "kaiming", "fan_in", "He fan_in, effective fans, gain of the traced activation"),
    _c("kaiming_fan_out", "kaiming", "fan_out", "He fan_out, effective fans, backward gain of the traced activation"),
    _c("kaiming_fan_avg", "kaiming", "fan_avg", "He with (fan_in + fan_out) / 2, traced gain"),
    _c("relu_fan_in", "kaiming", "fan_in", "the common kaiming_normal_(w, nonlinearity='relu') on every layer, "
       "torch's shape fans", gain="relu", fans="torch"),
    _c("relu_fan_out", "kaiming", "fan_out", "the common kaiming_normal_(w, mode='fan_out', nonlinearity='relu') on "
       "every layer, torch's shape fans", gain="relu", fans="torch"),
    _c("linear_gain_fan_in", "kaiming", "fan_in", "He fan_in with a wrong (linear) gain on every layer", gain="linear"),
    _c("xavier", "xavier", "fan_avg", "Glorot normal, gain 1, effective fans"),
    _c("lecun", "lecun", "fan_in", "LeCun normal: Var = 1/fan_in (He fan_in with gain 1)"),
    _c("torch_gain_fan_in", "kaiming", "fan_in", "He fan_in with torch.nn.init.calculate_gain's value for the traced "
       "activation (its table: leaky_relu sqrt(2/(1+a^2)), tanh 5/3, selu 3/4, else 1)", gain_convention="torch"),
    _c("current", "current", "fan_in", "the model's own initialization, as its constructor left it"),
    _c("lsuv", "orthogonal", "fan_in", "LSUV (Mishkin & Matas 2016): orthogonal, then each layer in execution order "
       "rescaled to output second moment 1 on the example", lsuv=1.0),
    _c("orthogonal", "orthogonal", "fan_in", "(delta-)orthogonal with the traced gain"),
    _c("identity", "identity", "fan_in", "identity (eye/dirac/nearest) where in == out, else He fan_in"),
    _c("kaiming_fan_in_res0.1", "kaiming", "fan_in", "He fan_in, residual branch ends x0.1 (ESRGAN)",
       residual_scale=0.1),
    _c("kaiming_fan_in_zero_res", "kaiming", "fan_in", "He fan_in, residual branch ends zero (Goyal et al. 2017)",
       zero_init_residual=True),
    _c("lecun_res0.1", "lecun", "fan_in", "LeCun normal, residual branch ends x0.1", residual_scale=0.1),
    _c("lecun_zero_res", "lecun", "fan_in", "LeCun normal, residual branch ends zero", zero_init_residual=True),
    _c("kaiming_fan_in_out0.1", "kaiming", "fan_in", "He fan_in, output layer x0.1 (small residual prediction)",
       output_scale=0.1),
)}


def _value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "yes"):
        return True
    if low in ("false", "no"):
        return False
    if low == "none":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def candidate(spec: str | Candidate) -> Candidate:
    """Resolve a candidate name (registered, or ``SCHEME[_MODE][:key=value,...]``).

    Example:
        >>> candidate("kaiming_fan_in:residual_scale=0.1").options
        {'residual_scale': 0.1}
    """
    if isinstance(spec, Candidate):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise TypeError(f"a candidate must be a non-empty string or a Candidate, got {spec!r}")
    spec = spec.strip()
    if spec in CANDIDATES:
        return CANDIDATES[spec]
    head, _, tail = spec.partition(":")
    base = CANDIDATES.get(head)
    try:
        scheme, mode = (base.scheme, base.mode) if base else parse_scheme(head)
    except ValueError as e:
        raise ValueError(f"unknown candidate {spec!r}: {e}; registered names: {', '.join(CANDIDATES)}") from None
    options = dict(base.options) if base else {}
    lsuv = base.lsuv if base else None
    for item in filter(None, (s.strip() for s in tail.split(","))):
        key, eq, val = item.partition("=")
        if not eq:
            raise ValueError(f"candidate option {item!r} in {spec!r} must be key=value")
        if key.strip() == "lsuv":
            lsuv = _value(val.strip())
            if isinstance(lsuv, bool) or not isinstance(lsuv, (int, float)) or not lsuv > 0:
                raise ValueError(f"candidate option lsuv in {spec!r} must be a number > 0 (the target second moment)")
            lsuv = float(lsuv)
            continue
        options[key.strip()] = _value(val.strip())
    return Candidate(spec, scheme, mode, options, base.description if base else "", lsuv)
