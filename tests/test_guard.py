"""The one guarantee (issue 9, part 1; issue 12): no initwise call other than ``init_`` leaves a trace in the model.

Every pattern that broke real models gets a small model of its own, and every public path that runs the user's
forward (trace on the meta device and for real, plan, diagnose with and without schemes, advise, the CLI's
diagnose and advise) is checked against a full record of the model: every module's ``__dict__`` (identity of
each entry and of each entry of its dicts/lists/sets, which covers parameters, buffers, submodules and hooks),
tensor values, devices and version counters, ``.grad`` (identity and value), ``requires_grad``, the global RNGs,
the caller's example tensors, and the model's output on the same input (bit-equal, computed on a deep copy so
that the check itself changes nothing).
"""

from __future__ import annotations

import copy
import json
import random
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

import initwise as iw
from initwise._cli.main import main
from initwise._guard import GuardError, Snapshot, preserved


# ---- the patterns


class MeanAttr(nn.Module):
    """SwinIR/HAT/EDSR (BasicSR): ``self.mean = self.mean.type_as(x)`` on a plain tensor attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.mean = torch.tensor([0.4, 0.45, 0.41]).view(1, 3, 1, 1)
        self.img_range = 1.0
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.tail = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.mean = self.mean.type_as(x)
        x = (x - self.mean) * self.img_range
        return self.tail(torch.relu(self.conv(x))) + self.mean


class InPlaceInput(nn.Module):
    """Scales its input in place (RCAN-style code multiplies the batch it was given)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.tail = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.mul_(255.0)
        return self.tail(torch.relu(self.conv(x))) / 255.0


class ClampWeight(nn.Module):
    """Writes its own parameters in the forward: a clamp under no_grad and a write through ``.data``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.tail = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.conv.weight.clamp_(-0.05, 0.05)
        self.tail.bias.data.add_(1.0)  # invisible to version counters
        return self.tail(torch.relu(self.conv(x)))


class Stochastic(nn.Module):
    """Dropout and stochastic depth (a random skip of the branch) in train mode: both draw from the global RNG."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Dropout(0.3),
                                  nn.Conv2d(8, 8, 3, padding=1))
        self.tail = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        keep = (torch.rand(h.shape[0], 1, 1, 1) > 0.2).to(h.dtype) if self.training else 1.0
        return self.tail(h + self.body(h) * keep) + x


class Bookkeeping(nn.Module):
    """Sets non-tensor attributes, appends to a list, registers a hook and a buffer, and toggles ``requires_grad``
    of a parameter in its forward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.frozen = nn.Conv2d(8, 8, 1)
        self.frozen.weight.requires_grad_(False)
        self.tail = nn.Conv2d(8, 3, 3, padding=1)
        self.calls = 0
        self.history: list[tuple[int, ...]] = []
        self.seen = {"shape": None}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.last_shape = tuple(x.shape)
        self.history.append(tuple(x.shape))
        self.seen["shape"] = tuple(x.shape)
        self.tail.register_forward_hook(lambda *a: None)
        if "cache" not in self._buffers:
            self.register_buffer("cache", torch.zeros(1))
        self.conv.bias.requires_grad_(False)
        self.frozen.bias.requires_grad_(True)
        self.tail.weight.register_hook(lambda g: g * 2.0)  # piles up on the parameter itself
        return self.tail(self.frozen(torch.relu(self.conv(x))))


class Raises(nn.Module):
    """Changes attributes and a buffer, then raises (every call, or only on a batch of one)."""

    def __init__(self, always: bool = True) -> None:
        super().__init__()
        self.always = always
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.register_buffer("count", torch.zeros(()))
        self.scale = torch.ones(1)
        self.state = "fresh"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.state = "ran"
        self.count += 1
        self.scale = self.scale * 2
        self.conv.weight.data.mul_(3.0)
        if self.always or x.shape[0] == 1:
            raise ValueError("this model refuses to run")
        return self.conv(x)


class SpectralNorm(nn.Module):
    """torch's spectral_norm (SRGAN/ESRGAN discriminators): a pre-forward hook runs a power iteration on the
    ``weight_u`` buffer in train mode and sets ``weight`` as a new plain attribute on every call."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.utils.spectral_norm(nn.Conv2d(3, 8, 3, padding=1))
        self.tail = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(torch.nn.functional.leaky_relu(self.conv(x), 0.2))


