"""What the review page says about a window: where and when it was recorded, and scores a reviewer can read.

In: the index's recording paths (:func:`display_names`), a recording's site and start time with a window's
offset (:func:`site_and_clock`), or a session, a target and window rows (:func:`window_scores`). Out: names
relative to the folder that holds every recording, the site and clock time of a window (``SITE-A · 2024-05-12
05:03:20``), and per window its rank among all windows of the index, the cosine of its embedding with the
head's direction and, once a fitted head is calibrated, its probability.

Why the site and clock time first: that is how an ecologist knows a recording (which recorder, which night,
which hour), and recorder file names differ only in a few digits. Where the start time is not known (no
deployments table giving the recorder's timezone), the card shows the recording's name instead.

Why not the probability alone: a head fitted on a few labels gives most of the top windows 0.99 or more
(saturated), so the card shows where the window stands (``#3 of 14,380``) and the cosine, which does not
saturate, beside it. Before any fit the head is the seed (prompt and/or example), so the cosine is the
zero-shot similarity to the prompt.
"""

from __future__ import annotations

import os
import posixpath

import numpy as np

from ..deployments import RecordingInfo
from ..search.query import cosines

PROBABILITIES = ("platt", "isotonic", "logistic")  # calibrations whose scores are probabilities ("rank" is a quantile)


def display_names(files: list[str]) -> list[str]:
    """Recording paths -> the names the page shows: relative to the deepest folder holding all of them (an
    archive's ``SITE-A/SITE-A_20240512_050000.WAV``), never cut. Paths stored relative already are shown as
    stored; a single recording by its file name."""
    if not files:
        return []
    paths = [os.fspath(f) for f in files]
    if not all(os.path.isabs(p) for p in paths):
        return [p.replace(os.sep, "/") for p in paths]
    root = os.path.commonpath([os.path.dirname(p) for p in paths])
    return [os.path.relpath(p, root).replace(os.sep, "/") for p in paths]


def site_and_clock(info: RecordingInfo | None, offset: float) -> str | None:
    """``SITE-A · 2024-05-12 05:03:20``: the recording's site and the clock time ``offset`` seconds into it, in the
    recording's own timezone (the hour its recorder's site lived by), or the clock time alone for a recording
    with no site; None when its start time is not known."""
    clock = info.at(offset) if info is not None else None
    if clock is None:
        return None
    return " · ".join(part for part in (info.site, clock.strftime("%Y-%m-%d %H:%M:%S")) if part)


def split_name(name: str, tail: int = 24) -> tuple[str, str]:
    """A name -> (head, tail) for a middle ellipsis: the page lets the head shrink behind an ellipsis and always
    shows the tail, where recorder files differ (the date and hour before the extension). The tail is the
    file name when that is short, else its last ``tail`` characters."""
    base = posixpath.basename(name)
    cut = len(name) - (len(base) if len(base) <= tail else tail)
    return name[:cut], name[cut:]


def window_scores(session, target: str, rows) -> dict[int, dict]:
    """Per window row: ``rank`` (1 = the head's best window, ties share the better rank), ``of`` (windows in
    the index), ``cosine`` (with the head's direction: the prompt's before a fit) and ``probability`` (None
    unless the head is calibrated to probabilities) with the head's ``calibration``."""
    head = session.head(target)
    raw = session.raw_scores(target)
    rows = [int(r) for r in rows]
    if not rows:
        return {}
    mine = raw[rows]
    # one pass over the index per window: 16 cards of a 1M-window index is ~20 ms, and no sort of it is kept
    ranks = [int(np.count_nonzero(raw > value)) + 1 for value in mine]
    # the cosine with the head's direction itself, not read back from the raw score: once there are enough labels
    # the raw score also holds the nearest-positive part (biolingual.agile.head), which is not a cosine
    if head.scale and np.any(head.u):
        cosine = cosines(session.index.embeddings[sorted(set(rows))], head.u[None].astype(np.float32))[0]
        cosine = dict(zip(sorted(set(rows)), cosine.tolist()))
        cosine = [cosine[r] for r in rows]
    else:  # a target with neither prompt nor example: no direction yet
        cosine = [0.0] * len(rows)
    probability = head.calibrate(mine) if head.calibration in PROBABILITIES else None
    return {
        row: {
            "rank": ranks[i],
            "of": len(raw),
            "cosine": round(float(cosine[i]), 4),
            "probability": None if probability is None else round(float(probability[i]), 4),
            "calibration": head.calibration,
        }
        for i, row in enumerate(rows)
    }
