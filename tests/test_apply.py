"""Applying plans: validated before the first draw, drawn in place, interrupts report what was drawn; init_'s plan
cache; meta-device deferred init."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch import nn

import initwise as iw
import initwise._apply as apply_mod
from initwise import _plan_cache


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(model: nn.Module, snap: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, snap[k]) for k, v in model.state_dict().items())


def mlp() -> tuple[nn.Module, torch.Tensor]:
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 3)), torch.randn(4, 6)


# ---------------------------------------------------------------- in place

def test_parameters_are_filled_in_place_with_torch_s_values() -> None:
    """Same Parameter objects, same storage (views see the new values), and the values are those of torch's own
    initializer drawn from the same generator in the plan's order."""
    model, x = mlp()
    params = list(model.parameters())
    ptrs = [p.data_ptr() for p in params]
    view = model[0].weight.detach()[:2]
    p = iw.init_(model, x, "kaiming", "fan_in", seed=7)
    assert [q is r for q, r in zip(model.parameters(), params)] == [True] * len(params)
    assert [q.data_ptr() for q in model.parameters()] == ptrs
    assert torch.equal(view, model[0].weight[:2])
    g = torch.Generator().manual_seed(7)
    for lp in p.layers:
        w = torch.empty(lp.shape).normal_(0.0, lp.std, generator=g)
        assert torch.equal(dict(model.named_parameters())[lp.name + ".weight"], w), lp.name
        assert torch.count_nonzero(dict(model.named_parameters())[lp.name + ".bias"]) == 0


# ---------------------------------------------------------------- everything a user can cause, before the first draw

def test_an_initializer_that_cannot_fill_a_later_layer_fails_before_the_first_draw() -> None:
    """identity on a transposed conv whose padding + stride exceeds the kernel is impossible: the error names the
    parameter and nothing, not even the first layer, was drawn."""
    model = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.ConvTranspose2d(4, 4, 2, stride=3))
    snap = _snapshot(model)
    with pytest.raises(ValueError, match=r"parameter '2\.weight'.*\(4, 4, 2, 2\).*padding \+ stride <= kernel"):
        iw.init_(model, torch.randn(1, 4, 6, 6), "identity", seed=0)
    assert _same(model, snap)


def test_a_plan_applied_to_another_model_fails_before_the_first_draw() -> None:
    model, x = mlp()
    p = iw.plan(model, x)
    other = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 4))
    snap = _snapshot(other)
    with pytest.raises(ValueError, match=r"'4\.weight' \(3, 8\).*shape \(4, 8\)"):
        p.apply(other, seed=0)
    assert _same(other, snap)


def test_a_model_partly_on_the_meta_device_fails_before_the_first_draw() -> None:
    model, x = mlp()
    p = iw.plan(model, x)
    model[4].to_empty(device="meta")
    snap = {k: v.clone() for k, v in model.state_dict().items() if not v.is_meta}
    with pytest.raises(ValueError, match=r"'4\.weight'.*meta device.*to_empty"):
        p.apply(model, seed=0)
    assert all(torch.equal(v, snap[k]) for k, v in model.state_dict().items() if not v.is_meta)


def test_an_integer_parameter_is_named() -> None:
    model, x = mlp()
    p = iw.plan(model, x)
    model[2].weight = nn.Parameter(torch.zeros(8, 8, dtype=torch.int64), requires_grad=False)
    with pytest.raises(TypeError, match=r"'2\.weight'.*Linear.*torch\.int64"):
        p.apply(model, seed=0)


# ---------------------------------------------------------------- interrupts while drawing

class _FailOnCall:
    """Wraps the draw of a normal weight (``_apply._draw``: the one torch call after prepare's checks) so that its
    n-th real (non-meta) call raises ``exc`` instead of drawing."""

    def __init__(self, n: int, exc: BaseException) -> None:
        self.n, self.exc, self.calls = n, exc, 0
        self.inner = apply_mod._draw

    def __call__(self, t, *a, **k):
        if not t.is_meta:
            self.calls += 1
            if self.calls == self.n:
                raise self.exc
        return self.inner(t, *a, **k)


@pytest.mark.parametrize("exc, kind", [(KeyboardInterrupt(), iw.InitInterrupted),
                                       (RuntimeError("out of memory"), iw.PartialInitError)])