PATTERNS = {"mean_attr": MeanAttr, "in_place_input": InPlaceInput, "clamp_weight": ClampWeight,
            "stochastic": Stochastic, "bookkeeping": Bookkeeping}


def _example() -> torch.Tensor:
    return torch.rand(4, 3, 12, 12, generator=torch.Generator().manual_seed(3))


def _prepared(name: str) -> tuple[nn.Module, torch.Tensor]:
    model = PATTERNS[name]().train()
    for p in model.parameters():  # gradients present, as after a training step
        if p.requires_grad:
            p.grad = torch.full_like(p, 0.25)
    model.register_forward_hook(lambda *a: None)
    model.register_forward_pre_hook(lambda *a: None)
    model.tail.register_full_backward_hook(lambda *a: None)  # its input requires grad: no torch warning
    model._register_state_dict_hook(lambda *a: None)
    return model, _example()


# ---- the record


def _containers(v):
    if isinstance(v, dict):
        return list(v.items())
    if isinstance(v, (list, set)):
        return list(v)
    return None


def _tensor_items(model: nn.Module):
    for name, m in model.named_modules():
        for k, v in m.__dict__.items():
            items = v.items() if isinstance(v, dict) else ((k, v),)
            for key, t in items:
                if isinstance(t, torch.Tensor):
                    yield f"{name}.{k}.{key}", t


def _hooks(t: torch.Tensor) -> list:
    return [(k, None if (h := getattr(t, k, None)) is None else list(h.items()))
            for k in ("_backward_hooks", "_post_accumulate_grad_hooks")]


