"""Call density: the share of windows that hold the call, with a confidence interval, from few labels.

In: a score per window (a head's, or seed cosines), bins of the score's quantiles, and labels of windows
drawn at random within each bin. Out: the estimate and its interval (:class:`DensityEstimate`).

The method is Perch's (Navine et al. 2024, "All thresholds barred: direct estimation of call density in
bioacoustic data"; google-research/perch ``call_density``): no threshold is chosen. Windows are split into
bins by score quantile, small bins at the top where calls concentrate (default edges at the 50th, 75th and
87.5th percentiles: bins holding 50%, 25%, 12.5% and 12.5% of windows). A few windows are drawn uniformly
at random in each bin and labelled; within bin b the share of positives p_b has the posterior
Beta(pos_b + 1/2, neg_b + 1/2) (Jeffreys prior), and the density is sum_b share_b * p_b. Its interval is
read from Monte Carlo draws of that sum. Because the windows of each bin are a random sample, the
estimate is unbiased whatever the head's quality: a better head only narrows the interval.

The labels must be those of the random draw: windows proposed by active learning (the top of the
ranking) are not a random sample of their bin. :func:`sample_for_density` draws them;
:func:`estimate_density` uses only labels of the rows it drew.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_QUANTILES = (0.5, 0.75, 0.875)


@dataclass(frozen=True)
class DensitySample:
    row: int
    bin: int
    score: float


@dataclass(frozen=True)
class DensityBin:
    low: float  # score range [low, high)
    high: float
    share: float  # fraction of all windows in this bin
    labelled: int  # positives + negatives among the drawn windows
    positives: int


@dataclass(frozen=True)
class DensityEstimate:
    density: float  # sum_b share_b * posterior mean of p_b
    low: float  # the interval of the given confidence
    high: float
    confidence: float
    bins: tuple[DensityBin, ...]

    def summary(self) -> str:
        n = sum(b.labelled for b in self.bins)
        return (
            f"call density {self.density:.4f} ({100 * self.confidence:g}% interval {self.low:.4f} to {self.high:.4f}) "
            f"from {n} labelled windows in {len(self.bins)} score bins"
        )


def bin_edges(scores: np.ndarray, quantiles: Sequence[float] = DEFAULT_QUANTILES) -> np.ndarray:
    """Inner bin edges: the scores at ``quantiles`` (increasing, each in (0, 1))."""
    q = np.asarray(quantiles, np.float64)
    if q.ndim != 1 or len(q) == 0 or (q <= 0).any() or (q >= 1).any() or (np.diff(q) <= 0).any():
        raise ValueError(f"quantiles must increase strictly within (0, 1), got {list(quantiles)}")
    return np.quantile(np.asarray(scores, np.float64), q)


def assign_bins(scores: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The bin (0 = lowest scores) of each window."""
    return np.searchsorted(edges, np.asarray(scores, np.float64), side="right").astype(np.int16)


def sample_for_density(
    scores: np.ndarray, n_per_bin: int = 8, quantiles: Sequence[float] = DEFAULT_QUANTILES, seed: int = 0
) -> tuple[list[DensitySample], np.ndarray]:
    """``n_per_bin`` windows drawn uniformly at random in each score bin (all of a smaller bin), and the edges."""
    edges = bin_edges(scores, quantiles)
    bins = assign_bins(scores, edges)
    rng = np.random.default_rng(seed)
    out = []
    for b in range(len(edges) + 1):
        rows = np.flatnonzero(bins == b)
        chosen = np.sort(rng.choice(rows, size=min(n_per_bin, len(rows)), replace=False)) if len(rows) else rows
        out += [DensitySample(int(r), b, float(scores[r])) for r in chosen]
    return out, edges


def estimate_density(
    bins: np.ndarray,
    edges: np.ndarray,
    labels: dict[int, str],
    sampled_rows: Sequence[int],
    confidence: float = 0.95,
    draws: int = 20_000,
    seed: int = 0,
) -> DensityEstimate:
    """The density and its interval from the labels of ``sampled_rows`` (rows drawn by :func:`sample_for_density`,
    with ``bins`` the bin of every window then). Unsure and unlabelled sampled rows are left out; a bin with no
    label keeps the prior (a wide interval)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence is a fraction in (0, 1), got {confidence}")
    n_bins = len(edges) + 1
    share = np.bincount(bins, minlength=n_bins) / max(len(bins), 1)
    pos = np.zeros(n_bins)
    neg = np.zeros(n_bins)
    for r in sampled_rows:
        value = labels.get(int(r))
        if value == "positive":
            pos[bins[r]] += 1
        elif value == "negative":
            neg[bins[r]] += 1
    a, b = pos + 0.5, neg + 0.5  # Jeffreys prior
    rng = np.random.default_rng(seed)
    samples = rng.beta(a[None, :], b[None, :], size=(draws, n_bins)) @ share
    tail = (1 - confidence) / 2
    low, high = np.quantile(samples, [tail, 1 - tail])
    lows = np.concatenate([[-np.inf], edges])
    highs = np.concatenate([edges, [np.inf]])
    return DensityEstimate(
        float(share @ (a / (a + b))),
        float(low),
        float(high),
        confidence,
        tuple(
            DensityBin(float(lo), float(hi), float(s), int(p + n), int(p))
            for lo, hi, s, p, n in zip(lows, highs, share, pos, neg)
        ),
    )
