"""Detection: which windows of an index hold each label, merged into calls.

Per-window probabilities come from the model's zero-shot softmax over label prompts
(:func:`window_probabilities`), or from classifier heads fitted by agile modelling
(:mod:`biolingual.agile.detect`, which builds on this module); either way windows at or above a probability
threshold become calls (:func:`events_from_probabilities`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..prompts import DEFAULT_BACKGROUND, DEFAULT_TEMPLATE, check_labels
from .index import IndexData
from .query import CHUNK, DEFAULT_MAX_CALL_S, Hit, merge_intervals


def window_probabilities(
    model,
    index: IndexData,
    labels: Sequence[str],
    template: str | Sequence[str] = DEFAULT_TEMPLATE,
    background: Sequence[str] = DEFAULT_BACKGROUND,
) -> np.ndarray:
    """[N windows, len(labels)] probabilities: the model's softmax over the labels plus background texts.

    The background texts (used as written, without the template) give a window without any of the
    labels somewhere to go; without them a single label would always score 1.
    """
    texts = model.embed_labels(labels, template)
    if background:
        texts = torch.cat([texts, model.embed_text(list(background))])
    out = np.zeros((len(index), len(labels)), np.float32)
    for start in range(0, len(index), CHUNK):
        block = torch.from_numpy(np.asarray(index.embeddings[start : start + CHUNK], dtype=np.float32))
        out[start : start + len(block)] = model.similarity_to_probs(block, texts)[:, : len(labels)].numpy()
    return out


def events_from_probabilities(
    index: IndexData,
    probs: np.ndarray,
    labels: Sequence[str],
    threshold: float,
    gap_s: float = 0.0,
    max_call_s: float | None = DEFAULT_MAX_CALL_S,
    merge: bool = True,
) -> list[Hit]:
    """Windows at or above ``threshold``: with ``merge``, overlapping ones and those within ``gap_s`` (per file
    and label) merged into one call of at most ``max_call_s`` seconds, scored by its highest probability;
    without, one row per window. Sorted by file, then start."""
    events = []
    for j, label in enumerate(labels):
        rows = np.flatnonzero(probs[:, j] >= threshold)
        by_file: dict[int, list] = {}
        for r in rows:
            by_file.setdefault(int(index.file_ids[r]), []).append(
                (float(index.starts[r]), float(index.ends[r]), float(probs[r, j]))
            )
        for f, intervals in by_file.items():
            if not merge:
                events += [Hit(index.files[f], a, b, s, label) for a, b, s in intervals]
                continue
            events += [
                Hit(index.files[f], a, b, s, label) for a, b, s, _ in merge_intervals(intervals, gap_s, max_call_s)
            ]
    return sorted(events, key=lambda h: (h.file, h.start, h.query))


def detect(
    model,
    index: IndexData,
    labels: Sequence[str],
    threshold: float = 0.5,
    template=DEFAULT_TEMPLATE,
    background: Sequence[str] = DEFAULT_BACKGROUND,
    gap_s: float = 0.0,
    max_call_s: float | None = DEFAULT_MAX_CALL_S,
    merge: bool = True,
) -> list[Hit]:
    labels = check_labels(labels)  # none, a blank one or one given twice: ValueError (the rule of zero_shot)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold is a probability between 0 and 1, got {threshold}")
    return events_from_probabilities(
        index,
        window_probabilities(model, index, labels, template, background),
        labels,
        threshold,
        gap_s,
        max_call_s,
        merge,
    )
