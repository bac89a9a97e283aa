"""The advisor's second validation set (v2, docs/evidence.md, "Validation v2"): SR / denoising nets never trained
here before (nor in the design set or the first validation set), written the way their papers' public code writes
them, shrunk to 16 features so that 2 shared CPU cores can train every candidate 5 times. Built before any run of
them and trained only after the rule they check was committed (its commit hash is in docs/evidence.md).

``TASKS[name]`` -> ``validation_models.ValTask`` (same training loop and settings as the first validation set).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from validation_models import ValTask

__all__ = ["TASKS"]


class CALayer(nn.Module):
    """RCAN's channel attention: global average pool, 1x1 squeeze, ReLU, 1x1 excite, sigmoid gate."""

    def __init__(self, nf: int, reduction: int = 4) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.du = nn.Sequential(nn.Conv2d(nf, nf // reduction, 1), nn.ReLU(inplace=True),
                                nn.Conv2d(nf // reduction, nf, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.du(self.pool(x))


class RCAB(nn.Module):
    def __init__(self, nf: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(nf, nf, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(nf, nf, 3, padding=1), CALayer(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResidualGroup(nn.Module):
    def __init__(self, nf: int, blocks: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*[RCAB(nf) for _ in range(blocks)], nn.Conv2d(nf, nf, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class RCANLite(nn.Module):
    """RCAN (Zhang et al. 2018) shrunk: 2 residual groups of 3 RCABs with channel attention, 16 features, the long
    skip over the body, PixelShuffle x2; no MeanShift (luma in [0, 1]), PyTorch's default init as in the EDSR/RCAN
    code."""

    def __init__(self, in_channels: int = 1, nf: int = 16, groups: int = 2, blocks: int = 3) -> None:
        super().__init__()
        self.head = nn.Conv2d(in_channels, nf, 3, padding=1)
        self.body = nn.Sequential(*[ResidualGroup(nf, blocks) for _ in range(groups)],
                                  nn.Conv2d(nf, nf, 3, padding=1))
        self.tail = nn.Sequential(nn.Conv2d(nf, 4 * nf, 3, padding=1), nn.PixelShuffle(2),
                                  nn.Conv2d(nf, in_channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        return self.tail(h + self.body(h))


class IMDB(nn.Module):
    """IMDN's information multi-distillation block: 4 convs, each splitting off a quarter of its channels
    (``torch.split``), LeakyReLU(0.05), the distilled parts concatenated, channel attention, a 1x1 fuse and the
    block's residual."""

    def __init__(self, nf: int) -> None:
        super().__init__()
        self.d = nf // 4
        self.r = nf - self.d
        self.c1 = nn.Conv2d(nf, nf, 3, padding=1)
        self.c2 = nn.Conv2d(self.r, nf, 3, padding=1)
        self.c3 = nn.Conv2d(self.r, nf, 3, padding=1)
        self.c4 = nn.Conv2d(self.r, self.d, 3, padding=1)
        self.cca = CALayer(4 * self.d)
        self.c5 = nn.Conv2d(4 * self.d, nf, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d1, r1 = torch.split(F.leaky_relu(self.c1(x), 0.05), (self.d, self.r), dim=1)
        d2, r2 = torch.split(F.leaky_relu(self.c2(r1), 0.05), (self.d, self.r), dim=1)
        d3, r3 = torch.split(F.leaky_relu(self.c3(r2), 0.05), (self.d, self.r), dim=1)
        d4 = self.c4(r3)
        return x + self.c5(self.cca(torch.cat([d1, d2, d3, d4], dim=1)))


class IMDNLite(nn.Module):
    """IMDN (Hui et al. 2019) shrunk: 4 IMDBs of 16 features, their outputs concatenated and fused by a 1x1 conv +
    LeakyReLU, a 3x3 conv, the long skip from the first conv, a conv to 4 channels and PixelShuffle x2; default
    init as in the official code."""

    def __init__(self, in_channels: int = 1, nf: int = 16, blocks: int = 4) -> None:
        super().__init__()
        self.fea_conv = nn.Conv2d(in_channels, nf, 3, padding=1)
        self.blocks = nn.ModuleList([IMDB(nf) for _ in range(blocks)])
        self.c = nn.Conv2d(blocks * nf, nf, 1)
        self.lr_conv = nn.Conv2d(nf, nf, 3, padding=1)
        self.upsampler = nn.Sequential(nn.Conv2d(nf, in_channels * 4, 3, padding=1), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.fea_conv(x)
        outs, h = [], fea
        for b in self.blocks:
            h = b(h)
            outs.append(h)
        out_b = F.leaky_relu(self.c(torch.cat(outs, dim=1)), 0.05)
        return self.upsampler(self.lr_conv(out_b) + fea)


class ResBlockNB(nn.Module):
    """DRUNet's residual block: conv-ReLU-conv without biases, identity skip."""

    def __init__(self, nf: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(nf, nf, 3, padding=1, bias=False), nn.ReLU(inplace=True),
                                  nn.Conv2d(nf, nf, 3, padding=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class DRUNetLite(nn.Module):
    """DRUNet (Zhang et al. 2021) shrunk: a noise-level map (sigma 25/255, the task's) concatenated to the input,
    a bias-free U-Net of residual blocks (16-32-64 features, 2 blocks per level), strided 2x2 convs down,
    transposed 2x2 convs up, additive skips, the clean image predicted directly (no global residual); default
    init."""

    def __init__(self, in_channels: int = 1, nf: int = 16, blocks: int = 2, sigma: float = 25.0 / 255.0) -> None:
        super().__init__()
        self.sigma = sigma
        self.head = nn.Conv2d(in_channels + 1, nf, 3, padding=1, bias=False)
        self.down1 = nn.Sequential(*[ResBlockNB(nf) for _ in range(blocks)],
                                   nn.Conv2d(nf, 2 * nf, 2, stride=2, bias=False))
        self.down2 = nn.Sequential(*[ResBlockNB(2 * nf) for _ in range(blocks)],
                                   nn.Conv2d(2 * nf, 4 * nf, 2, stride=2, bias=False))
        self.body = nn.Sequential(*[ResBlockNB(4 * nf) for _ in range(blocks)])
        self.up2 = nn.Sequential(nn.ConvTranspose2d(4 * nf, 2 * nf, 2, stride=2, bias=False),
                                 *[ResBlockNB(2 * nf) for _ in range(blocks)])
        self.up1 = nn.Sequential(nn.ConvTranspose2d(2 * nf, nf, 2, stride=2, bias=False),
                                 *[ResBlockNB(nf) for _ in range(blocks)])
        self.tail = nn.Conv2d(nf, in_channels, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = self.head(torch.cat([x, torch.full_like(x[:, :1], self.sigma)], dim=1))
        x1 = self.down1(x0)
        x2 = self.down2(x1)
        h = self.body(x2)
        h = self.up2(h + x2)
        h = self.up1(h + x1)
        return self.tail(h + x0)


TASKS: dict[str, ValTask] = {t.name: t for t in (
    ValTask("rcan-lite", "sr-x2", lambda c: RCANLite(c)),
    ValTask("imdn-lite", "sr-x2", lambda c: IMDNLite(c)),
    ValTask("drunet-lite", "denoise-s25", lambda c: DRUNetLite(c)),
)}
