"""What the advice says about its own record is what the stored evidence gives: the confidence words' rates,
recomputed from the stored training runs and features (docs/evidence/, ``benchmarks/advise_quality.py``), no
training here."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quality():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import advise_quality
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return advise_quality


def test_the_confidence_record_the_report_prints_is_the_stored_runs(quality, monkeypatch) -> None:
    from initwise._advise_answers import CONFIDENCE_RECORD, CONFIDENCE_SETS, GLOSSARY, confidence_note

    monkeypatch.chdir(ROOT)  # the stores are named relative to the repository
    cells, feats = quality.load()
    sets = [s for s in quality.frozen_sets(cells) if s[1]]
    assert len(sets) == CONFIDENCE_SETS
    assert quality.blind_confidence(cells, feats) == CONFIDENCE_RECORD
    for word, (k, n) in CONFIDENCE_RECORD.items():
        assert 0 <= k <= n and f"{k} of {n}" in GLOSSARY["confidence"] and f"{k} of {n} '{word}'" in \
            confidence_note(word)
