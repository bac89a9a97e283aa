"""What a plan is: per parameter (:class:`ParamPlan`), per layer (:class:`LayerPlan`) and for the whole model
(:class:`Plan`): data, printing and JSON. How a plan is made is :mod:`initwise._plan`; how it is applied,
:mod:`initwise._apply`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ._apply import apply_plan
from ._fans import Fans
from ._graph import Graph

__all__ = ["ParamPlan", "LayerPlan", "Plan"]


@dataclass
class ParamPlan:
    """How one parameter is initialized. ``std`` is the root-mean-square value its entries will have."""

    param: str
    layer: str
    shape: tuple[int, ...]
    method: str  # normal | uniform | truncated_normal | orthogonal | identity | icnr | zeros | ones | torch_default | keep
    #   | weight_norm_g (weight norm magnitude: set to the norm of its drawn direction)
    fans: Fans | None = None
    fan: float | None = None
    gain: float | None = None
    scale: float = 1.0
    std: float | None = None
    note: str = ""

    @property
    def bound(self) -> float | None:
        return math.sqrt(3.0) * self.std if self.method == "uniform" and self.std is not None else None

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("param", "layer", "method", "fan", "gain", "scale", "std", "note")}
        d["shape"] = list(self.shape)
        d["bound"] = self.bound
        if self.fans is not None:
            d["fans"] = {k: getattr(self.fans, k) for k in ("fan_in", "fan_out", "nominal_fan_in", "nominal_fan_out",
                                                             "torch_fan_in", "torch_fan_out", "rule", "blocks")}
        return d


@dataclass
class LayerPlan:
    """One parameterized layer: its traced context, its parameters' plans and the analytic propagation.

    ``forward_gain`` / ``backward_gain`` are the layer's own factors (``fan_in_eff * E[w^2]`` and
    ``fan_out_eff * E[w^2]``); ``forward`` is the predicted second moment of its output (pre-activation) relative
    to the input's; ``backward`` the predicted second moment of the gradient at its output relative to a
    unit-variance cotangent at the model's output. ``forward_bound`` / ``backward_bound``: the error bound of
    the prediction (1.0: every rule on its path is exact; else the product of the measured bounds of the
    approximate rules on it, ``inf`` when an op the rules do not know is on it). ``backward_removed``: the
    factor of the backward that training-mode batch (instance) norms remove as the gradient's per-channel
    (per-sample) mean, on the path from the output (1.0: none; small after global pooling at a small batch).
    """

    name: str
    type: str
    shape: tuple[int, ...]
    activation: str
    gain: float | None
    mode: str
    method: str
    std: float | None
    fans: Fans | None
    params: list[ParamPlan]
    norm: str | None = None
    residual_end: bool = False
    pixel_shuffle: int | None = None
    is_output: bool = False
    forward_gain: float | None = None
    backward_gain: float | None = None
    forward: float | None = None
    backward: float | None = None
    notes: list[str] = field(default_factory=list)
    forward_bound: float = 1.0
    backward_bound: float = 1.0
    backward_removed: float = 1.0

    def __getattr__(self, name: str) -> Any:
        # the propagated figures of a plan whose propagation has not run yet (see Plan._defer): run it now
        plan = self.__dict__.get("_plan") if name in _LAZY_LAYER or name in _LAZY_GAINS else None
        if plan is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        plan._resolve()
        if name not in self.__dict__:  # a copy of one of the plan's layers: the figures of the layer it copies
            src = next(lp for lp in plan.layers if lp.name == self.name)
            self.__dict__.update({k: src.__dict__[k] for k in (*_LAZY_LAYER, *_LAZY_GAINS)})
        self.__dict__.pop("_plan", None)
        return self.__dict__[name]

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("name", "type", "activation", "gain", "mode", "method", "std", "norm",
                                           "residual_end", "pixel_shuffle", "is_output", "forward_gain",
                                           "backward_gain", "forward", "backward", "notes", "forward_bound",
                                           "backward_bound", "backward_removed")}
        d["shape"] = list(self.shape)
        d["fan_in"] = self.fans.fan_in if self.fans else None
        d["fan_out"] = self.fans.fan_out if self.fans else None
        d["params"] = [p.to_dict() for p in self.params]
        return d


@dataclass
class Plan:
    """A whole-model initialization plan. Print it for a table; :meth:`to_dict` / :meth:`to_json` for data."""

    scheme: str
    mode: str
    options: dict[str, Any]
    layers: list[LayerPlan]
    graph: Graph = field(repr=False)
    input_ms: float = 1.0
    output_forward: float | None = None
    untouched: list[str] = field(default_factory=list)
    approximate: list[str] = field(default_factory=list)
    norm_params: list[ParamPlan] = field(default_factory=list)
    kept_params: list[ParamPlan] = field(default_factory=list)
    # what the propagation was computed from (layer moments, norm moments, whether parameter values were read):
    # lets init_'s plan cache re-propagate for another example without planning again
    _moments: tuple | None = field(default=None, repr=False, compare=False)
    # every node's propagated moments (initwise._propagate.Propagation; diagnose's noise model reads them)
    _propagation: Any = field(default=None, repr=False, compare=False)

    def __getattr__(self, name: str) -> Any:
        if name in _LAZY_PLAN and "_lazy" in self.__dict__:
            self._resolve()
            return self.__dict__[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _defer(self, inputs: tuple) -> None:
        """Leave the propagated figures (``input_ms``, ``output_forward``, ``approximate``, ``_propagation`` and
        every layer's ``forward``, ``backward``, ``*_bound``, ``backward_removed``) to the propagation, run when one
        of them is first read (``init_`` never reads them: applying a plan does not need its predictions). ``inputs``:
        ``(layer moments, norm moments, what the propagation reads from the example)``, plain data (the plan
        stays picklable); see :func:`initwise._plan_moments.attach_propagation`."""
        for k in _LAZY_PLAN:
            self.__dict__.pop(k, None)
        for lp in self.layers:
            for k in _LAZY_LAYER:
                lp.__dict__.pop(k, None)
            lp.__dict__["_plan"] = self
        self.__dict__["_lazy"] = inputs

    def _resolve(self) -> None:
        """Run a deferred propagation (see :meth:`_defer`); nothing when there is none."""
        lazy = self.__dict__.pop("_lazy", None)
        if lazy is None:
            return
        from ._plan_moments import attach_propagation  # (it builds on this module's LayerPlan)

        for lp in self.layers:
            lp.__dict__.update(forward=None, backward=None, forward_bound=1.0, backward_bound=1.0,
                               backward_removed=1.0)
        try:
            layer_ms, norm_ms, inputs = lazy
            if any("forward_gain" not in lp.__dict__ for lp in self.layers):
                layer_ms = self._deferred_moments(layer_ms)
                if self._moments is not None:  # what the propagation was computed from, complete
                    self._moments = (layer_ms, *self._moments[1:])
            self.input_ms, self.output_forward, self.approximate, self._propagation = attach_propagation(
                self.graph, self.layers, layer_ms, norm_ms, inputs)
        except AttributeError as e:  # raised inside __getattr__ it would read as "no such attribute"
            raise RuntimeError(f"the plan's propagation failed: {type(e).__name__}: {e}") from e
        finally:
            for lp in self.layers:
                lp.__dict__.pop("_plan", None)

    def _deferred_moments(self, layer_ms: dict) -> dict:
        """``layer_ms`` (left as it is: a cached plan's copies share it) with the moments of the layers the plan
        left to the propagation (see :func:`initwise._plan._moments_deferrable`), and their gains set."""
        from ._plan_moments import _moments_of

        layer_ms = dict(layer_ms)
        by_name = {lp.name: lp for lp in self.layers}
        with torch._C.DisableTorchFunction():  # plan's own arithmetic: no mode of the caller needs to see it
            for info in self.graph.layers:
                lp = by_name.get(info.name)
                if lp is None or "forward_gain" in lp.__dict__:
                    continue
                lm = layer_ms[info.name] = _moments_of(info, lp, self.graph)
                affine = lm.kind == "affine"
                lp.__dict__.update(forward_gain=lm.fan_in * lm.weight_ms if affine else None,
                                   backward_gain=lm.fan_out * lm.weight_ms if affine else None)
        return layer_ms

    def __iter__(self):
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, name: str) -> LayerPlan:
        for lp in self.layers:
            if lp.name == name:
                return lp
        raise KeyError(f"no layer {name!r} in the plan; layers: {', '.join(lp.name for lp in self.layers)}")

    @property
    def params(self) -> list[ParamPlan]:
        """Every parameter's plan: layers' in execution order, then normalization layers', then every other
        parameter (kept, with the reason: its role, frozen, or not used by the example)."""
        return [p for lp in self.layers for p in lp.params] + list(self.norm_params) + list(self.kept_params)

    def apply(self, model: nn.Module, generator: torch.Generator | None = None, seed: int | None = None) -> "Plan":
        """Initialize ``model`` as planned, in place; the whole plan is validated before the first draw (see
        :func:`initwise._apply.apply_plan` for what an interrupt while drawing does)."""
        apply_plan(self, model, generator=generator, seed=seed)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "scheme": self.scheme, "mode": self.mode, "options": _jsonable(self.options),
            "input_second_moment": self.input_ms, "output_forward": self.output_forward,
            "layers": [lp.to_dict() for lp in self.layers], "untouched": list(self.untouched),
            "approximate": list(self.approximate), "unknown_ops": list(self.graph.unknown),
            "norm_params": [p.to_dict() for p in self.norm_params],
            "kept_params": [p.to_dict() for p in self.kept_params],
        }

    def to_json(self, **kwargs: Any) -> str:
        import json

        return json.dumps(self.to_dict(), **{"indent": 2, **kwargs})

    def __str__(self) -> str:
        from ._report import plan_table

        return plan_table(self)


# the figures a deferred propagation fills (Plan._defer): no class attribute, so that __getattr__ sees them missing
_LAZY_LAYER = ("forward", "backward", "forward_bound", "backward_bound", "backward_removed")
_LAZY_PLAN = ("input_ms", "output_forward", "approximate", "_propagation")
# a layer's own gains, left to the propagation by plans whose layer moments read no parameter value
# (initwise._plan._moments_deferrable); set by Plan._resolve
_LAZY_GAINS = ("forward_gain", "backward_gain")
for _k in (*_LAZY_LAYER, *_LAZY_GAINS):
    delattr(LayerPlan, _k)
for _k in ("input_ms", "output_forward", "_propagation"):  # approximate has a default factory: no class attribute
    delattr(Plan, _k)
del _k


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)
