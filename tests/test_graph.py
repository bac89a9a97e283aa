"""Tests for initwise._graph.trace: what follows every layer of the zoo, and that the model is left untouched."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from initwise._graph import Graph, LayerInfo, trace

from zoo_models import PLAIN, ZOO


def summary(info: LayerInfo) -> str:
    """One line per layer: activation, then only the flags that are set (the truth tables below use it)."""
    parts = [str(info.activation)]
    if info.norm:
        parts.append(f"norm={info.norm}")
    if info.through_join:
        parts.append("join")
    if info.residual_end:
        parts.append(f"res={info.residual_scale:g}")
    if info.pixel_shuffle:
        parts.append(f"ps={info.pixel_shuffle}")
    if info.is_output:
        parts.append("out")
    if info.calls > 1:
        parts.append(f"calls={info.calls}")
    return " ".join(parts)


# Written by hand from each model's definition, in execution order.
TRUTH: dict[str, dict[str, str]] = {
    "mlp": {"net.0": "relu", "net.2": "leaky_relu(negative_slope=0.1)", "net.4": "silu", "net.6": "linear out"},
    "vgg": {"features.0": "relu", "features.2": "relu", "features.5": "relu", "features.7": "relu",
            "classifier.1": "relu", "classifier.3": "linear out"},
    "resnet": {
        "conv1": "relu norm=bn1",
        "layer1.conv1": "relu norm=layer1.bn1",
        "layer1.conv2": "relu norm=layer1.bn2 join res=1",
        "layer2.downsample.0": "relu norm=layer2.downsample.1 join",  # the projection shortcut is the skip side
        "layer2.conv1": "relu norm=layer2.bn1",
        "layer2.conv2": "relu norm=layer2.bn2 join res=1",
        "fc": "linear out",
    },
    "edsr": {
        "head": "linear",
        "body.0.body.0": "relu", "body.0.body.2": "linear res=0.1",
        "body.1.body.0": "relu", "body.1.body.2": "linear res=0.1",
        "body.2": "linear res=1",  # the long skip
        "tail.0": "linear ps=2",
        "tail.2": "linear out",
    },
    "dncnn": {"dncnn.0": "relu", "dncnn.2": "relu norm=dncnn.3", "dncnn.5": "relu norm=dncnn.6",
              "dncnn.8": "linear res=1 out"},  # x - noise
    "fsrcnn": {"feature.0": "prelu(negative_slope=0.25)", "shrink.0": "prelu(negative_slope=0.25)",
               "map.0": "prelu(negative_slope=0.25)", "map.2": "prelu(negative_slope=0.25)",
               "expand.0": "prelu(negative_slope=0.25)", "deconv": "linear out"},
    "espcn": {"conv1": "tanh", "conv2": "tanh", "conv3": "linear ps=3 out"},
    "unet": {"enc1.0": "relu", "enc1.2": "relu", "enc2.0": "relu", "enc2.2": "relu", "down2": "linear",
             "mid.0": "relu", "up2": "linear", "dec2.0": "relu", "dec2.2": "relu", "up1": "linear",
             "dec1.0": "relu", "dec1.2": "relu", "out": "linear out"},
    "mobilenet": {
        "stem.0": "hardswish norm=stem.1",
        "block.expand.0": "hardswish norm=block.expand.1",
        "block.dw.0": "hardswish norm=block.dw.1",
        "block.se.fc1": "relu",
        "block.se.fc2": "sigmoid",
        "block.project.0": "linear norm=block.project.1 res=1",
        "head.2": "linear out",
    },
    "transformer": {"attn": "linear res=1", "fc1": "gelu", "fc2": "linear res=1", "head": "linear out"},
    "lstm": {"lstm": "linear", "head": "linear out"},
    "control_flow": {"inp": "relu", "hidden": "tanh calls=2", "pos": "linear out"},
    "functional": {"l1": "leaky_relu(negative_slope=0.2)", "l2": "relu", "l3": "sigmoid", "l4": "gelu_tanh",
                   "l5": "relu", "l6": "hardtanh(max_val=2, min_val=-2)", "l7": "elu(alpha=0.5)", "l8": "linear out"},
    "nafnet": {
        "intro": "linear norm=block.norm",  # a user norm (LayerNorm2d) before any join
        "block.conv1": "linear",  # a conv (dw) follows
        "block.dw": "gate",  # SimpleGate: the chunk halves multiply each other (issue 9: was "linear")
        "block.sca.1": "gate",  # the channel attention multiplies y itself, without a sigmoid
        "block.conv2": "linear res=0.5",  # beta (per channel, all 0.5) is a constant factor
        "ending": "linear res=1 out",
    },
}


def test_truth_covers_the_zoo() -> None:
    assert set(TRUTH) == set(ZOO) and len(ZOO) >= 12
    assert set(PLAIN) <= set(ZOO)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_layers(name: str) -> None:
    model, example = ZOO[name]()
    g = trace(model, example)
    assert {i.name: summary(i) for i in g} == TRUTH[name]
    assert [i.name for i in g] == list(TRUTH[name])  # execution order
    assert g.unknown == []
    expected_layers = {n for n, m in model.named_modules() if n in TRUTH[name]}
    assert expected_layers == set(TRUTH[name])


@pytest.mark.parametrize("name", PLAIN)
def test_plain_models_have_no_norm_and_no_join(name: str) -> None:
    g = trace(*ZOO[name]())
    assert not any(n.kind in ("norm", "add", "sub", "cat", "mul") for n in g.nodes)


def test_resnet_consumers_and_joins() -> None:
    g = trace(*ZOO["resnet"]())
    assert g["conv1"].consumers == ("layer1.conv1", "layer2.downsample.0", "layer2.conv1")  # via the identity
    adds = [n for n in g.nodes if n.kind == "add"]
    assert len(adds) == 2 and all(n.residual and n.inplace for n in adds)
    # the branch operand descends from bn2, the skip is the block input / projection
    assert g.nodes[adds[0].branch].module == "layer1.bn2"
    assert g.nodes[adds[1].skip].module == "layer2.downsample.1"


def test_unet_concatenations() -> None:
    g = trace(*ZOO["unet"]())
    cats = [n for n in g.nodes if n.kind == "cat"]
    assert [(c.cat_dim, len(c.inputs)) for c in cats] == [(1, 2), (1, 2)]
    assert g["enc2.2"].consumers == ("down2", "dec2.0")
    assert g["enc1.2"].consumers == ("enc2.0", "dec1.0")


def test_mobilenet_gating_is_a_mul_join() -> None:
    g = trace(*ZOO["mobilenet"]())
    (mul,) = [n for n in g.nodes if n.kind == "mul"]
    assert g.nodes[mul.branch].kind == "act" and str(g.nodes[mul.branch].activation) == "sigmoid"
    assert g.nodes[mul.skip].module == "block.dw.2"


def test_edsr_scale_and_shift_nodes() -> None:
    g = trace(*ZOO["edsr"]())
    assert [n.factor for n in g.nodes if n.kind == "scale"] == [0.1, 0.1]
    assert [n.op for n in g.nodes if n.kind == "shift"] == ["sub", "add"]  # mean shift with a buffer
    (ps,) = [n for n in g.nodes if n.op == "pixel_shuffle"]
    assert ps.factor == 2 and ps.module == "tail.1"


def test_dncnn_subtraction_is_a_residual_sub() -> None:
    g = trace(*ZOO["dncnn"]())
    (sub,) = [n for n in g.nodes if n.kind == "sub"]
    assert sub.residual and g.nodes[sub.skip].kind == "input" and g.nodes[sub.branch].module == "dncnn.8"
    assert g.output_ids and g.nodes[g.output_ids[0]].inputs == (sub.id,)


def test_lstm_tuple_output_and_indexing() -> None:
    g = trace(*ZOO["lstm"]())
    assert g["lstm"].consumers == ("head",)
    assert any(n.op == "getitem" for n in g.nodes)


def test_control_flow_dead_ends_are_not_reported() -> None:
    model, x = ZOO["control_flow"]()
    g = trace(model, x)
    hidden = g["hidden"]
    assert hidden.calls == 2 and len(hidden.nodes) == 2 and hidden.consumers == ("hidden", "pos")
    assert any(n.kind == "unknown" and n.op == "gt" for n in g.nodes)  # `x.sum() > -1e9` is a node ...
    assert g.unknown == []  # ... but carries no signal


class _Scaled(nn.Module):
    """Residual forms: ``0.1 * y`` (reflected), ``y / 2``, ``torch.add``, ``add_``, ``-y``, ``torch.sub``."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c, self.d, self.e = (nn.Linear(6, 6) for _ in range(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.add(x, 0.1 * self.a(x))
        x = x + self.b(x) / 2
        out = self.c(x)
        out.add_(x)
        out = torch.sub(out, -self.d(out))
        return torch.add(out, self.e(out), alpha=0.25)


