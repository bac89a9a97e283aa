"""Applying a plan to a model: validate every draw first, then fill the parameters in place, one by one.

Two phases. :func:`prepare` checks the whole plan against the model without drawing anything (each parameter
exists with the planned shape, is a floating tensor with storage, the generator is on its device, and every
initializer accepts its arguments: the same call is made on a meta tensor of the same shape and dtype, which
validates and draws nothing). Every error a user can cause is raised there, with the model untouched. Then the
parameters are drawn in place, in the plan's order, from one generator: no second copy of the model, and the
values are bit-equal to drawing into fresh tensors (the same calls on the same shapes from the same stream).

What the second phase cannot make atomic is an interrupt (Ctrl-C) or a failure inside torch (out of memory, a
module's own ``reset_parameters`` raising): it raises :class:`InitInterrupted` (a ``KeyboardInterrupt``) or
:class:`PartialInitError` (a ``RuntimeError``), chained to the cause, whose ``drawn`` lists the parameters that
already hold their new values and ``pending`` the ones that still hold their old ones; no parameter is half
written (each is filled by one torch call, and Python delivers an interrupt between calls).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ._initializers import _scaling_std, draw_scaled, variance_scaling_
from ._reparam import reparams, weight_norm_magnitude
from ._sharded import fill_, fill_constant_, is_sharded, local_device
from ._structured import icnr_, identity_, orthogonal_

__all__ = ["apply_plan", "prepare", "PartialInitError", "InitInterrupted"]

_RANDOM = ("normal", "uniform", "truncated_normal", "icnr", "orthogonal", "torch_default")


def _summary(drawn: tuple[str, ...], pending: tuple[str, ...]) -> str:
    def names(xs: tuple[str, ...]) -> str:
        return ", ".join(xs[:8]) + (f", ... ({len(xs) - 8} more)" if len(xs) > 8 else "") if xs else "none"

    return (f"{len(drawn)} of {len(drawn) + len(pending)} parameters hold their new values (drawn: {names(drawn)}); "
            f"the others keep their old values (pending: {names(pending)}); calling init_ again redraws all of them")


class PartialInitError(RuntimeError):
    """Drawing failed part way (inside torch, after the plan was validated). ``drawn``: parameters already
    filled; ``pending``: parameters that keep their old values. The cause is chained (``__cause__``)."""

    def __init__(self, cause: BaseException, drawn: tuple[str, ...], pending: tuple[str, ...]) -> None:
        super().__init__(f"init_ failed while drawing ({type(cause).__name__}: {cause}); {_summary(drawn, pending)}")
        self.drawn, self.pending = drawn, pending


class InitInterrupted(KeyboardInterrupt):
    """An interrupt (Ctrl-C) arrived while drawing. ``drawn`` / ``pending`` as in :class:`PartialInitError`."""

    def __init__(self, drawn: tuple[str, ...], pending: tuple[str, ...]) -> None:
        super().__init__(f"init_ interrupted; {_summary(drawn, pending)}")
        self.drawn, self.pending = drawn, pending


def _generator(generator: torch.Generator | None, seed: int | None,
               device: torch.device | None = None) -> torch.Generator | None:
    """The generator to draw from: ``generator``, or a fresh one seeded with ``seed`` on ``device`` (CPU default)."""
    if generator is not None and seed is not None:
        raise ValueError("pass either generator= or seed=, not both")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        if not 0 <= seed < 2**64:
            raise ValueError(f"seed must be in [0, 2**64), got {seed}")
        return torch.Generator(device=device or "cpu").manual_seed(seed)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return generator


def _torch_default(module: nn.Module, name: str, gen: torch.Generator | None) -> dict[str, torch.Tensor]:
    """Run the module's own reset on a copy: exactly PyTorch's constructor init, drawn from ``gen`` if given."""
    clone = copy.deepcopy(module)
    reset = getattr(clone, "reset_parameters", None) or getattr(clone, "_reset_parameters", None)
    if gen is None:
        reset()
    else:
        seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        # the generator of the device the module's parameters live on, and only that one: ``torch.manual_seed``
        # would also queue a lazy CUDA seed on a machine whose CUDA is not initialized yet, which outlives the
        # fork and seeds the user's CUDA generator when CUDA starts (and costs ~0.7 ms a call in stack captures)
        dev = next((t.device for t in clone.parameters()), torch.device("cpu"))
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            if dev.type == "cuda":
                torch.cuda.manual_seed(seed)
            torch.default_generator.manual_seed(seed)
            reset()
    return dict(clone.named_parameters())


@dataclass
class _Step:
    """One draw: fills the parameters ``names`` (``tensors``) in place when run with the generator."""

    names: tuple[str, ...]
    tensors: tuple[torch.Tensor, ...]
    run: Callable[["_Step", torch.Generator | None, list[str]], None]  # appends each name once it is filled


def _where(pp: Any, p: torch.Tensor, modules: dict[str, nn.Module]) -> str:
    return f"parameter {pp.param!r} (layer {pp.layer!r}, {type(modules.get(pp.layer)).__name__}, shape {tuple(p.shape)})"


def prepare(plan: Any, model: nn.Module, generator: torch.Generator | None = None,
            seed: int | None = None) -> tuple[list[_Step], torch.Generator | None]:
    """Validate ``plan`` against ``model`` and return the draws it makes, in order (nothing is drawn).

    Raises:
        TypeError: a planned parameter is not a floating tensor, or a bad ``seed``/``generator``.
        ValueError: a parameter is missing, has another shape, has no storage (meta device), lives on another
            device than the generator; a layer cannot take its initializer (named with its shape); a
            ``torch_default`` layer has no ``reset_parameters``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    params = dict(model.named_parameters(remove_duplicate=False))
    modules = dict(model.named_modules(remove_duplicate=False))
    layers = {lp.name: lp for lp in plan.layers}
    todo = [pp for pp in plan.params if pp.method != "keep"]
    for pp in todo:
        p = params.get(pp.param)
        if p is None or tuple(p.shape) != tuple(pp.shape):
            raise ValueError(f"the plan's parameter {pp.param!r} {tuple(pp.shape)} is not in this model "
                             f"({'missing' if p is None else f'shape {tuple(p.shape)}'}): plan and model differ")
        if not p.is_floating_point():
            raise TypeError(f"{_where(pp, p, modules)} has dtype {p.dtype}; initializers need a floating dtype")
        if p.is_meta:
            raise ValueError(f"{_where(pp, p, modules)} is on the meta device (no storage to fill): materialize the "
                             "model first, e.g. model.to_empty(device='cpu'), then call init_")
    devices = {local_device(params[pp.param]) for pp in todo if pp.method in _RANDOM}
    gen = _generator(generator, seed, next(iter(devices)) if len(devices) == 1 else None)
    steps: list[_Step] = []
    defaults: dict[str, _Step] = {}
    derived = []  # weight norm's magnitudes: set from their direction once it is drawn
    for pp in todo:
        p = params[pp.param]
        if pp.method == "weight_norm_g":
            derived.append(pp)
            continue
        if pp.method in _RANDOM and gen is not None and local_device(p).type != gen.device.type:
            raise ValueError(f"{_where(pp, p, modules)} is on {local_device(p)} but the generator on {gen.device}: pass "
                             f"generator=torch.Generator(device={local_device(p).type!r}) or seed=")
        owner = modules[pp.param.rpartition(".")[0]]
        g, extra = pp.gain if pp.gain is not None else 1.0, pp.scale
        if pp.method == "torch_default":
            if pp.layer in defaults:  # one reset per layer fills all its parameters
                st = defaults[pp.layer]
                st.names += (pp.param,)
                st.tensors += (p,)
                continue
            layer = modules[pp.layer]
            if getattr(layer, "reset_parameters", None) is None and getattr(layer, "_reset_parameters", None) is None:
                raise ValueError(f"layer {pp.layer!r} ({type(layer).__name__}) has no reset_parameters(): "
                                 "torch_default cannot reproduce its constructor; exclude it")
            if is_sharded(p):
                raise ValueError(f"{_where(pp, p, modules)} is sharded (DTensor): torch_default runs the module's own "
                                 "reset_parameters, which cannot fill a shard reproducibly; use another scheme")
            st = defaults[pp.layer] = _Step((pp.param,), (p,), _reset_run(pp.layer, layer))
            steps.append(st)
            continue
        if pp.method in ("normal", "uniform") and not is_sharded(p):
            # the draw's std worked out now, with every check the initializer makes (on a meta tensor of the
            # same shape and dtype); the draw itself is then the one torch call, as torch's own init is
            try:
                std = _checked_std(p, (g * extra) ** 2, pp.fan, pp.method)
            except (TypeError, ValueError) as e:
                raise type(e)(f"{_where(pp, p, modules)}: {e}") from e
            steps.append(_Step((pp.param,), (p,), _direct_run(pp.param, p, pp.method, std)))
            continue
        fill = _filler(pp, layers, owner, g, extra, plan.options.get("distribution", "normal"))
        if fill is None:  # constants: filled locally, no generator
            value = 0.0 if pp.method == "zeros" else 1.0
            steps.append(_Step((pp.param,), (p,), _constant_run(pp.param, p, value)))
            continue
        try:  # the same call on a meta tensor: validates every argument, draws nothing
            fill(torch.empty(tuple(p.shape), dtype=p.dtype, device="meta"), None)
        except (TypeError, ValueError) as e:
            raise type(e)(f"{_where(pp, p, modules)}: {e}") from e
        steps.append(_Step((pp.param,), (p,), _random_run(pp.param, p, fill)))
    for pp in derived:
        steps.append(_Step((pp.param,), (params[pp.param],), _magnitude_run(pp, params, modules)))
    return steps, gen


