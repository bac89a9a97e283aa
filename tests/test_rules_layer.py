"""``F.normalize`` against the variance measured through the real layers: unit-norm vectors along ``dim`` have
``E[y^2] = 1 / size`` exactly; the old rule (a generic norm: variance 1) was off by the size."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import initwise as iw
from initwise._diagnose import MISMATCH_Z
from initwise._signal import Grad


class Normalized(nn.Module):
    """RetinexFormer's attention inputs: ``F.normalize(q, dim=-1)`` over the tokens, then a linear map."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.a = nn.Linear(32, 64)
        self.b = nn.Linear(64, 64)
        self.c = nn.Linear(64, 8)

    def forward(self, x):
        y = F.normalize(self.a(x), dim=self.dim)
        return self.c(torch.relu(self.b(y)))


@pytest.mark.parametrize("dim", [-1, 1])
def test_normalize_makes_unit_vectors(dim):
    torch.manual_seed(0)
    model = Normalized(dim)
    x = torch.randn(16, 48, 32)
    size = 64 if dim == -1 else 48
    run = iw.diagnose(model, x, schemes=["kaiming_fan_in"], generator=torch.Generator().manual_seed(0)).runs[0]
    b = run["b"]
    # b's input has E[y^2] = 1 / size: b's forward relative to the example
    assert abs(math.log(b.forward / b.predicted_forward)) <= MISMATCH_Z * b.forward_noise
    assert b.forward_exact
    # the old rule (variance 1 after the norm) predicted size times more
    assert abs(math.log(b.forward / (b.predicted_forward * size))) > 10 * MISMATCH_Z * b.forward_noise
    a = run["a"]  # backward through the normalization: approximate, within its bound
    assert not a.backward_exact
    assert abs(math.log(a.backward / a.predicted_backward)) <= math.log(a.backward_bound) + MISMATCH_Z * a.backward_noise


class DepthwiseBN(nn.Module):
    """MobileNet's pattern without the 1x1 convs: depthwise 3x3 conv - BN - ReLU, ``depth`` times. Each channel's
    variance after a depthwise conv is its 9 weights' squared norm times the input's: a batch norm divides each
    channel's gradient by it, ``E_c[1 / v_c] = 9 / 7`` of ``1 / E_c[v_c]`` per block for Gaussian weights."""

    def __init__(self, depth=6, width=64):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 1)
        layers = []
        for _ in range(depth):
            layers += [nn.Conv2d(width, width, 3, padding=1, groups=width, padding_mode="circular"),
                       nn.BatchNorm2d(width), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(width, 8, 1)

    def forward(self, x):
        return self.head(self.body(self.stem(x)))


@pytest.mark.parametrize("scheme", ["kaiming_fan_in", "current"])
def test_batch_norm_backward_after_a_depthwise_conv(scheme):
    """Mean over 6 draws of ln(measured / predicted) for the stem's backward (through 6 blocks): within 4 of its
    standard errors of 0 (or of the rule's bound); the old rule (1 / E[v]) is off by 6 ln(9/7) = 1.5."""
    logs, bounds = [], []
    for seed in range(6):
        torch.manual_seed(seed)
        model = DepthwiseBN()
        if scheme == "kaiming_fan_in":
            iw.init_(model, torch.randn(2, 3, 16, 16), scheme="kaiming", mode="fan_in", generator=torch.Generator().manual_seed(seed))
        run = iw.diagnose(model, torch.randn(32, 3, 16, 16), schemes=["current"],
                          generator=torch.Generator().manual_seed(seed)).runs[0]
        stem = run["stem"]
        logs.append(math.log(stem.backward / stem.predicted_backward))
        bounds.append(stem.backward_bound)
    mean = sum(logs) / len(logs)
    se = math.sqrt(sum((t - mean) ** 2 for t in logs) / (len(logs) - 1) / len(logs))
    assert abs(mean) <= MISMATCH_Z * se + 0.05, (mean, se, logs)
    assert abs(mean - 6 * math.log(9 / 7)) > MISMATCH_Z * se + 0.05 or scheme == "current"
    assert min(bounds) > 1.0  # the spread comes from a model of the rows: approximate, and said so


class DepthwiseSE(nn.Module):
    """EfficientNet's squeeze input: depthwise 3x3 conv - BN - global average pool - linear. The input carries a
    per-sample, per-channel constant as large as its positional part (smooth images do); each channel keeps
    ``(sum_j w_j)^2`` of its constant and ``sum_j w_j^2`` of the rest, and the batch norm divides by their sum:
    what survives the pool is ``E_c[t_c a / (t_c a + b)]``, well below ``a / (a + b)``."""

    def __init__(self, width=64):
        super().__init__()
        self.dw = nn.Conv2d(width, width, 3, padding=1, groups=width, padding_mode="circular")
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, 64)

    def forward(self, x):  # the tanh: the depthwise layer is not the model's constant prefix (evaluated exactly)
        return self.fc(self.bn(self.dw(torch.tanh(x))).mean((2, 3)))