def test_scalar_factors_and_residual_forms() -> None:
    g = trace(_Scaled(), torch.randn(3, 6))
    got = {i.name: (i.residual_end, i.residual_scale) for i in g}
    assert got == {"a": (True, 0.1), "b": (True, 0.5), "c": (True, 1.0), "d": (True, -1.0), "e": (True, 0.25)}
    assert [n.kind for n in g.nodes if n.kind in ("add", "sub")] == ["add", "add", "add", "sub", "add"]
    assert all(n.residual for n in g.nodes if n.kind in ("add", "sub"))


class _LookThrough(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(2, 4, 1)
        self.drop = nn.Dropout2d(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.pad(self.conv(x), (1, 1, 1, 1))
        y = y.reshape(1, 8, -1).permute(0, 2, 1).transpose(1, 2).contiguous().view(1, 8, 10, 10)
        y = F.interpolate(F.dropout(self.drop(y), 0.1), scale_factor=2.0)
        y = F.max_pool2d(F.avg_pool2d(y, 2), 1).clone().float().detach().unsqueeze(0).squeeze(0)
        y = F.pixel_unshuffle(F.pixel_shuffle(y, 2), 2).chunk(2, dim=1)[0][:, :2].to(torch.float32)
        y = F.mish(y.expand(1, 2, 10, 10).flatten(2).unflatten(2, (10, 10)))
        return F.relu(F.group_norm(self.conv2(y), 2), inplace=True)


def test_look_through_ops() -> None:
    g = trace(_LookThrough().train(), torch.randn(1, 3, 8, 8))
    assert summary(g["conv"]) == "mish ps=2"
    assert summary(g["conv2"]) == "relu norm=group_norm out"
    assert g.unknown == []
    assert [n.factor for n in g.nodes if n.op in ("pixel_shuffle", "pixel_unshuffle")] == [2.0, 2.0]


class _Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(5, 5)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.fc(x)))


