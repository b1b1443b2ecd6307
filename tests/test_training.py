"""train.py end to end on real shards: runs, resumes exactly, validates, exports, fails early on bad input."""

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import ClapModel

import biolingual
from biolingual.loss import ContrastiveLoss
from biolingual.training.checkpoint import load_checkpoint
from biolingual.training.config import load_config
from biolingual.training.loop import Trainer, main
from biolingual.training.schedule import lr_at

ROOT = Path(__file__).resolve().parents[1]


def _args(data, out, *extra):
    return [
        "--data.train",
        str(data / "train-{000000..000002}.tar"),
        "--data.samples_per_epoch",
        "24",
        "--data.workers",
        "2",
        "--data.clip_seconds",
        "2",
        "--model.vocab_size",
        "300",
        "--train.batch_size",
        "4",
        "--train.lr",
        "1e-3",
        "--train.warmup",
        "3",
        "--train.seed",
        "1",
        "--log.every",
        "5",
        "--log.tensorboard",
        "false",
        "--out",
        str(out),
        *extra,
    ]


def _final_params(out: Path, step: int) -> dict:
    return load_checkpoint(out / "checkpoints" / f"step_{step}.pt")["model"]


def test_ten_plus_resume_plus_ten_equals_twenty_straight(data, saved_model, tmp_path):
    """With the moving average of the weights, the sigmoid loss and a teacher on: the checkpoint carries the
    average (and the bias), and a resume continues all of it bit for bit."""
    options = ("--train.ema_decay", "0.9", "--train.loss", "sigmoid", "--distill.teacher", str(saved_model))
    straight = tmp_path / "straight"
    main(
        _args(
            data, straight, "--train.steps", "20", "--checkpoint.every", "10", "--checkpoint.keep_last", "5", *options
        )
    )
    # A run that stopped at step 10: its folder as it was then (no later checkpoint, no export).
    crashed = tmp_path / "crashed"
    shutil.copytree(straight / "init", crashed / "init")
    (crashed / "checkpoints").mkdir()
    shutil.copy(straight / "checkpoints" / "step_10.pt", crashed / "checkpoints" / "step_10.pt")
    result = main(
        _args(data, crashed, "--train.steps", "20", "--checkpoint.every", "10", "--resume", "latest", *options)
    )
    assert result["step"] == 20
    a, b = _final_params(straight, 20), _final_params(crashed, 20)
    assert a.keys() == b.keys() and "clap.logit_bias" in a
    for key in a:
        assert (a[key].float() - b[key].float()).abs().max() <= 1e-5, key
    ema_a = load_checkpoint(straight / "checkpoints" / "step_20.pt")
    ema_b = load_checkpoint(crashed / "checkpoints" / "step_20.pt")
    assert ema_a["ema_updates"] == ema_b["ema_updates"] == 20 and ema_a["ema"].keys() == a.keys()
    for key in a:
        assert torch.equal(ema_a["ema"][key], ema_b["ema"][key]), key
    assert any(not torch.equal(ema_a["ema"][k], a[k]) for k in a)  # the average is not the weights
    moved = max((a[k].float() - _final_params(straight, 10)[k].float()).abs().max() for k in a)
    assert moved > 1e-4  # the last ten steps did train


def test_run_validates_keeps_best_and_exports_a_loadable_model(data, tmp_path):
    out = tmp_path / "run"
    result = main(
        _args(
            data,
            out,
            "--train.steps",
            "8",
            "--data.valid",
            str(data / "valid-000000.tar"),
            "--valid.every",
            "4",
            "--checkpoint.every",
            "2",
            "--checkpoint.keep_last",
            "2",
            "--checkpoint.keep_best",
            "1",
            "--log.tensorboard",
            "true",
        )
    )
    assert result["step"] == 8 and not result["stopped_early"]
    assert {"text_to_audio/R@1", "audio_to_text/mAP@10"} <= set(result["metrics"])
    steps = sorted(p.name for p in (out / "checkpoints").glob("step_*.pt"))
    assert steps == ["step_6.pt", "step_8.pt"]  # keep_last 2
    assert len(list((out / "checkpoints").glob("best_step_*.pt"))) == 1  # keep_best 1
    assert (out / "config.yaml").is_file() and list((out / "tensorboard").rglob("events.out.tfevents*"))
    model = biolingual.load(out / "best", device="cpu")
    assert model.embed_text(["The sound of a frog"]).shape == (1, model.embedding_dim)
    ClapModel.from_pretrained(out / "best")


