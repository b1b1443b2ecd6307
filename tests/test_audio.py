"""biolingual.audio: decoding, mono mixing, resampling, padding, windowing and bad input."""

import av
import numpy as np
import pytest
import soundfile as sf
import torch

from biolingual.audio import decode, load_audio, repeat_pad, split_windows
from biolingual.errors import AudioError
from biolingual.synthetic import synth_call

RATE = 48000


def test_decodes_common_formats_to_mono_at_model_rate(clips):
    for name, path in clips.items():
        info = sf.info(str(path))
        samples = load_audio(path, RATE)
        assert samples.dtype == np.float32 and samples.ndim == 1, name
        assert abs(len(samples) - info.duration * RATE) <= 2, name
        assert np.isfinite(samples).all() and samples.std() > 0.01, name


def test_stereo_is_the_mean_of_its_channels(tmp_path):
    left = synth_call("Barred Owl", 1.0, RATE, seed=1)
    right = synth_call("Spring Peeper", 1.0, RATE, seed=2)
    sf.write(tmp_path / "s.wav", np.stack([left, right], 1), RATE, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "s.wav", RATE), (left + right) / 2, atol=1e-6)


def test_resampling_preserves_a_tone(tmp_path):
    rate = 22050
    t = np.arange(rate * 2) / rate
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    out = load_audio(tone, RATE, sampling_rate=rate)
    assert len(out) == 2 * RATE
    spectrum = np.abs(np.fft.rfft(out))
    peak_hz = np.argmax(spectrum) * RATE / len(out)
    assert abs(peak_hz - 1000) < 1


def test_m4a_aac_is_decoded_with_pyav(tmp_path):
    path = tmp_path / "call.m4a"
    rate, seconds = 44100, 2.0
    mono = synth_call("Common Loon", seconds, rate, seed=3)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = "mono"
        frame_len = 1024
        for start in range(0, len(mono), frame_len):
            chunk = mono[start : start + frame_len]
            frame = av.AudioFrame.from_ndarray(chunk[None].astype(np.float32), format="fltp", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with pytest.raises(sf.LibsndfileError):
        sf.read(str(path))  # libsndfile cannot read it, so PyAV must
    samples, got_rate = decode(path)
    assert got_rate == rate and samples.shape[0] == 1
    assert abs(samples.shape[1] - len(mono)) < 3 * 1024  # AAC adds priming frames
    assert load_audio(path, RATE).std() > 0.05


def test_arrays_and_tensors_need_and_use_sampling_rate():
    x = synth_call("Field Cricket", 1.0, 16000, seed=0)
    with pytest.raises(AudioError, match="sampling_rate"):
        load_audio(x, RATE)
    from_np = load_audio(x, RATE, sampling_rate=16000)
    from_torch = load_audio(torch.from_numpy(x), RATE, sampling_rate=16000)
    assert len(from_np) == RATE
    np.testing.assert_array_equal(from_np, from_torch)


def test_channel_axis_is_found_either_way_and_int_pcm_is_scaled():
    x = synth_call("Field Cricket", 0.5, RATE, seed=0)
    stereo = np.stack([x, x])
    np.testing.assert_allclose(load_audio(stereo, RATE, sampling_rate=RATE), x, atol=1e-7)
    np.testing.assert_allclose(load_audio(stereo.T, RATE, sampling_rate=RATE), x, atol=1e-7)
    pcm = (x * 32767).astype(np.int16)
    np.testing.assert_allclose(load_audio(pcm, RATE, sampling_rate=RATE), x, atol=1e-4)


def test_repeat_pad_matches_clap_repeatpad():
    x = np.arange(1, 8, dtype=np.float32)
    np.testing.assert_array_equal(repeat_pad(x, 17), np.r_[x, x, 0, 0, 0])


def test_split_windows_covers_long_clips_without_padding():
    x = np.arange(25, dtype=np.float32)
    w = split_windows(x, 10)
    np.testing.assert_array_equal(w[0], x[:10])
    np.testing.assert_array_equal(w[1], x[10:20])
    np.testing.assert_array_equal(w[2], x[15:25])  # last window ends at the clip's end
    assert split_windows(x[:20], 10).shape == (2, 10)
    assert split_windows(x[:4], 10).shape == (1, 10)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.wav", "not found"),
        (lambda d: (d / "empty.wav").write_bytes(b"") and d / "empty.wav" or d / "empty.wav", "empty"),
        (lambda d: (d / "junk.flac").write_bytes(b"this is not audio" * 100) and d / "junk.flac", "Cannot decode"),
        (lambda d: sf.write(d / "zero.wav", np.zeros(0, np.float32), RATE) or d / "zero.wav", "no samples"),
        (lambda d: d, "folder"),
    ],
    ids=["missing", "empty-file", "garbage", "zero-length", "directory"],
)
def test_bad_files_raise_errors_that_name_the_file(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises((AudioError, FileNotFoundError), match=message) as err:
        load_audio(path, RATE)
    assert str(path) in str(err.value)


def _truncated_wav(path, seconds: float, keep_frames: int, rate: int) -> None:
    """A 16-bit WAV whose header says ``seconds`` but whose data stops after ``keep_frames`` frames (a copy
    or download cut short)."""
    sf.write(path, synth_call("Barred Owl", seconds, rate, seed=3), rate, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: 44 + 2 * keep_frames])


def test_a_truncated_wav_is_an_error_and_batch_commands_skip_it(tiny_model, saved_model, clips, tmp_path, capsys):
    """The header says 3 s, 478 frames remain: an AudioError that says the file is truncated, never an
    embedding of what remains; also when it is long enough to be read window by window. `predict` skips it
    (exit 2), as it skips other unreadable files."""
    from biolingual.cli import main

    short, long = tmp_path / "cut.wav", tmp_path / "cut_long.wav"
    _truncated_wav(short, 3.0, 478, 48000)
    _truncated_wav(long, 200.0, 125 * 4000, 4000)  # 125 s remain of 200: over model.STREAM_SECONDS
    for path, said, left in ((short, "3.000 s", "0.010 s"), (long, "200.000 s", "125.000 s")):
        with pytest.raises(AudioError, match="truncated") as err:
            load_audio(path, RATE)
        assert str(path) in str(err.value) and said in str(err.value) and left in str(err.value), str(err.value)
        _, kept, errors = tiny_model.embed_files([path, clips["peeper_short.wav"]])
        assert kept == [clips["peeper_short.wav"]] and "truncated" in errors[path]
    sf.write(tmp_path / "whole.wav", synth_call("Barred Owl", 1.0, 16000), 16000, subtype="PCM_16")
    assert len(load_audio(tmp_path / "whole.wav", 16000)) == 16000  # a complete file is untouched
    capsys.readouterr()
    assert (
        main(
            [
                "predict",
                str(short),
                str(clips["peeper_short.wav"]),
                "--model",
                str(saved_model),
                "--labels",
                "Owl",
                "Loon",
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    captured = capsys.readouterr()
    assert f"skipped {short}: " in captured.err and "truncated" in captured.err and str(short) not in captured.out


def test_bad_arrays_raise_clear_errors():
    with pytest.raises(AudioError, match="no samples"):
        load_audio(np.zeros(0, np.float32), RATE, sampling_rate=RATE)
    bad = np.ones(1000, np.float32)
    bad[10] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        load_audio(bad, RATE, sampling_rate=RATE, index=3)
    with pytest.raises(AudioError, match="channels from time"):
        load_audio(np.ones((200, 300), np.float32), RATE, sampling_rate=RATE)
