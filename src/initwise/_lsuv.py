"""LSUV: layer-sequential unit-variance initialization, data-driven (Mishkin & Matas, ICLR 2016).

Start from a plan (orthogonal by default, as the paper), then visit the weight layers in *execution order* (the
traced graph's order, not registration order) and rescale each one so that its output on the example batch has the
target second moment, repeating a layer until it is within ``tol`` (the paper's ``Tol_var``) or ``max_iter`` passes.

Differences from the ``lsuv`` package on PyPI (0.3.0, compared by ``benchmarks/lsuv_compare.py``, not a
dependency): that package visits layers in registration order through ``model.apply`` and global state, prints,
measures in eval mode and normalizes the *std* of what its hook kept, which on the CPU is the layer's output
tensor itself, so an in-place activation after the layer (``nn.ReLU(inplace=True)``) rewrites it first (measured:
on CARN-lite, RIDNet-lite and a U-Net only 10/33, 8/26, 3/13 layers end with std within 0.1 of 1, against 32/33,
24/26, 11/13 here, and 33/33, 26/26, 13/13 on the second moment). This one uses the traced execution order,
measures the second moment ``E[y^2]`` where the layer produces it (the quantity the plan propagates; equal to the
variance once the output's mean is zero), in the model's own mode, skips layers that are zero by design (zero-init
residual branch ends) and leaves buffers (BatchNorm running statistics), modes and RNG state as they were.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ._guard import fresh, preserved
from ._nested import call, tensors
from ._where import forward_error

__all__ = ["lsuv_"]

_TOL = 0.1  # Mishkin & Matas 2016, Alg. 1: Tol_var = 0.1
_MAX_ITER = 10  # ... T_max = 10


def lsuv_(model: nn.Module, example: Any, scheme: str = "orthogonal", mode: str | None = None, *,
          target: float = 1.0, tol: float = _TOL, max_iter: int = _MAX_ITER,
          generator: torch.Generator | None = None, seed: int | None = None, **options: Any) -> Any:
    """Initialize ``model`` with ``scheme`` (:func:`initwise.init_`), then rescale each weight layer in execution
    order until ``E[y^2]`` of its output on ``example`` is ``target`` (within ``tol`` relative).

    Args:
        model: the model (changed in place: only the weights the plan draws are written).
        example: an input batch (tensor, tuple or dict, as :func:`initwise.trace`); real data, several samples.
        scheme, mode, options: the starting plan (Mishkin & Matas: orthogonal).
        target: the second moment each layer's output is scaled to (1: unit variance, the paper's).
        tol, max_iter: stop a layer when ``|E[y^2] / target - 1| < tol`` or after ``max_iter`` rescalings.
        generator, seed: the starting plan's draws.

    Returns:
        The starting :class:`initwise.Plan`; ``plan.lsuv_scales`` maps layer names to the factor applied.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1))
        >>> p = lsuv_(net, torch.rand(4, 1, 16, 16), seed=0)
        >>> sorted(p.lsuv_scales) == ["0", "2"]
        True
    """
    from ._init import init_

    _check(target, tol, max_iter)
    p = init_(model, example, scheme, mode, generator=generator, seed=seed, **options)
    p.lsuv_scales = rescale_(model, example, p, target=target, tol=tol, max_iter=max_iter)
    return p


def _check(target: float, tol: float, max_iter: int) -> None:
    if not (isinstance(target, (int, float)) and math.isfinite(target) and target > 0):
        raise ValueError(f"target must be a finite number > 0, got {target!r}")
    if not (isinstance(tol, (int, float)) and 0 < tol < 1):
        raise ValueError(f"tol must be in (0, 1), got {tol!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")


def rescale_(model: nn.Module, example: Any, p: Any, *, target: float = 1.0, tol: float = _TOL,
             max_iter: int = _MAX_ITER) -> dict[str, float]:
    """The LSUV pass alone: rescale the layers ``p`` (the plan already applied) drew, in execution order, until
    ``E[y^2]`` of each output on ``example`` is ``target``; returns the factor applied per layer."""
    _check(target, tol, max_iter)
    modules = dict(model.named_modules())
    buffers = {k: b.detach().clone() for k, b in model.named_buffers()}
    modes = {k: m.training for k, m in modules.items()}
    rng = torch.get_rng_state()
    scales: dict[str, float] = {}
    layers = []
    for lp in p.layers:
        module = modules.get(lp.name)
        w = getattr(module, "weight", None)
        if module is None or not isinstance(w, torch.Tensor) or w.dim() < 2 or not w.is_floating_point():
            continue
        if not any(pp.method not in ("keep", "zeros") for pp in lp.params if len(pp.shape) >= 2):
            continue  # not drawn by the plan (kept, excluded) or zero by design
        layers.append((lp.name, module))
    try:
        if _one_pass_ok(model, layers):
            scales = _one_pass(model, example, layers, target, tol, max_iter)
            return scales
        for name, module in layers:
            w = module.weight
            total = 1.0
            for _ in range(max_iter):
                ms = _output_ms(model, module, example)
                torch.set_rng_state(rng)
                if ms is None or not math.isfinite(ms) or ms == 0:
                    break
                if abs(ms / target - 1) < tol:
                    break
                factor = math.sqrt(target / ms)
                with torch.no_grad():
                    w.mul_(factor)
                total *= factor
                if _scales_exactly(module):
                    break  # its output is now exactly the target: measuring again would only confirm it
            scales[name] = total
    finally:
        with torch.no_grad():
            for k, b in model.named_buffers():
                if k in buffers:
                    b.copy_(buffers[k])
        for k, m in modules.items():
            m.train(modes[k])
        torch.set_rng_state(rng)
    return scales


_LINEAR = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _torch_layer(module: nn.Module) -> bool:
    """A torch linear/conv layer run by torch's own call: no parametrization, no hooks of its own."""
    from torch.nn.utils import parametrize

    return (type(module) in _LINEAR and not parametrize.is_parametrized(module) and not module._forward_hooks
            and not module._forward_pre_hooks)


