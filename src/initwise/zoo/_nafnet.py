"""A plain (non-U-Net) stack of NAFNet blocks for denoising (Chen et al. 2022)."""

from __future__ import annotations

import torch
from torch import nn

from ._common import check_channels

__all__ = ["LayerNorm2d", "NAFBlock", "NAFNetLite", "SimpleGate", "SimplifiedChannelAttention", "nafnet"]


class LayerNorm2d(nn.Module):
    """Layer norm over the channel dimension of ``(N, C, H, W)``: ``w_c (x - mean_C) / sqrt(var_C + eps) + b_c``.

    ``weight`` starts at 1 and ``bias`` at 0, as in ``nn.LayerNorm``.
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        y = (x - mean) / torch.sqrt(var + self.eps)
        return y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class SimpleGate(nn.Module):
    """Split the channels in two halves and multiply them: ``x[:, :C/2] * x[:, C/2:]`` (NAFNet's activation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


class SimplifiedChannelAttention(nn.Module):
    """``x * conv1x1(avgpool(x))``: channel attention without the ReLU/sigmoid (NAFNet's SCA)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.attention = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class NAFBlock(nn.Module):
    """NAFNet block (Fig. 3c): two residual branches, each scaled by a learnable per-channel factor.

    ``y = x + beta * conv1x1(SCA(SG(dwconv3x3(conv1x1_{C->2C}(LN(x))))))``;
    ``z = y + gamma * conv1x1(SG(conv1x1_{C->2C}(LN(y))))``. ``beta`` and ``gamma`` are parameters that the
    official code creates as zeros (so each block starts as the identity); this is part of the architecture.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        c2 = 2 * channels
        self.branch1 = nn.Sequential(
            LayerNorm2d(channels),
            nn.Conv2d(channels, c2, 1),
            nn.Conv2d(c2, c2, 3, padding=1, groups=c2),
            SimpleGate(),
            SimplifiedChannelAttention(channels),
            nn.Conv2d(channels, channels, 1),
        )
        self.branch2 = nn.Sequential(
            LayerNorm2d(channels),
            nn.Conv2d(channels, c2, 1),
            SimpleGate(),
            nn.Conv2d(channels, channels, 1),
        )
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x + self.beta * self.branch1(x)
        return y + self.gamma * self.branch2(y)


class NAFNetLite(nn.Module):
    """``x + ending(blocks(intro(x)))`` with 3x3 intro/ending convolutions (no encoder/decoder levels)."""

    def __init__(self, in_channels: int, width: int, n_blocks: int) -> None:
        super().__init__()
        check_channels(in_channels)
        self.intro = nn.Conv2d(in_channels, width, 3, padding=1)
        self.blocks = nn.Sequential(*[NAFBlock(width) for _ in range(n_blocks)])
        self.ending = nn.Conv2d(width, in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ending(self.blocks(self.intro(x)))


def nafnet(*, in_channels: int = 3, width: int = 16, n_blocks: int = 4) -> NAFNetLite:
    """A single-scale NAFNet-style denoiser: ``n_blocks`` NAF blocks of ``width`` channels and a global residual.

    Chen, Chu, Zhang, Sun, "Simple Baselines for Image Restoration", ECCV 2022. The paper's NAFNet is a U-Net
    of these blocks (width 32 or 64); this plain stack keeps the block (LayerNorm2d, depthwise conv, SimpleGate,
    simplified channel attention, zero-started ``beta``/``gamma``) without the down/up-sampling levels.

    Parameters: block ``2 W + (2 W^2 + 2 W) + (9 2W + 2W) + (W^2 + W) + (W^2 + W) + 2 W + (2 W^2 + 2 W) +
    (W^2 + W) + 2 W`` = ``7 W^2 + 33 W``; total ``9 c W + W + n block + 9 W c + c``: default (W=16, n=4, c=3)
    10,163.

    Args:
        in_channels: 3 (colour) or 1 (grayscale).
        width: channels W.
        n_blocks: number of NAF blocks.

    Example:
        >>> import torch
        >>> nafnet()(torch.zeros(1, 3, 16, 16)).shape
        torch.Size([1, 3, 16, 16])
    """
    return NAFNetLite(in_channels, width, n_blocks)
