"""A classifier head per target: logistic regression on stored window embeddings, seeded by text or audio, and
ranked together with each window's nearest labelled positive.

In: window embeddings (rows of an index, float16 or float32 [N, D]), the labels {row: value} of one target,
and its seed: the prompt's text embedding and/or an example's audio embedding. Out: a :class:`Head` that
scores any embeddings (raw scores, and calibrated probabilities), saved as a small safetensors file.

The model. Rows are L2-normalised (as :func:`biolingual.search.query.cosines` does), and the linear score is
``scale * cos(row, u) + bias``: a direction ``u`` and a length ``scale`` (together the weights
``w = scale * u``). The seed is ``u`` = the normalised text embedding (or example, or their normalised sum),
``scale`` = 16, ``bias`` = 0: with no labels the head ranks windows exactly as zero-shot (or
query-by-example) cosine does; 16 is a power of two, so the multiplication is exact and creates no ties.

Fitting minimises the class-balanced logistic loss of the positive and negative labels plus
``l2/2 * (|w - w_seed|^2 + (b - b_seed)^2)``: the regularisation pulls toward the seed rather than toward zero,
so few labels nudge the zero-shot ranking and many labels override it. "unsure" labels are not used. Two
choices make every round move the ranking the right way:

- The seed bias ``b_seed`` (:func:`_seed_bias`) is minus the seed's score at the top 2% of windows (the
  proposals' boundary guess), and the bias is held to it as strongly as the weights. With the bias free and
  centred at 0, every seed score is far above 0.5 and lowering the bias answers all negatives without turning
  the direction; held, negatives turn it and move down the ranking.
- ``l2`` is chosen from the labels (:func:`_choose_l2`): the out-of-fold AP of the labels (5-fold; 3-fold from
  :data:`MANY_LABELS` of each class) for each pull in :data:`L2_GRID`, the strongest of the best. While either
  class has fewer labels than the embedding has dimensions, the grid stops at :data:`FEW_LABELS_MIN_L2`: so few
  labels cannot pin a direction, and the labelled set is top-heavy (the top proposals are the positives), so
  cross-validation on it is optimistic about weak pulls. A fixed pull lets a round fall below its seed; the
  choice keeps rounds near or above it, at the cost of leaving a nearly useless seed more slowly
  (benchmarks/bench_agile.py measures both; the figures are in docs/agile.md).

The nearest-example part. A linear direction in D dimensions needs more labels of each class than D, and a
call type the model was not trained on can have its best direction nearly orthogonal to its prompt
(benchmarks/bench_agile.py; docs/agile.md). A call's windows lie close to one another, though, so once there
are :data:`MIN_PLATT` positives and negatives the raw score is the rank average of two parts: the linear score
above, and the cosine of the window to its nearest labelled positive (query by every positive found so far; at most
:data:`MAX_EXEMPLARS` of them, the most spread out). Each part is mapped to its place in its own distribution over
the index (quantile knots from the strided sample the seed bias uses, continued linearly past the ends, so the
top of a large index has no ties), and the two places are added: no weight to tune, and neither part's scale
dominates. Calibration is fitted on out-of-fold scores of this sum (each fold's exemplars are the other folds'
positives). With fewer labels (or ``nearest=False``) the score is the linear part alone.

The fit is Newton's method (torch, float64, one thread; the problem has D+1 <= 1025 parameters, so each step is
one small linear solve, with step halving where the loss is far from quadratic; no scikit-learn needed in the
library core). With fewer labels than dimensions the step is solved in the n-dimensional dual form (Woodbury);
with more, the (D+1)-square Hessian is built and Cholesky-solved in float32 (an inexact step toward the float64
gradient's zero), its factor kept for the next steps while they converge fast (:func:`_newton_torch`). The
cross-validation's fits go along the pull grid from strongest to weakest, each started from the one before and
with its Hessian (:func:`_fold_fits`), and the calibration reuses the chosen pull's fold fits, so a round costs
little at 512-d (docs/agile.md and docs/performance.md give the measured times).

Calibration (stored in the head as ``calibration``): the regression is fitted with balanced classes, so
its own sigmoid is not a probability. From out-of-fold scores (k-fold cross-validation) of the labels:

- ``"platt"`` (Platt scaling, ``sigmoid(a * score + c)``, fitted by :func:`_platt`: Platt's smoothed targets
  and Newton with a backtracking line search, as Lin, Lin & Weng 2007; scikit-learn's fit on the same scores)
  when there are at least :data:`MIN_PLATT` positives and negatives and the labels support it
  (:func:`_platt_unsupported`: a positive slope, no perfect separation with fewer than :data:`MIN_SEPARABLE` of
  a class, a likelihood-ratio gain over the prior);
- ``"isotonic"`` (pool-adjacent-violators, linearly interpolated, so it is monotone) when there are at
  least :data:`MIN_ISOTONIC` of each: enough labels for a step function not to overfit;
- ``"rank"`` otherwise, and whenever a calibration would put every window of the index at 0.5 or more or give
  them all nearly one probability: the "probability" is then the window's quantile among the index's windows
  (knots ``cdf_score`` from the index sample), and ``fitted["calibration_note"]`` says why, for ``agile fit`` to
  print and the review page to show: plain Newton steps diverge on such labels (every window at 1.0), and a
  slope fitted to noise gives every window about the share of positives (nothing above 0.5);
- ``"none"`` for an unfitted seed head (``"logistic"``, the regression's own sigmoid, in files before /3).

Probabilities are in [0, 1] and non-decreasing in the raw score. Rankings use the raw score (isotonic
flat steps would tie windows).

Files: safetensors (``u``, ``scale``, ``bias``, calibration arrays, the top rows of the last ranking, the
exemplars and the knots) with the metadata as JSON in the safetensors header; no pickle. Format /3 (/2 had no
``"rank"`` calibration); files of format /1 (before the nearest-example part) load as the linear part alone.
:meth:`Head.load` against a model with another
:meth:`~biolingual.BioLingual.fingerprint` raises :class:`~biolingual.errors.ModelMismatchError` naming both.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_bytes
from ..errors import ModelMismatchError, SearchIndexError
from ..search.query import cosines
from .defaults import DEFAULT_L2, L2_GRID  # here since the command line shows them without importing torch
from .propose import PRIOR_SHARE

SEED_SCALE = 16.0  # a power of two: scale * cosine is exact, so the seed head ranks exactly as cosine does
FEW_LABELS_MIN_L2 = 0.1  # the weakest of them while either class has fewer labels than the embeddings have dimensions
# Newton's last step for a cross-validation fold's fit: its scores only rank and calibrate, and a step of 1e-5 moves
# a score by ~1e-5 (rows are unit vectors); the head's own fit goes on to 1e-7. One step fewer per fold fit.
FOLD_TOL = 1e-5
FOLDS = 5  # k of the cross-validation that chooses the pull and gives the calibration its out-of-fold scores
# labels of each class from which 3 folds do (MANY_FOLDS): at 1,000 labels (300 positive) of 512-d, 3 folds chose the
# pull 5 folds chose in 8 of 9 draws (the ninth: a better held-out AP), for 60% of the fit's CPU; at 700 (210
# positive) in 2 of 4, at 300 (90) in 2 of 3 (one held-out AP 0.01 lower): below this, 5 folds
MANY_LABELS = 250
MANY_FOLDS = 3
MIN_PLATT = 3
MIN_ISOTONIC = 50
MIN_SEPARABLE = 10  # labels of each class below which perfectly separated scores cannot fix a Platt slope
PRIOR_DEVIANCE = (
    3.84  # chi-square (1 degree of freedom) at 5%: the deviance gain a calibration must show over the prior
)
MIN_SPREAD = 0.01  # calibrated probabilities over the index closer than this together: a calibration that ranks nothing
MAX_EXEMPLARS = 64  # labelled positives kept for the nearest-example part (the most spread out of them)
CDF_KNOTS = 1025  # knots of each part's distribution over the index (a strided sample), for the rank average
# rows scored at a time by score_rows, converted into one reused float32 buffer (64 MB at 512-d): its products with
# the directions stay the same (bitwise) as one product of all rows; 131,072 (a fresh 256 MB array a chunk) took
# 30-50% more CPU on 100,000 512-d rows on a loaded 2-core machine, 8,192 more again (threaded BLAS per call)
SCORE_CHUNK = 32_768
SAMPLE = 16384  # rows of the strided sample of the index the seed bias and those distributions come from
FORMAT = "biolingual-agile-head/3"
# /1: the linear part alone (no exemplars); /2: no "rank" calibration (a /2 reader would score a rank head with a
# sigmoid, so /3 files are refused by it rather than misread)
READS = ("biolingual-agile-head/1", "biolingual-agile-head/2", FORMAT)


class HeadError(SearchIndexError):
    """A head file cannot be read, or does not fit the embeddings it is applied to."""


@dataclass
class Head:
    u: np.ndarray  # float32 [D], unit direction
    scale: float
    bias: float
    target: str
    prompt: str | None = None
    fingerprint: str | None = None  # the embedding model's fingerprint()
    model_name: str | None = None
    dim: int = 0
    seed: str = "none"  # what seeded it: "text", "example", "text+example" or "none"
    calibration: str = "none"  # "none", "rank", "platt", "isotonic" ("logistic" in files written before "rank")
    platt: tuple[float, float] = (1.0, 0.0)  # (a, c) of sigmoid(a * score + c)
    iso_x: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # isotonic knots (raw score)
    iso_y: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # and probabilities
    counts: dict = field(default_factory=dict)  # labels used: positive, negative, unsure
    fitted: dict = field(default_factory=dict)  # how: l2, iterations, cv_ap ...
    top_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # best rows of its last ranking
    # the nearest-example part (empty: the score is the linear part alone): unit rows of labelled positives, and the
    # knots of the linear part's and of the nearest-example cosine's distributions over the index
    exemplars: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    cdf_linear: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    cdf_nearest: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    # knots of the raw score's distribution over the index: the "rank" calibration's probability is the place in it
    cdf_score: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    source: str | None = None  # the file it was loaded from (not saved), for messages

    @property
    def weights(self) -> np.ndarray:
        return (self.scale * self.u).astype(np.float32)

    # ---- scoring -------------------------------------------------------------------------------
    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        """Raw scores [N] of rows of ``embeddings`` (any float dtype, memory-mapped ones read in chunks)."""
        return score_rows(embeddings, [self])[:, 0]

    @property
    def nearest(self) -> bool:
        """Whether the score is the rank average of the linear part and the nearest labelled positive."""
        return len(self.exemplars) > 0

    def combine(self, linear: np.ndarray, nearest: np.ndarray) -> np.ndarray:
        """The raw score from the linear part's score and the cosine to the nearest exemplar: the sum of their
        places in their distributions over the index (each in [0, 1], continued linearly past the ends)."""
        return (_place(linear, self.cdf_linear) + _place(nearest, self.cdf_nearest)).astype(np.float32)

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        """Probabilities of raw scores (see the module docstring for the calibrations)."""
        raw = np.asarray(raw, np.float64)
        if self.calibration == "isotonic":
            p = np.interp(raw, self.iso_x.astype(np.float64), self.iso_y.astype(np.float64))
        elif self.calibration == "rank":  # the window's quantile among the index's windows, not a probability
            p = _place(raw, self.cdf_score)
        elif self.calibration == "platt":
            p = _sigmoid(self.platt[0] * raw + self.platt[1])
        else:
            p = _sigmoid(raw)
        return np.clip(p, 0.0, 1.0).astype(np.float32)

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        return self.calibrate(self.scores(embeddings))

    # ---- files ---------------------------------------------------------------------------------
    def _metadata(self) -> dict:
        return {
            "format": FORMAT,
            "target": self.target,
            "prompt": self.prompt,
            "fingerprint": self.fingerprint,
            "model_name": self.model_name,
            "dim": self.dim,
            "seed": self.seed,
            "calibration": self.calibration,
            "counts": self.counts,
            "fitted": self.fitted,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the head atomically as safetensors, metadata (JSON) in its header."""
        from safetensors.numpy import save

        tensors = {
            "u": np.ascontiguousarray(self.u, np.float32),
            "scale_bias": np.array([self.scale, self.bias], np.float64),
            "platt": np.array(self.platt, np.float64),
            "iso_x": np.ascontiguousarray(self.iso_x, np.float32),
            "iso_y": np.ascontiguousarray(self.iso_y, np.float32),
            "top_rows": np.ascontiguousarray(self.top_rows, np.int64),
            "exemplars": np.ascontiguousarray(self.exemplars.reshape(len(self.exemplars), len(self.u)), np.float32),
            "cdf_linear": np.ascontiguousarray(self.cdf_linear, np.float32),
            "cdf_nearest": np.ascontiguousarray(self.cdf_nearest, np.float32),
            "cdf_score": np.ascontiguousarray(self.cdf_score, np.float32),
        }
        return atomic_write_bytes(path, save(tensors, metadata={"biolingual": json.dumps(self._metadata())}))

    @classmethod
    def load(cls, path: str | os.PathLike, model=None, fingerprint: str | None = None) -> Head:
        """Read a head; with ``model`` (or a ``fingerprint``, e.g. an index's), refuse a head fitted on the
        embeddings of another model."""
        from safetensors import SafetensorError
        from safetensors.numpy import load

        path = Path(path)
        try:
            data = path.read_bytes()
            tensors = load(data)
            header_len = int.from_bytes(data[:8], "little")
            meta = json.loads(json.loads(data[8 : 8 + header_len])["__metadata__"]["biolingual"])
        except FileNotFoundError:
            raise HeadError(f"head file not found: '{path}'") from None
        except (SafetensorError, ValueError, KeyError, TypeError, OSError) as e:
            raise HeadError(f"'{path}' is not a biolingual head file ({e}); fit one with `biolingual agile fit`") from e
        if meta.get("format") not in READS:
            raise HeadError(
                f"'{path}' is a head of format {meta.get('format')!r}, "
                f"this version reads {' and '.join(map(repr, READS))}"
            )
        head = cls(
            u=tensors["u"],
            scale=float(tensors["scale_bias"][0]),
            bias=float(tensors["scale_bias"][1]),
            target=meta["target"],
            prompt=meta.get("prompt"),
            fingerprint=meta.get("fingerprint"),
            model_name=meta.get("model_name"),
            dim=int(meta.get("dim", len(tensors["u"]))),
            seed=meta.get("seed", "none"),
            calibration=meta.get("calibration", "none"),
            platt=tuple(float(x) for x in tensors["platt"]),
            iso_x=tensors["iso_x"],
            iso_y=tensors["iso_y"],
            counts=meta.get("counts", {}),
            fitted=meta.get("fitted", {}),
            top_rows=tensors["top_rows"],
            source=str(path),
            exemplars=tensors.get("exemplars", np.zeros((0, len(tensors["u"])), np.float32)),
            cdf_linear=tensors.get("cdf_linear", np.zeros(0, np.float32)),
            cdf_nearest=tensors.get("cdf_nearest", np.zeros(0, np.float32)),
            cdf_score=tensors.get("cdf_score", np.zeros(0, np.float32)),
        )
        if model is not None:
            fingerprint, name = model.fingerprint(), str(model.name_or_path)
        else:
            name = "the index's model"
        if fingerprint is not None:
            head.check(fingerprint, name, path)
        return head

    def check(self, fingerprint: str, model_name: str, where=None) -> None:
        """:class:`ModelMismatchError` unless this head was fitted on embeddings of the model ``fingerprint``."""
        where = where or self.source or f"for {self.target}"
        if self.fingerprint != fingerprint:
            raise ModelMismatchError(
                f"the head '{where}' (target '{self.target}') was fitted on embeddings of model '{self.model_name}' "
                f"(fingerprint {str(self.fingerprint)[:12]}), not of '{model_name}' (fingerprint {fingerprint[:12]}); "
                "a head only works on the embeddings of the model it was fitted with: use that model, or fit the "
                "head again on an index of this one"
            )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, np.float64)))  # no overflow warnings for large |x|


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), np.finfo(np.float32).tiny)


