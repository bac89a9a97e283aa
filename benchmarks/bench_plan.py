"""Benchmark: plan() and init_() on a ResNet-50 (25.6M parameters, 1x3x224x224) against torch's normal_.

Run: python benchmarks/bench_plan.py [--repeats 5]

Prints the median wall time of
- trace(model, x) and plan(model, x, "kaiming", "fan_in") (target: plan under 2 s on a 2-core CPU);
- init_(model, x, "kaiming", "fan_in") against calling torch's normal_ on every weight of the same model, measured
  side by side and interleaved in one run (target: ratio at most 1.2); also Plan.apply alone.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import initwise as iw  # noqa: E402
from resnet50 import resnet50  # noqa: E402


def _time(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = resnet50()
    x = torch.randn(1, 3, 224, 224)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"ResNet-50: {n_params / 1e6:.1f}M parameters, input 1x3x224x224, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    iw.plan(model, x)  # warm-up (quadrature caches, allocator)
    with torch.no_grad():
        fwd = _time(lambda: model(x), args.repeats)
    tr = _time(lambda: iw.trace(model, x), args.repeats)
    pl = _time(lambda: iw.plan(model, x, "kaiming", "fan_in"), args.repeats)
    p = iw.plan(model, x, "kaiming", "fan_in")
    weights = [m.weight for m in model.modules() if isinstance(getattr(m, "weight", None), torch.nn.Parameter)
               and m.weight.dim() >= 2]

    def torch_normal() -> None:
        with torch.no_grad():
            for w in weights:
                w.normal_(0.0, 0.01)

    t_normal, t_init, t_apply = [], [], []
    for _ in range(args.repeats):  # interleaved, so both see the same machine state
        t_normal += _time(torch_normal, 1)
        t_init += _time(lambda: iw.init_(model, x, "kaiming", "fan_in", seed=0), 1)
        t_apply += _time(lambda: p.apply(model, seed=0), 1)
    med = statistics.median
    print(f"plain forward (no grad)        {med(fwd) * 1e3:8.1f} ms")
    print(f"trace                          {med(tr) * 1e3:8.1f} ms")
    print(f"plan (kaiming fan_in)          {med(pl) * 1e3:8.1f} ms   target < 2000 ms")
    print(f"torch normal_ on every weight  {med(t_normal) * 1e3:8.1f} ms")
    print(f"init_ (trace + plan + apply)   {med(t_init) * 1e3:8.1f} ms   ratio {med(t_init) / med(t_normal):.2f}x")
    print(f"Plan.apply alone               {med(t_apply) * 1e3:8.1f} ms   ratio {med(t_apply) / med(t_normal):.2f}x"
          "   target <= 1.2x")


if __name__ == "__main__":
    main()
