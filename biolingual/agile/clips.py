"""Window audio for the review page: the samples of one indexed window, read from its recording, and WAV bytes."""

from __future__ import annotations

import io
import os

import numpy as np
import soundfile as sf

from ..audio import decode
from ..errors import AudioError
from ..windows import read_segment


class WindowAudioError(Exception):
    """A window's recording is missing or cannot be read; ``status`` is the HTTP answer (404 or 422)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def window_samples(path: str, start: float, end: float) -> tuple[np.ndarray, int]:
    """The samples of ``path`` between ``start`` and ``end`` s at the file's rate ([frames, channels]).

    Seeks with :func:`read_segment` where libsndfile reads the file; other formats (mp3, m4a ... which
    the index reads through PyAV) are decoded whole by the one audio loader and cut."""
    if not os.path.isfile(path):
        raise WindowAudioError(404, f"recording '{path}' is missing (moved or deleted since it was indexed)")
    try:
        samples, rate = read_segment(path, start, end)
    except (sf.LibsndfileError, RuntimeError):
        try:
            whole, rate = decode(path)
        except (AudioError, OSError, RuntimeError, ValueError) as e:
            raise WindowAudioError(422, f"recording '{path}' cannot be read: {e}") from e
        whole = np.atleast_2d(whole).T  # decode gives [channels, samples]; the page works in [samples, channels]
        samples = whole[int(round(start * rate)) : int(round(end * rate))]
    if len(samples) == 0:
        raise WindowAudioError(
            422,
            f"recording '{path}' has no audio between {start:.2f} and {end:.2f} s (shorter than when it was indexed?)",
        )
    if not np.isfinite(samples).all():
        raise WindowAudioError(422, f"recording '{path}' holds non-finite samples between {start:.2f} and {end:.2f} s")
    return samples, rate


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(samples, -1.0, 1.0), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()
