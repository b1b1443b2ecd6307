"""The probe's defaults follow the paper's code (Sarkar & Magimai-Doss, ICASSP 2025; idiap/ssl-human-animal):
the waveform each model gets, the 70/20/10 split rule, and the standard-deviation estimator, checked on the
real CLI (``python -m eval.probe`` main in-process) with a tiny random wav2vec2 saved with a feature
extractor that asks for normalised input (as facebook/wav2vec2-base's does)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from biolingual.audio import load_audio
from eval.probe.__main__ import main
from eval.probe.dataset import read_csv
from eval.probe.encoders import load_encoder
from eval.probe.features import LayerFeatureCache, clip_key
from eval.probe.mlp import standardise

TINY = dict(
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=20,
    conv_dim=(16, 16, 16),
    conv_kernel=(10, 3, 3),
    conv_stride=(5, 2, 2),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
)
COUNTS = (20, 10, 1)  # rows per class: a split by class and the paper's split over all rows give different sizes


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny wav2vec2 whose feature extractor says do_normalize, and 31 clips of distinct lengths (all over
    5000 samples, none a multiple of 0.1 s) with a DC offset, so that any normalisation or tiling shows."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    root = tmp_path_factory.mktemp("protocol")
    torch.manual_seed(0)
    Wav2Vec2Model(Wav2Vec2Config(**TINY)).save_pretrained(root / "w2v")
    Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True).save_pretrained(root / "w2v")
    rng = np.random.default_rng(0)
    rows = []
    for i, label in enumerate(np.repeat(["a", "b", "c"], COUNTS)):
        audio = (0.3 + 0.2 * rng.standard_normal(5001 + 37 * i)).astype(np.float32)
        sf.write(root / f"clip{i:02d}.wav", audio, 16000, subtype="FLOAT")
        rows.append(f"clip{i:02d}.wav,{label}")
    (root / "clips.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    return root


def _run_capturing_input(args: list[str]) -> list[np.ndarray]:
    """Run the CLI; return every waveform the model's convolutional front end received. A global forward
    pre-hook only observes: the run is the real one."""
    from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2FeatureEncoder

    seen: list[np.ndarray] = []

    def record(module, inputs):
        if isinstance(module, Wav2Vec2FeatureEncoder):
            seen.extend(inputs[0].detach().cpu().numpy())

    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        assert main(args) == 0
    finally:
        handle.remove()
    return seen


def _args(root, out, *extra) -> list[str]:
    return [
        "--models",
        str(root / "w2v"),
        "--data",
        str(root / "clips.csv"),
        "--out",
        str(out),
        "--cache",
        str(out / "cache"),
        "--epochs",
        "1",
        "--no-plots",
        *extra,
    ]


def test_the_model_gets_the_peak_normalised_clip_the_paper_feeds_it(setup, tmp_path):
    """By default every clip reaches the model as loaded and divided by its peak, at its own length: no
    zero-mean/unit-variance step even where the feature extractor asks for one, no tiling beyond 5000 samples."""
    seen = {len(row): row for row in _run_capturing_input(_args(setup, tmp_path / "out"))}
    assert len(seen) == sum(COUNTS)  # one input per clip, each at the clip's own length
    for i in range(sum(COUNTS)):
        x = load_audio(str(setup / f"clip{i:02d}.wav"), 16000)
        np.testing.assert_allclose(seen[len(x)], x / np.abs(x).max(), rtol=0, atol=1e-6)


def test_normalised_and_tiled_input_is_one_flag_away(setup, tmp_path):
    seen = _run_capturing_input(
        _args(setup, tmp_path / "out", "--normalize-waveform", "--tile-multiple-seconds", "0.1")
    )
    assert all(len(row) % 1600 == 0 for row in seen)
    x = load_audio(str(setup / "clip00.wav"), 16000)  # 5001 samples: tiled to 6400
    tiled = np.resize(x / np.abs(x).max(), 6400)
    expected = (tiled - tiled.mean()) / np.sqrt(tiled.var() + 1e-7)
    assert any(len(row) == 6400 and np.abs(row - expected).max() < 1e-4 for row in seen)


def test_split_sizes_follow_the_papers_rule(setup, tmp_path):
    """Without a split column: train int(0.7 N), valid int(0.2 N), test the rest, drawn over all rows as
    torch.utils.data.random_split draws them with a generator seeded 42 (not class by class)."""
    n = sum(COUNTS)
    ds = read_csv(setup / "clips.csv")
    expected = torch.utils.data.random_split(
        range(n),
        [int(0.7 * n), int(0.2 * n), n - int(0.7 * n) - int(0.2 * n)],
        generator=torch.Generator().manual_seed(42),
    )
    for split, subset in zip(("train", "valid", "test"), expected):
        assert sorted(ds.indices(split).tolist()) == sorted(subset.indices), split
    out = tmp_path / "out"
    assert main(_args(setup, out, "--layers", "0")) == 0
    assert json.loads((out / "clips" / "w2v" / "layer_00.json").read_text())["n"] == {
        "train": 21,
        "valid": 6,
        "test": 4,
    }
    assert "train/valid/test 21/6/4" in (out / "results.md").read_text()
    stratified = read_csv(setup / "clips.csv", split_rule="stratified").counts()
    assert stratified == {"train": 22, "valid": 6, "test": 3}  # the --split stratified alternative


def test_pooled_std_is_the_unbiased_estimator(setup, tmp_path):
    """Each layer's feature is mean ++ std over frames with torch.std's unbiased estimator, as the paper's
    code computes it; read back from the cache the CLI wrote."""
    out = tmp_path / "out"
    assert main(_args(setup, out, "--layers", "0")) == 0
    encoder = load_encoder(str(setup / "w2v"), device="cpu")
    cache = LayerFeatureCache(out / "cache", encoder)
    path = str(setup / "clip05.wav")
    x = load_audio(path, 16000)
    with torch.no_grad():
        hidden = encoder.module(torch.from_numpy(x / np.abs(x).max())[None], output_hidden_states=True).hidden_states
    for layer, h in enumerate(hidden):
        frames = h[0].double()
        expected = torch.cat([frames.mean(0), frames.std(0)]).numpy()  # torch.std: divisor frames - 1
        np.testing.assert_allclose(cache.features([clip_key(path)], layer)[0], expected, rtol=1e-5, atol=1e-6)
    cache.close()


def test_feature_standardisation_uses_the_unbiased_train_std():
    train = np.random.default_rng(0).standard_normal((7, 5)) * 3 + 1
    scaled, other = standardise(train, train[:2])
    np.testing.assert_allclose(scaled.std(0, ddof=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(scaled.mean(0), 0.0, atol=1e-6)
    np.testing.assert_allclose(other, scaled[:2], rtol=1e-6)
