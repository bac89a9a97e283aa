"""Where a user's forward failed, for an error that names the module: the innermost of the model's modules whose
``forward`` is on the exception's traceback, with the shapes of the tensors it was called with, as the trace
names a failure (``'0' (Linear, input 3x4)``).

The trace finds the module with its hooks; diagnose's and LSUV's real forward passes find it from the traceback
after the fact, at no cost while the forward runs.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ._trace_vocab import shapes_str

__all__ = ["failed_in", "forward_error"]


def failed_in(model: nn.Module, err: BaseException) -> str | None:
    """``'name' (Type, input AxB)`` of the innermost module of ``model`` whose method raised ``err`` (None if none)."""
    names = {id(m): n for n, m in model.named_modules(remove_duplicate=False)}
    where = None
    tb = err.__traceback__
    while tb is not None:
        frame, tb = tb.tb_frame, tb.tb_next
        code = frame.f_code
        if not code.co_argcount or code.co_varnames[0] != "self":
            continue
        local = frame.f_locals
        me = local.get("self")
        if id(me) in names and isinstance(me, nn.Module):
            args = tuple(local.get(v) for v in code.co_varnames[1:code.co_argcount])
            where = f"'{names[id(me)]}' ({type(me).__name__}, input {shapes_str(args)})"
    return where


def forward_error(model: nn.Module, err: BaseException) -> RuntimeError:
    """The error to raise from ``err`` (raised by ``model``'s forward): the trace's wording, naming the module."""
    where = failed_in(model, err) or f"the model ({type(model).__name__})"
    return RuntimeError(f"forward failed in {where}: {type(err).__name__}: {err}")
