"""The advisor's tenth validation set (v10, docs/evidence.md, "Validation v10"): nets of families no earlier set
trained, two where the identity gate should act and one where it should not (BatchNorm), so that v10 checks the
gate blind a third time; written the way their public code writes them, shrunk to 16 features.

- DIDN-lite (Yu et al. 2019, deep iterative down-up network): a PReLU head, down-up blocks (two conv-PReLU, a
  stride-2 conv down, conv-PReLU pairs, a conv to 4x the channels and PixelShuffle up, the block's input added)
  applied in sequence, their outputs concatenated and fused by a 1x1 conv, a 3x3 tail, the input added (residual
  inside); PyTorch's default init.
- SESR-lite (Bhardwaj et al. 2022, collapsible linear blocks): each block a linear 3x3 expand (x4) then 1x1
  collapse, no activation between (collapsible at inference), a short residual, PReLU after; a long residual from the
  first block's output, the input repeated r^2 times added before PixelShuffle; PyTorch's default init.
- MemNet-lite (Tai et al. 2017, persistent memory network): BN-ReLU-conv (pre-activation) everywhere, memory blocks
  of recursive units (two BN-ReLU-conv with a skip, one shared unit applied 3 times) whose outputs and the earlier
  blocks' are fused by a BN-ReLU-1x1 gate unit, a BN-ReLU-conv reconstruction, the input added; PyTorch's default
  init. BatchNorm: the gate should not act.

Protocol: written, and every candidate of ``initwise.generate_candidates`` queued on them, after v9 was read and
before any v10 result was read; the rule they check is the library's as committed with them (unchanged since
ae0cb6b).

``TASKS[name]`` -> ``validation_models.ValTask`` (same training loop and settings as the first validation set).
"""

from __future__ import annotations

import torch
from torch import nn

from validation_models import ValTask, smoke

__all__ = ["TASKS"]


def _cp(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.PReLU())


class _DownUp(nn.Module):
    """DIDN's DUB, one level: conv-PReLU x2, stride-2 conv-PReLU, conv-PReLU x2, conv to 4 nf + PixelShuffle(2),
    concatenated with the first features, a 1x1 fusion, the block's input added."""

    def __init__(self, nf: int) -> None:
        super().__init__()
        self.pre = nn.Sequential(_cp(nf, nf), _cp(nf, nf))
        self.down = nn.Sequential(_cp(nf, 2 * nf, stride=2), _cp(2 * nf, 2 * nf), _cp(2 * nf, 2 * nf))
        self.up = nn.Sequential(nn.Conv2d(2 * nf, 4 * nf, 1), nn.PixelShuffle(2))
        self.fuse = nn.Sequential(nn.Conv2d(2 * nf, nf, 1), nn.PReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pre(x)
        return self.fuse(torch.cat([self.up(self.down(h)), h], dim=1)) + x


class DIDNLite(nn.Module):
    def __init__(self, in_channels: int = 1, nf: int = 16, blocks: int = 3) -> None:
        super().__init__()
        self.head = _cp(in_channels, nf)
        self.blocks = nn.ModuleList([_DownUp(nf) for _ in range(blocks)])
        self.fuse = nn.Sequential(nn.Conv2d(blocks * nf, nf, 1), nn.PReLU())
        self.tail = nn.Conv2d(nf, in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        outs = []
        for block in self.blocks:
            h = block(h)
            outs.append(h)
        return self.tail(self.fuse(torch.cat(outs, dim=1))) + x


class _Collapsible(nn.Module):
    """SESR's collapsible linear block: 3x3 conv to ``expand`` x the channels, 1x1 back, no activation between;
    the short residual when shapes allow; PReLU after (``act``)."""

    def __init__(self, cin: int, cout: int, k: int = 3, expand: int = 4, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, expand * cout, k, padding=k // 2)
        self.collapse = nn.Conv2d(expand * cout, cout, 1)
        self.residual = cin == cout
        self.act = nn.PReLU(cout) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.collapse(self.conv(x))
        return self.act(h + x if self.residual else h)


class SESRLite(nn.Module):
    """SESR-M3 shrunk: a 5x5 collapsible block in, 3 collapsible 3x3 blocks, the first block's output added back,
    a 5x5 collapsible block to r^2 channels (no activation), the input repeated r^2 times added, PixelShuffle."""

    def __init__(self, in_channels: int = 1, nf: int = 16, blocks: int = 3, scale: int = 2) -> None:
        super().__init__()
        self.scale = scale
        self.first = _Collapsible(in_channels, nf, k=5)
        self.body = nn.Sequential(*[_Collapsible(nf, nf) for _ in range(blocks)])
        self.last = _Collapsible(nf, in_channels * scale * scale, k=5, act=False)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.first(x)
        h = self.body(h) + h
        return self.shuffle(self.last(h) + torch.cat([x] * (self.scale * self.scale), dim=1))


def _brc(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, cout, k, padding=k // 2))


class _MemoryBlock(nn.Module):
    """A shared residual unit (BN-ReLU-conv x2 + skip) applied ``recursions`` times; its outputs and the long-term
    memory (earlier blocks' outputs) fused by a BN-ReLU-1x1 gate unit."""

    def __init__(self, nf: int, recursions: int, memories: int) -> None:
        super().__init__()
        self.unit = nn.Sequential(_brc(nf, nf), _brc(nf, nf))
        self.recursions = recursions
        self.gate = _brc((recursions + memories) * nf, nf, k=1)

    def forward(self, x: torch.Tensor, long_term: list[torch.Tensor]) -> torch.Tensor:
        short, h = [], x
        for _ in range(self.recursions):
            h = self.unit(h) + h
            short.append(h)
        return self.gate(torch.cat(short + long_term, dim=1))


class MemNetLite(nn.Module):
    def __init__(self, in_channels: int = 1, nf: int = 16, blocks: int = 2, recursions: int = 3) -> None:
        super().__init__()
        self.feature = _brc(in_channels, nf)
        self.blocks = nn.ModuleList([_MemoryBlock(nf, recursions, i + 1) for i in range(blocks)])
        self.reconstructor = _brc(nf, in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.feature(x)
        memories = [h]
        for block in self.blocks:
            h = block(h, memories)
            memories.append(h)
        return self.reconstructor(h) + x


TASKS: dict[str, ValTask] = {t.name: t for t in (
    ValTask("didn-lite", "denoise-s25", lambda c: DIDNLite(c)),
    ValTask("sesr-lite", "sr-x2", lambda c: SESRLite(c)),
    ValTask("memnet-lite", "denoise-s25", lambda c: MemNetLite(c)),
)}

if __name__ == "__main__":  # a smoke check: shapes only (no training, no PSNR)
    smoke(TASKS)
