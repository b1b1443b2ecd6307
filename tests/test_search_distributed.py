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
    biolingual.create("tiny", tokenizer_texts=["The sound of a Barred Owl"], seed=0, device="cpu").save_pretrained(
        model
    )
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    for i in range(4):
        sf.write(recordings / f"r{i}.wav", synth_call("Barred Owl", 12.0 + i, 16_000, seed=i), 16_000)
    script = tmp_path / "launch_index.py"
    script.write_text(LAUNCHER)
    index = tmp_path / "index"
    accelerate = Path(sys.executable).parent / "accelerate"
    result = subprocess.run(
        [
            str(accelerate),
            "launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            str(script),
            "index",
            str(recordings),
            "--model",
            str(model),
            "--out",
            str(index),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("indexed 2 new files") == 2  # each rank embedded its half
    records = json.loads((index / "merged" / "records.json").read_text())["records"]
    assert len(records) == 4 and not list((index / "parts").glob("*.npz"))  # rank 0 merged after the barrier
    data = load_index(index)
    assert sorted(Path(f).name for f in data.files) == [f"r{i}.wav" for i in range(4)]
    assert len(data) == 4 * 2  # 12-15 s: a window at 0 s and one ending at the file's end
    assert np.isfinite(np.asarray(data.embeddings, np.float32)).all()


def test_accelerate_simple_launcher_is_refused_with_the_command_that_works(tmp_path):
    """`accelerate launch --cpu --num_processes 2` starts ONE process (its simple launcher): refused before
    any model loads, naming torchrun, instead of one process indexing everything as if alone."""
    script = tmp_path / "launch_index.py"
    script.write_text(LAUNCHER)
    accelerate = Path(sys.executable).parent / "accelerate"
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT")}
    result = subprocess.run(
        [
            str(accelerate),
            "launch",
            "--cpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            str(script),
            "index",
            str(tmp_path),
            "--model",
            str(tmp_path / "no_model"),
            "--out",
            str(tmp_path / "index"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env={**env, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "started one" in result.stderr
    assert "ACCELERATE_USE_CPU=1 torchrun --standalone --nproc_per_node N -m biolingual index" in result.stderr
    assert not (tmp_path / "index").exists()
