"""A zoo of small, structurally faithful models for the tests: ``ZOO[name]() -> (model, example_input)``.

``PLAIN`` lists the models with neither normalization nor residual joins (variance-flatness checks use them).
Every factory is deterministic given the global seed and builds a model that runs in milliseconds on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PLAIN", "ZOO"]


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.LeakyReLU(0.1),
                                 nn.Linear(32, 32), nn.SiLU(), nn.Linear(32, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class VGG(nn.Module):
    """conv-relu x2, max pool, conv-relu x2, global pool, flatten, classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(16, 16, 3, padding=1),
            nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(True),
                                        nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """torchvision-style: stem conv-bn-relu-maxpool, an identity block, a strided block with a 1x1 projection."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = BasicBlock(8, 8, 1)
        self.layer2 = BasicBlock(8, 16, 2)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class EDSRBlock(nn.Module):
    def __init__(self, n: int, res_scale: float) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n, n, 3, padding=1), nn.ReLU(True), nn.Conv2d(n, n, 3, padding=1))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.body(x).mul(self.res_scale)  # official EDSR code
        res += x
        return res


class EDSR(nn.Module):
    """Mean shift (buffer), head, 2 scaled residual blocks + conv with a long skip, conv + PixelShuffle(2), conv."""

    def __init__(self, n: int = 8, res_scale: float = 0.1) -> None:
        super().__init__()
        self.register_buffer("rgb_mean", torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1))
        self.head = nn.Conv2d(3, n, 3, padding=1)
        self.body = nn.Sequential(EDSRBlock(n, res_scale), EDSRBlock(n, res_scale), nn.Conv2d(n, n, 3, padding=1))
        self.tail = nn.Sequential(nn.Conv2d(n, 4 * n, 3, padding=1), nn.PixelShuffle(2), nn.Conv2d(n, 3, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x - self.rgb_mean)
        res = self.body(x)
        res += x
        return self.tail(res) + self.rgb_mean


class DnCNN(nn.Module):
    """conv+relu, (conv+bn+relu) x2, conv -> noise; returns ``x - noise`` (Zhang et al. 2017)."""

    def __init__(self, c: int = 1, n: int = 8) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(c, n, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(2):
            layers += [nn.Conv2d(n, n, 3, padding=1, bias=False), nn.BatchNorm2d(n), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(n, c, 3, padding=1))
        self.dncnn = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = self.dncnn(x)
        return x - noise


class FSRCNN(nn.Module):
    """feature 5x5, shrink 1x1, 2 maps 3x3, expand 1x1 (PReLU each), strided 9x9 deconvolution (Dong et al. 2016)."""

    def __init__(self, d: int = 12, s: int = 4) -> None:
        super().__init__()
        self.feature = nn.Sequential(nn.Conv2d(1, d, 5, padding=2), nn.PReLU(d))
        self.shrink = nn.Sequential(nn.Conv2d(d, s, 1), nn.PReLU(s))
        self.map = nn.Sequential(nn.Conv2d(s, s, 3, padding=1), nn.PReLU(s), nn.Conv2d(s, s, 3, padding=1),
                                 nn.PReLU(s))
        self.expand = nn.Sequential(nn.Conv2d(s, d, 1), nn.PReLU(d))
        self.deconv = nn.ConvTranspose2d(d, 1, 9, stride=2, padding=4, output_padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.deconv(self.expand(self.map(self.shrink(self.feature(x)))))


class ESPCN(nn.Module):
    """conv5 tanh, conv3 tanh, conv3 -> PixelShuffle(3) (Shi et al. 2016)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 5, padding=2)
        self.conv2 = nn.Conv2d(16, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 9, 3, padding=1)
        self.shuffle = nn.PixelShuffle(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.conv1(x))
        x = torch.tanh(self.conv2(x))
        return self.shuffle(self.conv3(x))


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, padding=1),
                         nn.ReLU(inplace=True))


