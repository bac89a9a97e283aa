"""Design-set additions of the advisor (docs/evidence.md, "design set"): deep plain nets without normalization,
written as users write them, added to choose the health thresholds where deep gain-1 inits (Xavier, LeCun) make
the forward signal shrink layer after layer. None of them is in the validation set (benchmarks/validation_models.py)
and the validation set was not looked at to build them.

``TASKS[name]`` -> ``validation_models.ValTask`` (same training loop and settings as the validation study).
"""

from __future__ import annotations

import torch
from torch import nn

from validation_models import ValTask

__all__ = ["TASKS"]


class SiLUDenoiser18(nn.Module):
    """An 18-conv SiLU denoiser without BN, 16 features, the global residual inside (``x - body(x)``), PyTorch's
    default init. (A 20-conv ReLU VDSR was tried first: at 300 steps every init sat at the bicubic baseline, a cell
    that cannot tell inits apart; it was dropped before any advisor feature was computed on it.)"""

    def __init__(self, in_channels: int = 1, nf: int = 16, depth: int = 18) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, nf, 3, padding=1), nn.SiLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(nf, nf, 3, padding=1), nn.SiLU()]
        layers.append(nn.Conv2d(nf, in_channels, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.body(x)


class PlainDenoiser15(nn.Module):
    """A 15-conv ReLU denoiser without BN (DnCNN's layout minus its BatchNorm), 16 features, predicting the noise
    (the training loop subtracts it: residual outside the model), PyTorch's default init."""

    def __init__(self, in_channels: int = 1, nf: int = 16, depth: int = 15) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, nf, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(nf, nf, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(nf, in_channels, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


TASKS: dict[str, ValTask] = {t.name: t for t in (
    ValTask("silu18-denoise-in", "denoise-s25", lambda c: SiLUDenoiser18(c)),
    ValTask("plain15-relu-out", "denoise-s25", lambda c: PlainDenoiser15(c), outside=-1.0),
)}