def _output(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's output on ``x``, computed on a deep copy with a fixed seed: the check changes nothing."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        with torch.no_grad():
            return copy.deepcopy(model)(x.clone())


def record(model: nn.Module, *examples: torch.Tensor, output: bool = True) -> dict:
    return {
        "dicts": [(m, type(m), dict(m.__dict__), {k: _containers(v) for k, v in m.__dict__.items()
                                                  if _containers(v) is not None}) for m in model.modules()],
        "values": {k: (t, t.detach().clone(), t._version, t.device, t.requires_grad,
                       t.grad if t.is_leaf else None,
                       None if not t.is_leaf or t.grad is None else t.grad.clone(), _hooks(t))
                   for k, t in _tensor_items(model)},
        "rng": (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()),
        "examples": [(e, e.clone(), e._version) for e in examples],
        "output": _output(model, examples[0]) if examples and output else None,
        "global_hooks": {k: dict(v) for k, v in vars(nn.modules.module).items()
                         if k.startswith("_global_") and isinstance(v, dict)},
    }


def assert_untouched(model: nn.Module, before: dict, *, written: tuple[torch.Tensor, ...] = ()) -> None:
    """Everything as recorded; ``written``: tensors whose values and version counters may differ (init_'s)."""
    for m, cls, d, inner in before["dicts"]:
        assert type(m) is cls
        assert list(m.__dict__) == list(d), f"{type(m).__name__}: attributes added/removed"
        for k, v in d.items():
            assert m.__dict__[k] is v, f"{type(m).__name__}.{k} was reassigned"
        for k, items in inner.items():
            now = _containers(m.__dict__[k])
            assert len(now) == len(items) and all(
                (a is b) if not isinstance(a, tuple) else (a[0] == b[0] and a[1] is b[1])
                for a, b in zip(now, items)), f"{type(m).__name__}.{k} contents changed"
    after = dict(_tensor_items(model))
    assert list(after) == list(before["values"])
    for k, (t, value, version, device, rg, grad, grad_value, hooks) in before["values"].items():
        assert _hooks(t) == hooks, f"{k}: tensor hooks changed"
        assert after[k] is t
        assert t.device == device
        if not any(t is w for w in written):
            assert torch.equal(t.detach(), value), f"{k} changed value"
            assert t._version == version, f"{k} version counter moved"
        assert t.requires_grad == rg, f"{k}.requires_grad changed"
        if t.is_leaf:
            assert t.grad is grad, f"{k}.grad replaced"
            assert grad is None or torch.equal(grad, grad_value), f"{k}.grad changed"
    cpu, py, npy = before["rng"]
    assert torch.equal(torch.get_rng_state(), cpu), "torch's global RNG moved"
    assert random.getstate() == py, "Python's random moved"
    assert np.array_equal(np.random.get_state()[1], npy), "NumPy's global RNG moved"
    for e, value, version in before["examples"]:
        assert torch.equal(e, value) and e._version == version, "the caller's example changed"
    if before["output"] is not None and not written:
        assert torch.equal(_output(model, before["examples"][0][0]), before["output"]), "output not bit-equal"
    now = {k: dict(v) for k, v in vars(nn.modules.module).items() if k.startswith("_global_") and isinstance(v, dict)}
    assert now.keys() == before["global_hooks"].keys()
    assert all(list(now[k]) == list(v) for k, v in before["global_hooks"].items())


# ---- the library paths

CALLS = {
    "trace_meta": lambda m, x: iw.trace(m, x),
    "trace_real": lambda m, x: iw.trace(m, x, meta=False),
    "plan": lambda m, x: iw.plan(m, x, "kaiming", "fan_in"),
    "diagnose": lambda m, x: iw.diagnose(m, x),
    "diagnose_schemes": lambda m, x: iw.diagnose(m, x, schemes=["default", "kaiming_fan_in"],
                                                 generator=torch.Generator().manual_seed(0)),
    "advise": lambda m, x: iw.advise(m, x, seeds=2, candidates=["default", "kaiming_fan_in"]),
}


@pytest.mark.parametrize("call", list(CALLS))
@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_no_trace_left(pattern: str, call: str) -> None:
    model, x = _prepared(pattern)
    before = record(model, x)
    CALLS[call](model, x)
    assert_untouched(model, before)


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_init_writes_only_the_parameters_it_draws(pattern: str) -> None:
    model, x = _prepared(pattern)
    before = record(model, x)
    p = iw.init_(model, x, "kaiming", "fan_in", seed=0)
    params = dict(model.named_parameters())
    drawn = tuple(params[pp.param] for pp in [*p.params, *getattr(p, "norm_params", [])] if pp.method != "keep")
    assert drawn
    assert_untouched(model, before, written=drawn)


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_lsuv_writes_only_the_weights_it_draws(pattern: str) -> None:
    """lsuv_ runs the forward once per rescaling: each run is guarded like any other."""
    model, x = _prepared(pattern)
    before = record(model, x)
    p = iw.lsuv_(model, x, seed=0)
    params = dict(model.named_parameters())
    drawn = tuple(params[pp.param] for pp in [*p.params, *getattr(p, "norm_params", [])] if pp.method != "keep")
    assert drawn
    assert_untouched(model, before, written=drawn)


@pytest.mark.parametrize("meta", [True, False])
def test_spectral_norm_trace(meta: bool) -> None:
    """(trace only: plan does not yet know spectral_norm's ``weight_orig``, a KeyError that is not the guard's)"""
    model = SpectralNorm().train()
    x = _example()
    before = record(model, x)
    iw.trace(model, x, meta=meta)
    assert_untouched(model, before)


@pytest.mark.parametrize("call", list(CALLS))
def test_eval_mode_too(call: str) -> None:
    model, x = _prepared("stochastic")
    model.eval()
    before = record(model, x)
    CALLS[call](model, x)
    assert_untouched(model, before)


def test_meta_trace_leaves_no_meta_attribute() -> None:
    """The headline bug: after the meta trace the model must still run (it raised "Cannot copy out of meta")."""
    model = MeanAttr()
    mean = model.mean
    iw.plan(model, _example())
    assert model.mean is mean and model.mean.device.type == "cpu"
    iw.init_(model, _example(), seed=0)
    assert model.mean is mean
    assert torch.isfinite(model(_example())).all()


@pytest.mark.parametrize("call", list(CALLS))
def test_forward_that_raises(call: str) -> None:
    model = Raises(always=True)
    x = _example()
    before = record(model, x, output=False)  # the model cannot produce one
    with pytest.raises((RuntimeError, ValueError)):
        CALLS[call](model, x)
    assert_untouched(model, before)


def test_forward_that_raises_only_on_the_trace_slice() -> None:
    """diagnose traces a one-sample slice first: it fails there (state changed), then runs on the whole batch."""
    model = Raises(always=False)
    x = _example()
    before = record(model, x, output=False)  # the record's own run would raise on a slice
    iw.diagnose(model, x)
    iw.diagnose(model, x, schemes=["kaiming_fan_in"])
    assert_untouched(model, before)


def test_diagnose_loss_that_calls_backward_itself() -> None:
    model, x = _prepared("bookkeeping")
    before = record(model, x)

    def loss(out: torch.Tensor) -> torch.Tensor:
        value = out.square().mean()
        value.backward(retain_graph=True)  # accumulates into .grad: must not reach the caller's gradients
        return value

    iw.diagnose(model, x, loss=loss, schemes=["default"])
    assert_untouched(model, before)


def test_diagnose_measures_what_the_forward_does() -> None:
    """Restoring after the pass does not change what is measured: the clamp is in force during it."""
    model = ClampWeight()
    with torch.no_grad():
        model.conv.weight.fill_(1.0)
    prof = iw.diagnose(model, _example())
    assert prof["current"]["conv"].std == pytest.approx(0.05, rel=1e-6)  # measured after the forward's clamp
    assert model.conv.weight.eq(1.0).all()  # ... and undone afterwards


def test_advise_does_not_depend_on_the_global_rng() -> None:
    model, x = _prepared("stochastic")
    target = x.clone()
    results = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        adv = iw.advise(model, x, target=target, seeds=2, candidates=["default", "kaiming_fan_in"])
        results.append(json.dumps(adv.to_dict(), sort_keys=True, default=str))  # every number it reports
    assert results[0] == results[1]


def test_advise_each_draw_sees_the_callers_input() -> None:
    """An in-place forward on the example would compound over draws (the k-th draw would see 255^k x): every
    draw must give what the same model computing out of place gives."""

    class OutOfPlace(InPlaceInput):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x * 255.0
            return self.tail(torch.relu(self.conv(x))) / 255.0

    x = _example()
    runs = [iw.advise(cls(), x, target=x.clone(), seeds=3, candidates=["default", "kaiming_fan_in"])
            for cls in (InPlaceInput, OutOfPlace)]
    for name in ("default", "kaiming_fan_in"):
        losses = [adv.result(name).losses for adv in runs]
        assert len(losses[0]) == 3 and losses[0] == losses[1]
    assert torch.equal(x, _example())


def test_diagnose_schemes_run_on_the_model_and_are_undone() -> None:
    """Schemes no longer need a deep copy: a model that cannot be deep-copied is profiled all the same."""

    class NoCopy(nn.Sequential):
        def __deepcopy__(self, memo):
            raise TypeError("not copyable")

    model = NoCopy(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
    x = _example()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prof = iw.diagnose(model, x, schemes=["kaiming_fan_in", "orthogonal"])
    # 216 weights drawn: the sample std's relative standard error is 1/sqrt(2 * 216) = 4.8%; 0.2 is 4 of them
    assert prof["kaiming_fan_in"]["0"].std == pytest.approx(
        iw.plan(model, x, "kaiming", "fan_in")["0"].std, rel=0.2)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_zero_layer_model_gives_a_clear_error() -> None:
    """An eval-mode re-parameterized block that calls F.conv2d on its own weight (ECBSR after fusing)."""

    class RepBlock(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv3 = nn.Conv2d(3, 3, 3, padding=1)  # the training-time branches
            self.conv1 = nn.Conv2d(3, 3, 1)
            self.rep_weight = nn.Parameter(torch.randn(3, 3, 3, 3) * 0.1)  # what eval mode runs
            self.rep_bias = nn.Parameter(torch.zeros(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.training:
                return self.conv3(x) + self.conv1(x)
            return torch.nn.functional.conv2d(x, self.rep_weight, self.rep_bias, padding=1)

    model = RepBlock().eval()
    before = record(model, _example())
    graph = iw.trace(model, _example())
    if len(graph.layers) == 0:  # once functional weights are traced as layers this model simply works
        with pytest.raises(ValueError, match="no parameterized layer"):
            iw.diagnose(model, _example())
    else:
        iw.diagnose(model, _example())
    assert_untouched(model, before)


# ---- the mechanism itself


def test_snapshot_restores_storage_swaps_and_versions() -> None:
    lin = nn.Linear(4, 4)
    w, data = lin.weight, lin.weight.data
    version = w._version
    value = w.detach().clone()
    with preserved(lin):
        w.data = torch.zeros(4, 4)  # what Plan.apply does
        with torch.no_grad():
            w.add_(1.0)
    assert lin.weight is w and w.data_ptr() == data.data_ptr()
    assert torch.equal(w.detach(), value) and w._version == version


@pytest.mark.parametrize("swap", ["new storage", "view", "offset", "other dtype, same bytes", "set_", "meta"])
def test_every_kind_of_storage_swap_is_swapped_back(swap: str) -> None:
    """What the restore compares (storage, offset, sizes, strides, dtype) in each of its ways."""
    x = torch.arange(16.0) if swap != "meta" else torch.empty(16, device="meta")
    holder = nn.Module()
    holder.t = x  # a plain tensor attribute (no requires_grad: any dtype may be swapped in)
    data = x.data
    with preserved(holder, clone=False):
        if swap == "new storage":
            x.data = torch.arange(16.0)
        elif swap == "view":
            x.data = data.view(4, 4)
        elif swap == "offset":
            x.data = data[1:]
        elif swap == "other dtype, same bytes":
            x.data = data.view(torch.int32)
        elif swap == "set_":
            x.set_(torch.zeros(16))
        else:
            x.data = torch.empty(4, 4, device="meta")
    assert holder.t is x and x.dtype == data.dtype and x.shape == data.shape and x.stride() == data.stride()
    assert x.storage_offset() == 0 and (swap == "meta" or (x.data_ptr() == data.data_ptr()
                                                           and torch.equal(x, torch.arange(16.0))))


def test_autograd_graph_saved_before_stays_valid() -> None:
    """A graph built before the call saved the weight; the restore sets its version counter back."""
    lin = nn.Linear(4, 4)
    x = torch.randn(2, 4, requires_grad=True)
    y = torch.tanh(lin(x)).sum()  # tanh saves its output; linear saves the weight
    with preserved(lin):
        with torch.no_grad():
            lin.weight.mul_(2.0)
    y.backward()  # raises "modified by an inplace operation" if the version counter stayed moved


def test_a_write_the_guard_cannot_see_is_reported() -> None:
    lin = nn.Linear(4, 4)
    with pytest.raises(GuardError, match="weight"):
        with preserved(lin):
            with torch.no_grad(), torch._C.DisableTorchFunction():  # as a C++ or TorchScript op would write
                lin.weight.add_(1.0)


@pytest.mark.parametrize("write", ["method", "data", "view", "setitem", "iadd", "out", "init", "foreach",
                                   "aten", "inplace_relu", "embedding_max_norm"])
def test_copy_on_write_sees_every_python_write(write: str) -> None:
    emb = nn.Embedding(5, 4)
    w = emb.weight
    value, version = w.detach().clone(), w._version
    writes = {
        "method": lambda: w.mul_(2.0), "data": lambda: w.data.add_(1.0), "view": lambda: w[1:3].zero_(),
        "setitem": lambda: w.__setitem__(0, 7.0), "iadd": lambda: w.data.__iadd__(1.0),
        "out": lambda: torch.add(w, 1.0, out=w.data), "init": lambda: nn.init.normal_(w),
        "foreach": lambda: torch._foreach_mul_([w.data], 3.0), "aten": lambda: torch.ops.aten.add_.Scalar(w, 1.0),
        "inplace_relu": lambda: torch.nn.functional.relu(w.data, inplace=True),
        "embedding_max_norm": lambda: torch.nn.functional.embedding(torch.tensor([0, 1]), w, max_norm=0.01),
    }
    with preserved(emb):
        with torch.no_grad():
            writes[write]()
        assert not torch.equal(w.detach(), value)
    assert torch.equal(w.detach(), value) and w._version == version


class _AliasedBuffer(nn.Module):
    """Writes its buffer through a plain list: past the meta stand-ins the trace's meta pass puts in ``_buffers``."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.register_buffer("count", torch.zeros(3))
        self.aliases = [self.count]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.aliases[0].add_(1.0)
        return self.lin(x)


def test_meta_trace_copies_buffers_on_write() -> None:
    """The meta pass does not clone buffers up front (Snapshot(clone=False)): a Python write is still undone."""
    m = _AliasedBuffer()
    value, version = m.count.clone(), m.count._version
    iw.trace(m, torch.randn(2, 4))
    iw.init_(m, torch.randn(2, 4), seed=0)
    assert torch.equal(m.count, value) and m.count._version == version
    with preserved(m, clone=False) as snap:
        assert all(e.clone is None for e in snap._tensors.values())
        m(torch.randn(2, 4))
        assert not torch.equal(m.count, value)
    assert torch.equal(m.count, value) and m.count._version == version
    with pytest.raises(GuardError, match="count"):  # a write no Python call shows: reported, not silently kept
        with preserved(m, clone=False):
            with torch._C.DisableTorchFunction():
                m.count.add_(1.0)


def test_snapshot_restores_global_hooks_and_switches() -> None:
    lin = nn.Linear(4, 4)
    dtype, grad = torch.get_default_dtype(), torch.is_grad_enabled()
    with preserved(lin):
        nn.modules.module.register_module_forward_hook(lambda *a: None)
        torch.set_default_dtype(torch.float64)
        torch.set_grad_enabled(False)
    assert not nn.modules.module._global_forward_hooks
    assert torch.get_default_dtype() == dtype and torch.is_grad_enabled() == grad


def test_a_run_that_writes_no_parameter_copies_none() -> None:
    """The cost side of copy-on-write: reading parameters (properties, ops, backward) clones nothing."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                          nn.Conv2d(8, 3, 3, padding=1)).train()
    x = _example()
    with preserved(model, x) as snap:
        out = model(x)
        _ = [(p.shape, p.device, p.dtype, p.T if p.dim() == 2 else p) for p in model.parameters()]
        torch.autograd.grad(out.square().mean(), list(model.parameters()))
        iw.trace(model, x)
        iw.diagnose(model, x)
        copied = [e.where for e in snap._tensors.values() if isinstance(e.t, nn.Parameter) and e.clone is not None]
    assert copied == []


def test_nested_guards_share_one_copy() -> None:
    """advise > diagnose > trace hold three guards on one model: a parameter written inside is copied once."""
    lin = nn.Linear(4, 4)
    w = lin.weight
    value = w.detach().clone()
    with preserved(lin) as outer:
        with preserved(lin) as inner:
            with torch.no_grad():
                w.mul_(2.0)
            assert inner._tensors[id(w)].clone is outer._tensors[id(w)].clone is not None
        assert torch.equal(w.detach(), value)
        with torch.no_grad():
            w.add_(1.0)
    assert torch.equal(w.detach(), value)


def test_nested_guard_after_a_write_keeps_the_outer_original() -> None:
    lin = nn.Linear(4, 4)
    w = lin.weight
    value = w.detach().clone()
    with preserved(lin) as outer:
        with torch.no_grad():
            w.mul_(2.0)  # copied by the outer guard
        with preserved(lin) as inner:
            with torch.no_grad():
                w.mul_(3.0)  # the inner guard's original is the doubled value
            assert inner._tensors[id(w)].clone is not outer._tensors[id(w)].clone
        assert torch.equal(w.detach(), 2 * value)
    assert torch.equal(w.detach(), value)


def test_restore_many_times() -> None:
    model, x = _prepared("clamp_weight")
    before = record(model, x)
    snap = Snapshot(model, (x,))
    for _ in range(3):
        model(x)
        snap.restore()
    snap.close()
    assert_untouched(model, before)


# ---- the command line


@pytest.fixture()
def user_module(tmp_path, monkeypatch):
    """A user's model module on sys.path; the CLI imports it, the test reads the very same objects."""
    (tmp_path / "guard_user_models.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.mean = torch.tensor([0.4, 0.45, 0.41]).view(1, 3, 1, 1)
                self.head = nn.Conv2d(3, 8, 3, padding=1)
                self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Dropout(0.3),
                                          nn.Conv2d(8, 8, 3, padding=1))
                self.tail = nn.Conv2d(8, 3, 3, padding=1)
                self.calls = 0

            def forward(self, x):
                self.calls += 1
                self.mean = self.mean.type_as(x)
                x.mul_(1.0)
                with torch.no_grad():
                    self.head.weight.clamp_(-0.2, 0.2)
                h = self.head(x - self.mean)
                return self.tail(h + self.body(h)) + self.mean

        MODEL = Net().train()
        X = torch.rand(4, 3, 12, 12, generator=torch.Generator().manual_seed(5))

        def build():
            return MODEL, X
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    module = importlib.import_module("guard_user_models")
    yield module
    sys.modules.pop("guard_user_models", None)


def _run_cli(args, capsys) -> str:
    assert main(args) == 0
    out = capsys.readouterr().out
    return "\n".join(line for line in out.splitlines() if not line.startswith("("))  # drop the timing line


@pytest.mark.parametrize("command", [["diagnose"], ["diagnose", "--schemes", "default,kaiming_fan_in"],
                                     ["advise", "--seeds", "2", "--candidates", "default,kaiming_fan_in"]])
def test_cli_leaves_the_model_untouched_and_repeats(command, user_module, capsys) -> None:
    reports = []
    for global_seed in (1, 2):  # another global RNG state: the same report
        torch.manual_seed(global_seed)
        before = record(user_module.MODEL, user_module.X)
        reports.append(_run_cli([command[0], "guard_user_models:build", *command[1:]], capsys))
        assert_untouched(user_module.MODEL, before)
    assert reports[0] == reports[1]


def test_numpy_random_is_not_imported_by_init_and_one_imported_in_a_guard_is_not_left_seeded() -> None:
    """The guard reads NumPy's global RNG only once ``numpy.random`` is imported (reading it would import it, ~3 MiB
    in a process that never used it); where a guarded run imports it (seed_all does), it is left as a fresh
    import leaves it: seeded from the OS's entropy, not with the guard's seed. Checked in a fresh interpreter."""
    import os
    import subprocess
    from pathlib import Path

    code = textwrap.dedent("""
        import sys, torch, numpy, initwise as iw
        from initwise._guard import preserved
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 36, 2))
        x = torch.randn(1, 3, 8, 8)
        iw.init_(net, x, seed=0); iw.plan(net, x).to_dict()
        print('numpy.random' in sys.modules)
        with preserved(net) as snap:
            snap.seed(0)  # imports numpy.random and seeds it with 0
            assert 'numpy.random' in sys.modules
        import numpy.random as npr
        print(npr.get_state()[1][:4].tolist() == npr.RandomState(0).get_state()[1][:4].tolist())
        """)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "False"]
