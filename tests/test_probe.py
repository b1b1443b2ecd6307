"""Layer-wise probing (eval.probe) end to end on tiny random speech encoders saved to folders, on a small
synthetic call-type dataset written as real audio files."""

from __future__ import annotations

import csv
import json
from functools import partial
from http.server import SimpleHTTPRequestHandler
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from sklearn.metrics import balanced_accuracy_score

from demo.make_call_types import write_call_types
from eval.probe.__main__ import main
from eval.probe.dataset import ProbeDataError, read_csv, stratified_split
from eval.probe.encoders import ProbeModelError, load_encoder
from eval.probe.features import LayerFeatureCache, extract
from eval.probe.run import parse_layers

TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(32, 32, 32),
    # a stride of 320 samples (50 frames per second) as in the published models: the attention's cost grows with the
    # square of the frames, and at a stride of 20 WavLM's relative position bias alone took a minute of the suite
    conv_kernel=(10, 8, 8),
    conv_stride=(5, 8, 8),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
)


@pytest.fixture(scope="module")
def speech_models(tmp_path_factory):
    """Tiny random HuBERT, wav2vec2 and WavLM saved as transformers folders (wav2vec2 with a feature
    extractor that normalises its input, as facebook/wav2vec2-base's does)."""
    from transformers import (
        HubertConfig,
        HubertModel,
        Wav2Vec2Config,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2Model,
        WavLMConfig,
        WavLMModel,
    )

    root = tmp_path_factory.mktemp("speech")
    paths = {}
    for i, (name, config_cls, model_cls) in enumerate(
        [
            ("hubert-tiny", HubertConfig, HubertModel),
            ("wav2vec2-tiny", Wav2Vec2Config, Wav2Vec2Model),
            ("wavlm-tiny", WavLMConfig, WavLMModel),
        ]
    ):
        torch.manual_seed(i)
        model_cls(config_cls(**TINY)).save_pretrained(root / name)
        if name == "wav2vec2-tiny":
            Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True).save_pretrained(root / name)
        paths[name] = root / name
    return paths


@pytest.fixture(scope="module")
def calls_csv(tmp_path_factory):
    """15 clips per call type, one shorter than 5000 samples and one silent."""
    return write_call_types(tmp_path_factory.mktemp("calls"), per_type=15, quirks=True, noise=0.05)


def _results(out):
    with open(out / "results.csv") as f:
        return list(csv.DictReader(f))


def test_probe_end_to_end_and_resume(speech_models, saved_model, calls_csv, tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    models = [str(p) for p in speech_models.values()] + [str(saved_model)]
    args = ["--models", *models, "--data", str(calls_csv), "--out", str(out), "--cache", str(cache), "--epochs", "30"]
    assert main(args) == 0
    rows = _results(out)
    by_model = {}
    for r in rows:
        by_model.setdefault(r["model"], []).append(r)
    assert set(by_model) == {"hubert-tiny", "wav2vec2-tiny", "wavlm-tiny", "tiny"}
    assert [r["layer"] for r in by_model["hubert-tiny"]] == ["0", "1", "2"]  # hidden_states[0..2]
    assert len(by_model["tiny"]) == 1 + len(
        json.loads((saved_model / "config.json").read_text())["audio_config"]["depths"]
    )
    best = {r["model"]: float(r["test_uar"]) for r in csv.DictReader(open(out / "best_layers.csv"))}
    for model, uar in best.items():  # four call types: chance is 0.25
        assert uar >= 0.6, (model, uar)
    # the reported UAR is scikit-learn's balanced accuracy of the best epoch's test predictions
    result = json.loads((out / "calls" / "hubert-tiny" / "layer_01.json").read_text())
    confusion = np.array(result["confusion"])
    y_true = np.repeat(np.arange(4), confusion.sum(1))
    y_pred = np.concatenate([np.repeat(np.arange(4), row) for row in confusion])
    assert result["test_uar"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    extraction = json.loads((out / "calls" / "hubert-tiny" / "extraction.json").read_text())
    assert (extraction["clips"], extraction["padded"], extraction["silent"], extraction["unreadable"]) == (60, 1, 1, 0)
    assert (out / "layers.png").stat().st_size > 10_000
    assert (out / "calls" / "wavlm-tiny" / "confusion_best.png").is_file()
    md = (out / "results.md").read_text()
    assert "chance UAR 0.250" in md and "| hubert-tiny |" in md
    assert "train/valid/test 42/12/6" in md  # the paper's random 70/20/10 over all 60 clips, not by class

    # a rerun reuses every cached feature and every per-layer result
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("layer_*.json")}
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("layer_*.json")} == stamps
    assert json.loads((out / "calls" / "hubert-tiny" / "extraction.json").read_text())["computed"] == 0
    assert _results(out) == rows


