"""Loading a command-line TARGET: a built-in zoo model name, ``path/to/file.py:factory`` or ``package.module:factory``.

Shared by the subcommands that take a model (``diagnose``, ``advise``). Every failure is a :class:`CLIError` that
names the file, module, factory or shape involved.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .main import CLIError

__all__ = ["Target", "check_rank", "check_seed", "check_single_input", "forward_inputs", "load_target", "make_input",
           "parse_shape"]

DEFAULT_SHAPE = (1, 3, 48, 48)


@dataclass
class Target:
    """A loaded model: ``name`` as given, the model, and an example input when the factory returned one."""

    name: str
    model: nn.Module
    example: Any = None
    shape: tuple[int, ...] | None = None  # the zoo's default example shape, for built-in names


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1x3x48x48" -> (1, 3, 48, 48)``; a CLIError for anything else."""
    parts = text.lower().replace("*", "x").split("x") if isinstance(text, str) else []
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if not shape or any(s <= 0 for s in shape):
        raise CLIError(f"malformed --input {text!r}: expected positive sizes joined by 'x', e.g. 1x3x48x48")
    return shape


def check_seed(seed: int, flag: str = "--seed") -> None:
    """A CLIError unless ``seed`` is in [0, 2**53): every generator the commands seed from it accepts it."""
    if not 0 <= seed < 2**53:
        raise CLIError(f"{flag} must be in [0, 2**53), got {seed}")


def make_input(shape: tuple[int, ...], seed: int, like: nn.Module | None = None) -> torch.Tensor:
    """A standard normal input of ``shape``, reproducible from ``seed`` (the global RNG is not touched), in the
    dtype and on the device of ``like``'s first floating-point parameter or buffer (float32 on the CPU without)."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    ref = next((t for t in (*like.parameters(), *like.buffers()) if t.is_floating_point()), None) if like else None
    return x if ref is None else x.to(dtype=ref.dtype, device=ref.device)


def forward_inputs(model: nn.Module) -> list[str]:
    """Names of the positional inputs ``model.forward`` requires (no default, not ``*args``); [] if unknown."""
    try:
        sig = inspect.signature(model.forward)
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [n for n, p in sig.parameters.items() if p.kind in kinds and p.default is inspect.Parameter.empty]


def check_single_input(target: "Target", what: str) -> None:
    """A CLIError when a generated single tensor (``what``: e.g. "--input 1x3x48x48") cannot feed the model."""
    names = forward_inputs(target.model)
    if len(names) > 1:
        raise CLIError(f"{type(target.model).__name__}.forward takes {len(names)} inputs ({', '.join(names)}) but "
                       f"{what} is one tensor: let the factory return (model, ({', '.join(n for n in names)})) with "
                       "example inputs, e.g. 'return net, (torch.randn(1, 3, 48, 48), torch.randn(1, 3, 48, 48))'")


def check_rank(shape: tuple[int, ...], model: nn.Module) -> None:
    """A CLIError when ``--input`` cannot be a batch for the model's first convolution (Conv2d: 4 sizes, N C H W):
    the usual slip is a shape without its batch size."""
    conv = next((m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    if conv is None:
        return
    want = conv.weight.dim()  # Conv2d: a 4-d weight and a 4-d batched input
    if len(shape) != want:
        text = "x".join(map(str, shape))
        eg = "x".join(map(str, (1, *shape[-(want - 1):]))) if len(shape) == want - 1 else None
        raise CLIError(f"--input {text} has {len(shape)} sizes but the model's first layer "
                       f"({type(conv).__name__}) takes a batch of {want} (N, C, ...)"
                       + (f": add the batch size first, e.g. --input {eg}" if eg else ""))


def load_target(spec: str, **zoo_kwargs: Any) -> Target:
    """Resolve ``spec`` to a model (see the module docstring)."""
    from initwise import zoo

    if spec in zoo.list_models():
        import torch

        try:
            # PyTorch's default init drawn from seed 0 (the CPU generator only, inside a fork): the same built-in
            # model, and so the same report, on every run of the command
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(0)
                model = zoo.build(spec, **zoo_kwargs)
        except Exception as e:
            raise CLIError(f"building the built-in model {spec!r} failed: {type(e).__name__}: {e}") from e
        return Target(spec, model, None, tuple(zoo.info(spec).example_shape))
    from initwise._factory import FactoryError, is_factory_spec, load_factory

    if not is_factory_spec(spec):
        raise CLIError(f"unknown TARGET {spec!r}: expected a built-in model ({', '.join(zoo.list_models())}), "
                       "path/to/file.py:factory or package.module:factory")
    try:
        made, example = load_factory(spec)
    except FactoryError as e:
        raise CLIError(str(e)) from None
    return Target(spec, made, example)
