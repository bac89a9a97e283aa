"""Fans are right when the variance measured through the real layer matches them.

For every layer configuration below: draw the weight with variance ``1/fan_in`` (the effective fan from
``initwise.fans``), zero the biases, push unit-variance Gaussian input through the real ``nn`` layer and check
that the output's second moment is 1; draw it with variance ``1/fan_out``, backpropagate a unit-variance output
gradient with autograd and check that the input gradient's second moment is 1. Borders are avoided with circular
padding (Conv) or by cropping (ConvTranspose). The same measurement with torch's shape-only fans must be off by
the factor the layer predicts (depthwise fan_out by ``groups``, stride-2 by 4, transposed fans swapped).

Standard errors come from independent repeats: each repeat draws a fresh weight, input and output gradient, so the
per-repeat estimates are independent even though the positions and channels inside one repeat are correlated.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import initwise as iw

REPEATS = 24  # independent (weight, input, gradient) draws per configuration
N_SE = 4.0  # tolerance in standard errors
MAX_SE = 0.02  # the relative SE must be this small, so a factor-2 (or s^2, groups) error is >25 SE away




def _call(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return m(x)


@dataclass(frozen=True)
class Case:
    """One layer configuration and how to measure through it.

    ``run(module, x)`` is the real computation that the parameter ``param`` takes part in; ``crop_out`` /
    ``crop_in`` remove that many positions from both ends of each of the ``spatial`` trailing dims of the output /
    the input gradient before measuring (positions that see a partial kernel). For a ConvTranspose (kernel k,
    stride s) the output crop is k (an even multiple of s, so every phase of the stride stays equally represented)
    and the input crop ceil(k / s) (an input reaches outputs within k of its own block).
    """

    id: str
    build: Callable[[], nn.Module]
    param: str
    shape: tuple[int, ...]
    run: Callable[[nn.Module, torch.Tensor], torch.Tensor] = _call
    spatial: int = 0
    crop_out: int = 0
    crop_in: int = 0


def _crop(t: torch.Tensor, width: int, spatial: int) -> torch.Tensor:
    if width == 0 or spatial == 0:
        return t
    return t[(..., *[slice(width, -width)] * spatial)]


def _second_moment(t: torch.Tensor, width: int, spatial: int) -> float:
    return float(_crop(t, width, spatial).double().pow(2).mean())


def mean_and_se(estimates: list[float]) -> tuple[float, float]:
    """Mean of independent per-repeat estimates and its standard error ``std(ddof=1) / sqrt(repeats)``."""
    a = np.asarray(estimates, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1) / math.sqrt(a.size))


def _zero_biases(m: nn.Module) -> None:
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "bias" in name.rsplit(".", 1)[-1]:
                p.zero_()


def measure(case: Case, fan_fwd: str, fan_bwd: str, repeats: int = REPEATS) -> tuple[tuple[float, float], ...]:
    """Forward output and backward input-gradient second moments with ``Var(w) = 1/fans.<fan_fwd>`` and
    ``Var(w) = 1/fans.<fan_bwd>`` respectively: ``((fwd_mean, fwd_se), (bwd_mean, bwd_se))``."""
    fwd, bwd = [], []
    for _ in range(repeats):
        m = case.build()
        _zero_biases(m)
        f = iw.fans(m, case.param)
        w = getattr(m, case.param)
        base = torch.randn(w.shape, dtype=w.dtype)
        x = torch.randn(case.shape, requires_grad=True)
        with torch.no_grad():
            w.copy_(base / math.sqrt(getattr(f, fan_fwd)))
        fwd.append(_second_moment(case.run(m, x).detach(), case.crop_out, case.spatial))
        with torch.no_grad():
            w.copy_(base / math.sqrt(getattr(f, fan_bwd)))
        y = case.run(m, x)
        (gx,) = torch.autograd.grad(y, x, torch.randn_like(y))
        bwd.append(_second_moment(gx, case.crop_in, case.spatial))
    return mean_and_se(fwd), mean_and_se(bwd)


def _circ(cls: type[nn.Module], *args: int, **kw: int) -> Callable[[], nn.Module]:
    """A conv with circular padding: every output sees a full kernel and every input is reached uniformly."""
    return lambda: cls(*args, padding_mode="circular", **kw)


def _mha_block(i: int) -> Callable[[nn.Module, torch.Tensor], torch.Tensor]:
    # exactly what MultiheadAttention does with a packed in_proj_weight: F.linear, then chunk into q, k, v
    return lambda m, x: F.linear(x, m.in_proj_weight, m.in_proj_bias).chunk(3, -1)[i]


def _mha_real_value(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # the real module with one query and one key: attention weight 1, output = out_proj(v_proj(value))
    e = m.embed_dim
    q = torch.randn(1, x.shape[1], e)
    k = torch.randn(1, x.shape[1], m.kdim)
    return m(q, k, x, need_weights=False)[0]


def _mha_orthogonal_out(**kw: int) -> Callable[[], nn.Module]:
    """MHA whose out_proj is an isometry (torch's orthogonal_), so the output moment is the v projection's."""

    def build() -> nn.Module:
        m = nn.MultiheadAttention(64, 4, **kw)
        nn.init.orthogonal_(m.out_proj.weight)
        return m

    return build


def _gate(weight: str, gates: int, i: int) -> Callable[[nn.Module, torch.Tensor], torch.Tensor]:
    # the gate pre-activation: the module's own weight, chunked in the module's gate order (checked below)
    return lambda m, x: F.linear(x, getattr(m, weight)).chunk(gates, -1)[i]


def _bilinear(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return m(x, torch.randn(x.shape[0], m.in2_features))


CASES = [
    Case("linear_256_128", lambda: nn.Linear(256, 128), "weight", (64, 256)),
    Case("linear_64_512", lambda: nn.Linear(64, 512), "weight", (64, 64)),
    Case("linear_1024_32", lambda: nn.Linear(1024, 32), "weight", (64, 1024)),
    Case("bilinear", lambda: nn.Bilinear(24, 16, 48), "weight", (256, 24), _bilinear),
    Case("conv1d_k5", _circ(nn.Conv1d, 16, 32, 5, padding=2), "weight", (8, 16, 128), spatial=1),
    Case("conv2d_k3", _circ(nn.Conv2d, 16, 32, 3, padding=1), "weight", (8, 16, 24, 24), spatial=2),
    Case("conv2d_1x1", _circ(nn.Conv2d, 32, 64, 1), "weight", (8, 32, 16, 16), spatial=2),
    Case("conv2d_k3x5_s1x2", _circ(nn.Conv2d, 16, 32, (3, 5), stride=(1, 2), padding=(1, 2)), "weight",
         (8, 16, 24, 24), spatial=2),
    Case("conv3d_k3", _circ(nn.Conv3d, 8, 16, 3, padding=1), "weight", (4, 8, 12, 12, 12), spatial=3),
    Case("conv2d_depthwise", _circ(nn.Conv2d, 64, 64, 3, padding=1, groups=64), "weight", (8, 64, 24, 24),
         spatial=2),
    Case("conv2d_groups4", _circ(nn.Conv2d, 32, 64, 3, padding=1, groups=4), "weight", (8, 32, 24, 24), spatial=2),
    Case("conv2d_k3_s2", _circ(nn.Conv2d, 16, 32, 3, stride=2, padding=1), "weight", (8, 16, 32, 32), spatial=2),
    Case("conv2d_k4_s2", _circ(nn.Conv2d, 16, 32, 4, stride=2, padding=1), "weight", (8, 16, 32, 32), spatial=2),
    Case("conv1d_k3_s3", _circ(nn.Conv1d, 16, 32, 3, stride=3), "weight", (8, 16, 192), spatial=1),
    Case("conv2d_1x1_s2", _circ(nn.Conv2d, 32, 64, 1, stride=2), "weight", (8, 32, 32, 32), spatial=2),
    Case("conv2d_dilated", _circ(nn.Conv2d, 16, 32, 3, padding=2, dilation=2), "weight", (8, 16, 24, 24),
         spatial=2),
    Case("conv2d_depthwise_s2", _circ(nn.Conv2d, 64, 64, 3, stride=2, padding=1, groups=64), "weight",
         (8, 64, 32, 32), spatial=2),
    Case("convT2d_k4_s2", lambda: nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1), "weight", (8, 32, 20, 20),
         spatial=2, crop_out=4, crop_in=2),
    Case("convT2d_k3_s3", lambda: nn.ConvTranspose2d(32, 16, 3, stride=3), "weight", (8, 32, 16, 16),
         spatial=2, crop_out=3, crop_in=1),
    Case("convT2d_k2_s2", lambda: nn.ConvTranspose2d(32, 16, 2, stride=2), "weight", (8, 32, 16, 16),
         spatial=2, crop_out=2, crop_in=1),
    Case("convT2d_k3_s1", lambda: nn.ConvTranspose2d(32, 16, 3, padding=1), "weight", (8, 32, 16, 16),
         spatial=2, crop_out=3, crop_in=3),
    Case("convT1d_k4_s2", lambda: nn.ConvTranspose1d(32, 16, 4, stride=2, padding=1), "weight", (8, 32, 96),
         spatial=1, crop_out=4, crop_in=2),
    Case("convT3d_k4_s2", lambda: nn.ConvTranspose3d(16, 8, 4, stride=2, padding=1), "weight", (2, 16, 10, 10, 10),
         spatial=3, crop_out=4, crop_in=2),
    Case("convT2d_groups4", lambda: nn.ConvTranspose2d(32, 64, 4, stride=2, padding=1, groups=4), "weight",
         (8, 32, 16, 16), spatial=2, crop_out=4, crop_in=2),
    Case("convT2d_depthwise", lambda: nn.ConvTranspose2d(32, 32, 4, stride=2, padding=1, groups=32), "weight",
         (8, 32, 20, 20), spatial=2, crop_out=4, crop_in=2),
    *[Case(f"mha_in_proj_{b}", lambda: nn.MultiheadAttention(64, 4), "in_proj_weight", (128, 64), _mha_block(i))
      for i, b in enumerate("qkv")],
    Case("mha_in_proj_v_real", _mha_orthogonal_out(), "in_proj_weight", (1, 256, 64), _mha_real_value),
    Case("mha_q_proj_kdim", lambda: nn.MultiheadAttention(64, 4, kdim=32, vdim=48), "q_proj_weight", (128, 64),
         lambda m, x: F.linear(x, m.q_proj_weight)),
    Case("mha_k_proj_kdim", lambda: nn.MultiheadAttention(64, 4, kdim=32, vdim=48), "k_proj_weight", (128, 32),
         lambda m, x: F.linear(x, m.k_proj_weight)),
    Case("mha_v_proj_vdim_real", _mha_orthogonal_out(kdim=32, vdim=48), "v_proj_weight", (1, 256, 48),
         _mha_real_value),
    Case("mha_out_proj", lambda: nn.MultiheadAttention(64, 4).out_proj, "weight", (128, 64)),
    *[Case(f"lstm_ih_gate{i}", lambda: nn.LSTM(96, 64), "weight_ih_l0", (128, 96), _gate("weight_ih_l0", 4, i))
      for i in range(4)],
    Case("lstm_hh_gate2", lambda: nn.LSTM(96, 64), "weight_hh_l0", (128, 64), _gate("weight_hh_l0", 4, 2)),
    Case("lstm_proj_hh", lambda: nn.LSTM(96, 64, proj_size=32), "weight_hh_l0", (128, 32),
         _gate("weight_hh_l0", 4, 1)),
    Case("lstm_proj_hr", lambda: nn.LSTM(96, 64, proj_size=32), "weight_hr_l0", (256, 64),
         lambda m, x: F.linear(x, m.weight_hr_l0)),
    Case("gru_ih_gate2", lambda: nn.GRU(96, 64), "weight_ih_l0", (128, 96), _gate("weight_ih_l0", 3, 2)),
    Case("gru_hh_gate0", lambda: nn.GRU(96, 64), "weight_hh_l0", (128, 64), _gate("weight_hh_l0", 3, 0)),
    Case("rnn_ih", lambda: nn.RNN(96, 64), "weight_ih_l0", (128, 96), _gate("weight_ih_l0", 1, 0)),
    Case("lstmcell_ih_gate3", lambda: nn.LSTMCell(96, 64), "weight_ih", (128, 96), _gate("weight_ih", 4, 3)),
    Case("grucell_hh_gate1", lambda: nn.GRUCell(96, 64), "weight_hh", (128, 64), _gate("weight_hh", 3, 1)),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_effective_fans_preserve_variance_through_the_real_layer(case: Case) -> None:
    (fwd, fwd_se), (bwd, bwd_se) = measure(case, "fan_in", "fan_out")
    assert fwd_se < MAX_SE and bwd_se < MAX_SE, (fwd_se, bwd_se)
    assert abs(fwd - 1.0) < N_SE * fwd_se, f"forward second moment {fwd:.4f} +- {fwd_se:.4f}, want 1"
    assert abs(bwd - 1.0) < N_SE * bwd_se, f"backward second moment {bwd:.4f} +- {bwd_se:.4f}, want 1"


def test_at_least_25_configurations() -> None:
    assert len({c.id for c in CASES}) == len(CASES) >= 25


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_torch_fans_are_torchs_shape_only_fans(case: Case) -> None:
    m = case.build()
    f = iw.fans(m, case.param)
    # torch's private helper, used here only to confirm that torch_fan_in/out report what torch.nn.init uses
    assert (f.torch_fan_in, f.torch_fan_out) == torch.nn.init._calculate_fan_in_and_fan_out(getattr(m, case.param))


def _case(case_id: str) -> Case:
    return next(c for c in CASES if c.id == case_id)


# (case, pass, factor by which torch's shape-only fan misses the measured variance, why)
TORCH_WRONG = [
    ("conv2d_depthwise", "bwd", 1 / 64, "depthwise fan_out is `groups` = 64 times too large"),
    ("conv2d_groups4", "bwd", 1 / 4, "grouped fan_out is `groups` = 4 times too large"),
    ("conv2d_k3_s2", "bwd", 1 / 4, "stride 2 ignored: fan_out s^2 = 4 times too large"),
    ("conv2d_depthwise_s2", "bwd", 1 / (64 * 4), "depthwise and stride 2"),
    ("convT2d_k4_s2", "fwd", 32 * 4 / (16 * 16), "fan_in read from the out axis and stride ignored"),
    ("convT2d_k2_s2", "fwd", 32 * 1 / (16 * 4), "swapped: fan_in is size(1)*k*k = out*4, the layer sums in*1"),
    ("convT2d_k2_s2", "bwd", 16 * 4 / (32 * 4), "swapped: fan_out is size(0)*k*k = in*4, the layer sums out*4"),
    ("convT2d_k3_s3", "fwd", 32 * 1 / (16 * 9), "swapped and stride 3 ignored"),
    ("mha_in_proj_q", "bwd", 1 / 3, "packed (3E, E): fan_out 3E instead of E"),
    ("lstm_ih_gate0", "bwd", 1 / 4, "packed gates (4H, in): fan_out 4H instead of H"),
    ("grucell_hh_gate1", "bwd", 1 / 3, "packed gates (3H, H): fan_out 3H instead of H"),
]


@pytest.mark.parametrize(("case_id", "which", "factor", "why"), TORCH_WRONG, ids=[f"{c}-{w}" for c, w, *_ in TORCH_WRONG])
def test_torch_shape_fans_miss_the_measured_variance(case_id: str, which: str, factor: float, why: str) -> None:
    (fwd, fwd_se), (bwd, bwd_se) = measure(_case(case_id), "torch_fan_in", "torch_fan_out")
    got, se = (fwd, fwd_se) if which == "fwd" else (bwd, bwd_se)
    assert abs(got / factor - 1.0) < N_SE * se / factor, f"{why}: measured {got:.5f} +- {se:.5f}, want {factor:.5f}"
    assert abs(got - 1.0) > 10 * se, "torch's fans should visibly fail here"


def test_torch_shape_fans_are_right_for_plain_layers() -> None:
    """Where torch's fans are right (Linear, stride-1 ungrouped Conv) the effective fans agree with them."""
    for case_id in ("linear_256_128", "bilinear", "conv2d_k3", "conv3d_k3", "conv2d_dilated"):
        f = iw.fans(_case(case_id).build())
        assert (f.fan_in, f.fan_out) == (f.torch_fan_in, f.torch_fan_out), case_id


def test_embedding_fan_in_is_one_through_the_real_lookup() -> None:
    """An embedding output is one looked-up row: Var(y) = Var(w), so fan_in = 1 (torch's shape says dim)."""
    ests, ests_torch = [], []
    for _ in range(REPEATS):
        emb = nn.Embedding(1000, 64)
        f = iw.fans(emb)
        idx = torch.randint(0, 1000, (512,))
        base = torch.randn(emb.weight.shape)
        for fan, out in ((f.fan_in, ests), (f.torch_fan_in, ests_torch)):
            with torch.no_grad():
                emb.weight.copy_(base / math.sqrt(fan))
                out.append(float(emb(idx).double().pow(2).mean()))
    got, se = mean_and_se(ests)
    assert se < MAX_SE and abs(got - 1.0) < N_SE * se
    got_t, se_t = mean_and_se(ests_torch)
    assert abs(got_t * 64 - 1.0) < N_SE * se_t * 64  # torch_fan_in = 64 (the row length): 64 times too small


def test_lstm_forward_uses_the_gate_chunks_measured_above() -> None:
    """nn.LSTM's gates are F.linear(x, weight_ih_l0).chunk(4) in the order i, f, g, o (and h via weight_hh)."""
    lstm = nn.LSTM(6, 5)
    _zero_biases(lstm)
    x = torch.randn(2, 3, 6)  # two steps: the second uses weight_hh_l0
    out, _ = lstm(x)
    h = torch.zeros(3, 5)
    c = torch.zeros(3, 5)
    for t in range(2):
        i, f, g, o = (F.linear(x[t], lstm.weight_ih_l0) + F.linear(h, lstm.weight_hh_l0)).chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        torch.testing.assert_close(out[t], h)


def test_lstm_cell_forward_uses_the_gate_chunks_measured_above() -> None:
    cell = nn.LSTMCell(6, 5)
    _zero_biases(cell)
    x, h, c = torch.randn(3, 6), torch.randn(3, 5), torch.randn(3, 5)
    h1, c1 = cell(x, (h, c))
    i, f, g, o = (F.linear(x, cell.weight_ih) + F.linear(h, cell.weight_hh)).chunk(4, -1)
    c_want = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    torch.testing.assert_close(c1, c_want)
    torch.testing.assert_close(h1, torch.sigmoid(o) * torch.tanh(c_want))


def test_gru_forward_uses_the_gate_chunks_measured_above() -> None:
    gru = nn.GRU(6, 5)
    _zero_biases(gru)
    x = torch.randn(2, 3, 6)
    out, _ = gru(x)
    h = torch.zeros(3, 5)
    for t in range(2):
        xr, xz, xn = F.linear(x[t], gru.weight_ih_l0).chunk(3, -1)
        hr, hz, hn = F.linear(h, gru.weight_hh_l0).chunk(3, -1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        h = (1 - z) * torch.tanh(xn + r * hn) + z * h
        torch.testing.assert_close(out[t], h)


def test_mha_forward_uses_the_packed_chunks_measured_above() -> None:
    """With one key the attention weight is 1: MHA(q, k, v) = out_proj(F.linear(v, in_proj).chunk(3)[2])."""
    m = nn.MultiheadAttention(8, 2)
    v = torch.randn(1, 4, 8)
    out = m(torch.randn(1, 4, 8), torch.randn(1, 4, 8), v, need_weights=False)[0]
    torch.testing.assert_close(out, m.out_proj(_mha_block(2)(m, v)))


def test_tensor_fans_with_layer_layout_match_the_module() -> None:
    convt = nn.ConvTranspose2d(32, 64, 4, stride=2, groups=4)
    a = iw.tensor_fans(convt.weight, in_axis=0, out_axis=1, groups=4, stride=2, transposed=True)
    b = iw.fans(convt)
    assert (a.fan_in, a.fan_out) == (b.fan_in, b.fan_out) == (8 * 4, 16 * 16)
    dw = iw.tensor_fans(torch.empty(64, 1, 3, 3), groups=64, stride=(2, 1))
    assert (dw.fan_in, dw.fan_out) == (9.0, 9 / 2)


# --- bad input ---------------------------------------------------------------------------------------------------


def test_one_dimensional_weight_is_rejected_with_its_name() -> None:
    with pytest.raises(ValueError, match=r"BatchNorm2d\.weight has shape \(8,\)"):
        iw.fans(nn.BatchNorm2d(8))
    with pytest.raises(ValueError, match=r"Conv2d\.bias"):
        iw.fans(nn.Conv2d(3, 8, 3), "bias")


def test_zero_element_weight_is_rejected() -> None:
    lin = nn.Linear(4, 4)
    lin.weight = nn.Parameter(torch.empty(4, 0))
    with pytest.raises(ValueError, match="zero elements"):
        iw.fans(lin)
    with pytest.raises(ValueError, match="zero elements"):
        iw.tensor_fans(torch.empty(0, 3))


def test_missing_parameter_lists_the_parameters() -> None:
    with pytest.raises(ValueError, match=r"Linear has no parameter 'kernel'; its parameters: weight, bias"):
        iw.fans(nn.Linear(3, 4), "kernel")
    # with kdim != embed_dim there is no packed in_proj_weight
    with pytest.raises(ValueError, match="q_proj_weight, k_proj_weight, v_proj_weight"):
        iw.fans(nn.MultiheadAttention(8, 2, kdim=4), "in_proj_weight")
    with pytest.raises(ValueError, match="none"):
        iw.fans(nn.ReLU())


def test_non_module_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="expects an nn.Module, got Tensor"):
        iw.fans(torch.empty(3, 3))  # type: ignore[arg-type]


def test_lazy_module_is_rejected_until_materialized() -> None:
    lazy = nn.LazyConv2d(8, 3)
    with pytest.raises(ValueError, match="uninitialized"):
        iw.fans(lazy)
    lazy(torch.randn(1, 4, 8, 8))
    assert iw.fans(lazy).fan_in == 4 * 9


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"groups": 0}, "groups must be a positive int"),
        ({"groups": 2.0}, "groups must be a positive int"),
        ({"groups": 3}, "groups=3 does not divide"),
        ({"stride": 0}, "stride must be"),
        ({"stride": (1, 2, 3)}, "stride must be"),
        ({"in_axis": 0, "out_axis": 0}, "must differ"),
    ],
)
def test_tensor_fans_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        iw.tensor_fans(torch.empty(8, 4, 3, 3), **kwargs)


def test_tensor_fans_rejects_one_dimensional() -> None:
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        iw.tensor_fans(torch.empty(5))


def test_fan_mode_lookup() -> None:
    f = iw.fans(nn.Conv2d(8, 16, 3, stride=2))
    assert (f.get("fan_in"), f.get("fan_out"), f.get("fan_avg")) == (72.0, 36.0, 54.0)
    with pytest.raises(ValueError, match="valid: fan_in, fan_out, fan_avg"):
        f.get("fan_sum")