def test_an_interrupt_while_drawing_says_which_parameters_were_drawn(monkeypatch, exc, kind) -> None:
    model, x = mlp()
    snap = _snapshot(model)
    ref, _ = mlp()
    ref.load_state_dict(snap)
    iw.init_(ref, x, seed=3)  # what an uninterrupted init_ gives
    monkeypatch.setattr(apply_mod, "_draw", _FailOnCall(3, exc))  # the third weight
    with pytest.raises(kind) as info:
        iw.init_(model, x, seed=3)
    err = info.value
    assert isinstance(err, KeyboardInterrupt if kind is iw.InitInterrupted else RuntimeError)
    assert err.__cause__ is exc
    assert err.drawn == ("0.weight", "0.bias", "2.weight", "2.bias")
    assert err.pending == ("4.weight", "4.bias")
    assert "4 of 6 parameters" in str(err) and "pending: 4.weight, 4.bias" in str(err)
    state = model.state_dict()
    for name in err.drawn:
        assert torch.equal(state[name], ref.state_dict()[name]), name
    for name in err.pending:
        assert torch.equal(state[name], snap[name]), name


# ---------------------------------------------------------------- the plan cache

def _cached_plan_count() -> int:
    return len(_plan_cache._cache)


def test_a_second_init_reuses_the_plan_and_returns_what_plan_would() -> None:
    _plan_cache.clear()
    model, x = mlp()
    iw.init_(model, x, "kaiming", "fan_out", seed=0)
    assert _cached_plan_count() == 1
    other, _ = mlp()
    x2 = torch.randn(4, 6) * 3.0  # another example: same shapes, other second moment
    calls = []
    real_trace = iw._plan.trace
    try:
        iw._plan.trace = lambda *a, **k: calls.append(1) or real_trace(*a, **k)
        cached = iw.init_(other, x2, "kaiming", "fan_out", seed=0)
    finally:
        iw._plan.trace = real_trace
    assert calls == [] and _cached_plan_count() == 1
    fresh = iw.plan(other, x2, "kaiming", "fan_out")
    assert cached.to_dict() == fresh.to_dict()
    assert all(info.module is dict(other.named_modules())[info.name] for info in cached.graph.layers)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))


def test_a_changed_structure_is_not_served_a_stale_plan() -> None:
    _plan_cache.clear()
    model, x = mlp()
    iw.init_(model, x, seed=0)
    model[1] = nn.LeakyReLU(0.2)  # another activation: another gain
    p = iw.init_(model, x, seed=0)
    assert p["0"].activation == "leaky_relu(negative_slope=0.2)"
    model[1].negative_slope = 0.5  # an attribute changed in place
    p = iw.init_(model, x, seed=0)
    assert p["0"].activation == "leaky_relu(negative_slope=0.5)"
    conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
    y = torch.randn(1, 3, 8, 8)
    before = iw.init_(conv, y, "kaiming", "fan_out", seed=0)
    conv[2].groups, conv[2].weight = 4, nn.Parameter(torch.empty(8, 2, 3, 3))  # grouped: other fans
    after = iw.init_(conv, y, "kaiming", "fan_out", seed=0)
    assert after["2"].fans.fan_out == before["2"].fans.fan_out / 4
    assert after.to_dict() == iw.plan(conv, y, "kaiming", "fan_out").to_dict()
    y2 = torch.randn(2, 3, 8, 8)  # another batch size
    assert iw.init_(conv, y2, seed=0).to_dict() == iw.plan(conv, y2).to_dict()


def test_the_cache_keeps_no_model_alive_and_skips_value_dependent_plans() -> None:
    _plan_cache.clear()
    model, x = mlp()
    model[2].register_forward_hook(lambda mod, args, out: model.training and out)  # a hook holding the model
    iw.init_(model, x, seed=0)
    assert _cached_plan_count() == 1
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None
    _plan_cache.clear()
    model, x = mlp()
    iw.init_(model, x, seed=0, exclude=["0"])
    iw.init_(model, x, seed=0, bias="keep")
    assert _cached_plan_count() == 0


