"""Benchmark support: bundled images and tasks, metrics, and a deterministic training loop.

Needs the ``bench`` extra (scikit-image, scikit-learn), imported only when images are loaded. The training
function is ``initwise.bench.train.train`` (not re-exported, so that ``initwise.bench.train`` stays the module).
"""

from .data import GRAY_IMAGES as GRAY_IMAGES
from .data import TASK_NAMES as TASK_NAMES
from .data import TEST_IMAGES as TEST_IMAGES
from .data import TEST_NOISE_SEED as TEST_NOISE_SEED
from .data import TRAIN_IMAGES as TRAIN_IMAGES
from .data import Task as Task
from .data import TestSet as TestSet
from .data import add_gaussian_noise as add_gaussian_noise
from .data import bicubic_downsample as bicubic_downsample
from .data import bicubic_upsample as bicubic_upsample
from .data import get_task as get_task
from .data import load_image as load_image
from .metrics import psnr as psnr
from .metrics import psnr_y as psnr_y
from .metrics import rgb_to_y as rgb_to_y
from .metrics import ssim as ssim
from .train import RunResult as RunResult
from .train import evaluate as evaluate

__all__ = [
    "GRAY_IMAGES", "TASK_NAMES", "TEST_IMAGES", "TEST_NOISE_SEED", "TRAIN_IMAGES", "RunResult", "Task", "TestSet",
    "add_gaussian_noise", "bicubic_downsample", "bicubic_upsample", "evaluate", "get_task", "load_image", "psnr",
    "psnr_y", "rgb_to_y", "ssim",
]
