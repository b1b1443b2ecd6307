"""An on-disk cache of audio embeddings, so a learning-rate grid or a re-run never recomputes them.

Keys combine the model's identity (its fingerprint: config, weights and front-end settings; its pooling; and the
precision it embeds at, where that is not float32),
the audio file's identity (absolute path, size and modification time) and the part of the file
embedded. The store is one SQLite file: each batch is committed as soon as it is computed, so an
interrupted run keeps what it did and the next one resumes.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from tqdm.auto import tqdm

from biolingual.audio import load_audio
from biolingual.errors import AudioError

from .blobstore import BlobStore, from_blob, to_blob
from .types import Segment, Split, TaskDataError

log = logging.getLogger(__name__)


def model_identity(model) -> str:
    """The cache's key for a model: its :meth:`~biolingual.BioLingual.fingerprint` (config, weights, front end),
    the pooling its ``embed_audio`` applies to clips longer than a window, and the precision it embeds at
    (``model.precision``: bfloat16 and int8 embeddings differ slightly from float32 ones, so they must not
    be served for each other). float32 adds nothing, so caches written before precisions keep their keys."""
    precision = getattr(model, "precision", "float32")
    return f"{model.fingerprint()}|pooling={model.pooling}" + (
        "" if precision == "float32" else f"|precision={precision}"
    )


def file_identity(path: str) -> str:
    st = os.stat(path)
    return f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"


def segment_key(model_id: str, segment: Segment) -> str:
    text = f"{model_id}|{file_identity(segment.path)}|{segment.start_s}|{segment.end_s}|{segment.length_s}"
    return hashlib.sha256(text.encode()).hexdigest()


def load_segment(segment: Segment, rate: int, decoded: np.ndarray | None = None) -> np.ndarray:
    """The samples of a segment at ``rate``: [start, end) of the file, zero-padded to its length (as BEANS pads)."""
    samples = load_audio(segment.path, rate) if decoded is None else decoded
    start, length = int(round(segment.start_s * rate)), int(round(segment.length_s * rate))
    stop = None if math.isinf(segment.end_s) else int(round(segment.end_s * rate))  # inf: to the end of the file
    part = samples[start:stop]
    return np.pad(part, (0, max(0, length - len(part))))[:length] if length else part


def load_segments(segments: list[Segment], rate: int) -> list[np.ndarray | Exception]:
    """Segments of one file, decoding the file once."""
    try:
        decoded = load_audio(segments[0].path, rate)
    except (AudioError, OSError) as e:
        return [e] * len(segments)
    return [load_segment(s, rate, decoded) for s in segments]


class EmbeddingCache:
    """``cache.embed(model, segments)`` -> embeddings, computing and storing only what is not cached."""

    def __init__(self, path: str | os.PathLike):
        self.store = BlobStore(path, "CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")
        self.path = self.store.path

    def close(self) -> None:
        self.store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __len__(self) -> int:
        return self.store.db.execute("SELECT COUNT(*) FROM emb").fetchone()[0]

    def get(self, keys: list[str]) -> dict[str, np.ndarray]:
        """The stored embeddings of those ``keys`` that are in the cache: {key: float32 [D]}."""
        return {k: from_blob(v) for k, v in self.store.select_in("SELECT key, vec FROM emb WHERE key IN ({})", keys)}

    def put(self, keys: list[str], embeddings: torch.Tensor) -> None:
        """Store one batch in one committed transaction, so nothing computed is lost if the run stops after."""
        with self.store.transaction():
            self.store.db.executemany(
                "INSERT OR REPLACE INTO emb VALUES (?, ?)", [(k, to_blob(e.numpy())) for k, e in zip(keys, embeddings)]
            )

    def embed(
        self,
        model,
        segments: list[Segment],
        batch_size: int = 16,
        workers: int = 2,
        chunk: int = 128,
        desc: str = "embedding",
        progress: bool = True,
    ) -> tuple[torch.Tensor, dict[int, str]]:
        """(embeddings [N, D] float32 with zero rows for unreadable segments, {index: error message})."""
        model_id = model_identity(model)
        keys, errors = [], {}
        for i, s in enumerate(segments):
            try:
                keys.append(segment_key(model_id, s))
            except OSError as e:
                keys.append("")
                errors[i] = f"'{s.path}': {e}"
        found = self.get([k for k in keys if k])
        todo = [i for i, k in enumerate(keys) if k and k not in found]
        with (
            tqdm(total=len(todo), desc=desc, unit="clip", disable=not (todo and progress)) as bar,
            ThreadPoolExecutor(max(1, workers)) as pool,
        ):
            for start in range(0, len(todo), chunk):
                part = todo[start : start + chunk]
                by_file: dict[str, list[int]] = {}
                for i in part:
                    by_file.setdefault(segments[i].path, []).append(i)
                jobs = [
                    (ix, pool.submit(load_segments, [segments[i] for i in ix], model.sampling_rate))
                    for ix in by_file.values()
                ]
                waves, ok = [], []
                for ix, fut in jobs:
                    for i, w in zip(ix, fut.result()):
                        if isinstance(w, Exception):
                            errors[i] = str(w)
                            log.warning("skipped %s: %s", segments[i].path, w)
                        else:
                            waves.append(w)
                            ok.append(i)
                if waves:
                    emb = model.embed_audio(
                        waves, sampling_rate=model.sampling_rate, batch_size=batch_size, progress=False
                    )
                    self.put([keys[i] for i in ok], emb)
                    found.update((keys[i], e.numpy().astype(np.float32)) for i, e in zip(ok, emb))
                bar.update(len(part))
        out = torch.zeros(len(segments), model.embedding_dim)
        for i, k in enumerate(keys):
            if k in found and i not in errors:
                out[i] = torch.from_numpy(np.array(found[k]))
        return out, errors


def embed_split(cache: EmbeddingCache, model, split: Split, args, problems: list[str]) -> tuple[torch.Tensor, Split]:
    """A split's embeddings through the cache, and the split itself less the rows whose audio could not be read
    (each reported in ``problems``; a long run goes on without them). Shared by BEANS and BirdSet (one
    ``Split`` type, one cache), so both report and drop unreadable windows the same way."""
    emb, errors = cache.embed(
        model, split.segments, batch_size=args.batch_size, workers=args.workers, desc=f"embedding {split.name}"
    )
    if not errors:
        return emb, split
    problems += [f"'{split.file}' row {split.rows[i]}: {e}; skipped" for i, e in sorted(errors.items())]
    keep = [i for i in range(len(split.segments)) if i not in errors]
    if not keep:
        raise TaskDataError(f"no audio of split '{split.file}' could be read")
    kept = Split(
        split.name,
        split.file,
        [split.segments[i] for i in keep],
        split.targets[keep],
        [split.rows[i] for i in keep],
        split.problems,
    )
    return emb[keep], kept
