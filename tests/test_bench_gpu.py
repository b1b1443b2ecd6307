"""The GPU check (benchmarks/bench_gpu.py) in its CPU smoke: every row is in the results, the rows a CPU can run
were measured, and docs/performance.md's GPU section says the GPU figures are still to be taken.

The smoke runs the same code as the GPU check on the tiny preset (two steps per variant, train.py for a few
steps in its own process, `biolingual index` on a short file in its own process): about 40 s on 2 cores."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _common as c
import bench_gpu
import run_all


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU smoke is what runs without CUDA")
def test_the_cpu_smoke_writes_every_row_and_the_section_says_the_gpu_figures_are_to_be_taken(tmp_path, monkeypatch):
    monkeypatch.setattr(c, "RESULTS_DIR", tmp_path)  # not the repository's results
    bench_gpu.main([])  # no CUDA here: the smoke, as `make benchmarks` runs it

    result = json.loads((tmp_path / f"{bench_gpu.SMOKE_NAME}.json").read_text())
    assert not (tmp_path / f"{bench_gpu.NAME}.json").exists()  # a CPU run never stands in for the GPU's figures
    rows = result["rows"]
    assert list(rows) == bench_gpu.row_names()
    measured = {name for name, row in rows.items() if row["measured"]}
    assert measured == {"step/float32", "step/bf16", "train.py", "index/float32/1", "zero_shot"}, {
        name: row.get("reason") for name, row in rows.items()
    }
    for name in ("step/float32", "step/bf16"):
        assert rows[name]["samples_per_s"] > 0 and rows[name]["flops_per_sample"] > 0
        assert rows[name]["mfu"] is None  # no peak for a CPU: MFU is not reported, never guessed
    assert rows["step/tf32"]["reason"] == "needs CUDA"
    assert rows["train.py"]["samples_per_s"] > 0 and 0 <= rows["train.py"]["data_wait_share"] < 1
    # base.yaml trains in bfloat16: the run says so, and is compared with the bfloat16 step
    assert rows["train.py"]["ratio_to_step_alone"] > 0 and rows["train.py"]["reference"] == "step/bf16"
    assert "precision: bfloat16" in rows["train.py"]["precision_line"]
    assert rows["index/float32/1"]["hours_per_minute"] > 0
    assert rows["zero_shot"]["clips_per_s"] > 0

    section = (tmp_path / f"{bench_gpu.NAME}.md").read_text()
    assert "The GPU figures are still to be taken" in section and "CPU smoke" in section
    for what in ("Training step alone", "train.py end to end", "biolingual index", "Zero-shot"):
        assert what in section
    page = "\n".join(run_all._extra_sections())  # docs/performance.md's sections, from these results
    assert "## GPU:" in page and "The GPU figures are still to be taken" in page
    assert any("GPU" in line and "not measured" in line for line in run_all._extra_summary())
