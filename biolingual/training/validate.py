"""Validation: embed held-out shards and score retrieval both ways."""
from __future__ import annotations

from typing import NamedTuple

import torch

from ..data import eval_loader
from ..metrics import relevance_key, retrieval_metrics
from ..model import BioLingual


class ShardEmbeddings(NamedTuple):
    audio: torch.Tensor  # [N, D]
    text: torch.Tensor  # [N, D]
    captions: list[str]
    metas: list[dict]
    skipped: int  # samples that did not decode (each named in the log by the shard reader)


@torch.inference_mode()
def embed_shards(model: BioLingual, pattern: str, batch_size: int, workers: int, max_samples: int = 0) -> ShardEmbeddings:
    """Embeddings, captions and metadata of every sample in the shards, and how many samples were
    skipped because they did not decode."""
    was_training = model.training
    model.eval()
    audio, text, captions, metas = [], [], [], []
    loader = eval_loader(
        pattern, batch_size=batch_size, workers=workers, sampling_rate=model.sampling_rate,
        clip_samples=model.window_samples,
    )
    seen = skipped = 0
    try:
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
    finally:
        model.train(was_training)
    if not captions:
        raise ValueError(f"the validation shards '{pattern}' gave no usable sample")
    n = min(seen, max_samples) if max_samples else seen
    return ShardEmbeddings(torch.cat(audio)[:n], torch.cat(text)[:n], captions[:n], metas[:n], skipped)


def validate(model: BioLingual, pattern: str, batch_size: int = 64, workers: int = 2, max_samples: int = 0) -> dict:
    """Retrieval metrics (R@1/5/10, P@k, mAP@10, both directions), with eval.retrieval's caption rule:
    items whose captions are equal once the "The sound of a(n) " template is stripped are matches."""
    audio, text, captions, _, _ = embed_shards(model, pattern, batch_size, workers, max_samples)
    return retrieval_metrics(audio, text, captions=[relevance_key(c) for c in captions])

