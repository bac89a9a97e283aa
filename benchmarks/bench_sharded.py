"""Benchmark: FSDP2 sharded init_ per rank against world size (gloo, CPU), and equality with one process.

Run: python benchmarks/bench_sharded.py [--worlds 1,2,4]

For each world size, ``tests/dist_worker.py WORLD OUT bench`` spawns the ranks; each builds a 19M-parameter MLP
(``dist_worker.Net(width=1536, depth=8)``) on the meta device, shards every layer and the root with
``fully_shard``, materializes it with ``to_empty`` and times ``iw.init_`` (kaiming fan_in, seed 1). The gathered
weights (``full_tensor()``) are compared, bit for bit, with a single-process ``init_`` of the same model and seed.
Every rank draws each parameter's full random stream and keeps its slice (that is what makes the weights
identical), so the time per rank does not fall with the world size; on a machine with fewer cores than ranks the
ranks also share cores.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import dist_worker  # noqa: E402
import initwise as iw  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worlds", default="1,2,4")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ref = dist_worker.build("bench")
    iw.init_(ref, dist_worker.example("bench", "cpu"), "kaiming_fan_in", seed=1)
    expected = dict(ref.named_parameters())
    n = sum(p.numel() for p in expected.values())
    print(f"torch {torch.__version__}, gloo on CPU, {os.cpu_count()} cores, model {n / 1e6:.1f}M parameters")
    print(f"{'world':>5s}  {'init_ per rank: wall (max)':>26s}  {'cpu (max)':>9s}  {'largest local shard':>20s}  "
          f"{'full_tensor() == 1-process init_':>32s}")
    for world in (int(w) for w in args.worlds.split(",")):
        with tempfile.TemporaryDirectory() as out:
            env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
            subprocess.run([sys.executable, dist_worker.__file__, str(world), out, "bench"], check=True, env=env,
                           capture_output=True)
            got = torch.load(Path(out) / "kaiming_fan_in.pt")
        equal = all(torch.equal(t, expected[k]) for k, t in got["full"].items()) and set(got["full"]) == set(expected)
        largest = max(sum(torch.Size(s).numel() for s in shapes.values()) for shapes in got["local_shapes"])
        print(f"{world:5d}  {max(w for w, _ in got['seconds']) * 1e3:23.0f} ms  "
              f"{max(c for _, c in got['seconds']) * 1e3:6.0f} ms  "
              f"{largest / 1e6:16.2f}M el  {'bit-identical' if equal else 'DIFFERENT':>32s}")


if __name__ == "__main__":
    main()
