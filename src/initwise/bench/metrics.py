"""Image-quality metrics of the SR/denoising literature: PSNR (RGB or BT.601 luma) and SSIM, in torch.

All functions take ``(N, C, H, W)`` images on ``[0, 1]`` (or ``data_range``), compute in float64, and return one
value per image as an ``(N,)`` float64 tensor; average over images yourself (the convention of the SR papers).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["gaussian_window", "psnr", "psnr_y", "rgb_to_y", "ssim"]

# ITU-R BT.601 luma for R, G, B on [0, 1] giving Y on [16, 235] (Matlab rgb2ycbcr; EDSR/RCAN calc_psnr uses the
# same coefficients as 65.738/256, 129.057/256, 25.064/256 on a [0, 255] difference).
_BT601 = (65.481, 128.553, 24.966)


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.dim() != 4 or x.shape != y.shape:
        raise ValueError(f"expected two (N, C, H, W) tensors of the same shape, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")


def _crop(x: torch.Tensor, crop: int) -> torch.Tensor:
    if crop < 0:
        raise ValueError(f"crop must be >= 0, got {crop!r}")
    if crop == 0:
        return x
    if 2 * crop >= min(x.shape[-2:]):
        raise ValueError(f"crop={crop} leaves nothing of a {tuple(x.shape[-2:])} image")
    return x[..., crop:-crop, crop:-crop]


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """BT.601 luma on the 0..255 scale: ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` for RGB on ``[0, 1]``.

    A 1-channel input is taken as a luma already on ``[0, 1]`` and returned as ``255 x``.

    Args:
        x: ``(N, 3, H, W)`` or ``(N, 1, H, W)`` on ``[0, 1]``.

    Returns:
        ``(N, 1, H, W)`` in float64 on ``[16, 235]`` for in-range RGB.
    """
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected (N, 3, H, W) or (N, 1, H, W), got {tuple(x.shape)}")
    x = x.double()
    if x.shape[1] == 1:
        return 255.0 * x
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return 16.0 + _BT601[0] * r + _BT601[1] * g + _BT601[2] * b


def psnr(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 1.0, crop: int = 0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image over all channels: ``10 log10(data_range^2 / MSE)``.

    Identical images give ``inf`` (no cap).

    Args:
        x, y: ``(N, C, H, W)`` images.
        data_range: peak value (1 for ``[0, 1]`` images).
        crop: pixels removed from every border before comparing (SR convention: the scale).

    Returns:
        ``(N,)`` float64 PSNR in dB.

    Example:
        >>> x = torch.zeros(1, 3, 8, 8)
        >>> round(float(psnr(x, x + 0.1)[0]), 6)
        20.0
    """
    _check_pair(x, y)
    mse = (_crop(x.double(), crop) - _crop(y.double(), crop)).pow(2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(data_range**2 / mse)


def psnr_y(x: torch.Tensor, y: torch.Tensor, *, crop: int = 0) -> torch.Tensor:
    """PSNR on the BT.601 luma (0..255, peak 255), after removing ``crop`` border pixels: the EDSR/RCAN protocol.

    Args:
        x, y: ``(N, 3, H, W)`` RGB or ``(N, 1, H, W)`` luma, on ``[0, 1]``.
        crop: border to remove, the SR scale in the papers' evaluation.

    Returns:
        ``(N,)`` float64 PSNR in dB.
    """
    _check_pair(x, y)
    return psnr(rgb_to_y(x), rgb_to_y(y), data_range=255.0, crop=crop)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalised 1-D Gaussian ``exp(-k^2 / (2 sigma^2))``, ``k = -(size // 2) .. size // 2``, float64.

    With the defaults it equals the window of ``scipy.ndimage.gaussian_filter(sigma=1.5, truncate=3.5)`` used by
    ``skimage.metrics.structural_similarity(gaussian_weights=True)``.
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"size must be a positive odd integer, got {size!r}")
    k = torch.arange(size, dtype=torch.float64) - size // 2
    w = torch.exp(-k.pow(2) / (2.0 * sigma**2))
    return w / w.sum()


def ssim(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 1.0, crop: int = 0, window_size: int = 11,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Structural similarity (Wang, Bovik, Sheikh, Simoncelli 2004) with a Gaussian window, per image.

    ``SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))`` with
    ``C1 = (k1 L)^2``, ``C2 = (k2 L)^2``, local (population) moments under the separable Gaussian window, the map
    averaged over the "valid" positions (the window inside the image) and over channels. This is what
    ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=L, channel_axis=...)`` computes, since it crops ``window_size // 2`` pixels before averaging.

    Args:
        x, y: ``(N, C, H, W)`` images.
        data_range: ``L``, the dynamic range (1 for ``[0, 1]``).
        crop: border removed before computing (SR convention).
        window_size, sigma: Gaussian window.
        k1, k2: stabilising constants.

    Returns:
        ``(N,)`` float64 SSIM.
    """
    _check_pair(x, y)
    x, y = _crop(x.double(), crop), _crop(y.double(), crop)
    n, c, h, w = x.shape
    if min(h, w) < window_size:
        raise ValueError(f"images of {h}x{w} are smaller than window_size={window_size}")
    g = gaussian_window(window_size, sigma).to(x.device)
    wh, ww = g.view(1, 1, -1, 1).repeat(c, 1, 1, 1), g.view(1, 1, 1, -1).repeat(c, 1, 1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, wh, groups=c), ww, groups=c)

    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3))

