"""Benchmark: initwise's LSUV (``initwise.lsuv_``) beside the ``lsuv`` package on PyPI (issue 11, item 2).

Run: python benchmarks/lsuv_compare.py [--models espcn,vdsr,dncnn,edsr,carn-lite,ridnet-lite,unet-denoise]
     (the package is not a dependency: ``pip install lsuv`` (0.3.0 was compared), or put it on PYTHONPATH)

Both start from an orthogonal draw and rescale each conv / linear layer until its output on the example batch is
at unit scale (the package: ``|std - 1| <= 0.1`` of the output, at most 10 corrections; initwise: ``|E[y^2] - 1| <
0.1``, at most 10). Then every conv / linear layer's output on the same example is measured in one plain forward
pass through the real layers (forward hooks, no initwise code involved), and the table reports, for each method,
how many layers end within the package's own criterion and within initwise's, the worst layer's std, the number
of forward passes the method ran (calls of the model's ``forward``, full or stopped early) and its wall time.

Why they differ (each checked by this script): (1) the package's hook keeps ``output.detach().cpu()``, which on
the CPU is the layer's output tensor itself, so an in-place activation after the layer (``nn.ReLU(inplace=True)``,
as CARN, RIDNet and most U-Nets write it) rewrites what it measures: it scales the *activated* output to std 1 and
the layer's own output ends 1.5-2x too large (the last lines of the output: a conv + in-place ReLU + conv net);
(2) it visits layers in *registration* order (``model.apply``): a layer registered before one that runs earlier
is scaled first, and scaling the earlier one afterwards moves its input again (CARN's fuse convs are registered
after all of a block's units, but run between them); initwise visits layers in the traced *execution* order and
measures the output where it is produced. (3) The package normalizes the std (about the batch mean), initwise the
second moment (equal once the output's mean is zero; ESPCN's and VDSR's last layer is where they part). (4) The
package measures in eval mode: on a net with BatchNorm (the zoo's DnCNN) the layers it scaled are off in train
mode, the mode the net trains in.
The package switches the model to eval mode while it measures (BatchNorm then uses its running statistics, not
the batch's); initwise measures in the mode the model is in, and the table measures both in that mode (train, as
built: the mode the model trains in).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import initwise as iw  # noqa: E402
from initwise import zoo  # noqa: E402
from initwise.bench.data import get_task  # noqa: E402

LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)


def build(name: str) -> tuple[nn.Module, torch.Tensor]:
    """A zoo model with 8 patches of 48 px of its task, or a validation net (``study_validation``) with its
    example batch; built under seed 0."""
    torch.manual_seed(0)
    if name in zoo.list_models():
        info = zoo.info(name)
        task = get_task("sr-x2" if info.task == "sr" else "denoise-s25", channels=info.in_channels)
        x, _ = task.train_batch(8, 48, torch.Generator().manual_seed(0), upsample=info.input == "upsampled")
        return zoo.build(name), x
    import study_validation as sv

    return sv.build(name, 0), sv.example_batch(name)[0]


def outputs(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[float, float]]:
    """(std, E[y^2]) of every conv / linear layer's output at its first call, one forward pass."""
    seen: dict[str, tuple[float, float]] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, LAYERS):
            def hook(_m, _i, out, name=name):
                if name not in seen:
                    y = out.detach().double()
                    seen[name] = (float(y.std()), float(y.pow(2).mean()))
            hooks.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def counted(model: nn.Module, fn) -> tuple[int, float]:
    """How many times ``fn()`` calls ``model``'s forward, and its wall time."""
    calls = [0]
    h = model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    t0 = time.perf_counter()
    try:
        fn()
    finally:
        h.remove()
    return calls[0], time.perf_counter() - t0


def row(name: str, package) -> str:
    model, x = build(name)
    ours = _copy(model)
    with contextlib.redirect_stdout(io.StringIO()):  # untimed warm-up of both (first-call costs: imports, tracing)
        package.lsuv_with_singlebatch(_copy(model), x, verbose=False)
        iw.lsuv_(_copy(model), x, seed=0)
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints
        n_pkg, t_pkg = counted(model, lambda: package.lsuv_with_singlebatch(model, x, verbose=False))
    n_iw, t_iw = counted(ours, lambda: iw.lsuv_(ours, x, seed=0))
    evaluated = _copy(model).eval()  # where the package measures; a copy taken before any train-mode forward
    a_eval = sum(abs(s - 1) <= 0.1 for s, _ in outputs(evaluated, x).values())  # (which updates BatchNorm's stats)
    cells = []
    for m in (model, ours):
        out = outputs(m, x)
        stds = [s for s, _ in out.values()]
        cells.append((len(out), sum(abs(s - 1) <= 0.1 for s in stds), sum(abs(q - 1) < 0.1 for _, q in out.values()),
                      max(stds, key=lambda s: abs(math.log(s)) if s > 0 else math.inf)))
    (n, a_std, a_ms, a_worst), (_, b_std, b_ms, b_worst) = cells
    return (f"| {name} | {n} | {a_std}/{n} | {a_eval}/{n} | {a_ms}/{n} | {a_worst:.3g} | {n_pkg} | {t_pkg:.2f} | "
            f"{b_std}/{n} | {b_ms}/{n} | {b_worst:.3g} | {n_iw} | {t_iw:.2f} |")


def _copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="espcn,vdsr,dncnn,edsr,carn-lite,ridnet-lite,unet-denoise")
    args = ap.parse_args()
    try:
        import lsuv as package
    except ImportError:
        print("the lsuv package is not importable here (pip install lsuv): nothing to compare")
        return 1
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, lsuv package {getattr(package, '__version__', '(no __version__)')}, 1 thread\n")
    print("| model | layers | package: std within 0.1 | (eval mode) | E[y^2] within 0.1 | worst std | forwards | s | "
          "initwise: std within 0.1 | E[y^2] within 0.1 | worst std | forwards | s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        print(row(name, package), flush=True)
    print("\nin-place check (conv 1->16, ReLU, conv 16->1; 8 random 24 px inputs): the first conv's output std after "
          "each method")
    for inplace in (False, True):
        stds = []
        for method in ("package", "initwise"):
            torch.manual_seed(0)
            net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(inplace=inplace), nn.Conv2d(16, 1, 3, padding=1))
            x = torch.rand(8, 1, 24, 24, generator=torch.Generator().manual_seed(0))
            with contextlib.redirect_stdout(io.StringIO()):
                package.lsuv_with_singlebatch(net, x, verbose=False) if method == "package" else iw.lsuv_(net, x, seed=0)
            with torch.no_grad():
                stds.append(float(net[0](x).std()))
        print(f"  ReLU(inplace={inplace}): package {stds[0]:.3f}, initwise {stds[1]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
