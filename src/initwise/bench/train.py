"""A short, deterministic training loop for the benchmark: Adam, L1 (SR) or MSE (denoising), PSNR along the way."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from .data import Task, TestSet

__all__ = ["RunResult", "evaluate", "train"]


@dataclass
class RunResult:
    """What one training run measured. ``to_dict()`` gives a JSON-able dict (non-finite floats become ``None``).

    Attributes:
        task: task name; seed, steps, batch_size, patch_size, lr, loss: the run's settings.
        steps_done: optimizer steps taken (``< steps`` after divergence).
        losses: training loss of each step, computed before that step's update (``losses[0]`` at init).
        initial_loss: ``losses[0]``.
        initial_output_std: std of the model output on the first batch, before any update.
        initial_target_std: std of the targets of that batch, for comparison.
        eval_steps, eval_psnr: test PSNR (dB, task metric, mean over test images) after that many updates.
        final_psnr: test PSNR at the end (``nan`` if diverged).
        baseline_psnr: PSNR of the bicubic / noisy baseline on the same test images.
        diverged: a loss was NaN or infinite; diverged_at: that step.
        wall_time_s: seconds for the whole call, evaluation included.
        n_params: trainable parameters.
    """

    task: str
    seed: int
    steps: int
    batch_size: int
    patch_size: int
    lr: float
    loss: str
    steps_done: int = 0
    losses: list[float] = field(default_factory=list)
    initial_loss: float = float("nan")
    initial_output_std: float = float("nan")
    initial_target_std: float = float("nan")
    eval_steps: list[int] = field(default_factory=list)
    eval_psnr: list[float] = field(default_factory=list)
    final_psnr: float = float("nan")
    baseline_psnr: float = float("nan")
    diverged: bool = False
    diverged_at: int | None = None
    wall_time_s: float = 0.0
    n_params: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able ``dict``; NaN and infinities are written as ``None``."""
        def clean(v: Any) -> Any:
            if isinstance(v, float) and not math.isfinite(v):
                return None
            if isinstance(v, list):
                return [clean(u) for u in v]
            return v

        return {k: clean(v) for k, v in asdict(self).items()}


@contextmanager
def _deterministic(seed: int, device: torch.device, num_threads: int | None) -> Iterator[None]:
    """Seed torch, switch on deterministic algorithms (and cuDNN determinism); restore everything on exit."""
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if device.type == "cuda" else None
    det, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn_det, cudnn_bench = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    threads = torch.get_num_threads()
    try:
        torch.manual_seed(seed)
        if device.type == "cuda":
            # Some CUDA kernels have no deterministic version; warn (not fail) there, as runs are still seeded.
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        else:
            torch.use_deterministic_algorithms(True)
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det, warn_only=warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn_det, cudnn_bench
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


@torch.no_grad()
def evaluate(model: nn.Module, task: Task, test: TestSet, device: str | torch.device = "cpu") -> float:
    """Mean test PSNR (task metric) of ``model`` in eval mode; the model's train/eval mode is restored."""
    was_training = model.training
    model.eval()
    try:
        scores = [task.score(model(x.to(device)).float().cpu(), y) for x, y in zip(test.inputs, test.targets)]
    finally:
        model.train(was_training)
    return torch.cat(scores).mean().item()


