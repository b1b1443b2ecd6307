"""One fetched audio file -> 48 kHz mono clips of up to ``clip_seconds``, or a reason to reject it.

Decoding, mono mixing and resampling are biolingual.audio's (the one loader); this module adds the
AnimalSpeak dataset rules: up to ``max_chunks`` consecutive clips for species with few recordings
(a trailing clip under ``min_tail_seconds`` is dropped), and rejection of silent or too-short audio.
Clips are stored unpadded: the training loader repeat-pads short clips itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from biolingual.audio import decode, resample, to_mono


class Rejected(ValueError):
    """The audio cannot become a sample; the message is the reason recorded in the manifest."""


@dataclass
class Clips:
    chunks: list[np.ndarray]  # float32 mono at the target rate
    original_rate: int
    original_seconds: float


def make_clips(
    path: str | Path,
    rate: int,
    clip_seconds: float,
    n_chunks: int,
    min_seconds: float,
    min_tail_seconds: float,
    silence_dbfs: float,
) -> Clips:
    try:
        samples, original_rate = decode(path)
    except OSError:  # the file cannot be read (no permission, an I/O error): not the audio's fault, and it can pass
        raise
    except Exception as e:  # every decoder failure is a reason, not a crash
        raise Rejected(f"undecodable: {e}") from e
    if samples.size == 0:
        raise Rejected("undecodable: no samples")
    mono = to_mono(samples)
    if not np.isfinite(mono).all():
        raise Rejected("undecodable: NaN or infinite samples")
    seconds = len(mono) / original_rate
    if seconds < min_seconds:
        raise Rejected(f"too short: {seconds:.2f} s < {min_seconds} s")
    clip = int(round(clip_seconds * original_rate))
    # AnimalSpeak's rule (consecutive chunks, short tail dropped) differs from split_windows' overlap rule.
    pieces = [mono[s : s + clip] for s in range(0, len(mono), clip)][: max(1, n_chunks)]
    pieces = [p for i, p in enumerate(pieces) if i == 0 or len(p) == clip or len(p) >= min_tail_seconds * original_rate]
    loud = [p for p in pieces if _dbfs(p) > silence_dbfs]
    if not loud:
        raise Rejected(f"silent: {_dbfs(mono):.1f} dBFS RMS <= {silence_dbfs} dBFS")
    return Clips([np.ascontiguousarray(resample(p, original_rate, rate)) for p in loud], original_rate, seconds)


def _dbfs(x: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0
    return 20 * np.log10(max(rms, 1e-12))
