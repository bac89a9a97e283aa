"""Parameter roles from the consuming op (issue 9): each pattern of the real-world failures, in a small model of ours.

Functional weights (``F.linear(x, self.qkv.weight)``), weight standardization, a norm subclass with an activation,
SimpleGate and chunk/split, frozen masks, a MeanShift conv, layer scales, GRN's zero weight, a module without
``reset_parameters`` under torch_default, ECBSR's sequential 1x1-3x3 kernels, an eval-mode re-parameterized conv,
ViT's class token and position embedding. Fans from the op are checked against the variance measured through the
real op, as tests/test_fans.py does for modules.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import initwise as iw
from initwise._graph import trace
from test_fans import mean_and_se

N_SE = 4.0
REPEATS = 24


def _snap(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _keep(p: iw.Plan, name: str) -> str:
    (pp,) = [q for q in p.params if q.param == name]
    assert pp.method == "keep", (name, pp.method)
    return pp.note


# ---------------------------------------------------------------- functional weights (torchvision swin's attention)

class FunctionalAttention(nn.Module):
    """Calls ``F.linear`` on its submodules' weights and never calls the submodules (torchvision's swin_t)."""

    def __init__(self, e: int = 16) -> None:
        super().__init__()
        self.qkv = nn.Linear(e, 3 * e)
        self.proj = nn.Linear(e, e)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = F.linear(x, self.qkv.weight, self.qkv.bias).chunk(3, dim=-1)
        return F.linear(torch.relu(q) + v, self.proj.weight, self.proj.bias)


def test_functional_linear_on_a_submodules_weight_is_a_planned_layer() -> None:
    model, x = FunctionalAttention(), torch.randn(4, 5, 16)
    g = trace(model, x)
    assert [i.name for i in g] == ["qkv", "proj"] and g["qkv"].type == "Linear"
    assert g.params["qkv.weight"].role == "weight" and g.params["qkv.weight"].op == "linear"
    assert g.params["qkv.bias"].role == "bias"
    assert str(g["qkv"].activation) == "relu" and g["proj"].is_output
    p = iw.plan(model, x, "kaiming")
    assert p.untouched == [] and {pp.param: pp.method for pp in p.params} == {
        "qkv.weight": "normal", "qkv.bias": "zeros", "proj.weight": "normal", "proj.bias": "zeros"}
    assert p["qkv"].std == pytest.approx(math.sqrt(2 / 16))
    assert trace(model, x, meta=False).params.keys() == g.params.keys()


# ---------------------------------------------------------------- fans from the op, measured through the op

class FunctionalConv(nn.Module):
    """A conv that owns a raw weight and calls the functional op itself, with circular padding."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, transposed: bool = False):
        super().__init__()
        shape = (cin, cout // groups, k, k) if transposed else (cout, cin // groups, k, k)
        self.w = nn.Parameter(torch.randn(shape))
        self.k, self.stride, self.groups, self.transposed = k, stride, groups, transposed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.transposed:
            return F.conv_transpose2d(x, self.w, None, self.stride, 0, 0, self.groups)
        p = (self.k - 1) // 2  # as nn.Conv2d(padding=1, padding_mode="circular") for k = 3, 4
        return F.conv2d(F.pad(x, (p, p, p, p), mode="circular"), self.w, None, self.stride, 0, 1, self.groups)


class FunctionalLinear(nn.Module):
    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(n_out, n_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.w)


FUNCTIONAL = {
    "linear_256_64": (lambda: FunctionalLinear(256, 64), (64, 256), 0, 0),
    "conv_depthwise_s2": (lambda: FunctionalConv(64, 64, 3, stride=2, groups=64), (8, 64, 32, 32), 0, 0),
    "conv_groups4": (lambda: FunctionalConv(32, 64, 3, groups=4), (8, 32, 24, 24), 0, 0),
    "conv_k4_s2": (lambda: FunctionalConv(16, 32, 4, stride=2), (8, 16, 32, 32), 0, 0),
    "convT_k4_s2": (lambda: FunctionalConv(32, 16, 4, stride=2, transposed=True), (8, 32, 20, 20), 4, 2),
}


def _moment(t: torch.Tensor, crop: int) -> float:
    if crop and t.dim() == 4:
        t = t[..., crop:-crop, crop:-crop]
    return float(t.double().pow(2).mean())


@pytest.mark.parametrize("case", sorted(FUNCTIONAL))
def test_fans_from_the_consuming_op_preserve_variance_through_it(case: str) -> None:
    build, shape, crop_out, crop_in = FUNCTIONAL[case]
    fwd, bwd = [], []
    for _ in range(REPEATS):
        m = build()
        x = torch.randn(shape, requires_grad=True)
        f = trace(m, x.detach()).params["w"].fans
        base = torch.randn(m.w.shape)
        with torch.no_grad():
            m.w.copy_(base / math.sqrt(f.fan_in))
        fwd.append(_moment(m(x).detach(), crop_out))
        with torch.no_grad():
            m.w.copy_(base / math.sqrt(f.fan_out))
        y = m(x)
        (gx,) = torch.autograd.grad(y, x, torch.randn_like(y))
        bwd.append(_moment(gx, crop_in))
    (mf, sf), (mb, sb) = mean_and_se(fwd), mean_and_se(bwd)
    assert sf < 0.02 and sb < 0.02, (sf, sb)
    assert abs(mf - 1) < N_SE * sf, f"forward {mf:.4f} +- {sf:.4f}"
    assert abs(mb - 1) < N_SE * sb, f"backward {mb:.4f} +- {sb:.4f}"


def test_planned_fans_of_a_functional_conv_are_the_ops() -> None:
    m = FunctionalConv(64, 64, 3, stride=2, groups=64)
    p = iw.plan(m, torch.randn(1, 64, 8, 8), "kaiming", "fan_out")
    (pp,) = [q for q in p.params if q.param == "w"]
    assert (pp.fans.fan_in, pp.fans.fan_out) == (9.0, 9 / 4) and pp.fan == 9 / 4  # torch's shape says 9 and 576


# ---------------------------------------------------------------- weight standardization (NF-Net's ScaledStdConv2d)

class ScaledStdConv(nn.Conv2d):
    """timm's ScaledStdConv2d: the weight is standardized per output channel by F.batch_norm, times a gain."""

    def __init__(self, cin: int, cout: int, gain_init: float = 1.0, k: int = 3) -> None:
        super().__init__(cin, cout, k, padding=k // 2)
        self.scale = self.weight[0].numel() ** -0.5
        self.gain = nn.Parameter(torch.full((cout, 1, 1, 1), gain_init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                         weight=(self.gain * self.scale).view(-1), training=True, momentum=0.0,
                         eps=1e-6).reshape_as(self.weight)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class StdConvByHand(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / (w.std(dim=(1, 2, 3), keepdim=True) + 1e-5)
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


def test_weight_standardization_is_seen_and_the_gain_kept_with_its_zeros() -> None:
    model = nn.Sequential(ScaledStdConv(3, 8), nn.ReLU(), ScaledStdConv(8, 8, gain_init=0.0), StdConvByHand(8, 4, 3))
    x = torch.randn(2, 3, 8, 8)
    g = trace(model, x)
    assert [i.name for i in g] == ["0", "2", "3"] and str(g["0"].activation) == "relu"
    assert all(g.params[f"{n}.weight"].standardized for n in ("0", "2", "3"))
    assert g.params["0.gain"].role == "scale" and "weight-standardized" in str(g)
    snap = _snap(model)
    p = iw.init_(model, x, "kaiming", seed=0)
    assert torch.equal(model[2].gain, snap["2.gain"]) and float(model[2].gain.detach().abs().max()) == 0.0
    assert torch.equal(model[0].gain, snap["0.gain"])
    assert "per-channel scale" in _keep(p, "0.gain")
    (w0,) = [q for q in p.params if q.param == "0.weight"]
    assert w0.method == "normal" and "standardized" in w0.note
    assert not torch.equal(model[0].weight, snap["0.weight"])
    assert torch.isfinite(model(x)).all()


@pytest.mark.parametrize("gain", [1.0, 0.5])
def test_a_standardized_weight_is_predicted_with_the_scale_its_op_uses(gain: float) -> None:
    """The prediction does not depend on the drawn scale: E[y^2] = fan_in * (gain^2 / fan_in) * E[x^2] (NF-Net's
    gamma = 1), measured through the real layer (1x1 kernels: no border)."""
    est, pred = [], []
    for seed in range(REPEATS):
        model = ScaledStdConv(64, 64, gain_init=gain, k=1)
        x = torch.randn(4, 64, 8, 8)
        p = iw.init_(model, x, "kaiming", seed=seed, cache=False)
        pred.append(p.layers[0].forward)
        with torch.no_grad():
            est.append(float(model(x).double().pow(2).mean() / x.double().pow(2).mean()))
    m, se = mean_and_se(est)
    assert se < 0.02 * gain**2 and abs(m - gain**2) < N_SE * se, (m, se)
    assert pred[0] == pytest.approx(gain**2, rel=1e-3)  # standardized per channel (up to eps), for any draw


# ---------------------------------------------------------------- a norm subclass with an activation (BatchNormAct2d)

class BatchNormAct2d(nn.BatchNorm2d):
    def __init__(self, c: int) -> None:
        super().__init__(c)
        self.drop = nn.Identity()
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training, 0.1,
                         self.eps)
        return self.act(self.drop(x))


@pytest.mark.parametrize("meta", [True, False])
def test_an_activation_inside_a_norm_subclass_is_traced(meta: bool) -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), BatchNormAct2d(8), nn.Conv2d(8, 4, 1))
    x = torch.randn(2, 3, 8, 8)
    g = trace(model, x, meta=meta)
    assert str(g["0"].activation) == "silu" and g["0"].norm == "1"
    with torch.no_grad():
        model[1].weight.fill_(3.0)
    p = iw.init_(model, x, "kaiming", seed=0)
    assert p["0"].gain == pytest.approx(iw.gain("silu"))
    assert torch.equal(model[1].weight, torch.ones(8))  # its affine pair is a norm's: reset


# ---------------------------------------------------------------- gates and splits (NAFNet's SimpleGate)

class SimpleGate(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=1)
        return x1 * x2


class GatedBlock(nn.Module):
    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, 2 * c, 1)
        self.gate = SimpleGate()
        self.conv2 = nn.Conv2d(c, 3 * c, 1)
        self.out = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.gate(self.conv1(x))
        a, b, c = torch.split(self.conv2(y), y.shape[1], dim=1)
        return self.out(torch.tanh(a) + b.relu() + c)


