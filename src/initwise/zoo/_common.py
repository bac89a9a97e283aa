"""Building blocks shared by the SR models: mean shift and the sub-pixel upsampler."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["DIV2K_RGB_MEAN", "MeanShift", "Upsampler", "check_channels", "check_scale"]

# Mean of the DIV2K training set on [0, 1], from the official EDSR/RCAN code (common.MeanShift, rgb_mean).
DIV2K_RGB_MEAN: tuple[float, float, float] = (0.4488, 0.4371, 0.4040)


def _luma(rgb: tuple[float, float, float]) -> float:
    """BT.601 luma of an RGB triple on [0, 1], as a [0, 1] value: (16 + 65.481 R + 128.553 G + 24.966 B) / 255."""
    r, g, b = rgb
    return (16.0 + 65.481 * r + 128.553 * g + 24.966 * b) / 255.0


class MeanShift(nn.Module):
    """Fixed, non-trainable `x + sign * mean` per channel (EDSR's ``sub_mean`` / ``add_mean``).

    The official EDSR code implements it as a frozen 1x1 convolution; here the mean is a buffer, so the module has
    no parameters, nothing for an initializer to touch, and parameter counts equal the trainable counts.

    Args:
        channels: 3 uses the DIV2K RGB mean, 1 its BT.601 luma (for Y-channel models).
        sign: -1 subtracts the mean (head), +1 adds it back (tail).
    """

    def __init__(self, channels: int, sign: int) -> None:
        super().__init__()
        if sign not in (-1, 1):
            raise ValueError(f"sign must be -1 or 1, got {sign!r}")
        if channels == 3:
            mean = DIV2K_RGB_MEAN
        elif channels == 1:
            mean = (_luma(DIV2K_RGB_MEAN),)
        else:
            raise ValueError(f"MeanShift channels must be 1 or 3, got {channels!r}")
        self.sign = sign
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.sign * self.mean

    def extra_repr(self) -> str:
        return f"sign={self.sign}"


class Upsampler(nn.Sequential):
    """Sub-pixel upsampler of EDSR/RCAN (Shi et al. 2016): ``conv(F, r^2 F, 3) -> PixelShuffle(r)``.

    x2 and x3 use one stage (r = 2 or 3); x4 uses two x2 stages. No activation between stages (official code,
    ``act=False``).

    Args:
        scale: 2, 3 or 4.
        n_feats: feature channels F in and out.
    """

    def __init__(self, scale: int, n_feats: int) -> None:
        check_scale(scale, (2, 3, 4))
        layers: list[nn.Module] = []
        factors = [2, 2] if scale == 4 else [scale]
        for r in factors:
            layers.append(nn.Conv2d(n_feats, r * r * n_feats, 3, padding=1))
            layers.append(nn.PixelShuffle(r))
        super().__init__(*layers)


def check_scale(scale: int, valid: tuple[int, ...]) -> None:
    """Raise ``ValueError`` unless ``scale`` is one of ``valid``."""
    if not isinstance(scale, int) or isinstance(scale, bool) or scale not in valid:
        raise ValueError(f"scale must be one of {list(valid)}, got {scale!r}")


def check_channels(in_channels: int) -> None:
    """Raise ``ValueError`` unless ``in_channels`` is 1 (Y or grayscale) or 3 (RGB)."""
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 or 3, got {in_channels!r}")


class ResidualSR(nn.Module):
    """The EDSR/RCAN skeleton: ``add_mean(tail(h + body(h)))`` with ``h = head(sub_mean(x))`` (official structure).

    Attributes:
        sub_mean, add_mean: fixed ``MeanShift`` (buffers, no parameters), or ``nn.Identity`` when disabled.
        head: ``conv(c, F, 3)``.
        body: the blocks made by ``blocks()``, then ``conv(F, F, 3)``.
        tail: ``Upsampler`` then ``conv(F, c, 3)``.
    """

    def __init__(self, scale: int, in_channels: int, n_feats: int, blocks: Callable[[], list[nn.Module]],
                 mean_shift: bool) -> None:
        super().__init__()
        check_scale(scale, (2, 3, 4))
        check_channels(in_channels)
        self.sub_mean = MeanShift(in_channels, -1) if mean_shift else nn.Identity()
        self.head = nn.Conv2d(in_channels, n_feats, 3, padding=1)
        self.body = nn.Sequential(*blocks(), nn.Conv2d(n_feats, n_feats, 3, padding=1))
        self.tail = nn.Sequential(Upsampler(scale, n_feats), nn.Conv2d(n_feats, in_channels, 3, padding=1))
        self.add_mean = MeanShift(in_channels, +1) if mean_shift else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(self.sub_mean(x))
        return self.add_mean(self.tail(h + self.body(h)))


def preset_values(presets: dict[str, tuple[Any, ...]], preset: str, *overrides: Any) -> tuple[Any, ...]:
    """The values of ``presets[preset]``, each replaced by its override when that is not None.

    Raises:
        ValueError: ``preset`` is not a key of ``presets`` (the message lists them).
    """
    if preset not in presets:
        raise ValueError(f"preset must be one of {sorted(presets)}, got {preset!r}")
    return tuple(d if o is None else o for o, d in zip(overrides, presets[preset]))


def conv_chain(in_channels: int, depth: int, n_feats: int, bn: bool = False) -> nn.Sequential:
    """The VDSR/DnCNN body: ``depth`` 3x3 convs, ReLU after all but the last, BatchNorm (bias-free convs) in the
    middle ones when ``bn``; ``in_channels -> n_feats -> ... -> in_channels``."""
    if depth < 2:
        raise ValueError(f"depth must be >= 2, got {depth!r}")
    layers: list[nn.Module] = [nn.Conv2d(in_channels, n_feats, 3, padding=1), nn.ReLU()]
    for _ in range(depth - 2):
        layers.append(nn.Conv2d(n_feats, n_feats, 3, padding=1, bias=not bn))
        if bn:
            layers.append(nn.BatchNorm2d(n_feats))
        layers.append(nn.ReLU())
    layers.append(nn.Conv2d(n_feats, in_channels, 3, padding=1))
    return nn.Sequential(*layers)
