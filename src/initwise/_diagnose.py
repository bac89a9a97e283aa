"""Measure what an initialization does to the forward signal and the backward gradient, layer by layer.

:func:`diagnose` runs the model once forward and once backward with a :class:`initwise._probe.Probe` attached and
puts the plan's analytic prediction (:func:`initwise.plan`) beside every measurement, with flags for vanishing,
exploding, dead and saturated units and for a measurement that departs from its prediction by more than its noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ._candidates import Candidate, candidate
from ._graph import Graph, trace
from ._guard import Snapshot
from ._plan import Plan, plan as make_plan
from ._flags import DEAD, EXPLODING, MISMATCH_Z, SATURATED, VANISHING
from ._flags import flags as _flags
from ._flags import messages as _messages
from ._probe import Probe, Site, finish, reduce
from ._profile import LayerProfile, Profile, SchemeProfile, Stats
from ._profile_table import profile_table, run_table
from ._nested import check_finite
from ._noise import noises
from ._pooled import pooling_factors
from ._row_norms import row_ms, sharable
from ._row_norms import shared as shared_rows
from ._nested import map_tensors as _map
from ._nested import tensors as _tensors
from ._where import forward_error

__all__ = ["LayerProfile", "Profile", "SchemeProfile", "Stats", "diagnose", "VANISHING", "EXPLODING", "DEAD",
           "SATURATED", "MISMATCH_Z", "run_table", "profile_table"]


def diagnose(model: nn.Module, inputs: Any, *, loss: Callable[[Any], torch.Tensor] | None = None,
             schemes: Sequence[str | Candidate] | None = None,
             generator: torch.Generator | None = None, plans: dict[str, Plan] | None = None) -> Profile:
    """Measure forward and backward second moments per layer, beside the plan's analytic prediction.

    One forward and one backward pass per scheme. Per parameterized layer (execution order, first call) the probe
    reduces inside hooks the layer's output (pre-activation), the output of the activation that follows it, the
    gradient with respect to the layer's output, and the weight's gradient; nothing is stored per activation.

    The backward signal is, by default, a standard normal cotangent ``c`` at every floating-point output (drawn
    from ``generator``, the same for every scheme); ``loss(output) -> scalar`` replaces it (the cotangent is then
    ``dloss/doutput``). Measurements are relative: ``forward = E[y^2] / E[x^2]`` (the input's), ``backward =
    E[dy^2] / E[c^2]``, as the plan predicts them (He et al., 2015, Eq. 10 and 14).

    Noise: the relative standard error of a measurement is how far ``ln(measured)`` moves when the weights are
    drawn again (the example and the cotangent fixed), estimated from the pass itself (:mod:`initwise._noise`):
    each layer's realized gain, from the spread of its output channels and of its weight rows (backward: the
    rank of the gradient its weight meets), a ReLU's mask, weighted along the graph by how much of the signal goes
    through it (shares at joins, nothing past a normalization forward, minus the forward's through its backward).
    Calibrated against the spread over weight draws on small models (tests/test_noise.py); where nothing random
    lies between a layer and the output (its gradient is the cotangent) it is the sampling floor
    ``sqrt(2 / count)``, never 0.

    Flags (thresholds are the module constants): ``forward_vanishing`` / ``forward_exploding`` (forward below
    ``VANISHING`` = 1e-2 or above ``EXPLODING`` = 1e2), ``backward_vanishing`` / ``backward_exploding``,
    ``dead`` (more than ``DEAD`` of a ReLU-like activation's channels never positive over the batch),
    ``saturated`` (more than ``SATURATED`` of tanh inputs beyond +-2.5, sigmoid beyond +-5, read from the output),
    ``forward_mismatch`` / ``backward_mismatch`` (``|ln(measured / predicted)|`` above ``MISMATCH_Z`` standard
    errors beyond the prediction's bound), and instead of ``backward_vanishing`` where the architecture explains
    it: ``backward_batch_statistics`` (normalizations remove the gradient's mean over what they normalize:
    after global pooling, all of it for a batch norm at batch 1 or an instance norm) and ``backward_pooled``
    (averages hand each value ``1/k`` of a gradient: per element ``1/k^2`` after a global pooling over ``k``
    positions). Every flag also comes as a sentence (``LayerProfile.messages``).

    The model is never changed: parameters, buffers (BatchNorm running stats), ``.grad`` (gradients come from
    ``torch.autograd.grad``), train/eval mode, ``requires_grad``, the global and CUDA RNG states and hooks are as
    before, also when the forward, the loss or the backward raises (:mod:`initwise._guard`: also every module's
    attributes, the parameters the forward itself writes and the inputs). Each scheme is applied to the model
    and undone after its pass. The model runs in its own train/eval mode; dropout masks are drawn from the seed
    that ``generator`` gives (the same for every scheme), not from the caller's RNG.

    Args:
        model: any ``nn.Module``.
        inputs: a tensor, a tuple/list of positional arguments or a dict of keyword arguments (as
            :func:`initwise.trace`); a batch of several samples gives the noise estimates something to work with.
        loss: ``loss(output)`` returning a scalar tensor; None for the random cotangent.
        schemes: candidate names (:func:`initwise.candidate`: ``"default"``, ``"kaiming_fan_in"``,
            ``"kaiming_fan_out"``, ``"orthogonal"``, ``"kaiming_fan_in:residual_scale=0.1"``, ...); each is applied
            to a copy with :meth:`initwise.Plan.apply` and predicted by its own plan. None: the model as it is
            (plan scheme ``"current"``).
        generator: draws the cotangent and the schemes' weights; None draws a seed from the global RNG (whose
            state is restored).
        plans: plans already made for some of ``schemes``, by candidate name, each ``plan(model, inputs,
            **candidate.plan_kwargs())`` on one traced graph: used instead of planning again, and that graph instead
            of a new trace (what :func:`initwise.advise` passes; all of them must share one graph).

    Example:
        >>> net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        >>> prof = diagnose(net, torch.randn(32, 64), schemes=["kaiming_fan_in"])
        >>> [lp.activation for lp in prof["kaiming_fan_in"]]
        ['relu', 'linear']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if loss is not None and not callable(loss):
        raise TypeError(f"loss must be a callable output -> scalar tensor, got {type(loss).__name__}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    check_finite(inputs, "the example input")
    on_meta = next((n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta), None)
    if on_meta is not None:  # a deferred-init model: there are no values to measure
        raise ValueError(f"{on_meta} is on the meta device: diagnose measures real forward and backward passes; "
                         "materialize the model first (model.to_empty(device=...), then initwise.init_)")
    if isinstance(schemes, (str, Candidate)):
        schemes = [schemes]
    cands = [candidate(s) for s in schemes] if schemes is not None else None
    if cands is not None and not cands:
        raise ValueError("schemes is empty: pass None to profile the model as it is, or candidate names")
    given = _given_plans(plans, cands)
    args, kwargs = _split(inputs)
    # one guard (initwise._guard) around everything: the schemes run on the model itself and are undone after
    # each (Plan.apply swaps storages, which restore swaps back; whatever the forward writes is put back)
    snap = Snapshot(model, (inputs,))
    try:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        graph, sliced = (next(iter(given.values())).graph, False) if given else _trace_once(model, inputs)
        if not graph.layers:
            raise ValueError(f"the trace of {type(model).__name__} found no parameterized layer on this input (a "
                             "forward that uses its parameters only through functional ops?): nothing to diagnose")
        for attempt in (0, 1):
            runs = []
            todo = cands or [None]
            for i, cand in enumerate(todo):
                snap.seed(seed)  # the same dropout masks for every scheme, drawn from the seed, not the caller's RNG
                with shared_rows():  # the plan's and the measurement's weight rows read once (per scheme)
                    if cand is None:
                        p, name, desc = make_plan(model, inputs, "current", graph=graph), "current", \
                            "the model's weights as they are"
                    else:
                        p = given.get(cand.name) or make_plan(model, inputs, graph=graph, **cand.plan_kwargs())
                        name, desc = cand.name, cand.description
                        p.apply(model, generator=torch.Generator().manual_seed(seed + 1 + i))
                    # after an error, and after the last scheme, snap.close() below puts everything back: the
                    # model is restored here only before another scheme's pass or a new trace
                    run, consistent = _measure(model, graph, p, args, kwargs, loss, seed, name, desc)
                retrace = not consistent and sliced and attempt == 0
                if retrace or i + 1 < len(todo):
                    snap.restore()
                if retrace:
                    break  # the one-sample trace took another path: trace the whole batch and start again
                runs.append(run)
            else:
                break
            graph, sliced = trace(model, inputs), False
        shapes = [list(t.shape) for t in _tensors((args, kwargs))]
        return Profile(runs, "loss" if loss is not None else "random normal", shapes,
                       {"vanishing": VANISHING, "exploding": EXPLODING, "dead": DEAD, "saturated": SATURATED,
                        "mismatch_z": MISMATCH_Z})
    finally:
        snap.close()


def _given_plans(plans: Any, cands: list[Candidate] | None) -> dict[str, Plan]:
    """The ``plans`` argument, checked: a dict of :class:`Plan` by scheme name, one graph for all."""
    if plans is None:
        return {}
    if not isinstance(plans, dict) or not all(isinstance(p, Plan) for p in plans.values()):
        raise TypeError("plans must be a dict of scheme name -> initwise.Plan")
    names = {c.name for c in cands or []}
    out = {k: p for k, p in plans.items() if k in names}
    if len({id(p.graph) for p in out.values()}) > 1:
        raise ValueError("plans must share one traced graph (plan(model, inputs, graph=g, ...) with the same g)")
    return out


def _split(inputs: Any) -> tuple[tuple, dict]:
    if isinstance(inputs, torch.Tensor):
        return (inputs,), {}
    if isinstance(inputs, (tuple, list)):
        return tuple(inputs), {}
    if isinstance(inputs, dict):
        return (), dict(inputs)
    raise TypeError("inputs must be a tensor, a tuple/list of positional arguments or a dict of keyword arguments, "
                    f"got {type(inputs).__name__}")


def _trace_once(model: nn.Module, inputs: Any) -> tuple[Graph, bool]:
    """Trace on a one-sample slice of the batch (a fraction of a forward) when every input has the same batch size.

    BatchNorm on one sample, or anything else that fails on the slice, falls back to the whole batch; so does a
    slice whose path differs from the batch's (detected by the probe: layer order or call counts).
    """
    ts = _tensors(inputs)
    n = {t.shape[0] if t.dim() else 0 for t in ts}
    if len(n) == 1 and next(iter(n)) > 1:
        try:
            return trace(model, _map(inputs, lambda t: t[:1])), True
        except Exception:
            pass
    return trace(model, inputs), False


def _weight(module: nn.Module) -> torch.Tensor | None:
    w = getattr(module, "weight", None)
    if isinstance(w, torch.Tensor) and w.dim() >= 2:
        return w
    return next((p for p in module.parameters(recurse=False) if p.dim() >= 2), None)


def _reduce_flat(t: torch.Tensor) -> Any:
    """Moments of a whole tensor (a weight's gradient): one row per output unit, the fast contiguous path; None
    for an empty one (a layer with zero elements: nothing to measure)."""
    if t.numel() == 0:
        return None
    return reduce(t.reshape(1, t.shape[0] if t.dim() else 1, -1), 1)


def _rows(w: torch.Tensor) -> Any:
    """A weight's rows' second moments (its RMS, and their spread for the noise model) in one pass."""
    if w.numel() == 0:
        return None
    with torch._C.DisableTorchFunction():
        if sharable(w):  # the "current" plan read the same rows: computed once (see _row_norms)
            ms = row_ms(w).div(w.numel() // w.shape[0]).reshape(1, -1)
            return Site(ms, ms.new_zeros(ms.shape[1]), w.numel())
        rows = w.detach().reshape(1, w.shape[0] if w.dim() else 1, -1)
        ms = torch.linalg.vector_norm(rows.float() if rows.dtype not in (torch.float32, torch.float64) else rows,
                                      dim=2).double().square_().div_(rows.shape[2])
        return Site(ms, ms.new_zeros(ms.shape[1]), w.numel())


def _functional(model: nn.Module, graph: Graph) -> dict[str, torch.Tensor]:
    """Layers whose weight a functional op consumes outside the module that holds it (``F.linear(x,
    self.qkv.weight)`` in the attention's forward, one of a module's several weights): name -> that weight."""
    out = {}
    for info in graph.layers:
        n = graph.nodes[info.nodes[0]] if info.nodes else None
        if n is None or n.param is None or n.scope == info.name or n.scope.startswith(info.name + "."):
            continue
        try:
            out[info.name] = model.get_parameter(n.param)
        except (AttributeError, TypeError):
            continue
    return out


def _module_output_is_layer(info: Any, graph: Graph) -> bool:
    """The probe hooks the layer's module: right unless the layer's op runs inside that module's own forward with
    more ops after it (an eval-mode re-parameterized block: conv, then its activation, in one forward); such a
    layer stays unmeasured rather than measured at the wrong place."""
    inside = info.name + "."
    for i in info.nodes:
        n = graph.nodes[i]
        if n.scope == info.name or n.scope.startswith(inside):
            if any(u.id > i and i in u.inputs and (u.scope == info.name or u.scope.startswith(inside))
                   for u in graph.nodes[i + 1:]):
                return False
    return True


def _measure(model: nn.Module, graph: Graph, p: Plan, args: tuple, kwargs: dict, loss: Any, seed: int, name: str,
             desc: str) -> tuple[SchemeProfile, bool]:
    modules = dict(model.named_modules())
    infos = graph.layers
    # a layer named owner.param (one of a module's several functional weights) measures that parameter
    weights = {i.name: (_weight(modules[i.owner_name]) if not i.params else
                        getattr(modules[i.owner_name], i.params[0], None)) for i in infos}
    wanted = [(n, w) for n, w in weights.items() if w is not None and w.requires_grad]
    frozen = len(wanted) < len(infos)
    leaves: list[torch.Tensor] = []

    def prepare(t: torch.Tensor) -> torch.Tensor:
        t = t.detach().clone()
        if frozen and t.is_floating_point():
            t.requires_grad_(True)
            leaves.append(t)
            return t.clone()  # not a leaf: in-place ops in the model stay legal
        return t

    args, kwargs = _map(args, prepare), _map(kwargs, prepare)
    gen = torch.Generator().manual_seed(seed)
    cot_sites = []
    with torch.enable_grad():
        functional = _functional(model, graph)
        probe = Probe(model, [(i.name, i.activation_node is not None) for i in infos
                              if i.name in functional or _module_output_is_layer(i, graph)], functional)
        with probe:
            try:
                out = model(*args, **kwargs)
            except Exception as e:  # the trace ran on the meta device (or a slice): name the module that failed
                raise forward_error(model, e) from e
        outs = [t for t in _tensors(out) if t.is_floating_point() and t.requires_grad]
        out_sites = [reduce(t.detach(), -1) for t in outs]
        if not outs:
            raise RuntimeError(f"the output of {type(model).__name__} does not depend on any parameter or input "
                               "that requires grad: there is no backward pass to measure")
        targets = [w for _, w in wanted] + leaves
        if loss is None:
            cots = [torch.randn(t.shape, generator=gen, dtype=t.dtype).to(t.device) for t in outs]
            cot_sites = [reduce(c, -1) for c in cots]
            value: Any = outs
        else:
            value = loss(out)
            if not isinstance(value, torch.Tensor) or value.numel() != 1 or not value.requires_grad:
                raise TypeError("loss(output) must return a scalar tensor that depends on the output, got "
                                f"{type(value).__name__}{tuple(value.shape) if isinstance(value, torch.Tensor) else ''}")
            cots = None
            for t in outs:
                t.register_hook(lambda g: cot_sites.append(reduce(g, -1)))
        grads = torch.autograd.grad(value, targets, cots, allow_unused=True)
    del out, outs, value
    results = probe.results()
    for i in infos:  # layers the probe could not see
        results.setdefault(i.name, {"output": None, "activation": None, "grad": None, "calls": 0})
    wgrad = dict(zip((n for n, _ in wanted), (_reduce_flat(g) if g is not None else None for g in grads)))
    wsites = [_rows(weights[i.name]) if weights[i.name] is not None else None for i in infos]
    extra = finish([*(wgrad.get(i.name) for i in infos), *wsites, *out_sites, *cot_sites])
    k = len(infos)
    wg, ws = extra[:k], extra[k:2 * k]
    os_, cs = extra[2 * k:2 * k + len(out_sites)], extra[2 * k + len(out_sites):]
    q0 = p.input_ms or 1.0
    out_f = max((o.second_moment for o in os_ if o is not None), default=None)
    cs = [c for c in cs if c is not None]  # an empty output has no cotangent to measure
    cot_ms = (sum(c.second_moment * c.count for c in cs) / sum(c.count for c in cs)) if cs else float("nan")
    observed = sorted((n for n in results if results[n]["calls"]), key=lambda n: probe.order.get(n, 0))
    probed = [i for i in infos if i.name in set(probe.names)]
    consistent = observed == [i.name for i in probed] and all(results[i.name]["calls"] == i.calls for i in probed)
    layers = _layers(graph, p, results, wg, ws, cot_ms, modules)
    return SchemeProfile(name, desc, layers, p.input_ms, cot_ms, p,
                         out_f / q0 if out_f is not None else None), consistent


def _layers(graph: Graph, p: Plan, results: dict[str, dict[str, Any]], wg: list, ws: list,
            cot_ms: float, modules: dict[str, nn.Module]) -> list[LayerProfile]:
    q0 = p.input_ms or 1.0
    plans = {lp.name: lp for lp in p.layers}
    rows: list[LayerProfile] = []
    for k, info in enumerate(graph.layers):
        lp, r = plans[info.name], results[info.name]
        out, act, grad = r["output"], r["activation"], r["grad"]
        fans = lp.fans
        rows.append(LayerProfile(
            name=info.name, type=info.type, order=info.order, calls=r["calls"], activation=str(info.activation),
            fan_in=fans.fan_in if fans else None, fan_out=fans.fan_out if fans else None,
            std=math.sqrt(ws[k].second_moment) if ws[k] is not None else None,
            output=Stats.of(out), activation_output=Stats.of(act), grad_output=Stats.of(grad), weight_grad=Stats.of(wg[k]),
            forward=out.second_moment / q0 if out is not None else None,
            backward=grad.second_moment / cot_ms if grad is not None and cot_ms > 0 else None,
            predicted_forward=lp.forward, predicted_backward=lp.backward, forward_noise=None, backward_noise=None,
            forward_exact=lp.forward_bound == 1.0, backward_exact=lp.backward_bound == 1.0,
            forward_bound=lp.forward_bound, backward_bound=lp.backward_bound,
            backward_removed=lp.backward_removed,
            dead_fraction=act.dead_fraction if act is not None else None,
            saturated_fraction=act.saturated_fraction if act is not None else None))
    fwd, bwd = noises(graph, getattr(p, "_propagation", None), results,
                      {i.name: ws[k] for k, i in enumerate(graph.layers)},
                      {r.name: (r.fan_in, r.fan_out) for r in rows}, modules)
    pooled = pooling_factors(graph, getattr(p, "_propagation", None))
    for row in rows:
        row.backward_pooled = pooled.get(row.name, 1.0)
        if row.forward is not None:
            row.forward_noise = fwd.get(row.name)
        if row.backward is not None:
            row.backward_noise = bwd.get(row.name)
        row.flags = _flags(row)
    first, last = (rows[0].name, rows[-1].name) if rows else (None, None)
    for row in rows:
        row.messages = _messages(row, first, last)
    return rows