def test_chunk_and_split_give_one_node_per_piece_and_a_product_is_a_gate() -> None:
    model, x = GatedBlock(), torch.randn(2, 8, 6, 6)
    g = trace(model, x)
    pieces = [n for n in g.nodes if n.op in ("chunk", "split")]
    assert [(n.op, n.shape) for n in pieces] == [("chunk", (2, 8, 6, 6))] * 2 + [("split", (2, 8, 6, 6))] * 3
    assert len({n.id for n in pieces}) == 5
    (mul,) = [n for n in g.nodes if n.kind == "mul"]
    assert set(mul.inputs) == {pieces[0].id, pieces[1].id}
    assert str(g["conv1"].activation) == "gate" and g["conv1"].gate == mul.id
    assert str(g["conv2"].activation) == "tanh"  # the first piece's activation (the others noted)
    assert any("relu" in n for n in g["conv2"].notes)
    assert iw.gain("gate") == pytest.approx(1.0, abs=1e-6)  # E[(x1 x2)^2] = E[x1^2] E[x2^2] = 1 at unit variance


@pytest.mark.parametrize("c", [16, 64])
def test_gate_moments_measured_through_the_real_halves(c: int) -> None:
    """E[(x1 x2)^2] = E[x1^2] E[x2^2] for independent halves; the halves of one 1x1 conv share the input's norm,
    which adds exactly 2/fan_in for a Gaussian input (given x, the halves are independent N(0, |x|^2/C):
    E[(|x|^2/C)^2] = 1 + 2/C). Measured through the real chunk and product; the plan's gain is the unit-variance one."""
    model, x = GatedBlock(c), torch.randn(8, c, 12, 12)
    est = []
    for seed in range(REPEATS):
        iw.init_(model, torch.randn(8, c, 12, 12), "kaiming", seed=seed)
        x1, x2 = model.conv1(torch.randn(8, c, 12, 12)).detach().double().chunk(2, dim=1)
        est.append(float((x1 * x2).pow(2).mean() / (x1.pow(2).mean() * x2.pow(2).mean())))
    m, se = mean_and_se(est)
    assert se < 0.02
    assert abs(m - (1 + 2 / c)) < N_SE * se, f"{m:.4f} +- {se:.4f}, want {1 + 2 / c:.4f}"
    assert iw.plan(model, x, "kaiming")["conv1"].gain == pytest.approx(1.0, abs=1e-6)


