"""lsuv_: each drawn layer's output second moment, measured through the real layers by an independent hook, ends
within the tolerance of the target; the model's buffers, modes and RNG are left alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import initwise as iw


def _output_ms(model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    seen: dict[str, float] = {}

    def hook(name: str):
        def record(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
            seen.setdefault(name, float(out.double().pow(2).mean()))
        return record

    hooks = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
             if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


def test_every_layer_reaches_the_target_second_moment_in_execution_order() -> None:
    torch.manual_seed(0)
    # registration order differs from execution order: lsuv must follow the forward
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.last = nn.Conv2d(8, 2, 3, padding=1)
            self.first = nn.Conv2d(2, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.last(torch.relu(self.bn(self.first(x))))

    net, x = Net(), torch.rand(8, 2, 16, 16) * 3
    running = net.bn.running_mean.clone()
    rng = torch.get_rng_state()
    p = iw.lsuv_(net, x, target=0.5, tol=0.05, seed=0)
    assert set(p.lsuv_scales) == {"first", "last"}
    assert torch.equal(net.bn.running_mean, running) and net.training
    assert torch.equal(torch.get_rng_state(), rng)
    for name, ms in _output_ms(net, x).items():  # (this forward updates the running stats: checked before)
        assert ms == pytest.approx(0.5, rel=0.05), name


def test_zero_by_design_layers_stay_zero_and_bad_options_raise() -> None:
    class Res(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Conv2d(1, 4, 3, padding=1)
            self.b = nn.Conv2d(4, 4, 3, padding=1)
            self.tail = nn.Conv2d(4, 1, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.head(x)
            return self.tail(h + self.b(torch.relu(h)))

    net, x = Res(), torch.rand(4, 1, 8, 8)
    iw.lsuv_(net, x, "kaiming", zero_init_residual=True, seed=0)
    assert torch.count_nonzero(net.b.weight) == 0
    with pytest.raises(ValueError, match="target"):
        iw.lsuv_(net, x, target=0)
    with pytest.raises(ValueError, match="tol"):
        iw.lsuv_(net, x, tol=2)


def test_one_measurement_per_plain_layer_leaves_each_output_at_the_target_exactly():
    # a plain conv with no bias scales its output with its weight, so lsuv measures it once; the outputs, measured
    # again through the real layers afterwards, are at the target to float precision (not just within tol)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.ReLU(), nn.Conv2d(12, 12, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(12, 3, 3, padding=1))
    x = torch.rand(6, 3, 16, 16)
    scales = iw.lsuv_(net, x, seed=0, target=0.5).lsuv_scales
    assert sum(s != 1.0 for s in scales.values()) >= 2  # rescaled layers (a layer already within tol is left)
    h = x
    with torch.no_grad():
        for i, layer in enumerate(net):
            h = layer(h)
            if isinstance(layer, nn.Conv2d):
                err = abs(float(h.double().pow(2).mean()) / 0.5 - 1)
                assert err < (1e-5 if scales[str(i)] != 1.0 else 0.1)


class _Recursive(nn.Module):
    """DRRN-style: two convs reused by every unit, a dropout and a BatchNorm on the way, a transposed conv."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Conv2d(1, 8, 3, padding=1)
        self.c1, self.c2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.Conv2d(8, 8, 3, padding=1)
        self.bn, self.drop = nn.BatchNorm2d(8), nn.Dropout(0.2)
        self.up = nn.ConvTranspose2d(8, 1, 4, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        out = h
        for _ in range(3):
            out = self.c2(torch.relu(self.bn(self.c1(self.drop(torch.relu(out)))))) + h
        return self.up(out)


def _sequential(monkeypatch: pytest.MonkeyPatch) -> None:
    from initwise import _lsuv

    monkeypatch.setattr(_lsuv, "_one_pass_ok", lambda *_: False)


@pytest.mark.parametrize("scheme", ["orthogonal", "kaiming"])
def test_the_one_pass_rescaling_equals_the_layer_by_layer_passes_bit_for_bit(scheme: str,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # shared convs (measured at their first call, reused rescaled), dropout (the same mask in every pass), train-mode
    # BatchNorm: the one forward pass gives the very weights and factors of one pass per measurement
    torch.manual_seed(0)
    net, x = _Recursive().train(), torch.rand(4, 1, 12, 12)
    seq = __import__("copy").deepcopy(net)
    rng = torch.get_rng_state()
    p = iw.lsuv_(net, x, scheme, seed=3)
    assert torch.equal(torch.get_rng_state(), rng)
    _sequential(monkeypatch)
    q = iw.lsuv_(seq, x, scheme, seed=3)
    assert p.lsuv_scales == q.lsuv_scales and len(p.lsuv_scales) == 4
    for (k, a), b in zip(net.state_dict().items(), seq.state_dict().values()):
        assert torch.equal(a, b), k
    torch.manual_seed(1)
    seen = _output_ms(net.eval(), x)  # eval: no dropout; the first call of each conv, measured independently
    for name in ("inp", "c1", "c2"):
        assert seen[name] > 0


def test_a_weight_tied_between_two_layers_is_rescaled_layer_by_layer() -> None:
    # one Parameter in two modules: rescaling it through one of them rescales both, which the one-pass path could
    # not replay; the layer-by-layer passes handle it, and each output is measured at the target afterwards
    from initwise import _lsuv

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 16, bias=False), nn.Tanh(), nn.Linear(16, 16, bias=False), nn.Tanh(),
                        nn.Linear(16, 4))
    net[2].weight = net[0].weight
    layers = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    untied = nn.Sequential(nn.Linear(2, 2))
    assert not _lsuv._one_pass_ok(net, layers) and _lsuv._one_pass_ok(untied, [("0", untied[0])])
    x = torch.randn(64, 16)
    iw.lsuv_(net, x, seed=0)
    assert net[0].weight is net[2].weight
    assert _output_ms(net, x)["4"] == pytest.approx(1.0, rel=0.1)
