"""Labels in and out as tables: Raven selection tables to labels, labels to CSV and Raven tables.

In (:func:`import_raven`): a :class:`~biolingual.agile.labels.LabelStore`, the index
(:class:`~biolingual.search.index.IndexData`) and a Raven Pro selection table (tab-separated; times in
``Begin Time (s)``/``End Time (s)``, or within the file in ``File Offset (s)``; the recording in
``Begin Path`` or ``Begin File``, or given as ``recording``). Out: positive labels for the windows that
overlap an annotated box, optionally negative labels for the rest of each annotated recording, and the counts.

Overlap rule: a window becomes positive when its overlap with a box is at least ``min_overlap`` times the
shorter of the two, the window or the box. For boxes as long as a window or longer this is the fraction
of the window; a call shorter than the window counts when that share of the call lies in it (otherwise a
1 s call could never make a 10 s window positive). Windows that touch a box less than that are left
unlabelled (ambiguous); with ``negatives_rest`` the windows of annotated recordings that touch no box
become negatives, except rows that already have a label of that target.

Out (:func:`export_labels_csv`, :func:`export_labels_raven`): the current labels as CSV (every target or
one), and the positive windows of a target as a Raven selection table with the target in ``Annotation``
(written by :func:`biolingual.search.export.write_raven`).
"""

from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_text
from ..errors import UsageError
from ..search.export import read_raven, write_raven
from ..search.query import Hit

log = logging.getLogger(__name__)

LABEL_COLUMNS = ("Annotation", "Species", "Label", "Class", "Query")  # where tables in the wild put the label


def recording_lookup(files: list[str]):
    by_path = {os.path.abspath(f): i for i, f in enumerate(files)}
    by_name: dict[str, list[int]] = {}
    for i, f in enumerate(files):
        by_name.setdefault(os.path.basename(f), []).append(i)

    def find(path: str | None, name: str | None) -> int | None:
        if path and os.path.abspath(path) in by_path:
            return by_path[os.path.abspath(path)]
        for candidate in (name, os.path.basename(path) if path else None):
            if candidate and len(by_name.get(candidate, [])) == 1:  # a name shared by two recordings is ambiguous
                return by_name[candidate][0]
        return None

    return find


def overlap_share(starts: np.ndarray, ends: np.ndarray, begin: float, end: float) -> np.ndarray:
    """How much of each window [starts, ends] overlaps the box [begin, end], as a share of the shorter of the two
    (the module docstring's rule: a window is labelled where this is at least ``min_overlap``)."""
    overlap = np.clip(np.minimum(ends, end) - np.maximum(starts, begin), 0.0, None)
    return overlap / np.maximum(np.minimum(ends - starts, end - begin), 1e-9)


def _float(row: dict, column: str, table, number: int) -> float:
    try:
        return float(row[column])
    except (KeyError, TypeError, ValueError):
        raise UsageError(
            f"'{table}', selection on line {number + 1}: '{column}' is {row.get(column)!r}, not a number of seconds"
        ) from None


def read_boxes(
    table: str | os.PathLike, files: list[str], recording: str | None = None, annotation: str | None = None
) -> tuple[dict[int, list[tuple[float, float]]], list[str]]:
    """({file id: [(start, end) seconds within the file]}, problems) of a selection table's boxes. With
    ``annotation``, only boxes whose label column (Annotation, Species, ...) equals it."""
    table = Path(table)
    if not table.is_file():
        raise UsageError(f"Raven table not found: '{table}'")
    try:
        rows = read_raven(table)
    except (UnicodeDecodeError, csv.Error) as e:
        raise UsageError(f"'{table}' is not a Raven selection table (tab-separated text): {e}") from None
    if rows and not {"Begin Time (s)", "End Time (s)"} <= set(rows[0]):
        raise UsageError(
            f"'{table}' has no 'Begin Time (s)' and 'End Time (s)' columns; is it a Raven selection table? "
            f"(columns: {', '.join(rows[0])})"
        )
    find = recording_lookup(files)
    fixed = None
    if recording is not None:
        fixed = find(recording, os.path.basename(recording))
        if fixed is None:
            raise UsageError(f"recording '{recording}' is not in the index")
    boxes: dict[int, list[tuple[float, float]]] = {}
    problems = []
    for number, row in enumerate(rows, 1):
        if row.get("View", "Spectrogram 1").startswith("Waveform"):
            continue  # Raven lists each selection once per view; the waveform copy repeats the spectrogram one
        if annotation is not None:
            label = next((row[c] for c in LABEL_COLUMNS if row.get(c) not in (None, "")), None)
            if label != annotation:
                continue
        begin, end = _float(row, "Begin Time (s)", table, number), _float(row, "End Time (s)", table, number)
        if row.get("File Offset (s)") not in (None, ""):
            begin, end = (
                _float(row, "File Offset (s)", table, number),
                _float(row, "File Offset (s)", table, number) + end - begin,
            )
        f = fixed if fixed is not None else find(row.get("Begin Path"), row.get("Begin File"))
        if f is None:
            problems.append(
                f"line {number + 1}: recording {row.get('Begin Path') or row.get('Begin File')!r} is not in the index"
            )
            continue
        if end <= begin:
            problems.append(f"line {number + 1}: end {end} s is not after begin {begin} s")
            continue
        boxes.setdefault(f, []).append((begin, end))
    return boxes, problems


