"""Layer features for probing: every layer's hidden states pooled over time as mean and standard deviation
(concatenated, 2 x width), computed from one forward pass per batch for all layers at once, and cached on
disk per model and layer so reruns and other probes reuse them.

Clips are read at the encoder's rate, peak-normalised and cut/padded into chunks by the encoder; the chunks of
a long clip are pooled together (their frames concatenated over time). The standard deviation over time is
``torch.std``'s unbiased estimator (divisor frames - 1), as the paper's code computes it. The cache is one SQLite
file per encoder identity (weights + preprocessing), keyed by clip (absolute path, size, mtime) and layer; every batch
is committed as it is computed, so an interrupted extraction resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from tqdm.auto import tqdm

from biolingual.audio import load_audio
from biolingual.errors import AudioError
from biolingual.vocabulary import slug

from ..blobstore import BlobStore, from_blob, to_blob
from ..embedding_cache import file_identity
from .encoders import LayerEncoder

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    return Path(os.environ.get("BIOLINGUAL_PROBE_CACHE", Path.home() / ".cache" / "biolingual" / "probe"))


def clip_key(path: str) -> str:
    return hashlib.sha256(file_identity(path).encode()).hexdigest()[:32]


def peak_normalise(samples: np.ndarray) -> tuple[np.ndarray, bool]:
    """(x / max|x|, whether the clip was silent). A silent clip stays all zeros."""
    peak = float(np.max(np.abs(samples))) if len(samples) else 0.0
    return (samples / peak if peak > 0 else samples).astype(np.float32), peak == 0


@dataclass
class ExtractionReport:
    """What happened to a dataset's clips under one encoder."""

    clips: int = 0
    computed: int = 0
    padded: int = 0  # shorter than the encoder's minimum input, tiled up to it
    silent: int = 0  # all zeros: nothing to peak-normalise, features of silence
    unreadable: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "clips": self.clips,
            "computed": self.computed,
            "padded": self.padded,
            "silent": self.silent,
            "unreadable": len(self.unreadable),
        }


class LayerFeatureCache:
    """``cache.features(keys, layer)`` -> [N, 2 x width]; one SQLite file per encoder identity."""

    def __init__(self, root: str | os.PathLike, encoder: LayerEncoder):
        self.num_layers = encoder.num_layers
        # An encoder run at another precision (--dtype) gets its own file, so its features and float32 ones
        # never stand in for each other; float32 keeps the old file name.
        suffix = "" if encoder.precision == "float32" else f"-{encoder.precision}"
        self.store = BlobStore(
            Path(root) / f"{slug(encoder.name)}-{encoder.identity[:16]}{suffix}.sqlite",
            """
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
            CREATE TABLE IF NOT EXISTS clips (clip TEXT PRIMARY KEY, path TEXT, samples INTEGER, padded INTEGER,
                                              silent INTEGER);
            CREATE TABLE IF NOT EXISTS feats (clip TEXT, layer INTEGER, vec BLOB NOT NULL, PRIMARY KEY (clip, layer));
        """,
            page_size=65536,
        )  # ~6 KiB blobs: 8% overhead on disk instead of 36% with 4 KiB pages
        self.path, self.db = self.store.path, self.store.db
        meta = {
            "name": encoder.name,
            "source": encoder.source,
            "identity": encoder.identity,
            "layers": json.dumps(encoder.layer_names),
            "settings": json.dumps(encoder.settings(), sort_keys=True),
        }
        self.db.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)", meta.items())
        self.db.commit()

    def close(self) -> None:
        self.store.close()

    def done(self, keys: list[str]) -> set[str]:
        """The clips whose every layer is cached (clip rows are written last, in the same transaction)."""
        return {r[0] for r in self.store.select_in("SELECT clip FROM clips WHERE clip IN ({})", keys)}

    def put(self, items: list[tuple[str, str, int, bool, bool, np.ndarray]]) -> None:
        """(key, path, samples, padded, silent, [per-layer feature vectors]) per clip, committed together."""
        with self.store.transaction():
            for key, path, samples, padded, silent, feats in items:
                self.db.executemany(
                    "INSERT OR REPLACE INTO feats VALUES (?, ?, ?)",
                    [(key, layer, to_blob(feats[layer])) for layer in range(len(feats))],
                )
                self.db.execute(
                    "INSERT OR REPLACE INTO clips VALUES (?, ?, ?, ?, ?)",
                    (key, path, samples, int(padded), int(silent)),
                )

    def features(self, keys: list[str], layer: int) -> np.ndarray:
        found = dict(self.store.select_in("SELECT clip, vec FROM feats WHERE layer = ? AND clip IN ({})", keys, layer))
        missing = [k for k in keys if k not in found]
        if missing:
            raise KeyError(f"{len(missing)} clip(s) have no layer-{layer} features in {self.path}")
        return np.stack([from_blob(found[k]) for k in keys])

    def flags(self, keys: list[str]) -> tuple[int, int]:
        """(padded, silent) counts among ``keys``."""
        rows = self.store.select_in("SELECT padded, silent FROM clips WHERE clip IN ({})", keys)
        return sum(r[0] for r in rows), sum(r[1] for r in rows)

    def nbytes(self) -> int:
        return self.store.nbytes()