def _scales_exactly(module: nn.Module) -> bool:
    """The module's output is its weight times its input: a :func:`_torch_layer` with no bias (or a zero one), so
    scaling the weight by ``f`` scales the output's second moment by ``f^2`` exactly (one measurement per layer
    instead of two)."""
    bias = getattr(module, "bias", None)
    return _torch_layer(module) and (bias is None or not bool(bias.detach().any()))


def _plain(module: nn.Module) -> bool:
    """A :func:`_torch_layer` whose weight is its own entry: its output is ``module.forward(input)`` (a
    recomputation through ``forward`` is then what its call computes)."""
    return _torch_layer(module) and isinstance(module._parameters.get("weight"), nn.Parameter)


def _one_pass_ok(model: nn.Module, layers: list[tuple[str, nn.Module]]) -> bool:
    """The layers can be rescaled in one forward pass: every one is :func:`_plain`, no weight is shared with
    another entry of the model (a tied weight would be rescaled through one module only), and no global hooks."""
    mod = nn.modules.module
    if any(getattr(mod, k, None) for k in ("_global_forward_hooks", "_global_forward_pre_hooks")):
        return False
    if not layers or not all(_plain(m) for _, m in layers):
        return False
    ids = [id(t) for _, t in model.named_parameters(remove_duplicate=False)]
    return all(ids.count(id(m.weight)) == 1 for _, m in layers)


def _one_pass(model: nn.Module, example: Any, layers: list[tuple[str, nn.Module]], target: float, tol: float,
              max_iter: int) -> dict[str, float]:
    """The sequential rescaling of :func:`rescale_` in one forward pass, with the same result bit for bit.

    Sequentially, layer k is measured by a pass up to its first call, with every earlier layer at its final
    scale; here that pass is the one forward itself: at a layer's first call its hook measures the output, and
    each rescaling swaps in the weight times the same factors (``w * f1 * f2`` in the same float operations as the
    in-place ``mul_`` calls) and recomputes the layer's ``forward`` on the same input, which is what a new pass up
    to it would compute. The output passed on is the one of the final weight, so later layers see what their own
    sequential pass would have. The guard puts the real weights back after the pass; the factors are then
    replayed on them in the same order. The pass stops after the last layer's first call."""
    factors: dict[str, list[float]] = {name: [] for name, _ in layers}
    pending = {id(m) for _, m in layers}
    names = {id(m): name for name, m in layers}
    exact = {id(m): _scales_exactly(m) for _, m in layers}  # (before the measuring hooks are registered)

    def hook(m: nn.Module, args: tuple, kwargs: dict, out: Any) -> Any:
        if id(m) not in pending:
            return None  # a later call of an already rescaled layer: its swapped-in weight is already used
        pending.discard(id(m))
        fs = factors[names[id(m)]]
        w0 = m._parameters["weight"]
        w = w0
        current = True  # ``out`` is the output of the weight ``w``
        for _ in range(max_iter):
            if not current:
                out, current = m.forward(*args, **kwargs), True
            ms = float(out.detach().double().pow(2).mean()) if isinstance(out, torch.Tensor) else None
            if ms is None or not math.isfinite(ms) or ms == 0 or abs(ms / target - 1) < tol:
                break
            factor = math.sqrt(target / ms)
            w = w.detach().mul(factor) if w is w0 else w.mul_(factor)
            fs.append(factor)
            m._parameters["weight"] = nn.Parameter(w, requires_grad=w0.requires_grad)
            w = m._parameters["weight"].data
            current = False
            if exact[id(m)]:
                break
        if not current:
            out = m.forward(*args, **kwargs)
        if not pending:
            raise _Stop
        return out

    _pass(model, example, [m.register_forward_hook(hook, with_kwargs=True) for _, m in layers])
    scales: dict[str, float] = {}
    with torch.no_grad():
        for name, m in layers:
            total = 1.0
            for f in factors[name]:
                m.weight.mul_(f)
                total *= f
            scales[name] = total
    return scales


class _Stop(Exception):
    """Raised by the hook once the layer's output is measured: the rest of the forward is not needed."""


def _output_ms(model: nn.Module, module: nn.Module, example: Any) -> float | None:
    """``E[y^2]`` of ``module``'s output at its first call in a forward pass of ``model`` on ``example`` (the pass
    stops right after that call)."""
    seen: list[float] = []

    def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
        t = next(iter(tensors(out)), None)
        if t is not None:
            seen.append(float(t.detach().double().pow(2).mean()))
        raise _Stop

    _pass(model, example, [module.register_forward_hook(hook)])
    return seen[0] if seen else None


def _pass(model: nn.Module, example: Any, handles: list[Any]) -> None:
    """One forward pass of ``model`` on ``example`` with the measuring hooks ``handles`` (removed after), until a
    hook raises :class:`_Stop`. The guard undoes whatever the forward itself changes (attributes, its own parameter
    writes, hooks, RNG); the input is a fresh copy, so a forward that scales it in place does not compound over the
    passes."""
    try:
        with preserved(model, example), torch.no_grad():
            call(model, fresh(example))
    except _Stop:
        pass
    except Exception as e:
        raise forward_error(model, e) from e
    finally:
        for h in handles:
            h.remove()
