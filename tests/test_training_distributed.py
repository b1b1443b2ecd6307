"""train.py on 2 CPU processes (torchrun, gloo) on the real tiny model: DDP and FSDP2, with checkpoints,
resume and export. These are the commands docs/training.md gives for CPUs; a GPU node runs the same code
under `accelerate launch` (FSDP: `--config_file configs/accelerate/fsdp.yaml`)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import ClapModel

import biolingual
from biolingual.training.checkpoint import load_checkpoint
from biolingual.training.loop import main

from .shards import write_shards
from .test_training import ROOT, _args, _final_params

ENV = {**os.environ, "ACCELERATE_USE_CPU": "1", "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", str(ROOT / "train.py"), *args]
    result = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def _crashed_copy(run: Path, crashed: Path, step: int) -> None:
    """A run folder as it was when the run died right after writing step_N.pt."""
    shutil.copytree(run / "init", crashed / "init")
    (crashed / "checkpoints").mkdir()
    shutil.copy(run / "checkpoints" / f"step_{step}.pt", crashed / "checkpoints" / f"step_{step}.pt")


def _assert_same(a: dict, b: dict, atol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].shape == b[key].shape, key
        assert (a[key].float() - b[key].float()).abs().max() <= atol, key


def test_ddp_two_processes_train_in_lockstep_and_resume(data, saved_model, tmp_path):
    """DDP with the sigmoid loss (its bias is read outside the model's forward), the moving average and a
    teacher: both ranks step together, and a resume gives the same weights and the same average."""
    out = tmp_path / "ddp"
    options = (
        "--train.steps",
        "4",
        "--data.workers",
        "1",
        "--checkpoint.every",
        "2",
        "--train.loss",
        "sigmoid",
        "--train.ema_decay",
        "0.9",
        "--distill.teacher",
        str(saved_model),
    )
    _torchrun(*_args(data, out, *options))
    state = load_checkpoint(out / "checkpoints" / "step_4.pt")
    assert state["step"] == 4 and len(state["rng"]) == 2 and len(state["data"]) == 2  # both ranks reported
    assert state["ema_updates"] == 4 and "clap.logit_bias" in state["ema"]
    best = biolingual.load(out / "best", device="cpu")
    _assert_same({k: v for k, v in best.state_dict().items()}, state["ema"], atol=0)  # the average is exported
    crashed = tmp_path / "ddp_crashed"
    _crashed_copy(out, crashed, 2)
    _torchrun(*_args(data, crashed, *options, "--resume", "latest"))
    _assert_same(_final_params(out, 4), _final_params(crashed, 4))
    _assert_same(state["ema"], load_checkpoint(crashed / "checkpoints" / "step_4.pt")["ema"], atol=0)


def test_fsdp2_trains_checkpoints_resumes_exactly_and_exports(data, tmp_path):
    """The real Trainer shards the real tiny ClapModel with FSDP2 (its 0-dim temperatures and the sigmoid loss's
    bias stay whole; the moving average is kept beside each process's shards), saves
    whole checkpoints, resumes to the same parameters as the uninterrupted sharded run, and exports best/
    that transformers loads with the same outputs. Validation is embedded across both ranks, in lockstep."""
    out = tmp_path / "fsdp"
    write_shards(tmp_path, "held", n_species=4, per_species=3, per_shard=8, seed=9)  # 2 shards: 8 + 4 samples
    common = (
        "--train.fsdp",
        "true",
        "--train.steps",
        "4",
        "--data.workers",
        "1",
        "--checkpoint.every",
        "2",
        "--data.valid",
        str(tmp_path / "held-{000000..000001}.tar"),
        "--valid.every",
        "2",
        "--checkpoint.keep_best",
        "1",
        "--train.loss",
        "sigmoid",
        "--train.ema_decay",
        "0.9",
    )
    result = _torchrun(*_args(data, out, *common))
    assert "model sharded with FSDP2 over 2 processes" in result.stderr
    # each rank embedded its shard of the validation set (none stood idle while rank 0 embedded all of it)
    assert "validation: rank 0 of 2 embedded 8 samples of 1 shards" in result.stderr
    assert "validation: rank 1 of 2 embedded 4 samples of 1 shards" in result.stderr
    straight = _final_params(out, 4)
    start = biolingual.load(out / "init", device="cpu").state_dict()
    assert straight.keys() == start.keys() | {"clap.logit_bias"} and straight["clap.logit_scale_a"].shape == torch.Size(
        []
    )
    assert any(not torch.equal(straight[k], start[k]) for k in start)  # it trained
    state = load_checkpoint(out / "checkpoints" / "step_4.pt")
    assert set(state["optimizer"]["state"]) >= {
        "clap.logit_scale_a",
        "clap.logit_bias",
    }  # the bias stays whole, like the temperatures
    assert state["ema"].keys() == straight.keys() and any(
        not torch.equal(state["ema"][k], straight[k]) for k in straight
    )

    crashed = tmp_path / "fsdp_crashed"
    _crashed_copy(out, crashed, 2)
    _torchrun(*_args(data, crashed, *common, "--resume", "latest"))
    _assert_same(straight, _final_params(crashed, 4))
    _assert_same(state["ema"], load_checkpoint(crashed / "checkpoints" / "step_4.pt")["ema"], atol=0)  # the average too

    # best/ is a plain transformers folder: ClapModel gives the same embeddings as biolingual's model
    best = out / "best"
    ours = biolingual.load(best, device="cpu")
    theirs = ClapModel.from_pretrained(best).eval()
    tokens = ours.tokenize(["The sound of a frog"])
    with torch.no_grad():
        expected = torch.nn.functional.normalize(theirs.get_text_features(**tokens).pooler_output, dim=-1)
    torch.testing.assert_close(ours.embed_text(["The sound of a frog"]), expected, rtol=0, atol=1e-6)
    # the exported weights are those of the best file: the moving average at the best step
    exported = torch.load(next((out / "checkpoints").glob("best_step_*.pt")), weights_only=True)["model"]
    for key, value in ours.state_dict().items():
        torch.testing.assert_close(value, exported[key], rtol=0, atol=0)

    # The sharded checkpoint holds the whole, name-keyed model and optimizer state: one process trains on from it.
    single = tmp_path / "single"
    _crashed_copy(out, single, 2)
    with pytest.raises(SystemExit, match="was trained with train.loss sigmoid and this run asks for infonce"):
        main(_args(data, single, "--train.steps", "3", "--data.workers", "0", "--resume", "latest"))
    result = main(
        _args(
            data,
            single,
            "--train.steps",
            "3",
            "--data.workers",
            "0",
            "--resume",
            "latest",
            "--train.loss",
            "sigmoid",
            "--train.ema_decay",
            "0.9",
        )
    )
    assert result["step"] == 3
    after = _final_params(single, 3)
    assert after.keys() == straight.keys() and any(not torch.equal(after[k], _final_params(out, 2)[k]) for k in after)


def test_a_launch_config_that_does_not_fit_the_machine_stops_with_a_message(data, tmp_path):
    """An FSDP accelerate config on a machine without GPUs makes accelerate run each process alone; training
    would then write the same files from every process. It stops instead, saying why and what to run."""
    config = tmp_path / "fsdp.yaml"
    config.write_text(
        "compute_environment: LOCAL_MACHINE\ndistributed_type: FSDP\nnum_machines: 1\nnum_processes: 2\n"
        "machine_rank: 0\nmixed_precision: 'no'\nuse_cpu: true\nfsdp_config:\n  fsdp_version: 2\n"
    )
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [
        str(accelerate),
        "launch",
        "--config_file",
        str(config),
        str(ROOT / "train.py"),
        *_args(data, tmp_path / "run", "--train.steps", "2"),
    ]
    result = subprocess.run(
        cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=180
    )
    assert result.returncode != 0
    assert (
        "the launcher started 2 processes but accelerate sees 1" in result.stderr
        and "--train.fsdp true" in result.stderr
    )
    assert "biolingual/training" not in result.stderr  # a message from train.py, not a traceback through it
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_fsdp_refuses_fp16_and_a_single_process(data, tmp_path):
    with pytest.raises(SystemExit, match="float16 is not supported with FSDP"):
        main(_args(data, tmp_path / "run", "--train.fsdp", "true", "--train.precision", "float16"))
    with pytest.raises(SystemExit, match="this is a single process: launch with `torchrun"):
        main(_args(data, tmp_path / "run", "--train.fsdp", "true"))