def _estimated_length(path: str, rate: int) -> int:
    try:
        info = sf.info(path)
        return int(info.frames * rate / info.samplerate)
    except (RuntimeError, sf.LibsndfileError):  # formats only PyAV reads: order them first
        return 0


class _Pooler:
    """Running per-layer sums of hidden states over the frames of every chunk of each clip (layers may differ
    in width and frame count, as HTS-AT's stages do)."""

    def __init__(self):
        self.stats: dict[int, list] = {}

    def start(self, clip: int, chunks: int) -> None:
        self.stats[clip] = [chunks, None, None, None]

    def add(self, clip: int, layers: list[torch.Tensor], row: int) -> list[np.ndarray] | None:
        """Add one chunk's frames; returns per layer mean ++ std over time once the clip's last chunk is in."""
        entry = self.stats[clip]
        hs = [x[row].double() for x in layers]  # [frames, width] per layer
        sums, squares, frames = [h.sum(0) for h in hs], [(h * h).sum(0) for h in hs], [h.shape[0] for h in hs]
        if entry[1] is not None:
            sums = [a + b for a, b in zip(entry[1], sums)]
            squares = [a + b for a, b in zip(entry[2], squares)]
            frames = [a + b for a, b in zip(entry[3], frames)]
        entry[0] -= 1
        entry[1:] = sums, squares, frames
        if entry[0]:
            return None
        del self.stats[clip]
        out = []
        for total, square, n in zip(sums, squares, frames):
            mean = total / n
            # unbiased, as the paper's torch.std(frames, dim=0); one frame (torch.std's NaN) gives 0
            std = torch.sqrt(torch.clamp((square - n * mean * mean) / max(n - 1, 1), min=0.0))
            out.append(torch.cat([mean, std]).float().cpu().numpy())
        return out


def extract(
    encoder: LayerEncoder,
    paths: list[str],
    cache: LayerFeatureCache,
    batch_size: int = 8,
    workers: int = 2,
    progress: bool = True,
    desc: str | None = None,
) -> tuple[list[str | None], ExtractionReport]:
    """Compute and cache the features of ``paths`` not cached yet. Returns each path's cache key (None for an
    unreadable file, which is skipped, logged and listed in the report) and the report."""
    report = ExtractionReport(clips=len(paths))
    keys: list[str | None] = []
    for p in paths:
        try:
            keys.append(clip_key(p))
        except OSError as e:
            keys.append(None)
            report.unreadable[p] = str(e)
    have = cache.done([k for k in keys if k])
    todo = sorted(
        {k: i for i, k in enumerate(keys) if k and k not in have}.values(),
        key=lambda i: _estimated_length(paths[i], encoder.sampling_rate),
    )  # like lengths share batches

    def prepare(i: int):
        try:
            samples = load_audio(paths[i], encoder.sampling_rate)
        except (AudioError, OSError) as e:
            return i, None, str(e)
        if not len(samples):
            return i, None, "no audio samples"
        samples, silent = peak_normalise(samples)
        return i, (encoder.chunks(samples), len(samples), silent), None

    pooler, pending = _Pooler(), defaultdict(list)
    meta: dict[int, tuple[int, bool]] = {}

    def run(length: int) -> None:
        batch, pending[length] = pending[length][:batch_size], pending[length][batch_size:]
        if not pending[length]:
            del pending[length]
        layers = encoder.hidden_states(torch.from_numpy(np.stack([chunk for _, chunk in batch])))
        done_rows = []
        for row, (i, _) in enumerate(batch):
            feats = pooler.add(i, layers, row)
            if feats is not None:
                n, silent = meta.pop(i)
                done_rows.append((keys[i], paths[i], n, n < encoder.min_samples, silent, feats))
        cache.put(done_rows)  # nothing computed is lost if the run stops here
        report.computed += len(done_rows)
        bar.update(len(done_rows))

    with (
        ThreadPoolExecutor(max(1, workers)) as pool,
        tqdm(
            total=len(todo), desc=desc or f"{encoder.name} features", unit="clip", disable=not (todo and progress)
        ) as bar,
    ):
        window = max(2, 2 * workers)
        futures = [pool.submit(prepare, i) for i in todo[:window]]
        next_up = window
        while futures:
            i, prepared, error = futures.pop(0).result()
            if next_up < len(todo):
                futures.append(pool.submit(prepare, todo[next_up]))
                next_up += 1
            if error is not None:
                report.unreadable[paths[i]] = error
                keys[:] = [None if k == keys[i] else k for k in keys]  # every row naming this file
                log.warning("skipped %s: %s", paths[i], error)
                bar.update(1)
                continue
            chunks, n, silent = prepared
            meta[i] = (n, silent)
            pooler.start(i, len(chunks))
            for chunk in chunks:
                pending[len(chunk)].append((i, chunk))
            for size in [size for size, items in pending.items() if len(items) >= batch_size]:
                run(size)
            while sum(len(v) for v in pending.values()) > 4 * batch_size:  # bound memory: run the fullest part-batch
                run(max(pending, key=lambda n: len(pending[n])))
        while pending:
            run(max(pending, key=lambda n: len(pending[n])))

    report.padded, report.silent = cache.flags([k for k in keys if k])
    return keys, report
