"""Embedding a long file streams it window by window (issue 14: `embed` held the whole decoded file)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import soundfile as sf
import torch

import biolingual.model
import biolingual.windows
from biolingual.synthetic import synth_call

from .conftest import LABELS


@pytest.mark.parametrize("pooling", ["mean", "max", "first"])
def test_streamed_file_embeds_as_the_whole_decode(tiny_model, clips, monkeypatch, pooling):
    """The same windows whether a file is read whole or streamed: identical at the model's rate, and within
    resampling noise (soxr's streaming and one-shot filters) at another rate."""
    files = {"cricket_48k.wav": 1e-6, "loon_long.flac": 1e-3}  # 10 s at 48 kHz; 23 s at 22.05 kHz (3 windows)
    whole = tiny_model.embed_audio([clips[name] for name in files], pooling=pooling)
    monkeypatch.setattr(biolingual.model, "STREAM_SECONDS", 0.0)  # every file streams
    streamed = tiny_model.embed_audio([clips[name] for name in files], pooling=pooling)
    for i, atol in enumerate(files.values()):
        torch.testing.assert_close(streamed[i], whole[i], atol=atol, rtol=0)


def test_long_file_is_never_held_whole(tiny_model, tmp_path, monkeypatch):
    """Peak numpy memory while embedding a 200 s file stays far below the file decoded at 48 kHz (38 MB):
    what is held is a block being read and the windows of one batch, whatever the file's length."""
    path = tmp_path / "long.wav"
    sf.write(path, synth_call(LABELS[1], 200.0, 8000, seed=3), 8000, subtype="PCM_16")
    decoded_bytes = 200 * tiny_model.sampling_rate * 4
    monkeypatch.setattr(biolingual.windows, "BLOCK_SECONDS", 5.0)  # small blocks: a small, clear bound
    tracemalloc.start()
    try:
        emb = tiny_model.embed_audio(path, batch_size=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert emb.shape == (1, tiny_model.embedding_dim) and torch.isfinite(emb).all()
    assert peak < decoded_bytes / 4, f"peak {peak / 1e6:.1f} MB for a file of {decoded_bytes / 1e6:.0f} MB decoded"


def test_streamed_file_with_bad_samples_late_is_skipped_by_name(tiny_model, tmp_path, monkeypatch):
    """A streamed file whose bad samples come after windows were already embedded is dropped whole."""
    path = tmp_path / "late_bad.wav"
    x = synth_call(LABELS[2], 30.0, 8000, seed=4)
    x[-8000:] = 1e19
    sf.write(path, x.astype(np.float32), 8000, subtype="FLOAT")
    monkeypatch.setattr(biolingual.model, "STREAM_SECONDS", 0.0)
    monkeypatch.setattr(biolingual.windows, "BLOCK_SECONDS", 10.0)
    emb, kept, errors = tiny_model.embed_files([path], batch_size=1)
    assert emb.shape[0] == 0 and kept == [] and "samples up to 1e+19" in errors[path]
