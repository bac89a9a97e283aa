"""SRCNN (Dong et al. 2014/2016): three convolutions on the bicubic-upscaled image."""

from __future__ import annotations

from torch import nn

from ._common import check_channels

__all__ = ["srcnn"]


def srcnn(*, in_channels: int = 1, n1: int = 64, n2: int = 32, f1: int = 9, f2: int = 1, f3: int = 5) -> nn.Sequential:
    """SRCNN 9-1-5: ``conv(c, n1, f1) -> ReLU -> conv(n1, n2, f2) -> ReLU -> conv(n2, c, f3)``.

    Dong, Loy, He, Tang, "Image Super-Resolution Using Deep Convolutional Networks", TPAMI 2016. The input is the
    bicubic-upscaled low-resolution image; the output has the same size ("same" zero padding, where the paper used
    valid convolutions and a smaller target). The paper works on the Y channel, hence ``in_channels=1`` by default.

    Parameters (weights + biases): ``f1^2 c n1 + n1 + f2^2 n1 n2 + n2 + f3^2 n2 c + c``;
    9-1-5, 64/32: 8,129 for ``c=1`` (paper: 8,032 weights), 20,099 for ``c=3``.

    Args:
        in_channels: 1 (Y) or 3 (RGB); the output has the same channels.
        n1, n2: filters of the first two layers.
        f1, f2, f3: kernel sizes (odd).

    Example:
        >>> import torch
        >>> srcnn()(torch.zeros(1, 1, 33, 33)).shape
        torch.Size([1, 1, 33, 33])
    """
    check_channels(in_channels)
    for name, f in (("f1", f1), ("f2", f2), ("f3", f3)):
        if f < 1 or f % 2 == 0:
            raise ValueError(f"{name} must be a positive odd kernel size, got {f!r}")
    return nn.Sequential(
        nn.Conv2d(in_channels, n1, f1, padding=f1 // 2),
        nn.ReLU(),
        nn.Conv2d(n1, n2, f2, padding=f2 // 2),
        nn.ReLU(),
        nn.Conv2d(n2, in_channels, f3, padding=f3 // 2),
    )
