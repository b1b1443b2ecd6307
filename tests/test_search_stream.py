"""Reading long recordings window by window: same samples as the one-shot loader, memory bounded."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from biolingual import windows as stream
from biolingual.audio import load_audio, split_windows
from biolingual.errors import AudioError
from biolingual.synthetic import synth_call
from biolingual.windows import iter_windows

RATE = 48_000
WINDOW = 2 * RATE  # short windows keep the test fast; the logic does not depend on the length


@pytest.mark.parametrize("rate,channels", [(48_000, 1), (22_050, 2), (11_025, 1)])
def test_windows_match_the_one_shot_loader(tmp_path, rate, channels, monkeypatch):
    monkeypatch.setattr(stream, "BLOCK_SECONDS", 1.3)  # many blocks, boundaries inside windows
    mono = synth_call("Common Loon", 9.3, rate, seed=1)
    path = tmp_path / "rec.flac"
    sf.write(path, np.stack([mono, 0.5 * mono], 1) if channels == 2 else mono, rate)
    windows = list(iter_windows(path, RATE, WINDOW, WINDOW))
    expected = split_windows(load_audio(path, RATE), WINDOW)  # consecutive windows, the last one ending at the end
    assert len(windows) == len(expected) == 5
    for w, e in zip(windows, expected):
        np.testing.assert_allclose(w.samples, e, atol=2e-3)  # soxr streaming vs one-shot: same filter, float rounding
    assert [w.start for w in windows[:4]] == [0.0, 2.0, 4.0, 6.0]
    assert windows[-1].end == pytest.approx(9.3, abs=1e-4) and windows[-1].end - windows[-1].start == pytest.approx(2.0)


def test_hop_short_file_and_bad_files(tmp_path):
    path = tmp_path / "rec.wav"
    sf.write(path, np.zeros(int(7 * RATE), np.float32) + 0.1, RATE)
    assert [(w.start, w.end) for w in iter_windows(path, RATE, WINDOW, RATE)] == [(s, s + 2.0) for s in range(6)]
    short = tmp_path / "short.wav"
    sf.write(short, np.linspace(-0.5, 0.5, RATE // 2, dtype=np.float32), RATE)
    (w,) = iter_windows(short, RATE, WINDOW, WINDOW)
    assert (w.start, w.end) == (0.0, 0.5) and len(w.samples) == WINDOW
    np.testing.assert_array_equal(
        w.samples[: RATE // 2], w.samples[RATE // 2 : RATE]
    )  # repeat-padded, as split_windows
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        list(iter_windows(empty, RATE, WINDOW, WINDOW))
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        list(iter_windows(tmp_path / "missing.wav", RATE, WINDOW, WINDOW))


def test_memory_does_not_grow_with_the_recording(tmp_path):
    """20 minutes at 8 kHz is 230 MB once resampled to 48 kHz float32; streaming holds a block at a time."""
    path = tmp_path / "long.wav"
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", 8000, 1, subtype="PCM_16") as f:
        for _ in range(20):
            f.write((0.1 * rng.standard_normal(60 * 8000)).astype(np.float32))
    tracemalloc.start()
    count = sum(1 for _ in iter_windows(path, RATE, 10 * RATE, 10 * RATE))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == 120
    assert peak < 60e6, f"peak {peak / 1e6:.0f} MB"
