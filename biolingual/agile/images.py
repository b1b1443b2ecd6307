"""Spectrogram images for the review page: a window's audio -> its log-mel as a PNG.

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

# viridis at nine evenly spaced points (perceptually uniform, readable in grey and by most colour-blind
# readers); the colours in between are interpolated.
_VIRIDIS = np.array([(68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141),
                     (39, 173, 129), (92, 200, 99), (170, 220, 50), (253, 231, 37)], dtype=np.float32)
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


def spectrogram_png(model, samples: np.ndarray, rate: int, row_scale: int = 2) -> bytes:
    """A window's audio ([frames, channels] or mono at ``rate``) -> its log-mel as a PNG, low pitch at the
    bottom, time left to right, one pixel column per front-end frame; rows repeated ``row_scale`` times so
    64 mel bands are tall enough to read."""
    mono = resample(to_mono(samples) if samples.ndim == 2 else samples, rate, model.sampling_rate)
    with torch.no_grad():
        mel = model.front_end.log_mel(torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))[None])[0]
    db = mel.cpu().numpy().T[::-1]  # [mels, frames], highest band first (the top of the image)
    top = float(db.max())
    rgb = _colormap((db - (top - DYNAMIC_RANGE_DB)) / DYNAMIC_RANGE_DB)
    return encode_png(np.repeat(rgb, row_scale, axis=0))
