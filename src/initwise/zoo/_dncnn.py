"""DnCNN (Zhang et al. 2017): residual learning of the noise with conv + BN + ReLU layers."""

from __future__ import annotations

import torch
from torch import nn

from ._common import check_channels, conv_chain, preset_values

__all__ = ["DnCNN", "dncnn"]


class DnCNN(nn.Module):
    """``noise = body(y)``; returns ``y - noise`` (the clean estimate), or ``noise`` when ``return_noise``.

    body: ``conv(c, F) ReLU -> (depth - 2) x [conv(F, F) BN ReLU] -> conv(F, c)``, 3x3 kernels. The convs followed
    by batch norm have no bias (it would be cancelled by the BN mean); with ``bn=False`` every conv has a bias.

    Attributes:
        body: the plain ``nn.Sequential`` chain predicting the noise.
        return_noise: return the predicted noise instead of ``y - noise``.
    """

    def __init__(self, in_channels: int, depth: int, n_feats: int, bn: bool, return_noise: bool) -> None:
        super().__init__()
        check_channels(in_channels)
        self.body = conv_chain(in_channels, depth, n_feats, bn)
        self.return_noise = return_noise

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        noise = self.body(y)
        return noise if self.return_noise else y - noise

    def extra_repr(self) -> str:
        return f"return_noise={self.return_noise}"


def dncnn(*, in_channels: int = 3, preset: str = "small", depth: int | None = None, n_feats: int | None = None,
          bn: bool = True, return_noise: bool = False) -> DnCNN:
    """DnCNN-S: 17 layers of 64 features, conv+ReLU, 15 x conv+BN+ReLU, conv; predicts the noise.

    Zhang, Zuo, Chen, Meng, Zhang, "Beyond a Gaussian Denoiser: Residual Learning of Deep CNN for Image Denoising",
    IEEE TIP 2017. The model returns ``y - noise`` so its output is comparable to the clean image; training on
    ``||y - noise - x||^2`` is the paper's residual loss ``||noise - (y - x)||^2``. Presets ``(depth, F)``:
    ``"small"`` (8, 32), ``"paper"`` (17, 64). Default 3 channels (CDnCNN-style colour); the paper's grayscale
    model is ``in_channels=1``.

    Parameters with BN (bias-free middle convs; BN weight and bias 2F each):
    ``9 c F + F + (d - 2)(9 F^2 + 2 F) + 9 F c + c``: paper, c=1: 556,097; paper, c=3: 558,403;
    small, c=3: 57,443.

    Args:
        in_channels: 3 (colour) or 1 (grayscale).
        preset: ``"small"`` or ``"paper"``.
        depth, n_feats: override the preset.
        bn: batch norm in the middle layers (the paper); ``False`` gives a plain conv+ReLU chain with biases.
        return_noise: return the predicted noise instead of the denoised image.

    Example:
        >>> import torch
        >>> dncnn()(torch.zeros(2, 3, 16, 16)).shape
        torch.Size([2, 3, 16, 16])
    """
    d, f = preset_values({"small": (8, 32), "paper": (17, 64)}, preset, depth, n_feats)
    return DnCNN(in_channels, d, f, bn, return_noise)
