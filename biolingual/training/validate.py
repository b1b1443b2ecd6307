"""Validation: embed held-out shards (:func:`biolingual.embedding.embed_shards`) and score retrieval both ways."""
from __future__ import annotations

from ..embedding import embed_shards
from ..metrics import relevance_key, retrieval_metrics
from ..model import BioLingual


def validate(model: BioLingual, pattern: str, batch_size: int = 64, workers: int = 2, max_samples: int = 0) -> dict:
    """Retrieval metrics (R@1/5/10, P@k, mAP@10, both directions), with eval.retrieval's caption rule:
    items whose captions are equal once the "The sound of a(n) " template is stripped are matches."""
    audio, text, captions, _, _ = embed_shards(model, pattern, batch_size, workers, max_samples)
    return retrieval_metrics(audio, text, captions=[relevance_key(c) for c in captions])