def score_rows(embeddings: np.ndarray, heads: list[Head], chunk: int = SCORE_CHUNK) -> np.ndarray:
    """Raw scores [N, len(heads)]: one pass over ``embeddings`` in chunks (bounded memory on a memory map),
    cosines (:func:`~biolingual.search.query.cosines`, rows re-normalised in float32) times each head's
    scale, plus its bias. Each chunk is converted to float32 into one buffer, reused: a new float32 array per
    chunk (256 MB at :data:`~biolingual.search.query.CHUNK` rows) cost a page fault per 4 KB each round."""
    n = len(embeddings)
    for h in heads:
        if embeddings.shape[1] != len(h.u):
            raise HeadError(
                f"the head for '{h.target}' has {len(h.u)} dimensions, the embeddings {embeddings.shape[1]}"
            )
    # one product per chunk with every head's direction and every exemplar
    directions = np.concatenate([np.stack([h.u for h in heads])] + [h.exemplars for h in heads if h.nearest]).astype(
        np.float32
    )
    scale = np.array([h.scale for h in heads], np.float32)
    bias = np.array([h.bias for h in heads], np.float32)
    spans, at = [], len(heads)
    for h in heads:
        spans.append((at, at + len(h.exemplars)))
        at += len(h.exemplars) if h.nearest else 0
    out = np.empty((n, len(heads)), np.float32)
    buffer = np.empty((min(chunk, n), embeddings.shape[1]), np.float32)
    for start in range(0, n, chunk):
        block = buffer[: min(chunk, n - start)]
        np.copyto(block, embeddings[start : start + chunk])  # the float16 -> float32 cast, into the buffer
        cos = cosines(block, directions)
        out[start : start + chunk] = cos[: len(heads)].T * scale + bias
        for j, h in enumerate(heads):
            if h.nearest:
                out[start : start + chunk, j] = h.combine(
                    out[start : start + chunk, j], cos[spans[j][0] : spans[j][1]].max(0)
                )
    return out