def import_raven(
    store,
    index,
    table_path: str | os.PathLike,
    target: str,
    min_overlap: float = 0.5,
    negatives_rest: bool = False,
    recording: str | None = None,
    annotation: str | None = None,
) -> dict:
    """Label windows of ``index`` from a Raven selection table (see the module docstring); one transaction.
    Returns counts: positive, negative (labels written), boxes, unmatched (selections skipped, each logged)."""
    if not 0.0 < min_overlap <= 1.0:
        raise UsageError(f"--min-overlap is a fraction in (0, 1], got {min_overlap}")
    boxes, problems = read_boxes(table_path, index.files, recording, annotation)
    for p in problems:
        log.warning("%s: %s", table_path, p)
    labelled = store.labels(target) if negatives_rest else {}
    items = []
    for f, spans in boxes.items():
        rows = np.flatnonzero(index.file_ids == f)
        a, b = index.starts[rows], index.ends[rows]
        best = np.zeros(len(rows))
        touched = np.zeros(len(rows), bool)
        for begin, end in spans:
            share = overlap_share(a, b, begin, end)
            best = np.maximum(best, share)
            touched |= share > 0
        items += [(int(r), "positive") for r in rows[best >= min_overlap - 1e-9]]
        if negatives_rest:
            items += [(int(r), "negative") for r in rows[~touched] if int(r) not in labelled]
    if items:
        store.label_many(target, items, source="raven")
    return {
        "positive": sum(v == "positive" for _, v in items),
        "negative": sum(v == "negative" for _, v in items),
        "boxes": sum(len(s) for s in boxes.values()),
        "unmatched": len(problems),
    }


def export_labels_csv(store, path: str | os.PathLike, target: str | None = None) -> int:
    """The current labels (of ``target``, or of every target) as CSV; returns the number of rows written."""
    names = [target] if target is not None else [t.name for t in store.targets()]
    if target is not None:
        store.target(target)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["target", "row", "recording", "start_s", "end_s", "value", "source", "label_id"])
    n = 0
    for name in names:
        for lab in store.current(name):
            w.writerow(
                [name, lab.row, lab.recording, f"{lab.start:.3f}", f"{lab.end:.3f}", lab.value, lab.source, lab.id]
            )
            n += 1
    atomic_write_text(path, buf.getvalue())
    return n


def export_labels_raven(
    store,
    path: str | os.PathLike,
    target: str,
    recordings: list[str] | None = None,
    known: dict[str, float] | None = None,
) -> int:
    """The positive windows of ``target`` as a Raven selection table (``Annotation`` = the target) over the file
    sequence of ``recordings`` (default: those with positives; see :func:`biolingual.search.export.write_raven`);
    returns the number of selections."""
    store.target(target)
    hits = [
        Hit(lab.recording, lab.start, lab.end, 1.0, target) for lab in store.current(target) if lab.value == "positive"
    ]
    hits.sort(key=lambda h: (h.file, h.start))
    write_raven(hits, path, recordings, known)
    return len(hits)