def train(model: nn.Module, task: Task, *, steps: int = 1000, batch_size: int = 16, patch_size: int = 48,
          lr: float = 1e-4, seed: int = 0, eval_at: Sequence[int] | None = None, eval_crop: int | None = 96,
          upsample_input: bool = False, loss: Literal["l1", "mse"] | None = None, grad_clip: float | None = None,
          device: str | torch.device = "cpu", num_threads: int | None = None,
          progress: Callable[[int, int, float], None] | None = None) -> RunResult:
    """Train ``model`` (already initialized by the caller; this never re-initializes it) on ``task``.

    Adam (``betas=(0.9, 0.999)``, ``eps=1e-8``, constant ``lr``; EDSR/RCAN use 1e-4) on random patches from
    ``task.train_batch``; loss L1 for SR (EDSR, RCAN) and MSE for denoising (DnCNN) unless ``loss`` is given.
    The test PSNR is measured at each step count in ``eval_at`` (updates done; 0 = at initialization) and at the
    end. A non-finite loss stops the run and marks it diverged. Deterministic for a given ``seed`` on one machine:
    the data come from ``torch.Generator().manual_seed(seed)``, torch's global RNG is seeded with ``seed``,
    deterministic algorithms are on; the global RNG, determinism flags and thread count are restored afterwards.
    The model is moved to ``device``, trained in train mode, and left in the mode it came in.

    Args:
        model: a network mapping ``task``'s inputs to images.
        task: the task (``get_task("sr-x2")`` ...).
        steps: optimizer updates.
        batch_size, patch_size: training batch; ``patch_size`` is the HR (target) side.
        lr: Adam learning rate.
        seed: seed for data and torch's global RNG.
        eval_at: step counts at which to evaluate; default ``(0, steps // 2, steps)``.
        eval_crop: HR center-crop side of the test images (``None``: whole images, slower).
        upsample_input: feed bicubic-upscaled LR images (SRCNN, VDSR: ``zoo.info(name).upsampled_input``).
        loss: ``"l1"`` or ``"mse"``; default by task kind.
        grad_clip: clip the global gradient norm to this value (VDSR); ``None``: no clipping.
        device: where to train.
        num_threads: torch CPU threads during the run (restored after).
        progress: called as ``progress(step, steps, loss)`` after each step.

    Returns:
        A ``RunResult``.

    Example:
        >>> from initwise.bench.data import get_task
        >>> from initwise.zoo import build
        >>> r = train(build("espcn", scale=2, in_channels=3), get_task("sr-x2"), steps=2, batch_size=2,
        ...           patch_size=16, eval_crop=32)
        >>> r.steps_done, len(r.losses)
        (2, 2)
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps!r}")
    if loss is None:
        loss = "l1" if task.kind == "sr" else "mse"
    if loss == "l1":
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.l1_loss
    elif loss == "mse":
        loss_fn = F.mse_loss
    else:
        raise ValueError(f"loss must be 'l1', 'mse' or None, got {loss!r}")
    checkpoints = sorted(set((0, steps // 2, steps) if eval_at is None else eval_at) | {steps})
    bad = [s for s in checkpoints if not 0 <= s <= steps]
    if bad:
        raise ValueError(f"eval_at must lie in [0, steps={steps}], got {bad}")
    device = torch.device(device)
    result = RunResult(task.name, seed, steps, batch_size, patch_size, lr, loss,
                       n_params=sum(p.numel() for p in model.parameters() if p.requires_grad))
    start = time.perf_counter()
    was_training = model.training
    with _deterministic(seed, device, num_threads):
        model.to(device)
        test = task.test_set(crop=eval_crop, upsample=upsample_input)
        result.baseline_psnr = test.baseline_psnr
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr, betas=(0.9, 0.999),
                               eps=1e-8)
        try:
            for step in range(steps + 1):
                if step in checkpoints:
                    result.eval_steps.append(step)
                    result.eval_psnr.append(evaluate(model, task, test, device))
                if step == steps:
                    break
                model.train()
                x, y = task.train_batch(batch_size, patch_size, gen, upsample=upsample_input)
                x, y = x.to(device), y.to(device)
                out = model(x)
                value = loss_fn(out, y)
                v = value.item()
                if step == 0:
                    result.initial_loss = v
                    result.initial_output_std = out.detach().float().std().item()
                    result.initial_target_std = y.float().std().item()
                result.losses.append(v)
                if not math.isfinite(v):
                    result.diverged, result.diverged_at = True, step
                    break
                opt.zero_grad(set_to_none=True)
                value.backward()
                if grad_clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                opt.step()
                result.steps_done = step + 1
                if progress is not None:
                    progress(step + 1, steps, v)
        finally:
            model.train(was_training)
    if not result.diverged and result.eval_steps and result.eval_steps[-1] == steps:
        result.final_psnr = result.eval_psnr[-1]
    result.wall_time_s = time.perf_counter() - start
    return result
