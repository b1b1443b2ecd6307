"""train.py end to end on real shards: runs, resumes exactly, validates, exports, fails early on bad input."""
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import ClapModel

import biolingual
from biolingual.loss import ContrastiveLoss
from biolingual.training.config import load_config
from biolingual.training.loop import Trainer, main
from biolingual.training.schedule import lr_at

from .shards import write_shards

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("train_data")
    write_shards(d, "train", n_species=4, per_species=6, per_shard=8)
    write_shards(d, "valid", n_species=4, per_species=2, per_shard=100, seed=9)
    return d


def _args(data, out, *extra):
    return [
        "--data.train", str(data / "train-{000000..000002}.tar"), "--data.samples_per_epoch", "24",
        "--data.workers", "2", "--data.clip_seconds", "2", "--model.vocab_size", "300",
        "--train.batch_size", "4", "--train.lr", "1e-3", "--train.warmup", "3", "--train.seed", "1",
        "--log.every", "5", "--log.tensorboard", "false", "--out", str(out), *extra,
    ]


def _final_params(out: Path, step: int) -> dict:
    return torch.load(out / "checkpoints" / f"step_{step}.pt", map_location="cpu", weights_only=False)["model"]


def test_ten_plus_resume_plus_ten_equals_twenty_straight(data, tmp_path):
    straight = tmp_path / "straight"
    main(_args(data, straight, "--train.steps", "20", "--checkpoint.every", "10", "--checkpoint.keep_last", "5"))
    # A run that stopped at step 10: its folder as it was then (no later checkpoint, no export).
    crashed = tmp_path / "crashed"
    shutil.copytree(straight / "init", crashed / "init")
    (crashed / "checkpoints").mkdir()
    shutil.copy(straight / "checkpoints" / "step_10.pt", crashed / "checkpoints" / "step_10.pt")
    result = main(_args(data, crashed, "--train.steps", "20", "--checkpoint.every", "10", "--resume", "latest"))
    assert result["step"] == 20
    a, b = _final_params(straight, 20), _final_params(crashed, 20)
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key].float() - b[key].float()).abs().max() <= 1e-5, key
    moved = max((a[k].float() - _final_params(straight, 10)[k].float()).abs().max() for k in a)
    assert moved > 1e-4  # the last ten steps did train


def test_run_validates_keeps_best_and_exports_a_loadable_model(data, tmp_path):
    out = tmp_path / "run"
    result = main(_args(data, out, "--train.steps", "8", "--data.valid", str(data / "valid-000000.tar"),
                        "--valid.every", "4", "--checkpoint.every", "2", "--checkpoint.keep_last", "2",
                        "--checkpoint.keep_best", "1", "--log.tensorboard", "true"))
    assert result["step"] == 8 and not result["stopped_early"]
    assert {"text_to_audio/R@1", "audio_to_text/mAP@10"} <= set(result["metrics"])
    steps = sorted(p.name for p in (out / "checkpoints").glob("step_*.pt"))
    assert steps == ["step_6.pt", "step_8.pt"]  # keep_last 2
    assert len(list((out / "checkpoints").glob("best_step_*.pt"))) == 1  # keep_best 1
    assert (out / "config.yaml").is_file() and list((out / "tensorboard").rglob("events.out.tfevents*"))
    model = biolingual.load(out / "best", device="cpu")
    assert model.embed_text(["The sound of a frog"]).shape == (1, model.embedding_dim)
    ClapModel.from_pretrained(out / "best")


def test_two_processes_train_in_lockstep(data, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", str(ROOT / "train.py"),
           *_args(data, out, "--train.steps", "4", "--data.workers", "1", "--checkpoint.every", "2")]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(out / "checkpoints" / "step_4.pt", weights_only=False)
    assert state["step"] == 4 and len(state["rng"]) == 2  # both ranks reported their state
    biolingual.load(out / "best", device="cpu")
    # resumed under DDP from step 2, the run ends where the straight one did
    crashed = tmp_path / "ddp_crashed"
    shutil.copytree(out / "init", crashed / "init")
    (crashed / "checkpoints").mkdir()
    shutil.copy(out / "checkpoints" / "step_2.pt", crashed / "checkpoints" / "step_2.pt")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", str(ROOT / "train.py"),
           *_args(data, crashed, "--train.steps", "4", "--data.workers", "1", "--checkpoint.every", "2", "--resume", "latest")]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = _final_params(out, 4), _final_params(crashed, 4)
    for key in a:
        assert (a[key].float() - b[key].float()).abs().max() <= 1e-5, key


