"""Tests of the benchmark runner: resume after an interruption, two-process sharding, determinism, the summary."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from initwise.bench.runner import ResultsFile, make_grid, read_records, run_grid, shard_path
from initwise.bench.summary import format_table, plot, summarize, welch

TIMES = ("wall_time_s", "total_time_s", "init_time_s")
# the smallest useful grid: ESPCN (21k parameters) on 16-pixel patches, a 32-pixel test crop, 3 updates
TINY = dict(steps=3, batch_size=2, patch_size=16, lr=1e-3, eval_at=(0, 3), eval_crop=32, channels=1)
SCHEMES = ["default", "kaiming_fan_in"]


def _strip(records: list[dict]) -> dict[str, dict]:
    return {r["key"]: {k: v for k, v in r.items() if k not in TIMES} for r in records}


def test_grid_skips_models_of_the_other_task() -> None:
    skipped: list[str] = []
    specs = make_grid(["sr-x2"], ["espcn", "dncnn"], SCHEMES, [0, 1], skipped=skipped, **TINY)
    assert [(s.model, s.scheme, s.seed) for s in specs] == [("espcn", "default", 0), ("espcn", "default", 1),
                                                           ("espcn", "kaiming_fan_in", 0),
                                                           ("espcn", "kaiming_fan_in", 1)]
    assert len(skipped) == 1 and "dncnn" in skipped[0] and "denoise" in skipped[0]
    with pytest.raises(ValueError, match="unknown candidate"):
        make_grid(["sr-x2"], ["espcn"], ["no_such_scheme"], [0], **TINY)
    # the key changes with any setting, so a results file never mixes configurations
    other = make_grid(["sr-x2"], ["espcn"], SCHEMES, [0, 1], **{**TINY, "lr": 2e-3})
    assert not {s.key for s in specs} & {s.key for s in other}


def test_resume_after_interruption_runs_only_the_missing_and_reproduces(tmp_path: Path) -> None:
    specs = make_grid(["sr-x2"], ["espcn"], SCHEMES, [0], **TINY)
    results = tmp_path / "results.jsonl"
    first = run_grid(specs, results)
    assert first.ran == 2 and all(r["status"] == "ok" for r in first.records)
    assert all(r["eval_steps"] == [0, 3] and r["initial_loss"] > 0 and r["initial_output_std"] > 0
               for r in first.records)
    # interrupted while writing the second record: a partial line at the end
    lines = results.read_text().splitlines(keepends=True)
    assert len(lines) == 2
    results.write_text(lines[0] + lines[1][: len(lines[1]) // 2])
    assert len(read_records(results)) == 1
    ran: list[str] = []
    second = run_grid(specs, results, on_record=lambda r: ran.append(r["key"]))
    assert ran == [json.loads(lines[1])["key"]] and (second.ran, second.reused) == (1, 1)
    text = results.read_text()
    assert text.endswith("\n") and len(text.splitlines()) == 2
    assert all(json.loads(line) for line in text.splitlines())
    # the rerun reproduces the interrupted run exactly (same seed, same machine)
    assert _strip(second.records) == _strip(first.records)
    # nothing left to do
    assert run_grid(specs, results).ran == 0


def test_two_process_sharding_matches_one_process(tmp_path: Path) -> None:
    out = tmp_path / "dist"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "initwise._cli.main", "bench", "sr-x2", "--models", "espcn", "--schemes", ",".join(SCHEMES),
           "--seeds", "1", "--steps", "3", "--batch-size", "2", "--patch-size", "16", "--lr", "1e-3",
           "--eval-at", "0,3", "--eval-crop", "32", "--channels", "1", "--out", str(out), "--quiet", "--no-plot"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    specs = make_grid(["sr-x2"], ["espcn"], SCHEMES, [0], **TINY)
    merged = read_records(out / "results.jsonl")
    assert sorted(r["key"] for r in merged) == sorted(s.key for s in specs)  # nothing lost or duplicated
    assert len((out / "results.jsonl").read_text().splitlines()) == len(specs)
    shards = [read_records(shard_path(out / "results.jsonl", r, 2)) for r in range(2)]
    assert [len(s) for s in shards] == [1, 1] and shards[0][0]["key"] != shards[1][0]["key"]
    # one seed per cell: no spread, no test claimed
    assert "no spread and no significance test" in proc.stdout and "+- nan" not in proc.stdout
    assert "Welch" not in proc.stdout
    single = run_grid(specs, tmp_path / "single.jsonl")
    assert _strip(merged) == _strip(single.records)


def _complete(seed: int) -> dict:
    """A complete ok record of a real grid entry (as run_one writes it), without training."""
    from dataclasses import asdict

    spec = make_grid(["sr-x2"], ["espcn"], ["default"], [seed], **TINY)[0]
    return {"key": spec.key, **asdict(spec), "eval_at": list(spec.eval_at), "config_hash": spec.config_hash,
            "status": "ok", "eval_steps": [0, 3], "eval_psnr": [20.0, 21.0 + seed], "final_psnr": 21.0 + seed}


def test_results_file_repairs_a_partial_last_line(tmp_path: Path) -> None:
    p = tmp_path / "r.jsonl"
    a, b, c = _complete(0), _complete(1), _complete(2)
    line_a = json.dumps(a, sort_keys=True) + "\n"
    p.write_text(line_a + json.dumps(b)[:40])
    rf = ResultsFile(p)
    assert p.read_text() == line_a
    assert rf.append(c)
    assert [r["key"] for r in rf.records()] == [a["key"], c["key"]]


def _rec(model: str, scheme: str, seed: int, psnr: float) -> dict:
    return {"key": f"{model}|{scheme}|{seed}", "status": "ok", "task": "sr-x2", "model": model, "scheme": scheme,
            "seed": seed, "final_psnr": psnr, "eval_steps": [0, 10], "eval_psnr": [10.0, psnr],
            "baseline_psnr": 30.0, "initial_loss": 0.5, "initial_output_std": 0.1, "initial_target_std": 0.2,
            "wall_time_s": 1.0, "diverged": False}


def test_summary_ranks_and_marks_differences_beyond_seed_noise(tmp_path: Path) -> None:
    recs = ([_rec("m", "default", i, v) for i, v in enumerate((30.0, 30.1, 29.9))]
            + [_rec("m", "good", i, v) for i, v in enumerate((31.0, 31.2, 30.9))]
            + [_rec("m", "same", i, v) for i, v in enumerate((30.05, 29.8, 30.2))])
    rows = {r.scheme: r for r in summarize(recs)}
    assert [rows[s].rank for s in ("good", "same", "default")] == [1, 2, 3]
    assert math.isclose(rows["good"].mean, 31.033333, abs_tol=1e-5)
    assert math.isclose(rows["good"].std, 0.152753, abs_tol=1e-5)
    assert rows["good"].p_default < 0.05 and rows["same"].p_default > 0.5
    # Welch's p from its textbook formula (t with Welch-Satterthwaite degrees of freedom)
    from scipy.stats import t as student_t

    a, b = (31.0, 31.2, 30.9), (30.0, 30.1, 29.9)
    va, vb = (sum((x - sum(s) / 3) ** 2 for x in s) / 2 / 3 for s in (a, b))
    tval = (sum(a) / 3 - sum(b) / 3) / math.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)
    assert math.isclose(welch(a, b), 2 * student_t.sf(abs(tval), dof), rel_tol=1e-9)
    assert math.isnan(welch([1.0], [2.0, 3.0]))
    text = format_table(list(rows.values()))
    assert "Welch t-test, two-sided" in text and "*" in text
    plot(recs, str(tmp_path / "p.png"))
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
