"""The real-world corpus: architectures the field uses, built small enough for one CPU core.

Every builder constructs the architecture from its own package (``spandrel`` for SR/restoration nets,
``torchvision`` and ``timm`` for classifiers) with small widths, depths and window sizes through the constructor's
own arguments. Nothing is downloaded: no pretrained weights, ever. SR/denoise nets get patches of the images that
ship with scikit-image (:mod:`initwise.bench.data`), classifiers small random images; all in train mode except
the ``*_eval`` entries (a torchvision ResNet-18 and spandrel's SPAN, whose eval forward re-parameterizes).

The imports of spandrel/timm/torchvision happen inside the builders, so this module imports without them.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["Entry", "REGISTRY", "by_name", "image_patches"]


@dataclass(frozen=True)
class Entry:
    """One corpus model: ``build()`` returns it (constructor init, train mode), ``example()`` its input batch."""

    name: str
    package: str  # "spandrel" | "torchvision" | "timm": the test skips when it is not importable
    build: Callable[[], nn.Module] = field(repr=False)
    example: Callable[[], torch.Tensor] = field(repr=False)
    kind: str = "image"  # "image" (SR/restoration: real patches) | "classifier"
    note: str = ""
    # DAT, RGT and CRAFT are built at embed_dim 24 on purpose: their DynamicPosBias then has an nn.Linear(2, 0)
    # (embed_dim // 32 channels), a zero-element layer initwise must keep ("empty: nothing to draw")


@functools.lru_cache(maxsize=None)
def _patch_source(channels: int) -> torch.Tensor:
    from initwise.bench.data import load_image

    return torch.stack([load_image(n, channels)[:, :256, :256] for n in ("astronaut", "coffee", "chelsea",
                                                                           "rocket")])


def image_patches(n: int = 4, size: int = 32, channels: int = 3, sigma: float = 0.0, seed: int = 0) -> torch.Tensor:
    """``n`` real image patches ``(n, channels, size, size)`` on [0, 1] from scikit-image's bundled photos (a fixed
    seed picks the crops); ``sigma`` > 0 adds Gaussian noise ``sigma / 255`` (the denoising protocol)."""
    src = _patch_source(channels)
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        y, x = (int(v) for v in torch.randint(0, src.shape[-1] - size + 1, (2,), generator=g))
        out.append(src[i % len(src), :, y:y + size, x:x + size])
    batch = torch.stack(out).contiguous()
    if sigma:
        batch = batch + sigma / 255.0 * torch.randn(batch.shape, generator=g)
    return batch


def _sp(module: str, cls: str) -> Any:
    return getattr(importlib.import_module(f"spandrel.architectures.{module}"), cls)


def _spandrel(name: str, module: str, cls: str, kwargs: dict[str, Any], *, size: int = 32, n: int = 4,
              channels: int = 3, sigma: float = 0.0, note: str = "", train: bool = True) -> Entry:
    def build() -> nn.Module:
        return _sp(module, cls)(**kwargs).train(train)

    return Entry(name, "spandrel", build, lambda: image_patches(n, size, channels, sigma), "image", note)


def _tv(name: str, make: Callable[[Any], nn.Module], *, size: int = 48, n: int = 2, note: str = "",
        train: bool = True) -> Entry:
    def build() -> nn.Module:
        import torchvision

        return make(torchvision.models).train(train)

    return Entry(name, "torchvision", build, lambda: _images(n, size), "classifier", note)


def _timm(name: str, arch: str, *, size: int = 48, n: int = 2, note: str = "", **kwargs: Any) -> Entry:
    def build() -> nn.Module:
        import timm

        return timm.create_model(arch, pretrained=False, num_classes=10, **kwargs).train()

    return Entry(name, "timm", build, lambda: _images(n, size), "classifier", note)


def _images(n: int, size: int) -> torch.Tensor:
    """Classifier input: real photo patches, normalized per channel as ImageNet pipelines do."""
    x = image_patches(n, size)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


def _vgg11(tv: Any) -> nn.Module:
    m = tv.vgg11(num_classes=10)
    m.avgpool = nn.AdaptiveAvgPool2d(1)
    m.classifier = nn.Sequential(nn.Linear(512, 64), nn.ReLU(True), nn.Dropout(), nn.Linear(64, 10))
    return m


def _convnext(tv: Any) -> nn.Module:
    from torchvision.models.convnext import CNBlockConfig

    return tv.ConvNeXt([CNBlockConfig(24, 48, 2), CNBlockConfig(48, 96, 2), CNBlockConfig(96, None, 2)],
                       stochastic_depth_prob=0.1, num_classes=10)


def _resnet18_finetune(tv: Any) -> nn.Module:
    """The fine-tuning setup: a ResNet-18 whose stem and first two stages are frozen (``requires_grad=False``)."""
    m = tv.resnet18(num_classes=10)
    for part in (m.conv1, m.bn1, m.layer1, m.layer2):
        part.requires_grad_(False)
    return m


_SWIN_IR = dict(img_size=16, embed_dim=24, depths=[2, 2], num_heads=[2, 2], window_size=4, mlp_ratio=2.0)

REGISTRY: list[Entry] = [
    # ---- spandrel: SR and restoration architectures (constructor arguments shrink them) ----
    _spandrel("ESRGAN", "ESRGAN.__arch.RRDB", "RRDBNet", dict(num_filters=16, num_blocks=2, scale=2)),
    _spandrel("RealESRGAN-Compact", "Compact.__arch.SRVGG", "SRVGGNetCompact",
              dict(num_feat=16, num_conv=4, upscale=2)),
    _spandrel("SwinIR", "SwinIR.__arch.SwinIR", "SwinIR", dict(_SWIN_IR, upscale=2, upsampler="pixelshuffle"),
              size=16),
    _spandrel("Swin2SR", "Swin2SR.__arch.Swin2SR", "Swin2SR", dict(_SWIN_IR, upscale=2, upsampler="pixelshuffle"),
              size=16),
    _spandrel("HAT", "HAT.__arch.HAT", "HAT", dict(img_size=16, embed_dim=24, depths=(2,), num_heads=(2,),
                                                   window_size=4, compress_ratio=3, squeeze_factor=6,
                                                   mlp_ratio=2.0, upscale=2, num_feat=16), size=16),
    _spandrel("DAT", "DAT.__arch.DAT", "DAT", dict(img_size=16, embed_dim=24, split_size=[2, 4], depth=[2],
                                                   num_heads=[2], expansion_factor=2.0, upscale=2), size=16),
    _spandrel("ATD", "ATD.__arch.atd_arch", "ATD", dict(img_size=16, embed_dim=24, depths=(2,), num_heads=(2,),
                                                        window_size=4, category_size=32, num_tokens=8,
                                                        upscale=2, upsampler="pixelshuffle"), size=16),
    _spandrel("GRL", "GRL.__arch.grl", "GRL", dict(img_size=16, embed_dim=16, depths=[1], num_heads_window=[1],
                                                   num_heads_stripe=[1], window_size=4, stripe_size=[4, 4],
                                                   mlp_ratio=2.0, upscale=2, upsampler="pixelshuffle"), size=16),
    _spandrel("SPAN", "SPAN.__arch.span", "SPAN", dict(num_in_ch=3, num_out_ch=3, feature_channels=16, upscale=2)),
    _spandrel("SPAN_eval", "SPAN.__arch.span", "SPAN", dict(num_in_ch=3, num_out_ch=3, feature_channels=16,
                                                            upscale=2), train=False,
              note="eval mode: every Conv3XC re-parameterizes its three convs into eval_conv inside the forward"),
    _spandrel("SAFMN", "SAFMN.__arch.safmn", "SAFMN", dict(dim=16, n_blocks=2, upscaling_factor=2)),
    _spandrel("OmniSR", "OmniSR.__arch.OmniSR", "OmniSR", dict(num_feat=16, window_size=4, up_scale=2), size=16),
    _spandrel("PLKSR", "PLKSR.__arch.PLKSR", "PLKSR", dict(dim=16, n_blocks=2, upscaling_factor=2, kernel_size=7)),
    _spandrel("RealPLKSR", "PLKSR.__arch.RealPLKSR", "RealPLKSR",
              dict(dim=16, n_blocks=2, upscaling_factor=2, kernel_size=7)),
    _spandrel("RCAN", "RCAN.__arch.rcan_arch", "RCAN", dict(scale=2, n_resgroups=2, n_resblocks=2, n_feats=16,
                                                            reduction=4)),
    _spandrel("NAFNet", "NAFNet.__arch.NAFNet_arch", "NAFNet", dict(width=8, middle_blk_num=1, enc_blk_nums=[1, 1],
                                                                    dec_blk_nums=[1, 1]), sigma=25.0),
    _spandrel("SCUNet", "SCUNet.__arch.SCUNet", "SCUNet", dict(config=[1] * 7, dim=64, input_resolution=64),
              size=64, n=2, sigma=25.0),
    _spandrel("DRUNet", "DRUNet.__arch.network_unet", "DRUNet", dict(in_nc=1, out_nc=1, nc=[8, 16, 32, 64], nb=1),
              channels=1, sigma=25.0),
    _spandrel("DnCNN", "DnCNN.__arch.network_dncnn", "DnCNN", dict(nc=16, nb=6), channels=1, sigma=25.0),
    _spandrel("FBCNN", "FBCNN.__arch.FBCNN", "FBCNN", dict(nc=[8, 16, 32, 512], nb=1),
              note="its QF head needs 512 channels at the bottom"),
    _spandrel("Uformer", "Uformer.__arch.Uformer", "Uformer", dict(img_size=32, embed_dim=8, depths=[1] * 9,
                                                                   num_heads=[1, 1, 2, 2, 4, 2, 2, 1, 1],
                                                                   win_size=4, mlp_ratio=2.0), sigma=25.0),
    _spandrel("RealCUGAN", "RealCUGAN.__arch.upcunet_v3", "UpCunet2x", {}, size=48, n=2),
    _spandrel("CRAFT", "CRAFT.__arch.CRAFT", "CRAFT", dict(window_size=8, embed_dim=24, depths=[1], num_heads=[2],
                                                           split_size_0=4, split_size_1=8, upscale=2), size=16),
    _spandrel("DCTLSA", "DCTLSA.__arch.dctlsa", "DCTLSA", dict(nf=20, num_modules=6, upscale=2, num_head=2),
              size=24, n=2),
    _spandrel("DITN", "DITN.__arch.DITN_Real", "DITN_Real", dict(dim=16, ITL_blocks=1, SAL_blocks=1, patch_size=8,
                                                                 upscale=2)),
    _spandrel("DRCT", "DRCT.__arch.drct_arch", "DRCT", dict(img_size=16, embed_dim=24, depths=(1,), num_heads=(2,),
                                                            window_size=4, mlp_ratio=2.0, gc=8, upscale=2,
                                                            upsampler="pixelshuffle"), size=16),
    _spandrel("FFTformer", "FFTformer.__arch.fftformer_arch", "FFTformer",
              dict(dim=8, num_blocks=[1, 1, 1], num_refinement_blocks=1, ffn_expansion_factor=2), sigma=25.0),
    _spandrel("KBNet_s", "KBNet.__arch.kbnet_s", "KBNet_s", dict(width=8, middle_blk_num=1, enc_blk_nums=[1, 1],
                                                                 dec_blk_nums=[1, 1]), sigma=25.0),
    _spandrel("MoSR", "MoSR.__arch.mosr_arch", "MoSR", dict(upscale=2, n_block=2, dim=16)),
    _spandrel("RGT", "RGT.__arch.rgt", "RGT", dict(img_size=16, embed_dim=24, depth=[1], num_heads=[2],
                                                   mlp_ratio=2.0, upscale=2, split_size=[4, 4]), size=16),
    _spandrel("RetinexFormer", "RetinexFormer.__arch.retinexformer_arch", "RetinexFormer",
              dict(n_feat=8, stage=1, num_blocks=[1, 1, 1])),
    _spandrel("SeemoRe", "SeemoRe.__arch.seemore_arch", "SeemoRe", dict(scale=2, num_experts=2, num_layers=2,
                                                                       embedding_dim=16)),
    _spandrel("SwiftSRGAN", "SwiftSRGAN.__arch.SwiftSRGAN", "Generator",
              dict(num_channels=16, num_blocks=2, upscale_factor=2)),
    _spandrel("MixDehazeNet", "MixDehazeNet.__arch.MixDehazeNet", "MixDehazeNet",
              dict(embed_dims=[8, 16, 32, 16, 8], depths=[1, 1, 1, 1, 1]), size=64, n=2),
    # ---- torchvision classifiers ----
    _tv("tv_resnet18", lambda tv: tv.resnet18(num_classes=10)),
    _tv("tv_resnet18_eval", lambda tv: tv.resnet18(num_classes=10), train=False,
        note="eval mode: batch norms use their running statistics"),
    _tv("tv_resnet18_finetune", _resnet18_finetune, note="stem, layer1, layer2 frozen"),
    _tv("tv_resnet50", lambda tv: tv.resnet50(num_classes=10)),
    _tv("tv_mobilenet_v3_small", lambda tv: tv.mobilenet_v3_small(num_classes=10)),
    _tv("tv_efficientnet_b0", lambda tv: tv.efficientnet_b0(num_classes=10)),
    _tv("tv_regnet_y_400mf", lambda tv: tv.regnet_y_400mf(num_classes=10)),
    _tv("tv_convnext", _convnext, note="ConvNeXt blocks 24/48/96 x2"),
    _tv("tv_swin", lambda tv: tv.SwinTransformer([4, 4], 24, [2, 2], [2, 4], [4, 4], num_classes=10),
        size=32, note="swin_t's SwinTransformer, embed 24, depths 2/2"),
    _tv("tv_vit", lambda tv: tv.VisionTransformer(32, 8, 2, 2, 32, 64, num_classes=10), size=32,
        note="vit_b_16's VisionTransformer, 2 layers, hidden 32"),
    _tv("tv_densenet", lambda tv: tv.DenseNet(12, (2, 2, 2), 24, num_classes=10), size=32,
        note="DenseNet growth 12, blocks 2/2/2"),
    _tv("tv_vgg11", _vgg11, size=32, note="vgg11 features, classifier 512-64-10"),
    _tv("tv_shufflenet_v2_x0_5", lambda tv: tv.shufflenet_v2_x0_5(num_classes=10)),
    _tv("tv_mnasnet0_5", lambda tv: tv.mnasnet0_5(num_classes=10)),
    # ---- timm classifiers ----
    _timm("timm_efficientnet_b0", "efficientnet_b0"),
    _timm("timm_nf_resnet26", "nf_resnet26"),
    _timm("timm_fastvit_t8", "fastvit_t8"),
    _timm("timm_convnextv2_atto", "convnextv2_atto"),
    _timm("timm_resnet10t", "resnet10t"),
    _timm("timm_vit_tiny", "vit_tiny_patch16_224", img_size=32, depth=4, size=32, note="depth 4, 32 px"),
    _timm("timm_mobilevit_xxs", "mobilevit_xxs"),
    _timm("timm_regnetx_002", "regnetx_002"),
    _timm("timm_edgenext_xx_small", "edgenext_xx_small"),
    _timm("timm_mobilenetv3_small_050", "mobilenetv3_small_050"),
    _timm("timm_nf_regnet_b0", "nf_regnet_b0"),
    _timm("timm_poolformerv2_s12", "poolformerv2_s12", size=32),
]


def by_name(name: str) -> Entry:
    for e in REGISTRY:
        if e.name == name:
            return e
    raise KeyError(f"no corpus model {name!r}; models: {', '.join(e.name for e in REGISTRY)}")
