"""Benchmark: init_ against torch's in-place normal_ over the same parameters: speed and extra peak memory.

Run: python benchmarks/bench_plan.py [--repeats 9] [--models resnet50,decoder350m] [--threads 1] [--fresh 3]

Models: a ResNet-50 (25.6M parameters, example 1x3x224x224) and a 374M-parameter decoder-only transformer
(:mod:`decoder`, example token ids 1x16). For each, side by side in one run:

- speed (``--repeats`` rounds, each running every variant once, back to back, after a full garbage collection, the
  order within a round alternating; medians of wall and of process CPU time: on a shared machine the CPU time is
  the steadier figure; beside them the ratios to ``normal_`` taken within each round, median [min-max], which a
  load change between rounds does not move): torch's ``normal_`` in place on every parameter that init_ writes
  (the reference), ``init_`` with an empty plan cache and an empty meta-op memo (trace + plan + draw: the first call
  for this architecture in a process that has run initwise before), ``init_`` again (the same architecture a
  second time: the cached plan), and ``Plan.apply`` alone. Targets: init_ <= 1.1x normal_.
- the first ``init_`` taken apart (CPU time, medians; in the same rounds): the plan cache's key and store, trace
  (and the guard's record + restore around its forward, timed alone), plan after the trace, validation of the
  plan, draws; then, per round,
  the whole first init_'s overhead over ``normal_`` beside the sum of the parts' (the two agree within the noise
  when the figures can be trusted) and the draws against ``normal_``.
- the very first ``init_`` of a fresh process (``--fresh`` processes, median): everything cold, including the
  one-time loading of torch's Python meta kernels and initwise's per-activation caches; ``normal_`` measured
  in the same process right after, as its reference.
- memory: each variant runs in a fresh subprocess that builds the model (pages touched), resets the peak RSS
  (``/proc/self/clear_refs``) and reports the peak above the resident size before the call, as a fraction of the
  parameters' bytes. Variants: torch ``normal_`` in place, ``init_``, and for reference the old strategy (draw every
  parameter into a fresh tensor, then swap them all in). Target: init_'s extra peak <= 10% of the parameters.
  The first trace in a process loads torch's meta kernels (~40 MiB, once): shown apart as "process warm".
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import initwise as iw  # noqa: E402
from initwise import _graph, _meta_ops, _plan_cache  # noqa: E402
from initwise._apply import prepare, run_steps  # noqa: E402
from initwise._guard import Snapshot  # noqa: E402


def build(name: str, fast: bool = False) -> tuple[torch.nn.Module, torch.Tensor]:
    """The model (values touched: built on meta and zero-filled when ``fast``) and its example."""
    if name == "resnet50":
        from resnet50 import resnet50 as make
        x = torch.randn(1, 3, 224, 224)
    elif name == "decoder350m":
        from decoder import decoder

        def make():
            return decoder("350m")
        x = torch.randint(0, 32000, (1, 16))
    else:
        raise ValueError(f"unknown model {name!r}; valid: resnet50, decoder350m")
    if not fast:
        return make(), x
    with torch.device("meta"):
        model = make()
    model.to_empty(device="cpu")
    with torch.no_grad():
        for t in (*model.parameters(), *model.buffers()):
            t.zero_()
    return model, x


def _written(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    p = iw.plan(model, x)
    params = dict(model.named_parameters())
    return [params[pp.param] for pp in p.params if pp.method != "keep"]


def _normal(params: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for t in params:
            t.normal_(0.0, 0.02)


def _fresh_then_swap(model: torch.nn.Module) -> None:
    """The strategy init_ used before: every new value drawn into fresh storage, then all swapped in."""
    new = [(p, torch.empty_like(p).normal_(0.0, 0.02)) for p in model.parameters()]
    for p, t in new:
        p.data = t


def _status(key: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def child(model_name: str, variant: str) -> None:
    # built as a user builds it (not on meta, then to_empty: that path imports torch's symbolic-shape machinery,
    # ~500 modules, which a plain first init_ would otherwise be charged for and here would find loaded)
    model, x = build(model_name)
    if variant == "first":  # the first init_ of a fresh process (CPU time), then normal_ over the same parameters
        gc.collect()
        c0 = time.process_time()
        p = iw.init_(model, x, "kaiming", "fan_in", seed=0)
        first = time.process_time() - c0
        params = dict(model.named_parameters())
        written = [params[pp.param] for pp in p.params if pp.method != "keep"]
        ref = []
        for _ in range(3):
            c0 = time.process_time()
            _normal(written)
            ref.append(time.process_time() - c0)
        print(json.dumps({"first": first, "normal_": statistics.median(ref)}))
        return
    written = _written(model, x) if variant == "normal_" else None
    if variant == "init_ warm":  # torch's meta kernels and initwise's caches loaded by an unrelated small model
        small = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(2))
        small(torch.randn(1, 3, 8, 8))
        iw.init_(small, torch.randn(1, 3, 8, 8), seed=0)
        iw.init_(torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.RMSNorm(4), torch.nn.Linear(4, 4)),
                 torch.zeros(1, 3, dtype=torch.long), seed=0)
    _plan_cache.clear()
    gc.collect()
    nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
    before = _status("VmRSS")
    if variant == "normal_":
        _normal(written)
    elif variant in ("init_", "init_ warm"):
        iw.init_(model, x, "kaiming", "fan_in", seed=0)
    elif variant == "fresh_then_swap":
        _fresh_then_swap(model)
    else:
        raise ValueError(variant)
    print(json.dumps({"param_bytes": nbytes, "extra": _status("VmHWM") - before}))


def memory(model_name: str) -> dict[str, float]:
    out = {}
    for variant in ("normal_", "init_", "init_ warm", "fresh_then_swap"):
        r = subprocess.run([sys.executable, __file__, "--child", model_name, variant], capture_output=True, text=True,
                           check=True)
        d = json.loads(r.stdout.strip().splitlines()[-1])
        out[variant] = d["extra"] / d["param_bytes"]
        out["param_bytes"] = d["param_bytes"]
    return out


def _spread(v: list[float]) -> str:
    """``median [min-max]`` of ratios."""
    return f"{statistics.median(v):.2f}x [{min(v):.2f}-{max(v):.2f}]"


def speed(model_name: str, repeats: int) -> dict[str, Any]:
    """Per round, every variant once, back to back (so each sees the same machine state), each after a full
    garbage collection; ratios are taken within a round (paired: a load change between rounds moves both sides)
    and their median over the rounds is the figure. The first init_ taken apart runs in the same round."""
    model, x = build(model_name)
    written = _written(model, x)
    iw.init_(model, x, seed=0)  # warm-up (quadrature caches, allocator, lazy imports)
    p = iw.plan(model, x)
    names = ("normal_", "init_ first", "init_ again", "apply", "parts", "normal_ after")
    wall: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    parts: dict[str, list[float]] = {k: [] for k in ("cache", "trace", "guard", "plan", "prepare", "draw")}

    def phases() -> None:  # the first init_ taken apart (CPU time): what each step costs, memo and cache empty
        _plan_cache.clear()
        _meta_ops._MEMO.clear()
        c = [time.process_time()]  # init_'s own steps, one by one
        key, _ = _plan_cache.lookup(model, x, "kaiming", "fan_in", {})
        c.append(time.process_time())
        g = _graph.trace(model, x)
        c.append(time.process_time())
        q = iw.plan(model, x, "kaiming", "fan_in", graph=g)
        c.append(time.process_time())
        _plan_cache.store(key, q, x)
        c.append(time.process_time())
        steps, gen = prepare(q, model, seed=0)
        c.append(time.process_time())
        run_steps(steps, gen)
        c.append(time.process_time())
        snap = Snapshot(model, (x,), clone=False)  # the guard around the trace's meta forward: record + restore
        snap.close()
        c.append(time.process_time())
        for k, i, j in (("trace", 1, 2), ("plan", 2, 3), ("prepare", 4, 5), ("draw", 5, 6), ("guard", 6, 7)):
            parts[k].append(c[j] - c[i])
        parts["cache"].append(c[1] - c[0] + c[4] - c[3])
    runs = (lambda: _normal(written),
            lambda: (_plan_cache.clear(), _meta_ops._MEMO.clear(), iw.init_(model, x, "kaiming", "fan_in", seed=0)),
            lambda: iw.init_(model, x, "kaiming", "fan_in", seed=0), lambda: p.apply(model, seed=0), phases,
            lambda: _normal(written))
    for r in range(repeats):
        order = list(zip(names, runs))
        if r % 2:  # alternate the order within the round: neither side always runs first after the collection
            order = order[:1] + order[1:4][::-1] + order[4:]
        for k, run in order:
            if k == "init_ again":  # the cache holds this architecture's plan (a round may have cleared it)
                iw.init_(model, x, "kaiming", "fan_in", seed=0)
            gc.collect()  # a full collection (~0.2 s with torch imported) must not land inside one variant by chance
            w0, c0 = time.perf_counter(), time.process_time()
            run()
            wall[k].append(time.perf_counter() - w0)
            cpu[k].append(time.process_time() - c0)
    # normal_ runs first and last in each round: the round's reference is the mean of the two
    ref = {"wall": [(a + b) / 2 for a, b in zip(wall["normal_"], wall["normal_ after"])],
           "cpu": [(a + b) / 2 for a, b in zip(cpu["normal_"], cpu["normal_ after"])]}
    wall["normal_"], cpu["normal_"] = ref["wall"], ref["cpu"]
    out: dict[str, Any] = {k: statistics.median(v) for k, v in wall.items()}
    out["params"] = sum(q.numel() for q in model.parameters())
    out.update({"part " + k: statistics.median(v) for k, v in parts.items()})
    out.update({"cpu " + k: statistics.median(v) for k, v in cpu.items()})
    for k in names[1:4]:  # paired ratios, one per round
        out["ratios " + k] = [a / b for a, b in zip(wall[k], ref["wall"])]
        out["cpu ratios " + k] = [a / b for a, b in zip(cpu[k], ref["cpu"])]
    out["ratios init_ warm"], out["cpu ratios init_ warm"] = out["ratios init_ first"], out["cpu ratios init_ first"]
    # consistency: the parts of a round against the whole first init_ of the same round
    out["overhead"] = [a - b for a, b in zip(cpu["init_ first"], ref["cpu"])]
    fixed = [sum(parts[k][i] for k in ("cache", "trace", "plan", "prepare")) for i in range(repeats)]
    out["parts overhead"] = [fixed[i] + parts["draw"][i] - ref["cpu"][i] for i in range(repeats)]
    # the steps before the draws are Python on one core, steadier than the memory-bound draws: beside the direct
    # ratio, 1 + their sum over normal_ (the draws being normal_'s own work: their ratio is printed too)
    out["fixed ratio"] = [1 + fixed[i] / ref["cpu"][i] for i in range(repeats)]
    out["draw over normal_"] = [parts["draw"][i] / ref["cpu"][i] for i in range(repeats)]
    return out


def fresh(model_name: str, processes: int) -> dict[str, float]:
    """Median over fresh processes of the first init_'s CPU time and of normal_'s in the same process."""
    runs = []
    for _ in range(processes):
        r = subprocess.run([sys.executable, __file__, "--child", model_name, "first"], capture_output=True,
                           text=True, check=True)
        runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
    ratio = statistics.median(d["first"] / d["normal_"] for d in runs)
    return {"first": statistics.median(d["first"] for d in runs),
            "normal_": statistics.median(d["normal_"] for d in runs), "ratio": ratio}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=9, help="interleaved rounds (medians; odd: one middle value)")
    ap.add_argument("--models", default="resnet50,decoder350m")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: steady figures on a shared machine)")
    ap.add_argument("--fresh", type=int, default=3, help="fresh processes for the very first init_ (0: skip)")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        child(*args.child)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), median of {args.repeats} interleaved rounds, "
          f"load average {os.getloadavg()[0]:.1f} at the start")
    for name in args.models.split(","):
        s = speed(name, args.repeats)
        n = s["params"]
        m = memory(name)
        ref = s["normal_"]
        print(f"\n{name}: {n / 1e6:.1f}M parameters ({m['param_bytes'] / 2**20:.0f} MiB)")
        print(f"  {'':28s} {'wall':>9s} {'/ normal_':>10s} {'cpu':>9s} {'/ normal_':>10s}   {'extra peak':>11s} "
              f"{'/ params':>9s}")
        mem = {"normal_": m["normal_"], "init_ first": m["init_"], "init_ warm": m["init_ warm"]}
        s["init_ warm"], s["cpu init_ warm"] = s["init_ first"], s["cpu init_ first"]
        cref = s["cpu normal_"]
        for k, label in (("normal_", "torch normal_ (in place)"), ("init_ first", "init_ (trace + plan + draw)"),
                         ("init_ warm", "  same, process warm [1]"),
                         ("init_ again", "init_ again (cached plan)"), ("apply", "Plan.apply alone")):
            extra = f"{mem[k] * m['param_bytes'] / 2**20:8.1f} MiB {mem[k]:8.1%}" if k in mem else ""
            spread = f"  [3] wall {_spread(s['ratios ' + k])}, cpu {_spread(s['cpu ratios ' + k])}" \
                if k in ("init_ first", "init_ again", "apply") else ""
            print(f"  {label:28s} {s[k] * 1e3:7.0f} ms {s[k] / ref:9.2f}x {s['cpu ' + k] * 1e3:7.0f} ms "
                  f"{s['cpu ' + k] / cref:9.2f}x   {extra:20s}{spread}")
        print(f"  {'first init_, taken apart':28s} plan cache (key, store) {s['part cache'] * 1e3:.0f} ms + trace "
              f"{s['part trace'] * 1e3:.0f} ms (of which the guard's record + restore {s['part guard'] * 1e3:.0f} ms) "
              f"+ plan {s['part plan'] * 1e3:.0f} ms + validation {s['part prepare'] * 1e3:.0f} ms + draws "
              f"{s['part draw'] * 1e3:.0f} ms (CPU; normal_ {cref * 1e3:.0f} ms)")
        ms = lambda v: f"{statistics.median(v) * 1e3:.0f} ms [{min(v) * 1e3:.0f} to {max(v) * 1e3:.0f}]"  # noqa: E731
        print(f"  {'':28s} per round (CPU): overhead over normal_ of the whole first init_ {ms(s['overhead'])}, of "
              f"its parts summed {ms(s['parts overhead'])}; draws / normal_ {_spread(s['draw over normal_'])}; "
              f"1 + (cache + trace + plan + validation) / normal_ = {_spread(s['fixed ratio'])}")
        if args.fresh:
            f = fresh(name, args.fresh)
            print(f"  {'first init_ of a process [2]':28s} {'':20s} {f['first'] * 1e3:7.0f} ms {f['ratio']:9.2f}x"
                  f"   (normal_ there: {f['normal_'] * 1e3:.0f} ms)")
        old = m["fresh_then_swap"]
        print(f"  {'old: fresh tensors + swap':28s} {'':41s}   {old * m['param_bytes'] / 2**20:8.1f} MiB "
              f"{old:8.1%}")
        print("  targets: init_ <= 1.10x normal_; extra peak <= 10% of the parameters")
        print("  [1] memory after another model was traced in the process: without the one-time cost of loading "
              "torch's meta kernels (~40 MiB, once per process)")
        print(f"  [2] the very first init_ in a fresh process (median of {args.fresh} processes, CPU time, ratio "
              "to normal_ in that process): includes loading torch's Python meta kernels and initwise's "
              "per-activation caches")
        print(f"  [3] ratio to normal_ within each of the {args.repeats} rounds (paired; normal_ runs first and "
              "last in each round, the mean is the round's reference): median [min-max]; the columns to the left "
              "are medians of each variant's own times")


if __name__ == "__main__":
    main()
