"""ESPCN (Shi et al. 2016): efficient sub-pixel convolutional network."""

from __future__ import annotations

from torch import nn

from ._common import check_channels, check_scale

__all__ = ["espcn"]


def espcn(scale: int = 2, *, in_channels: int = 1, n1: int = 64, n2: int = 32) -> nn.Sequential:
    """ESPCN: ``conv(c, n1, 5) Tanh -> conv(n1, n2, 3) Tanh -> conv(n2, c r^2, 3) -> PixelShuffle(r)``.

    Shi et al., "Real-Time Single Image and Video Super-Resolution Using an Efficient Sub-Pixel Convolutional
    Neural Network", CVPR 2016 (l=3, (f1, n1)=(5, 64), (f2, n2)=(3, 32), f3=3, tanh). The paper works on the
    Y channel, hence ``in_channels=1`` by default.

    Parameters: ``25 c n1 + n1 + 9 n1 n2 + n2 + 9 n2 c r^2 + c r^2``; 21,284 for ``c=1, r=2``, 22,729 for r=3.

    Args:
        scale: upscaling factor r, 2, 3 or 4.
        in_channels: 1 (Y) or 3 (RGB).
        n1, n2: filters of the two hidden layers.

    Example:
        >>> import torch
        >>> espcn(4)(torch.zeros(1, 1, 8, 8)).shape
        torch.Size([1, 1, 32, 32])
    """
    check_scale(scale, (2, 3, 4))
    check_channels(in_channels)
    return nn.Sequential(
        nn.Conv2d(in_channels, n1, 5, padding=2),
        nn.Tanh(),
        nn.Conv2d(n1, n2, 3, padding=1),
        nn.Tanh(),
        nn.Conv2d(n2, in_channels * scale * scale, 3, padding=1),
        nn.PixelShuffle(scale),
    )
