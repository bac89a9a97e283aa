"""The meta pass's leaf calls (initwise._meta_pass): torch's plain conv / linear / norm / activation layers run the
recorder's hooks themselves; the graph is the one the hooked call gives, and nothing stays on the modules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from initwise import _meta_pass
from initwise._graph import trace

from zoo_models import ZOO


_SEEN: list[tuple[int, int]] = []


class _Odd(nn.Module):
    """Leaves that must not take the shortcut, or only partly: padding modes, a user hook, a direct ``forward``
    call, a conv1d on an expanded (non-contiguous) input, a linear without bias."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect")
        self.d = nn.Conv2d(8, 8, 3, padding="same", groups=2)
        self.h = nn.Conv2d(8, 8, 1)
        self.h.register_forward_hook(lambda m, a, o: o * 2)
        self.direct = nn.Conv2d(8, 8, 1)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.GELU()
        self.lin = nn.Linear(8, 4, bias=False)
        self.c1 = nn.Conv1d(4, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _SEEN.append((len(self.d._forward_hooks), len(self.h._forward_hooks)))  # (the guard restores the model's own)
        y = self.act(self.bn(self.d(self.c(x))))
        y = self.h(y) + self.direct.forward(y)
        z = self.lin(y.mean((2, 3)))
        return self.c1(z.unsqueeze(1).expand(-1, 4, -1))


def _models() -> dict:
    out = {name: make for name, make in ZOO.items()}
    out["odd"] = lambda: (_Odd(), torch.randn(2, 3, 10, 10))
    return out


@pytest.mark.parametrize("name", sorted(_models()))
def test_leaf_calls_give_the_graph_of_the_hooked_calls(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model, x = _models()[name]()
    fast = trace(model, x).to_dict()
    monkeypatch.setattr(_meta_pass, "_CALL_SLOT", False)  # every module gets the recorder's hooks, as before
    assert trace(model, x).to_dict() == fast


def test_the_shortcut_is_taken_only_by_leaves_without_hooks_and_nothing_stays() -> None:
    model, x = _Odd(), torch.randn(2, 3, 10, 10)
    before = {n: (dict(m.__dict__), len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in model.named_modules()}
    assert _meta_pass._CALL_SLOT
    _SEEN.clear()
    g = trace(model, x)
    # during the pass: d (plain) had no hook, h (the user's hook) had the user's and the recorder's
    assert _SEEN == [(0, 2)]
    assert {i.name for i in g} == {"c", "d", "h", "direct", "lin", "c1"} and g["d"].norm == "bn"
    after = {n: (dict(m.__dict__), len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in model.named_modules()}
    assert after.keys() == before.keys()
    for n in before:
        assert after[n][1:] == before[n][1:]
        assert after[n][0].keys() == before[n][0].keys(), n  # no forward / _compiled_call_impl left behind
        assert "_compiled_call_impl" not in model.get_submodule(n).__dict__


def test_a_global_module_hook_sends_every_module_through_the_hooks() -> None:
    model, x = _Odd(), torch.randn(2, 3, 10, 10)
    ref = trace(model, x).to_dict()
    seen: list[str] = []
    handle = nn.modules.module.register_module_forward_hook(lambda m, a, o: seen.append(type(m).__name__))
    try:
        assert trace(model, x).to_dict() == ref
    finally:
        handle.remove()
    assert seen.count("Conv2d") == 3 and "BatchNorm2d" in seen  # every leaf call (direct.forward: no call)


def test_a_failing_leaf_call_is_reported_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(4, 8, 3))  # the second conv: wrong channels
    with pytest.raises(RuntimeError) as fast:
        trace(net, torch.randn(1, 3, 9, 9))
    monkeypatch.setattr(_meta_pass, "_CALL_SLOT", False)
    with pytest.raises(RuntimeError) as hooked:
        trace(net, torch.randn(1, 3, 9, 9))
    assert str(fast.value) == str(hooked.value) and "'2' (Conv2d" in str(fast.value)
    assert all("_compiled_call_impl" not in m.__dict__ and not m._forward_hooks for m in net.modules())