def test_sigmoid_ema_and_distillation_export_what_transformers_loads(data, saved_model, tmp_path):
    """train.loss sigmoid, train.ema_decay and distill.teacher together: validation scores the moving
    average and best/ is that average; its bias is in config.json, which ClapModel loads as it is (no
    unused weight) with the same embeddings as biolingual's model."""
    out = tmp_path / "run"
    result = main(
        _args(
            data,
            out,
            "--train.steps",
            "4",
            "--data.valid",
            str(data / "valid-000000.tar"),
            "--valid.every",
            "0",
            "--checkpoint.every",
            "0",
            "--train.ema_decay",
            "0.5",
            "--train.loss",
            "sigmoid",
            "--distill.teacher",
            str(saved_model),
        )
    )
    assert result["step"] == 4
    state = load_checkpoint(out / "checkpoints" / "step_4.pt")
    assert state["model"]["clap.logit_bias"] != -10.0  # the bias learned
    best = biolingual.load(out / "best", device="cpu")
    for key, value in best.state_dict().items():  # the exported model is the average, not the last weights
        torch.testing.assert_close(value, state["ema"][key], rtol=0, atol=0)
    assert any(not torch.equal(state["ema"][k], state["model"][k]) for k in state["model"])
    assert float(best.logit_bias.detach()) == float(state["ema"]["clap.logit_bias"])
    import json

    assert json.loads((out / "best" / "config.json").read_text())["logit_bias"] == float(best.logit_bias.detach())
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_warning()
    theirs = ClapModel.from_pretrained(out / "best", output_loading_info=True)
    theirs, info = theirs
    assert not any(info.values()), info  # no missing, unexpected or mismatched weight
    tokens = best.tokenize(["The sound of a frog"])
    with torch.no_grad():
        expected = torch.nn.functional.normalize(theirs.eval().get_text_features(**tokens).pooler_output, dim=-1)
        waves = torch.randn(2, best.window_samples) * 0.1
        audio = torch.nn.functional.normalize(
            theirs.get_audio_features(input_features=best.features(waves)).pooler_output, dim=-1
        )
    torch.testing.assert_close(best.embed_text(["The sound of a frog"]), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(best.encode_audio(waves), audio, rtol=0, atol=1e-6)


def test_teacher_text_student_embeds_labels_as_the_teacher_and_learns_its_audio_tower(data, tmp_path):
    """distill.teacher_text: a tiny student takes the teacher's text tower, text projection and tokenizer (the
    teacher's projection size too: 24 against tiny's 32, and a 3-layer text tower against tiny's 2); only its
    audio tower learns, into the teacher's space; its label embeddings are the teacher's exactly; best/ loads
    in transformers as it is; a saved start with another text tower is refused before any step."""
    from biolingual.model import BioLingual
    from biolingual.presets import preset_config
    from biolingual.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(["a frog calls at night", "an owl hoots", "the sound of a loon"], vocab_size=260)
    config = preset_config(
        "tiny", len(tokenizer), tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id
    )
    config.projection_dim = config.audio_config.projection_dim = config.text_config.projection_dim = 24
    config.text_config.num_hidden_layers = 3
    torch.manual_seed(5)
    teacher_dir = tmp_path / "teacher"
    BioLingual(ClapModel(config), tokenizer).save_pretrained(teacher_dir)
    teacher = biolingual.load(teacher_dir, device="cpu")

    out = tmp_path / "run"
    options = ("--train.steps", "3", "--checkpoint.every", "0", "--distill.teacher", str(teacher_dir))
    assert main(_args(data, out, *options, "--distill.teacher_text", "true"))["step"] == 3
    best = biolingual.load(out / "best", device="cpu")
    assert best.embedding_dim == 24 and best.clap.config.text_config.num_hidden_layers == 3
    labels = ["Barred Owl", "Spring Peeper", "a frog calls at night"]
    torch.testing.assert_close(best.embed_labels(labels), teacher.embed_labels(labels), rtol=0, atol=0)
    start = biolingual.load(out / "init", device="cpu").state_dict()
    after = _final_params(out, 3)
    text = [k for k in start if k.startswith(("clap.text_model.", "clap.text_projection."))]
    audio = [k for k in start if k.startswith(("clap.audio_model.", "clap.audio_projection."))]
    assert text and all(torch.equal(after[k], start[k]) for k in text)
    assert any(not torch.equal(after[k], start[k]) for k in audio)
    theirs, info = ClapModel.from_pretrained(out / "best", output_loading_info=True)
    assert not any(info.values()), info
    waves = torch.randn(2, best.window_samples) * 0.1
    with torch.no_grad():
        audio_theirs = theirs.eval().get_audio_features(input_features=best.features(waves)).pooler_output
    torch.testing.assert_close(
        best.encode_audio(waves), torch.nn.functional.normalize(audio_theirs, dim=-1), atol=1e-6, rtol=0
    )

    other = tmp_path / "other_student"
    biolingual.create("tiny", tokenizer_texts=["a frog", "an owl"], seed=1, device="cpu").save_pretrained(other)
    with pytest.raises(SystemExit, match="'distill.teacher_text': model.init .*other_student has a text tower other"):
        main(_args(data, tmp_path / "run2", *options, "--distill.teacher_text", "true", "--model.init", str(other)))
    # a student of an earlier distillation (the teacher's text tower) continues
    result = main(
        _args(data, tmp_path / "run3", *options, "--distill.teacher_text", "true", "--model.init", str(out / "best"))
    )
    assert result["step"] == 3


def test_teacher_cache_is_built_once_beside_the_shards_and_matches_the_live_teacher(data, saved_model, tmp_path):
    """distill.cache: the teacher embeds each shard once into SHARD.teacher-<fingerprint>.npz; a second run
    reads it without embedding again; its entries are what the live teacher gives for the trainer's own
    decoded input of each sample (clips shorter than the crop: a fixed input)."""
    import numpy
    import webdataset as wds

    from biolingual.data import Decoder, pcm16_to_float
    from biolingual.training.teacher import TeacherCache, cache_path

    shards = tmp_path / "shards"
    shards.mkdir()
    for shard in sorted(data.glob("train-*.tar")):
        shutil.copy(shard, shards / shard.name)
    args = [
        "--data.train",
        str(shards / "train-{000000..000002}.tar"),
        "--distill.teacher",
        str(saved_model),
        "--distill.cache",
        "true",
        "--train.steps",
        "2",
        "--checkpoint.every",
        "0",
    ]
    main([*_args(data, tmp_path / "one")[2:], *args])
    teacher = biolingual.load(saved_model, device="cpu")
    urls = [str(p) for p in sorted(shards.glob("train-*.tar"))]
    files = [cache_path(u, teacher.fingerprint()) for u in urls]
    assert all(f.is_file() for f in files) and len(list(shards.glob("*.npz"))) == 3
    written = [f.stat().st_mtime_ns for f in files]
    main([*_args(data, tmp_path / "two")[2:], *args])
    assert [f.stat().st_mtime_ns for f in files] == written  # read, not built again

    cache = TeacherCache(urls, teacher.fingerprint())
    decode = Decoder(teacher.sampling_rate, int(2 * teacher.sampling_rate), train=True, seed=5, pcm16=True)
    samples = list(wds.tarfile_to_samples()(iter([{"url": urls[1]}])))[:4]
    decoded = [decode(sample, i) for i, sample in enumerate(samples)]
    audio = pcm16_to_float(torch.from_numpy(numpy.stack([d["audio"] for d in decoded])))
    texts = [d["text"] for d in decoded]
    cached_audio, cached_text, scale = cache.lookup([d["key"] for d in decoded], texts)
    tokens = teacher.tokenize(texts)
    with torch.no_grad():
        torch.testing.assert_close(cached_audio, teacher.encode_audio(audio), rtol=0, atol=1e-5)
        torch.testing.assert_close(
            cached_text, teacher.encode_text(tokens["input_ids"], tokens["attention_mask"]), rtol=0, atol=1e-5
        )
    assert float(scale) == pytest.approx(float(teacher.logit_scale.detach()))


def test_audio_only_shards_distil_the_audio_tower_alone(data, saved_model, tmp_path):
    """distill.audio_only: shards without any caption train the audio tower from the teacher (its cache built
    from audio alone), with cached-feature accumulation; the text tower stays as it started."""
    import tarfile

    shards = tmp_path / "audio_only"
    shards.mkdir()
    for shard in sorted(data.glob("train-*.tar")):
        with tarfile.open(shard) as src, tarfile.open(shards / shard.name, "w") as dst:
            for member in src:
                if not member.name.endswith((".json", ".txt")):
                    dst.addfile(member, src.extractfile(member))
    student = tmp_path / "student"
    biolingual.create("tiny", tokenizer_texts=["a frog", "an owl"], seed=1, device="cpu").save_pretrained(student)
    pattern = str(shards / "train-{000000..000002}.tar")
    base = [
        *_args(data, tmp_path / "run")[2:],
        "--data.train",
        pattern,
        "--model.init",
        str(student),
        "--train.steps",
        "3",
        "--checkpoint.every",
        "0",
        "--distill.teacher",
        str(saved_model),
    ]
    with pytest.raises(SystemExit, match="has no captions"):  # without audio_only, caption-less shards are refused
        main(base)
    result = main(
        [
            *base,
            "--distill.audio_only",
            "true",
            "--distill.cache",
            "true",
            "--train.accum_steps",
            "2",
            "--out",
            str(tmp_path / "run2"),
        ]
    )
    assert result["step"] == 3
    start = biolingual.load(student, device="cpu").state_dict()
    after = _final_params(tmp_path / "run2", 3)
    text = [k for k in start if k.startswith(("clap.text_model.", "clap.text_projection."))]
    audio = [k for k in start if k.startswith(("clap.audio_model.", "clap.audio_projection."))]
    assert text and all(torch.equal(after[k], start[k]) for k in text)
    assert any(not torch.equal(after[k], start[k]) for k in audio)


def test_benchmarks_during_training_are_the_runners_figures_and_reach_tensorboard(data, tmp_path):
    """valid.benchmarks scores BEANS-Zero components and a BirdSet config zero-shot at every validation (here
    only the final one), logged to TensorBoard beside retrieval; the figures are what eval.beans_zero and
    eval.birdset give for the exported model (no validation set: the final weights are exported)."""
    import json

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from eval.beans_zero.make_fixture import write_fixture
    from eval.beans_zero.runner import main as beans_zero
    from eval.birdset.fixture import write_example_fixture
    from eval.birdset.runner import main as birdset

    beans = write_fixture(tmp_path / "beans_zero", "save_to_disk")
    write_example_fixture(tmp_path / "birdset")
    out = tmp_path / "run"
    result = main(
        _args(
            data,
            out,
            "--train.steps",
            "2",
            "--valid.every",
            "0",
            "--checkpoint.every",
            "0",
            "--log.tensorboard",
            "true",
            "--valid.benchmarks",
            f"beans_zero:{beans}:unseen-species-cmn+enabirds::birdset:{tmp_path / 'birdset'}:HSN",
        )
    )
    metrics = result["metrics"]
    assert all(k.startswith("benchmark/") for k in metrics)  # no validation set: the benchmarks alone
    assert {
        "benchmark/beans_zero/unseen-species-cmn/Accuracy",
        "benchmark/beans_zero/enabirds/mAP",
        "benchmark/birdset/HSN/cmap",
        "benchmark/birdset/HSN/auroc",
        "benchmark/birdset/HSN/top1",
    } <= set(metrics)
    assert not any("captioning" in k or "unseen-species-sci" in k for k in metrics)  # only the components named
    events = EventAccumulator(str(next((out / "tensorboard").rglob("events.out.tfevents*")).parent))
    events.Reload()
    assert [e.step for e in events.Scalars("benchmark/birdset/HSN/cmap")] == [2]
    assert [e.step for e in events.Scalars("benchmark/beans_zero/enabirds/mAP")] == [2]

    assert (
        beans_zero(
            [
                "--model",
                str(out / "best"),
                "--data",
                str(beans),
                "--out",
                str(tmp_path / "bz"),
                "--components",
                "unseen-species-cmn,enabirds",
            ]
        )
        == 0
    )
    for component in ("unseen-species-cmn", "enabirds"):
        for metric, value in json.loads((tmp_path / "bz" / f"{component}.json").read_text())["metrics"].items():
            assert metrics[f"benchmark/beans_zero/{component}/{metric}"] == pytest.approx(value, abs=1e-6), (
                component,
                metric,
            )
    assert (
        birdset(
            [
                "--model",
                str(out / "best"),
                "--data",
                str(tmp_path / "birdset"),
                "--task",
                "HSN",
                "--mode",
                "zero-shot",
                "--names",
                str(tmp_path / "birdset" / "ebird_names.json"),
                "--out",
                str(tmp_path / "bs"),
            ]
        )
        == 0
    )
    figures = json.loads((tmp_path / "bs" / "HSN" / "zero-shot.json").read_text())
    for metric in ("cmap", "auroc", "top1"):
        assert metrics[f"benchmark/birdset/HSN/{metric}"] == pytest.approx(figures[metric], abs=1e-6), metric


def test_non_finite_losses_stop_the_run_and_keep_checkpoints(data, tmp_path):
    out = tmp_path / "nan"
    result = main(
        _args(
            data,
            out,
            "--train.steps",
            "30",
            "--train.lr",
            "1e20",
            "--train.warmup",
            "0",
            "--train.grad_clip",
            "0",
            "--train.max_bad_steps",
            "3",
            "--checkpoint.every",
            "1",
            "--checkpoint.keep_last",
            "3",
        )
    )
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


def _accumulation_trainer(data, out):
    trainer = Trainer(load_config(_args(data, out, "--train.steps", "1")))
    model = trainer.unwrapped
    model.train()  # training mode: dropout and the input BatchNorm's batch statistics, as a real step runs
    return trainer, model, torch.randn(8, model.window_samples) * 0.1, [f"call number {i}" for i in range(8)]


def test_cached_feature_accumulation_equals_the_big_batch_gradient_in_training_mode(data, tmp_path):
    """accum_steps k gives the gradient of one k-times larger batch, and updates the input BatchNorm's
    running statistics once, as that batch would: the micro-batches are normalised with the whole batch's
    statistics (HTS-AT's input BatchNorm), not their own. Dropout is set to 0 here so that both ways see
    the same network; the replay of dropout's randomness is tested below."""
    trainer, model, audio, texts = _accumulation_trainer(data, tmp_path / "acc")
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):  # the text tower's SDPA dropout
            module.attention_dropout = 0.0
    norm = model.clap.audio_model.audio_encoder.batch_norm
    start = {k: v.clone() for k, v in norm.state_dict().items()}
    grads, stats = [], []
    for k in (1, 2, 4):
        norm.load_state_dict(start)
        trainer.config.train.accum_steps = k
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer._forward_backward(audio, texts)
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        stats.append({k: v.clone() for k, v in norm.state_dict().items()})
    # The same sums in another order differ by float32 rounding: compared per tensor against its own norm plus
    # a floor from the whole gradient's norm (some gradients, e.g. attention key biases, are zero up to
    # rounding, 1e-11, so their relative error means nothing). A wrong scheme is off by O(1).
    total = torch.sqrt(sum(g.norm() ** 2 for g in grads[0].values()))
    for other in grads[1:]:
        assert other.keys() == grads[0].keys()
        for name, g in grads[0].items():
            assert (other[name] - g).norm() <= 1e-3 * g.norm() + 1e-5 * total, name
    for other in stats[1:]:  # one update of the running statistics, with the whole batch's
        assert (
            int(other["num_batches_tracked"])
            == int(stats[0]["num_batches_tracked"])
            == int(start["num_batches_tracked"]) + 1
        )
        torch.testing.assert_close(other["running_mean"], stats[0]["running_mean"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(other["running_var"], stats[0]["running_var"], rtol=1e-5, atol=1e-6)


def test_accumulation_replays_dropout_between_the_cached_and_the_gradient_pass(data, tmp_path):
    """With dropout on, each micro-batch's gradient pass draws the masks its cached pass drew: the loss
    never mixes embeddings of two different networks."""
    trainer, model, audio, texts = _accumulation_trainer(data, tmp_path / "acc")
    assert model.clap.config.text_config.hidden_dropout_prob > 0  # the tiny preset has dropout to replay
    seen = {"audio": [], "text": []}
    hooks = [
        model.clap.audio_projection.register_forward_hook(lambda m, i, o: seen["audio"].append(o.detach().clone())),
        model.clap.text_projection.register_forward_hook(lambda m, i, o: seen["text"].append(o.detach().clone())),
    ]
    trainer.config.train.accum_steps = 2
    trainer._forward_backward(audio, texts)
    for hook in hooks:
        hook.remove()
    for kind, outputs in seen.items():  # cached pass of chunks 0, 1, then the gradient passes of 0, 1
        assert len(outputs) == 4, kind
        for j in range(2):
            torch.testing.assert_close(outputs[2 + j], outputs[j], rtol=0, atol=1e-6, msg=f"{kind} chunk {j}")
    # and the masks do differ between the two micro-batches' draws (dropout is really on)
    seen["text"].clear()
    model.clap.text_projection.register_forward_hook(lambda m, i, o: seen["text"].append(o.detach().clone()))
    tokens = model.tokenize(texts[:4])
    with torch.no_grad():
        model.encode_text(**tokens)
        model.encode_text(**tokens)
    assert not torch.allclose(seen["text"][0], seen["text"][1])


def test_schedule_is_a_pure_function_of_the_step():
    assert lr_at(0, 1.0, 10, 110) == pytest.approx(0.1)
    assert lr_at(9, 1.0, 10, 110) == pytest.approx(1.0)
    assert lr_at(60, 1.0, 10, 110) == pytest.approx(0.5)
    assert lr_at(110, 1.0, 10, 110, min_lr=0.1) == pytest.approx(0.1)
    assert lr_at(35, 3e-4, 10, 110) == lr_at(35, 3e-4, 10, 110)


def test_separate_pretrained_towers(data, saved_model, tmp_path):
    from transformers import RobertaConfig, RobertaModel

    from biolingual.tokenizer import train_tokenizer
    from biolingual.training.config import ModelConfig
    from biolingual.training.initialise import build_model

    tokenizer = train_tokenizer(["a frog calling", "an owl hooting at night"], vocab_size=300)
    roberta = RobertaModel(
        RobertaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=80,
            pad_token_id=tokenizer.pad_token_id,
            type_vocab_size=1,
        )
    )
    roberta.save_pretrained(tmp_path / "roberta")
    tokenizer.save_pretrained(tmp_path / "roberta")
    config = ModelConfig(init="preset:tiny", audio_tower=str(saved_model), text_tower=str(tmp_path / "roberta"))
    model = build_model(config, [str(data / "train-{000000..000002}.tar")], seed=0)
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
    result = main(
        _args(
            data,
            out,
            "--train.steps",
            "3",
            "--train.precision",
            "bfloat16",
            "--model.gradient_checkpointing",
            "true",
            "--checkpoint.every",
            "3",
        )
    )
    assert result["step"] == 3 and not result["stopped_early"]
    state = _final_params(out, 3)
    assert all(torch.isfinite(v.float()).all() for v in state.values())
    start = biolingual.load(out / "init", device="cpu").state_dict()
    assert any(not torch.equal(state[k], start[k]) for k in start)  # the weights moved


def _train_py(*args: str, kill_at: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if kill_at:
        env["BIOLINGUAL_KILL_AT"] = kill_at  # the process kills itself there (biolingual/faults.py)
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_resume_latest_after_a_crash_right_after_a_best_checkpoint(data, tmp_path, caplog):
    """Killed after best_step_4.pt was written, when the newest step file is step_3.pt: --resume latest
    used to pick the best file (model only) and fail with KeyError 'optimizer'."""
    out = tmp_path / "run"
    args = _args(
        data,
        out,
        "--train.steps",
        "6",
        "--checkpoint.every",
        "3",
        "--valid.every",
        "4",
        "--data.valid",
        str(data / "valid-000000.tar"),
        "--data.workers",
        "1",
    )
    killed = _train_py(*args, kill_at="train.best_saved")
    assert killed.returncode == -9, killed.stderr[-2000:]
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["best_step_4.pt", "step_3.pt"]
    with caplog.at_level(logging.INFO, logger="biolingual.train"):
        assert main([*args, "--resume", "latest"])["step"] == 6  # in this process: one interpreter start fewer
    assert any("step_3.pt at step 3" in r.getMessage() for r in caplog.records)
    assert load_checkpoint(out / "checkpoints" / "step_6.pt")["step"] == 6
    biolingual.load(out / "best", device="cpu")


def test_step_files_and_pruning_ignore_best_files(tmp_path):
    from biolingual.training.checkpoint import prune, resolve_resume, step_checkpoints

    for name in ("step_2.pt", "step_4.pt", "best_step_6.pt", "step_6.pt", "best_step_8.pt", ".step_8.pt.123.tmp"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in step_checkpoints(tmp_path)] == ["step_2.pt", "step_4.pt", "step_6.pt"]
    assert resolve_resume("latest", tmp_path).name == "step_6.pt"
    prune(tmp_path, keep_last=2)
    assert sorted(p.name for p in tmp_path.glob("*step_*.pt")) == [
        "best_step_6.pt",
        "best_step_8.pt",
        "step_4.pt",
        "step_6.pt",
    ]


def test_resume_refuses_a_file_that_would_run_code(data, tmp_path):
    """torch.load(weights_only=False) runs whatever a pickle asks for; a crafted --resume file wrote a file."""
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.write_text, (marker, "code from the checkpoint ran"))

    crafted = tmp_path / "crafted.pt"
    torch.save({"model": {}, "optimizer": {}, "step": 0, "best": [], "rng": [], "x": Payload()}, crafted)
    with pytest.raises(SystemExit, match="refusing to resume from '.*crafted.pt'"):
        main(_args(data, tmp_path / "run", "--train.steps", "2", "--resume", str(crafted)))
    assert not marker.exists()
    best_only = tmp_path / "best_step_3.pt"
    torch.save({"model": {}, "step": 3, "metric": 0.5}, best_only)
    with pytest.raises(SystemExit, match="model weights only.*resume from a step_N.pt"):
        main(_args(data, tmp_path / "run", "--train.steps", "2", "--resume", str(best_only)))
    noise = tmp_path / "noise.pt"  # random bytes are no checkpoint, not a file that would run code
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(
        SystemExit,
        match=r"^error: '.*noise.pt' is not a training checkpoint: not a file torch.save "
        r"writes \(train.py's step_N.pt files are\)",
    ) as refused:
        main(_args(data, tmp_path / "run", "--train.steps", "2", "--resume", str(noise)))
    assert "run code" not in str(refused.value)


def test_a_truncated_shard_is_skipped_and_named_by_the_tokenizer_scan(data, tmp_path, caplog):
    """A shard cut short (a copy interrupted, a full disk) made the scratch tokenizer's caption scan raise
    tarfile.ReadError before the data checks ran; it is skipped and logged naming the shard, as the training
    stream itself skips unreadable shard data, and the run trains on the rest."""
    shards = tmp_path / "shards"
    shards.mkdir()
    for i in range(3):
        shutil.copy(data / f"train-00000{i}.tar", shards / f"train-00000{i}.tar")
    whole = (data / "train-000001.tar").read_bytes()  # not the first: the data checks read the first shard's start
    (shards / "train-000001.tar").write_bytes(whole[: len(whole) // 2 + 100])  # cut inside a member
    args = _args(
        data,
        tmp_path / "run",
        "--train.steps",
        "1",
        "--data.workers",
        "0",
        "--checkpoint.every",
        "0",
        "--data.train",
        str(shards / "train-{000000..000002}.tar"),
    )
    with caplog.at_level(logging.WARNING):
        assert main(args)["step"] == 1
    scan = [r.getMessage() for r in caplog.records if "tokenizer" in r.getMessage()]
    assert any(f"'{shards / 'train-000001.tar'}'" in m and "skipping" in m for m in scan), scan


def test_a_full_disk_at_a_checkpoint_loses_nothing_and_a_rerun_resumes(data, tmp_path, monkeypatch):
    """ENOSPC while step_2.pt is written (torch.save's three chained tracebacks before): one error line naming the
    file and the reason, the newest complete checkpoint named and kept, no temporary file left, and --resume latest
    goes on from it. The full disk comes from the fault point in biolingual/atomic.py's write path."""
    from biolingual import faults

    out = tmp_path / "run"
    args = _args(data, out, "--train.steps", "2", "--checkpoint.every", "1", "--data.workers", "0")
    monkeypatch.setattr(faults, "_reached", faults.Counter())  # arrivals are counted per process
    monkeypatch.setenv(faults.FAIL_ENV, "atomic.write:2=ENOSPC")  # step_1.pt is written, step_2.pt meets a full disk
    with pytest.raises(SystemExit) as stopped:
        main(args)
    message = str(stopped.value)
    assert message.startswith(
        f"error: could not write '{out / 'checkpoints' / 'step_2.pt'}': No space left on device"
    ), message
    assert "step_1.pt" in message and "--resume latest" in message and "\n" not in message
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_1.pt"]  # whole, and no temporary file
    monkeypatch.delenv(faults.FAIL_ENV)
    assert main([*args, "--resume", "latest"])["step"] == 2
    assert load_checkpoint(out / "checkpoints" / "step_2.pt")["step"] == 2


def test_shards_without_a_usable_sample_fail_before_training(data, tmp_path):
    """A validation set where nothing decodes used to fail at the first validation, after training; shards
    whose samples have no caption used to skip forever."""
    import tarfile

    from .shards import laion_sample

    bad = tmp_path / "badvalid-000000.tar"
    with tarfile.open(bad, "w"):
        pass
    for i in range(3):
        laion_sample(bad, f"k{i}", b"not audio", "a caption")
    with pytest.raises(SystemExit, match=r"error: validation shards .*badvalid-000000\.tar"):
        main(_args(data, tmp_path / "a", "--train.steps", "2", "--data.valid", str(bad)))
    assert not (tmp_path / "a" / "init").exists()  # stopped before building anything
    nocap = tmp_path / "nocap-000000.tar"
    with tarfile.open(nocap, "w"):
        pass
    member = data / "train-000000.tar"
    with tarfile.open(member) as tar:
        flac = next(tar.extractfile(m).read() for m in tar if m.name.endswith(".flac"))
    for i in range(3):
        laion_sample(nocap, f"k{i}", flac, [])
    with pytest.raises(SystemExit, match=r"error: train shards .*no caption"):
        main(_args(data, tmp_path / "b", "--train.steps", "2", "--data.train", str(nocap)))


def test_two_weighted_sources_train_and_the_run_config_keeps_the_lists(data, tmp_path):
    """data.train with two patterns ('::' on the command line), data.weights and train.betas train; the
    optimizer gets the betas, and the run folder's config.yaml holds the lists and reads back the same."""
    out = tmp_path / "run"
    sources = [str(data / "train-{000000..000001}.tar"), str(data / "train-000002.tar")]
    result = main(
        _args(
            data,
            out,
            "--train.steps",
            "2",
            "--data.workers",
            "0",
            "--data.train",
            "::".join(sources),
            "--data.weights",
            "3,1",
            "--train.betas",
            "[0.8, 0.95]",
        )
    )
    assert result["step"] == 2
    assert tuple(load_checkpoint(out / "checkpoints" / "step_2.pt")["optimizer"]["param_groups"][0]["betas"]) == (
        0.8,
        0.95,
    )
    saved = load_config(["--config", str(out / "config.yaml")])
    assert (saved.data.train, saved.data.weights, saved.train.betas) == (sources, [3.0, 1.0], [0.8, 0.95])
    with pytest.raises(SystemExit, match=r"^error: command line: 'data.weights' has 3 values for the 2 sources"):
        main(_args(data, tmp_path / "b", "--data.train", "::".join(sources), "--data.weights", "1,1,1"))


def test_best_folder_is_never_missing_while_a_new_one_is_exported(data, tmp_path):
    """Killed after the new export is written and before it replaces best/, the previous best/ is whole."""
    out = tmp_path / "run"
    args = _args(data, out, "--train.steps", "2", "--data.workers", "0", "--checkpoint.every", "2")
    main(args)
    before = (out / "best" / "model.safetensors").read_bytes()
    killed = _train_py(*args, "--train.steps", "4", "--resume", "latest", kill_at="train.export_written")
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (out / "best" / "model.safetensors").read_bytes() == before
    biolingual.load(out / "best", device="cpu")
    main([*args, "--train.steps", "4", "--resume", "latest"])
    assert (out / "best" / "model.safetensors").read_bytes() != before
    assert not list(out.glob(".best*"))


def test_a_partitioned_build_folder_trains_and_validates(tmp_path):
    """--data.train and --data.valid take a build folder: its sizes.json names the shards (a partitioned
    build's numbers have gaps that a brace pattern cannot name); the validation set is its valid shards."""
    from .test_data import _partitioned_folder

    folder = tmp_path / "parts"
    folder.mkdir()
    _partitioned_folder(folder)
    out = tmp_path / "run"
    result = main(
        [
            "--data.train",
            str(folder),
            "--data.valid",
            str(folder),
            "--data.samples_per_epoch",
            "8",
            "--data.workers",
            "2",
            "--data.clip_seconds",
            "1",
            "--model.vocab_size",
            "300",
            "--train.steps",
            "3",
            "--train.batch_size",
            "4",
            "--log.tensorboard",
            "false",
            "--out",
            str(out),
        ]
    )
    assert result["step"] == 3 and result["metrics"]["text_to_audio/R@1"] >= 0
    assert load_checkpoint(out / "checkpoints" / "step_3.pt")["step"] == 3


def test_a_run_logs_model_flop_utilisation_where_the_peak_is_known(data, tmp_path, monkeypatch):
    """On a GPU whose peak is in throughput.py's table the run logs train/mfu (model FLOPs per sample counted
    once, times samples/s per device, over the peak); a CPU has no peak, so here the lookup is given one."""
    from biolingual.training import throughput

    monkeypatch.setattr(throughput, "peak_flops", lambda device, precision: 1e12)
    trainer = Trainer(
        load_config(_args(data, tmp_path / "mfu", "--train.steps", "2", "--log.every", "1", "--data.workers", "0"))
    )
    logged = []
    monkeypatch.setattr(trainer.accelerator, "log", lambda values, step=None: logged.append(values))
    trainer.run()
    trainer.close()
    flops = throughput.flops_per_sample(trainer.unwrapped, 2 * trainer.unwrapped.sampling_rate, trainer._text_tokens)
    train = [v for v in logged if "train/loss" in v]
    assert len(train) == 2 and trainer._flops == flops > 0
    for values in train:
        assert values["train/mfu"] == pytest.approx(values["train/samples_per_s_per_device"] * flops / 1e12)
