"""Embeddings of BEANS-Zero examples through the evaluation embedding cache, so nothing is embedded twice.

In: a :class:`~eval.beans_zero.data.LocalCopy`, the examples to embed and an open
:class:`~eval.embedding_cache.EmbeddingCache`. Out: embeddings [N, D] (zero rows for examples that
could not be used) and {index: reason} for those.

BEANS-Zero's audio lives inside Arrow/parquet files, not in one file per clip, so the key of an example
is the cache's model identity, the data file's identity (absolute path, size, modification time, as the
cache keys audio files) and the example's row in it. The vectors go in and out through the cache's
``get``/``put``, so one cache file serves every runner. The audio of an example is
read only when its key is missing; samples go through the one audio loader
(:func:`biolingual.audio.load_audio`: numbers checked, mono, resampled to the model's rate), and are
embedded in batches, each batch committed at once (an interrupted run keeps what it finished).
"""

from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from tqdm.auto import tqdm

from biolingual.audio import load_audio
from biolingual.errors import AudioError

from ..embedding_cache import EmbeddingCache, file_identity, model_identity
from .data import Example, LocalCopy

log = logging.getLogger(__name__)


def example_key(model_id: str, file_id: str, example: Example) -> str:
    return hashlib.sha256(f"{model_id}|beans-zero|{file_id}|row={example.row}".encode()).hexdigest()


def _prepare(item: tuple[Example, np.ndarray | Exception], rate: int) -> np.ndarray | Exception:
    """An example's samples at the model's ``rate`` through the one audio loader, or why they cannot be used."""
    example, samples = item
    if isinstance(samples, Exception):
        return samples
    try:
        return load_audio(samples, rate, sampling_rate=example.sample_rate, index=example.row)
    except (AudioError, TypeError, ValueError) as e:
        return e


def embed_examples(
    cache: EmbeddingCache,
    model,
    data: LocalCopy,
    examples: list[Example],
    batch_size: int = 16,
    workers: int = 2,
    chunk: int = 64,
    desc: str = "embedding",
    progress: bool = True,
) -> tuple[torch.Tensor, dict[int, str], int]:
    """(embeddings [N, D], {index: why it was skipped}, number of examples embedded now rather than read back)."""
    model_id = model_identity(model)
    file_ids = {f: file_identity(str(p)) for f, p in enumerate(data.files)}
    keys = [example_key(model_id, file_ids[e.file], e) for e in examples]
    found = cache.get(keys)
    todo = [i for i, k in enumerate(keys) if k not in found]
    position = {(examples[i].file, examples[i].row): i for i in todo}
    errors: dict[int, str] = {}
    embedded = 0
    bar = tqdm(total=len(todo), desc=desc, unit="clip", disable=not (todo and progress))
    with bar, ThreadPoolExecutor(max(1, workers)) as pool:
        stream = data.iter_audio([examples[i] for i in todo])
        while True:
            part = [item for _, item in zip(range(chunk), stream)]
            if not part:
                break
            ready = list(pool.map(_prepare, part, [model.sampling_rate] * len(part)))
            waves, ok = [], []
            for (example, _), wave in zip(part, ready):
                i = position[(example.file, example.row)]
                if isinstance(wave, Exception):
                    errors[i] = f"{data.name(example)}: {wave}"
                    log.warning("skipped %s", errors[i])
                else:
                    waves.append(wave)
                    ok.append(i)
            if waves:
                emb = model.embed_audio(waves, sampling_rate=model.sampling_rate, batch_size=batch_size, progress=False)
                cache.put([keys[i] for i in ok], emb)  # this batch is kept even if the run stops right after
                found.update((keys[i], e.numpy().astype(np.float32)) for i, e in zip(ok, emb))
                embedded += len(ok)
            bar.update(len(part))
    out = torch.zeros(len(examples), model.embedding_dim)
    for i, k in enumerate(keys):
        if i not in errors:
            out[i] = torch.from_numpy(np.array(found[k]))
    return out, errors, embedded
