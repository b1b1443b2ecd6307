"""Embedding webdataset shards: every sample's audio and caption embeddings, captions and metadata.

Training validation (:mod:`biolingual.training.validate`) and the evaluation runners (``eval.retrieval``,
``eval.zero_shot --shards``) embed shards here, so they see the same samples the same way. Files and
arrays are embedded by :meth:`BioLingual.embed_audio`; a long recording's windows by
:func:`biolingual.search.build_index`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .data import eval_loader
from .model import BioLingual


class ShardEmbeddings(NamedTuple):
    audio: torch.Tensor  # [N, D]
    text: torch.Tensor  # [N, D]
    captions: list[str]
    metas: list[dict]
    skipped: int  # samples that did not decode (each named in the log by the shard reader)


def embed_shards(
    model: BioLingual, pattern: str, batch_size: int, workers: int, max_samples: int = 0
) -> ShardEmbeddings:
    """Embeddings, captions and metadata of every sample in the shards (the first ``max_samples`` when
    given), and how many samples were skipped because they did not decode. Each clip is its first window
    (cut or padded to the model's 10 s), as training sees it, embedded at the model's precision
    (``model.precision``: ``biolingual.load(..., dtype="bfloat16")``, the runners' ``--dtype``). Raises
    :class:`biolingual.data.ShardError` for missing or unreadable shards and ValueError when no sample is usable."""
    audio, text, captions, metas = [], [], [], []
    loader = eval_loader(
        pattern,
        batch_size=batch_size,
        workers=workers,
        sampling_rate=model.sampling_rate,
        clip_samples=model.window_samples,
    )
    seen = skipped = 0
    with model.inference():
        for batch in loader:
            skipped += batch["skipped"]
            if not batch["text"]:
                continue
            audio.append(model.encode_audio(batch["audio"].to(model.device)).cpu())
            text.append(model.encode_text(**model.tokenize(batch["text"])).cpu())
            captions.extend(batch["text"])
            metas.extend(batch["meta"])
            seen += len(batch["text"])
            if max_samples and seen >= max_samples:
                break
    if not captions:
        raise ValueError(f"the validation shards '{pattern}' gave no usable sample")
    n = min(seen, max_samples) if max_samples else seen
    return ShardEmbeddings(torch.cat(audio)[:n], torch.cat(text)[:n], captions[:n], metas[:n], skipped)
