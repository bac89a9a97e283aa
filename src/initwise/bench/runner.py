"""Experiment grids: models x schemes x seeds, one JSONL results file, resume, process pools, torch.distributed.

A run is a ``RunSpec``; its ``key`` (task, model, scheme, seed, steps and a hash of the remaining settings) names it
in the results file, one JSON object per line, appended (flush + fsync) the moment the run ends. Rerunning the same
grid into the same file runs only the missing keys; a last line cut short by an interruption is dropped.

Under ``torchrun`` (``RANK``/``WORLD_SIZE`` set) each rank runs the grid entries ``i`` with ``i % world == rank``
into its own shard file, then rank 0 gathers every rank's records over the gloo backend and merges them into the
results file (so the machines need not share a file system).

Example:
    >>> specs = make_grid(["sr-x2"], ["espcn"], ["default"], seeds=[0], steps=2, batch_size=2, patch_size=16,
    ...                   eval_crop=32)
    >>> specs[0].key.split("|")[:5]
    ['sr-x2', 'espcn', 'default', '0', '2']
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .checks import check_grid as check_grid
from .pool import execute as execute
from .store import ResultsFile as ResultsFile
from .store import read_records as read_records
from .store import read_results as read_results

__all__ = [
    "RunSpec", "ResultsFile", "check_grid", "distributed_env", "execute", "make_grid", "parse_model_spec",
    "read_records", "read_results", "run_distributed", "run_grid", "run_one",
]


def _value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_model_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"dncnn:bn=false,depth=6"`` -> ``("dncnn", {"bn": False, "depth": 6})``; a bare name has no options.

    A user's model, ``path/to/file.py:factory`` or ``package.module:factory``, is returned whole without options.
    """
    from .._factory import is_factory_spec
    from ..zoo import list_models

    if is_factory_spec(spec.strip()) and spec.strip().partition(":")[0] not in list_models():
        return spec.strip(), {}
    name, _, tail = spec.strip().partition(":")
    opts: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in tail.split(","))):
        k, eq, v = item.partition("=")
        if not eq:
            raise ValueError(f"model option {item!r} in {spec!r} must be key=value")
        opts[k.strip()] = _value(v.strip())
    return name, opts


@dataclass(frozen=True)
class RunSpec:
    """One training run of the grid: what to build, how to initialize it, how to train it.

    Attributes:
        task: task name (``"sr-x2"``...); model: zoo name with optional options (``"dncnn:bn=false"``);
        scheme: candidate name (``initwise.candidate``); seed: seeds the init, the data and torch's RNG.
        steps, batch_size, patch_size, lr, eval_at, eval_crop, grad_clip: passed to ``bench.train.train``.
        channels: 3 (RGB) or 1 (luma) images; preset: zoo preset for models that have one (``None``: default).
    """

    task: str
    model: str
    scheme: str
    seed: int
    steps: int
    batch_size: int = 16
    patch_size: int = 48
    lr: float = 1e-4
    eval_at: tuple[int, ...] = ()
    eval_crop: int | None = 96
    channels: int = 3
    preset: str | None = None
    grad_clip: float | None = None

    def config(self) -> dict[str, Any]:
        """The settings other than task, model, scheme, seed and steps (what the config hash covers)."""
        d = asdict(self)
        for k in ("task", "model", "scheme", "seed", "steps"):
            d.pop(k)
        d["eval_at"] = list(d["eval_at"])
        return d

    @property
    def config_hash(self) -> str:
        return hashlib.sha1(json.dumps(self.config(), sort_keys=True).encode()).hexdigest()[:10]

    @property
    def key(self) -> str:
        return "|".join(map(str, (self.task, self.model, self.scheme, self.seed, self.steps, self.config_hash)))


def make_grid(tasks: Sequence[str], models: Sequence[str], schemes: Sequence[str], seeds: Sequence[int], *,
              steps: int, skipped: list[str] | None = None, **config: Any) -> list[RunSpec]:
    """The grid ``tasks x models x schemes x seeds`` (in that nesting order) of ``RunSpec``.

    Models whose kind does not match the task (a denoiser on SR) are left out and described in ``skipped`` (when
    given); unknown tasks, models and schemes raise ``ValueError``.
    """
    from .. import candidate
    from ..zoo import info
    from .data import get_task

    for s in schemes:
        candidate(s)  # validates the name now, not half-way through a grid
    from .checks import check_model_options, check_settings

    check_settings(steps, config)
    seeds = list(seeds)
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seeds must be ints >= 0, got {seed!r}")
    for m in models:
        check_model_options(m)
    specs = []
    for t in tasks:
        task = get_task(t)
        for m in models:
            if _is_user_model(m):  # its kind shows on the task's data: check_grid runs it once
                specs += [RunSpec(t, m, s, int(seed), steps, **config) for s in schemes for seed in seeds]
                continue
            meta = info(parse_model_spec(m)[0])
            if meta.task != task.kind:
                if skipped is not None:
                    skipped.append(f"{m} on {t}: a {meta.task} model, the task is {task.kind}")
                continue
            specs += [RunSpec(t, m, s, int(seed), steps, **config) for s in schemes for seed in seeds]
    return specs


