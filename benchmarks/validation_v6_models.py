"""The advisor's sixth validation set (v6, docs/evidence.md, "Validation v6"): SR / denoising nets never trained
here before (nor in the design set, the zoo's study or validation sets one to five), written the way their
public code writes them, shrunk to 16 features so that 2 shared CPU cores can train every candidate 5 times.

- UNet-bilinear (the FCN/U-Net pattern of segmentation code, used as a denoiser): two conv levels, a max pool, a
  transposed conv **initialized to bilinear upsampling per channel** (FCN's ``bilinear_kernel``: the filter on the
  channel diagonal, zero elsewhere), the skip concatenated, two convs, a 1x1 to the noise, subtracted from the
  input; PyTorch's default init for every conv, as such code leaves it.
- RED-Net-lite (Mao et al. 2016, RED10 as in the public PyTorch port): 5 convs and 5 transposed convs (3x3,
  stride 1, ReLU), a symmetric skip every two layers added before the ReLU, the input added before the last ReLU;
  PyTorch's default init.

Protocol: these nets were written, and every candidate of ``initwise.generate_candidates`` queued on them, before
any result of them was read; the rule they check is the library's as committed with them (its hash is in
docs/evidence.md). The one change since v5 is in the candidates, not the rule: every candidate that draws keeps the
structured kernels a model's own init set (``structured="keep"``), which only UNet-bilinear here has.

**Not new, said plainly**: an IMDN-lite was written and queued here too, and found after v6 was read to be v4's
``imdn-cca-lite`` again (the same layers and init: its 90 runs shared with v4 gave the same PSNR to the last
digit), under v2's task name ``imdn-lite``. It is removed from the set (and from ``study_validation.TASKS``, where
the name shadowed v2's net); its runs are not stored, and v6 is two nets, 4 cells.

``TASKS[name]`` -> ``validation_models.ValTask`` (same training loop and settings as the first validation set).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from validation_models import ValTask

__all__ = ["TASKS"]


def _bilinear_kernel(in_channels: int, out_channels: int, size: int) -> torch.Tensor:
    """FCN's ``bilinear_kernel``: the bilinear upsampling filter on the channel diagonal, zero elsewhere."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = torch.arange(size, dtype=torch.float32)
    f = 1 - (og - center).abs() / factor
    w = torch.zeros(in_channels, out_channels, size, size)
    for i in range(min(in_channels, out_channels)):
        w[i, i] = f[:, None] * f[None, :]
    return w


class UNetBilinear(nn.Module):
    """conv-ReLU x2 at nf, max pool, conv-ReLU x2 at 2 nf, a bilinear-initialized 4x4 stride-2 transposed conv
    (2 nf -> 2 nf), the level-1 features concatenated, conv-ReLU x2 at nf, a 1x1 to the noise; input minus noise."""

    def __init__(self, in_channels: int = 1, nf: int = 16) -> None:
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv2d(in_channels, nf, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(nf, nf, 3, padding=1), nn.ReLU(inplace=True))
        self.enc2 = nn.Sequential(nn.Conv2d(nf, 2 * nf, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(2 * nf, 2 * nf, 3, padding=1), nn.ReLU(inplace=True))
        self.up = nn.ConvTranspose2d(2 * nf, 2 * nf, 4, stride=2, padding=1, bias=False)
        self.dec = nn.Sequential(nn.Conv2d(3 * nf, nf, 3, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(nf, nf, 3, padding=1), nn.ReLU(inplace=True))
        self.out = nn.Conv2d(nf, in_channels, 1)
        with torch.no_grad():
            self.up.weight.copy_(_bilinear_kernel(2 * nf, 2 * nf, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        d = self.dec(torch.cat([self.up(e2), e1], dim=1))
        return x - self.out(d)


class REDNetLite(nn.Module):
    """RED10: conv1..conv5 (ReLU), deconv1..deconv5 (ReLU); the features of conv 2 and 4 added back before the
    ReLU of the mirrored deconvs, the input added before the last ReLU (the port's ``RED_Net_10``)."""

    def __init__(self, in_channels: int = 1, nf: int = 16, layers: int = 5) -> None:
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(in_channels, nf, 3, padding=1)]
                                   + [nn.Conv2d(nf, nf, 3, padding=1) for _ in range(layers - 1)])
        self.deconvs = nn.ModuleList([nn.ConvTranspose2d(nf, nf, 3, padding=1) for _ in range(layers - 1)]
                                     + [nn.ConvTranspose2d(nf, in_channels, 3, padding=1)])
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        feats = []
        h = x
        for i, conv in enumerate(self.convs):
            h = self.relu(conv(h))
            if (i + 1) % 2 == 0 and len(feats) < len(self.convs) // 2:
                feats.append(h)
        for i, deconv in enumerate(self.deconvs[:-1]):
            h = deconv(h)
            if (i + 1 + len(self.convs)) % 2 == 0 and feats:
                h = h + feats.pop()
            h = self.relu(h)
        return self.relu(self.deconvs[-1](h) + residual)


TASKS: dict[str, ValTask] = {t.name: t for t in (
    ValTask("unet-bilinear", "denoise-s25", lambda c: UNetBilinear(c)),
    ValTask("rednet-lite", "denoise-s25", lambda c: REDNetLite(c)),
)}
