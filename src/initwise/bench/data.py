"""Benchmark data: images shipped with scikit-image and scikit-learn, degradations, and task definitions.

Nothing is downloaded: only images bundled in the ``scikit-image`` and ``scikit-learn`` wheels are used (those
of ``skimage.data`` that need ``pooch`` are not). Images are float32 tensors on ``[0, 1]``, ``(C, H, W)``.

Split (fixed, RGB natural images only):

- train: ``rocket``, ``immunohistochemistry``, ``hubble_deep_field``, ``retina``, ``stereo_motorcycle`` (left
  view), ``flower`` (scikit-learn);
- test: ``astronaut``, ``chelsea``, ``coffee``, ``china`` (scikit-learn).

Grayscale images (``GRAY_IMAGES``) load as three equal channels through ``load_image`` but are excluded from the
split, whose tasks are about colour images; ``chelsea`` and ``cat`` are the same photo (only ``chelsea`` is used).
With ``channels=1`` a task uses the BT.601 luma of the same images, ``Y / 255`` on ``[16/255, 235/255]``, as the
SRCNN/VDSR papers do.

Degradations:

- SR: bicubic downsampling by ``torch.nn.functional.interpolate(mode="bicubic", antialias=True,
  align_corners=False)``: the Keys cubic with ``a = -0.5`` widened by the scale (antialiasing), weights renormalised
  at the borders; identical to PIL's ``Image.resize(BICUBIC)`` (checked to 1e-6) and close to Matlab's
  ``imresize`` (which pads symmetrically). The same kernel upsamples for the bicubic baseline and for models that
  take the upscaled image (``antialias=True`` selects ``a = -0.5``; without it torch uses ``a = -0.75``). Results
  are clamped to ``[0, 1]``, as storing the LR image as an image would.
- denoising: additive white Gaussian noise ``sigma / 255`` (``sigma`` on the 0..255 scale), not clipped, as in the
  DnCNN protocol. Test noise is fixed: image ``i`` of the test split uses ``torch.Generator().manual_seed(
  TEST_NOISE_SEED + i)``, drawn for the whole image and then cropped, so a crop sees the same noise.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F

from .metrics import psnr, psnr_y

__all__ = [
    "GRAY_IMAGES", "TASK_NAMES", "TEST_IMAGES", "TEST_NOISE_SEED", "TRAIN_IMAGES", "Task", "TestSet",
    "add_gaussian_noise", "bicubic_downsample", "bicubic_upsample", "get_task", "load_image",
]

TRAIN_IMAGES: tuple[str, ...] = (
    "rocket", "immunohistochemistry", "hubble_deep_field", "retina", "stereo_motorcycle", "flower",
)
TEST_IMAGES: tuple[str, ...] = ("astronaut", "chelsea", "coffee", "china")
GRAY_IMAGES: tuple[str, ...] = ("camera", "moon", "brick", "grass", "gravel", "coins", "clock", "page", "text")
_SKLEARN_IMAGES = ("china", "flower")
TEST_NOISE_SEED = 0
TASK_NAMES: tuple[str, ...] = ("sr-x2", "sr-x3", "sr-x4", "denoise-s15", "denoise-s25", "denoise-s50")


def _sklearn_image(name: str) -> Any:
    """scikit-learn's sample JPEG read straight from the installed package (importing sklearn.datasets costs ~1 s);
    ``load_sample_image`` when the file is not where scikit-learn keeps it."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("sklearn")
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    path = next((Path(r) / "datasets" / "images" / f"{name}.jpg" for r in roots
                 if (Path(r) / "datasets" / "images" / f"{name}.jpg").is_file()), None)
    if path is not None:
        import numpy as np
        from PIL import Image

        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    from sklearn.datasets import load_sample_image

    return load_sample_image(f"{name}.jpg")


@functools.lru_cache(maxsize=None)
def _load_rgb(name: str) -> torch.Tensor:
    import numpy as np

    if name in _SKLEARN_IMAGES:
        arr = _sklearn_image(name)
    elif name in TRAIN_IMAGES + TEST_IMAGES + GRAY_IMAGES:
        import skimage.data

        arr = getattr(skimage.data, name)()
        if name == "stereo_motorcycle":
            arr = arr[0]
    else:
        raise ValueError(f"unknown image {name!r}; valid images: {list(TRAIN_IMAGES + TEST_IMAGES + GRAY_IMAGES)}")
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        raise ValueError(f"image {name!r} is {arr.dtype}, expected uint8")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    t = torch.from_numpy(np.array(arr[:, :, :3], copy=True)).permute(2, 0, 1).float() / 255.0
    return t.contiguous()


