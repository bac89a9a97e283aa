"""Loading a command-line TARGET: a built-in zoo model name, ``path/to/file.py:factory`` or ``package.module:factory``.

Shared by the subcommands that take a model (``diagnose``, ``advise``). Every failure is a :class:`CLIError` that
names the file, module, factory or shape involved.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .main import CLIError

__all__ = ["Target", "check_single_input", "forward_inputs", "check_rank", "load_target", "make_input", "parse_shape"]

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
        try:
            model = zoo.build(spec, **zoo_kwargs)
        except Exception as e:
            raise CLIError(f"building the built-in model {spec!r} failed: {type(e).__name__}: {e}") from e
        return Target(spec, model, None, tuple(zoo.info(spec).example_shape))
    where, sep, factory = spec.rpartition(":")
    if not sep or not where or not factory:
        raise CLIError(f"unknown TARGET {spec!r}: expected a built-in model ({', '.join(zoo.list_models())}), "
                       "path/to/file.py:factory or package.module:factory")
    if where.endswith(".py") or "/" in where or "\\" in where:
        module = _load_file(Path(where))
        origin = f"file {where}"
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as e:
            raise CLIError(f"cannot import module {where!r}: {e}") from e
        except Exception as e:
            raise CLIError(f"importing module {where!r} failed: {type(e).__name__}: {e}") from e
        origin = f"module {where}"
    fn = getattr(module, factory, None)
    if fn is None:
        found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__)
        raise CLIError(f"no factory {factory!r} in {origin}" + (f"; callables there: {', '.join(found)}" if found
                                                                   else ""))
    if not callable(fn):
        raise CLIError(f"{factory!r} in {origin} is a {type(fn).__name__}, not a callable factory")
    try:
        made = fn()
    except Exception as e:
        raise CLIError(f"factory {spec} failed: {type(e).__name__}: {e}") from e
    example = None
    if isinstance(made, tuple) and len(made) == 2 and isinstance(made[0], nn.Module):
        made, example = made
    if not isinstance(made, nn.Module):
        raise CLIError(f"factory {spec} returned a {type(made).__name__}; expected an nn.Module or "
                       "(nn.Module, example input)")
    return Target(spec, made, example)


def _load_file(path: Path) -> Any:
    if not path.is_file():
        raise CLIError(f"file not found: {path}")
    name = f"_initwise_target_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CLIError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(name, None)
        raise CLIError(f"importing {path} failed: {type(e).__name__}: {e}") from e
    return module
