"""Agile labels in and out of perch-hoplite databases, with the index they label (:mod:`biolingual.search.hoplite`).

Out (:func:`export_hoplite`): the index folder as a new hoplite database, with the current label of every labelled
window (:class:`~.labels.LabelStore`) as an annotation of that window's stretch of its recording: the target is the
label, positive / negative / unsure are hoplite's POSITIVE / NEGATIVE / UNCERTAIN, and the provenance says where
the label came from (``biolingual agile: page``, ``... : cli``, ``... : raven``). Undone and superseded labels stay
in our history only.

In (:func:`import_hoplite`): the database's windows into the index (the model must be the database's), then its
annotations as labels. An annotation whose offsets are a window's labels that window alone (hoplite's agile tools
annotate windows); any other (a box from a ground-truth table) labels the windows it overlaps by at least
``min_overlap`` of the shorter of the two, the rule of Raven imports (:func:`.raven.overlap_share`). Where several
annotations give one window a label of the same target, the last (by the database's id) wins, as a newer label
does here. The label's source is the annotation's provenance (``hoplite: <provenance>``; our own exports'
``biolingual agile: <source>`` comes back as ``<source>``); a window already carrying that value is left alone,
so importing again adds nothing.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..search.hoplite import ExportReport, ImportReport, WindowAnnotation, export_index, import_database
from ..search.index import load_index, read_meta
from ..search.recordings import remember_recordings
from .labels import LabelStore
from .raven import overlap_share

log = logging.getLogger(__name__)

PROVENANCE = "biolingual agile: "  # the provenance our labels carry in a hoplite database, before their source


def labels_as_annotations(store: LabelStore) -> list[WindowAnnotation]:
    """The current label of every labelled window of every target, as annotations of the window's stretch."""
    out = []
    for target in store.targets():
        for lab in store.current(target.name):
            if lab.recording is None:  # a label from before labels kept their window's recording and times
                log.warning(
                    "label %d of '%s' (row %d) left out: it does not say its recording", lab.id, target.name, lab.row
                )
                continue
            out.append(
                WindowAnnotation(lab.recording, lab.start, lab.end, target.name, lab.value, PROVENANCE + lab.source)
            )
    return out


def export_hoplite(index_dir: str | os.PathLike, db_dir: str | os.PathLike, project: str | None = None) -> ExportReport:
    """The index ``index_dir`` and its labels as a new perch-hoplite database in ``db_dir``."""
    read_meta(index_dir)  # a folder that is no index is refused before the label store would create agile/ in it
    store = LabelStore(index_dir)
    try:
        annotations = labels_as_annotations(store)
    finally:
        store.close()
    return export_index(index_dir, db_dir, annotations, project)


def _source(provenance: str) -> str:
    if provenance.startswith(PROVENANCE):
        return provenance[len(PROVENANCE) :] or "hoplite"
    return f"hoplite: {provenance}"


def annotations_as_labels(store: LabelStore, index, annotations, min_overlap: float = 0.5) -> dict:
    """Label the windows of ``index`` from hoplite ``annotations`` (see the module docstring). Returns counts:
    annotations, labels (written), unmatched (annotations that label no window, each logged)."""
    if not 0.0 < min_overlap <= 1.0:
        raise UsageError(f"--min-overlap is a fraction in (0, 1], got {min_overlap}")
    file_id = {f: i for i, f in enumerate(index.files)}
    by_file = np.argsort(index.file_ids, kind="stable")  # each recording's rows together, found by bisection
    edges = np.searchsorted(index.file_ids[by_file], np.arange(len(index.files) + 1))
    decided: dict[tuple[str, int], tuple[str, str]] = {}  # (target, row) -> (value, source); later ones win
    unmatched = 0
    for a in annotations:
        f = file_id.get(a.recording)
        rows = by_file[edges[f] : edges[f + 1]] if f is not None else np.array([], np.int64)
        starts, ends = index.starts[rows], index.ends[rows]
        exact = (np.abs(starts - a.start) < 1e-6) & (np.abs(ends - a.end) < 1e-6)
        chosen = rows[exact] if exact.any() else rows[overlap_share(starts, ends, a.start, a.end) >= min_overlap - 1e-9]
        if not len(chosen):
            unmatched += 1
            log.warning(
                "annotation '%s' of %s %.3f-%.3f s labels no window of the index", a.label, a.recording, a.start, a.end
            )
        for row in chosen:
            decided[(a.label, int(row))] = (a.value, _source(a.provenance))
    targets = {t.name for t in store.targets()}
    groups: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for (target, row), (value, source) in decided.items():
        if target not in targets:
            store.add_target(target)  # labels alone (no prompt or example) are a target too
            targets.add(target)
        groups.setdefault((target, source), []).append((row, value))
    written = 0
    for (target, source), items in groups.items():
        current = store.labels(target)
        items = [(row, value) for row, value in items if current.get(row) != value]
        if items:
            store.label_many(target, items, source=source)
            written += len(items)
    return {"annotations": len(annotations), "labels": written, "unmatched": unmatched}


def import_hoplite(
    db_dir: str | os.PathLike,
    index_dir: str | os.PathLike,
    model,
    audio_root: str | os.PathLike | None = None,
    min_overlap: float = 0.5,
) -> tuple[ImportReport, dict]:
    """The perch-hoplite database ``db_dir`` into the index ``index_dir`` with ``model`` (the database's), its
    deployments and datetimes as the recordings' sites and clock times, and its annotations as labels. Returns the
    import's report and the labels' counts (:func:`annotations_as_labels`)."""
    report = import_database(db_dir, index_dir, model, audio_root)
    index = load_index(index_dir)
    if report.recordings:
        remember_recordings(index_dir, index.files, report.recordings)
    store = LabelStore(Path(index_dir), index=index)
    try:
        store.remap(index)  # the index may have grown: labels given before follow their windows
        counts = annotations_as_labels(store, index, report.annotations, min_overlap)
    finally:
        store.close()
    return report, counts
