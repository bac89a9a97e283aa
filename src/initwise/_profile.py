"""What :func:`initwise.diagnose` returns: per scheme and layer, measurements beside predictions, with flags."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ._plan import Plan
from ._probe import SiteStats

__all__ = ["LayerProfile", "Profile", "SchemeProfile", "Stats"]


@dataclass
class Stats:
    """Mean, variance and second moment of one measured tensor (over every element of the batch)."""

    mean: float
    variance: float
    second_moment: float
    count: int

    @classmethod
    def of(cls, s: SiteStats | None) -> "Stats | None":
        return None if s is None else cls(s.mean, s.variance, s.second_moment, s.count)


@dataclass
class LayerProfile:
    """One layer under one scheme: measurements, the plan's predictions, their noise and the flags.

    ``forward`` is the measured ``E[y^2] / E[x^2]`` of the layer's output (pre-activation) relative to the model's
    input, ``backward`` the measured ``E[dy^2] / E[c^2]`` of the gradient there relative to the cotangent ``c`` at
    the model's output; ``predicted_*`` are the plan's (:class:`initwise.LayerPlan` ``forward``/``backward``);
    ``*_noise`` the relative standard error of the measurement (see :func:`diagnose`); ``*_exact`` is False when
    the prediction passes through an op the analytic rules only approximate.
    """

    name: str
    type: str
    order: int
    calls: int
    activation: str
    fan_in: float | None
    fan_out: float | None
    std: float | None
    output: Stats | None
    activation_output: Stats | None
    grad_output: Stats | None
    weight_grad: Stats | None
    forward: float | None
    backward: float | None
    predicted_forward: float | None
    predicted_backward: float | None
    forward_noise: float | None
    backward_noise: float | None
    forward_exact: bool
    backward_exact: bool
    dead_fraction: float | None = None
    saturated_fraction: float | None = None
    flags: list[str] = field(default_factory=list)
    forward_bound: float = 1.0
    backward_bound: float = 1.0
    backward_removed: float = 1.0
    messages: list[str] = field(default_factory=list)
    # the averages between this layer and the output hand each value 1/k of a gradient: per element, this factor
    # of the backward is theirs (see initwise._pooled), not the init's
    backward_pooled: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        for k in ("output", "activation_output", "grad_output", "weight_grad"):
            d[k] = None if d[k] is None else vars(d[k]).copy()
        d["flags"] = list(self.flags)
        d["messages"] = list(self.messages)
        return d


@dataclass
class SchemeProfile:
    """The profile of the model under one scheme (``"current"``: the weights as they are).

    ``output_forward``: the measured ``E[out^2] / E[x^2]`` of the model's output (after any global skip: the tensor
    ``plan.output_forward`` predicts), the largest over several outputs.
    """

    scheme: str
    description: str
    layers: list[LayerProfile]
    input_second_moment: float
    cotangent_second_moment: float
    plan: Plan = field(repr=False)
    output_forward: float | None = None

    def __iter__(self) -> Iterator[LayerProfile]:
        return iter(self.layers)

    def __getitem__(self, name: str) -> LayerProfile:
        for lp in self.layers:
            if lp.name == name:
                return lp
        raise KeyError(f"no layer {name!r} in the profile; layers: {', '.join(lp.name for lp in self.layers)}")

    @property
    def flagged(self) -> list[LayerProfile]:
        return [lp for lp in self.layers if lp.flags]

    def to_dict(self) -> dict[str, Any]:
        return {"scheme": self.scheme, "description": self.description, "input_second_moment":
                self.input_second_moment, "cotangent_second_moment": self.cotangent_second_moment,
                "output_forward": self.output_forward,
                "layers": [lp.to_dict() for lp in self.layers]}


@dataclass
class Profile:
    """What :func:`diagnose` returns: one :class:`SchemeProfile` per scheme. ``str()`` is a table (80 columns)."""

    runs: list[SchemeProfile]
    cotangent: str
    input_shapes: list[list[int]]
    thresholds: dict[str, float]

    @property
    def schemes(self) -> list[str]:
        return [r.scheme for r in self.runs]

    @property
    def layers(self) -> list[LayerProfile]:
        """The layers of the only scheme profiled (``profile[scheme].layers`` when there are several)."""
        if len(self.runs) != 1:
            raise ValueError(f"{len(self.runs)} schemes were profiled ({', '.join(self.schemes)}): "
                             "use profile[scheme].layers")
        return self.runs[0].layers

    def __iter__(self) -> Iterator[SchemeProfile]:
        return iter(self.runs)

    def __len__(self) -> int:
        return len(self.runs)

    def __getitem__(self, scheme: str) -> SchemeProfile:
        for r in self.runs:
            if r.scheme == scheme:
                return r
        raise KeyError(f"scheme {scheme!r} was not profiled; profiled: {', '.join(self.schemes)}")

    def to_dict(self) -> dict[str, Any]:
        return {"cotangent": self.cotangent, "input_shapes": self.input_shapes, "thresholds": self.thresholds,
                "schemes": self.schemes, "runs": [r.to_dict() for r in self.runs]}

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **{"indent": 2, **kwargs})

    def plot(self, path: Any = None, **kwargs: Any) -> Any:
        """The signal-propagation plot (needs matplotlib); see :func:`initwise._plot.plot_profile`."""
        from ._plot import plot_profile

        return plot_profile(self, path, **kwargs)

    def __str__(self) -> str:
        from ._profile_table import profile_table

        return profile_table(self)
