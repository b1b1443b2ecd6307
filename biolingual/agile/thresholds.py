"""Per-species thresholds from reviewed windows: the score that reaches a chosen precision, and a calibration.

In: a target of an agile session (:class:`~biolingual.agile.session.AgileSession`) with reviewed windows (labels
``positive``/``negative`` from the CLI, the review page or ``agile import-raven``; ``unsure`` ones are left out),
a precision wanted, and which score: ``"cosine"`` (zero-shot: the cosine of each window with the target's seed,
its prompt and/or example) or ``"head"`` (the raw score of the target's fitted head, what ``detect --head``
ranks by). Out (:func:`target_threshold`): a :class:`Threshold`: the lowest score at which the reviewed windows
scoring at or above it reach that precision (so the highest recall that keeps it), the precision and recall it
reaches there, the counts it rests on, the share of the index's windows at or above it, and a per-species
calibration of that score (Platt scaling, :func:`biolingual.agile.head._platt`) giving the probability at the
threshold. When the labels cannot support a calibration (too few of a class, perfectly separated with few
labels, no gain over the prior: :func:`biolingual.agile.head._platt_unsupported`) there is no probability: the
calibration is ``"rank"`` (the threshold's place among the index's windows) and ``note`` says why, never a
saturated probability.

Files (:func:`write_thresholds`, :func:`read_thresholds`): a CSV with one row per target (a new threshold of a
target replaces its row). ``detect --threshold-file`` applies the ``head`` rows to the heads given with ``--head``
(:func:`detect_heads_thresholded`): a window is a detection of that target when the head's raw score is at or
above the row's threshold. Each head row carries a digest of the head it was set on, and a head refitted since is
refused (its scores are another scale). ``cosine`` rows describe zero-shot cosines (as ``biolingual search``
scores); detect's zero-shot scores are softmax probabilities over the labels given, another quantity, so detect
does not apply them.

Caveat: a fitted head's scores on the very windows it was fitted on are better than on new ones, so a ``head``
threshold's precision and recall are optimistic until it rests on windows reviewed after the fit; ``cosine``
thresholds have no such bias (nothing was fitted to the labels).
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_text
from ..errors import UsageError
from ..search.detect import events_from_probabilities
from ..search.query import DEFAULT_MAX_CALL_S
from .detect import head_probabilities
from .head import MIN_PLATT, Head, _platt, _platt_unsupported, _sigmoid, score_rows

COLUMNS = [
    "target",
    "score",
    "threshold",
    "precision_wanted",
    "precision",
    "recall",
    "reviewed",
    "positives",
    "negatives",
    "index_share",
    "calibration",
    "platt_a",
    "platt_c",
    "probability",
    "head_digest",
    "note",
]
SCORES = ("cosine", "head")


@dataclass
class Threshold:
    target: str
    score: str  # "cosine" or "head"
    threshold: float  # in the score's own units
    precision_wanted: float
    precision: float  # reached on the reviewed windows at or above the threshold
    recall: float  # share of the reviewed positives at or above it
    reviewed: int
    positives: int
    negatives: int
    index_share: float  # share of the index's windows scoring at or above it
    calibration: str  # "platt" or "rank"
    platt: tuple[float, float] | None  # (a, c) of sigmoid(a * score + c) when calibration is "platt"
    probability: float | None  # the calibrated probability at the threshold (None with "rank")
    head_digest: str = ""  # the head a "head" threshold was set on
    note: str = ""  # why the calibration fell back to ranks

    def summary(self) -> str:
        calibrated = (
            f"calibrated probability {self.probability:.3f} at the threshold (Platt)"
            if self.calibration == "platt"
            else "no calibrated probability (calibration rank)"
        )
        return (
            f"target '{self.target}': {self.score} threshold {self.threshold:.6g} "
            f"reaches precision {self.precision:.3f} "
            f"(wanted {self.precision_wanted:g}) at recall {self.recall:.3f} on {self.reviewed} reviewed windows "
            f"({self.positives} positive, {self.negatives} negative); {100 * self.index_share:.2f}% of the index's "
            f"windows score at or above it; {calibrated}"
        )

    def warning_line(self) -> str | None:
        return (
            None
            if not self.note
            else (
                f"warning: target '{self.target}': {self.note}; the threshold is given with its "
                "rank in the index, not a probability"
            )
        )

    def row(self) -> dict:
        a, c = self.platt if self.platt else ("", "")
        return {
            "target": self.target,
            "score": self.score,
            "threshold": repr(self.threshold),
            "precision_wanted": repr(self.precision_wanted),
            "precision": f"{self.precision:.6f}",
            "recall": f"{self.recall:.6f}",
            "reviewed": self.reviewed,
            "positives": self.positives,
            "negatives": self.negatives,
            "index_share": f"{self.index_share:.6f}",
            "calibration": self.calibration,
            "platt_a": repr(a) if a != "" else "",
            "platt_c": repr(c) if c != "" else "",
            "probability": "" if self.probability is None else f"{self.probability:.6f}",
            "head_digest": self.head_digest,
            "note": self.note,
        }


def precision_threshold(
    scores: np.ndarray, y: np.ndarray, precision: float
) -> tuple[float | None, float, float, float]:
    """(threshold, precision, recall, best precision) for reviewed ``scores`` with 0/1 labels ``y``: the lowest
    reviewed score t such that the windows scoring >= t reach ``precision`` (windows tied at t all count), the
    precision and recall there; threshold None (precision and recall 0) when no t reaches it."""
    s, y = np.asarray(scores, np.float64), np.asarray(y, bool)
    values = np.unique(s)[::-1]  # candidate thresholds, highest first
    tp = np.array([np.sum(y & (s >= v)) for v in values])
    fp = np.array([np.sum(~y & (s >= v)) for v in values])
    prec = np.where(tp > 0, tp / np.maximum(tp + fp, 1), 0.0)
    ok = np.flatnonzero(prec >= precision - 1e-12)
    best = float(prec.max()) if len(prec) else 0.0
    if not len(ok):
        return None, 0.0, 0.0, best
    i = ok[-1]  # the lowest threshold that still reaches it: the most recall
    return float(values[i]), float(prec[i]), float(tp[i] / max(y.sum(), 1)), best


def calibrate(scores: np.ndarray, y: np.ndarray) -> tuple[str, tuple[float, float] | None, str]:
    """(kind, (a, c) or None, note): Platt scaling of the reviewed scores when the labels support it, else "rank"
    and why (head.py's rules: at least MIN_PLATT of each class, and :func:`_platt_unsupported`)."""
    s, y = np.asarray(scores, np.float64), np.asarray(y, np.float64)
    pos, neg = int(y.sum()), int(len(y) - y.sum())
    if min(pos, neg) < MIN_PLATT:
        return (
            "rank",
            None,
            (
                f"too few reviewed windows to calibrate ({pos} positive, {neg} negative; calibration "
                f"needs {MIN_PLATT} of each)"
            ),
        )
    a, c = _platt(s, y)
    note = _platt_unsupported(s, y, a, c)
    # head.py words its reasons for a head's out-of-fold scores; these are the reviewed windows' own scores
    note = note.replace("cross-validated scores", "reviewed windows' scores") if note else ""
    return ("rank", None, note) if note else ("platt", (a, c), "")


def head_digest(head: Head) -> str:
    """A digest of what a head's raw score depends on (direction, scale, bias, exemplars and knots)."""
    h = hashlib.sha256()
    for part in (
        head.u,
        np.array([head.scale, head.bias], np.float64),
        head.exemplars,
        head.cdf_linear,
        head.cdf_nearest,
    ):
        h.update(np.ascontiguousarray(part).tobytes())
    return h.hexdigest()[:16]


def target_threshold(session, target: str, precision: float, score: str | None = None) -> Threshold:
    """The :class:`Threshold` of ``target`` in ``session`` (see the module docstring); ``score`` None: the head's
    when it has been fitted, else the cosine with its seed. UsageError when there is nothing to rest it on."""
    if not 0.0 < precision <= 1.0:
        raise UsageError(f"--precision is a fraction in (0, 1], got {precision}")
    head = session.head(target)  # UsageError naming an unknown target
    fitted = head.calibration != "none"
    score = score or ("head" if fitted else "cosine")
    if score not in SCORES:
        raise UsageError(f"score is one of {', '.join(SCORES)}, got {score!r}")
    if score == "head":
        if not fitted:
            raise UsageError(
                f"target '{target}' has no fitted head: run `biolingual agile fit` first, or use --score cosine"
            )
        values, digest = session.raw_scores(target), head_digest(head)
    else:
        seed = session._seed(target)  # the zero-shot seed, whether or not a head has been fitted since
        if seed.scale == 0:
            raise UsageError(
                f"target '{target}' has no prompt or example to score windows by: give it one with "
                "`biolingual agile target`"
            )
        values, digest = seed.scores(session.index.embeddings) / seed.scale, ""
    labels = session.labels.labels(target)
    rows = np.array([r for r, v in labels.items() if v in ("positive", "negative")], np.int64)
    y = np.array([labels[int(r)] == "positive" for r in rows], bool)
    pos, neg = int(y.sum()), int(len(y) - y.sum())
    if pos == 0 or neg == 0:
        raise UsageError(
            f"target '{target}' has {pos} positive and {neg} negative reviewed windows; a threshold for a "
            "precision needs both (label windows, or import a Raven table with --negatives-rest)"
        )
    s = np.asarray(values, np.float64)[rows]
    t, reached, recall, best = precision_threshold(s, y, precision)
    if t is None:
        raise UsageError(
            f"no threshold reaches precision {precision:g} on the {len(rows)} reviewed windows of '{target}' "
            f"({pos} positive, {neg} negative; the best precision is {best:.3f}): ask for less, or review more"
        )
    kind, platt, note = calibrate(s, y)
    return Threshold(
        target=target,
        score=score,
        threshold=t,
        precision_wanted=precision,
        precision=reached,
        recall=recall,
        reviewed=len(rows),
        positives=pos,
        negatives=neg,
        index_share=float(np.mean(np.asarray(values) >= t)),
        calibration=kind,
        platt=platt,
        probability=float(_sigmoid(np.array(platt[0] * t + platt[1]))) if platt else None,
        head_digest=digest,
        note=note,
    )


def write_thresholds(path: str | os.PathLike, thresholds: list[Threshold]) -> Path:
    """Write ``thresholds`` into the CSV at ``path`` (atomically), replacing the rows of their targets and keeping
    the others' rows."""
    rows = {r["target"]: r for r in read_rows(path)} if Path(path).is_file() else {}
    for t in thresholds:
        rows[t.target] = t.row()
    buf = io.StringIO()
    w = csv.DictWriter(buf, COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows.values())
    return atomic_write_text(path, buf.getvalue())


def read_rows(path: str | os.PathLike) -> list[dict]:
    """The rows of a thresholds CSV, checked: UsageError naming the file and line of a missing column or a
    threshold that is not a number."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in ("target", "score", "threshold") if c not in (reader.fieldnames or [])]
            if missing:
                raise UsageError(
                    f"'{path}' is not a thresholds file (written by `biolingual agile threshold --out`): "
                    f"no {', '.join(missing)} column"
                )
            rows = list(reader)
    except FileNotFoundError:
        raise UsageError(f"thresholds file not found: '{path}'") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise UsageError(f"'{path}' is not a thresholds CSV: {e}") from None
    for number, row in enumerate(rows, 2):
        try:
            value = float(row["threshold"])
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value) or row["score"] not in SCORES:
            raise UsageError(
                f"'{path}', line {number}: threshold {row['threshold']!r} of score {row['score']!r} is not a "
                f"number on one of the scores {', '.join(SCORES)}"
            )
    return rows


def read_thresholds(path: str | os.PathLike) -> dict[str, dict]:
    """{target: row} of a thresholds CSV (see :func:`read_rows`)."""
    return {r["target"]: r for r in read_rows(path)}


def head_thresholds(path: str | os.PathLike, heads: list[Head]) -> dict[str, float]:
    """{target: raw-score threshold} for the heads that have a ``head`` row in the file at ``path``; UsageError when
    a row is a ``cosine`` one or was set on another fit of the head."""
    rows = read_thresholds(path)
    out = {}
    for h in heads:
        row = rows.get(h.target)
        if row is None:
            continue
        if row["score"] != "head":
            raise UsageError(
                f"'{path}': the threshold of '{h.target}' is on the zero-shot cosine, not on its head's "
                "score: set it with `biolingual agile threshold ... --score head` after `agile fit`"
            )
        if row.get("head_digest") and row["head_digest"] != head_digest(h):
            raise UsageError(
                f"'{path}': the threshold of '{h.target}' was set on another fit of its head than "
                f"'{h.source}': run `biolingual agile threshold` again for this head"
            )
        out[h.target] = float(row["threshold"])
    return out


def detect_heads_thresholded(
    index,
    heads: list[Head],
    thresholds: dict[str, float],
    threshold: float = 0.5,
    gap_s: float = 0.0,
    max_call_s: float | None = DEFAULT_MAX_CALL_S,
    merge: bool = True,
):
    """:func:`biolingual.search.detect.detect_heads` with a raw-score threshold per target where ``thresholds`` has
    one (the rest: probability at or above ``threshold``); events scored by their best probability as there."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold is a probability between 0 and 1, got {threshold}")
    names = [h.target for h in heads]
    if len(set(names)) != len(names):
        raise ValueError(f"two heads are for the same target: {sorted(n for n in set(names) if names.count(n) > 1)}")
    probs = head_probabilities(index, heads)
    raw = score_rows(index.embeddings, list(heads)) if thresholds else None
    keep = np.stack(
        [
            raw[:, j] >= thresholds[h.target] if h.target in thresholds else probs[:, j] >= threshold
            for j, h in enumerate(heads)
        ],
        axis=1,
    )
    return events_from_probabilities(
        index, np.where(keep, probs, -1.0), names, 0.0, gap_s, max_call_s, merge
    )  # -1: below every cut
