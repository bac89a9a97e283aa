"""The validation tasks of the advisor (docs/evidence.md, "validation set"): SR / denoising nets written the way
users write them (plain ``nn.Module`` code, not ``initwise.zoo``), some with their authors' own init in the
constructor, the global residual inside the model or outside it (added by the training loop). The decision rule
was never tuned on them.

``TASKS[name]`` -> ``ValTask``: builder (in_channels) -> model, the bench task, whether the training loop adds the
input (``outside``: the model predicts the residual / noise, the loop computes ``y - net(y)`` or ``x + net(x)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TASKS", "ValTask", "Outside"]


class DnCNN17(nn.Module):
    """17-layer DnCNN without BN, LeakyReLU(0.2), KAIR-style orthogonal init with gain 0.2 in the constructor;
    predicts the noise (the training loop subtracts it: residual outside the model)."""

    def __init__(self, in_channels: int = 1, nf: int = 16, depth: int = 17) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, nf, 3, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(nf, nf, 3, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        layers.append(nn.Conv2d(nf, in_channels, 3, padding=1))
        self.model = nn.Sequential(*layers)
        for m in self.modules():  # KAIR utils_model.init_weights(init_type='orthogonal', gain=0.2)
            if isinstance(m, nn.Conv2d):
                nn.init.orthogonal_(m.weight, gain=0.2)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class ResBlock(nn.Module):
    def __init__(self, nf: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(nf, nf, 3, padding=1)
        self.conv2 = nn.Conv2d(nf, nf, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class EDSRDeep(nn.Module):
    """EDSR-baseline style with more blocks (12 x 16 features), res_scale 1, PixelShuffle x2, default init."""

    def __init__(self, in_channels: int = 1, nf: int = 16, blocks: int = 12) -> None:
        super().__init__()
        self.head = nn.Conv2d(in_channels, nf, 3, padding=1)
        self.body = nn.Sequential(*[ResBlock(nf) for _ in range(blocks)], nn.Conv2d(nf, nf, 3, padding=1))
        self.up = nn.Sequential(nn.Conv2d(nf, 4 * nf, 3, padding=1), nn.PixelShuffle(2))
        self.tail = nn.Conv2d(nf, in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        return self.tail(self.up(h + self.body(h)))


class UNetDenoiser(nn.Module):
    """Two-level U-Net (16-32-64), ReLU, ConvTranspose up, concat skips, global residual inside; the user's loop
    ``kaiming_normal_(mode='fan_out', nonlinearity='relu')`` over every conv in the constructor."""

    def __init__(self, in_channels: int = 1, nf: int = 16) -> None:
        super().__init__()

        def block(i: int, o: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(o, o, 3, padding=1), nn.ReLU(inplace=True))

        self.enc1, self.enc2 = block(in_channels, nf), block(nf, 2 * nf)
        self.mid = block(2 * nf, 4 * nf)
        self.up2, self.dec2 = nn.ConvTranspose2d(4 * nf, 2 * nf, 2, stride=2), block(4 * nf, 2 * nf)
        self.up1, self.dec1 = nn.ConvTranspose2d(2 * nf, nf, 2, stride=2), block(2 * nf, nf)
        self.out = nn.Conv2d(nf, in_channels, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        m = self.mid(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return x + self.out(d1)


class SRVGGCompact(nn.Module):
    """Real-ESRGAN's SRVGGNetCompact (8 convs x 16 features, PReLU, PixelShuffle x2, the nearest-upsampled input
    added inside: a global residual), default init as in the official code."""

    def __init__(self, in_channels: int = 1, nf: int = 16, convs: int = 8, scale: int = 2) -> None:
        super().__init__()
        body: list[nn.Module] = [nn.Conv2d(in_channels, nf, 3, padding=1), nn.PReLU(nf)]
        for _ in range(convs):
            body += [nn.Conv2d(nf, nf, 3, padding=1), nn.PReLU(nf)]
        body += [nn.Conv2d(nf, in_channels * scale * scale, 3, padding=1)]
        self.body = nn.Sequential(*body)
        self.upsampler = nn.PixelShuffle(scale)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.upsampler(self.body(x))
        return out + F.interpolate(x, scale_factor=self.scale, mode="nearest")


class RDB(nn.Module):
    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(nf, gc, 3, padding=1)
        self.c2 = nn.Conv2d(nf + gc, gc, 3, padding=1)
        self.c3 = nn.Conv2d(nf + 2 * gc, nf, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.leaky_relu(self.c1(x), 0.2)
        b = F.leaky_relu(self.c2(torch.cat([x, a], 1)), 0.2)
        return x + 0.2 * self.c3(torch.cat([x, a, b], 1))


class RRDBLite(nn.Module):
    """ESRGAN's RRDBNet shrunk (2 RRDB of 3 dense blocks of 3 convs, 16 features, growth 8, x2): residual scaling
    0.2 in the code and ``default_init_weights(scale=0.1)`` (kaiming fan_in x0.1 on every conv) in the constructor."""

    def __init__(self, in_channels: int = 1, nf: int = 16, gc: int = 8, rrdbs: int = 2) -> None:
        super().__init__()
        self.conv_first = nn.Conv2d(in_channels, nf, 3, padding=1)
        self.rrdbs = nn.ModuleList([nn.ModuleList([RDB(nf, gc) for _ in range(3)]) for _ in range(rrdbs)])
        self.conv_body = nn.Conv2d(nf, nf, 3, padding=1)
        self.conv_up = nn.Conv2d(nf, nf, 3, padding=1)
        self.conv_hr = nn.Conv2d(nf, nf, 3, padding=1)
        self.conv_last = nn.Conv2d(nf, in_channels, 3, padding=1)
        for m in self.modules():  # basicsr.archs.arch_util.default_init_weights(scale=0.1)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
                m.weight.data *= 0.1
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv_first(x)
        h = feat
        for rrdb in self.rrdbs:
            r = h
            for rdb in rrdb:
                r = rdb(r)
            h = h + 0.2 * r
        feat = feat + self.conv_body(h)
        feat = F.leaky_relu(self.conv_up(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))


class Outside(nn.Module):
    """What the user's training loop does for a net with the residual outside: ``sign * net(x) + x`` (DnCNN:
    ``y - net(y)``), ``x`` resized to the output when the net upscales. Only ``net`` is initialized."""

    def __init__(self, net: nn.Module, sign: float = 1.0) -> None:
        super().__init__()
        self.net, self.sign = net, sign

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.sign * self.net(x)


@dataclass(frozen=True)
class ValTask:
    name: str
    task: str  # initwise.bench task
    build: Callable[[int], nn.Module]
    outside: float | None = None  # sign of the residual added by the training loop; None: the model returns images
    upsample: bool = False


def smoke(tasks: dict[str, ValTask]) -> None:
    """A shape-only check of a set's nets before they are queued (no training, no PSNR): each net's output shape on
    a 2-sample batch (12 px LR for an SR net that upscales itself, else 24 px) and its parameter count."""
    for t in tasks.values():
        net = t.build(1)
        side = 12 if t.task.startswith("sr") and not t.upsample else 24
        print(t.name, tuple(net(torch.rand(2, 1, side, side)).shape), sum(p.numel() for p in net.parameters()))


TASKS: dict[str, ValTask] = {t.name: t for t in (
    ValTask("dncnn17-lrelu-out", "denoise-s25", lambda c: DnCNN17(c), outside=-1.0),
    ValTask("edsr12", "sr-x2", lambda c: EDSRDeep(c)),
    ValTask("unet-denoise", "denoise-s25", lambda c: UNetDenoiser(c)),
    ValTask("srvgg-compact", "sr-x2", lambda c: SRVGGCompact(c)),
    ValTask("rrdb-lite", "sr-x2", lambda c: RRDBLite(c)),
)}
