"""FSDP2 sharded init with real processes (2 ranks, gloo, CPU): gathered weights are bit-identical to a single
process init with the same seed; DDP models initialized with one seed are identical on every rank."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import initwise as iw

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dist_worker  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fsdp2")
    r = subprocess.run([sys.executable, dist_worker.__file__, "2", str(out), "test"], capture_output=True, text=True,
                       timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.mark.parametrize("name", sorted(dist_worker.SCHEMES))
def test_fully_sharded_init_gathers_to_the_single_process_init(two_ranks: Path, name: str) -> None:
    scheme, options, seed = dist_worker.SCHEMES[name]
    got = torch.load(two_ranks / f"{name}.pt")
    ref = dist_worker.build("test")
    iw.init_(ref, dist_worker.example("test", "cpu"), scheme, seed=seed, **options)
    expected = dict(ref.named_parameters())
    assert set(got["full"]) == set(expected)
    for n, t in got["full"].items():
        assert torch.equal(t, expected[n]), n
    # every rank held only its own shard: Shard(0) chunks of ceil(rows / 2), the last one shorter
    for n, t in expected.items():
        rows = t.shape[0]
        first = -(-rows // 2)
        assert [s[n] for s in got["local_shapes"]] == [(first, *t.shape[1:]), (rows - first, *t.shape[1:])], n


def test_the_shards_are_not_copies_of_each_other(two_ranks: Path) -> None:
    """DTensor's own normal_ on a gloo mesh gives both ranks the same shard; the gathered weight must not repeat."""
    got = torch.load(two_ranks / "kaiming_fan_in.pt")["full"]
    w = got["inp.weight"]  # 9 rows: 5 on rank 0, 4 on rank 1
    assert not torch.equal(w[:4], w[5:9])


def test_ddp_models_initialized_with_one_seed_are_identical_on_every_rank(two_ranks: Path) -> None:
    states = torch.load(two_ranks / "ddp.pt")
    assert len(states) == 2
    for n in states[0]:
        assert torch.equal(states[0][n], states[1][n]), n
    ref = dist_worker.build("test")
    iw.init_(ref, dist_worker.example("test", "cpu"), "kaiming", seed=5)
    for n, p in ref.named_parameters():
        assert torch.equal(states[0][n], p), n
