"""`accelerate launch` with 2 CPU processes: the files are split by rank and the parts merged into one index."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

import biolingual
from biolingual.search import load_index
from biolingual.synthetic import synth_call

LAUNCHER = """
import argparse, sys
from biolingual.search.cli import add_subcommands
parser = argparse.ArgumentParser(prog="biolingual")
add_subcommands(parser.add_subparsers(dest="command", required=True))
args = parser.parse_args(sys.argv[1:])
sys.exit(args.func(args))
"""


def test_two_processes_split_the_files(tmp_path):
    model = tmp_path / "model"
    biolingual.create("tiny", tokenizer_texts=["The sound of a Barred Owl"], seed=0, device="cpu").save_pretrained(model)
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    for i in range(4):
        sf.write(recordings / f"r{i}.wav", synth_call("Barred Owl", 12.0 + i, 16_000, seed=i), 16_000)
    script = tmp_path / "launch_index.py"
    script.write_text(LAUNCHER)
    index = tmp_path / "index"
    accelerate = Path(sys.executable).parent / "accelerate"
    result = subprocess.run(
        [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", str(script), "index", str(recordings), "--model", str(model), "--out", str(index),
         "--device", "cpu"],
        capture_output=True, text=True, timeout=180,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("indexed 2 new files") == 2  # each rank embedded its half
    assert len(json.loads((index / "merged" / "parts.json").read_text())) == 4  # rank 0 merged after the barrier
    data = load_index(index)
    assert sorted(Path(f).name for f in data.files) == [f"r{i}.wav" for i in range(4)]
    assert len(data) == 4 * 2  # 12-15 s: a window at 0 s and one ending at the file's end
    assert np.isfinite(np.asarray(data.embeddings, np.float32)).all()
