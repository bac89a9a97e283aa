"""Registry of the reference models: name -> builder, and what each model expects and predicts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from ._common import check_scale
from ._dncnn import dncnn
from ._edsr import edsr
from ._espcn import espcn
from ._fsrcnn import fsrcnn
from ._nafnet import nafnet
from ._rcan import rcan
from ._srcnn import srcnn
from ._vdsr import vdsr

__all__ = ["MODELS", "ModelInfo", "build", "info", "list_models"]


@dataclass(frozen=True)
class ModelInfo:
    """What a zoo model is for and how to feed it.

    Attributes:
        name: registry name.
        task: ``"sr"`` (super-resolution) or ``"denoise"``.
        input: ``"lr"`` (low-resolution image, the model upscales), ``"upsampled"`` (bicubic-upscaled LR image,
            same size in and out) or ``"noisy"`` (noisy image, same size).
        predicts: what the last layer produces: ``"image"``, ``"residual"`` (added to the input inside the model)
            or ``"noise"`` (subtracted from the input inside the model). The model always returns an image.
        in_channels: default channels of the builder (1 where the paper works on Y, else 3).
        scales: supported SR scales (``()`` for denoisers).
        example_shape: a default example input ``(N, C, H, W)`` for tracing, for scale 2.
        paper: short citation.
    """

    name: str
    task: Literal["sr", "denoise"]
    input: Literal["lr", "upsampled", "noisy"]
    predicts: Literal["image", "residual", "noise"]
    in_channels: int
    scales: tuple[int, ...]
    example_shape: tuple[int, int, int, int]
    paper: str

    @property
    def upsampled_input(self) -> bool:
        """True when the model takes the bicubic-upscaled image (SRCNN, VDSR)."""
        return self.input == "upsampled"


_SR_SCALES = (2, 3, 4)

MODELS: dict[str, Callable[..., nn.Module]] = {
    "srcnn": srcnn,
    "fsrcnn": fsrcnn,
    "espcn": espcn,
    "vdsr": vdsr,
    "edsr": edsr,
    "rcan": rcan,
    "dncnn": dncnn,
    "nafnet": nafnet,
}

_INFO: dict[str, ModelInfo] = {
    i.name: i
    for i in (
        ModelInfo("srcnn", "sr", "upsampled", "image", 1, _SR_SCALES, (1, 1, 48, 48), "Dong et al., TPAMI 2016"),
        ModelInfo("fsrcnn", "sr", "lr", "image", 1, _SR_SCALES, (1, 1, 24, 24), "Dong et al., ECCV 2016"),
        ModelInfo("espcn", "sr", "lr", "image", 1, _SR_SCALES, (1, 1, 24, 24), "Shi et al., CVPR 2016"),
        ModelInfo("vdsr", "sr", "upsampled", "residual", 1, _SR_SCALES, (1, 1, 48, 48), "Kim et al., CVPR 2016"),
        ModelInfo("edsr", "sr", "lr", "image", 3, _SR_SCALES, (1, 3, 24, 24), "Lim et al., CVPRW 2017"),
        ModelInfo("rcan", "sr", "lr", "image", 3, _SR_SCALES, (1, 3, 24, 24), "Zhang et al., ECCV 2018"),
        ModelInfo("dncnn", "denoise", "noisy", "noise", 3, (), (1, 3, 40, 40), "Zhang et al., IEEE TIP 2017"),
        ModelInfo("nafnet", "denoise", "noisy", "residual", 3, (), (1, 3, 40, 40), "Chen et al., ECCV 2022"),
    )
}


def list_models(task: Literal["sr", "denoise"] | None = None) -> list[str]:
    """Registered model names (in registry order), optionally only those for ``task`` (``"sr"`` or ``"denoise"``)."""
    if task is None:
        return list(MODELS)
    if task not in ("sr", "denoise"):
        raise ValueError(f"task must be 'sr', 'denoise' or None, got {task!r}")
    return [n for n in MODELS if _INFO[n].task == task]


def info(name: str) -> ModelInfo:
    """The ``ModelInfo`` of a registered model; ``ValueError`` listing valid names otherwise."""
    if name not in _INFO:
        raise ValueError(f"unknown model {name!r}; valid models: {list(MODELS)}")
    return _INFO[name]


def build(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model with PyTorch's default initialization.

    ``scale`` is accepted by every SR model: the LR-input models build their upsampler for it, the upsampled-input
    models (SRCNN, VDSR) are scale-agnostic and only check it. Denoisers reject ``scale``.

    Example:
        >>> build("edsr", scale=4, preset="small").tail[0][0].out_channels
        128
    """
    meta = info(name)
    if "scale" in kwargs:
        if meta.task == "denoise":
            raise ValueError(f"model {name!r} is a denoiser and takes no 'scale' (got {kwargs['scale']!r})")
        if meta.input == "upsampled":
            check_scale(kwargs.pop("scale"), meta.scales)
    return MODELS[name](**kwargs)