def _is_user_model(model: str) -> bool:
    from ..zoo import list_models

    name = parse_model_spec(model)[0]
    return name not in list_models() and ":" in name


def _build(spec: RunSpec) -> tuple[torch.nn.Module, bool]:
    from ..zoo import MODELS, build, info
    from .data import get_task

    if _is_user_model(spec.model):
        from .checks import user_model

        return user_model(spec, get_task(spec.task, channels=spec.channels))
    name, opts = parse_model_spec(spec.model)
    meta, task = info(name), get_task(spec.task, channels=spec.channels)
    kwargs: dict[str, Any] = {"in_channels": spec.channels}
    if meta.task == "sr":
        kwargs["scale"] = task.scale
    if spec.preset is not None and "preset" in inspect.signature(MODELS[name]).parameters:
        kwargs["preset"] = spec.preset
    kwargs.update(opts)
    return build(name, **kwargs), meta.upsampled_input


def _window_means(losses: Sequence[float], steps: Sequence[int]) -> list[float | None]:
    """Mean training loss over the steps before each eval step (``(prev, s]`` in 1-based update counts)."""
    out: list[float | None] = []
    prev = 0
    for s in steps:
        w = [v for v in losses[prev:s] if v is not None]
        out.append(sum(w) / len(w) if w and len(w) == s - prev else None)
        prev = s
    return out


def run_one(spec: RunSpec, num_threads: int | None = None) -> dict[str, Any]:
    """Build, initialize (``initwise.init_`` with ``candidate(spec.scheme)``) and train one run; its record.

    The record holds the spec, ``key``, ``config_hash``, ``status`` (``"ok"`` or ``"error"`` with ``error``), the
    ``RunResult`` fields except the per-step ``losses`` (replaced by ``loss_window``: mean loss over the steps
    before each eval step), ``init_time_s`` and ``total_time_s``. Deterministic for a given spec on one machine.
    """
    from .. import candidate, init_
    from .data import get_task
    from .train import train

    start = time.perf_counter()
    rec: dict[str, Any] = {"key": spec.key, **asdict(spec), "config_hash": spec.config_hash}
    rec["eval_at"] = list(spec.eval_at)
    try:
        task = get_task(spec.task, channels=spec.channels)
        cand = candidate(spec.scheme)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            model, upsample = _build(spec)
            gen = torch.Generator().manual_seed(spec.seed)
            example, _ = task.train_batch(2, spec.patch_size, torch.Generator().manual_seed(spec.seed),
                                          upsample=upsample)
            t0 = time.perf_counter()
            init_(model, example, **cand.plan_kwargs(), generator=gen)
            rec["init_time_s"] = time.perf_counter() - t0
        result = train(model, task, steps=spec.steps, batch_size=spec.batch_size, patch_size=spec.patch_size,
                       lr=spec.lr, seed=spec.seed, eval_at=spec.eval_at or None, eval_crop=spec.eval_crop,
                       upsample_input=upsample, grad_clip=spec.grad_clip, num_threads=num_threads)
        res = result.to_dict()
        losses = res.pop("losses")
        for k in ("task", "seed", "steps", "batch_size", "patch_size", "lr"):
            res.pop(k)
        rec.update(res)
        rec["loss_window"] = _window_means(losses, [s for s in result.eval_steps if s > 0])
        rec["status"] = "ok"
    except Exception as e:  # a failing run is recorded (and not retried), the grid goes on
        rec["status"], rec["error"] = "error", "".join(traceback.format_exception_only(type(e), e)).strip()
    rec["total_time_s"] = time.perf_counter() - start
    return rec


def _sink(rf: "ResultsFile", on_record: Callable[[dict[str, Any]], None] | None) -> Callable[[dict[str, Any]], None]:
    """Append each finished record to ``rf`` at once, then tell ``on_record``."""
    def sink(rec: dict[str, Any]) -> None:
        rf.append(rec)
        if on_record is not None:
            on_record(rec)

    return sink


@dataclass
class GridReport:
    """What a grid call did: runs done now, runs found already finished, the records of the whole grid."""

    ran: int = 0
    reused: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)


