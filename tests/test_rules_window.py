"""A signal joined with its own average pooling (``pool(x) - x``, PoolFormer's token mixer; ``x + pool(x)``),
against the variance measured through the real layers (diagnose's probe).

The model draws a conv, joins its output with the stride-1 average pooling of it, and reads the join with a
1x1 conv: that conv's forward is ``fan_in E[w^2]`` times the join's second moment, the first conv's backward is
the join's gradient ``a dy + b P^T dy``. Where every window covers its dim the rule is exact (4 standard errors);
elsewhere within its bound (+ 4 SE). The independent-operands rule (variances add) is checked to be far off.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import initwise as iw
from initwise._diagnose import MISMATCH_Z
from initwise._rules_window import BOUND_BRANCH_GRAD, BOUND_WINDOW_JOIN, _dim_terms


class PoolJoin(nn.Module):
    def __init__(self, op: str, pool: nn.Module, width: int = 64):
        super().__init__()
        self.c1 = nn.Conv2d(3, width, 3, padding=1, padding_mode="circular")
        self.pool = pool
        self.c2 = nn.Conv2d(width, 16, 1)
        self.op = op

    def forward(self, x):
        y = self.c1(x)
        p = self.pool(y)
        z = {"pool-x": lambda: p - y, "x-pool": lambda: y - p, "x+pool": lambda: y + p}[self.op]()
        return self.c2(z)


def _run(model, x, seed=0):
    return iw.diagnose(model, x, schemes=["kaiming_fan_in"], generator=torch.Generator().manual_seed(seed)).runs[0]


def _smooth(n, size):
    """Images with correlated neighbours (a blurred noise field): the near-correlation part of the rule."""
    g = torch.randn(n, 3, size + 4, size + 4)
    return nn.functional.avg_pool2d(g, 5, 1) * 2.0


@pytest.mark.parametrize("op", ["pool-x", "x-pool", "x+pool"])
@pytest.mark.parametrize("size,pool,smooth", [
    (2, nn.AvgPool2d(3, 1, 1, count_include_pad=False), False),  # every window covers the 2x2 map: exact
    (3, nn.AvgPool2d(5, 1, 2, count_include_pad=False), True),   # 5x5 windows over a 3x3 map: exact
    (4, nn.AvgPool2d(3, 1, 1, count_include_pad=False), False),  # clipped borders, windows divide by their count
    (8, nn.AvgPool2d(3, 1, 1, count_include_pad=False), True),   # PoolFormer's stage-0 map of a smooth input
    (16, nn.AvgPool2d(3, 1, 1), True),                           # padded values counted (torch's default)
])
def test_join_with_own_pooling(op, size, pool, smooth):
    torch.manual_seed(0)
    model = PoolJoin(op, pool)
    x = _smooth(16, size) if smooth else torch.randn(16, 3, size, size)
    run = _run(model, x)
    c1, c2 = run["c1"], run["c2"]
    exact = bool(_dim_terms(size, pool.kernel_size, pool.padding, pool.count_include_pad, 0.0)[5])
    for lp, key in ((c2, "forward"), (c1, "backward")):
        m, p = getattr(lp, key), getattr(lp, "predicted_" + key)
        noise, bound = getattr(lp, key + "_noise"), getattr(lp, key + "_bound")
        z = abs(math.log(m / p))
        if exact:
            assert bound == 1.0, (key, bound)
            assert z <= MISMATCH_Z * noise, (op, size, key, m, p, noise)
        else:
            assert bound == BOUND_WINDOW_JOIN
            assert z <= math.log(bound) + MISMATCH_Z * noise, (op, size, key, m, p, noise)


def test_independent_operands_were_far_off():
    """On the 2x2 map ``pool(x) - x`` keeps ``q - dc`` (here ~3/4 of ``q``): the old rule (variances add,
    ``E[x^2] + E[(P x)^2]``) over-states it, measured on the real tensors, by more than 1.5x."""
    torch.manual_seed(0)
    pool = nn.AvgPool2d(3, 1, 1, count_include_pad=False)
    y = nn.Conv2d(3, 64, 3, padding=1)(torch.randn(16, 3, 2, 2)).detach()
    joined, independent = (pool(y) - y).pow(2).mean(), y.pow(2).mean() + pool(y).pow(2).mean()
    assert independent / joined > 1.5
    run = _run(PoolJoin("pool-x", pool), torch.randn(16, 3, 2, 2))
    c2 = run["c2"]
    assert c2.forward_exact and abs(math.log(c2.forward / c2.predicted_forward)) <= MISMATCH_Z * c2.forward_noise


class PoolBlocks(nn.Module):
    """PoolFormer's blocks: ``x = x + (pool(N(x)) - N(x))``, then ``x = x + mlp(N(x))`` (``N``: GroupNorm with one
    group), ``depth`` times between two drawn convs. No drawn weight lies between the token mixer's fork and its
    join, so the stream and the mixer's output are correlated (the skip keeps ``x``, the mixer removes most of it)."""

    def __init__(self, depth: int = 4, width: int = 64, scale: float = 1.0):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1, padding_mode="circular")
        self.n1 = nn.ModuleList(nn.GroupNorm(1, width) for _ in range(depth))
        self.n2 = nn.ModuleList(nn.GroupNorm(1, width) for _ in range(depth))
        self.mlp = nn.ModuleList(
            nn.Sequential(nn.Conv2d(width, 2 * width, 1), nn.ReLU(), nn.Conv2d(2 * width, width, 1))
            for _ in range(depth))
        self.pool = nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        self.head = nn.Conv2d(width, 16, 1)
        self.scale = scale

    def forward(self, x):
        x = self.stem(x)
        for n1, n2, mlp in zip(self.n1, self.n2, self.mlp):
            y = n1(x)
            x = x * self.scale + (self.pool(y) - y)
            x = x + mlp(n2(x))
        return self.head(x)


@pytest.mark.parametrize("size,smooth,scale", [(2, False, 1.0), (2, False, 0.5), (4, False, 1.0), (8, True, 1.0)])
def test_residual_join_around_a_pooling_mixer(size, smooth, scale):
    """Each layer's forward within ``BOUND_WINDOW_JOIN`` (+ 4 SE), its backward too where every window covers
    the map (2x2; the rule without the fork's cross term was 3.3x over at the first MLP there, 50x on a smooth
    16x16 map) and within ``BOUND_BRANCH_GRAD`` elsewhere (the gradient's neighbours correlate: under-stated)."""
    torch.manual_seed(0)
    model = PoolBlocks(scale=scale)
    run = _run(model, _smooth(16, size) if smooth else torch.randn(16, 3, size, size))
    for lp in run.layers:
        for key in ("forward", "backward"):
            m, p, noise = getattr(lp, key), getattr(lp, "predicted_" + key), getattr(lp, key + "_noise")
            tol = BOUND_WINDOW_JOIN if key == "forward" or size == 2 else BOUND_BRANCH_GRAD
            assert abs(math.log(m / p)) <= math.log(tol) + MISMATCH_Z * noise, (lp.name, key, m, p, noise)
