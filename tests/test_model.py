"""The model: embeddings, zero-shot, save/load, transformers compatibility, determinism, batching, fingerprint."""

import dataclasses
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import AutoTokenizer, ClapModel, pipeline

import biolingual
from biolingual.audio import load_audio
from biolingual.synthetic import synth_call

from .conftest import LABELS, TEMPLATE


def test_embeddings_are_normalised_float32(tiny_model, clips):
    audio = tiny_model.embed_audio(list(clips.values()))
    text = tiny_model.embed_text(["The sound of a Common Loon", "frogs"])
    for emb, n in ((audio, len(clips)), (text, 2)):
        assert emb.dtype == torch.float32 and emb.shape == (n, tiny_model.embedding_dim)
        torch.testing.assert_close(emb.norm(dim=-1), torch.ones(n))


def test_same_clip_same_embedding_on_two_calls(tiny_model, clips):
    paths = list(clips.values())
    torch.testing.assert_close(tiny_model.embed_audio(paths), tiny_model.embed_audio(paths), atol=0, rtol=0)


def test_clip_alone_equals_clip_in_a_mixed_batch(tiny_model, clips):
    paths = list(clips.values())  # 2.5 s to 23 s clips, several windows for the long one
    together = tiny_model.embed_audio(paths, batch_size=4)
    for i, path in enumerate(paths):
        alone = tiny_model.embed_audio(path, batch_size=1)
        assert (alone[0] - together[i]).abs().max() < 1e-5, path.name


def test_paths_arrays_and_tensors_agree(tiny_model, clips):
    path = clips["owl_stereo.flac"]
    data, rate = sf.read(str(path), dtype="float32")
    from_path = tiny_model.embed_audio(path)
    from_array = tiny_model.embed_audio([data], sampling_rate=rate)
    from_tensor = tiny_model.embed_audio(torch.from_numpy(data.T.copy()), sampling_rate=rate)
    torch.testing.assert_close(from_path, from_array)
    torch.testing.assert_close(from_path, from_tensor)


def test_long_clips_pool_their_windows(tiny_model):
    rate = tiny_model.sampling_rate
    first = synth_call("Barred Owl", 10.0, rate, seed=1)
    second = synth_call("Field Cricket", 10.0, rate, seed=2)
    both = np.concatenate([first, second])
    windows = tiny_model.embed_audio([first, second], sampling_rate=rate)
    mean = tiny_model.embed_audio(both, sampling_rate=rate, pooling="mean")[0]
    torch.testing.assert_close(mean, torch.nn.functional.normalize(windows.mean(0), dim=0), atol=1e-5, rtol=0)
    maxed = tiny_model.embed_audio(both, sampling_rate=rate, pooling="max")[0]
    torch.testing.assert_close(maxed, torch.nn.functional.normalize(windows.max(0).values, dim=0), atol=1e-5, rtol=0)
    head = tiny_model.embed_audio(both, sampling_rate=rate, pooling="first")[0]
    torch.testing.assert_close(head, windows[0], atol=1e-5, rtol=0)


def test_zero_shot_probabilities_and_predict_ranking(tiny_model, clips):
    paths = list(clips.values())
    probs = tiny_model.zero_shot(paths, LABELS, template=TEMPLATE)
    assert probs.shape == (len(paths), len(LABELS))
    torch.testing.assert_close(probs.sum(-1), torch.ones(len(paths)))
    ranked = tiny_model.predict(paths[0], LABELS, top_k=3, template=TEMPLATE)
    assert [label for label, _ in ranked] == [LABELS[i] for i in probs[0].argsort(descending=True)[:3]]
    assert all(a[1] >= b[1] for a, b in zip(ranked, ranked[1:]))
    assert len(tiny_model.predict(paths, LABELS, top_k=2)) == len(paths)


def test_labels_are_encoded_once_per_call_not_per_clip(tiny_model, clips):
    calls = []
    hook = tiny_model.clap.text_model.register_forward_hook(lambda m, i, o: calls.append(i))
    try:
        tiny_model.zero_shot(list(clips.values()) * 4, LABELS, batch_size=2)
    finally:
        hook.remove()
    assert len(calls) == 1  # 20 clips, 6 labels: one text forward pass


def test_prompt_ensembling_averages_templates(tiny_model):
    templates = ["The sound of a {}", "A {} calling"]
    each = [tiny_model.embed_text([t.format(label) for label in LABELS]) for t in templates]
    expected = torch.nn.functional.normalize((each[0] + each[1]) / 2, dim=-1)
    torch.testing.assert_close(tiny_model.embed_labels(LABELS, templates), expected)
    with pytest.raises(ValueError, match="must hold '\\{\\}' exactly once"):
        tiny_model.embed_labels(LABELS, "no placeholder")


