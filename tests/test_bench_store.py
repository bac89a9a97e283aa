"""The bench results store: unreadable lines skipped and reported, no shadowing, no duplicates, concurrent
processes splitting one grid, and a ``kill -9`` at any moment leaving a readable file (real processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from initwise.bench.runner import ResultsFile, make_grid, read_records, read_results

SRC = str(Path(__file__).resolve().parents[1] / "src")
TINY = dict(steps=3, batch_size=2, patch_size=16, lr=1e-3, eval_at=(0, 3), eval_crop=32, channels=1)
ENV = {**os.environ, "PYTHONPATH": SRC, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}


def _complete(seed: int, psnr: float = 21.0) -> dict:
    """A complete ok record of a real grid entry, as run_one writes it (without training)."""
    spec = make_grid(["sr-x2"], ["espcn"], ["default"], [seed], **TINY)[0]
    return {"key": spec.key, **asdict(spec), "eval_at": list(spec.eval_at), "config_hash": spec.config_hash,
            "status": "ok", "eval_steps": [0, 3], "eval_psnr": [20.0, psnr], "final_psnr": psnr}


def _line(rec: dict) -> bytes:
    return (json.dumps(rec, sort_keys=True) + "\n").encode()


def test_invalid_utf8_line_is_skipped_and_reported_and_later_calls_work(tmp_path):
    p = tmp_path / "results.jsonl"
    a, b = _complete(0), _complete(1)
    p.write_bytes(_line(a) + b'{"key": "\xff\xfe broken"}\n' + _line(b))
    got = read_results(p)
    assert [r["key"] for r in got.records] == [a["key"], b["key"]]
    assert got.skipped == [(2, "not UTF-8 (byte 9)")]
    assert "skipped 1 unusable line(s) (2: not UTF-8" in got.describe(p)
    rf = ResultsFile(p)  # opening, appending and reading again all work
    assert rf.append(_complete(2)) and len(rf.records()) == 3


@pytest.mark.parametrize("bad", [b'{"key": "%s"}\n', b'{"key": "%s", "status": "ok"}\n', b"garbage\n",
                                 b'{"key": "%s", "status": "ok", "final_psnr": 99}\n', b"[1, 2]\n"])
def test_stub_or_garbage_never_shadows_a_complete_record(tmp_path, bad):
    p = tmp_path / "results.jsonl"
    rec = _complete(0, psnr=23.5)
    p.write_bytes((bad.replace(b"%s", rec["key"].encode()) if b"%s" in bad else bad) + _line(rec))
    got = read_results(p)
    assert got.records == [rec] and len(got.skipped) == 1 and got.skipped[0][0] == 1
    assert read_records(p)[0]["final_psnr"] == 23.5


def test_a_record_whose_settings_do_not_match_its_key_is_skipped(tmp_path):
    p = tmp_path / "results.jsonl"
    forged = {**_complete(0), "lr": 0.5}  # the key's config hash was made with lr 1e-3
    p.write_bytes(_line(forged))
    got = read_results(p)
    assert got.records == [] and "do not match its key" in got.skipped[0][1]


def test_a_record_of_an_older_version_still_reads(tmp_path):
    """A setting added to RunSpec later is absent from old records: their key parts and hash still vouch for them."""
    p = tmp_path / "results.jsonl"
    old = {k: v for k, v in _complete(0).items() if k != "grad_clip"}
    p.write_bytes(_line(old))
    assert read_results(p).records == [old]
    stub = {k: old[k] for k in ("key", "status", "task", "model", "scheme", "seed", "steps")}
    p.write_bytes(_line({**stub, "config_hash": "0000000000"}))  # a hash that is not the key's
    assert read_results(p).records == []


def test_append_never_duplicates_and_refuses_incomplete(tmp_path):
    rf = ResultsFile(tmp_path / "results.jsonl")
    rec = _complete(0)
    assert rf.append(rec) is True
    assert rf.append({**rec, "final_psnr": 1.0}) is False  # the first complete record of a key stays
    assert rf.path.read_bytes().count(b"\n") == 1
    with pytest.raises(ValueError, match="not a complete run record"):
        rf.append({"key": "k"})
    with pytest.raises(ValueError, match="Out of range float"):
        rf.append({**_complete(1), "final_psnr": float("nan")})


def test_duplicate_lines_are_reported_first_wins(tmp_path):
    p = tmp_path / "results.jsonl"
    p.write_bytes(_line(_complete(0, 21.0)) + _line(_complete(0, 22.0)))
    got = read_results(p)
    assert [r["final_psnr"] for r in got.records] == [21.0]
    assert got.skipped == [(2, "a second record of the key of line 1")]


WRITER = textwrap.dedent("""
    import sys
    from initwise.bench.runner import ResultsFile
    from initwise.bench.store import complete_problem
    import json
    base = json.loads(sys.argv[2])
    rf = ResultsFile(sys.argv[1])
    print("ready", flush=True)
    i = 0
    while True:  # big records, so that a kill lands inside a write now and then
        i += 1
        rec = dict(base, seed=i)
        from initwise.bench.runner import RunSpec
        names = [k for k in RunSpec.__dataclass_fields__]
        spec = RunSpec(**{k: (tuple(rec[k]) if k == "eval_at" else rec[k]) for k in names})
        rec.update(key=spec.key, config_hash=spec.config_hash, pad="x" * 2_000_000)
        rf.append(rec)