@pytest.mark.parametrize("scheme", ["kaiming_fan_in", "current"])
def test_batch_norm_after_a_depthwise_conv_keeps_less_of_the_constant(scheme, monkeypatch):
    """Mean over 6 draws of ln(measured / predicted) for the pooled signal (fc's forward): within 4 of its
    standard errors of 0; the ratio-of-means rule (``a / (a + b)``) is off by 0.3-0.4 in ln, outside that."""
    from initwise import _rules_layer

    def pooled_logs(share):
        logs = []
        for seed in range(6):
            torch.manual_seed(seed)
            model = DepthwiseSE()
            g = torch.Generator().manual_seed(100 + seed)
            x = torch.randn(16, 64, 1, 1, generator=g) + torch.randn(16, 64, 12, 12, generator=g)
            with monkeypatch.context() as mp:
                if share is not None:
                    mp.setattr(_rules_layer, "_dc_share", share)
                fc = iw.diagnose(model, x, schemes=[scheme],  # drawn: Gaussian rows' t_c; current: the weights'
                                 generator=torch.Generator().manual_seed(seed)).runs[0]["fc"]
            logs.append(math.log(fc.forward / fc.predicted_forward))
        mean = sum(logs) / len(logs)
        return mean, math.sqrt(sum((t - mean) ** 2 for t in logs) / (len(logs) - 1) / len(logs))

    mean, se = pooled_logs(None)
    assert abs(mean) <= MISMATCH_Z * se + 0.05, (mean, se)
    old, old_se = pooled_logs(lambda t, a, b: 1.0)
    assert abs(old) > MISMATCH_Z * old_se + 0.05, (old, old_se)  # the tolerance the rule passes


class OneTapBN(nn.Module):
    """FastViT's ``conv_scale`` branch: a 1x1 depthwise conv (one weight per channel) and a batch norm."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(8, 128, 1, bias=False)
        self.dw = nn.Conv2d(128, 128, 1, groups=128)
        self.bn = nn.BatchNorm2d(128)
        self.out = nn.Conv2d(128, 8, 1)

    def forward(self, x):
        return self.out(torch.relu(self.bn(self.dw(torch.relu(self.a(x))))))


def _backward_log_ratio(build, example, layer, scheme, monkeypatch, patch, draws=6):
    """Mean and standard error over ``draws`` seeds of ln(measured / predicted) for ``layer``'s backward under
    ``scheme``, diagnosing ``build()`` on ``example()`` (both drawn under the seed) with ``patch(mp)`` applied."""
    out = []
    for seed in range(draws):
        torch.manual_seed(seed)
        with monkeypatch.context() as mp:
            patch(mp)
            run = iw.diagnose(build(), example(), schemes=[scheme],
                              generator=torch.Generator().manual_seed(seed)).runs[0]
        out.append(math.log(run[layer].backward / run[layer].predicted_backward))
    mean = sum(out) / len(out)
    return mean, math.sqrt(sum((t - mean) ** 2 for t in out) / (len(out) - 1) / len(out))


@pytest.mark.parametrize("scheme", ["kaiming_fan_in", "current"])
def test_one_tap_rows_cancel_the_spread_they_made(scheme, monkeypatch):
    """The batch norm divides channel c's gradient by its variance ``w_c^2 v``; the depthwise layer's backward
    multiplies it by ``w_c^2``: the spread of one-weight rows (huge: E[1 / w^2] diverges for Gaussian weights)
    cancels at the layer's input exactly. Mean over 6 draws of ln(measured / predicted) for ``a``'s backward
    within 4 SE; keeping the spread (the old rule) is outside."""
    from initwise import _rules_layer

    def logs(cancel):
        def patch(mp):
            if not cancel:
                mp.setattr(_rules_layer, "Grad", lambda g, dc=0.0, dcb=0.0, spread=1.0, own=False: Grad(g, dc, dcb))
        return _backward_log_ratio(OneTapBN, lambda: torch.randn(16, 8, 8, 8), "a", scheme, monkeypatch, patch)

    mean, se = logs(True)
    assert abs(mean) <= MISMATCH_Z * se + 0.05, (mean, se)
    old, old_se = logs(False)
    assert abs(old) > MISMATCH_Z * old_se + 0.05, (old, old_se)


class QuietOneTapBN(nn.Module):
    """FastViT's ``conv_scale`` deep in the net: a 1x1 depthwise conv on a quiet signal (variance ~1e-5, the batch
    norm's eps), so the channels with small weights are held up by eps rather than divided by their variance."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(8, 128, 1, bias=False)
        self.dw = nn.Conv2d(128, 128, 1, groups=128, bias=False)
        self.bn = nn.BatchNorm2d(128)
        self.out = nn.Conv2d(128, 8, 1)

    def forward(self, x):  # the tanh: not the model's constant prefix (evaluated exactly on the example)
        return self.out(torch.relu(self.bn(self.dw(self.a(torch.tanh(x))))))