_STDS: dict[tuple, float] = {}  # _checked_std's answers that passed every check (a pure function of the key)


def _checked_std(p: torch.Tensor, scale: Any, fan: Any, method: str) -> float:
    """The std of a normal or uniform draw of ``p`` after every check :func:`_scaling_std` makes (on a meta
    tensor of ``p``'s shape and dtype: nothing is drawn). Those checks and the std depend on the dtype, whether
    ``p`` is empty, the scale, the fan and the method only: an answer that passed them is remembered under those
    (a ResNet-50 has ~160 such draws of a few dozen distinct kinds; a second init_ asks again for each)."""
    key = (p.dtype, p.numel() == 0, type(scale), scale, math.copysign(1.0, scale) if type(scale) is float else 0.0,
           type(fan), fan, method)
    try:
        std = _STDS.get(key)
    except TypeError:  # an unhashable argument: no memo (the checks below name it)
        key, std = None, None
    if std is None:
        meta = torch.empty(tuple(p.shape), dtype=p.dtype, device="meta")
        std, _ = _scaling_std(meta, scale, "fan_in", method, module=None, fans=(fan, fan), bound=2.0, what="scale")
        if key is not None and std == std:
            if len(_STDS) >= 4096:
                _STDS.clear()
            _STDS[key] = std
    return std


