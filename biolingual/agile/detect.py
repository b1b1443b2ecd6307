"""Detection with agile heads: each window's calibrated probability under the heads fitted by agile modelling,
and the windows at or above a threshold as calls (:func:`biolingual.search.detect.events_from_probabilities`).

In: an index and :class:`~biolingual.agile.head.Head` s fitted with its model. Out: probabilities [N, heads] or
the calls. Heads score the stored embeddings, so no model is needed. Here rather than in search/, which
agile builds on: detection by zero-shot labels lives there, detection by heads with the heads.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..search.detect import events_from_probabilities
from ..search.index import IndexData
from ..search.query import DEFAULT_MAX_CALL_S, Hit
from .head import score_rows


def head_probabilities(index: IndexData, heads: Sequence) -> np.ndarray:
    """[N windows, len(heads)] calibrated probabilities of :class:`~biolingual.agile.head.Head` s, in one pass over
    the stored embeddings. Each head must have been fitted on this index's model (checked by fingerprint)."""
    for h in heads:
        h.check(index.meta["model"]["fingerprint"], index.meta["model"]["name"])
    raw = score_rows(index.embeddings, list(heads))
    return np.stack([h.calibrate(raw[:, j]) for j, h in enumerate(heads)], axis=1) if heads else raw


def detect_heads(
    index: IndexData,
    heads: Sequence,
    threshold: float = 0.5,
    gap_s: float = 0.0,
    max_call_s: float | None = DEFAULT_MAX_CALL_S,
    merge: bool = True,
) -> list[Hit]:
    """Events of the windows whose head probability is at or above ``threshold``, named by each head's target."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold is a probability between 0 and 1, got {threshold}")
    names = [h.target for h in heads]
    if len(set(names)) != len(names):
        raise ValueError(f"two heads are for the same target: {sorted(n for n in set(names) if names.count(n) > 1)}")
    return events_from_probabilities(
        index, head_probabilities(index, heads), names, threshold, gap_s, max_call_s, merge
    )