def run_grid(specs: Sequence[RunSpec], results: str | os.PathLike[str], *, workers: int = 1,
             num_threads: int | None = None, on_start: Callable[[int, int], None] | None = None,
             on_record: Callable[[dict[str, Any]], None] | None = None) -> GridReport:
    """Run the specs not yet in ``results`` (JSONL), appending each record as it ends; resumable.

    Under ``torchrun`` this dispatches to ``run_distributed``. ``on_start(todo, total)`` is called once before
    running, ``on_record(record)`` after each run (for progress bars).
    """
    if distributed_env() is not None:
        return run_distributed(specs, results, workers=workers, num_threads=num_threads, on_start=on_start,
                               on_record=on_record)
    rf = ResultsFile(results)
    done = rf.keys()
    todo = _unique([s for s in specs if s.key not in done])
    if on_start is not None:
        on_start(len(todo), len(specs))
    ran: list[str] = []

    def sink(rec: dict[str, Any]) -> None:
        if rf.append(rec):
            ran.append(rec["key"])
            if on_record is not None:
                on_record(rec)

    # first pass: the runs no other process holds; then wait for those held elsewhere (and run any whose holder
    # died without recording it), so that every process returns the whole grid
    held = execute(todo, sink, workers=workers, num_threads=num_threads, claim=lambda s: rf.claim(s.key))
    if held:
        execute(held, sink, workers=workers, num_threads=num_threads, claim=lambda s: rf.claim(s.key, wait=True))
    return GridReport(len(ran), len(specs) - len(ran), _select(rf.records(), specs))


def _unique(specs: Iterable[RunSpec]) -> list[RunSpec]:
    seen: set[str] = set()
    out = []
    for s in specs:
        if s.key not in seen:
            seen.add(s.key)
            out.append(s)
    return out


def _select(records: Sequence[dict[str, Any]], specs: Sequence[RunSpec]) -> list[dict[str, Any]]:
    keys = {s.key for s in specs}
    return [r for r in records if r["key"] in keys]


def distributed_env() -> tuple[int, int] | None:
    """``(rank, world_size)`` when launched by torchrun (or an initialized process group), else ``None``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return None


def shard_path(results: str | os.PathLike[str], rank: int, world: int) -> Path:
    """Where rank ``rank`` of ``world`` writes its records: ``<results>.shards/rank<r>-of-<w>.jsonl``."""
    p = Path(results)
    return p.with_name(p.name + ".shards") / f"rank{rank}-of-{world}.jsonl"


def run_distributed(specs: Sequence[RunSpec], results: str | os.PathLike[str], *, workers: int = 1,
                    num_threads: int | None = None, on_start: Callable[[int, int], None] | None = None,
                    on_record: Callable[[dict[str, Any]], None] | None = None,
                    timeout_s: float = 7 * 24 * 3600) -> GridReport:
    """Shard the grid over a torch.distributed (gloo) job; rank 0 merges every rank's records into ``results``.

    Rank ``r`` of ``w`` takes grid entries ``i % w == r`` not already in ``results`` (where it can read it) or in
    its shard file, runs them (with its own pool of ``workers``), then all records are gathered to rank 0, which
    appends those missing from ``results``. The process group is created (gloo) if needed and destroyed if created
    here. Every rank returns a report; only rank 0's ``records`` hold the merged grid.
    """
    import datetime

    import torch.distributed as dist

    created = not dist.is_initialized()
    if created:
        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=timeout_s))
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        grid = _unique(specs)
        mine = [s for i, s in enumerate(grid) if i % world == rank]
        main_done = ResultsFile(results).keys() if rank == 0 or Path(results).exists() else set()
        shard = ResultsFile(shard_path(results, rank, world))
        shard_done = shard.keys()
        todo = [s for s in mine if s.key not in main_done and s.key not in shard_done]
        if on_start is not None:
            on_start(len(todo), len(mine))

        execute(todo, _sink(shard, on_record), workers=workers, num_threads=num_threads)
        own = _select(shard.records(), mine)
        gathered: list[Any] | None = [None] * world if rank == 0 else None
        dist.gather_object(own, gathered, dst=0)
        report = GridReport(len(todo), len(mine) - len(todo))
        if rank == 0:
            assert gathered is not None
            rf = ResultsFile(results)
            have = rf.keys()
            for recs in gathered:
                for rec in recs or []:
                    if rec["key"] not in have:
                        rf.append(rec)
                        have.add(rec["key"])
            report.records = _select(rf.records(), grid)
        dist.barrier()
        return report
    finally:
        if created:
            dist.destroy_process_group()
