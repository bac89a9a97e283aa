"""A user's model by reference: ``path/to/file.py:factory`` or ``package.module:factory``.

The factory takes no argument and returns an ``nn.Module`` or ``(nn.Module, example input)``. Shared by the command
line (``advise``, ``diagnose``, ``fans``) and the benchmark runner (``bench --models my.py:build``). Every failure is
a :class:`FactoryError` (a ValueError) naming the file, module or factory.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["FactoryError", "is_factory_spec", "load_factory"]


class FactoryError(ValueError):
    """A model reference that cannot be loaded; the message names what failed."""


def _split(spec: str) -> tuple[str, str] | None:
    where, sep, factory = spec.rpartition(":")
    if not sep or not where or not factory or "=" in factory:
        return None
    return where, factory


def is_factory_spec(spec: str) -> bool:
    """Whether ``spec`` has the form ``file.py:factory`` / ``dir/file:factory`` / ``package.module:factory``
    (and not ``zoo_name:key=value``, the benchmark's options of a built-in model)."""
    parts = _split(spec) if isinstance(spec, str) else None
    if parts is None:
        return False
    where, factory = parts
    return factory.isidentifier() and (where.endswith(".py") or "/" in where or "\\" in where or "." in where
                                       or where.isidentifier())


def load_factory(spec: str) -> tuple[nn.Module, Any]:
    """Import the module of ``spec``, call its factory; ``(model, example or None)``."""
    parts = _split(spec)
    if parts is None:
        raise FactoryError(f"{spec!r} is not path/to/file.py:factory or package.module:factory")
    where, factory = parts
    if where.endswith(".py") or "/" in where or "\\" in where:
        module = _load_file(Path(where))
        origin = f"file {where}"
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as e:
            raise FactoryError(f"cannot import module {where!r}: {e}") from e
        except Exception as e:
            raise FactoryError(f"importing module {where!r} failed: {type(e).__name__}: {e}") from e
        origin = f"module {where}"
    fn = getattr(module, factory, None)
    if fn is None:
        found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__)
        raise FactoryError(f"no factory {factory!r} in {origin}" + (f"; callables there: {', '.join(found)}"
                                                                     if found else ""))
    if not callable(fn):
        raise FactoryError(f"{factory!r} in {origin} is a {type(fn).__name__}, not a callable factory")
    try:
        made = fn()
    except Exception as e:
        raise FactoryError(f"factory {spec} failed: {type(e).__name__}: {e}") from e
    example = None
    if isinstance(made, tuple) and len(made) == 2 and isinstance(made[0], nn.Module):
        made, example = made
    if not isinstance(made, nn.Module):
        raise FactoryError(f"factory {spec} returned a {type(made).__name__}; expected an nn.Module or "
                           "(nn.Module, example input)")
    return made, example


def _load_file(path: Path) -> Any:
    if not path.is_file():
        raise FactoryError(f"file not found: {path}")
    name = f"_initwise_target_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise FactoryError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(name, None)
        raise FactoryError(f"importing {path} failed: {type(e).__name__}: {e}") from e
    return module