def test_weight_sharing_gives_one_layer_with_two_calls() -> None:
    g = trace(_Shared(), torch.randn(2, 5))
    (info,) = g.layers
    assert info.calls == 2 and len(info.nodes) == 2 and info.consumers == ("fc",) and info.is_output
    assert str(info.activation) == "gelu"
    assert any("linear" in note for note in info.notes)  # the second call is followed by nothing


def test_tied_parameters() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(10, 6)
            self.head = nn.Linear(6, 10, bias=False)
            self.head.weight = self.embed.weight

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            return self.head(torch.tanh(self.embed(idx)))

    g = trace(Tied(), torch.tensor([[1, 2, 3]]))
    assert g.tied == [("embed.weight", "head.weight")]
    assert summary(g["embed"]) == "tanh" and g["embed"].type == "Embedding"


@pytest.mark.parametrize("op", ["cumsum", "fft", "autograd_function"])
def test_unknown_ops_are_reported(op: str) -> None:
    class Clip(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):  # type: ignore[override]
            return x.clamp(-1, 1)

        @staticmethod
        def backward(ctx, g):  # type: ignore[override]
            return g

    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = nn.Sequential(nn.Linear(4, 4))
            self.out = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.inner(x)
            if op == "cumsum":
                y = torch.cumsum(y, dim=1)
            elif op == "fft":
                y = torch.fft.fft(y).real
            else:
                y = Clip.apply(y)
            return self.out(y)

    g = trace(M(), torch.randn(2, 4))
    assert g.unknown, "an op outside the tables must be reported"
    assert "layer 'inner.0'" in g.unknown[0]
    assert str(g["inner.0"].activation) == "linear"  # never guessed


