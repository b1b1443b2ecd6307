"""Spectrogram images for the review page: a window's audio -> its log-mel as a PNG, and where its rows lie in Hz.

In: the model (its log-mel front end and that front end's config), a window's samples, and optionally a
frequency band in kHz. Out: PNG bytes (:func:`spectrogram_png`), the mel rows a band keeps
(:func:`band_rows`), and the page's frequency axis for them (:func:`frequency_axis`: tick labels in kHz and
where each lies, as a fraction of the image height; the page draws them in HTML around the PNG).

Drawn from the model's own log-mel front end with a small hand-written colormap and PNG encoder (zlib)
instead of matplotlib: the ``agile`` extra then needs only the web server, and the image shows exactly
the features the model embeds.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import torch

from ..audio import resample, to_mono

# round kHz values the axis may label, roundest first: a tick is kept when it is far enough from those kept before
_NICE_KHZ = (
    [float(k) for k in range(1, 49)]
    + [k + 0.5 for k in range(0, 24)]
    + [round(0.1 * k, 1) for k in range(1, 10)]
    + [round(0.05 * k, 2) for k in range(1, 20, 2)]
)
MIN_TICK_GAP = 0.09  # of the image height: about 20 px on the enlarged view

# viridis at nine evenly spaced points (perceptually uniform, readable in grey and by most colour-blind
# readers); the colours in between are interpolated.
_VIRIDIS = np.array(
    [
        (68, 1, 84),
        (71, 44, 122),
        (59, 81, 139),
        (44, 113, 142),
        (33, 144, 141),
        (39, 173, 129),
        (92, 200, 99),
        (170, 220, 50),
        (253, 231, 37),
    ],
    dtype=np.float32,
)
DYNAMIC_RANGE_DB = 80.0  # cells more than this below the loudest are drawn as the floor colour


def _colormap(x: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> uint8 RGB through the viridis points above."""
    pos = np.clip(x, 0.0, 1.0) * (len(_VIRIDIS) - 1)
    low = np.minimum(pos.astype(np.int64), len(_VIRIDIS) - 2)
    frac = (pos - low)[..., None]
    return np.round(_VIRIDIS[low] * (1 - frac) + _VIRIDIS[low + 1] * frac).astype(np.uint8)


def encode_png(rgb: np.ndarray) -> bytes:
    """uint8 [height, width, 3] -> PNG bytes (8-bit truecolour, no filter: the image is small)."""
    height, width, _ = rgb.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8), rgb.reshape(height, width * 3)], axis=1)  # filter byte 0

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    image = zlib.compress(rows.tobytes(), 1)  # level 1: 8x faster than 6 for 15% more bytes, on a local link
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", image) + chunk(b"IEND", b"")


def _mel_scale(config) -> str:
    return "htk" if config.fusion else "slaney"  # the filterbank biolingual.features builds for this config


def _mel_points(config) -> tuple[float, float]:
    """(the lowest mel point, the mel step): the filterbank's n_mels + 2 points are evenly spaced in mel from
    f_min to f_max, and filter i rises from point i to its peak at point i + 1 and falls to point i + 2."""
    from transformers.audio_utils import hertz_to_mel

    low, high = (float(hertz_to_mel(f, _mel_scale(config))) for f in (config.f_min, config.f_max))
    return low, (high - low) / (config.n_mels + 1)


def _hz(config, mel) -> np.ndarray:
    from transformers.audio_utils import mel_to_hertz

    return np.asarray(mel_to_hertz(np.asarray(mel, np.float64), _mel_scale(config)), np.float64)


def mel_centres_hz(config) -> np.ndarray:
    """The peak frequency (Hz) of each mel row of a front end ``config``, lowest row first."""
    low, step = _mel_points(config)
    return _hz(config, low + step * np.arange(1, config.n_mels + 1))


def _number(value, name: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} is a number of kHz, not '{str(value)[:40]}'") from None
    if not np.isfinite(out):
        raise ValueError(f"{name} is a number of kHz, not '{str(value)[:40]}'")
    return out