def test_non_finite_losses_stop_the_run_and_keep_checkpoints(data, tmp_path):
    out = tmp_path / "nan"
    result = main(_args(data, out, "--train.steps", "30", "--train.lr", "1e20", "--train.warmup", "0",
                        "--train.grad_clip", "0", "--train.max_bad_steps", "3", "--checkpoint.every", "1",
                        "--checkpoint.keep_last", "3"))
    assert result["stopped_early"] and result["step"] < 30
    kept = sorted(int(p.stem.split("_")[1]) for p in (out / "checkpoints").glob("step_*.pt"))
    assert kept and max(kept) < result["step"]  # nothing written during the non-finite streak


def test_bad_shards_fail_before_training(tmp_path):
    with pytest.raises(SystemExit, match="shard not found: '.*nowhere-000.tar'"):
        main(["--data.train", str(tmp_path / "nowhere-{000..009}.tar"), "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="no training shards"):
        main(["--out", str(tmp_path / "y")])
    assert not (tmp_path / "x").exists()


def test_every_trainable_parameter_gets_a_gradient(data, tmp_path):
    model = biolingual.create("tiny", tokenizer_texts=["a frog", "an owl"], device="cpu", seed=0)
    model.clap.logit_scale_t.requires_grad_(False)
    model.train()
    waves = torch.randn(3, model.window_samples) * 0.1
    tokens = model.tokenize(["a frog", "an owl", "a frog calling"])
    loss = ContrastiveLoss()(*model(waves, tokens["input_ids"], tokens["attention_mask"]))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum())]
    assert not missing


def test_cached_feature_accumulation_equals_the_big_batch_gradient(data, tmp_path):
    config = load_config(_args(data, tmp_path / "acc", "--train.steps", "1"))
    trainer = Trainer(config)
    model = trainer.unwrapped
    model.eval()  # no dropout, so both ways see the same network
    audio = torch.randn(8, model.window_samples) * 0.1
    texts = [f"call number {i}" for i in range(8)]
    grads = []
    for k in (1, 2, 4):
        trainer.config.train.accum_steps = k
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer._forward_backward(audio, texts)
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    for other in grads[1:]:
        for name, g in grads[0].items():
            assert torch.allclose(other[name], g, atol=1e-6, rtol=1e-4), name


def test_schedule_is_a_pure_function_of_the_step():
    assert lr_at(0, 1.0, 10, 110) == pytest.approx(0.1)
    assert lr_at(9, 1.0, 10, 110) == pytest.approx(1.0)
    assert lr_at(60, 1.0, 10, 110) == pytest.approx(0.5)
    assert lr_at(110, 1.0, 10, 110, min_lr=0.1) == pytest.approx(0.1)
    assert lr_at(35, 3e-4, 10, 110) == lr_at(35, 3e-4, 10, 110)


def test_config_file_and_overrides(tmp_path):
    (tmp_path / "c.yaml").write_text("train:\n  steps: 7\n  lr: 0.5\nmodel:\n  gradient_checkpointing: true\n")
    c = load_config(["--config", str(tmp_path / "c.yaml"), "--train.lr", "3e-4", "--data.workers=0", "--out", "o"])
    assert (c.train.steps, c.train.lr, c.data.workers, c.model.gradient_checkpointing, c.out) == (7, 3e-4, 0, True, "o")
    with pytest.raises(SystemExit, match="unknown config key 'train.lrr'"):
        load_config(["--train.lrr", "1"])
    with pytest.raises(SystemExit, match="bad value"):
        load_config(["--train.steps", "many"])
    for name in ("demo.yaml", "base.yaml"):
        load_config(["--config", str(ROOT / "configs" / name)])
    assert math.isfinite(load_config([]).train.lr)


