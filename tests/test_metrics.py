"""Tests of PSNR (RGB and BT.601 luma) and SSIM against independent references."""

from __future__ import annotations

import math

import pytest
import torch
from skimage.metrics import structural_similarity

from initwise.bench.data import load_image
from initwise.bench.metrics import psnr, psnr_y, rgb_to_y, ssim


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_identical_images_have_infinite_psnr() -> None:
    x = torch.rand(2, 3, 16, 16)
    assert torch.isinf(psnr(x, x)).all() and torch.isinf(psnr_y(x, x, crop=2)).all()


def test_psnr_of_known_noise_level() -> None:
    n = 3 * 256 * 256
    x = torch.full((1, 3, 256, 256), 0.5, dtype=torch.float64)
    y = x + torch.randn_like(x) * (10 / 255)
    # MSE has relative SE sqrt(2 / n); PSNR's SE is (10 / ln 10) sqrt(2 / n) dB. Tolerance: 5 SE (~0.07 dB).
    tol = 5 * 10 / math.log(10) * (2 / n) ** 0.5
    assert abs(psnr(x, y).item() - 20 * math.log10(255 / 10)) < tol


def test_psnr_y_of_gray_images_is_rescaled_rgb_psnr() -> None:
    # For R = G = B = v, Y = 16 + 219 v: the luma error is 219/255 of the RGB error.
    x = torch.rand(2, 1, 20, 20).expand(2, 3, 20, 20)
    y = (x + 0.02 * torch.randn(2, 1, 20, 20)).clamp(0, 1)
    expected = psnr(x, y) - 20 * math.log10(219 / 255)
    torch.testing.assert_close(psnr_y(x, y), expected)
    assert rgb_to_y(torch.ones(1, 3, 1, 1)).item() == pytest.approx(235.0)
    assert rgb_to_y(torch.zeros(1, 3, 1, 1)).item() == pytest.approx(16.0)


def test_psnr_border_crop() -> None:
    x = torch.rand(1, 3, 20, 20)
    y = x.clone()
    y[..., :3, :] = 0.0
    y[..., :, -3:] = 1.0
    assert math.isfinite(psnr_y(x, y, crop=2).item())
    assert math.isinf(psnr_y(x, y, crop=3).item())
    with pytest.raises(ValueError, match="crop"):
        psnr(x, y, crop=10)


def skimage_ssim(x: torch.Tensor, y: torch.Tensor, data_range: float) -> float:
    return float(structural_similarity(x[0].permute(1, 2, 0).numpy(), y[0].permute(1, 2, 0).numpy(),
                                       gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                       data_range=data_range, channel_axis=2))


@pytest.mark.parametrize("noise", [0.02, 0.1, 0.3])
def test_ssim_matches_skimage_rgb(noise: float) -> None:
    x = load_image("astronaut")[:, 100:180, 150:250].unsqueeze(0).double()
    y = (x + noise * torch.randn_like(x)).clamp(0, 1)
    assert abs(ssim(x, y).item() - skimage_ssim(x, y, 1.0)) < 1e-4


def test_ssim_matches_skimage_luma_range_255() -> None:
    x = rgb_to_y(load_image("chelsea")[:, :64, :96].unsqueeze(0))
    y = x + 5.0 * torch.randn_like(x)
    assert abs(ssim(x, y, data_range=255.0).item() - skimage_ssim(x, y, 255.0)) < 1e-4
    assert ssim(x, x, data_range=255.0).item() == pytest.approx(1.0)


def test_ssim_per_image_and_errors() -> None:
    x = torch.rand(3, 3, 24, 24)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    both = ssim(x, y)
    assert both.shape == (3,)
    torch.testing.assert_close(both[1:2], ssim(x[1:2], y[1:2]))
    with pytest.raises(ValueError, match="same shape"):
        ssim(x, y[:, :1])
    with pytest.raises(ValueError, match="window_size"):
        ssim(x[..., :8, :8], y[..., :8, :8])