def test_save_and_load_round_trip(tiny_model, saved_model, clips):
    files = {p.name for p in saved_model.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json"} <= files
    loaded = biolingual.load(saved_model, device="cpu")
    for key, value in tiny_model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, atol=0, rtol=0)
    paths = list(clips.values())
    torch.testing.assert_close(loaded.embed_audio(paths), tiny_model.embed_audio(paths))
    torch.testing.assert_close(loaded.embed_text(LABELS), tiny_model.embed_text(LABELS))
    assert loaded.front_end.config == tiny_model.front_end.config
    config = json.loads((saved_model / "preprocessor_config.json").read_text())
    assert config["frequency_min"] == 50 and config["truncation"] == "rand_trunc"


def test_transformers_loads_the_folder_as_is(tiny_model, saved_model):
    clap = ClapModel.from_pretrained(saved_model)
    tokenizer = AutoTokenizer.from_pretrained(saved_model)
    tokens = tokenizer(["The sound of a Barred Owl"], return_tensors="pt")
    with torch.inference_mode():
        out = clap.get_text_features(**tokens)
    ours = tiny_model.embed_text("The sound of a Barred Owl")
    theirs = out if isinstance(out, torch.Tensor) else out.pooler_output
    torch.testing.assert_close(torch.nn.functional.normalize(theirs, dim=-1), ours, atol=1e-5, rtol=0)


@pytest.mark.parametrize("species", ["Barred Owl", "Field Cricket", "Humpback Whale"])
def test_pipeline_gives_the_same_top_label(tiny_model, saved_model, species):
    classifier = pipeline("zero-shot-audio-classification", model=str(saved_model))
    clip = synth_call(species, 6.0, 48000, seed=7)  # 48 kHz, so the pipeline needs no resampling
    theirs = classifier(clip, candidate_labels=LABELS, hypothesis_template=TEMPLATE)
    ours = tiny_model.zero_shot([clip], LABELS, template=TEMPLATE, sampling_rate=48000)[0]
    assert theirs[0]["label"] == LABELS[int(ours.argmax())]
    for entry in theirs:  # and the same probabilities, not just the same winner
        assert abs(entry["score"] - float(ours[LABELS.index(entry["label"])])) < 1e-4


def test_hub_id_loads_offline_from_the_cache(tiny_model, saved_model, tmp_path, monkeypatch):
    """A hub id resolves through the Hugging Face cache when offline, as it does for users who have it cached."""
    from .hub_cache import cache_as_hub_id

    cache_as_hub_id(saved_model, "davidrrobinson/BioLingual", tmp_path / "hub", monkeypatch)
    model = biolingual.load(device="cpu")  # no name: the published model's id
    assert model.name_or_path == "davidrrobinson/BioLingual"
    torch.testing.assert_close(model.embed_text(LABELS), tiny_model.embed_text(LABELS))


def test_unknown_model_id_offline_says_how_to_use_a_folder():
    with pytest.raises(biolingual.ModelNotFoundError) as err:
        biolingual.load("nobody-here/no-such-model", device="cpu")
    message = str(err.value)
    assert "nobody-here/no-such-model" in message and "folder" in message


def test_missing_or_wrong_local_folder(tmp_path):
    with pytest.raises(biolingual.ModelNotFoundError, match="no folder"):
        biolingual.load(str(tmp_path / "nothing") + "/", device="cpu")
    with pytest.raises(biolingual.ModelNotFoundError, match="no config.json"):
        biolingual.load(tmp_path, device="cpu")


