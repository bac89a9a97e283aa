"""Real-process FSDP2 runs for tests/test_sharded.py and benchmarks/bench_sharded.py (gloo, CPU).

Run: python tests/dist_worker.py WORLD OUT_DIR [test|bench]

Spawns WORLD processes. Each builds the model on the meta device, shards every layer and the root with
``fully_shard`` on a 1-d CPU mesh, materializes it with ``to_empty(device="cpu")`` and calls ``iw.init_``
(collectively: every rank, same seed); then gathers the full weights (``full_tensor()``). Rank 0 saves, per scheme,
the gathered weights, every rank's local shard shape and init time (wall, CPU) to ``OUT_DIR/<scheme>.pt``. The ``test`` run
also checks a DistributedDataParallel model initialized on all ranks with one seed (saved as ``ddp.pt``: every
rank's weights).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

SCHEMES = {  # name -> (scheme, options, seed)
    "kaiming_fan_in": ("kaiming_fan_in", {}, 1),
    "kaiming_fan_out_truncated": ("kaiming_fan_out", {"distribution": "truncated_normal"}, 2),
    "orthogonal": ("orthogonal", {}, 3),
    "xavier_uniform": ("xavier", {"distribution": "uniform"}, 4),
}


class Net(nn.Module):
    """Rows that shard unevenly over 2 and 4 ranks (11, 9, 5; 5 rows leave rank 3 of 4 empty), a norm, a GELU."""

    def __init__(self, width: int = 9, depth: int = 1, vocab: int = 11) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, 6)
        self.inp = nn.Linear(6, width)
        self.body = nn.Sequential(*[nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU())
                                    for _ in range(depth)])
        self.out = nn.Linear(width, 5)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(torch.relu(self.inp(self.emb(ids)))))


def build(kind: str) -> nn.Module:
    return Net() if kind == "test" else Net(width=1536, depth=8, vocab=4096)  # bench: 25M parameters


def example(kind: str, device: str) -> torch.Tensor:
    return torch.zeros(2, 4, dtype=torch.long, device=device)


def _shard(model: nn.Module, mesh) -> nn.Module:
    from torch.distributed.fsdp import fully_shard

    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Embedding, nn.LayerNorm)):
            fully_shard(m, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def worker(rank: int, world: int, store: str, out: str, kind: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        from torch.distributed.device_mesh import init_device_mesh

        import initwise as iw

        mesh = init_device_mesh("cpu", (world,))
        schemes = SCHEMES if kind == "test" else {"kaiming_fan_in": SCHEMES["kaiming_fan_in"]}
        for name, (scheme, options, seed) in schemes.items():
            with torch.device("meta"):
                model = build(kind)
            _shard(model, mesh)
            model.to_empty(device="cpu")
            dist.barrier()
            t0, c0 = time.perf_counter(), time.process_time()
            iw.init_(model, example(kind, "meta"), scheme, seed=seed, **options)
            elapsed = (time.perf_counter() - t0, time.process_time() - c0)
            full = {n: p.full_tensor() for n, p in model.named_parameters()}
            shapes = {n: tuple(p.to_local().shape) for n, p in model.named_parameters()}
            gathered: list = [None] * world
            dist.all_gather_object(gathered, (shapes, elapsed))
            if rank == 0:
                torch.save({"full": full, "local_shapes": [g[0] for g in gathered],
                            "seconds": [g[1] for g in gathered], "world": world}, Path(out) / f"{name}.pt")
        if kind == "test":
            _ddp(rank, world, out)
        dist.barrier()  # both ranks done before the group goes (a rank tearing it down under the other's pending
        # gloo work aborted once on a loaded machine: "terminate called without an active exception")
    finally:
        dist.destroy_process_group()


def _ddp(rank: int, world: int, out: str) -> None:
    """DDP recipe: init_ on every rank with one seed before wrapping; the weights are identical everywhere."""
    import initwise as iw
    from torch.nn.parallel import DistributedDataParallel

    torch.manual_seed(100 + rank)  # different constructor draws per rank: init_ must make them equal
    model = build("test")
    iw.init_(model, example("test", "cpu"), "kaiming", seed=5)
    ddp = DistributedDataParallel(model)
    state = {n: p.detach().clone() for n, p in ddp.module.named_parameters()}
    gathered: list = [None] * world
    dist.all_gather_object(gathered, state)
    if rank == 0:
        torch.save(gathered, Path(out) / "ddp.pt")
    del ddp  # its reducer released while the process group is still there


def main() -> None:
    world, out = int(sys.argv[1]), sys.argv[2]
    kind = sys.argv[3] if len(sys.argv) > 3 else "test"
    os.makedirs(out, exist_ok=True)
    fd, store = tempfile.mkstemp(prefix="initwise-store-")
    os.close(fd)
    os.unlink(store)  # the file store must not exist yet
    try:
        mp.spawn(worker, args=(world, store, out, kind), nprocs=world)
    finally:
        if os.path.exists(store):
            os.unlink(store)


if __name__ == "__main__":
    main()
