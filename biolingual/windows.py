"""Read a long recording window by window, so memory does not depend on the file's length (the audio
layer's reader for long files, beside :mod:`biolingual.audio`: the model, indexing and the review page use it).

soundfile reads blocks of the file at its own rate; soxr's ``ResampleStream`` resamples each block
to the model's rate with the same quality as :func:`biolingual.audio.resample`. Formats soundfile
cannot seek in (m4a/AAC, ...) fall back to :func:`biolingual.audio.load_audio`, which decodes the whole file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

from .audio import check_complete, check_samples, load_audio, repeat_pad, to_mono
from .errors import AudioError

BLOCK_SECONDS = 60.0  # decoded per read: bounded memory, few Python round trips


@dataclass(frozen=True)
class Window:
    start: float  # seconds from the start of the file
    end: float
    samples: np.ndarray  # float32 mono at the target rate, exactly window_samples long (short files repeat-padded)


def _blocks(path: str, rate_out: int) -> Iterator[np.ndarray]:
    """Mono float32 blocks of the file at ``rate_out``, in order."""
    try:
        info = sf.info(path)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        # not a format libsndfile reads: decode whole with the library's loader (PyAV), small files only
        yield load_audio(path, rate_out)
        return
    if info.samplerate <= 0:
        raise AudioError(f"'{path}': invalid sample rate {info.samplerate}")
    check_complete(path, info)  # a file cut short: an error, not the windows of what remains
    block = max(1, int(BLOCK_SECONDS * info.samplerate))
    stream = (
        None
        if info.samplerate == rate_out
        else soxr.ResampleStream(info.samplerate, rate_out, 1, dtype="float32", quality="HQ")
    )
    with sf.SoundFile(path) as f:
        while True:
            data = f.read(block, dtype="float32", always_2d=True)
            last = len(data) < block
            check_samples(data, f"'{path}'")  # the one input check (biolingual.audio): NaN, inf, huge peaks
            mono = np.ascontiguousarray(to_mono(data.T, f"'{path}'")) if len(data) else np.zeros(0, np.float32)
            out = mono if stream is None else stream.resample_chunk(mono, last=last)
            if len(out):
                yield out.astype(np.float32, copy=False)
            if last:
                return


def iter_windows(path: str | os.PathLike, rate: int, window: int, hop: int) -> Iterator[Window]:
    """Windows of ``window`` samples every ``hop`` samples at ``rate``.

    As :func:`biolingual.audio.split_windows`: a file no longer than one window gives one
    repeat-padded window; otherwise the last window ends at the file's end, so no sample is dropped and
    no window is padded with silence.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Audio file not found: '{path}'")
    if os.path.getsize(path) == 0:
        raise AudioError(f"Audio file '{path}' is empty (0 bytes)")
    if hop <= 0 or window <= 0:
        raise ValueError(f"window and hop must be positive, got {window} and {hop} samples")
    buffer = np.zeros(0, np.float32)
    offset = 0  # sample index (at ``rate``) of buffer[0]
    next_start = 0
    last_end = 0
    total = 0
    for block in _blocks(path, rate):
        total += len(block)
        buffer = np.concatenate([buffer, block])
        while next_start + window <= offset + len(buffer):
            i = next_start - offset
            yield Window(next_start / rate, (next_start + window) / rate, buffer[i : i + window].copy())
            last_end = next_start + window
            next_start += hop
        keep_from = max(
            0, min(next_start - offset, len(buffer) - window)
        )  # the last window's samples stay for the tail
        buffer, offset = buffer[keep_from:], offset + keep_from
    if total == 0:
        raise AudioError(f"'{path}' contains no samples")
    if total <= window:
        if last_end == 0:  # the file is shorter than one window
            yield Window(0.0, total / rate, repeat_pad(buffer, window))
        return
    if last_end < total:  # a tail shorter than a hop: one last window ending at the file's end
        yield Window((total - window) / rate, total / rate, buffer[-window:].copy())


def read_segment(path: str | os.PathLike, start: float, end: float) -> tuple[np.ndarray, int]:
    """Samples [frames, channels] between ``start`` and ``end`` seconds at the file's own rate (seeks, no full
    decode)."""
    with sf.SoundFile(os.fspath(path)) as f:
        first = max(0, int(round(start * f.samplerate)))
        last = min(f.frames, int(round(end * f.samplerate)))
        f.seek(first)
        return f.read(max(0, last - first), dtype="float32", always_2d=True), f.samplerate
