"""Finite but huge samples (issue 14 item 5): refused with the file's name through every door, never NaN."""

from __future__ import annotations

import copy
import csv
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from biolingual.cli import main
from biolingual.errors import AudioError
from biolingual.synthetic import synth_call
from eval import zero_shot

from .conftest import LABELS


@pytest.fixture(scope="module")
def huge_wav(tmp_path_factory):
    """A float WAV whose samples reach 1e19: finite, so it passed the old NaN/inf check."""
    path = tmp_path_factory.mktemp("huge") / "huge.wav"
    x = synth_call(LABELS[0], 2.0, 16000, seed=1)
    x = x / np.abs(x).max() * np.float32(1e19)
    sf.write(path, x.astype(np.float32), 16000, subtype="FLOAT")
    assert np.isfinite(sf.read(path, dtype="float32")[0]).all()
    return path


def test_predict_skips_huge_file_by_name_and_prints_no_nan(saved_model, clips, huge_wav, capsys):
    good = str(clips["peeper_short.wav"])
    code = main(
        ["predict", str(huge_wav), good, "--labels", *LABELS[:3], "--model", str(saved_model), "--device", "cpu"]
    )
    out, err = capsys.readouterr()
    assert code == 2  # finished, one file skipped
    assert f"skipped {huge_wav}" in err and "samples up to 1e+19" in err and "rescale" in err
    assert "nan" not in out.lower() and str(huge_wav) not in out and good in out


def test_embed_skips_huge_file(saved_model, huge_wav, tmp_path, capsys):
    out = tmp_path / "emb.npy"
    assert main(["embed", str(huge_wav), "--model", str(saved_model), "--out", str(out), "--device", "cpu"]) == 2
    assert "samples up to 1e+19" in capsys.readouterr().err
    assert np.load(out).shape[0] == 0


def test_embed_audio_refuses_huge_array_by_name(tiny_model):
    x = np.full(16000, 1e19, dtype=np.float32)
    with pytest.raises(AudioError, match=r"audio array #0 of shape \(16000,\) has samples up to 1e\+19"):
        tiny_model.embed_audio(x, sampling_rate=16000)
    tiny_model.embed_audio(x / np.float32(1e19) * 1.5, sampling_rate=16000)  # a little over full scale is fine


def test_zero_shot_eval_skips_huge_row(saved_model, huge_wav, tmp_path):
    d = huge_wav.parent
    rows = [["huge.wav", LABELS[0]]]
    for i in range(3):
        sf.write(d / f"ok{i}.wav", synth_call(LABELS[i], 2.0, 16000, seed=i), 16000)
        rows.append([f"ok{i}.wav", LABELS[i]])
    with open(d / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["path", "label"], *rows])
    out = tmp_path / "zs"
    code = zero_shot.main(
        ["--model", str(saved_model), "--data", str(d / "labels.csv"), "--out", str(out), "--workers", "0"]
    )
    assert code == 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 3
    assert any("huge.wav" in p and "samples up to" in p for p in metrics["problems"])
    assert "nan" not in (out / "metrics.json").read_text().lower()


def test_nonfinite_embedding_is_an_error_naming_the_input(tiny_model, clips):
    broken = copy.deepcopy(tiny_model)
    with torch.no_grad():
        broken.clap.audio_projection.linear1.weight.fill_(float("inf"))  # corrupt weights: the model itself gives NaN
    with pytest.raises(AudioError, match="peeper_short.wav.*not finite"):
        broken.embed_audio(clips["peeper_short.wav"])
    emb, kept, errors = broken.embed_files([clips["peeper_short.wav"]])
    assert emb.shape[0] == 0 and kept == [] and "not finite" in errors[clips["peeper_short.wav"]]