class _Dict(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.b = nn.Linear(2, 4)

    def forward(self, x: torch.Tensor, y: torch.Tensor, scale: float = 1.0) -> dict[str, torch.Tensor]:
        return {"out": torch.cat([F.silu(self.a(x)), self.b(y)], dim=-1) * scale}


def test_tuple_and_dict_inputs() -> None:
    x, y = torch.randn(2, 3), torch.randn(2, 2)
    for example in ((x, y), [x, y], {"x": x, "y": y, "scale": 2.0}):
        g = trace(_Dict(), example)
        assert len(g.input_ids) == 2 and len(g.output_ids) == 1
        assert summary(g["a"]) == "silu out" and summary(g["b"]) == "linear out"
        assert g["a"].consumers == ()


def _state(model: nn.Module) -> dict:
    return {
        "params": {k: (v.detach().clone(), v.requires_grad) for k, v in model.named_parameters()},
        "grads": {k: None if v.grad is None else v.grad.clone() for k, v in model.named_parameters()},
        "buffers": {k: v.clone() for k, v in model.named_buffers()},
        "training": {k: m.training for k, m in model.named_modules()},
        "hooks": sum(len(d) for m in model.modules() for k, d in vars(m).items()
                     if "hook" in k and isinstance(d, dict)),
        "rng": torch.get_rng_state(),
    }


def _assert_same(before: dict, after: dict) -> None:
    assert before["params"].keys() == after["params"].keys()
    for k, (v, rg) in before["params"].items():
        assert torch.equal(v, after["params"][k][0]) and rg == after["params"][k][1], k
    for k, gr in before["grads"].items():
        assert (gr is None) == (after["grads"][k] is None) and (gr is None or torch.equal(gr, after["grads"][k])), k
    for k, b in before["buffers"].items():
        assert torch.equal(b, after["buffers"][k]), k
    assert before["training"] == after["training"]
    assert before["hooks"] == after["hooks"]
    assert torch.equal(before["rng"], after["rng"])


class _Fragile(nn.Module):
    """BatchNorm (train mode: would update running stats), dropout (consumes RNG), then maybe a bad Linear."""

    def __init__(self, fail: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5))
        self.head = nn.Linear(5 if fail else 4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return self.head(y.mean((2, 3)))


@pytest.mark.parametrize("fail", [False, True])
def test_model_is_left_untouched(fail: bool) -> None:
    model = _Fragile(fail)
    model.body[0].weight.grad = torch.ones_like(model.body[0].weight)
    model.body[0].bias.requires_grad_(False)
    model.head.eval()  # mixed training flags
    model.register_forward_hook(lambda *a: None)
    x = torch.randn(2, 3, 8, 8)
    x0 = x.clone()
    before = _state(model)
    if fail:
        with pytest.raises(RuntimeError, match=r"forward failed in 'head' \(Linear, input 2x4\)") as e:
            trace(model, x)
        assert isinstance(e.value.__cause__, RuntimeError)
    else:
        g = trace(model, x)
        assert summary(g["body.0"]) == "relu norm=body.1"
    _assert_same(before, _state(model))
    assert torch.equal(x, x0)
    assert model.body[1].num_batches_tracked.item() == 0


def test_inplace_ops_do_not_change_the_example() -> None:
    class M(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.relu_())

        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 3)

    x = torch.randn(4, 3)
    x0 = x.clone()
    g = trace(M(), x)
    assert torch.equal(x, x0) and g.nodes[1].kind == "act" and g.nodes[1].inplace


