"""The traced activation of every layer against what the model's code applies, read independently at the aten level
(``benchmarks/_corpus_acts.py``, the corpus' ``activations`` invariant), on small models of the patterns the corpus
has; and the check itself catches a deliberate mis-trace."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import initwise

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from _corpus_acts import check_activations, code_activations  # noqa: E402


class Residual(nn.Module):  # ResNet's relu(x + bn(conv(x)))
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn(self.conv(x)))


class SE(nn.Module):  # x * sigmoid(fc2(relu(fc1(pool(x))))): the value side is not activated
    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, c // 2, 1), nn.Conv2d(c // 2, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True)))))


class SimpleGate(nn.Module):  # NAFNet
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


class Attention(nn.Module):  # qkv and proj are linear: softmax(q k^T) v is not an elementwise activation
    def __init__(self, d: int) -> None:
        super().__init__()
        self.qkv, self.proj, self.fc1, self.fc2 = nn.Linear(d, 3 * d), nn.Linear(d, d), nn.Linear(d, 2 * d), \
            nn.Linear(2 * d, d)
        self.norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        a = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
        x = x + self.proj(a @ v)
        return x + self.fc2(F.gelu(self.fc1(self.norm(x))))


def _conv_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.LeakyReLU(0.2), Residual(8), nn.Conv2d(8, 8, 1),
        nn.PReLU(8), nn.Conv2d(8, 8, 1), SE(8), nn.Conv2d(8, 16, 1), SimpleGate(), nn.Conv2d(8, 32, 3, padding=1), nn.PixelShuffle(2),
        nn.SiLU(), nn.Dropout(0.1), nn.Conv2d(8, 8, 1), nn.Hardswish(), nn.Conv2d(8, 3, 1))


def _token_net() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), Attention(16), nn.Linear(16, 4)).train()


CASES = {"conv": (_conv_net, lambda: torch.randn(2, 3, 8, 8)), "tokens": (_token_net, lambda: torch.randn(2, 5, 6))}


@pytest.mark.parametrize("case", sorted(CASES))
def test_traced_activations_agree_with_the_code(case: str) -> None:
    build, example = CASES[case]
    model, x = build(), example()
    report = check_activations(model, x)
    weights = {n for n, p in model.named_parameters() if p.dim() > 1}
    assert {r.param for r in report.rows} == weights  # every weight compared, nothing unmatched
    assert not report.unmatched
    assert not report.disagreements, [(r.layer, r.why) for r in report.disagreements]


def test_hand_written_activations_agree() -> None:
    """x * sigmoid(x), GELU by formula and quick GELU: traced as one activation, which the code check accepts
    (before the trace knew them, the layer got the sigmoid's or tanh's gain, or the product was a gate)."""
    from test_pointwise import CASES

    for act in CASES:
        model, x = nn.Sequential(nn.Conv2d(3, 8, 3), act(), nn.Conv2d(8, 4, 1)), torch.randn(2, 3, 8, 8)
        report = check_activations(model, x)
        assert len(report.rows) == 2 and not report.disagreements, (act.__name__, report.disagreements)
        assert any(a in ("silu", "x*f(x)") for a in report.rows[0].code)


def test_what_the_code_applies_is_read_from_aten_ops() -> None:
    """The reference itself, on the conv net: what follows each weight op, as read below autograd."""
    found = code_activations(_conv_net(), torch.randn(2, 3, 8, 8))
    assert found["0.weight"] == {"leaky_relu(0.2)"}  # through the batch norm
    assert found["3.conv.weight"] == {"relu"}  # through the residual add
    assert found["4.weight"] == {"prelu"}
    assert found["6.weight"] == {"value", "layer"}  # multiplied by a gate computed from it; feeds SE's fc1
    assert found["7.fc1.weight"] == {"relu"} and found["7.fc2.weight"] == {"sigmoid"}
    assert found["8.weight"] == {"gate"}  # x1 * x2 of its two halves
    assert found["10.weight"] == {"silu"}  # through pixel shuffle
    assert found["14.weight"] == {"hardswish"}  # through train-mode dropout (a product with a random mask)
    assert found["16.weight"] == set()  # the output layer


def test_the_check_catches_a_deliberate_mis_trace() -> None:
    model, x = _conv_net(), torch.randn(2, 3, 8, 8)
    g = initwise.trace(model, x)
    bad = dataclasses.replace(g, layers=[
        dataclasses.replace(i, activation=initwise.resolve_activation("linear")) if i.name == "0" else
        dataclasses.replace(i, activation=initwise.resolve_activation("leaky_relu", 0.1)) if i.name == "3.conv"
        else dataclasses.replace(i, activation=initwise.resolve_activation("gate")) if i.name == "16" else i
        for i in g.layers])
    report = check_activations(model, x, graph=bad)
    assert {r.layer: r.why for r in report.disagreements} == {
        "0": "traced linear, the code applies leaky_relu(0.2)",
        "3.conv": "traced leaky_relu(0.1), the code applies relu",
        "16": "traced gate, the code multiplies by no other signal"}


def test_the_check_catches_a_trace_that_stops_seeing_activations(monkeypatch: pytest.MonkeyPatch) -> None:
    """With initwise's activation search broken (every layer linear), every activated layer disagrees."""
    import initwise._graph as graph

    model, x = _conv_net(), torch.randn(2, 3, 8, 8)
    activated = {n for n, f in code_activations(model, x).items()
                 if f - {"layer", "gate", "value"} and not all(a.startswith("other:") for a in f - {"layer"})}
    monkeypatch.setattr(graph, "_activation_after", lambda *a, **k: (None, None, False, []))
    report = check_activations(model, x, graph=initwise.trace(model, x, meta=False))
    assert {r.param for r in report.disagreements} == activated and len(activated) >= 7
