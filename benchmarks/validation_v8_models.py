"""The advisor's eighth validation set (v8, docs/evidence.md, "Validation v8"): nets of families no earlier set
trained, chosen to fall where the ninth session's identity gate acts (ReLU-like activations, a path that carries the
identity) so that v8 checks the gate blind; written the way their public code writes them, shrunk to 16 features.

- MWCNN-lite (Liu et al. 2018, multi-level wavelet CNN): a Haar wavelet transform in place of pooling (fixed, no
  parameters), conv-ReLU pairs at two levels, the inverse transform in place of upsampling with the level's features
  added back, the input added to the output (residual inside); PyTorch's default init.
- SRFBN-lite (Li et al. 2019, feedback network): PReLU everywhere, a feedback block of up/down projection groups
  (6x6 stride-2 transposed conv and conv) unrolled over 3 steps with its hidden state fed back, a transposed-conv
  reconstruction, and the bicubic-upsampled input added (as the paper's code does); the last step's output is the
  model's; PyTorch's default init.
- DRCN-lite (Kim et al. 2016, deeply-recursive conv net): the input bicubic-upsampled first (VDSR-style), an
  embedding, one 3x3 conv + ReLU applied recursively 5 times with shared weights, a shared reconstruction net on
  every recursion with the input added, and the outputs averaged with learned weights (initialized to 1/5);
  PyTorch's default init.

Protocol: these nets were written, and every candidate of ``initwise.generate_candidates`` queued on them, before
any result of them (or of v7) was read; the rule they check is the one pre-registered with them.

``TASKS[name]`` -> ``validation_models.ValTask`` (same training loop and settings as the first validation set).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from validation_models import ValTask, smoke

__all__ = ["TASKS"]


def _dwt(x: torch.Tensor) -> torch.Tensor:
    """Haar wavelet transform (MWCNN's ``dwt_init``): 4 sub-bands stacked on channels, half the size."""
    x01, x02 = x[:, :, 0::2, :] / 2, x[:, :, 1::2, :] / 2
    x1, x2, x3, x4 = x01[:, :, :, 0::2], x02[:, :, :, 0::2], x01[:, :, :, 1::2], x02[:, :, :, 1::2]
    return torch.cat((x1 + x2 + x3 + x4, -x1 - x2 + x3 + x4, -x1 + x2 - x3 + x4, x1 - x2 - x3 + x4), dim=1)


def _iwt(x: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`_dwt` (MWCNN's ``iwt_init``)."""
    c = x.shape[1] // 4
    x1, x2, x3, x4 = x[:, :c] / 2, x[:, c:2 * c] / 2, x[:, 2 * c:3 * c] / 2, x[:, 3 * c:] / 2
    n, _, h, w = x1.shape
    out = x.new_zeros(n, c, 2 * h, 2 * w)
    out[:, :, 0::2, 0::2] = x1 - x2 - x3 + x4
    out[:, :, 1::2, 0::2] = x1 - x2 + x3 - x4
    out[:, :, 0::2, 1::2] = x1 + x2 - x3 - x4
    out[:, :, 1::2, 1::2] = x1 + x2 + x3 + x4
    return out


def _cr(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True))


class MWCNNLite(nn.Module):
    """DWT -> 2 conv-ReLU (nf) -> DWT -> 2 conv-ReLU (2 nf) -> conv-ReLU to 4 nf -> IWT, + level-1 features ->
    conv-ReLU -> conv to 4 channels -> IWT, + the input."""

    def __init__(self, in_channels: int = 1, nf: int = 16) -> None:
        super().__init__()
        self.enc1 = nn.Sequential(_cr(4 * in_channels, nf), _cr(nf, nf))
        self.enc2 = nn.Sequential(_cr(4 * nf, 2 * nf), _cr(2 * nf, 2 * nf), _cr(2 * nf, 4 * nf))
        self.dec1 = _cr(nf, nf)
        self.out = nn.Conv2d(nf, 4 * in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(_dwt(x))
        d1 = _iwt(self.enc2(_dwt(e1))) + e1
        return _iwt(self.out(self.dec1(d1))) + x


class _FeedbackBlock(nn.Module):
    """SRFBN's FB block: 1x1 compress of [input, last hidden], ``groups`` up (6x6 s2 transposed conv) / down
    (6x6 s2 conv) projections, a 1x1 compress of the down projections; PReLU after each."""

    def __init__(self, nf: int, groups: int = 2) -> None:
        super().__init__()
        self.compress_in = nn.Sequential(nn.Conv2d(2 * nf, nf, 1), nn.PReLU())
        self.ups = nn.ModuleList([nn.Sequential(nn.ConvTranspose2d(nf, nf, 6, stride=2, padding=2), nn.PReLU())
                                  for _ in range(groups)])
        self.downs = nn.ModuleList([nn.Sequential(nn.Conv2d(nf, nf, 6, stride=2, padding=2), nn.PReLU())
                                    for _ in range(groups)])
        self.compress_out = nn.Sequential(nn.Conv2d(groups * nf, nf, 1), nn.PReLU())

    def forward(self, x: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        h = self.compress_in(torch.cat([x, hidden], dim=1))
        lows = []
        for up, down in zip(self.ups, self.downs):
            h = down(up(h))
            lows.append(h)
        return self.compress_out(torch.cat(lows, dim=1))


class SRFBNLite(nn.Module):
    """conv 3x3 to 4 nf + PReLU, 1x1 to nf + PReLU, the feedback block over ``steps`` steps (hidden state starts
    as the features), reconstruction (6x6 s2 transposed conv + PReLU, 3x3 conv) + the bicubic-upsampled input."""

    def __init__(self, in_channels: int = 1, nf: int = 16, steps: int = 3, scale: int = 2) -> None:
        super().__init__()
        self.steps, self.scale = steps, scale
        self.conv_in = nn.Sequential(nn.Conv2d(in_channels, 4 * nf, 3, padding=1), nn.PReLU())
        self.feat_in = nn.Sequential(nn.Conv2d(4 * nf, nf, 1), nn.PReLU())
        self.block = _FeedbackBlock(nf)
        self.up = nn.Sequential(nn.ConvTranspose2d(nf, nf, 6, stride=2, padding=2), nn.PReLU())
        self.conv_out = nn.Conv2d(nf, in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        f = self.feat_in(self.conv_in(x))
        hidden = f
        for _ in range(self.steps):
            hidden = self.block(f, hidden)
        return self.conv_out(self.up(hidden)) + skip


class DRCNLite(nn.Module):
    """Embedding (2 conv-ReLU), one shared conv-ReLU applied ``depth`` times, a shared reconstruction (conv-ReLU,
    conv) of every recursion plus the input, averaged with learned weights initialized to 1/depth."""

    def __init__(self, in_channels: int = 1, nf: int = 16, depth: int = 5) -> None:
        super().__init__()
        self.embed = nn.Sequential(_cr(in_channels, nf), _cr(nf, nf))
        self.recursive = _cr(nf, nf)
        self.recon = nn.Sequential(_cr(nf, nf), nn.Conv2d(nf, in_channels, 3, padding=1))
        self.weights = nn.Parameter(torch.full((depth,), 1.0 / depth))
        self.depth = depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        out = 0
        for d in range(self.depth):
            h = self.recursive(h)
            out = out + self.weights[d] * (self.recon(h) + x)
        return out


TASKS: dict[str, ValTask] = {t.name: t for t in (
    ValTask("mwcnn-lite", "denoise-s25", lambda c: MWCNNLite(c)),
    ValTask("srfbn-lite", "sr-x2", lambda c: SRFBNLite(c)),
    ValTask("drcn-lite", "sr-x2", lambda c: DRCNLite(c), upsample=True),
)}

if __name__ == "__main__":  # a smoke check: shapes only (no training, no PSNR)
    z = torch.rand(2, 1, 24, 24)
    assert torch.allclose(_iwt(_dwt(z)), z, atol=1e-6)
    smoke(TASKS)