def test_layers_and_fusion(speech_models, calls_csv, tmp_path):
    out = tmp_path / "out"
    assert (
        main(
            [
                "--models",
                str(speech_models["hubert-tiny"]),
                "--data",
                str(calls_csv),
                "--out",
                str(out),
                "--cache",
                str(tmp_path / "cache"),
                "--layers",
                "1-5",
                "--fusion",
                "--no-plots",
                "--epochs",
                "10",
            ]
        )
        == 0
    )
    rows = _results(out)
    assert [r["layer"] for r in rows] == ["1", "2", "fusion: concat", "fusion: weighted"]
    weighted = json.loads((out / "calls" / "hubert-tiny" / "fusion_weighted.json").read_text())
    assert weighted["layers"] == [1, 2] and sum(weighted["layer_weights"]) == pytest.approx(1.0)
    assert not (out / "layers.png").exists()


def test_features_are_mean_and_std_over_all_chunks(speech_models, tmp_path):
    """A clip longer than --chunk-seconds runs as chunks; its features are the mean and std over the frames of
    all chunks together, and do not depend on which clips share its batch."""
    encoder = load_encoder(str(speech_models["hubert-tiny"]), device="cpu", chunk_s=1.0)
    rng = np.random.default_rng(1)
    long_clip = (0.3 * rng.standard_normal(40000)).astype(np.float32)  # 2.5 s: chunks of 1 s
    other = (0.5 * rng.standard_normal(16000)).astype(np.float32)
    for name, x in (("long.wav", long_clip), ("other.wav", other), ("other2.wav", other[::-1].copy())):
        sf.write(tmp_path / name, x, 16000, subtype="FLOAT")
    cache = LayerFeatureCache(tmp_path / "cache", encoder)
    keys, report = extract(
        encoder,
        [str(tmp_path / n) for n in ("long.wav", "other.wav", "other2.wav")],
        cache,
        batch_size=4,
        progress=False,
    )
    assert report.computed == 3
    peak = long_clip / np.abs(long_clip).max()
    chunks = [peak[0:16000], peak[16000:32000], peak[24000:40000]]  # the last chunk is the clip's final second
    with torch.no_grad():
        hidden = [encoder.module(torch.from_numpy(c)[None], output_hidden_states=True).hidden_states for c in chunks]
    for layer in range(encoder.num_layers):
        frames = torch.cat([h[layer][0] for h in hidden]).double()
        expected = torch.cat([frames.mean(0), frames.std(0)]).numpy()  # unbiased, as the paper's torch.std
        np.testing.assert_allclose(cache.features(keys[:1], layer)[0], expected, rtol=1e-4, atol=1e-5)
    alone = LayerFeatureCache(tmp_path / "cache_alone", encoder)
    keys_alone, _ = extract(encoder, [str(tmp_path / "other.wav")], alone, batch_size=1, progress=False)
    for layer in range(encoder.num_layers):
        np.testing.assert_allclose(
            alone.features(keys_alone, layer), cache.features(keys[1:2], layer), rtol=1e-4, atol=1e-5
        )


