"""VDSR (Kim et al. 2016): a deep plain network predicting the residual of the bicubic-upscaled image."""

from __future__ import annotations

import torch
from torch import nn

from ._common import check_channels, conv_chain, preset_values

__all__ = ["VDSR", "vdsr"]


class VDSR(nn.Module):
    """``y = x + body(x)``, body = ``depth`` 3x3 convolutions with ReLU between them (none after the last).

    Attributes:
        body: the plain ``nn.Sequential`` chain predicting the residual.
    """

    def __init__(self, in_channels: int, depth: int, n_feats: int) -> None:
        super().__init__()
        check_channels(in_channels)
        self.body = conv_chain(in_channels, depth, n_feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def vdsr(*, in_channels: int = 1, depth: int | None = None, n_feats: int | None = None,
         preset: str = "small") -> VDSR:
    """VDSR: 20 layers of 3x3x64 convolutions with ReLU and a global residual, on the bicubic-upscaled image.

    Kim, Lee, Lee, "Accurate Image Super-Resolution Using Very Deep Convolutional Networks", CVPR 2016 (Y channel,
    hence ``in_channels=1`` by default). Parameters: ``9 c F + F + (d - 2)(9 F^2 + F) + 9 F c + c``:
    paper (d=20, F=64, c=1) 665,921; small default (d=8, F=32, c=1) 56,097.

    Args:
        in_channels: 1 (Y) or 3 (RGB).
        depth: number of conv layers d (overrides the preset).
        n_feats: features F (overrides the preset).
        preset: ``"small"`` (8 x 32) or ``"paper"`` (20 x 64).

    Example:
        >>> import torch
        >>> vdsr()(torch.zeros(1, 1, 16, 16)).shape
        torch.Size([1, 1, 16, 16])
    """
    d, f = preset_values({"small": (8, 32), "paper": (20, 64)}, preset, depth, n_feats)
    return VDSR(in_channels, d, f)
