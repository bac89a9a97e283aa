"""The advisor's seventh validation set (v7, docs/evidence.md, "Validation v7"): SR / denoising nets of families no
earlier set trained (nor the design set, the zoo's study or validation sets one to six), written the way their
public code writes them, shrunk to 16 features so that 2 shared CPU cores can train every candidate 5 times.

- SRResNet-BN (Ledig et al. 2017, SRGAN's generator as in its public PyTorch ports): a 9x9 head with PReLU,
  residual blocks conv-BN-PReLU-conv-BN, a conv-BN after the trunk added to the head's features, a conv +
  PixelShuffle + PReLU upsampler, a 9x9 tail; PyTorch's default init. The first set with BatchNorm inside residual
  blocks and PReLU together.
- ConvNeXt-denoiser (the ConvNeXt block of Liu et al. 2022 used as a restoration body, as ports do): a 3x3 head,
  blocks of a 7x7 depthwise conv, LayerNorm over channels (channels-last), Linear 4x, GELU, Linear back, layer
  scale initialized to 1e-6 and a block residual; a 3x3 tail predicting the noise, subtracted from the input
  inside the model; timm's init (trunc_normal std 0.02 on convs and linears, zero bias). The first set with
  depthwise convs, GELU and an initialized layer scale.
- ECB-lite (ECBSR, Zhang et al. 2021, its training-time form): each block sums a 3x3 conv, a 1x1 expand then 3x3
  conv, and a 1x1 conv, then PReLU; the last block's output has the input repeated r^2 times added before the
  PixelShuffle (ECBSR's residual); PyTorch's default init. The first set with re-parameterizable parallel branches.

Protocol: these nets were written, and every candidate of ``initwise.generate_candidates`` queued on them, before
any result of them was read; the rule they check is the one pre-registered in docs/evidence.md ("Validation v7")
before the results were read, chosen on the cells seen before (design and validation sets one to six).

``TASKS[name]`` -> ``validation_models.ValTask`` (same training loop and settings as the first validation set).
"""

from __future__ import annotations

import torch
from torch import nn

from validation_models import ValTask, smoke

__all__ = ["TASKS"]


class _SRResBlock(nn.Module):
    def __init__(self, nf: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(nf, nf, 3, padding=1), nn.BatchNorm2d(nf), nn.PReLU(),
                                  nn.Conv2d(nf, nf, 3, padding=1), nn.BatchNorm2d(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SRResNetBN(nn.Module):
    """SRGAN's generator at scale 2: head 9x9 + PReLU, ``blocks`` residual blocks with BN, conv-BN + the head's
    features, conv to 4 nf + PixelShuffle(2) + PReLU, tail 9x9."""

    def __init__(self, in_channels: int = 1, nf: int = 16, blocks: int = 4) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(in_channels, nf, 9, padding=4), nn.PReLU())
        self.trunk = nn.Sequential(*[_SRResBlock(nf) for _ in range(blocks)])
        self.fuse = nn.Sequential(nn.Conv2d(nf, nf, 3, padding=1), nn.BatchNorm2d(nf))
        self.up = nn.Sequential(nn.Conv2d(nf, 4 * nf, 3, padding=1), nn.PixelShuffle(2), nn.PReLU())
        self.tail = nn.Conv2d(nf, in_channels, 9, padding=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        return self.tail(self.up(h + self.fuse(self.trunk(h))))


class _ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, layer_scale: float = 1e-6) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(layer_scale * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dwconv(x).permute(0, 2, 3, 1)
        h = self.pwconv2(self.act(self.pwconv1(self.norm(h))))
        return x + (self.gamma * h).permute(0, 3, 1, 2)


class ConvNeXtDenoiser(nn.Module):
    """Head 3x3, ``blocks`` ConvNeXt blocks, tail 3x3 to the noise; ``x - noise``. timm's ``_init_weights``:
    trunc_normal_(std=0.02) on conv and linear weights, zero biases."""

    def __init__(self, in_channels: int = 1, nf: int = 16, blocks: int = 3) -> None:
        super().__init__()
        self.head = nn.Conv2d(in_channels, nf, 3, padding=1)
        self.blocks = nn.Sequential(*[_ConvNeXtBlock(nf) for _ in range(blocks)])
        self.tail = nn.Conv2d(nf, in_channels, 3, padding=1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.tail(self.blocks(self.head(x)))


class _ECB(nn.Module):
    """ECBSR's edge-oriented block in its training form, without the fixed Sobel/Laplacian branches: a 3x3 conv, a
    1x1 expand (x2) then 3x3, and a 1x1 conv, summed, then PReLU (when ``act``)."""

    def __init__(self, cin: int, cout: int, act: bool = True) -> None:
        super().__init__()
        self.conv3 = nn.Conv2d(cin, cout, 3, padding=1)
        self.expand = nn.Conv2d(cin, 2 * cin, 1)
        self.squeeze3 = nn.Conv2d(2 * cin, cout, 3, padding=1)
        self.conv1 = nn.Conv2d(cin, cout, 1)
        self.act = nn.PReLU(cout) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv3(x) + self.squeeze3(self.expand(x)) + self.conv1(x))


class ECBLite(nn.Module):
    """ECBSR-M4C16 shrunk: ECB in -> nf, ``blocks`` ECBs, ECB nf -> r^2 (no act); plus the input repeated r^2
    times; PixelShuffle(r)."""

    def __init__(self, in_channels: int = 1, nf: int = 16, blocks: int = 4, scale: int = 2) -> None:
        super().__init__()
        self.scale = scale
        self.body = nn.Sequential(_ECB(in_channels, nf), *[_ECB(nf, nf) for _ in range(blocks)],
                                  _ECB(nf, in_channels * scale * scale, act=False))
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = torch.cat([x] * (self.scale * self.scale), dim=1)
        return self.shuffle(self.body(x) + skip)


TASKS: dict[str, ValTask] = {t.name: t for t in (
    ValTask("srresnet-bn", "sr-x2", lambda c: SRResNetBN(c)),
    ValTask("convnext-denoise", "denoise-s25", lambda c: ConvNeXtDenoiser(c)),
    ValTask("ecb-lite", "sr-x2", lambda c: ECBLite(c)),
)}

if __name__ == "__main__":  # a smoke check: shapes only (no training, no PSNR)
    smoke(TASKS)
