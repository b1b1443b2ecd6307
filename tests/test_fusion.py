"""Fused checkpoints follow transformers' ``is_longer`` rule: our embeddings equal ClapFeatureExtractor +
ClapModel's on a tiny fused model (review of issue 14)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import ClapFeatureExtractor, ClapModel

import biolingual
from biolingual.features import FrontEndConfig
from biolingual.model import BioLingual
from biolingual.presets import preset_config
from biolingual.synthetic import synth_call
from biolingual.tokenizer import train_tokenizer

from .conftest import LABELS

RATE = 48_000


@pytest.fixture(scope="module")
def fused_folder(tmp_path_factory):
    tokenizer = train_tokenizer([f"The sound of a {s}" for s in LABELS], vocab_size=300)
    config = preset_config(
        "tiny",
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config.audio_config.enable_fusion = True
    torch.manual_seed(0)
    clap = ClapModel(config)
    model = BioLingual(clap, tokenizer, FrontEndConfig(fusion=True))
    path = tmp_path_factory.mktemp("fused") / "tiny-fused"
    model.save_pretrained(path)
    return path


def _reference(folder, clips) -> torch.Tensor:
    """transformers' own path: the saved feature extractor, then ClapModel with its is_longer."""
    fe = ClapFeatureExtractor.from_pretrained(folder)
    assert fe.truncation == "fusion"
    clap = ClapModel.from_pretrained(folder).eval()
    inputs = fe(clips, sampling_rate=RATE, return_tensors="pt")
    with torch.no_grad():
        out = clap.get_audio_features(input_features=inputs["input_features"].float(), is_longer=inputs["is_longer"])
    return F.normalize(out.pooler_output, dim=-1), inputs["is_longer"].flatten().tolist()


def _clip(seconds_or_samples, seed):
    n = seconds_or_samples if isinstance(seconds_or_samples, int) else int(seconds_or_samples * RATE)
    return synth_call(LABELS[seed % len(LABELS)], n / RATE, RATE, seed=seed)[:n].astype(np.float32)


def test_fused_long_and_short_clips_match_transformers(fused_folder):
    """A clip 960 samples over 10 s has exactly three possible crops, so transformers' random choice is
    fixed; a short clip beside it is not "longer" in either."""
    model = biolingual.load(fused_folder, device="cpu")
    clips = [_clip(480_960, 0), _clip(3.0, 1), _clip(10.0, 2)]
    ref, longer = _reference(fused_folder, clips)
    assert longer == [True, False, False]
    ours = model.embed_audio(clips, sampling_rate=RATE)
    torch.testing.assert_close(ours, ref, atol=2e-4, rtol=0)


def test_fused_crops_are_the_first_central_and_last_window(fused_folder, monkeypatch):
    """For a 25 s clip transformers draws its three crops at random; ours are fixed (first, central, last
    10 s). Made to draw those, transformers gives our embedding; two of our calls agree exactly."""
    model = biolingual.load(fused_folder, device="cpu")
    clips = [_clip(25.0, 3), _clip(4.0, 4)]
    picks = iter([lambda r: r[0], lambda r: r[len(r) // 2], lambda r: r[-1]])
    monkeypatch.setattr(np.random, "choice", lambda r: next(picks)(r))
    ref, longer = _reference(fused_folder, clips)
    assert longer == [True, False]
    ours = model.embed_audio(clips, sampling_rate=RATE)
    torch.testing.assert_close(ours, ref, atol=2e-4, rtol=0)
    assert torch.equal(model.embed_audio(clips, sampling_rate=RATE), ours)