def test_init_never_propagates_and_a_plan_read_later_is_what_an_eager_one_gives(monkeypatch) -> None:
    import copy

    import initwise._plan_types as types_mod
    from initwise._plan_moments import propagated

    _plan_cache.clear()
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2),
                          nn.Tanh(), nn.Flatten(), nn.Linear(8 * 7 * 7, 4))
    x = torch.randn(2, 3, 16, 16) * 2.0

    def eager() -> dict:  # what plan() gave when it propagated at once: the layers filled by propagated() itself
        p = iw.plan(model, x, "kaiming", "fan_out")
        p._resolve()  # (the deferred run) then propagate again, eagerly, onto the same layers
        for lp in p.layers:
            lp.forward = lp.backward = None
        layer_ms, norm_ms, _ = p._moments
        p.input_ms, p.output_forward, p.approximate, _ = propagated(p.graph, p.layers, dict(layer_ms), norm_ms, x)
        return p.to_dict()

    want = eager()
    runs = []
    real = types_mod.Plan._resolve
    monkeypatch.setattr(types_mod.Plan, "_resolve", lambda self: (runs.append(1) if "_lazy" in self.__dict__
                                                                  else None, real(self))[1])
    p = iw.init_(model, x, "kaiming", "fan_out", seed=0)
    again = iw.init_(model, x * 3.0, "kaiming", "fan_out", seed=0)  # a cache hit for another second moment
    assert runs == []  # neither init_ propagated
    layer = copy.copy(p.layers[1])  # a copy of a layer still waiting: reads the figures of the layer it copies
    assert layer.forward == want["layers"][1]["forward"] and runs == [1]
    assert p.to_dict() == want
    assert again.to_dict() == iw.plan(model, x * 3.0, "kaiming", "fan_out").to_dict()
    assert again.to_dict() != want  # (its own example's moments)
    import pickle

    assert pickle.loads(pickle.dumps(iw.plan(model, x, "kaiming", "fan_out"))).to_dict() == want  # plain data waits


def test_cache_false_always_traces() -> None:
    _plan_cache.clear()
    model, x = mlp()
    iw.init_(model, x, seed=0, cache=False)
    assert _cached_plan_count() == 0
    with pytest.raises(TypeError, match="cache"):
        iw.init_(model, x, seed=0, cache="yes")


# ---------------------------------------------------------------- meta-device deferred init

class TinyLM(nn.Module):
    def __init__(self, vocab: int = 50, d: int = 16) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.norm = nn.LayerNorm(d)
        self.up = nn.Linear(d, 4 * d)
        self.act = nn.GELU()
        self.down = nn.Linear(4 * d, d)
        self.head = nn.Linear(d, vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.emb(ids)
        h = h + self.down(self.act(self.up(self.norm(h))))
        return self.head(h)


def _convnet() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, padding=1, groups=4), nn.SiLU(),
                         nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))


def test_the_meta_example_from_issue_12_plans() -> None:
    p = iw.plan(nn.Linear(4, 4, device="meta"), torch.empty(2, 4, device="meta"))
    assert p.layers[0].std == pytest.approx(0.5) and p.input_ms == 1.0


@pytest.mark.parametrize("build, example", [
    (_convnet, lambda dev: torch.empty(1, 3, 8, 8, device=dev)),
    (TinyLM, lambda dev: torch.zeros(2, 5, dtype=torch.long, device=dev)),
])
@pytest.mark.parametrize("scheme", ["kaiming_fan_in", "kaiming_fan_out", "orthogonal", "xavier"])
def test_meta_built_model_after_to_empty_is_bit_equal_to_the_cpu_built_one(build, example, scheme) -> None:
    """Built under torch.device("meta"), planned from a meta example (nothing computed), materialized by to_empty,
    then init_: every parameter equals, bit for bit, the same model built on the CPU and initialized with the
    same seed."""
    with torch.device("meta"):
        deferred = build()
    plan = iw.plan(deferred, example("meta"), scheme)  # plans with no storage at all
    deferred.to_empty(device="cpu")
    plan.apply(deferred, seed=11)
    cpu = build()
    iw.init_(cpu, example("cpu"), scheme, seed=11)
    for (n, a), (_, b) in zip(deferred.named_parameters(), cpu.named_parameters()):
        assert torch.equal(a, b), n
    with torch.device("meta"):
        again = build()
    again.to_empty(device="cpu")
    iw.init_(again, example("meta"), scheme, seed=11)  # init_ straight from the meta example
    for (n, a), (_, b) in zip(again.named_parameters(), cpu.named_parameters()):
        assert torch.equal(a, b), n