def load_image(name: str, channels: int = 3) -> torch.Tensor:
    """A bundled image as a float32 ``(channels, H, W)`` tensor on ``[0, 1]`` (cached; do not modify in place).

    Args:
        name: one of ``TRAIN_IMAGES``, ``TEST_IMAGES`` or ``GRAY_IMAGES``.
        channels: 3 (RGB; grayscale images repeated) or 1 (BT.601 luma / 255, on ``[16/255, 235/255]``).
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    rgb = _load_rgb(name)
    if channels == 3:
        return rgb
    r, g, b = rgb
    return ((16.0 + 65.481 * r + 128.553 * g + 24.966 * b) / 255.0).unsqueeze(0)


def _check_scale(scale: int) -> None:
    if scale not in (2, 3, 4):
        raise ValueError(f"scale must be one of [2, 3, 4], got {scale!r}")


def bicubic_downsample(x: torch.Tensor, scale: int, *, clamp: bool = True) -> torch.Tensor:
    """Antialiased bicubic downsampling (PIL/Matlab style, see the module docstring) of ``(N, C, H, W)``.

    ``H`` and ``W`` must be divisible by ``scale``; the result is ``(N, C, H / scale, W / scale)``.
    """
    _check_scale(scale)
    h, w = x.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"image size {h}x{w} is not divisible by scale={scale}")
    y = F.interpolate(x, size=(h // scale, w // scale), mode="bicubic", antialias=True, align_corners=False)
    return y.clamp(0.0, 1.0) if clamp else y


def bicubic_upsample(x: torch.Tensor, scale: int, *, clamp: bool = True) -> torch.Tensor:
    """Bicubic (``a = -0.5``) upsampling of ``(N, C, h, w)`` to ``(N, C, scale h, scale w)``."""
    _check_scale(scale)
    h, w = x.shape[-2:]
    y = F.interpolate(x, size=(h * scale, w * scale), mode="bicubic", antialias=True, align_corners=False)
    return y.clamp(0.0, 1.0) if clamp else y


def add_gaussian_noise(x: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``x + (sigma / 255) n``, ``n ~ N(0, 1)`` i.i.d., not clipped; ``sigma`` on the 0..255 scale."""
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma!r}")
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return x + (sigma / 255.0) * noise


@dataclass(frozen=True)
class TestSet:
    """Evaluation images of a task: ``inputs[i]`` is what the model gets, ``targets[i]`` the clean image.

    Each tensor is ``(1, C, H, W)`` (sizes differ between images). ``baselines[i]`` is the trivial restoration
    (bicubic upscaling, or the noisy image itself) and ``baseline_psnr`` its mean PSNR under the task's metric
    (``Task.score`` clamps to ``[0, 1]``, so the noisy baseline is the clipped noisy image: at sigma 15 about
    25.0 dB on the full test images rather than the unclipped 24.6 dB).
    """

    names: tuple[str, ...]
    inputs: tuple[torch.Tensor, ...]
    targets: tuple[torch.Tensor, ...]
    baselines: tuple[torch.Tensor, ...]
    baseline_psnr: float = field(default=float("nan"))

    __test__ = False  # not a pytest test class, despite the name


