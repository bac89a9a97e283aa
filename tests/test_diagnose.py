"""diagnose(): predictions against measurements, flags, schemes, and that the model is never changed."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import initwise as iw
from zoo_models import PLAIN, ZOO

# plain nets on inputs large enough that zero padding at the borders is a small effect
_BIG = {"mlp": (128, 16), "vgg": (8, 3, 32, 32), "fsrcnn": (4, 1, 48, 48), "espcn": (4, 1, 40, 40),
        "functional": (256, 8)}


@pytest.mark.parametrize("scheme", ["kaiming_fan_in", "kaiming_fan_out"])
@pytest.mark.parametrize("name", PLAIN)
def test_predictions_match_measurements_on_plain_nets(name, scheme):
    model, _ = ZOO[name]()
    x = torch.randn(_BIG[name])
    run = iw.diagnose(model, x, schemes=[scheme], generator=torch.Generator().manual_seed(1))[scheme]
    checked = 0
    for lp in run.layers:
        assert lp.forward is not None and lp.backward is not None
        if lp.forward_exact:
            z = abs(math.log(lp.forward / lp.predicted_forward)) / lp.forward_noise
            assert z <= iw._diagnose.MISMATCH_Z, (lp.name, lp.forward, lp.predicted_forward, lp.forward_noise)
            assert "forward_mismatch" not in lp.flags
            checked += 1
        if lp.backward_exact:
            z = abs(math.log(lp.backward / lp.predicted_backward)) / lp.backward_noise
            assert z <= iw._diagnose.MISMATCH_Z, (lp.name, lp.backward, lp.predicted_backward, lp.backward_noise)
            assert "backward_mismatch" not in lp.flags
            checked += 1
    assert checked >= 2


def test_noise_is_tight_enough_to_see_a_hidden_factor():
    """A layer that doubles its weight inside forward (unseen by the plan) is flagged, and only from there on."""

    class Doubled(nn.Linear):
        def forward(self, x):
            return F.linear(x, 2 * self.weight, self.bias)

    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), Doubled(64, 64), nn.ReLU(), nn.Linear(64, 64))
    run = iw.diagnose(model, torch.randn(256, 32), schemes=["kaiming_fan_in"],
                      generator=torch.Generator().manual_seed(0))["kaiming_fan_in"]
    flags = {lp.name: lp.flags for lp in run.layers}
    assert "forward_mismatch" not in flags["0"]
    assert "forward_mismatch" in flags["2"] and "forward_mismatch" in flags["4"]
    assert run["2"].forward / run["2"].predicted_forward == pytest.approx(4.0, rel=0.3)


def test_flags_vanishing_exploding_dead_saturated():
    deep = nn.Sequential(*[m for _ in range(6) for m in (nn.Linear(32, 32), nn.ReLU())], nn.Linear(32, 4))
    x = torch.randn(64, 32)
    vanish = iw.diagnose(deep, x, schemes=["kaiming_fan_in:gain=0.3"])
    assert "forward_vanishing" in vanish.layers[-1].flags
    assert "backward_vanishing" in vanish.layers[0].flags
    explode = iw.diagnose(deep, x, schemes=["kaiming_fan_in:gain=4"])
    assert "forward_exploding" in explode.layers[-1].flags
    dead = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    with torch.no_grad():
        dead[0].bias[:16] = -100.0
    lp = iw.diagnose(dead, x).layers[0]
    assert lp.dead_fraction == pytest.approx(0.5) and "dead" in lp.flags
    sat = nn.Sequential(nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 4))
    lp = iw.diagnose(sat, x, schemes=["kaiming_fan_in:gain=8"]).layers[0]
    assert lp.saturated_fraction > 0.5 and "saturated" in lp.flags
    assert not iw.diagnose(sat, x, schemes=["lecun"]).layers[0].flags  # z ~ N(0, 1): 1.2% beyond 2.5


def test_schemes_use_their_own_plans_and_copies():
    model, x = ZOO["vgg"]()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prof = iw.diagnose(model, x, schemes=["default", "kaiming_fan_out", "orthogonal"])
    assert prof.schemes == ["default", "kaiming_fan_out", "orthogonal"]
    for run in prof:
        cand = iw.candidate(run.scheme)
        p = iw.plan(model, x, **cand.plan_kwargs())
        assert [lp.predicted_forward for lp in run.layers] == pytest.approx([lp.forward for lp in p.layers])
        assert [lp.predicted_backward for lp in run.layers] == pytest.approx([lp.backward for lp in p.layers])
    assert prof["kaiming_fan_out"].layers[0].std != pytest.approx(prof["default"].layers[0].std, rel=0.05)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_weight_gradient_and_loss_cotangent():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 3))
    x = torch.randn(32, 8)
    run = iw.diagnose(model, x, loss=lambda y: y.pow(2).sum() / 2).runs[0]
    y = model(x)
    assert run.cotangent_second_moment == pytest.approx(float(y.detach().pow(2).mean()), rel=1e-5)  # d(y^2/2)/dy = y
    g0, = torch.autograd.grad(y.pow(2).sum() / 2, [model[0].weight])
    assert run.layers[0].weight_grad.second_moment == pytest.approx(float(g0.double().pow(2).mean()), rel=1e-4)
    assert run.layers[0].weight_grad.mean == pytest.approx(float(g0.double().mean()), rel=1e-3, abs=1e-8)
    assert model[0].weight.grad is None


def test_reproducible_with_a_generator_and_json():
    model, x = ZOO["mlp"]()
    a = iw.diagnose(model, x, schemes=["kaiming_fan_in"], generator=torch.Generator().manual_seed(5))
    b = iw.diagnose(model, x, schemes=["kaiming_fan_in"], generator=torch.Generator().manual_seed(5))
    assert a.to_dict() == b.to_dict()
    d = json.loads(a.to_json())
    assert d["schemes"] == ["kaiming_fan_in"] and d["cotangent"] == "random normal"
    layer = d["runs"][0]["layers"][0]
    assert layer["name"] == "net.0" and layer["fan_in"] == 16 and layer["output"]["second_moment"] > 0
    for key in ("forward", "backward", "predicted_forward", "predicted_backward", "forward_noise", "flags"):
        assert key in layer


@pytest.mark.parametrize("name", ["resnet", "edsr", "unet", "transformer"])
def test_table_fits_80_columns(name):
    model, x = ZOO[name]()
    text = str(iw.diagnose(model, x, schemes=["default", "kaiming_fan_in"]))
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "kaiming_fan_in" in text and "fwd" in text


def test_one_sample_trace_that_takes_another_path_is_redone():
    class ByBatch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            for _ in range(x.shape[0]):  # one call on the one-sample slice, four on the batch
                x = torch.relu(self.a(x))
            return self.b(x)

    lp = iw.diagnose(ByBatch(), torch.randn(4, 4)).layers[0]
    assert lp.calls == 4


# ---- never mutates the model


def _snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.clone() for k, v in model.state_dict(keep_vars=False).items()},
        "ids": {k: id(v) for k, v in model.state_dict(keep_vars=True).items()},
        "grad": {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks),
                   len(getattr(m, "_backward_pre_hooks", {}))) for m in model.modules()],
        "rng": torch.get_rng_state(),
    }


def _assert_same(model: nn.Module, before: dict) -> None:
    after = _snapshot(model)
    for k, v in before["state"].items():
        assert torch.equal(v, after["state"][k]), f"{k} changed"
    assert before["ids"] == after["ids"]
    for n, g in before["grad"].items():
        assert (g is None) == (after["grad"][n] is None), f"{n}.grad appeared/disappeared"
        assert g is None or torch.equal(g, after["grad"][n]), f"{n}.grad changed"
    for key in ("training", "requires_grad", "hooks"):
        assert before[key] == after[key], key
    assert torch.equal(before["rng"], after["rng"]), "global RNG state changed"


@pytest.mark.parametrize("name", list(ZOO))
def test_never_mutates_zoo_models(name):
    model, x = ZOO[name]()
    model.train()
    if name == "resnet":
        model.layer1.eval()  # mixed modes stay mixed
    first = next(model.parameters())
    first.grad = torch.ones_like(first)  # a .grad present stays as it is; the others stay None
    list(model.parameters())[-1].requires_grad_(False)  # a frozen parameter stays frozen
    before = _snapshot(model)
    with warnings.catch_warnings():
        if name == "control_flow":  # float(x.mean()) under grad: torch's own warning about the model
            warnings.simplefilter("ignore", UserWarning)
        prof = iw.diagnose(model, x, schemes=None if name != "mlp" else ["default", "kaiming_fan_in"])
    _assert_same(model, before)
    assert all(r.layers for r in prof)


class _Raising(nn.Module):
    def __init__(self, where: str) -> None:
        super().__init__()
        self.where = where
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        torch.rand(1)  # consumes the global RNG
        if self.where == "forward" and torch.is_grad_enabled():
            raise RuntimeError("forward fails on purpose")
        y = self.head(x)
        return _FailBackward.apply(y) if self.where == "backward" else y


class _FailBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        raise RuntimeError("backward fails on purpose")


@pytest.mark.parametrize("where", ["forward", "loss", "backward"])
def test_never_mutates_when_something_raises(where):
    model = _Raising(where).train()
    model.conv.weight.grad = torch.zeros_like(model.conv.weight)
    x = torch.randn(2, 3, 8, 8)
    before = _snapshot(model)

    def loss(y):
        if where == "loss":
            raise ValueError("loss fails on purpose")
        return y.sum()

    with pytest.raises((RuntimeError, ValueError), match="on purpose"):
        iw.diagnose(model, x, loss=loss, schemes=None)
    _assert_same(model, before)
    with pytest.raises((RuntimeError, ValueError), match="on purpose"):
        iw.diagnose(model, x, loss=loss, schemes=["kaiming_fan_in"])
    _assert_same(model, before)


def test_bad_arguments():
    model, x = ZOO["mlp"]()
    with pytest.raises(TypeError, match="nn.Module"):
        iw.diagnose(lambda t: t, x)
    with pytest.raises(ValueError, match="unknown candidate"):
        iw.diagnose(model, x, schemes=["kaiming_fan_sideways"])
    with pytest.raises(TypeError, match="loss"):
        iw.diagnose(model, x, loss=3)
    with pytest.raises(TypeError, match="scalar"):
        iw.diagnose(model, x, loss=lambda y: y)


def test_given_plans_replace_the_trace_and_the_planning_with_the_same_measurements():
    net = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(8, 2, 3, padding=1))
    x = torch.randn(6, 2, 12, 12, generator=torch.Generator().manual_seed(1))
    schemes = [iw.candidate("kaiming_fan_in"), iw.candidate("orthogonal")]
    g = iw.trace(net, x)
    plans = {"kaiming_fan_in": iw.plan(net, x, "kaiming", "fan_in", graph=g)}  # orthogonal: planned by diagnose
    a = iw.diagnose(net, x, schemes=schemes, generator=torch.Generator().manual_seed(3))
    b = iw.diagnose(net, x, schemes=schemes, generator=torch.Generator().manual_seed(3), plans=plans)
    for ra, rb in zip(a.runs, b.runs):
        assert [lp.forward for lp in ra.layers] == [lp.forward for lp in rb.layers]
        assert [lp.backward for lp in ra.layers] == [lp.backward for lp in rb.layers]
    assert b["kaiming_fan_in"].plan is plans["kaiming_fan_in"]
    with pytest.raises(TypeError, match="plans must be a dict"):
        iw.diagnose(net, x, schemes=schemes, plans={"orthogonal": "not a plan"})
    other = iw.plan(net, x, "orthogonal", graph=iw.trace(net, x))
    with pytest.raises(ValueError, match="share one traced graph"):
        iw.diagnose(net, x, schemes=schemes, plans={**plans, "orthogonal": other})


def test_functional_weights_are_measured_at_their_op():
    """A weight a functional op consumes outside its module's forward (swin's ``F.linear(x, self.qkv.weight)``)
    and a module's several weights (``owner.param`` layers) are measured where the op runs, as a retain_grad
    pass over the same forward measures them."""

    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv, self.proj = nn.Linear(16, 48), nn.Linear(16, 16)

        def forward(self, x):
            self.z = F.linear(x, self.qkv.weight, self.qkv.bias)
            q, k, v = self.z.chunk(3, -1)
            return self.proj(F.scaled_dot_product_attention(q, k, v))

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.w1 = nn.Parameter(torch.randn(32, 16) / 4)
            self.w2 = nn.Parameter(torch.randn(16, 32) / 6)

        def forward(self, x):
            self.z = F.linear(x, self.w1)
            return F.linear(torch.relu(self.z), self.w2)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), Attn(), nn.ReLU(), Two())
    x = torch.randn(4, 8, 16)
    run = iw.diagnose(model, x, generator=torch.Generator().manual_seed(0)).runs[0]
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(0))))
    y = model(x)  # the same forward, its pre-activations kept by the modules above
    for z in (model[1].z, model[3].z):
        z.retain_grad()
    cot = torch.randn(y.shape, generator=gen)
    y.backward(cot)
    for name, z in (("1.qkv", model[1].z), ("3.w1", model[3].z)):
        lp = run[name]
        assert lp.calls == 1
        assert lp.forward == pytest.approx(float(z.detach().pow(2).mean() / x.pow(2).mean()), rel=1e-5)
        assert lp.backward == pytest.approx(float(z.grad.pow(2).mean() / cot.pow(2).mean()), rel=1e-4)
        assert lp.forward_noise > 0 and lp.backward_noise > 0
    assert run["3.w1"].activation_output is not None  # followed to its ReLU


class _Pooled(nn.Module):
    """conv - norm - ReLU - conv - norm, global average pooling over 16 x 16, a linear head."""

    def __init__(self, norm, depth: int = 2):
        super().__init__()
        layers = []
        for i in range(depth):
            layers += [nn.Conv2d(3 if i == 0 else 32, 32, 3, padding=1), norm(32)] + ([nn.ReLU()] if i < depth - 1
                                                                                    else [])
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(F.adaptive_avg_pool2d(self.body(x), 1).flatten(1))


def test_global_pooling_is_not_reported_as_a_vanishing_gradient():
    """Per element, a global average pooling over k = 256 positions leaves each value 1/k^2 of the gradient:
    the measure's and the architecture's. A gradient the init really makes vanish is still flagged."""
    torch.manual_seed(0)
    run = iw.diagnose(_Pooled(lambda c: nn.GroupNorm(4, c)), torch.randn(4, 3, 16, 16), schemes=["kaiming_fan_in"],
                      generator=torch.Generator().manual_seed(0)).runs[0]
    for name in ("body.0", "body.3"):
        lp = run[name]
        assert lp.backward < iw._diagnose.VANISHING  # per element
        assert lp.backward_pooled == pytest.approx(1 / 256**2)
        assert "backward_pooled" in lp.flags and "backward_vanishing" not in lp.flags
        assert any("1/k^2 per element" in m and "not a vanishing gradient" in m for m in lp.messages)
    assert run["head"].backward_pooled == 1.0 and "backward_pooled" not in run["head"].flags
    # the same architecture with weights 20x too small: what is left after the pooling's factor still vanishes
    deep = _Pooled(lambda c: nn.Identity(), depth=4)
    bad = iw.diagnose(deep, torch.randn(4, 3, 16, 16), schemes=["kaiming_fan_in:gain=0.05"],
                      generator=torch.Generator().manual_seed(0)).runs[0]
    first = bad.layers[0]
    assert first.backward / first.backward_pooled < iw._diagnose.VANISHING
    assert "backward_vanishing" in first.flags and "backward_pooled" not in first.flags


def test_instance_norm_before_global_pooling_removes_the_gradient_at_any_batch():
    """An instance norm removes each sample's per-channel mean of the gradient, which is all a global pooling
    leaves: the gradient before it is 0 (a rounding residue measured), predicted 0, at batch 4 too; said to be
    the architecture's, and not a departure from the prediction."""
    torch.manual_seed(0)
    run = iw.diagnose(_Pooled(lambda c: nn.InstanceNorm2d(c, affine=True)), torch.randn(4, 3, 16, 16),
                      schemes=["kaiming_fan_in"], generator=torch.Generator().manual_seed(0)).runs[0]
    lp = run["body.3"]
    assert lp.predicted_backward == 0.0 and lp.backward < iw._flags.ZERO
    assert lp.flags == ["backward_batch_statistics"]
    assert any("an instance norm at any" in m for m in lp.messages)
