"""RCAN (Zhang et al. 2018): residual-in-residual groups of residual channel-attention blocks."""

from __future__ import annotations

import torch
from torch import nn

from ._common import ResidualSR, preset_values

__all__ = ["RCAN", "RCAB", "ChannelAttention", "ResidualGroup", "rcan"]

# (n_resgroups, n_resblocks, n_feats, reduction): "paper" is RCAN's Sec. 4.1 configuration.
RCAN_PRESETS: dict[str, tuple[int, int, int, int]] = {
    "small": (2, 4, 32, 8),
    "paper": (10, 20, 64, 16),
}


class ChannelAttention(nn.Module):
    """``x * sigmoid(conv1x1(relu(conv1x1(avgpool(x)))))``, squeezing ``F`` to ``F // reduction`` channels."""

    def __init__(self, n_feats: int, reduction: int) -> None:
        super().__init__()
        if reduction < 1 or n_feats // reduction < 1:
            raise ValueError(f"reduction must be in [1, n_feats={n_feats}], got {reduction!r}")
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(n_feats, n_feats // reduction, 1),
            nn.ReLU(),
            nn.Conv2d(n_feats // reduction, n_feats, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class RCAB(nn.Module):
    """Residual channel-attention block: ``x + CA(conv(relu(conv(x))))`` (res_scale 1 as in the paper)."""

    def __init__(self, n_feats: int, reduction: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(n_feats, n_feats, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(n_feats, n_feats, 3, padding=1),
            ChannelAttention(n_feats, reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResidualGroup(nn.Module):
    """``x + conv(RCAB_n(...RCAB_1(x)))`` (short skip connection)."""

    def __init__(self, n_feats: int, n_resblocks: int, reduction: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *[RCAB(n_feats, reduction) for _ in range(n_resblocks)],
            nn.Conv2d(n_feats, n_feats, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class RCAN(ResidualSR):
    """RCAN: ``ResidualSR`` with ``n_resgroups`` ``ResidualGroup`` of ``n_resblocks`` channel-attention blocks."""

    def __init__(self, scale: int, in_channels: int, n_resgroups: int, n_resblocks: int, n_feats: int,
                 reduction: int, mean_shift: bool) -> None:
        super().__init__(scale, in_channels, n_feats,
                         lambda: [ResidualGroup(n_feats, n_resblocks, reduction) for _ in range(n_resgroups)],
                         mean_shift)


def rcan(scale: int = 2, *, in_channels: int = 3, preset: str = "small", n_resgroups: int | None = None,
         n_resblocks: int | None = None, n_feats: int | None = None, reduction: int | None = None,
         mean_shift: bool = True) -> RCAN:
    """RCAN ("lite" by default) on the low-resolution image; explicit arguments override the preset.

    Zhang, Li, Li, Wang, Zhong, Fu, "Image Super-Resolution Using Very Deep Residual Channel Attention Networks",
    ECCV 2018. Presets ``(groups G, blocks B, feats F, reduction r)``: ``"small"`` (2, 4, 32, 8),
    ``"paper"`` (10, 20, 64, 16).

    Parameters (RGB, mean shift has none): RCAB ``2 (9 F^2 + F) + (F F/r + F/r) + (F/r F + F)``; group
    ``B RCAB + 9 F^2 + F``; total ``9 c F + F + G group + 9 F^2 + F + up + 9 F c + c``.
    paper x4 15,592,355 (paper: "about 16M"), paper x2 15,444,643; small x2 216,803.

    Args:
        scale: 2, 3 or 4.
        in_channels: 3 (RGB, the paper) or 1.
        preset: ``"small"`` or ``"paper"``.
        n_resgroups, n_resblocks, n_feats, reduction: override the preset.
        mean_shift: subtract / add back the fixed DIV2K mean (buffers, not trained).

    Example:
        >>> import torch
        >>> rcan(2)(torch.zeros(1, 3, 8, 8)).shape
        torch.Size([1, 3, 16, 16])
    """
    g, b, f, r = preset_values(RCAN_PRESETS, preset, n_resgroups, n_resblocks, n_feats, reduction)
    return RCAN(scale, in_channels, g, b, f, r, mean_shift)
