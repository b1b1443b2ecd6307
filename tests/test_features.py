"""The batched torch front end against transformers' ClapFeatureExtractor (the reference)."""

import numpy as np
import pytest
import torch

from biolingual.audio import load_audio, repeat_pad
from biolingual.features import FrontEndConfig, LogMelFrontEnd
from biolingual.synthetic import synth_call

TOLERANCE_DB = 1e-3


def _compare(rate: float, seconds: float, precision: str) -> tuple[np.ndarray, np.ndarray]:
    """(ours, reference) features of the same clip, recorded at ``rate`` and resampled to 48 kHz."""
    config = FrontEndConfig()
    raw = synth_call("Common Loon", seconds, rate, seed=int(rate + seconds), noise=0.05)
    audio = load_audio(raw, config.sampling_rate, sampling_rate=rate)  # ClapFeatureExtractor cannot resample
    expected = config.to_feature_extractor()(audio, sampling_rate=config.sampling_rate, return_tensors="np")
    ours = LogMelFrontEnd(config, precision=precision)(torch.from_numpy(repeat_pad(audio, config.window_samples)))
    assert ours.shape == expected["input_features"].shape == (1, 1, 1001, 64)
    return ours.numpy(), expected["input_features"]


@pytest.mark.parametrize("rate", [16000, 44100, 48000])
@pytest.mark.parametrize("seconds", [3.0, 10.0])
def test_float64_matches_clap_feature_extractor_everywhere(rate, seconds):
    ours, expected = _compare(rate, seconds, "float64")
    diff = float(np.abs(ours - expected).max())
    print(f"float64, {rate} Hz, {seconds} s: max |ours - ClapFeatureExtractor| = {diff:.2e} dB")
    assert diff < TOLERANCE_DB


@pytest.mark.parametrize("rate", [16000, 44100, 48000])
@pytest.mark.parametrize("seconds", [3.0, 10.0])
def test_float32_matches_clap_feature_extractor(rate, seconds):
    ours, expected = _compare(rate, seconds, "float32")
    diff = np.abs(ours - expected)
    # float32 FFT rounding sits ~140 dB below a frame's energy (about -100 dB here): only cells within
    # ~40 dB of it, i.e. the empty upper band of upsampled 16 kHz audio, can differ by more than 1e-3 dB.
    audible = expected > -60.0
    print(
        f"float32, {rate} Hz, {seconds} s: max diff {diff.max():.2e} dB overall, "
        f"{diff[audible].max():.2e} dB above -60 dB"
    )
    assert diff[audible].max() < TOLERANCE_DB
    assert diff.max() < 0.05
    if rate >= 44100:  # full-band audio has no cells near the floor
        assert diff.max() < TOLERANCE_DB


def test_fused_models_get_four_htk_channels_like_the_reference():
    config = FrontEndConfig(fusion=True)
    audio = synth_call("Barred Owl", 10.0, 48000, seed=1)
    expected = config.to_feature_extractor()(audio, sampling_rate=48000, return_tensors="np")["input_features"]
    ours = LogMelFrontEnd(config)(torch.from_numpy(audio)).numpy()
    assert ours.shape == expected.shape == (1, 4, 1001, 64)
    assert np.abs(ours - expected).max() < TOLERANCE_DB


def test_batch_equals_one_by_one():
    front_end = LogMelFrontEnd()
    batch = torch.from_numpy(
        np.stack(
            [
                synth_call(s, 10.0, 48000, seed=i)
                for i, s in enumerate(["Barred Owl", "Field Cricket", "Humpback Whale"])
            ]
        )
    )
    together = front_end(batch)
    for i in range(3):
        torch.testing.assert_close(front_end(batch[i]), together[i : i + 1], atol=1e-4, rtol=0)


def test_settings_round_trip_through_the_transformers_extractor():
    config = FrontEndConfig(f_min=0.0, n_mels=32, max_length_s=5.0)
    assert FrontEndConfig.from_feature_extractor(config.to_feature_extractor()) == config