def test_bad_input_is_named(speech_models, calls_csv, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    lines = calls_csv.read_text().replace("tsik_3.wav", "tsik_missing.wav").splitlines()
    bad.write_text("\n".join([lines[0]] + [f"{calls_csv.parent}/{line}" for line in lines[1:]]) + "\n")
    assert main(["--models", str(speech_models["hubert-tiny"]), "--data", str(bad), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "1 audio file(s) not found" in err and "row 5" in err and "tsik_missing.wav" in err
    assert main(["--models", "no-such-model-xyz", "--data", str(calls_csv), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "unknown model 'no-such-model-xyz'" in err and "hubert" in err
    with pytest.raises(ProbeModelError, match="no such file or folder"):
        load_encoder(str(tmp_path / "nowhere/"))
    with pytest.raises(ValueError, match="--layers"):
        parse_layers("0-x", 12)


def test_dtype_runs_each_encoder_at_that_precision_into_its_own_cache(
    speech_models, saved_model, calls_csv, tmp_path, capsys
):
    """--dtype / load_encoder(dtype=): a speech model and a BioLingual model run at bfloat16 (autocast) and int8
    (quantized linear layers) really compute at that precision (their features differ from float32's), stay
    close to float32, and are cached apart from float32 features so neither stands in for the other."""
    rng = np.random.default_rng(0)
    clips = []
    for i in range(3):
        clips.append(str(tmp_path / f"c{i}.wav"))
        sf.write(clips[-1], (0.3 * rng.standard_normal(16000 + 4000 * i)).astype(np.float32), 16000, subtype="FLOAT")
    for spec in (str(speech_models["hubert-tiny"]), str(saved_model)):
        feats = {}
        for dtype in ("float32", "bfloat16", "int8"):
            encoder = load_encoder(spec, device="cpu", dtype=dtype)
            assert encoder.precision == dtype
            cache = LayerFeatureCache(tmp_path / "cache", encoder)
            assert cache.path.name.endswith(".sqlite" if dtype == "float32" else f"-{dtype}.sqlite")
            keys, report = extract(encoder, clips, cache, batch_size=4, progress=False)
            assert report.computed == 3
            feats[dtype] = [cache.features(keys, layer) for layer in range(encoder.num_layers)]  # widths differ
            cache.close()
        for dtype in ("bfloat16", "int8"):
            assert not all(np.array_equal(a, b) for a, b in zip(feats[dtype], feats["float32"])), (spec, dtype)
            for a, b in zip(feats[dtype], feats["float32"]):
                cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
                assert cosine.min() >= 0.99, (spec, dtype, cosine.min())
    assert len(list((tmp_path / "cache").glob("*.sqlite"))) == 6
    # a precision this machine cannot run is refused before any work, naming it
    assert (
        main(
            [
                "--models",
                str(speech_models["hubert-tiny"]),
                "--data",
                str(calls_csv),
                "--out",
                str(tmp_path / "o"),
                "--dtype",
                "float16",
            ]
        )
        == 1
    )
    assert "float16 inference needs a GPU" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_splits(tmp_path):
    targets = np.repeat(np.arange(3), [20, 10, 1])
    split = stratified_split(targets, seed=42)
    assert np.array_equal(split, stratified_split(targets, seed=42))
    for c, (n_train, n_valid, n_test) in enumerate([(14, 4, 2), (7, 2, 1), (1, 0, 0)]):
        assert [int(((targets == c) & (split == s)).sum()) for s in ("train", "valid", "test")] == [
            n_train,
            n_valid,
            n_test,
        ]
    for name in ("a.wav", "b.wav"):
        sf.write(tmp_path / name, np.zeros(100, np.float32), 16000)
    (tmp_path / "given.csv").write_text("a.wav,x,train\nb.wav,y,val\na.wav,y,test\nb.wav,x,eval\n")
    ds = read_csv(tmp_path / "given.csv")
    assert list(ds.split) == ["train", "valid", "test", "test"] and ds.labels == ["x", "y"]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "beans.csv").write_text(",path,label\n0,a.wav,x\n1,b.wav,y\n2,a.wav,y\n3,b.wav,x\n4,a.wav,x\n")
    ds = read_csv(tmp_path / "sub" / "beans.csv", root=tmp_path)  # BEANS' layout: an index column, paths from its root
    assert ds.paths[0] == str(tmp_path / "a.wav") and ds.labels == ["x", "y"]
    (tmp_path / "oops.csv").write_text("a.wav,x,train\nb.wav,y,later\n")
    with pytest.raises(ProbeDataError, match="row 2: split must be"):
        read_csv(tmp_path / "oops.csv")
    assert parse_layers("0,3-4,20", 13) == [0, 3, 4] and parse_layers(None, 5) == [0, 1, 2, 3, 4]


FIXTURE = Path(__file__).parent / "fixtures" / "aves_tiny"


def _aves_reference() -> tuple[torch.Tensor, list[np.ndarray]]:
    """The input and torchaudio's own per-layer outputs (extract_features) for the fixture's weights, recorded
    by tests/fixtures/make_aves_fixture.py with torchaudio 2.11."""
    expected = np.load(FIXTURE / "expected.npz")
    layers = sorted(k for k in expected.files if k.startswith("layer"))
    return torch.from_numpy(expected["waves"]), [expected[k] for k in layers]


@pytest.mark.parametrize("spelling", ["parametrizations", "weight_g/weight_v"])
def test_aves_torchaudio_weights_give_torchaudio_outputs(spelling, tmp_path):
    """AVES weights in torchaudio's format load into transformers' HubertModel by renaming keys, and give the
    same hidden states as torchaudio: hidden_states[i + 1] == extract_features()[i]. Older torch saved the
    positional convolution's weight norm as weight_g/weight_v (the published AVES files do); both load."""
    from eval.probe.aves import load_aves

    weights = FIXTURE / "aves-tiny.torchaudio.pt"
    if spelling == "weight_g/weight_v":
        state = torch.load(weights, weights_only=True)
        renamed = {
            k.replace("parametrizations.weight.original0", "weight_g").replace(
                "parametrizations.weight.original1", "weight_v"
            ): v
            for k, v in state.items()
        }
        assert any(k.endswith("weight_g") for k in renamed)
        weights = tmp_path / "aves-tiny.torchaudio.pt"
        torch.save(renamed, weights)
        (tmp_path / "aves-tiny.torchaudio.model_config.json").write_text(
            (FIXTURE / "aves-tiny.torchaudio.model_config.json").read_text()
        )
    model = load_aves(weights)
    waves, reference = _aves_reference()
    with torch.no_grad():
        hidden = model(waves, output_hidden_states=True).hidden_states
    assert len(hidden) == len(reference) + 1
    for ours, theirs in zip(hidden[1:], reference):
        np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-5, atol=1e-5)


def test_aves_short_name_downloads_once_and_probes(calls_csv, tmp_path, monkeypatch, http_server):
    """`--models aves` fetches the torchaudio files into $BIOLINGUAL_AVES_DIR (here from a local server standing in
    for Earth Species Project's storage) and reuses them; a folder holding the files works too."""
    served = tmp_path / "served"
    served.mkdir()
    for suffix in (".torchaudio.pt", ".torchaudio.model_config.json"):
        (served / f"aves-base-bio{suffix}").write_bytes((FIXTURE / f"aves-tiny{suffix}").read_bytes())
    requests_seen = []

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests_seen.append(self.path)

    with http_server(partial(Handler, directory=str(served))) as server:
        monkeypatch.setenv("BIOLINGUAL_AVES_URL", server.url)
        monkeypatch.setenv("BIOLINGUAL_AVES_DIR", str(tmp_path / "aves_cache"))
        encoder = load_encoder("aves", device="cpu")
        assert encoder.name == "aves" and encoder.num_layers == 4 and encoder.sampling_rate == 16000
        assert len(requests_seen) == 2
        load_encoder("aves", device="cpu")
        assert len(requests_seen) == 2  # cached
        assert load_encoder(str(tmp_path / "aves_cache"), device="cpu").identity == encoder.identity
        out = tmp_path / "out"
        assert (
            main(
                [
                    "--models",
                    "aves",
                    "--data",
                    str(calls_csv),
                    "--out",
                    str(out),
                    "--cache",
                    str(tmp_path / "c"),
                    "--epochs",
                    "3",
                    "--no-plots",
                ]
            )
            == 0
        )
        assert [r["layer"] for r in _results(out)] == ["0", "1", "2", "3"]
    # closed: nothing listens any more, so the next download fails at once
    monkeypatch.setenv("BIOLINGUAL_AVES_DIR", str(tmp_path / "empty"))
    with pytest.raises(ProbeModelError, match="could not download aves"):
        load_encoder("aves", device="cpu")


def test_asr_fine_tuned_checkpoint_probes_its_encoder(tmp_path):
    """An ASR fine-tuned checkpoint (Wav2Vec2ForCTC, as facebook/wav2vec2-base-960h) loads as its encoder with the
    fine-tuned weights, not a fresh one: the probe's layers equal the CTC model's own hidden states."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    torch.manual_seed(3)
    ctc = Wav2Vec2ForCTC(Wav2Vec2Config(**TINY, vocab_size=12)).eval()
    ctc.save_pretrained(tmp_path / "w2v-ctc")
    encoder = load_encoder(str(tmp_path / "w2v-ctc"), device="cpu")
    waves = torch.randn(2, 8000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = ctc(waves, output_hidden_states=True).hidden_states
    ours = encoder.hidden_states(waves)
    assert len(ours) == len(expected) == 3
    for a, b in zip(ours, expected):
        torch.testing.assert_close(a, b)


def test_an_unreadable_clip_is_skipped_and_counted(speech_models, calls_csv, tmp_path):
    """A file that exists but does not decode is skipped, logged and listed; the probe runs on the rest."""
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00 not audio at all")
    lines = calls_csv.read_text().splitlines()
    data = tmp_path / "with_broken.csv"
    data.write_text(
        "\n".join([lines[0], *(f"{calls_csv.parent}/{line}" for line in lines[1:]), f"{broken},tsik"]) + "\n"
    )
    out = tmp_path / "out"
    assert (
        main(
            [
                "--models",
                str(speech_models["hubert-tiny"]),
                "--data",
                str(data),
                "--out",
                str(out),
                "--cache",
                str(tmp_path / "cache"),
                "--layers",
                "0",
                "--epochs",
                "2",
                "--no-plots",
            ]
        )
        == 2
    )  # finished, 1 skipped
    extraction = json.loads((out / "with-broken" / "hubert-tiny" / "extraction.json").read_text())
    assert extraction["unreadable"] == 1 and str(broken) in extraction["unreadable_files"]
    result = json.loads((out / "with-broken" / "hubert-tiny" / "layer_00.json").read_text())
    assert sum(result["n"].values()) == 60  # the 60 readable clips
    assert "| hubert-tiny | 16000 | 61 | 1 | 1 | 1 |" in (out / "results.md").read_text()


def test_short_names_resolve_to_the_published_checkpoints_through_the_cache(speech_models, tmp_path, monkeypatch):
    """`--models hubert` means facebook/hubert-base-ls960, loaded as transformers loads any hub id: here from an
    offline Hugging Face cache holding a tiny HuBERT under that id, as it is for users who downloaded it."""
    from .hub_cache import cache_as_hub_id

    cache_as_hub_id(speech_models["hubert-tiny"], "facebook/hubert-base-ls960", tmp_path / "hub", monkeypatch)
    encoder = load_encoder("hubert", device="cpu")
    assert (encoder.name, encoder.source, encoder.num_layers) == ("hubert", "facebook/hubert-base-ls960", 3)
    assert encoder.identity == load_encoder(str(speech_models["hubert-tiny"]), device="cpu").identity