def _place(values: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """Where ``values`` fall in a distribution given by its quantile ``knots`` (increasing, at evenly spaced
    quantiles 0..1): interpolated between knots, and continued past the first and last with the slope of the
    outer 1% of knots, so windows beyond the sample's extremes still differ (no ties at the top of a large index)."""
    values = np.asarray(values, np.float64)
    knots = knots.astype(np.float64)
    q = np.linspace(0.0, 1.0, len(knots))
    edge = max(1, (len(knots) - 1) // 100)
    tiny = 1e-12
    low_slope = (q[edge] - q[0]) / max(knots[edge] - knots[0], tiny)
    high_slope = (q[-1] - q[-1 - edge]) / max(knots[-1] - knots[-1 - edge], tiny)
    out = np.interp(values, knots, q)
    out = np.where(values < knots[0], (values - knots[0]) * low_slope, out)
    return np.where(values > knots[-1], 1.0 + (values - knots[-1]) * high_slope, out)


def _knots(values: np.ndarray) -> np.ndarray:
    """Quantile knots of ``values`` (:data:`CDF_KNOTS` of them), made strictly increasing so the place is too."""
    knots = np.quantile(np.asarray(values, np.float64), np.linspace(0.0, 1.0, CDF_KNOTS))
    step = max(1e-9, 1e-9 * float(np.abs(knots).max()))
    return (np.maximum.accumulate(knots) + step * np.arange(CDF_KNOTS)).astype(np.float32)


def seed_direction(text_embedding=None, example_embedding=None) -> tuple[np.ndarray | None, str]:
    """The seed's unit direction and its kind: the text embedding, the example's, or their normalised sum."""
    parts = [(k, _unit_rows(v)) for k, v in (("text", text_embedding), ("example", example_embedding)) if v is not None]
    if not parts:
        return None, "none"
    if len(parts) == 1:
        return parts[0][1].ravel(), parts[0][0]
    return _unit_rows(parts[0][1].ravel() + parts[1][1].ravel()), "text+example"


def seed_head(target: str, dim: int, text_embedding=None, example_embedding=None, **meta) -> Head:
    """The head with no labels: ranks as cosine with the seed (zero-shot, or query by example)."""
    u, kind = seed_direction(text_embedding, example_embedding)
    if u is None:
        return Head(u=np.zeros(dim, np.float32), scale=0.0, bias=0.0, target=target, dim=dim, seed="none", **meta)
    return Head(u=u.astype(np.float32), scale=SEED_SCALE, bias=0.0, target=target, dim=len(u), seed=kind, **meta)


# ---- the regression ------------------------------------------------------------------------------


@contextlib.contextmanager
def one_torch_thread():
    """torch's intra-op threads set to 1 for the block, restored after. For small work where threads only add
    overhead: the fit's matrices are tiny ([labels, D]), and on a busy machine (a page server beside other work)
    their spin-waits made a 0.15 s fit take 5 s; the page server's one-window front end (a 10 s log-mel) took
    ~100 ms on 2 threads of a busy 2-core machine where 1 thread took ~4 ms."""
    import torch  # here: the head is imported (to score, and by the label commands) without torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _newton(
    x: np.ndarray,
    y: np.ndarray,
    weight: np.ndarray,
    w0: np.ndarray,
    l2: float,
    l2_bias: float,
    iterations: int = 50,
    tol: float = 1e-7,
    b0: float = 0.0,
    init: tuple[np.ndarray, float] | None = None,
    carry: dict | None = None,
) -> tuple[np.ndarray, float, int]:
    """argmin of sum_i weight_i * logloss(y_i, x_i.w + b) + l2/2 |w - w0|^2 + l2_bias/2 (b - b0)^2, by Newton's method.

    x [n, D], y in {0, 1}; computed in float64 with torch on one thread (:func:`one_torch_thread`). Each step solves
    (Z^T S Z + L) d = g with Z = [x, 1]: directly (D+1 square) when n > D, else through Woodbury in the
    n-dimensional dual, which is what makes a labelling round cheap. ``init`` (weights, bias) starts the steps
    somewhere nearer the optimum than the seed (a fit of nearly the same problem): the optimum is the same, reached
    in fewer steps. ``carry`` (a dict, for fits of the same rows in a row, as a fold's fits along the pull grid):
    the Hessian's data part the last fit left there is where this one starts (see :func:`_newton_torch`), and this
    fit leaves its own there.
    """
    import torch  # here: the head is imported (to score, and by the label commands) without torch; fitting needs it

    start = None if init is None else np.concatenate([np.asarray(init[0], np.float64), [float(init[1])]])
    with one_torch_thread():
        return _newton_torch(
            *(torch.from_numpy(np.asarray(a, np.float64)) for a in (x, y, weight, w0)),
            l2,
            l2_bias,
            iterations,
            tol,
            b0,
            None if start is None else torch.from_numpy(start),
            carry,
        )


def _newton_torch(
    x, y, weight, w0, l2: float, l2_bias: float, iterations: int, tol: float, b0: float = 0.0, start=None, carry=None
):
    """The steps of :func:`_newton`. With more labels than dimensions each step solves with the (D+1)-square Hessian
    Z^T S Z + L, and building Z^T S Z (n x (D+1)^2 products) was most of a round's fit (issue 27: ~8 ms a step at
    800 labels of 512-d, four steps a fit, 25 fits a round). Its Cholesky factor is therefore kept while it works:
    a step with the Hessian of an earlier point (S from an earlier iterate; the data part ``carry["gram"]`` of the
    fit before, the same rows at the next pull) still heads for the zero of the float64 gradient, the
    objective's convex line search keeps every step from overshooting, and the part is built afresh at the current
    point only when a step had to be halved or shrank by less than 4x from the one before (contraction too slow
    to trust the stopping test). Near an optimum S hardly changes, so most steps cost one solve with the factor."""
    import torch

    n, d = x.shape
    z = torch.cat([x, torch.ones(n, 1, dtype=torch.float64)], dim=1)
    prior = torch.cat([w0, torch.full((1,), float(b0), dtype=torch.float64)])
    theta = prior.clone() if start is None else start.clone()
    z32 = z.float() if n > d else None  # for the Hessian's product, below
    lam = torch.full((d + 1,), float(l2), dtype=torch.float64)
    lam[-1] = l2_bias

    def objective(t: torch.Tensor) -> float:
        f = z @ t
        # logloss = log(1 + e^f) - y f; softplus does not overflow for a large |f|
        return float((weight * (torch.nn.functional.softplus(f) - y * f)).sum() + 0.5 * (lam * (t - prior) ** 2).sum())

    it = 0
    current = objective(theta)
    gram = None if carry is None or n <= d else carry.get("gram")
    if gram is not None and gram.shape != (d + 1, d + 1):
        gram = None
    factor = None
    last = None  # the size of the step before
    for _ in range(iterations):
        it += 1
        p = torch.sigmoid(z @ theta)
        g = z.T @ (weight * (p - y)) + lam * (theta - prior)
        s = weight * p * (1 - p)
        if n > d:
            # the Hessian's [n, D+1] x [n, D+1] product and its Cholesky solve in float32 (LU in float64 took 4x
            # longer): an inexact Newton step toward the zero of the float64 gradient, which the float64 line
            # search and the step-size test below still reach; the factor is kept between steps (see above)
            if gram is None:
                gram, factor = (z32 * s.float()[:, None]).T @ z32, None
            if factor is None:
                hessian = gram + torch.diag(lam.float())
                factor, info = torch.linalg.cholesky_ex(hessian)
                if int(info) != 0:  # not positive definite in float32 (a tiny pull): the float64 system, every step
                    factor = None
            if factor is not None:
                step = torch.cholesky_solve(g.float()[:, None], factor)[:, 0].double()
            else:
                step = torch.linalg.solve(hessian.double(), g)
        else:  # (L + Z^T S Z)^-1 = L^-1 - L^-1 Z^T R (I + R Z L^-1 Z^T R)^-1 R Z L^-1, R = S^(1/2)
            r = s.sqrt()
            zl = z / lam  # Z L^-1
            m = torch.eye(n, dtype=torch.float64) + (r[:, None] * zl) @ (z.T * r[None, :])
            lg = g / lam
            step = lg - zl.T @ (r * torch.linalg.solve(m, r * (z @ lg)))
        # a full Newton step can overshoot where the loss is far from quadratic (large scores): halve it
        # until the objective does not increase (the objective is convex, so this ends)
        t = 1.0
        for _ in range(30):
            candidate = objective(theta - t * step)
            if candidate <= current + 1e-12 * abs(current):
                break
            t *= 0.5
        theta -= t * step
        current = candidate
        size = float((t * step).abs().max())
        if size < tol:
            break
        if n > d and (t < 1.0 or (last is not None and size > 0.25 * last)):
            gram = factor = None  # too slow for the kept factor: the Hessian at the next point
        last = size
    if carry is not None and n > d:
        carry["gram"] = gram
    return theta[:-1].numpy(), float(theta[-1]), it


def _balanced(y: np.ndarray) -> np.ndarray:
    """Label weights: positives and negatives weigh as much in total (balanced), whatever the counts (a Raven
    import can bring thousands of negatives); the weights sum to the number of labels."""
    pos = y.sum()
    neg = len(y) - pos
    return np.where(y == 1, len(y) / (2 * max(pos, 1)), len(y) / (2 * max(neg, 1)))


def _fit_raw(
    x: np.ndarray,
    y: np.ndarray,
    w0: np.ndarray,
    l2: float,
    b0: float = 0.0,
    init: tuple[np.ndarray, float] | None = None,
    tol: float = 1e-7,
    carry: dict | None = None,
) -> tuple[np.ndarray, float, int]:
    """Weights and bias for labelled unit rows ``x`` and 0/1 ``y``, class-balanced, held to the seed (w0, b0) by
    ``l2``: the bias as strongly as the weights, so negatives alone cannot be answered by lowering the bias only.
    ``init``: where Newton's method starts, ``carry``: the Hessian it starts with (:func:`_newton`)."""
    return _newton(x, y, _balanced(y), w0, l2, l2_bias=l2, b0=b0, init=init, tol=tol, carry=carry)


def _platt(scores: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Platt scaling: (a, c) of sigmoid(a * s + c) for scores ``s`` and 0/1 labels ``y``, by Platt's method as Lin,
    Lin & Weng (2007, "A note on Platt's probabilistic outputs for support vector machines") give it.

    The targets are smoothed, (N+ + 1)/(N+ + 2) for positives and 1/(N- + 2) for negatives, so the minimum is
    finite even on separable scores; Newton's method starts at slope 0 and the prior's log-odds and takes each
    step with a backtracking line search (sufficient decrease), because plain Newton steps from (1, 0) diverged
    on wide or separable scores (slopes of 1e8: every window at probability 1). The same objective as
    scikit-learn's ``_sigmoid_calibration``, which tests/test_agile_head.py checks it against."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(y, np.float64)
    pos, neg = float(y.sum()), float(len(y) - y.sum())
    t = np.where(y == 1, (pos + 1) / (pos + 2), 1 / (neg + 2))

    def objective(a: float, c: float) -> float:  # cross-entropy to the targets, written not to overflow
        f = a * s + c
        return float(np.sum(np.logaddexp(0.0, f) - t * f))

    # LLW's parameters are (A, B) = (-a, -c) of 1 / (1 + exp(A s + B)); written here for sigmoid(a s + c)
    a, c = 0.0, float(np.log((pos + 1) / (neg + 1)))
    current = objective(a, c)
    for _ in range(100):
        p = _sigmoid(a * s + c)
        g = np.array([np.dot(s, p - t), np.sum(p - t)])
        if np.abs(g).max() < 1e-5:
            break
        d2 = p * (1 - p)
        h = np.array([[np.dot(s * s, d2), np.dot(s, d2)], [np.dot(s, d2), np.sum(d2)]]) + 1e-12 * np.eye(2)
        step = -np.linalg.solve(h, g)
        slope = float(g @ step)  # the directional derivative: negative for a descent direction
        size = 1.0
        while size >= 1e-10:
            candidate = objective(a + size * step[0], c + size * step[1])
            if candidate < current + 1e-4 * size * slope:
                a, c, current = a + size * step[0], c + size * step[1], candidate
                break
            size /= 2
        else:  # no step decreases the objective: as close to the minimum as float64 gets
            break
    return float(a), float(c)


def _platt_unsupported(scores: np.ndarray, y: np.ndarray, a: float, c: float) -> str | None:
    """Why the labels cannot support the Platt fit (a, c) of their out-of-fold ``scores``, or None when they can.

    - a slope that is not positive: the scores rank the positives no higher than the negatives;
    - scores that separate the classes completely while either has fewer than :data:`MIN_SEPARABLE` labels: the
      slope is then set by the target smoothing alone (the gap between classes says nothing about how fast the
      probability rises across it), and a few labels more can change it by orders of magnitude;
    - a fit that does not beat the prior (one probability, the share of positives, for every window) by a
      likelihood-ratio test at the 5% level (deviance gain under :data:`PRIOR_DEVIANCE`, chi-square with 1 degree
      of freedom): the fitted slope is noise, and its probabilities would be nearly the same for every window."""
    pos, neg = int(y.sum()), int(len(y) - y.sum())
    if not a > 0:
        return (
            "the cross-validated scores rank the positives no higher than the negatives, so a calibration "
            "would not beat the prior"
        )
    if scores[y == 1].min() > scores[y == 0].max() and min(pos, neg) < MIN_SEPARABLE:
        return (
            f"the labels separate perfectly with only {min(pos, neg)} of a class (calibration needs "
            f"{MIN_SEPARABLE} of each, or some overlap, to say how steep the boundary is)"
        )
    eps = 1e-12
    p = np.clip(_sigmoid(a * scores + c), eps, 1 - eps)
    prior = np.clip(pos / len(y), eps, 1 - eps)
    fitted = np.sum(y * np.log(p) + (1 - y) * np.log1p(-p))
    base = pos * np.log(prior) + neg * np.log1p(-prior)
    if 2 * (fitted - base) < PRIOR_DEVIANCE:
        return (
            f"the calibration does not beat the prior (the share of positives) on the labels (deviance gain "
            f"{2 * (fitted - base):.2f} < {PRIOR_DEVIANCE}; cross-validated scores carry too little signal)"
        )
    return None


def isotonic(scores: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pool-adjacent-violators: knots (score, probability) of the non-decreasing fit of ``y`` on ``scores``;
    between knots the probability is interpolated linearly, outside them it is the end value."""
    order = np.argsort(scores, kind="stable")
    xs, ys = scores[order].astype(np.float64), y[order].astype(np.float64)
    blocks: list[list[float]] = []  # [sum of y, count, sum of x]
    for xv, yv in zip(xs, ys):
        blocks.append([yv, 1.0, xv])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] >= blocks[-1][0] / blocks[-1][1]:
            s, c, sx = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += c
            blocks[-1][2] += sx
    knots_x = np.array([b[2] / b[1] for b in blocks])  # each block at its mean score
    knots_y = np.array([b[0] / b[1] for b in blocks])
    return knots_x.astype(np.float32), knots_y.astype(np.float32)


def _folds(y: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Stratified fold number of each label (each class spread evenly over the k folds)."""
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(y), np.int64)
    for cls in (0, 1):
        idx = np.flatnonzero(y == cls)
        fold[rng.permutation(idx)] = np.arange(len(idx)) % k
    return fold


def _sample(embeddings: np.ndarray, sample: int = SAMPLE) -> np.ndarray:
    """A strided sample of at most ``sample`` rows of the index, as unit float32 rows: read and normalised once a
    fit (the seed bias, and the knots of the head and of each fold), as :func:`cosines` normalises what it scores."""
    step = max(1, len(embeddings) // sample)
    return _unit_rows(np.asarray(embeddings[::step], np.float32))


def _sample_cosines(sample: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """[R, Q] cosines of the unit rows of :func:`_sample` with the unit ``directions``: one float32 product in torch
    on one thread (numpy's threaded product took twice the CPU on two busy cores, and :func:`cosines` measured
    the rows' lengths again for each of the six products a round makes with the sample)."""
    import torch

    with one_torch_thread():
        product = torch.from_numpy(sample) @ torch.tensor(np.asarray(directions, np.float32)).T  # a copy: small
        return product.clamp_(-1.0, 1.0).numpy()


def _seed_bias(sample: np.ndarray, head: Head) -> float:
    """The bias the seed head is pulled toward: minus its score at the top :data:`~.propose.PRIOR_SHARE` of the
    windows (of the strided sample :func:`_sample`), so the seed puts probability 0.5 where the
    proposals' margin guess puts the boundary. With the bias held to it (not to 0), a negative label can only be
    answered by turning the direction away from it: at bias 0 every seed score is far above 0.5 and a free bias
    absorbed every negative (16 negatives left the direction at cosine 0.9998 to the seed)."""
    if head.scale == 0:
        return 0.0
    cos = _sample_cosines(sample, head.u[None])[:, 0]
    return -head.scale * float(np.quantile(cos, 1 - PRIOR_SHARE))


def _fold_fits(x: np.ndarray, y: np.ndarray, w0: np.ndarray, b0: float, pulls, folds: int) -> dict[float, list]:
    """{l2: [(weights, bias) of the fit without fold f, for each fold f]} for each pull of ``pulls`` (stratified
    folds, k = min(folds, positives, negatives)). Each fold's fits go from the strongest pull to the weakest, each
    started from the one before (:func:`_newton`'s ``init``): neighbouring pulls have nearby optima, so a fit takes
    2-4 Newton steps instead of 8-12 from the seed."""
    k = min(folds, int(y.sum()), int(len(y) - y.sum()))
    fold = _folds(y, k)
    fits: dict[float, list] = {l2: [] for l2 in pulls}
    for f in range(k):
        train = fold != f
        xf, yf = x[train], y[train]
        init, carry = None, {}  # the fit before's optimum and its Hessian: where the next starts
        for l2 in sorted(pulls, reverse=True):
            wf, bf, _ = _fit_raw(xf, yf, w0, l2, b0, init, tol=FOLD_TOL, carry=carry)
            fits[l2].append((wf, bf))
            init = (wf, bf)
    return fits


def _out_of_fold(
    x: np.ndarray,
    y: np.ndarray,
    w0: np.ndarray,
    b0: float,
    l2: float,
    folds: int,
    sample: np.ndarray | None = None,
    fits: list | None = None,
) -> np.ndarray:
    """Scores of each label by a head fitted without its fold (stratified, k = min(folds, positives, negatives)).
    With ``sample`` (:func:`_sample`), scored as the head with a nearest-example part scores: the fold's
    exemplars are the other folds' positives, its knots from ``sample``. ``fits``: the folds' fits at ``l2``
    when :func:`_fold_fits` already made them (the same folds: they are a function of ``y``)."""
    k = min(folds, int(y.sum()), int(len(y) - y.sum()))
    fold = _folds(y, k)
    fits = fits if fits is not None else _fold_fits(x, y, w0, b0, [l2], folds)[l2]
    oof = np.empty(len(y))
    for f in range(k):
        train, test = fold != f, fold == f
        wf, bf = fits[f]
        linear = np.einsum("ij,j->i", x[test], wf) + bf  # einsum: no BLAS threads for a small product
        if sample is None:
            oof[test] = linear
            continue
        part = Head(u=np.zeros(len(wf), np.float32), scale=0.0, bias=0.0, target="fold")
        part.exemplars, part.cdf_linear, part.cdf_nearest, _ = _nearest_part(sample, x[train & (y == 1)], wf, bf)
        nearest = np.einsum("ij,kj->ik", x[test], part.exemplars.astype(np.float64)).max(1)
        oof[test] = part.combine(linear, nearest)
    return oof


def _spread(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of at most ``k`` rows of unit rows ``x`` that cover them (farthest-point order from the first row,
    ties to the lowest index): all of them when there are no more than ``k``."""
    if len(x) <= k:
        return np.arange(len(x))
    chosen = [0]
    nearest = x @ x[0]
    for _ in range(k - 1):
        i = int(np.argmin(nearest))
        chosen.append(i)
        nearest = np.maximum(nearest, x @ x[i])
    return np.sort(np.array(chosen))


def _nearest_part(sample: np.ndarray, positives: np.ndarray, w: np.ndarray, b: float) -> tuple:
    """(exemplars, linear knots, nearest knots, the sample's linear scores and nearest cosines) of a head with weights
    ``w``, bias ``b`` and the labelled positives' unit rows ``positives``: the exemplars are those rows (at most
    :data:`MAX_EXEMPLARS`, spread out), the knots the distributions over the index sample (:func:`_sample`) of the
    linear score and of the cosine to the nearest exemplar, each as :func:`score_rows` computes it."""
    exemplars = positives[_spread(positives, MAX_EXEMPLARS)].astype(np.float32)
    norm = float(np.linalg.norm(w))
    u = (w / norm if norm > 0 else w).astype(np.float32)
    cos = _sample_cosines(sample, np.concatenate([u[None], exemplars]))
    linear = cos[:, 0] * np.float32(norm) + np.float32(b)
    nearest = cos[:, 1:].max(1)
    return exemplars, _knots(linear), _knots(nearest), (linear, nearest)


def _choose_l2(x: np.ndarray, y: np.ndarray, w0: np.ndarray, b0: float, folds: int) -> tuple[float, dict, dict]:
    """The pull toward the seed with the best out-of-fold AP of the labels over :data:`L2_GRID`; of equal ones the
    strongest (the seed's ranking is kept unless the labels show a better one). :data:`DEFAULT_L2` when the
    labels cannot be cross-validated. Also the out-of-fold AP of each candidate, kept in ``fitted``, and the
    folds' fits (:func:`_fold_fits`), which the calibration's out-of-fold scores reuse."""
    from ..metrics import detection_average_precision

    fewest = min(int(y.sum()), int(len(y) - y.sum()))
    if fewest < 2:
        return DEFAULT_L2, {}, {}
    grid = [l2 for l2 in L2_GRID if fewest >= x.shape[1] or l2 >= FEW_LABELS_MIN_L2]
    fits = _fold_fits(x, y, w0, b0, grid, folds)
    aps = {
        l2: float(
            detection_average_precision(_out_of_fold(x, y, w0, b0, l2, folds, fits=fits[l2]), y.astype(np.int64))[0]
        )
        for l2 in grid
    }
    best = max(aps.values())
    return max(l2 for l2, ap in aps.items() if ap >= best - 1e-9), aps, fits


def fit_head(
    embeddings: np.ndarray,
    labels: dict[int, str],
    text_embedding=None,
    example_embedding=None,
    target: str = "target",
    l2: float | None = None,
    folds: int | None = None,
    nearest: bool = True,
    **meta,
) -> Head:
    """Fit the head of one target (see the module docstring).

    ``embeddings``: all windows of the index (only the labelled rows are read, plus a strided sample for the
    seed bias); ``labels``: {row: "positive" | "negative" | "unsure"}; the seed from ``text_embedding`` and/or
    ``example_embedding`` ([D] or [1, D]). ``l2``: how strongly the weights and bias are held to the seed (per
    unit of balanced label weight); None (default) chooses it from the labels by cross-validation
    (:func:`_choose_l2`). ``folds``: k of the cross-validation that gives out-of-fold scores for that choice, the
    AP reported in ``fitted["cv_ap"]`` and the calibration; None (default): :data:`FOLDS`, or :data:`MANY_FOLDS`
    once both classes have :data:`MANY_LABELS` labels (at most as many as the fewer class has labels; the k used is
    ``fitted["folds"]``). ``nearest``: add the nearest-example part once there
    are :data:`MIN_PLATT` positives and negatives (see the module docstring); False: the linear part alone.
    ``meta`` (prompt, fingerprint, model_name) is stored in the head.
    """
    from ..metrics import detection_average_precision

    dim = embeddings.shape[1]
    head = seed_head(target, dim, text_embedding, example_embedding, **meta)
    used = sorted((int(r), v) for r, v in labels.items() if v in ("positive", "negative"))
    counts = {v: sum(1 for x in labels.values() if x == v) for v in ("positive", "negative", "unsure")}
    head.counts = counts
    head.fitted = {
        "l2": l2,
        "l2_chosen": l2 is None,
        "seed_scale": SEED_SCALE,
        "labels_used": len(used),
        "cv_ap": None,
        "iterations": 0,
        "folds": None,
    }
    if not used:
        return head
    rows = np.array([r for r, _ in used], np.int64)
    order = np.argsort(rows)  # read the memory map in row order
    x = np.empty((len(rows), dim), np.float64)
    x[order] = _unit_rows(np.asarray(embeddings[rows[order]], np.float32))
    y = np.array([1.0 if v == "positive" else 0.0 for _, v in used])
    pos, neg = int(y.sum()), int(len(y) - y.sum())
    if folds is None:  # many labels of each class: a stable choice from fewer folds (see MANY_LABELS)
        folds = MANY_FOLDS if min(pos, neg) >= MANY_LABELS else FOLDS
    head.fitted["folds"] = min(folds, pos, neg) if min(pos, neg) >= 2 else None
    w0 = head.weights.astype(np.float64)
    sample = _sample(embeddings)
    b0 = _seed_bias(sample, head)
    fold_fits: dict = {}
    if l2 is None:
        l2, head.fitted["cv_ap_by_l2"], fold_fits = _choose_l2(x, y, w0, b0, folds)
    head.fitted.update(l2=l2, seed_bias=b0)
    near = fold_fits.get(l2)  # the folds' fits at this pull: the fit on every label is near each of them
    w, b, iterations = _fit_raw(
        x,
        y,
        w0,
        l2,
        b0,
        init=None if not near else (np.mean([f[0] for f in near], 0), float(np.mean([f[1] for f in near]))),
    )
    norm = float(np.linalg.norm(w))
    if norm > 0:
        head.u, head.scale = (w / norm).astype(np.float32), norm
    head.bias = b
    head.fitted["iterations"] = iterations
    nearest = nearest and min(pos, neg) >= MIN_PLATT  # the rank average needs a calibration fitted to it
    head.fitted["nearest"] = nearest
    if nearest:
        head.exemplars, head.cdf_linear, head.cdf_nearest, parts = _nearest_part(sample, x[y == 1], w, b)
        head.fitted["exemplars"] = len(head.exemplars)
        sample_scores = head.combine(*parts)  # the sample's raw scores, from the products just made
    else:
        sample_scores = head.scores(sample)
    head.cdf_score = _knots(sample_scores)  # for the rank fallback
    note = None
    if min(pos, neg) >= 2:  # out-of-fold scores: each label scored by a head fitted without it
        oof = _out_of_fold(x, y, w0, b0, l2, folds, sample if nearest else None, fits=fold_fits.get(l2))
        head.fitted["cv_ap"] = float(detection_average_precision(oof, y.astype(np.int64))[0])
    if min(pos, neg) < MIN_PLATT:
        note = f"too few labels to calibrate ({pos} positive, {neg} negative; calibration needs {MIN_PLATT} of each)"
    elif min(pos, neg) >= MIN_ISOTONIC:
        head.calibration = "isotonic"
        head.iso_x, head.iso_y = isotonic(oof, y)
    else:
        a, c = _platt(oof, y)
        head.fitted["platt_fit"] = [a, c]  # kept even when refused below, to show what the labels gave
        note = _platt_unsupported(oof, y, a, c)
        if note is None:
            head.calibration, head.platt = "platt", (a, c)
    if note is None:  # a calibration the labels support must still tell the index's windows apart
        p = head.calibrate(sample_scores)
        if p.min() >= 0.5:
            note = (
                f"the calibration puts every window of the index at probability {p.min():.3f} or more, the "
                "labelled negatives included"
            )
        elif p.max() - p.min() < MIN_SPREAD:
            note = (
                f"the calibration gives every window of the index nearly one probability ({p.min():.3f}-{p.max():.3f})"
            )
    if note is not None:
        # ranks rather than probabilities nobody can trust: the score is the window's quantile in the index, so
        # it stays monotone and spread out, and a threshold of 0.5 means "the better half", which the note says
        head.calibration = "rank"
        note += "; scores are ranks (the window's quantile in the index), not probabilities: label more windows"
    head.fitted["calibration_note"] = note
    return head