def test_a_folder_without_a_whole_clap_model_is_refused_naming_it(saved_model, clips, tmp_path, capsys):
    """Another model's folder (a saved BertModel), a folder without weights, and corrupt or truncated
    model.safetensors: a ModelNotFoundError naming the folder or file and what is wrong, never a randomly
    initialised model or a SafetensorError traceback; through the command, one error line and exit 1."""
    import shutil

    from transformers import BertConfig, BertModel

    from biolingual.cli import main

    bert = tmp_path / "bert"
    BertModel(
        BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37, vocab_size=99)
    ).save_pretrained(bert)
    shutil.copy(saved_model / "tokenizer.json", bert)  # a tokenizer too: only the model is wrong
    bad = {"bert": (bert, "'bert' model, not a CLAP model")}
    for name, damage, what in (
        ("no-weights", lambda w: w.unlink(), "no weights"),
        ("truncated", lambda w: w.write_bytes(w.read_bytes()[: w.stat().st_size // 2]), "model.safetensors"),
        ("garbage", lambda w: w.write_bytes(b"\x07" * 1000), "model.safetensors"),
    ):
        folder = tmp_path / name
        shutil.copytree(saved_model, folder)
        damage(folder / "model.safetensors")
        bad[name] = (folder, what)
    for name, (folder, what) in bad.items():
        with pytest.raises(biolingual.ModelNotFoundError) as err:
            biolingual.load(folder, device="cpu")
        assert str(folder) in str(err.value) and what in str(err.value), (name, str(err.value))
    # a checkpoint of another transformers version without the buffers the model builds itself loads, and is the model
    from safetensors.torch import load_file, save_file

    older = tmp_path / "older"
    shutil.copytree(saved_model, older)
    weights = load_file(older / "model.safetensors")
    save_file(
        {k: v for k, v in weights.items() if not k.endswith(("position_ids", "token_type_ids", "num_batches_tracked"))},
        older / "model.safetensors",
        metadata={"format": "pt"},
    )
    assert (
        biolingual.load(older, device="cpu").fingerprint() == biolingual.load(saved_model, device="cpu").fingerprint()
    )
    capsys.readouterr()
    for name in ("bert", "truncated"):
        code = main(
            [
                "predict",
                str(clips["peeper_short.wav"]),
                "--model",
                str(bad[name][0]),
                "--labels",
                "Owl",
                "Loon",
                "--device",
                "cpu",
            ]
        )
        err = capsys.readouterr().err
        assert code == 1 and err.startswith("error: ") and "Traceback" not in err and bad[name][1] in err, err


def test_labels_top_k_and_templates_are_checked_in_the_api(tiny_model, clips):
    """One rule for repeated labels, here and on the command line: refused, naming the label; so are blank
    labels, top_k below 1, and templates without exactly one '{}' (two, none, or a named field)."""
    clip = clips["peeper_short.wav"]
    for labels in (["Owl", "Owl", "Loon"], ["Owl", " Loon", "Loon "]):
        for call in (tiny_model.zero_shot, tiny_model.predict):
            with pytest.raises(ValueError, match="'(Owl|Loon)' is given more than once"):
                call(clip, labels)
    for labels in (["Owl", ""], ["  "]):
        with pytest.raises(ValueError, match="blank"):
            tiny_model.zero_shot(clip, labels)
    for k in (0, -2):
        with pytest.raises(ValueError, match="top_k"):
            tiny_model.predict(clip, ["Owl", "Loon"], top_k=k)
    for template in ("{} and {}", "no placeholder", "The sound of {name}", "a {0} {1}", "unbalanced {"):
        with pytest.raises(ValueError, match="template"):
            tiny_model.zero_shot(clip, ["Owl", "Loon"], template=template)
    assert len(tiny_model.predict(clip, ["Owl", "Loon"], top_k=1)) == 1


def test_bad_audio_inputs_name_the_input(tiny_model, tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        tiny_model.embed_audio([tmp_path / "missing.wav"])
    with pytest.raises(biolingual.AudioError, match="empty.wav"):
        tiny_model.embed_audio(tmp_path / "empty.wav")
    with pytest.raises(biolingual.AudioError, match="#1"):
        tiny_model.embed_audio([np.ones(100, np.float32), np.full(100, np.nan, np.float32)], sampling_rate=16000)
    with pytest.raises(biolingual.AudioError, match="sampling_rate"):
        tiny_model.embed_audio(np.ones(100, np.float32))


def test_embed_files_skips_and_reports_bad_files(tiny_model, clips, tmp_path):
    bad = tmp_path / "broken.flac"
    bad.write_bytes(b"not audio at all" * 50)
    good = list(clips.values())[:2]
    embeddings, kept, errors = tiny_model.embed_files([good[0], bad, good[1]])
    assert kept == [good[0], good[1]] and list(errors) == [bad]
    assert "broken.flac" in errors[bad]
    torch.testing.assert_close(embeddings, tiny_model.embed_audio(good))


def test_create_presets_and_tokenizer():
    model = biolingual.create("tiny", tokenizer_texts=["a frog", "an owl hooting"], device="cpu")
    assert model.clap.config.text_config.vocab_size == len(model.tokenizer)
    assert model.tokenizer("an owl")["input_ids"][0] == model.tokenizer.bos_token_id
    with pytest.raises(ValueError, match="Unknown preset"):
        biolingual.create("huge", tokenizer_texts=["x"])
    with pytest.raises(ValueError, match="tokenizer_texts"):
        biolingual.create("tiny")
    from biolingual.presets import preset_config

    base = preset_config("base", vocab_size=50265)
    assert base.projection_dim == 512 and base.audio_config.depths == [2, 2, 6, 2]
    assert base.text_config.num_hidden_layers == 12 and not base.audio_config.enable_fusion


def test_bfloat16_autocast_on_cpu_and_float16_refused(tiny_model, clips):
    path = clips["cricket_48k.wav"]
    reference = tiny_model.embed_audio(path)
    low = tiny_model.embed_audio(path, dtype=torch.bfloat16)
    assert low.dtype == torch.float32 and torch.nn.functional.cosine_similarity(low, reference).item() > 0.98
    with pytest.raises(ValueError, match="GPU"):
        tiny_model.embed_audio(path, dtype=torch.float16)


def test_resampled_input_matches_native_rate(tiny_model):
    clip48 = synth_call("Common Loon", 5.0, 48000, seed=3)
    clip16 = load_audio(clip48, 16000, sampling_rate=48000)
    a = tiny_model.embed_audio(clip48, sampling_rate=48000)
    b = tiny_model.embed_audio(clip16, sampling_rate=16000)
    assert torch.nn.functional.cosine_similarity(a, b).item() > 0.9


def test_from_pretrained_is_load(tiny_model, saved_model):
    from biolingual.model import BioLingual

    ours, theirs = BioLingual.from_pretrained(saved_model, device="cpu"), biolingual.load(saved_model, device="cpu")
    assert type(ours) is type(theirs) is BioLingual and ours.name_or_path == theirs.name_or_path == str(saved_model)
    assert ours.fingerprint() == theirs.fingerprint() == tiny_model.fingerprint()
    with pytest.raises(biolingual.ModelNotFoundError, match="no config.json"):
        BioLingual.from_pretrained(saved_model.parent, device="cpu")


def test_create_builds_through_from_preset():
    from biolingual.model import BioLingual

    texts = ["a frog", "an owl hooting"]
    created = biolingual.create("tiny", tokenizer_texts=texts, seed=3, device="cpu")
    torch.manual_seed(3)
    built = BioLingual.from_preset("tiny", created.tokenizer, device="cpu")
    assert built.name_or_path == created.name_or_path == "preset:tiny"
    assert built.fingerprint() == created.fingerprint()  # same seed, same tokenizer: the same model


def test_fingerprint_is_the_model_not_where_it_was_read_from(tiny_model, saved_model, tmp_path):
    import shutil

    reference = tiny_model.fingerprint()
    assert len(reference) == 32 and reference == tiny_model.fingerprint()
    copy = biolingual.load(shutil.copytree(saved_model, tmp_path / "elsewhere"), device="cpu")
    assert copy.fingerprint() == reference  # saved, copied to another folder and loaded: the same model
    copy.pooling = "max"
    assert copy.fingerprint() == reference  # pooling is a choice of each embed_audio call, not the model

    with torch.no_grad():
        copy.clap.audio_projection.linear1.weight[0, 0] += 1e-3
    assert copy.fingerprint() != reference  # one weight changed: another model
    assert biolingual.load(saved_model, device="cpu", dtype=torch.bfloat16).fingerprint() != reference

    front = biolingual.load(saved_model, device="cpu")
    front.front_end = biolingual.LogMelFrontEnd(dataclasses.replace(front.front_end.config, f_min=0.0))
    assert front.fingerprint() != reference  # other front-end settings embed differently


def test_logits_are_clap_logits_per_audio(tiny_model, saved_model):
    clip = synth_call("Barred Owl", 10.0, 48000, seed=7)  # one window at the model's rate: what CLAP sees too
    audio = tiny_model.embed_audio([clip], sampling_rate=48000)
    text = tiny_model.embed_labels(LABELS, TEMPLATE)
    logits = tiny_model.logits(audio, text)
    assert logits.shape == (1, len(LABELS)) and logits.dtype == torch.float32
    torch.testing.assert_close(logits.softmax(-1), tiny_model.similarity_to_probs(audio, text))
    clap = ClapModel.from_pretrained(saved_model).eval()
    tokens = tiny_model.tokenizer([TEMPLATE.format(label) for label in LABELS], padding=True, return_tensors="pt")
    with torch.inference_mode():
        features = tiny_model.front_end(torch.from_numpy(clip)[None])
        out = clap(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], input_features=features)
    torch.testing.assert_close(logits, out.logits_per_audio, atol=1e-4, rtol=1e-4)


def test_inference_context_restores_training_mode(tiny_model):
    tiny_model.train()
    try:
        with tiny_model.inference():
            assert not tiny_model.training and torch.is_inference_mode_enabled()
        assert tiny_model.training
    finally:
        tiny_model.eval()
