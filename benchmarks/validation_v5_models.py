"""The advisor's fifth validation set (v5, docs/evidence.md, "Validation v5"): SR / denoising nets never trained
here before (nor in the design set, the zoo's study or validation sets one to four), written the way their papers'
public code writes them, shrunk to 16 features (Restormer-lite: 8) so that 2 shared CPU cores can train every candidate 5 times.

- LapSRN-lite (Lai et al. 2017, one x2 level as in the public PyTorch port): a feature branch of LeakyReLU(0.2)
  convs and a transposed-conv upsampler predicts a residual, an image branch upsamples the LR input with a
  transposed conv; the official init (He normal with fan_out, the transposed convs set to bilinear kernels).
- DRRN-lite (Tai et al. 2017): a bicubic-upsampled input, one recursive block of 6 residual units that **share
  their two convs** (pre-activation ReLU -> conv), the input added back; the official init (He normal, fan_out).
- Restormer-lite (Zamir et al. 2022): a two-level transformer U-Net, multi-Dconv transposed attention over
  channels (with a learned temperature) and the gated-Dconv feed-forward network (GELU gate), bias-free LayerNorm-
  style "WithBias" norms over channels, the noisy input added to the output; PyTorch's default init, as the
  official code has no init of its own.

Protocol: these nets were written and every candidate of ``initwise.generate_candidates`` was queued on them
before any variant of the decision rule was studied on the 38 seen cells (the design set and validation sets one to
four); nobody reads their results before the rule is frozen by a commit (its hash is in docs/evidence.md).

``TASKS[name]`` -> ``validation_models.ValTask`` (same training loop and settings as the first validation set).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from validation_models import ValTask

__all__ = ["TASKS"]


def _bilinear_kernel(size: int) -> torch.Tensor:
    """The bilinear upsampling kernel the LapSRN port writes into its transposed convs (``get_upsample_filter``)."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = torch.arange(size, dtype=torch.float32)
    f = 1 - (og - center).abs() / factor
    return f[:, None] * f[None, :]