@dataclass(frozen=True)
class Task:
    """A restoration task: SR by ``scale`` (``sigma = 0``) or Gaussian denoising at ``sigma`` (``scale = 1``).

    Metric (``score``): SR, PSNR on the BT.601 luma with a border of ``scale`` pixels removed (EDSR/RCAN);
    denoising, PSNR over the channels without crop.

    Example:
        >>> task = get_task("sr-x2")
        >>> x, y = task.train_batch(2, 48, torch.Generator().manual_seed(0))
        >>> tuple(x.shape), tuple(y.shape)
        ((2, 3, 24, 24), (2, 3, 48, 48))
    """

    name: str
    kind: Literal["sr", "denoise"]
    scale: int = 1
    sigma: float = 0.0
    channels: int = 3

    def degrade(self, hr: torch.Tensor, generator: torch.Generator | None = None, *,
                upsample: bool = False) -> torch.Tensor:
        """The model input for clean ``(N, C, H, W)`` images: LR (or its bicubic upscaling), or the noisy image."""
        if self.kind == "sr":
            lr = bicubic_downsample(hr, self.scale)
            return bicubic_upsample(lr, self.scale) if upsample else lr
        return add_gaussian_noise(hr, self.sigma, generator)

    def score(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-image PSNR ``(N,)`` under the task's metric; ``output`` is clamped to ``[0, 1]`` first."""
        output = output.clamp(0.0, 1.0)
        if self.kind == "sr":
            return psnr_y(output, target, crop=self.scale)
        return psnr(output, target)

    def train_batch(self, batch_size: int, patch_size: int, generator: torch.Generator, *,
                    upsample: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Random training patches ``(inputs, targets)`` from ``TRAIN_IMAGES``, reproducible from ``generator``.

        For each sample: an image uniformly, an aligned position uniformly, one of the 8 flips/rotations; SR crops
        the LR image of the whole training image (degraded once, cached) and the matching HR patch; denoising adds
        fresh noise to the clean patch.

        Args:
            batch_size: number of patches.
            patch_size: side of the HR (target) patch, divisible by ``scale``.
            generator: CPU generator driving every random choice.
            upsample: give the bicubic-upscaled LR patch (SRCNN, VDSR) instead of the LR patch.

        Returns:
            ``inputs`` ``(B, C, p / scale, p / scale)`` (or ``p`` if upsampled or denoising) and ``targets``
            ``(B, C, p, p)``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        if patch_size < 1 or patch_size % self.scale:
            raise ValueError(f"patch_size must be a positive multiple of scale={self.scale}, got {patch_size!r}")
        s, lp = self.scale, patch_size // self.scale
        ins, tgts = [], []
        for _ in range(batch_size):
            name = TRAIN_IMAGES[int(torch.randint(len(TRAIN_IMAGES), (1,), generator=generator))]
            hr, src = _train_pair(name, self.channels, s if self.kind == "sr" else 1, upsample)
            h, w = hr.shape[-2] // s, hr.shape[-1] // s
            i = int(torch.randint(h - lp + 1, (1,), generator=generator))
            j = int(torch.randint(w - lp + 1, (1,), generator=generator))
            k = int(torch.randint(8, (1,), generator=generator))
            t = _dihedral(hr[:, i * s:(i + lp) * s, j * s:(j + lp) * s], k)
            f = src.shape[-1] // w  # 1 for LR input, scale for an upsampled input
            ins.append(_dihedral(src[:, i * f:(i + lp) * f, j * f:(j + lp) * f], k))
            tgts.append(t)
        x, y = torch.stack(ins), torch.stack(tgts)
        if self.kind == "denoise":
            x = add_gaussian_noise(y, self.sigma, generator)
        return x, y

    def test_set(self, *, crop: int | None = None, upsample: bool = False) -> TestSet:
        """The ``TEST_IMAGES``, center-cropped to ``crop`` x ``crop`` (``None``: whole) and to a multiple of scale.

        Args:
            crop: HR side of the center crop (smaller images keep their size), for fast evaluation.
            upsample: SR inputs bicubic-upscaled (SRCNN, VDSR).
        """
        if crop is not None and crop < 2 * self.scale + 1:
            raise ValueError(f"crop must be None or > 2 * scale, got {crop!r}")
        ins, tgts, bases = [], [], []
        for idx, name in enumerate(TEST_IMAGES):
            hr = load_image(name, self.channels).unsqueeze(0)
            h, w = hr.shape[-2:]
            ch, cw = (h, w) if crop is None else (min(h, crop), min(w, crop))
            ch, cw = ch - ch % self.scale, cw - cw % self.scale
            top, left = (h - ch) // 2, (w - cw) // 2
            top, left = top - top % self.scale, left - left % self.scale
            target = hr[..., top:top + ch, left:left + cw].contiguous()
            if self.kind == "sr":
                lr = bicubic_downsample(target, self.scale)
                bicubic = bicubic_upsample(lr, self.scale)
                ins.append(bicubic if upsample else lr)
                bases.append(bicubic)
            else:
                full = self.degrade(hr, torch.Generator().manual_seed(TEST_NOISE_SEED + idx))
                noisy = full[..., top:top + ch, left:left + cw].contiguous()
                ins.append(noisy)
                bases.append(noisy)
            tgts.append(target)
        base = torch.cat([self.score(b, t) for b, t in zip(bases, tgts)]).mean().item()
        return TestSet(TEST_IMAGES, tuple(ins), tuple(tgts), tuple(bases), base)


def _dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """One of the 8 flips/rotations of ``(C, H, W)``: ``k % 4`` quarter turns, transposed first if ``k >= 4``."""
    if k >= 4:
        x = x.transpose(-2, -1)
    return torch.rot90(x, k % 4, dims=(-2, -1))


@functools.lru_cache(maxsize=64)
def _train_pair(name: str, channels: int, scale: int, upsample: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """HR image cropped to a multiple of ``scale`` and its model input (LR or upscaled LR; HR itself if scale 1)."""
    hr = load_image(name, channels)
    h, w = hr.shape[-2:]
    hr = hr[:, : h - h % scale, : w - w % scale]
    if scale == 1:
        return hr, hr
    lr = bicubic_downsample(hr.unsqueeze(0), scale)
    src = bicubic_upsample(lr, scale) if upsample else lr
    return hr, src[0]


def get_task(name: str, *, channels: int = 3) -> Task:
    """The ``Task`` called ``name`` (one of ``TASK_NAMES``), on RGB (``channels=3``) or luma (``channels=1``)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    if name in ("sr-x2", "sr-x3", "sr-x4"):
        return Task(name, "sr", scale=int(name[-1]), channels=channels)
    if name in ("denoise-s15", "denoise-s25", "denoise-s50"):
        return Task(name, "denoise", sigma=float(name.rsplit("s", 1)[1]), channels=channels)
    raise ValueError(f"unknown task {name!r}; valid tasks: {list(TASK_NAMES)}")