def test_wrong_shape_names_the_layer() -> None:
    model, _ = ZOO["mlp"]()
    with pytest.raises(RuntimeError, match=r"forward failed in 'net\.0' \(Linear, input 4x15\)"):
        trace(model, torch.randn(4, 15))
    vgg, _ = ZOO["vgg"]()
    with pytest.raises(RuntimeError, match=r"'features\.0' \(Conv2d, input 1x2x16x16\)"):
        trace(vgg, torch.randn(1, 2, 16, 16))


def test_error_in_the_models_own_code() -> None:
    class M(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise ValueError("boom")

    with pytest.raises(RuntimeError, match=r"forward failed in '' \(M, input 2x2\): ValueError: boom"):
        trace(M(), torch.zeros(2, 2))


def test_lazy_module_is_refused_before_forward() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.LazyLinear(2))
    with pytest.raises(ValueError, match=r"module '2' \(LazyLinear\) has uninitialized"):
        trace(model, torch.randn(1, 3))


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="nn.Module"):
        trace(lambda x: x, torch.zeros(1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="example_inputs"):
        trace(nn.Linear(2, 2), 3.0)


def test_prelu_and_rrelu_read_their_parameters() -> None:
    prelu = nn.PReLU(4)
    with torch.no_grad():
        prelu.weight.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    model = nn.Sequential(nn.Linear(2, 4), prelu, nn.Linear(4, 4), nn.RReLU(0.1, 0.3), nn.Linear(4, 1))
    g = trace(model, torch.randn(3, 2))
    assert g["0"].activation.param("negative_slope") == pytest.approx(math.sqrt(0.075))
    assert str(g["2"].activation) == "leaky_relu(negative_slope=0.2)"


def test_norm_modules_are_not_layers() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.GELU(), nn.Linear(4, 4), nn.RMSNorm(4),
                          nn.Linear(4, 4))
    g = trace(model, torch.randn(2, 4))
    assert [i.name for i in g] == ["0", "3", "5"]
    assert summary(g["0"]) == "gelu norm=1" and summary(g["3"]) == "linear norm=4"


def test_graph_api_and_serialization() -> None:
    g = trace(*ZOO["edsr"]())
    assert isinstance(g, Graph) and len(g) == len(TRUTH["edsr"]) and "head" in g and "nope" not in g
    assert [i.name for i in g] == list(TRUTH["edsr"])
    with pytest.raises(KeyError, match="no traced layer named 'nope'"):
        g.layer("nope")
    text = str(g)
    assert "body.0.body.2" in text and "residual-end(x0.1)" in text and "pixel-shuffle(2)" in text
    d = json.loads(json.dumps(g.to_dict()))
    assert d["layers"][1]["activation"]["str"] == "relu" and len(d["nodes"]) == len(g.nodes)
    assert all(n.id == i for i, n in enumerate(g.nodes))
    assert all(all(j < n.id for j in n.inputs) for n in g.nodes)  # a DAG in execution order