def _magnitude_run(pp: Any, params: dict[str, torch.Tensor], modules: dict[str, nn.Module]):
    """weight norm's g = ||v|| (torch's weight_norm does the same when it wraps a layer): the effective weight
    g * v / ||v|| is then the drawn v."""
    layer = modules[pp.layer]
    local = pp.param[len(pp.layer) + 1:] if pp.layer else pp.param
    rep = reparams(layer).get(local)
    if rep is None or rep.magnitude != local:
        raise ValueError(f"parameter {pp.param!r}: the plan sets it as a weight norm magnitude, but layer "
                         f"{pp.layer!r} ({type(layer).__name__}) has no weight norm on it: plan and model differ")
    g, v = params[pp.param], params[f"{pp.layer}.{rep.draw}" if pp.layer else rep.draw]

    def run(st: _Step, gen: torch.Generator | None, done: list[str]) -> None:
        with torch.no_grad():
            g.detach().copy_(weight_norm_magnitude(v.detach(), rep.dim, tuple(g.shape)))
        done.append(pp.param)

    return run


def _filler(pp: Any, layers: dict, owner: nn.Module, g: float, extra: float, distribution: str) -> Callable[[torch.Tensor, torch.Generator | None], object] | None:
    """``fill(tensor, generator)`` for a random method, None for a constant one."""
    m = pp.method
    if m in ("normal", "uniform", "truncated_normal"):
        return lambda t, gen: variance_scaling_(t, (g * extra) ** 2, "fan_in", m, fans=(pp.fan, pp.fan),
                                                generator=gen)
    if m == "icnr":
        lp = layers.get(pp.layer)
        r = lp.pixel_shuffle if lp is not None else None
        return lambda t, gen: icnr_(t, r, (g * extra) ** 2, "fan_in", distribution, gen, fans=(pp.fan, pp.fan))
    if m == "orthogonal":
        groups = int(getattr(owner, "groups", 1) or 1)
        return lambda t, gen: orthogonal_(t, g * extra, gen, groups=groups)
    if m == "identity":
        return lambda t, gen: identity_(t, g * extra, module=owner)
    if m in ("zeros", "ones"):
        return None
    raise ValueError(f"unknown method {m!r} for parameter {pp.param!r} (layer {pp.layer!r})")


