"""Named candidate initializations: the vocabulary shared by diagnose, bench and advise.

A candidate is ``(scheme, mode, options)`` for :func:`initwise.plan`. Names are either registered below or
written inline as ``SCHEME[_MODE][:option=value,...]``, e.g. ``"kaiming_fan_in:residual_scale=0.1"`` or
``"kaiming_fan_out:gain=relu,fans=torch"``.
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

    def plan_kwargs(self) -> dict[str, Any]:
        return {"scheme": self.scheme, "mode": self.mode, **self.options}


def _c(name: str, scheme: str, mode: str = "fan_in", description: str = "", **options: Any) -> Candidate:
    return Candidate(name, scheme, mode, options, description)


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
    _c("lecun", "lecun", "fan_in", "LeCun normal, 1/fan_in"),
    _c("orthogonal", "orthogonal", "fan_in", "(delta-)orthogonal with the traced gain"),
    _c("identity", "identity", "fan_in", "identity (eye/dirac/nearest) where in == out, else He fan_in"),
    _c("kaiming_fan_in_res0.1", "kaiming", "fan_in", "He fan_in, residual branch ends x0.1 (ESRGAN)",
       residual_scale=0.1),
    _c("kaiming_fan_in_zero_res", "kaiming", "fan_in", "He fan_in, residual branch ends zero (Goyal et al. 2017)",
       zero_init_residual=True),
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
    for item in filter(None, (s.strip() for s in tail.split(","))):
        key, eq, val = item.partition("=")
        if not eq:
            raise ValueError(f"candidate option {item!r} in {spec!r} must be key=value")
        options[key.strip()] = _value(val.strip())
    return Candidate(spec, scheme, mode, options, base.description if base else "")
