"""Benchmark: one diagnose() of a ResNet-50 (25.6M parameters), 3x224x224, against a plain forward + backward of
the same model and batch, at several batch sizes side by side (issue 10's targets: at most 1.3x the wall time at
batch 8, 1.5x at batch 1-2; 1.1x the peak memory).

Run: python benchmarks/bench_diagnose.py [--batches 8,2,1] [--repeats 2] [--rounds 2] [--threads 1]

Method. Every measurement runs in a fresh subprocess (so that peaks are comparable and neither variant inherits
the other's allocator state), and the two variants alternate, round after round, so that both see the same machine
load. A subprocess builds the model (seeded) and the input, records its resident set size, runs one untimed pass
(its peak is what a user pays once) and then ``--repeats`` timed passes; it reports the wall times and
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (peak resident set: torch's CPU allocations are not seen by
tracemalloc). Memory is reported two ways: whole-process peak, and the peak above the resident set just before the
first pass (model, input and interpreter excluded: the cost of the pass itself). Besides the medians over every
timed pass, the ratio is taken per round (the two subprocesses of a round run back to back) and printed as
median [min-max] over the rounds: on a shared machine the spread says how far one figure can be trusted.

Threads: both variants run with the same ``torch.set_num_threads`` (default 1). On a shared machine whose cores are
busy with other work, every multi-threaded op waits at an OpenMP barrier for a descheduled thread (about 12 ms per op
on the 2-core development box, whatever the op's size), which measures the neighbours rather than the code; pass
``--threads 0`` to keep torch's default on a quiet machine.

- plain:    ``y = model(x); y.backward(torch.randn_like(y))`` after ``model.zero_grad(set_to_none=True)``;
- diagnose: ``initwise.diagnose(model, x)`` (the model as it is: one trace of a one-sample slice, the "current"
  plan, one probed forward, one ``torch.autograd.grad`` backward, the statistics reduced in the hooks).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() // 1024


def child(variant: str, batch: int, repeats: int, threads: int) -> None:
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    sys.path.insert(0, str(HERE))
    import initwise as iw
    from resnet50 import resnet50

    torch.manual_seed(0)
    model = resnet50()
    x = torch.randn(batch, 3, 224, 224)

    def plain() -> None:
        model.zero_grad(set_to_none=True)
        y = model(x)
        y.backward(torch.randn_like(y))

    def diag() -> None:
        iw.diagnose(model, x)

    fn = plain if variant == "plain" else diag
    base = _rss_kib()
    fn()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    print(json.dumps({"variant": variant, "times": times, "cpu": cpu, "peak_kib": peak, "base_kib": base,
                      "threads": torch.get_num_threads(), "torch": torch.__version__}))


def _measure(batch: int, args: argparse.Namespace) -> dict[str, list[dict]]:
    res: dict[str, list[dict]] = {"plain": [], "diagnose": []}
    for r in range(args.rounds):
        for variant in (("plain", "diagnose") if r % 2 == 0 else ("diagnose", "plain")):
            out = subprocess.run([sys.executable, __file__, "--child", variant, "--batches", str(batch),
                                  "--repeats", str(args.repeats), "--threads", str(args.threads)], check=True,
                                 capture_output=True, text=True)
            rec = json.loads(out.stdout.strip().splitlines()[-1])
            res[variant].append(rec)
            print(f"batch {batch} round {r + 1} {variant:8s} times {', '.join(f'{t:.2f}' for t in rec['times'])} s, "
                  f"peak {rec['peak_kib'] / 2**20:.2f} GiB (above start {(rec['peak_kib'] - rec['base_kib']) / 2**20:.2f})",
                  flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="8,2,1", help="comma-separated batch sizes, measured one after the other")
    ap.add_argument("--repeats", type=int, default=2, help="timed passes per subprocess (after one untimed)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating subprocess pairs")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in both variants (0: torch's default)")
    ap.add_argument("--child", choices=("plain", "diagnose"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    if args.child:
        child(args.child, batches[0], args.repeats, args.threads)
        return
    rows = []
    for batch in batches:
        res = _measure(batch, args)
        t = {v: statistics.median(x for rec in recs for x in rec["times"]) for v, recs in res.items()}
        t.update({v + "_cpu": statistics.median(x for rec in recs for x in rec.get("cpu", rec["times"]))
                  for v, recs in res.items()})
        peak = {v: statistics.median(rec["peak_kib"] for rec in recs) for v, recs in res.items()}
        above = {v: statistics.median(rec["peak_kib"] - rec["base_kib"] for rec in recs) for v, recs in res.items()}
        # paired: per round, the two subprocesses ran back to back (a load change between rounds moves both)
        pairs = {k: [statistics.median(d[k]) / statistics.median(p[k]) for p, d in zip(res["plain"], res["diagnose"])]
                 for k in ("times", "cpu")}
        t["pairs"] = pairs
        rows.append((batch, t, peak, above, res["plain"][0]))
    rec = rows[0][4]
    print(f"\nResNet-50, 3x224x224, torch {rec['torch']}, {rec['threads']} threads, "
          f"{args.rounds} rounds x {args.repeats} timed passes (median)")
    print("wall time is what a user waits; CPU time (process_time, 1 thread) is what the code costs on a shared "
          "machine whose load inflates wall time")
    print(f"{'batch':>5} {'plain s':>8} {'diagnose s':>10} {'ratio':>6} {'cpu ratio':>9} {'target':>6}   "
          f"{'peak GiB plain/diag':>20} {'ratio':>6}   {'above-start ratio':>17}")
    for batch, t, peak, above, _ in rows:
        target = 1.3 if batch >= 8 else 1.5 if batch <= 2 else float("nan")
        print(f"{batch:5d} {t['plain']:8.2f} {t['diagnose']:10.2f} {t['diagnose'] / t['plain']:6.3f} "
              f"{t['diagnose_cpu'] / t['plain_cpu']:9.3f} {target:6.2g}   "
              f"{peak['plain'] / 2**20:9.2f} / {peak['diagnose'] / 2**20:8.2f} {peak['diagnose'] / peak['plain']:6.3f}   "
              f"{above['diagnose'] / above['plain']:17.3f}")
    print("per round (paired: plain and diagnose back to back), diagnose / plain, median [min-max] over the rounds:")
    for batch, t, _, _, _ in rows:
        w, c = t["pairs"]["times"], t["pairs"]["cpu"]
        print(f"{batch:5d}   wall {statistics.median(w):.3f} [{min(w):.3f}-{max(w):.3f}]   "
              f"cpu {statistics.median(c):.3f} [{min(c):.3f}-{max(c):.3f}]")


if __name__ == "__main__":
    main()
