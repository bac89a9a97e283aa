"""The advisor's third validation set (v3, docs/evidence.md, "Validation v3"): SR / denoising nets never trained
here before (nor in the design set, the first validation set or v2), written the way their papers' public code
writes them, shrunk to 16 features so that 2 shared CPU cores can train every candidate 5 times.

Protocol: these nets were written, and every candidate of ``initwise.generate_candidates`` (main at 76c1259) was
trained on them, *blind*: nobody looked at the results while the decision rule they check was being chosen on
the design set. The rule was frozen (its commit hash is in docs/evidence.md) before the results were read.

``TASKS[name]`` -> ``validation_models.ValTask`` (same training loop and settings as the first validation set).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from validation_models import ValTask

__all__ = ["TASKS"]


class CARNBlock(nn.Module):
    """CARN's cascading block (Ahn et al. 2018): three residual units (conv-ReLU-conv, identity skip, ReLU after
    the sum); after each unit the outputs so far are concatenated and fused by a 1x1 conv + ReLU."""

    def __init__(self, nf: int) -> None:
        super().__init__()
        self.units = nn.ModuleList(
            nn.Sequential(nn.Conv2d(nf, nf, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(nf, nf, 3, padding=1))
            for _ in range(3))
        self.fuse = nn.ModuleList(nn.Conv2d((i + 2) * nf, nf, 1) for i in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cat, h = x, x
        for unit, fuse in zip(self.units, self.fuse):
            b = F.relu(h + unit(h))
            cat = torch.cat([cat, b], dim=1)
            h = F.relu(fuse(cat))
        return h


class CARNLite(nn.Module):
    """CARN shrunk: an entry conv, 3 cascading blocks with the same global cascade (concatenate, 1x1 conv + ReLU
    after every block), PixelShuffle x2 with ReLU, an exit conv; default init as in the official code."""

    def __init__(self, in_channels: int = 1, nf: int = 16, blocks: int = 3) -> None:
        super().__init__()
        self.entry = nn.Conv2d(in_channels, nf, 3, padding=1)
        self.blocks = nn.ModuleList(CARNBlock(nf) for _ in range(blocks))
        self.fuse = nn.ModuleList(nn.Conv2d((i + 2) * nf, nf, 1) for i in range(blocks))
        self.up = nn.Sequential(nn.Conv2d(nf, 4 * nf, 3, padding=1), nn.ReLU(inplace=True), nn.PixelShuffle(2))
        self.exit = nn.Conv2d(nf, in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.entry(x)
        cat = h
        for block, fuse in zip(self.blocks, self.fuse):
            cat = torch.cat([cat, block(h)], dim=1)
            h = F.relu(fuse(cat))
        return self.exit(self.up(h))


class FFDNetLite(nn.Module):
    """FFDNet (Zhang et al. 2018) shrunk, without BN: the noisy image pixel-unshuffled by 2 with the noise-level
    map (sigma 25/255, the task's) as an extra channel, 10 conv + ReLU layers of 16 features, a conv back to 4
    sub-images and PixelShuffle; the clean image predicted directly (no residual); KAIR's FFDNet uses PyTorch's
    default init."""

    def __init__(self, in_channels: int = 1, nf: int = 16, depth: int = 10, sigma: float = 25.0 / 255.0) -> None:
        super().__init__()
        self.sigma = sigma
        layers: list[nn.Module] = [nn.Conv2d(4 * in_channels + 1, nf, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(nf, nf, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(nf, 4 * in_channels, 3, padding=1))
        self.body = nn.Sequential(*layers)
        self.down, self.up = nn.PixelUnshuffle(2), nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.down(x)
        return self.up(self.body(torch.cat([h, torch.full_like(h[:, :1], self.sigma)], dim=1)))


class MergeRun(nn.Module):
    """RIDNet's merge-and-run unit: two branches of dilated 3x3 convs (dilation 1-2 and 3-4) with ReLU,
    concatenated, fused by a 3x3 conv + ReLU, plus the input."""

    def __init__(self, nf: int) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(nf, nf, 3, padding=1, dilation=1), nn.ReLU(inplace=True),
                               nn.Conv2d(nf, nf, 3, padding=2, dilation=2), nn.ReLU(inplace=True))
        self.b = nn.Sequential(nn.Conv2d(nf, nf, 3, padding=3, dilation=3), nn.ReLU(inplace=True),
                               nn.Conv2d(nf, nf, 3, padding=4, dilation=4), nn.ReLU(inplace=True))
        self.c = nn.Sequential(nn.Conv2d(2 * nf, nf, 3, padding=1), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.c(torch.cat([self.a(x), self.b(x)], dim=1))


class EAM(nn.Module):
    """RIDNet's enhancement attention module: merge-and-run, a residual block, an enhanced residual block (three
    convs), channel attention (average pool, 1x1 squeeze + ReLU, 1x1 excite + sigmoid, gate)."""

    def __init__(self, nf: int, reduction: int = 4) -> None:
        super().__init__()
        self.mr = MergeRun(nf)
        self.rb = nn.Sequential(nn.Conv2d(nf, nf, 3, padding=1), nn.ReLU(inplace=True),
                                nn.Conv2d(nf, nf, 3, padding=1))
        self.erb = nn.Sequential(nn.Conv2d(nf, nf, 3, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(nf, nf, 3, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(nf, nf, 1))
        self.ca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(nf, nf // reduction, 1), nn.ReLU(inplace=True),
                                nn.Conv2d(nf // reduction, nf, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.mr(x)
        h = F.relu(h + self.rb(h))
        h = F.relu(h + self.erb(h))
        return x + h * self.ca(h)


class RIDNetLite(nn.Module):
    """RIDNet (Anwar & Barnes 2019) shrunk: a head conv, 2 EAMs of 16 features, a tail conv, the long skip from
    the input inside the model (the net returns the denoised image); default init as in the official code."""

    def __init__(self, in_channels: int = 1, nf: int = 16, modules: int = 2) -> None:
        super().__init__()
        self.head = nn.Conv2d(in_channels, nf, 3, padding=1)
        self.body = nn.Sequential(*[EAM(nf) for _ in range(modules)])
        self.tail = nn.Conv2d(nf, in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.tail(self.body(F.relu(self.head(x))))


TASKS: dict[str, ValTask] = {t.name: t for t in (
    ValTask("carn-lite", "sr-x2", lambda c: CARNLite(c)),
    ValTask("ffdnet-lite", "denoise-s25", lambda c: FFDNetLite(c)),
    ValTask("ridnet-lite", "denoise-s25", lambda c: RIDNetLite(c)),
)}