class _Gain(nn.Module):
    """A user module with its own parameter: a layer (leaf), its inner ops are not recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.g = nn.Parameter(torch.ones(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(x * self.g, dim=-1)


class _Merge(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)
        self.gain = _Gain()
        self.idn, self.up = nn.Identity(), nn.Upsample(scale_factor=2.0)
        self.post = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = torch.concat([torch.relu(self.a(x)), self.gain(self.b(x))], 1)
        c = torch.stack([c, -c], dim=1).mean(1)
        return self.post(F.selu(self.up(self.idn(c).unsqueeze(1)).squeeze(1)[:, :8]))


def test_stack_concat_identity_upsample_and_user_layers() -> None:
    g = trace(_Merge(), torch.randn(3, 4))
    assert {i.name: summary(i) for i in g} == {"a": "relu", "b": "linear", "gain": "selu join",
                                                "post": "linear out"}
    assert g["gain"].type == "_Gain" and g.unknown == [] and g["b"].consumers == ("gain",)
    assert [(n.op, n.cat_dim) for n in g.nodes if n.kind == "cat"] == [("concat", 1), ("stack", 1)]
    assert [n.module for n in g.nodes if n.kind == "pass" and n.module] == ["idn", "up"]


@pytest.mark.parametrize("name", sorted(ZOO))
def test_meta_fast_path_gives_the_same_graph_as_the_real_forward(name: str) -> None:
    model, x = ZOO[name]()
    fast, real = trace(model, x), trace(model, x, meta=False)
    key = lambda g: [(n.kind, n.op, n.inputs, n.shape, n.module, str(n.activation), n.factor, n.residual)  # noqa: E731
                     for n in g.nodes]
    assert key(fast) == key(real)
    assert [i.to_dict() for i in fast.layers] == [i.to_dict() for i in real.layers]


def test_trace_hooks_go_through_a_module_class_that_registers_its_own_and_none_stay() -> None:
    """The recorder's hooks are written into plain modules' hook dicts directly; a module whose class registers
    hooks its own way gets them through its methods; after the trace no module holds one."""
    calls = []

    class Own(nn.Linear):
        def register_forward_hook(self, hook, **kw):
            calls.append("post")
            return super().register_forward_hook(hook, **kw)

        def register_forward_pre_hook(self, hook, **kw):
            calls.append("pre")
            return super().register_forward_pre_hook(hook, **kw)

    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), Own(8, 2))
    for meta in (True, False):
        calls.clear()
        g = trace(net, torch.randn(3, 4), meta=meta)
        assert sorted(calls) == ["post", "pre"]
        assert [layer.name for layer in g.layers] == ["0", "2"] and str(g["0"].activation) == "relu"
        for m in net.modules():
            assert not m._forward_hooks and not m._forward_pre_hooks and not m._forward_hooks_with_kwargs \
                and not m._forward_pre_hooks_with_kwargs and not m._forward_hooks_always_called


class KeywordLinear(nn.Module):
    """Swin-V2's attention calls ``F.linear(input=x, weight=self.qkv.weight, bias=...)``: the signal is a keyword."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(8, 32)
        self.qkv = nn.Linear(32, 48, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(48))

    def forward(self, x):
        h = torch.relu(self.stem(x))
        return F.linear(input=h, weight=self.qkv.weight, bias=self.q_bias)


def test_a_functional_layer_reads_its_signal_from_a_keyword() -> None:
    """The layer node of ``F.linear(input=h, ...)`` has ``h`` (the ReLU) as its input, so the propagation reads
    the ReLU's moments (the old trace found no input, took it as 1 and cut the backward there: Swin2SR's qkv
    predicted 64x off)."""
    import initwise as iw

    torch.manual_seed(0)
    model, x = KeywordLinear(), torch.randn(16, 8)
    g = trace(model, x)
    node = next(n for n in g.nodes if n.kind == "layer" and n.module == "qkv")
    relu = next(n for n in g.nodes if n.kind == "act")
    assert node.inputs == (relu.id,)
    prof = iw.diagnose(model, x, generator=torch.Generator().manual_seed(0)).runs[0]
    stem = prof["stem"]
    assert stem.backward > 0 and stem.predicted_backward > 0
    assert abs(math.log(stem.backward / stem.predicted_backward)) < math.log(1.1) + 4 * stem.backward_noise