# ---------------------------------------------------------------- constants: frozen masks, MeanShift, scales, GRN

class MeanShift(nn.Conv2d):
    """EDSR's MeanShift: a 1x1 conv with constant weights and requires_grad=False."""

    def __init__(self) -> None:
        super().__init__(3, 3, 1)
        self.weight.data = torch.eye(3).view(3, 3, 1, 1)
        self.bias.data = -torch.tensor([0.4, 0.45, 0.41])
        for p in self.parameters():
            p.requires_grad = False


class SobelBranch(nn.Module):
    """ECBSR's 'conv1x1-sobelx': a learned per-channel scale and bias times a frozen Sobel mask (depthwise)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.k0 = nn.Parameter(torch.randn(c, c, 1, 1) * 0.1)
        self.scale = nn.Parameter(torch.randn(c, 1, 1, 1) * 1e-3)
        self.bias = nn.Parameter(torch.zeros(c))
        mask = torch.tensor([[1.0, 0, -1], [2, 0, -2], [1, 0, -1]]).expand(c, 1, 3, 3).clone()
        self.mask = nn.Parameter(mask, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x, self.k0)
        return F.conv2d(y, self.scale * self.mask, self.bias, padding=1, groups=y.shape[1])


class LayerScale2d(nn.Module):
    """timm's LayerScale2d: a (C, 1, 1) gamma, no reset_parameters."""

    def __init__(self, c: int, init: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init * torch.ones(c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class GlobalResponseNorm(nn.Module):
    """ConvNeXt-V2's GlobalResponseNorm: zero weight and bias, so the block starts as the identity."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(c))
        self.bias = nn.Parameter(torch.zeros(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = x.norm(p=2, dim=(2, 3), keepdim=True)
        nx = gx / (gx.mean(dim=1, keepdim=True) + 1e-6)
        return x + torch.addcmul(self.bias.view(1, -1, 1, 1), self.weight.view(1, -1, 1, 1), x * nx)


class Constants(nn.Module):
    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.shift = MeanShift()
        self.head = nn.Conv2d(3, c, 3, padding=1)
        self.sobel = SobelBranch(c)
        self.ls = LayerScale2d(c)
        self.grn = GlobalResponseNorm(c)
        self.unused = nn.Linear(3, 3)
        self.tail = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(self.shift(x))
        h = h + self.ls(self.sobel(h))
        return self.tail(self.grn(h))


@pytest.mark.parametrize("scheme", ["kaiming", "xavier", "orthogonal", "torch_default"])
def test_frozen_scales_and_grn_keep_their_values_under_every_scheme(scheme: str) -> None:
    model, x = Constants(), torch.randn(2, 3, 10, 10)
    snap = _snap(model)
    p = iw.init_(model, x, scheme, seed=0)
    kept = ("shift.weight", "shift.bias", "sobel.mask", "sobel.scale", "ls.gamma", "grn.weight", "grn.bias",
            "unused.weight", "unused.bias")
    for name in kept:
        assert torch.equal(model.state_dict()[name], snap[name]), name
    assert "frozen" in _keep(p, "shift.weight") and "frozen" in _keep(p, "sobel.mask")
    assert "per-channel scale" in _keep(p, "sobel.scale") and "per-channel scale" in _keep(p, "ls.gamma")
    assert "per-channel scale" in _keep(p, "grn.weight") and "additive" in _keep(p, "grn.bias")
    assert _keep(p, "unused.weight") == "not used by the example: kept" and p.untouched == ["unused"]
    for name in ("head.weight", "tail.weight") + (("sobel.k0",) if scheme != "torch_default" else ()):
        assert not torch.equal(model.state_dict()[name], snap[name]), name
    assert torch.isfinite(model(x)).all()


def test_frozen_parameters_are_drawn_only_when_asked() -> None:
    model, x = Constants(), torch.randn(2, 3, 10, 10)
    snap = _snap(model)
    p = iw.init_(model, x, "kaiming", seed=0, frozen="draw")
    assert not torch.equal(model.shift.weight, snap["shift.weight"])
    assert "per-channel scale" in _keep(p, "sobel.scale")  # a scale is still a scale
    with pytest.raises(ValueError, match="frozen must be 'keep'"):
        iw.plan(model, x, "kaiming", frozen="yes")


def test_layer_scale_is_a_constant_factor_and_norm_reset_leaves_grn_at_zero() -> None:
    model, x = Constants(), torch.randn(2, 3, 10, 10)
    g = trace(model, x)
    assert "ls" not in g and "grn" not in g  # not layers: a scale node and a norm node (an op is not understood)
    assert [n.kind for n in g.nodes if n.module == "grn"] == ["norm"]
    (scale,) = [n for n in g.nodes if n.kind == "scale" and n.scope == "ls"]
    assert scale.factor == pytest.approx(1e-5)
    p = iw.plan(model, x, "kaiming", norm="reset")
    assert [pp.method for pp in p.params if pp.param.startswith("grn.")] == ["keep", "keep"]


def test_torch_default_and_diagnose_default_on_modules_without_reset_parameters() -> None:
    model, x = Constants(), torch.randn(2, 3, 10, 10)
    p = iw.plan(model, x, "torch_default")
    assert "no reset_parameters()" in _keep(p, "sobel.k0")
    prof = iw.diagnose(model, x, schemes=["default"])
    assert prof is not None


# ---------------------------------------------------------------- ECBSR: sequential kernels, eval re-parameterization

class SeqConv1x1_3x3(nn.Module):
    """ECBSR's SeqConv3x3 'conv1x1-conv3x3': k0 (1x1), pad with the bias b0, then k1 (3x3)."""

    def __init__(self, cin: int, cout: int, mid: int) -> None:
        super().__init__()
        self.k0 = nn.Parameter(torch.randn(mid, cin, 1, 1) * 0.1)
        self.b0 = nn.Parameter(torch.randn(mid) * 0.1)
        self.k1 = nn.Parameter(torch.randn(cout, mid, 3, 3) * 0.1)
        self.b1 = nn.Parameter(torch.randn(cout) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y0 = F.conv2d(x, self.k0, self.b0)
        y0 = F.pad(y0, (1, 1, 1, 1), "constant", 0)
        b0 = self.b0.view(1, -1, 1, 1)
        y0[:, :, 0:1, :] = b0
        y0[:, :, -1:, :] = b0
        y0[:, :, :, 0:1] = b0
        y0[:, :, :, -1:] = b0
        return F.conv2d(y0, self.k1, self.b1)

    def rep(self) -> tuple[torch.Tensor, torch.Tensor]:
        k = F.conv2d(self.k1, self.k0.permute(1, 0, 2, 3))
        b = torch.ones(1, self.b0.shape[0], 3, 3) * self.b0.view(1, -1, 1, 1)
        return k, F.conv2d(b, self.k1).view(-1) + self.b1


class ECB(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv3x3 = nn.Conv2d(c, c, 3, padding=1)
        self.seq = SeqConv1x1_3x3(c, c, 2 * c)
        self.act = nn.PReLU(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            y = self.conv3x3(x) + self.seq(x)
        else:  # re-parameterized: one conv whose kernel is computed from every branch's parameters
            k, b = self.seq.rep()
            y = F.conv2d(x, self.conv3x3.weight + k, self.conv3x3.bias + b, padding=1)
        return self.act(y)


def test_ecbsr_inner_1x1_kernel_is_followed_by_a_conv_not_the_prelu() -> None:
    model = nn.Sequential(ECB(4), ECB(4), nn.Conv2d(4, 3, 3, padding=1))
    x = torch.randn(1, 4, 8, 8)
    g = trace(model, x)
    assert str(g["0.seq.k0"].activation) == "linear" and g["0.seq.k0"].consumers == ("0.seq.k1",)
    assert str(g["0.seq.k1"].activation).startswith("prelu") and str(g["0.conv3x3"].activation).startswith("prelu")
    assert g.unknown == []
    p = iw.plan(model, x, "kaiming")
    assert [pp.param for pp in p["0.seq.k0"].params] == ["0.seq.k0", "0.seq.b0"]
    assert p["0.seq.k0"].gain == pytest.approx(1.0) and p["0.seq.k1"].gain > 1.3
    snap = _snap(model)
    iw.init_(model, x, "kaiming", seed=0)
    assert not torch.equal(model[0].seq.k0, snap["0.seq.k0"])


def test_eval_mode_reparameterized_model_traces_its_convs_and_diagnoses() -> None:
    model = nn.Sequential(ECB(4), ECB(4), nn.Conv2d(4, 3, 3, padding=1)).eval()
    x = torch.randn(1, 4, 8, 8)
    g = trace(model, x)
    assert len([n for n in g.nodes if n.kind == "layer"]) == 3 and g.unknown == []
    assert str(g["0"].activation).startswith("prelu")
    assert g.params["0.seq.k0"].computed and g.params["0.conv3x3.weight"].computed
    p = iw.plan(model, x, "kaiming")
    assert "computed from several parameters" in _keep(p, "0.seq.k1")
    prof = iw.diagnose(model, x)
    rows = {r.name: r for r in prof.runs[0].layers}
    assert rows["0"].output is None and rows["2"].output is not None  # "0"'s module output is after its PReLU


# ---------------------------------------------------------------- ViT's class token and position embedding

class TinyViT(nn.Module):
    def __init__(self, e: int = 16) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, e, 4, stride=4)
        self.class_token = nn.Parameter(torch.zeros(1, 1, e))
        self.pos = nn.Parameter(torch.randn(1, 5, e) * 0.02)
        self.head = nn.Linear(e, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.class_token.expand(t.shape[0], -1, -1), t], dim=1) + self.pos
        return self.head(t[:, 0])


def test_class_token_and_position_embedding_are_used_and_kept() -> None:
    model, x = TinyViT(), torch.randn(2, 3, 8, 8)
    p = iw.plan(model, x, "kaiming")
    assert "token" in _keep(p, "class_token") and "additive term" in _keep(p, "pos")
    assert "not used" not in _keep(p, "class_token") and p.untouched == []


# ---------------------------------------------------------------- an activation module with parameters (poolformer)

class StarReLU(nn.Module):
    """MetaFormer's StarReLU: ``s * relu(x)^2 + b`` with learned scalars s, b (pointwise, no weight)."""

    def __init__(self) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        self.scale = nn.Parameter(torch.full((1,), 0.8944))
        self.bias = nn.Parameter(torch.full((1,), -0.4472))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.relu(x) ** 2 + self.bias


def test_a_pointwise_module_with_parameters_is_the_activation_its_gain_comes_from() -> None:
    model = nn.Sequential(nn.Linear(64, 64), StarReLU(), nn.Linear(64, 8))
    x = torch.randn(16, 64)
    g = trace(model, x)
    assert [i.name for i in g] == ["0", "2"] and g["0"].activation.fn is model[1]
    snap = _snap(model)
    p = iw.init_(model, x, "kaiming", seed=0)
    assert torch.equal(model[1].scale, snap["1.scale"]) and torch.equal(model[1].bias, snap["1.bias"])
    assert "per-channel scale" in _keep(p, "1.scale") and "additive" in _keep(p, "1.bias")
    # the Kaiming gain 1/sqrt(E[phi(z)^2]), z ~ N(0, 1): Monte Carlo through the real module
    z = torch.randn(REPEATS, 200_000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        est = [float(model[1](r).double().pow(2).mean()) for r in z]
    m, se = mean_and_se(est)
    assert abs(p["0"].gain ** -2 - m) < N_SE * se, (p["0"].gain ** -2, m, se)
