"""EDSR (Lim et al. 2017): residual blocks without batch norm, long skip, sub-pixel upsampler."""

from __future__ import annotations

import torch
from torch import nn

from ._common import ResidualSR, preset_values

__all__ = ["EDSR", "ResBlock", "edsr"]

# (n_resblocks, n_feats, res_scale) of each preset: "baseline" and "paper" are EDSR's Table 1 / official args.
EDSR_PRESETS: dict[str, tuple[int, int, float]] = {
    "small": (4, 32, 1.0),
    "baseline": (16, 64, 1.0),
    "paper": (32, 256, 0.1),
}


class ResBlock(nn.Module):
    """``x + res_scale * conv(relu(conv(x)))`` with 3x3 convolutions, no batch norm (EDSR Fig. 2).

    ``res_scale`` is a fixed multiply in ``forward`` (part of the architecture, not an initialization).
    """

    def __init__(self, n_feats: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(n_feats, n_feats, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(n_feats, n_feats, 3, padding=1),
        )
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) * self.res_scale

    def extra_repr(self) -> str:
        return f"res_scale={self.res_scale}"


class EDSR(ResidualSR):
    """EDSR: ``ResidualSR`` with ``n_resblocks`` ``ResBlock`` (conv-ReLU-conv, ``x + res_scale * body(x)``)."""

    def __init__(self, scale: int, in_channels: int, n_resblocks: int, n_feats: int, res_scale: float,
                 mean_shift: bool) -> None:
        super().__init__(scale, in_channels, n_feats,
                         lambda: [ResBlock(n_feats, res_scale) for _ in range(n_resblocks)], mean_shift)


def edsr(scale: int = 2, *, in_channels: int = 3, preset: str = "small", n_resblocks: int | None = None,
         n_feats: int | None = None, res_scale: float | None = None, mean_shift: bool = True) -> EDSR:
    """EDSR on the low-resolution image; explicit arguments override the preset.

    Lim, Son, Kim, Nah, Lee, "Enhanced Deep Residual Networks for Single Image Super-Resolution", CVPRW 2017.
    Presets ``(n_resblocks, n_feats, res_scale)``: ``"small"`` (4, 32, 1.0), ``"baseline"`` (16, 64, 1.0),
    ``"paper"`` (32, 256, 0.1). Upsampler: ``conv(F, 4F) + PixelShuffle(2)`` (twice for x4) or
    ``conv(F, 9F) + PixelShuffle(3)``.

    Parameters (RGB; the mean shift has none): ``9 c F + F + (2 B + 1)(9 F^2 + F) + up + 9 F c + c`` with
    ``up = 9 F r^2 F + r^2 F`` per stage. baseline x2 1,369,859 (as the official code counts it), x4 1,517,571;
    paper x2 40,729,603; small (4 x 32) x2 121,987.

    Args:
        scale: 2, 3 or 4.
        in_channels: 3 (RGB, the paper) or 1.
        preset: ``"small"``, ``"baseline"`` or ``"paper"``.
        n_resblocks, n_feats, res_scale: override the preset.
        mean_shift: subtract / add back the fixed DIV2K mean (buffers, not trained).

    Example:
        >>> import torch
        >>> edsr(3)(torch.zeros(1, 3, 8, 8)).shape
        torch.Size([1, 3, 24, 24])
    """
    b, f, rs = preset_values(EDSR_PRESETS, preset, n_resblocks, n_feats, res_scale)
    return EDSR(scale, in_channels, b, f, rs, mean_shift)