def band_rows(config, fmin_khz=None, fmax_khz=None) -> tuple[int, int]:
    """The mel rows (lowest, highest; inclusive, 0 = lowest pitch) whose peaks lie in the band
    ``fmin_khz``..``fmax_khz`` (numbers or their text; None or empty: the front end's own limit). ValueError
    saying what is wrong for text that is no number, a minimum above the maximum, or a band no row lies in."""
    low, high = _number(fmin_khz, "the band's minimum"), _number(fmax_khz, "the band's maximum")
    if low is not None and high is not None and low >= high:
        raise ValueError(f"the band's minimum ({low:g} kHz) must be below its maximum ({high:g} kHz)")
    centres = mel_centres_hz(config) / 1000
    keep = np.ones(len(centres), bool)
    if low is not None:
        keep &= centres >= low
    if high is not None:
        keep &= centres <= high
    if not keep.any():
        raise ValueError(
            f"the band {'' if low is None else f'{low:g}'}-{'' if high is None else f'{high:g}'} kHz "
            f"holds no mel band of the model's front end (their peaks go from {centres[0]:.2f} to "
            f"{centres[-1]:.2f} kHz)"
        )
    rows = np.flatnonzero(keep)
    return int(rows[0]), int(rows[-1])


def frequency_axis(config, rows: tuple[int, int]) -> dict:
    """The axis of an image of mel ``rows`` (lowest, highest): its edges in kHz, its number of rows, and ticks
    ``{"khz", "at"}`` with ``at`` the height from the image's bottom edge as a fraction (mel is not linear in
    Hz, so the page cannot space them itself). Row r is drawn from height r to r + 1 with its peak at r + 0.5."""
    low, step = _mel_points(config)
    first, last = rows
    height = last + 1 - first

    def at(khz: np.ndarray) -> np.ndarray:
        from transformers.audio_utils import hertz_to_mel

        mel = np.asarray(hertz_to_mel(np.asarray(khz, np.float64) * 1000, _mel_scale(config)), np.float64)
        return ((mel - low) / step - 0.5 - first) / height  # row r's peak (point r + 1) sits at r + 0.5

    edges = _hz(config, low + step * (np.array([first, last + 1]) + 0.5)) / 1000
    candidates = np.array(_NICE_KHZ)
    where = at(candidates)
    ticks: list[tuple[float, float]] = []
    for khz, y in zip(candidates, where):  # roundest first, then the finer ones that still fit between
        if -1e-3 <= y <= 1 + 1e-3 and all(abs(y - other) >= MIN_TICK_GAP for _, other in ticks):
            ticks.append((float(khz), float(y)))
    ticks.sort(key=lambda t: t[1])
    return {
        "fmin_khz": round(float(edges[0]), 3),
        "fmax_khz": round(float(edges[1]), 3),
        "rows": height,
        "ticks": [{"khz": khz, "at": round(y, 4)} for khz, y in ticks],
    }


def spectrogram_png(
    model, samples: np.ndarray, rate: int, row_scale: int = 2, rows: tuple[int, int] | None = None
) -> bytes:
    """A window's audio ([frames, channels] or mono at ``rate``) -> its log-mel as a PNG, low pitch at the
    bottom, time left to right, one pixel column per front-end frame; rows repeated ``row_scale`` times so
    64 mel bands are tall enough to read. ``rows``: only the mel rows (lowest, highest) of :func:`band_rows`,
    the colour scale set by the loudest cell among them."""
    mono = resample(to_mono(samples) if samples.ndim == 2 else samples, rate, model.sampling_rate)
    with torch.no_grad():
        mel = model.front_end.log_mel(torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))[None])[0]
    db = mel.cpu().numpy().T  # [mels, frames], lowest band first
    if rows is not None:
        db = db[rows[0] : rows[1] + 1]
    db = db[::-1]  # highest band first (the top of the image)
    top = float(db.max())
    rgb = _colormap((db - (top - DYNAMIC_RANGE_DB)) / DYNAMIC_RANGE_DB)
    return encode_png(np.repeat(rgb, row_scale, axis=0))
