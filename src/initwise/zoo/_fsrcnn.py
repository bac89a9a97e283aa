"""FSRCNN (Dong et al. 2016): hourglass network on the low-resolution image with a transposed-conv upsampler."""

from __future__ import annotations

from torch import nn

from ._common import check_channels, check_scale

__all__ = ["fsrcnn"]


def fsrcnn(scale: int = 2, *, in_channels: int = 1, d: int = 56, s: int = 12, m: int = 4) -> nn.Sequential:
    """FSRCNN(d, s, m): feature extraction, shrinking, m mapping layers, expanding, deconvolution.

    ``conv(c, d, 5) PReLU -> conv(d, s, 1) PReLU -> m x [conv(s, s, 3) PReLU] -> conv(s, d, 1) PReLU ->
    ConvTranspose2d(d, c, 9, stride=scale, padding=4, output_padding=scale-1)``, so the output is exactly
    ``scale * H``: ``(H - 1) scale - 8 + 9 + scale - 1 = scale H``. PReLU has one slope per channel (paper).

    Dong, Loy, Tang, "Accelerating the Super-Resolution Convolutional Neural Network", ECCV 2016. The paper works on
    the Y channel, hence ``in_channels=1`` by default.

    Parameters: the paper counts weights only, ``25 d + s d + 9 m s^2 + d s + 81 d`` (12,464 for (56, 12, 4) and
    ``c=1``); with biases (``d + s + m s + d + c``) and PReLU slopes (``d + s + m s + d``) this module has
    12,809 for ``c=1``.

    Args:
        scale: upscaling factor, 2, 3 or 4.
        in_channels: 1 (Y) or 3 (RGB).
        d: LR feature dimension; s: shrunk dimension; m: number of mapping layers.

    Example:
        >>> import torch
        >>> fsrcnn(3)(torch.zeros(1, 1, 10, 12)).shape
        torch.Size([1, 1, 30, 36])
    """
    check_scale(scale, (2, 3, 4))
    check_channels(in_channels)
    if m < 0:
        raise ValueError(f"m (mapping layers) must be >= 0, got {m!r}")
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, d, 5, padding=2),
        nn.PReLU(d),
        nn.Conv2d(d, s, 1),
        nn.PReLU(s),
    ]
    for _ in range(m):
        layers += [nn.Conv2d(s, s, 3, padding=1), nn.PReLU(s)]
    layers += [
        nn.Conv2d(s, d, 1),
        nn.PReLU(d),
        nn.ConvTranspose2d(d, in_channels, 9, stride=scale, padding=4, output_padding=scale - 1),
    ]
    return nn.Sequential(*layers)