""")


@pytest.mark.slow
def test_kill_9_during_writes_leaves_a_readable_store(tmp_path):
    p = tmp_path / "results.jsonl"
    for attempt in range(3):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(p), json.dumps(_complete(0))], env=ENV,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(1.0 + 0.37 * attempt)
        proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()
        got = read_results(p)  # whatever the kill cut, every complete line reads
        assert all(why == "a partial last line (an interrupted write)" for _, why in got.skipped)
        n = len(got.records)
        rf = ResultsFile(p)  # repairs the tail under the lock
        assert p.read_bytes().endswith(b"\n") or p.stat().st_size == 0
        assert len(rf.records()) == n and read_results(p).skipped == []
    assert n >= 1
    assert ResultsFile(p).append(_complete(0)) and len(read_records(p)) == n + 1


HOLDER = textwrap.dedent("""
    import sys, time
    from initwise.bench.runner import ResultsFile
    claim = ResultsFile(sys.argv[1]).claim("some|key")
    print("held" if claim else "refused", flush=True)
    time.sleep(600)
""")


def test_a_claim_dies_with_its_process(tmp_path):
    p = tmp_path / "results.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(p)], env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        assert ResultsFile(p).claim("some|key") is None  # held by a live process
        assert ResultsFile(p).claim("other|key") is not None
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()
    c = ResultsFile(p).claim("some|key")  # kill -9 released it
    assert c is not None
    c.release()


GRID = textwrap.dedent("""
    import json, sys
    from initwise.bench.runner import make_grid, run_grid
    tiny = dict(steps=3, batch_size=2, patch_size=16, lr=1e-3, eval_at=(0, 3), eval_crop=32, channels=1)
    specs = make_grid(["sr-x2"], ["espcn"], ["default", "kaiming_fan_in", "xavier"], [0, 1], **tiny)
    print("go", flush=True)
    sys.stdin.readline()
    r = run_grid(specs, sys.argv[1])
    print(json.dumps({"ran": r.ran, "records": len(r.records)}), flush=True)
""")


@pytest.mark.slow
def test_two_processes_on_one_file_split_the_grid(tmp_path):
    p = tmp_path / "results.jsonl"
    procs = [subprocess.Popen([sys.executable, "-c", GRID, str(p)], env=ENV, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    for proc in procs:
        assert proc.stdout.readline().strip() == "go"
    for proc in procs:  # both start the same grid at the same moment
        proc.stdin.write("\n")
        proc.stdin.flush()
    outs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0
        outs.append(json.loads(out.strip().splitlines()[-1]))
    lines = p.read_text().splitlines()
    keys = [json.loads(line)["key"] for line in lines]
    assert len(keys) == 6 and len(set(keys)) == 6  # every run once: none lost, none repeated
    assert sum(o["ran"] for o in outs) == 6, outs  # the two processes split the work
    assert all(o["records"] == 6 for o in outs)  # and each returns the whole grid
