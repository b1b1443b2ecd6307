"""Which windows to label next: a batch mixing the best-scoring, the most uncertain and a few random ones.

In: a score per window of the index (a head's raw scores or probabilities, or seed cosines), the rows
already labelled for the target, the batch size and the mix. Out: a list of :class:`Proposal` (row, score,
reason), never a labelled row, the same for the same inputs and seed.

Why a mix: the top windows find positives fastest (and confirm the head where it is confident); margin
windows, nearest the decision boundary, are those whose label moves the head most (uncertainty
sampling); random windows (drawn from the windows left after the other two) keep part of the labelled
set a plain sample of the index, which calibration needs and which finds call types that score low so far. Default mix:
half top, 3/8 margin, 1/8 random.

The boundary for margin samples is 0.5 for probabilities (a calibrated head); for raw scores (seed
cosines, no calibration yet) it is the score at the top :data:`PRIOR_SHARE` of windows, a guess of how
common the call is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

DEFAULT_MIX = (0.5, 0.375, 0.125)  # top, margin, random
PRIOR_SHARE = 0.02


@dataclass(frozen=True)
class Proposal:
    row: int
    score: float
    reason: str  # "top", "margin" or "random"


def _counts(n: int, mix) -> tuple[int, int, int]:
    mix = np.asarray(mix, np.float64)
    if mix.shape != (3,) or (mix < 0).any() or mix.sum() <= 0:
        raise ValueError(f"mix is three non-negative fractions (top, margin, random), got {tuple(mix.tolist())}")
    mix = mix / mix.sum()
    top = int(round(n * mix[0]))
    rand = int(round(n * mix[2])) if mix[2] > 0 else 0
    rand = min(rand, n - top)
    return top, n - top - rand, rand


def propose(
    scores: np.ndarray,
    labelled_rows: Iterable[int],
    n: int = 16,
    mix=DEFAULT_MIX,
    seed: int | None = 0,
    boundary: float | None = None,
) -> list[Proposal]:
    """``n`` unlabelled rows to label next (fewer if fewer are left): the top-scoring, those nearest the
    ``boundary`` (default: see the module docstring) and random ones, in that order, in the proportions of
    ``mix``. Deterministic for a given ``seed``."""
    scores = np.asarray(scores, np.float32)
    if n <= 0:
        return []
    free = np.ones(len(scores), bool)
    labelled = np.fromiter((int(r) for r in labelled_rows), np.int64)
    free[labelled[(labelled >= 0) & (labelled < len(scores))]] = False
    available = int(free.sum())
    n = min(n, available)
    if n == 0:
        return []
    n_top, n_margin, n_random = _counts(n, mix)  # n <= free rows, so every share can be filled
    rng = np.random.default_rng(seed)
    out: list[Proposal] = []

    def take(rows: np.ndarray, reason: str) -> None:
        for r in rows:
            free[r] = False
            out.append(Proposal(int(r), float(scores[r]), reason))

    take(_smallest(np.where(free, -scores, np.inf), n_top, free), "top")
    if n_margin:  # nearest the boundary among the rest
        if boundary is None:
            boundary = _quantile_top(scores, PRIOR_SHARE)
        take(_smallest(np.where(free, np.abs(scores - boundary), np.inf), n_margin, free), "margin")
    if n_random:  # drawn from what is left: rows neither labelled nor proposed above
        take(np.sort(rng.choice(np.flatnonzero(free), size=min(n_random, int(free.sum())), replace=False)), "random")
    order = {"top": 0, "margin": 1, "random": 2}
    return sorted(out, key=lambda p: (order[p.reason], -p.score if p.reason == "top" else 0.0, p.row))


def _smallest(values: np.ndarray, k: int, free: np.ndarray) -> np.ndarray:
    """Rows of the ``k`` smallest finite ``values`` among free rows, smallest first (ties by row)."""
    k = min(k, int(free.sum()))
    if k <= 0:
        return np.zeros(0, np.int64)
    part = np.argpartition(values, k - 1)[:k] if k < len(values) else np.arange(len(values))
    part = part[free[part]]
    return part[np.lexsort((part, values[part]))][:k]


def _quantile_top(scores: np.ndarray, share: float) -> float:
    """The score of the window at the top ``share`` of the ranking."""
    k = max(0, min(len(scores) - 1, int(len(scores) * share)))
    return float(np.partition(scores, len(scores) - 1 - k)[len(scores) - 1 - k])
