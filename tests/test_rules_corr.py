"""The channels' correlation the example fixes (``_rules_corr``): the arc-cosine map of a ReLU against Monte Carlo,
and a stem on real image patches followed by max pooling and a 1x1 layer (ResNet's first bottleneck): the spread
of that layer's output channels' variances, which the batch norm after it divides by, against the measurement.
(The backward into the layer, measured over 12 draws, moves from +0.12 +- 0.06 in ln without the rule to -0.09
+- 0.05 with it: too noisy at this size to pin.)"""

from __future__ import annotations

import math

import torch
from torch import nn

import initwise as iw
from initwise import _rules_corr, _rules_layer
from initwise.bench.data import load_image


def test_relu_correlation_is_the_monte_carlo_one():
    g = torch.Generator().manual_seed(0)
    r = torch.tensor([[1.0, 0.9, -0.3], [0.9, 1.0, -0.1], [-0.3, -0.1, 1.0]], dtype=torch.float64)
    z = torch.randn(2_000_000, 3, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(r).T
    y = torch.relu(z)
    y = (y - y.mean(0)) / y.std(0)
    mc = y.T @ y / y.shape[0]
    assert torch.allclose(_rules_corr.relu_corr(r), mc, atol=4e-3)


class Stem(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn0 = nn.BatchNorm2d(64)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.b = nn.Conv2d(64, 256, 1, bias=False)
        self.bn = nn.BatchNorm2d(256)
        self.head = nn.Conv2d(256, 8, 1)

    def forward(self, x):
        return self.head(self.bn(self.b(self.pool(torch.relu(self.bn0(self.stem(x)))))))


def _spreads(draws=6):
    """Per draw: ln of the measured ``E_c[v / v_c]`` of layer ``b``'s output over the plan's ``Sig.spread``."""
    img = load_image("astronaut")
    out = []
    for seed in range(draws):
        torch.manual_seed(seed)
        model = Stem()
        i, j = 30 * seed, 400 - 25 * seed
        x = torch.stack([img[:, i:i + 48, j:j + 48], img[:, j:j + 48, i:i + 48]])
        p = iw.plan(model, x, "current")
        node = [n for n in p.graph.nodes if n.module == "b"][0]
        cap = {}
        h = model.b.register_forward_hook(lambda m, a, o: cap.__setitem__("y", o.detach().double()))
        with torch.no_grad():
            model(x)
        h.remove()
        v = cap["y"].var(dim=(0, 2, 3), unbiased=False)
        out.append(math.log(float((v.mean() / v).mean()) / p._propagation.signals[node.id].spread))
    return out


def test_a_layer_after_a_stem_on_images_spreads_its_channels(monkeypatch):
    """The measured ``E_c[v / v_c]`` (1.4-1.6 on these patches) against the plan's: within the rule's bound
    (``BOUND_CORRELATED``) in every draw and 1.2x on average (still 12-24% low: max pooling's own spread over
    channels is not modelled); independent channels' rows (1.02-1.06) are 1.42x low on average."""
    new = _spreads()
    assert all(abs(r) < math.log(_rules_layer.BOUND_CORRELATED) for r in new), new
    assert abs(sum(new) / len(new)) < math.log(1.2), new
    monkeypatch.setattr(_rules_layer, "layer_rows", lambda *a, **k: None)
    old = _spreads()
    assert sum(old) / len(old) > math.log(1.35), old
