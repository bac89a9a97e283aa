"""The advisor's ninth validation set (v9, docs/evidence.md, "Validation v9"): nets of families no earlier set
trained, two where the identity gate should act (ReLU-like activations, a path that carries the identity) and one
where it should not, so that v9 checks the gate blind a second time; written the way their public code writes them,
shrunk to 16 features.

- IDN-lite (Hui et al. 2018, information distillation network): a feature block and 2 distillation blocks
  (an enhancement unit of 3x3 convs, the last grouped, whose output is sliced: a part concatenated to the block's
  input, the rest through three more convs, the two summed; a 1x1 compression), LeakyReLU(0.05) after every conv,
  a 17x17 stride-2 transposed conv to the output plus the bicubic-upsampled input (as the paper's code does);
  PyTorch's default init.
- CBDNet-lite (Guo et al. 2019, blind denoising): a 5-conv ReLU noise-level estimator, its map concatenated to the
  noisy input, a two-level U-Net (average pooling, a 2x2 stride-2 transposed conv, the skip added, not
  concatenated), the input added to the U-Net's output; PyTorch's default init.
- MSRN-lite (Li et al. 2018, multi-scale residual network): multi-scale residual blocks (3x3 and 5x5 branches
  crossed twice, concatenated, a 1x1 fusion, the block's input added), the head and every block's output fused by a
  1x1 and a 3x3 conv, a conv + PixelShuffle upsampler and a 3x3 tail; no global skip (the gate should not act);
  PyTorch's default init.

Protocol: these nets were written, and every candidate of ``initwise.generate_candidates`` queued on them, after
v8 was read and before any v9 result was read; the rule they check is the library's as committed with them
(unchanged since ae0cb6b: the gate is not retuned on v8).

``TASKS[name]`` -> ``validation_models.ValTask`` (same training loop and settings as the first validation set).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from validation_models import ValTask, smoke

__all__ = ["TASKS"]


def _cl(cin: int, cout: int, groups: int = 1, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups), nn.LeakyReLU(0.05))


class _DBlock(nn.Module):
    """IDN's distillation block at width ``nf`` (the paper's 64 -> 48 -> 32 (g4) -> 64, slice 16, ... scaled by
    nf/64): enhancement unit, slice, concat, sum, 1x1 compression."""

    def __init__(self, nf: int = 16) -> None:
        super().__init__()
        d = nf // 4
        self.up = nn.Sequential(_cl(nf, 3 * d), _cl(3 * d, 2 * d, groups=4), _cl(2 * d, nf + d))
        self.keep = d
        self.down = nn.Sequential(_cl(nf, nf), _cl(nf, 3 * d, groups=4), _cl(3 * d, nf + d))
        self.compress = _cl(nf + d, nf, k=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(x)
        kept, rest = h[:, :self.keep], h[:, self.keep:]
        return self.compress(torch.cat([x, kept], dim=1) + self.down(rest))


class IDNLite(nn.Module):
    def __init__(self, in_channels: int = 1, nf: int = 16, blocks: int = 2, scale: int = 2) -> None:
        super().__init__()
        self.scale = scale
        self.fblock = nn.Sequential(_cl(in_channels, nf), _cl(nf, nf))
        self.dblocks = nn.Sequential(*[_DBlock(nf) for _ in range(blocks)])
        self.upsample = nn.ConvTranspose2d(nf, in_channels, 17, stride=scale, padding=8, output_padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return self.upsample(self.dblocks(self.fblock(x))) + skip


def _cr(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True))


class CBDNetLite(nn.Module):
    """Noise estimator (5 conv-ReLU, the last to one map per channel), then a U-Net on [noisy, map]: 2 conv-ReLU
    at nf, average pool, 2 conv-ReLU at 2 nf, a 2x2 stride-2 transposed conv back to nf added to the first level,
    2 conv-ReLU, a 3x3 conv to the image's channels; the noisy input added."""

    def __init__(self, in_channels: int = 1, nf: int = 16) -> None:
        super().__init__()
        self.fcn = nn.Sequential(_cr(in_channels, nf), _cr(nf, nf), _cr(nf, nf), _cr(nf, nf), _cr(nf, in_channels))
        self.inc = nn.Sequential(_cr(2 * in_channels, nf), _cr(nf, nf))
        self.down = nn.Sequential(_cr(nf, 2 * nf), _cr(2 * nf, 2 * nf))
        self.up = nn.ConvTranspose2d(2 * nf, nf, 2, stride=2)
        self.dec = nn.Sequential(_cr(nf, nf), _cr(nf, nf))
        self.outc = nn.Conv2d(nf, in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sigma = self.fcn(x)
        e1 = self.inc(torch.cat([x, sigma], dim=1))
        e2 = self.down(F.avg_pool2d(e1, 2))
        return self.outc(self.dec(self.up(e2) + e1)) + x


class _MSRB(nn.Module):
    def __init__(self, nf: int = 16) -> None:
        super().__init__()
        self.conv_3_1 = nn.Conv2d(nf, nf, 3, padding=1)
        self.conv_5_1 = nn.Conv2d(nf, nf, 5, padding=2)
        self.conv_3_2 = nn.Conv2d(2 * nf, 2 * nf, 3, padding=1)
        self.conv_5_2 = nn.Conv2d(2 * nf, 2 * nf, 5, padding=2)
        self.confusion = nn.Conv2d(4 * nf, nf, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o1 = torch.cat([self.relu(self.conv_3_1(x)), self.relu(self.conv_5_1(x))], dim=1)
        o2 = torch.cat([self.relu(self.conv_3_2(o1)), self.relu(self.conv_5_2(o1))], dim=1)
        return self.confusion(o2) + x


class MSRNLite(nn.Module):
    def __init__(self, in_channels: int = 1, nf: int = 16, blocks: int = 3, scale: int = 2) -> None:
        super().__init__()
        self.head = nn.Conv2d(in_channels, nf, 3, padding=1)
        self.body = nn.ModuleList([_MSRB(nf) for _ in range(blocks)])
        self.fuse = nn.Sequential(nn.Conv2d(nf * (blocks + 1), nf, 1), nn.Conv2d(nf, nf, 3, padding=1))
        self.up = nn.Sequential(nn.Conv2d(nf, nf * scale * scale, 3, padding=1), nn.PixelShuffle(scale))
        self.tail = nn.Conv2d(nf, in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        outs = [h]
        for block in self.body:
            outs.append(block(outs[-1]))
        return self.tail(self.up(self.fuse(torch.cat(outs, dim=1))))


TASKS: dict[str, ValTask] = {t.name: t for t in (
    ValTask("idn-lite", "sr-x2", lambda c: IDNLite(c)),
    ValTask("cbdnet-lite", "denoise-s25", lambda c: CBDNetLite(c)),
    ValTask("msrn-lite", "sr-x2", lambda c: MSRNLite(c)),
)}

if __name__ == "__main__":  # a smoke check: shapes only (no training, no PSNR)
    smoke(TASKS)