def _draw(t: torch.Tensor, method: str, std: float, gen: torch.Generator | None) -> None:
    """The one torch call of a normal or uniform draw: what :func:`initwise._initializers.variance_scaling_`
    makes after its checks (those :func:`prepare` made), with the same arguments."""
    draw_scaled(t, method, std, gen)


def _direct_run(name: str, p: torch.Tensor, method: str, std: float):
    def run(st: _Step, gen: torch.Generator | None, done: list[str]) -> None:
        with torch.no_grad():
            _draw(p.detach(), method, std, gen)
        done.append(name)

    return run


def _random_run(name: str, p: torch.Tensor, fill):
    def run(st: _Step, gen: torch.Generator | None, done: list[str]) -> None:
        fill_(p, lambda t: fill(t, gen))
        done.append(name)

    return run


def _constant_run(name: str, p: torch.Tensor, value: float):
    def run(st: _Step, gen: torch.Generator | None, done: list[str]) -> None:
        fill_constant_(p, value)
        done.append(name)

    return run


def _reset_run(layer_name: str, layer: nn.Module):
    def run(st: _Step, gen: torch.Generator | None, done: list[str]) -> None:
        with warnings.catch_warnings():  # torch's reset of a zero-element weight (kept by the plan) is a no-op
            warnings.filterwarnings("ignore", "Initializing zero-element tensors is a no-op")
            fresh = _torch_default(layer, layer_name, gen)
        with torch.no_grad():
            for name, p in zip(st.names, st.tensors):
                local = name[len(layer_name) + 1:] if layer_name else name
                p.detach().copy_(fresh[local].detach())
                done.append(name)

    return run


def run_steps(steps: list[_Step], gen: torch.Generator | None) -> None:
    """Draw every step in order; on an interrupt or failure say which parameters were drawn (see module doc)."""
    done: list[str] = []
    order = [n for st in steps for n in st.names]
    try:
        for st in steps:
            st.run(st, gen, done)
    except KeyboardInterrupt as e:
        raise InitInterrupted(tuple(done), tuple(n for n in order if n not in set(done))) from e
    except Exception as e:  # noqa: BLE001 - re-raised with what was drawn
        raise PartialInitError(e, tuple(done), tuple(n for n in order if n not in set(done))) from e


def apply_plan(plan: Any, model: nn.Module, generator: torch.Generator | None = None, seed: int | None = None) -> None:
    """Initialize ``model`` as ``plan`` says, in place.

    The whole plan is validated first (:func:`prepare`): every error a user can cause (wrong model, shapes,
    dtypes, a meta model not yet materialized, a generator on another device, an initializer that cannot fill a
    layer) is raised before the first draw, with the model untouched. Then each parameter is filled in place
    (``Parameter`` objects and their storage stay the same: optimizers and views see the new values; no second copy
    of the model is made). An interrupt or a failure inside torch while drawing raises :class:`InitInterrupted` /
    :class:`PartialInitError`, whose ``drawn`` and ``pending`` say which parameters were filled.
    Sharded (DTensor) parameters get this rank's slice of the full single-process draw.
    """
    steps, gen = prepare(plan, model, generator, seed)
    run_steps(steps, gen)