def test_separate_pretrained_towers(data, saved_model, tmp_path):
    from transformers import RobertaConfig, RobertaModel

    from biolingual.tokenizer import train_tokenizer
    from biolingual.training.config import ModelConfig
    from biolingual.training.initialise import build_model

    tokenizer = train_tokenizer(["a frog calling", "an owl hooting at night"], vocab_size=300)
    roberta = RobertaModel(RobertaConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=80, pad_token_id=tokenizer.pad_token_id, type_vocab_size=1,
    ))
    roberta.save_pretrained(tmp_path / "roberta")
    tokenizer.save_pretrained(tmp_path / "roberta")
    config = ModelConfig(init="preset:tiny", audio_tower=str(saved_model), text_tower=str(tmp_path / "roberta"))
    model = build_model(config, str(data / "train-{000000..000002}.tar"), seed=0)
    source_audio = ClapModel.from_pretrained(saved_model).audio_model.state_dict()
    for key, value in model.clap.audio_model.state_dict().items():
        assert torch.equal(value, source_audio[key]), key
    source_text = roberta.state_dict()
    for key, value in model.clap.text_model.state_dict().items():
        if key in source_text:
            assert torch.equal(value, source_text[key]), key
    assert len(model.tokenizer) == len(tokenizer)
    assert model.embed_text(["a frog"]).shape == (1, model.embedding_dim)


def test_bf16_mixed_precision_and_gradient_checkpointing_train(data, tmp_path):
    out = tmp_path / "bf16"
    result = main(_args(data, out, "--train.steps", "3", "--train.precision", "bf16", "--model.gradient_checkpointing", "true",
                        "--checkpoint.every", "3"))
    assert result["step"] == 3 and not result["stopped_early"]
    state = _final_params(out, 3)
    assert all(torch.isfinite(v.float()).all() for v in state.values())
    start = biolingual.load(out / "init", device="cpu").state_dict()
    assert any(not torch.equal(state[k], start[k]) for k in start)  # the weights moved


def test_fsdp2_sharded_checkpoints_resume_exactly_and_load_unsharded(tmp_path):
    """Checkpoints hold whole, name-keyed model and optimizer state even when FSDP shards them: an FSDP2 run on
    2 CPU processes resumed from one continues exactly, and the same file trains on in a single process."""
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", str(ROOT / "tests" / "fsdp_state.py"), str(tmp_path)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    out = torch.load(tmp_path / "result.pt", weights_only=False)
    for key in out["straight"]:
        torch.testing.assert_close(out["resumed"][key], out["straight"][key], rtol=0, atol=1e-6)

    from biolingual.training.checkpoint import load_full_state

    from . import fsdp_state

    model_state, optim_state = torch.load(tmp_path / "step3.pt", weights_only=False)
    plain, plain_opt = fsdp_state.make()
    assert set(model_state) == set(plain.state_dict()) and {"0.weight", "3.bias"} <= set(optim_state["state"])
    load_full_state(plain, plain_opt, model_state, optim_state)
    for step in range(3, 5):  # both ranks' batches in one: the same mean gradient as the sharded run
        x, y = (torch.cat(parts) for parts in zip(*(fsdp_state.batch(step, r, 2) for r in range(2))))
        plain_opt.zero_grad()
        torch.nn.functional.cross_entropy(plain(x), y).backward()
        plain_opt.step()
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(value, out["straight"][key], rtol=1e-5, atol=1e-5)


def test_a_launch_config_that_does_not_fit_the_machine_stops_with_a_message(data, tmp_path):
    """An FSDP accelerate config on a machine without GPUs makes accelerate run each process alone; training
    would then write the same files from every process. It stops instead, saying why."""
    config = tmp_path / "fsdp.yaml"
    config.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: FSDP\nnum_machines: 1\nnum_processes: 2\n"
                      "machine_rank: 0\nmixed_precision: 'no'\nuse_cpu: true\nfsdp_config:\n  fsdp_version: 2\n")
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--config_file", str(config), str(ROOT / "train.py"),
           *_args(data, tmp_path / "run", "--train.steps", "2")]
    result = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=180)
    assert result.returncode != 0
    assert "the launcher started 2 processes but accelerate sees 1" in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
