"""Forward hooks on many modules at once (the trace's recorder puts a pre- and a post-hook on every module)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = ["hooked"]


@contextlib.contextmanager
def hooked(modules: list[nn.Module], pre: Any, post: Any) -> Iterator[None]:
    """The recorder's hooks on every module, as ``register_forward_pre_hook(pre, with_kwargs=True)`` and
    ``register_forward_hook(post, with_kwargs=True, always_call=True)`` register them (last in each module's
    order), removed on exit. Written into the hook dicts directly, under one fresh handle id for all the modules
    (ids need only be unique within a module's dicts): torch's handles cost ~5 us each (weak references to the
    dicts), ~2 ms on a ResNet-50. A module whose class registers hooks its own way goes through its methods."""
    hid = RemovableHandle.next_id
    RemovableHandle.next_id += 1
    plain, handles = [], []
    try:
        for m in modules:
            cls = type(m)
            if cls.register_forward_pre_hook is _PRE_HOOK and cls.register_forward_hook is _POST_HOOK:
                m._forward_pre_hooks[hid] = pre
                m._forward_pre_hooks_with_kwargs[hid] = True
                m._forward_hooks[hid] = post
                m._forward_hooks_with_kwargs[hid] = True
                m._forward_hooks_always_called[hid] = True
                plain.append(m)
            else:
                handles.append(m.register_forward_pre_hook(pre, with_kwargs=True))
                handles.append(m.register_forward_hook(post, with_kwargs=True, always_call=True))
        yield
    finally:
        for m in plain:
            for d in (m._forward_pre_hooks, m._forward_pre_hooks_with_kwargs, m._forward_hooks,
                      m._forward_hooks_with_kwargs, m._forward_hooks_always_called):
                d.pop(hid, None)
        for h in handles:
            h.remove()


_PRE_HOOK, _POST_HOOK = nn.Module.register_forward_pre_hook, nn.Module.register_forward_hook