def test_the_norms_eps_caps_the_spread_of_one_tap_rows(monkeypatch):
    """The batch norm's backward at the depthwise layer's output divides channel c's gradient by ``w_c^2 v +
    eps``: ``E_c[1 / (w_c^2 v + eps)]``, finite, where the spread alone (``E[1 / w^2]``: 300-500x too high on
    FastViT's stage 3, 49x on stage 2) is not. The model's own weights (scheme "current"; drawn one-tap rows
    keep the spread's model). Mean over 6 draws of ln(measured / predicted) for ``dw``'s backward within 4 SE;
    the spread without eps is outside."""
    scheme = "current"
    from initwise import _plan_moments

    def logs(rows):
        def patch(mp):
            if not rows:
                mp.setattr(_plan_moments, "_row_norms", lambda *a: None)
        return _backward_log_ratio(QuietOneTapBN, lambda: 3e-3 * torch.randn(16, 8, 8, 8), "dw", scheme,
                                   monkeypatch, patch)

    mean, se = logs(True)
    assert abs(mean) <= MISMATCH_Z * se, (mean, se)
    old, old_se = logs(False)
    assert abs(old) > MISMATCH_Z * old_se + 0.5, (old, old_se)


class StdConv(nn.Conv2d):
    """timm's ``StdConv2d``: each output channel's weight row standardized by its own statistics in the forward."""

    def forward(self, x):
        w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None, training=True, momentum=0.0,
                         eps=1e-6).reshape_as(self.weight)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class Standardized(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = StdConv(3, 64, 3, padding=1)
        self.body = StdConv(64, 64, 3, padding=1)
        self.head = nn.Conv2d(64, 8, 1)

    def forward(self, x):
        return self.head(torch.relu(self.body(torch.relu(self.stem(x)))))


def _smooth(n, size, seed):
    """Image-like inputs: a mean of 0.45 and a smooth field (a 5x5 box blur of noise, upsampled 2x)."""
    g = torch.Generator().manual_seed(seed)
    z = F.avg_pool2d(torch.randn(n, 3, size // 2 + 4, size // 2 + 4, generator=g), 5, 1)
    return 0.45 + 0.5 * F.interpolate(z, scale_factor=2, mode="bilinear", align_corners=False)


def test_weight_standardization_removes_the_patch_mean():
    """Zero-mean rows see their input minus its receptive field's mean: on image-like inputs (a large mean, smooth)
    the stem's output is measured on the example's own patches; the next layer's from the moments (positions taken
    as independent: within the rule's bound). The old rule (fan E[w^2] E[x^2]) is far off at both."""
    torch.manual_seed(0)
    model = Standardized()
    x = _smooth(16, 24, 0)
    run = iw.diagnose(model, x, schemes=["current"], generator=torch.Generator().manual_seed(0)).runs[0]
    g = iw.trace(model, x)
    assert g.params["stem.weight"].standardized
    for name in ("stem", "body"):
        lp = run[name]
        assert not lp.forward_exact
        err = abs(math.log(lp.forward / lp.predicted_forward))
        assert err <= math.log(lp.forward_bound) + MISMATCH_Z * lp.forward_noise, (name, lp.forward, lp.predicted_forward)
    stem = run["stem"]
    # the example's own patches: within the measurement's noise (4 SE), not only within the bound
    assert abs(math.log(stem.forward / stem.predicted_forward)) <= MISMATCH_Z * stem.forward_noise
    w = model.stem.weight.detach()
    ws = F.batch_norm(w.reshape(1, 64, -1), None, None, training=True, momentum=0.0, eps=1e-6)
    old = 27 * float(ws.pow(2).mean())  # fan E[w^2] E[x^2], relative to E[x^2]
    assert abs(math.log(stem.forward / old)) > 1.0  # more than e-fold: the patch mean is most of the input's power