class LapSRNLite(nn.Module):
    """LapSRN, one x2 level: conv_input + LeakyReLU(0.2), ``depth`` 3x3 conv + LeakyReLU(0.2), a 4x4 stride-2
    transposed conv + LeakyReLU(0.2), a 3x3 conv to the residual image; the LR image upsampled by a 4x4 stride-2
    transposed conv, plus the residual."""

    def __init__(self, in_channels: int = 1, nf: int = 16, depth: int = 6) -> None:
        super().__init__()
        self.conv_input = nn.Conv2d(in_channels, nf, 3, padding=1, bias=False)
        self.relu = nn.LeakyReLU(0.2, inplace=True)
        body: list[nn.Module] = []
        for _ in range(depth):
            body += [nn.Conv2d(nf, nf, 3, padding=1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
        body += [nn.ConvTranspose2d(nf, nf, 4, stride=2, padding=1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
        self.convt_F = nn.Sequential(*body)
        self.convt_R = nn.Conv2d(nf, in_channels, 3, padding=1, bias=False)
        self.convt_I = nn.ConvTranspose2d(in_channels, in_channels, 4, stride=2, padding=1, bias=False)
        for m in self.modules():  # the port's init, verbatim in effect
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / n))
            elif isinstance(m, nn.ConvTranspose2d):
                c1, c2, h, _ = m.weight.shape
                m.weight.data.copy_(_bilinear_kernel(h).expand(c1, c2, h, h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.convt_F(self.relu(self.conv_input(x)))
        return self.convt_I(x) + self.convt_R(f)


class DRRNLite(nn.Module):
    """DRRN, B1U6: an input conv, then 6 residual units that reuse the same two 3x3 convs (ReLU -> conv -> ReLU
    -> conv, plus the recursive block's input), a pre-activated output conv, plus the (bicubic-upsampled) input."""

    def __init__(self, in_channels: int = 1, nf: int = 16, units: int = 6) -> None:
        super().__init__()
        self.units = units
        self.input = nn.Conv2d(in_channels, nf, 3, padding=1, bias=False)
        self.conv1 = nn.Conv2d(nf, nf, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(nf, nf, 3, padding=1, bias=False)
        self.output = nn.Conv2d(nf, in_channels, 3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inputs = self.input(self.relu(x))
        out = inputs
        for _ in range(self.units):
            out = self.conv2(self.relu(self.conv1(self.relu(out))))
            out = out + inputs
        return self.output(self.relu(out)) + x


class WithBiasLayerNorm(nn.Module):
    """Restormer's LayerNorm over the channels of each position (written for (B, HW, C) tokens)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(-1, keepdim=True)
        sigma = x.var(-1, keepdim=True, unbiased=False)
        return (x - mu) / torch.sqrt(sigma + 1e-5) * self.weight + self.bias


class LayerNorm(nn.Module):
    """The (B, C, H, W) wrapper: to tokens, normalize, back (``to_3d``/``to_4d`` in the official code)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = WithBiasLayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.body(x.flatten(2).transpose(1, 2))
        return y.transpose(1, 2).reshape(b, c, h, w)


class FeedForward(nn.Module):
    """GDFN: 1x1 to 2 x hidden, a depthwise 3x3, GELU(x1) * x2, 1x1 back."""

    def __init__(self, dim: int, ffn_expansion_factor: float = 2.66) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=False)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=False)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class Attention(nn.Module):
    """MDTA: 1x1 qkv, a depthwise 3x3, attention across channels per head (q, k L2-normalized over positions,
    times a learned temperature), softmax, the values mixed, a 1x1 projection."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=False)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=False)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        q = F.normalize(q.reshape(b, self.num_heads, c // self.num_heads, h * w), dim=-1)
        k = F.normalize(k.reshape(b, self.num_heads, c // self.num_heads, h * w), dim=-1)
        v = v.reshape(b, self.num_heads, c // self.num_heads, h * w)
        attn = ((q @ k.transpose(-2, -1)) * self.temperature).softmax(dim=-1)
        return self.project_out((attn @ v).reshape(b, c, h, w))


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm1, self.attn = LayerNorm(dim), Attention(dim, num_heads)
        self.norm2, self.ffn = LayerNorm(dim), FeedForward(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class RestormerLite(nn.Module):
    """Restormer with two levels (shrunk to 8 features and one block per level, the cost of attention on 2 CPU
    cores): a 3x3 patch embedding, a block at ``dim`` (1 head), a downsample (3x3 conv to dim/2 + PixelUnshuffle),
    a block at 2 dim (2 heads), an upsample (3x3 conv to 4 dim + PixelShuffle), the level-1 features concatenated,
    a decoder block and a refinement block at 2 dim, a 3x3 output conv, plus the noisy input."""

    def __init__(self, in_channels: int = 1, dim: int = 8, blocks: int = 1) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(in_channels, dim, 3, padding=1, bias=False)
        self.encoder_level1 = nn.Sequential(*[TransformerBlock(dim, 1) for _ in range(blocks)])
        self.down1_2 = nn.Sequential(nn.Conv2d(dim, dim // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))
        self.latent = nn.Sequential(*[TransformerBlock(2 * dim, 2) for _ in range(blocks)])
        self.up2_1 = nn.Sequential(nn.Conv2d(2 * dim, 4 * dim, 3, padding=1, bias=False), nn.PixelShuffle(2))
        self.decoder_level1 = nn.Sequential(*[TransformerBlock(2 * dim, 1) for _ in range(blocks)])
        self.refinement = nn.Sequential(TransformerBlock(2 * dim, 1))
        self.output = nn.Conv2d(2 * dim, in_channels, 3, padding=1, bias=False)

    def forward(self, inp_img: torch.Tensor) -> torch.Tensor:
        enc1 = self.encoder_level1(self.patch_embed(inp_img))
        latent = self.latent(self.down1_2(enc1))
        dec1 = self.decoder_level1(torch.cat([self.up2_1(latent), enc1], dim=1))
        return self.output(self.refinement(dec1)) + inp_img


TASKS: dict[str, ValTask] = {t.name: t for t in (
    ValTask("lapsrn-lite", "sr-x2", lambda c: LapSRNLite(c)),
    ValTask("drrn-lite", "sr-x2", lambda c: DRRNLite(c), upsample=True),
    ValTask("restormer-lite", "denoise-s25", lambda c: RestormerLite(c)),
)}
