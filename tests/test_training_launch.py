"""How train.py is launched: the precision the launcher asks for, a launch that started fewer processes than
it was asked for, and one job per run folder."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from biolingual.training.config import ConfigError, load_config, resolve_precision
from biolingual.training.loop import Trainer, main

from .test_training import ROOT, _args

ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
QUIET = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_precision_has_one_source_of_truth():
    """In the project's words (float32, bfloat16, float16); the launcher's (accelerate's) no/bf16/fp16 are read as
    them."""
    assert resolve_precision("", None) == ("float32", "the default")
    assert resolve_precision("", "bf16")[0] == "bfloat16"  # unset: the launcher's
    assert resolve_precision("bfloat16", "bf16") == ("bfloat16", "train.precision")
    assert resolve_precision("bfloat16", "no")[0] == "bfloat16"  # accelerate exports "no" when nothing was asked for
    assert resolve_precision("float16", None)[0] == "float16"
    assert resolve_precision("bf16", None)[0] == "bfloat16"  # a Config built in Python with accelerate's word
    with pytest.raises(
        ConfigError, match=r"'train.precision' is 'float32' in the training config but the launcher asks for 'bf16'"
    ):
        resolve_precision("float32", "bf16")
    with pytest.raises(ConfigError, match="does not train in"):
        resolve_precision("", "fp8")


def test_the_launchers_mixed_precision_reaches_the_trainer(data, tmp_path, monkeypatch):
    """`accelerate launch --mixed_precision bf16` (or an accelerate config file's `mixed_precision: bf16`, as
    configs/accelerate/fsdp.yaml has) only sets ACCELERATE_MIXED_PRECISION: the trainer must train at it."""
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    trainer = Trainer(load_config(_args(data, tmp_path / "run", "--train.steps", "1")))
    assert trainer.accelerator.mixed_precision == "bf16" and trainer.precision == "bfloat16"
    trainer.close()
    assert "precision: bfloat16" in (tmp_path / "run" / "config.yaml").read_text()  # the run says what it trained at
    with pytest.raises(
        SystemExit, match="'train.precision' is 'float32' in the training config but the launcher asks for 'bf16'"
    ):
        main(_args(data, tmp_path / "other", "--train.steps", "1", "--train.precision", "float32"))


def test_accelerate_launch_passes_its_precision_and_refuses_a_one_process_launch_of_two(data, tmp_path):
    """Through the real launcher: `--mixed_precision bf16` trains in bf16 (the log says where it came from);
    `--cpu --num_processes 2` starts one process (accelerate's simple launcher), which stops and says what
    starts two instead of training alone."""
    ran = subprocess.run(
        [
            ACCELERATE,
            "launch",
            "--cpu",
            "--num_processes",
            "1",
            "--mixed_precision",
            "bf16",
            str(ROOT / "train.py"),
            *_args(data, tmp_path / "bf16", "--train.steps", "1", "--data.workers", "0"),
        ],
        env=QUIET,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "precision: bfloat16 (from the launcher (ACCELERATE_MIXED_PRECISION))" in ran.stderr

    two = subprocess.run(
        [
            ACCELERATE,
            "launch",
            "--cpu",
            "--num_processes",
            "2",
            str(ROOT / "train.py"),
            *_args(data, tmp_path / "two", "--train.steps", "2"),
        ],
        env=QUIET,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode != 0
    assert (
        "started one" in two.stderr
        and "ACCELERATE_USE_CPU=1 torchrun --standalone --nproc_per_node N train.py" in two.stderr
    )
    assert "error: `accelerate launch` was asked for several processes" in two.stderr
    assert "biolingual/" not in two.stderr  # train.py's message, not a traceback through it (accelerate prints its own)
    assert not (tmp_path / "two" / "checkpoints").exists()


def test_a_second_trainer_on_a_run_folder_is_refused_with_the_holders_pid(data, tmp_path):
    """A trainer holds its run folder (a real train.py process, held at its first step through a fault
    point); another trainer on the folder, e.g. `--resume latest` while workers of a killed torchrun job
    still write into it, stops with the holder's pid and host. Once the holder has gone, the folder is free."""
    out, gate = tmp_path / "run", tmp_path / "gate"
    env = {**QUIET, "BIOLINGUAL_PAUSE_AT": f"train.step={gate}"}
    holder = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *_args(data, out, "--train.steps", "2", "--data.workers", "0")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        paused = Path(f"{gate}.paused")
        while not paused.exists():  # the holder writes it when it reaches the point (the run is then locked)
            assert holder.poll() is None, holder.stderr.read()[-3000:]
            time.sleep(0.05)  # waits on the file the child writes at the point (not a timed race)
        with pytest.raises(
            SystemExit, match=rf"run folder '{out}' is in use by another trainer \(pid {holder.pid} on "
        ):
            main(_args(data, out, "--train.steps", "2", "--resume", "latest"))
        gate.touch()
        assert holder.wait(timeout=300) == 0, holder.stderr.read()[-3000:]
    finally:
        holder.kill()
    result = main(_args(data, out, "--train.steps", "3", "--data.workers", "0", "--resume", "latest"))
    assert result["step"] == 3
