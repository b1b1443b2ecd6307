"""The one audio loader: decode -> mono -> resample -> pad or cut into fixed windows.

Every part of biolingual (inference, training, evaluation, the dataset builder) reads audio through
these functions, so a clip is turned into model input the same way everywhere.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np
import soundfile as sf
import soxr

from .errors import AudioError

if TYPE_CHECKING:
    import torch

AudioSource = Union[str, os.PathLike, np.ndarray, "torch.Tensor"]


def _is_tensor(source) -> bool:
    """Whether ``source`` is a torch tensor, without importing torch (the audio loader alone must not
    pay torch's start-up; a tensor can only exist once something else imported it)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(source, torch.Tensor)


# Channel counts above this are not plausible for a recording, so the larger axis of a 2-D array is time.
_MAX_CHANNELS = 64

# Float audio lives in [-1, 1]. Mixing, resampling or a clipped export can overshoot a little, so peaks up
# to 16 (+24 dB) are accepted as they are. Larger peaks are refused rather than scaled: they mean the
# samples are not audio in full scale (integer PCM stored as floats, physical units, a corrupt header), so
# any embedding of them would be silently wrong; and from ~1e16 the front end's power spectrum overflows
# float32 and the answer becomes NaN. Integer PCM is scaled to [-1, 1] on reading and never hits this.
MAX_ABS_SAMPLE = 16.0


def describe(source: AudioSource, index: int | None = None) -> str:
    """A short human name for an input, used in error messages."""
    if isinstance(source, (str, os.PathLike)):
        return f"'{os.fspath(source)}'"
    kind = "tensor" if _is_tensor(source) else "array"
    where = f" #{index}" if index is not None else ""
    return f"audio {kind}{where} of shape {tuple(source.shape)}"


# libsndfile's header log, for a chunk whose size in the header exceeds what the file holds:
# "data : 288000 (should be 956)" (WAV, RF64), "SSND : 288008 (should be 1954)" (AIFF).
_CUT_CHUNK = re.compile(r"^\s*(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
# Sizes streaming writers put in a header before the length is known: the file never claimed a length.
_UNKNOWN_SIZES = {0, 0xFFFFFFFF, 0x7FFFFFFF}


def check_complete(path: str | os.PathLike, info) -> None:
    """Raise :class:`AudioError` when ``path`` (whose ``soundfile.info`` is ``info``) holds less audio than its
    header says: a copy or download cut short. libsndfile reads such a file without complaint, giving what
    remains (478 frames of a WAV whose header says 3 s), so a prediction would be made from a fragment."""
    match = _CUT_CHUNK.search(getattr(info, "extra_info", "") or "")
    if not match:
        return
    declared, held = int(match[1]), int(match[2])
    if declared <= held or declared in _UNKNOWN_SIZES:
        return
    rate = info.samplerate or 1
    frame_bytes = held / info.frames if info.frames else None
    said = f"{declared / frame_bytes / rate:.3f} s" if frame_bytes else f"{declared} bytes"
    raise AudioError(
        f"Audio file '{os.fspath(path)}' is truncated: its header says {said} of audio, the file holds "
        f"{info.frames / rate:.3f} s ({info.frames} frames); it was cut short (an interrupted copy, "
        "download or recording): copy it again from its source"
    )


def decode(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode a file to float32 samples shaped [channels, samples] and its sample rate.

    soundfile (libsndfile) reads wav, flac, ogg, mp3 and more; PyAV (FFmpeg) covers what it cannot,
    such as m4a/AAC.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Audio file not found: '{path}'")
    if path.is_dir():
        raise AudioError(f"'{path}' is a folder, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"Audio file '{path}' is empty (0 bytes)")
    # A file this process may not read is a PermissionError naming it (an OSError: batch commands skip it and
    # the dataset builder retries it), not "Cannot decode": both decoders would report it as a format error.
    with open(path, "rb"):
        pass
    try:
        info = sf.info(str(path))
        check_complete(path, info)  # an AudioError, not one of these: no fall-back to FFmpeg, which would read the rest
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as sf_error:
        try:
            return _decode_with_pyav(path)
        except Exception as av_error:  # FFmpeg raises many types; all mean "cannot decode"
            raise AudioError(
                f"Cannot decode audio file '{path}': not a format soundfile reads ({sf_error}) "
                f"nor one FFmpeg reads ({av_error})"
            ) from av_error
    return np.ascontiguousarray(data.T), int(rate)


def _decode_with_pyav(path: Path) -> tuple[np.ndarray, int]:
    import av  # imported lazily: only needed for formats libsndfile lacks

    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise AudioError(f"'{path}' has no audio stream")
        stream = container.streams.audio[0]
        # Planar float keeps the native rate and channels: one row per channel.
        resampler = av.AudioResampler(format="fltp")
        chunks = []
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray())
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray())
        rate = stream.rate or stream.codec_context.sample_rate
    if not chunks or not rate:
        raise AudioError("FFmpeg found no decodable audio in it")
    return np.concatenate(chunks, axis=1).astype(np.float32, copy=False), int(rate)


def to_mono(samples: np.ndarray, name: str = "audio") -> np.ndarray:
    """Average the channels of a 1-D or 2-D (channels x time, or time x channels) array."""
    if samples.ndim == 1:
        return samples
    if samples.ndim != 2:
        raise AudioError(f"{name}: expected 1-D (time) or 2-D (channels, time) audio, got {samples.ndim} dimensions")
    channels_axis = int(np.argmin(samples.shape))
    if samples.shape[channels_axis] > _MAX_CHANNELS:
        raise AudioError(
            f"{name}: cannot tell channels from time in a {samples.shape} array; "
            "pass one clip as a 1-D array, or several clips as a list"
        )
    if samples.shape[channels_axis] == 1:  # already mono: no arithmetic, just drop the axis
        return samples[0] if channels_axis == 0 else samples[:, 0]
    return samples.mean(axis=channels_axis)


def check_samples(samples: np.ndarray, name: str) -> None:
    """Raise :class:`AudioError` naming ``name`` if ``samples`` hold NaN, infinity, or a peak above
    :data:`MAX_ABS_SAMPLE`; used on every decoded or given clip before it reaches the front end."""
    if not np.isfinite(samples).all():
        raise AudioError(f"{name} contains NaN or infinite samples")
    peak = float(np.abs(samples).max()) if samples.size else 0.0
    if peak > MAX_ABS_SAMPLE:
        raise AudioError(
            f"{name} has samples up to {peak:.3g}, but float audio must lie in [-1, 1] (peaks up to "
            f"{MAX_ABS_SAMPLE:g} are accepted); rescale it, e.g. divide by its peak, or by 32768 if it holds "
            "16-bit integer values stored as floats"
        )


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """High-quality sample-rate conversion (soxr); a no-op when the rates match."""
    if rate_in == rate_out:
        return samples
    return soxr.resample(samples, rate_in, rate_out, quality="HQ").astype(np.float32, copy=False)


def load_audio(
    source: AudioSource,
    target_rate: int,
    sampling_rate: int | None = None,
    index: int | None = None,
) -> np.ndarray:
    """Any supported input -> finite float32 mono samples at ``target_rate``.

    Samples that are NaN, infinite or far outside [-1, 1] (see :func:`check_samples`) raise
    :class:`AudioError` naming the input.

    ``source`` is a file path, or an array/tensor recorded at ``sampling_rate`` (required for those:
    guessing the rate silently gives wrong embeddings).
    """
    name = describe(source, index)
    if isinstance(source, (str, os.PathLike)):
        samples, rate = decode(source)
        if sampling_rate is not None and sampling_rate != rate:
            raise AudioError(f"{name} is recorded at {rate} Hz but sampling_rate={sampling_rate} was given")
    elif isinstance(source, np.ndarray) or _is_tensor(source):
        if sampling_rate is None:
            raise AudioError(f"{name}: pass sampling_rate= (the rate the samples were recorded at) with arrays")
        samples = source.detach().float().cpu().numpy() if _is_tensor(source) else source
        if not np.issubdtype(samples.dtype, np.number):
            raise AudioError(f"{name}: samples must be numbers, got dtype {samples.dtype}")
        if np.issubdtype(samples.dtype, np.integer):  # PCM integers -> [-1, 1]
            samples = samples.astype(np.float32) / float(np.iinfo(samples.dtype).max)
        rate = int(sampling_rate)
    else:
        raise TypeError(
            f"Unsupported audio input of type {type(source).__name__}: give a path, a numpy array or a tensor"
        )
    if rate <= 0:
        raise AudioError(f"{name}: invalid sample rate {rate}")
    samples = np.asarray(samples, dtype=np.float32)
    if samples.size == 0:
        raise AudioError(f"{name} contains no samples")
    check_samples(samples, name)  # before averaging channels: a mean of huge values can overflow to inf
    mono = to_mono(samples, name)
    return np.ascontiguousarray(resample(mono, rate, target_rate))


def repeat_pad(samples: np.ndarray, length: int) -> np.ndarray:
    """Repeat a short clip as many whole times as fit in ``length`` and zero-fill the rest.

    This is CLAP's ``repeatpad``, so padded clips look as they did in training.
    """
    if len(samples) >= length:
        return samples[:length]
    tiled = np.tile(samples, length // len(samples))
    return np.pad(tiled, (0, length - len(tiled)))


def split_windows(samples: np.ndarray, length: int) -> np.ndarray:
    """Cut a clip into model windows of ``length`` samples, shaped [windows, length].

    A clip up to one window long is repeat-padded. A longer clip is cut into consecutive windows; when
    it does not divide evenly, the last window is the clip's final ``length`` samples (overlapping the
    one before), so no window is padded with silence and no sample is dropped. Deterministic.
    """
    if len(samples) <= length:
        return repeat_pad(samples, length)[None]
    starts = list(range(0, len(samples) - length + 1, length))
    if starts[-1] + length < len(samples):
        starts.append(len(samples) - length)
    return np.stack([samples[s : s + length] for s in starts])