class UNet(nn.Module):
    """Two levels: pooled and strided-conv downsampling, ConvTranspose and interpolate+conv up, cat skips."""

    def __init__(self) -> None:
        super().__init__()
        self.enc1 = _double_conv(3, 8)
        self.enc2 = _double_conv(8, 16)
        self.down2 = nn.Conv2d(16, 16, 3, stride=2, padding=1)
        self.mid = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(inplace=True))
        self.up2 = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.dec2 = _double_conv(32, 16)
        self.up1 = nn.Conv2d(16, 8, 1)
        self.dec1 = _double_conv(16, 8)
        self.out = nn.Conv2d(8, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        m = self.mid(self.down2(e2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], dim=1))
        u1 = self.up1(F.interpolate(d2, scale_factor=2.0, mode="nearest"))
        d1 = self.dec1(torch.cat([u1, e1], dim=1))
        return self.out(d1)


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, r: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(c, c // r, 1)
        self.fc2 = nn.Conv2d(c // r, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))
        return x * s


class InvertedResidual(nn.Module):
    """MobileNetV3 block: 1x1 expand-bn-hardswish, depthwise 3x3-bn-hardswish, SE, 1x1 project-bn, residual."""

    def __init__(self, c: int, e: int) -> None:
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(c, e, 1, bias=False), nn.BatchNorm2d(e), nn.Hardswish())
        self.dw = nn.Sequential(nn.Conv2d(e, e, 3, padding=1, groups=e, bias=False), nn.BatchNorm2d(e), nn.Hardswish())
        self.se = SqueezeExcite(e)
        self.project = nn.Sequential(nn.Conv2d(e, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(self.se(self.dw(self.expand(x))))


class MobileNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8),
                                  nn.Hardswish())
        self.block = InvertedResidual(8, 24)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.stem(x)))


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + attn(ln1(x))``, ``x + fc2(gelu(fc1(ln2(x))))``; then a linear head."""

    def __init__(self, e: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(e)
        self.attn = nn.MultiheadAttention(e, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(e)
        self.fc1 = nn.Linear(e, 4 * e)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(4 * e, e)
        self.drop = nn.Dropout(0.1)
        self.head = nn.Linear(e, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.drop(self.attn(h, h, h, need_weights=False)[0])
        x = x + self.drop(self.fc2(self.act(self.fc1(self.ln2(x)))))
        return self.head(x)


class LSTMModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(6, 12, num_layers=2, batch_first=True)
        self.head = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, (h, c) = self.lstm(x)
        return self.head(out[:, -1])


class ControlFlow(nn.Module):
    """Data-dependent Python control flow: a loop count and a branch chosen from the input's values."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(8, 8)
        self.hidden = nn.Linear(8, 8)
        self.pos = nn.Linear(8, 4)
        self.neg = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.inp(x))
        for _ in range(2 if float(x.mean()) > 0 else 1):  # the reused layer runs twice on this input
            x = torch.tanh(self.hidden(x))
        if x.sum() > -1e9:
            return self.pos(x)
        return self.neg(x)


class Functional(nn.Module):
    """Activations called as functions and methods, some in place, some with positional arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.l1, self.l2, self.l3, self.l4, self.l5, self.l6, self.l7, self.l8 = (nn.Linear(8, 8) for _ in range(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.l1(x), 0.2)
        x = self.l2(x).relu()
        x = torch.sigmoid(self.l3(x))
        x = F.gelu(self.l4(x), approximate="tanh")
        y = self.l5(x)
        y.relu_()
        x = F.hardtanh(self.l6(y), -2.0, 2.0)
        x = F.elu(self.l7(x), 0.5, inplace=True)
        return self.l8(x.view(-1, 2, 4).flatten(1))


class LayerNorm2d(nn.Module):
    """A user norm with its own parameters (NAFNet's), computed op by op."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        return (x - mu) / torch.sqrt(var + 1e-6) * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class NAFBlock(nn.Module):
    """``x + beta * conv(SCA(SimpleGate(dw(conv(LN(x))))))`` with a learnable per-channel ``beta`` (Chen 2022)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm = LayerNorm2d(c)
        self.conv1 = nn.Conv2d(c, 2 * c, 1)
        self.dw = nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=2 * c)
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c, 1))
        self.conv2 = nn.Conv2d(c, c, 1)
        self.beta = nn.Parameter(torch.full((1, c, 1, 1), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.dw(self.conv1(self.norm(x))).chunk(2, dim=1)
        y = a * b
        y = y * self.sca(y)
        return x + self.beta * self.conv2(y)


class NAFNet(nn.Module):
    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.intro = nn.Conv2d(3, c, 3, padding=1)
        self.block = NAFBlock(c)
        self.ending = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ending(self.block(self.intro(x)))


def _img(c: int, s: int) -> torch.Tensor:
    return torch.randn(1, c, s, s)


ZOO: dict[str, Callable[[], tuple[nn.Module, Any]]] = {
    "mlp": lambda: (MLP(), torch.randn(4, 16)),
    "vgg": lambda: (VGG(), _img(3, 16)),
    "resnet": lambda: (ResNet(), torch.randn(2, 3, 32, 32)),
    "edsr": lambda: (EDSR(), _img(3, 12)),
    "dncnn": lambda: (DnCNN(), torch.randn(2, 1, 16, 16)),
    "fsrcnn": lambda: (FSRCNN(), _img(1, 12)),
    "espcn": lambda: (ESPCN(), _img(1, 12)),
    "unet": lambda: (UNet(), _img(3, 16)),
    "mobilenet": lambda: (MobileNet(), torch.randn(2, 3, 16, 16)),
    "transformer": lambda: (TransformerBlock(), torch.randn(2, 7, 16)),
    "lstm": lambda: (LSTMModel(), torch.randn(2, 5, 6)),
    "control_flow": lambda: (ControlFlow(), torch.rand(3, 8)),
    "functional": lambda: (Functional(), torch.randn(3, 8)),
    "nafnet": lambda: (NAFNet(), _img(3, 12)),
}

PLAIN: list[str] = ["mlp", "vgg", "fsrcnn", "espcn", "functional"]
