"""Tests of the benchmark data: bundled images, bicubic degradation against PIL, noise level, determinism."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
from PIL import Image

from initwise.bench import data
from initwise.bench.data import (TASK_NAMES, TEST_IMAGES, TRAIN_IMAGES, bicubic_downsample, bicubic_upsample,
                                 get_task, load_image)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def pil_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Reference: PIL's BICUBIC resize (Keys a=-0.5, support widened by the scale) on float32 ("F") planes."""
    planes = [np.asarray(Image.fromarray(p.numpy()).resize((size[1], size[0]), Image.Resampling.BICUBIC))
              for p in x[0]]
    return torch.from_numpy(np.stack(planes))[None]


def test_images_load_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "socket", no_network)
    data._load_rgb.cache_clear()
    for name in TRAIN_IMAGES + TEST_IMAGES:
        img = load_image(name)
        assert img.dtype == torch.float32 and img.shape[0] == 3 and min(img.shape[1:]) >= 256
        assert 0.0 <= img.min() and img.max() <= 1.0 and img.std() > 0.05
    assert not set(TRAIN_IMAGES) & set(TEST_IMAGES)
    gray = load_image("camera")
    assert torch.equal(gray[0], gray[1])


def test_luma_images() -> None:
    y = load_image("astronaut", channels=1)
    rgb = load_image("astronaut")
    assert y.shape == (1,) + rgb.shape[1:]
    assert 16 / 255 - 1e-6 <= y.min() and y.max() <= 235 / 255 + 1e-6


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_downsample_matches_pil(scale: int) -> None:
    # torch's antialiased bicubic and PIL's resample are the same separable filter in float32; differences are
    # float rounding (measured <= 4e-6), so 1e-5 would catch a wrong kernel (a=-0.75 differs by ~4e-2).
    hr = load_image("coffee")[:, :120, :144].unsqueeze(0)
    lr = bicubic_downsample(hr, scale, clamp=False)
    ref = pil_resize(hr, (120 // scale, 144 // scale))
    assert lr.shape == ref.shape
    torch.testing.assert_close(lr, ref, atol=1e-5, rtol=0)
    up = bicubic_upsample(lr, scale, clamp=False)
    torch.testing.assert_close(up, pil_resize(lr, (120, 144)), atol=1e-5, rtol=0)


def test_bicubic_keeps_constants_and_ramps() -> None:
    const = torch.full((1, 3, 24, 36), 0.3)
    torch.testing.assert_close(bicubic_downsample(const, 3), torch.full((1, 3, 8, 12), 0.3))
    # A linear ramp sampled at pixel centres stays the same ramp at the LR pixel centres, away from borders
    # (the kernel reproduces linear functions).
    j = torch.arange(48, dtype=torch.float32)
    ramp = (0.1 + 0.01 * j).expand(1, 1, 16, 48).contiguous()
    lr = bicubic_downsample(ramp, 2, clamp=False)
    centres = (torch.arange(24, dtype=torch.float32) + 0.5) * 2 - 0.5
    torch.testing.assert_close(lr[0, 0, 4, 3:-3], 0.1 + 0.01 * centres[3:-3], atol=1e-6, rtol=0)


def test_bicubic_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="divisible by scale=3"):
        bicubic_downsample(torch.zeros(1, 3, 10, 9), 3)
    with pytest.raises(ValueError, match="scale"):
        bicubic_upsample(torch.zeros(1, 3, 10, 9), 5)


@pytest.mark.parametrize("name", ["denoise-s15", "denoise-s50"])
def test_test_noise_has_requested_sigma(name: str) -> None:
    task = get_task(name)
    test = task.test_set()
    noise = torch.cat([(x - y).flatten() for x, y in zip(test.inputs, test.targets)]).double()
    n = noise.numel()
    sigma = task.sigma / 255
    # std of a Gaussian sample: standard error sigma / sqrt(2 n); 5 SE (n ~ 2.6e6, so ~0.2% relative).
    assert abs(noise.std().item() - sigma) < 5 * sigma / (2 * n) ** 0.5
    assert abs(noise.mean().item()) < 5 * sigma / n**0.5
    assert noise.abs().max() > 4 * sigma  # not clipped to the image range
    again = task.test_set(crop=64)
    for big, small in zip(test.inputs, again.inputs):  # same fixed noise, cropped
        h, w = big.shape[-2:]
        top, left = (h - 64) // 2, (w - 64) // 2
        assert torch.equal(small, big[..., top:top + 64, left:left + 64])


def test_sr_test_set_and_baseline() -> None:
    task = get_task("sr-x3")
    test = task.test_set(crop=100)
    assert test.names == TEST_IMAGES
    for x, y, b in zip(test.inputs, test.targets, test.baselines):
        assert y.shape[-1] == 99 and x.shape[-1] == 33 and b.shape == y.shape
    scores = torch.cat([task.score(b, y) for b, y in zip(test.baselines, test.targets)])
    assert abs(scores.mean().item() - test.baseline_psnr) < 1e-9
    assert 20 < test.baseline_psnr < 40
    up = task.test_set(crop=100, upsample=True)
    assert all(torch.equal(a, b) for a, b in zip(up.inputs, test.baselines))


@pytest.mark.parametrize("name", ["sr-x2", "sr-x4", "denoise-s25"])
def test_train_batches_are_deterministic(name: str) -> None:
    task = get_task(name)
    a = task.train_batch(6, 48, torch.Generator().manual_seed(3))
    b = task.train_batch(6, 48, torch.Generator().manual_seed(3))
    c = task.train_batch(6, 48, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


@pytest.mark.parametrize("scale", [2, 4])
def test_sr_patches_are_aligned(scale: int) -> None:
    # The LR patch is cut from the LR of the whole image; away from the patch border (2 LR pixels, the kernel's
    # reach) it must equal the downsampled HR patch, flips and rotations included.
    task = get_task(f"sr-x{scale}")
    x, y = task.train_batch(8, 16 * scale, torch.Generator().manual_seed(1))
    ref = bicubic_downsample(y, scale)
    torch.testing.assert_close(x[..., 2:-2, 2:-2], ref[..., 2:-2, 2:-2], atol=1e-5, rtol=0)
    xu, _ = task.train_batch(8, 16 * scale, torch.Generator().manual_seed(1), upsample=True)
    assert xu.shape == y.shape


def test_task_registry_errors() -> None:
    assert [get_task(n).name for n in TASK_NAMES] == list(TASK_NAMES)
    assert get_task("denoise-s25").sigma == 25.0 and get_task("sr-x4").scale == 4
    with pytest.raises(ValueError, match="valid tasks.*sr-x2"):
        get_task("sr-x8")
    with pytest.raises(ValueError, match="patch_size"):
        get_task("sr-x3").train_batch(2, 32, torch.Generator())
    with pytest.raises(ValueError, match="unknown image"):
        load_image("lena")
