"""Record + audio + captions -> webdataset tars that biolingual.data reads.

A sample is ``KEY.flac`` (mono, 16-bit FLAC at the model's rate) and ``KEY.json`` whose ``text`` is
the list of captions, plus whatever metadata the record has.

webdataset (the ``pipeline`` and ``train`` extras) is imported when a shard is written, through
:func:`biolingual.extras.require`: :func:`sanitize_key` and :func:`flac_bytes` (which records and
tests use) need only the core, and a missing webdataset names the extra to install.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from pathlib import Path

import numpy as np
import soundfile as sf

from biolingual.errors import write_error
from biolingual.extras import require
from biolingual.faults import fault_point


def webdataset():
    """The webdataset module, or MissingExtraError naming the pipeline extra (``build`` asks first,
    so a missing one stops it before anything is listed or fetched)."""
    return require("webdataset", "pipeline", "writing webdataset shards (data_pipeline.shards)")


def sanitize_key(key: str) -> str:
    """webdataset splits keys at the first dot ('XC123.v2' would become key 'XC123'): keep [A-Za-z0-9_-]."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", key)


def flac_bytes(samples: np.ndarray, sampling_rate: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(samples, -1.0, 1.0), sampling_rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


class ShardSink:
    """Writes samples into ``{out}/{prefix}-000000.tar``, ``-000001.tar``... with size limits."""

    def __init__(self, out: str | Path, prefix: str, max_samples: int = 2000, max_bytes: float = 500e6):
        Path(out).mkdir(parents=True, exist_ok=True)
        self.pattern = str(Path(out) / f"{prefix}-%06d.tar")
        self._writer = webdataset().ShardWriter(self.pattern, maxcount=max_samples, maxsize=max_bytes, verbose=0)
        self.count = 0

    def write(self, key: str, audio: np.ndarray, sampling_rate: int, captions: list[str], **meta) -> None:
        if not captions:
            raise ValueError(f"sample '{key}' has no caption")
        record = {"text": list(captions), **meta}
        self._writer.write(
            {
                "__key__": sanitize_key(key),
                "flac": flac_bytes(audio, sampling_rate),
                "json": json.dumps(record).encode(),
            }
        )
        self.count += 1

    def close(self) -> list[str]:
        self._writer.close()
        return sorted(str(p) for p in Path(self.pattern).parent.glob(Path(self.pattern).name.replace("%06d", "*")))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_tar(path: str | Path, samples) -> int:
    """``samples`` (key, {ext: bytes}) -> one tar at ``path``, flushed to disk; returns its size in bytes.

    A write the system refuses (a full disk) raises :class:`~biolingual.errors.WriteError` naming ``path``, with
    the half-written file removed (nothing refers to it yet: the manifest commits a shard after this returns)."""
    try:
        with open(path, "wb") as stream:
            writer = webdataset().TarWriter(stream)
            try:
                for key, members in samples:
                    fault_point("shards.write", path)  # tests: BIOLINGUAL_FAIL_AT=shards.write=ENOSPC (a full disk)
                    writer.write({"__key__": key, **members})
            except BaseException:
                # close the tar stream while the file is open, its own errors aside: left to the garbage collector,
                # it writes its buffer to the closed file ("write to closed file" from tarfile.__del__)
                with contextlib.suppress(Exception):
                    writer.close()
                raise
            writer.close()
            stream.flush()
            os.fsync(stream.fileno())
    except Exception as e:
        Path(path).unlink(missing_ok=True)
        failed = write_error(path, e)
        if failed is None:
            raise
        raise failed from None
    return Path(path).stat().st_size
