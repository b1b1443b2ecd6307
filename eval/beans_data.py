"""Reading BEANS tasks from the on-disk layout BEANS' download scripts produce.

Classification: ``annotations.{train,valid,test}.csv`` (an unnamed index column, ``path``, ``label``,
sometimes extra columns). Detection: ``{train,valid,test}.jsonl``, one 60 s chunk per line with
``path``, ``length`` (s) and ``annotations`` ``[{st, ed, label}]`` in seconds local to the chunk.
Paths inside those files are relative to the BEANS checkout root.

Every example becomes a :class:`Segment` (a file and the part of it to embed) plus a target: a class
id (classification) or a multi-hot row (detection, windowed and labelled exactly as BEANS'
``RecognitionDataset``). Bad rows are reported with file and row and skipped; the rest is kept.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from .labelled_csv import read_rows
from .tasks import CLASSIFICATION, Task
from .types import Segment, Split, TaskDataError

log = logging.getLogger(__name__)


def find_split_file(root: Path, task: Task, split: str) -> Path:
    """The split file of a task under ``root``: the BEANS checkout root or its ``data/`` folder."""
    rel = task.splits[split]
    candidates = [root / rel, root / rel.removeprefix("data/")]
    for c in candidates:
        if c.is_file():
            return c
    folder = Path(rel).parts[1]  # the task's own folder under data/
    if not (root / "data" / folder).is_dir() and not (root / folder).is_dir():
        raise TaskDataError(f"task '{task.name}': folder '{folder}' not found under --beans-root '{root}'")
    raise TaskDataError(
        f"task '{task.name}': split file '{rel}' not found under '{root}' (looked for {candidates[0]} and "
        f"{candidates[1]})"
    )


def resolve_audio(root: Path, split_file: Path, path: str) -> Path | None:
    """An audio path from a split file -> the existing file (BEANS writes them relative to its root)."""
    p = Path(path)
    if p.is_absolute():
        return p if p.is_file() else None
    for base in (root, root.parent, split_file.parent):
        for candidate in (base / p, base / Path(path.removeprefix("data/"))):
            if candidate.is_file():
                return candidate
    return None


def _label_id(task: Task, label, label_to_id: dict[str, int]) -> int | None:
    key = str(label).strip()
    if key not in label_to_id and task.unknown_label is not None:
        key = task.unknown_label
    return label_to_id.get(key)


def read_split(root: str | Path, task: Task, split: str) -> Split:
    """Read one split of a task; raise :class:`TaskDataError` when it is missing or has no usable example."""
    root = Path(root)
    file = find_split_file(root, task, split)
    reader = _read_classification if task.type == CLASSIFICATION else _read_detection
    out = reader(root, task, split, file)
    for p in out.problems:
        log.warning(p)
    if not out.segments:
        raise TaskDataError(
            f"task '{task.name}': split file '{file}' has no usable example"
            + (f" ({len(out.problems)} rows rejected, first: {out.problems[0]})" if out.problems else "")
        )
    return out


def _read_classification(root: Path, task: Task, split: str, file: Path) -> Split:
    label_to_id = {label: i for i, label in enumerate(task.labels)}
    segments, targets, rows, problems = [], [], [], []
    for row_no, row in read_rows(file, TaskDataError):
        where = f"'{file}' row {row_no}"
        audio = resolve_audio(root, file, row["path"] or "")
        label_id = _label_id(task, row["label"], label_to_id)
        if audio is None:
            problems.append(f"{where}: audio file '{row['path']}' not found; row skipped")
        elif label_id is None:
            problems.append(f"{where}: label '{row['label']}' is not one of task '{task.name}''s labels; row skipped")
        else:
            segments.append(Segment(str(audio), 0.0, float(task.max_duration), float(task.max_duration)))
            targets.append(label_id)
            rows.append(row_no)
    return Split(split, file, segments, np.asarray(targets, dtype=np.int64), rows, problems)


def window_targets(task: Task, length: float, annotations: list[dict], label_to_id: dict[str, int]):
    """BEANS' windows of one chunk and their multi-hot targets (``RecognitionDataset``).

    ``int((length - width) / shift) + 1`` windows, window k = [k*shift, k*shift + width]. A window
    gets label l when an annotation's start or end falls inside it and the overlap divided by
    min(window, annotation length) exceeds 0.2 (zero-length annotations skipped), or when the
    annotation covers the whole window.
    """
    width, shift = task.window_width, task.window_shift
    n = int((length - width) / shift) + 1
    windows, ys = [], np.zeros((max(n, 0), task.num_labels), dtype=np.float32)
    for k in range(max(n, 0)):
        st, ed = k * shift, k * shift + width
        windows.append((st, ed))
        for a in annotations:
            label = label_to_id[a["label"]]
            if st <= a["st"] <= ed or st <= a["ed"] <= ed:
                denom = min(ed - st, a["ed"] - a["st"])
                if denom != 0 and (min(ed, a["ed"]) - max(st, a["st"])) / denom > 0.2:
                    ys[k, label] = 1
            if a["st"] <= st and ed <= a["ed"]:
                ys[k, label] = 1
    return windows, ys


def _read_detection(root: Path, task: Task, split: str, file: Path) -> Split:
    label_to_id = {label: i for i, label in enumerate(task.labels)}
    segments, targets, rows, problems = [], [], [], []
    with open(file) as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"'{file}' line {line_no}"
            try:
                chunk = json.loads(line)
                length, path = float(chunk["length"]), str(chunk["path"])
                annotations = []
                for a in chunk.get("annotations", []):
                    label_id = _label_id(task, a["label"], label_to_id)
                    if label_id is None:
                        raise ValueError(f"label '{a['label']}' is not one of task '{task.name}''s labels")
                    annotations.append({"st": float(a["st"]), "ed": float(a["ed"]), "label": task.labels[label_id]})
            except (ValueError, KeyError, TypeError) as e:
                problems.append(f"{where}: {e if not isinstance(e, KeyError) else f'no field {e}'}; line skipped")
                continue
            audio = resolve_audio(root, file, path)
            if audio is None:
                problems.append(f"{where}: audio file '{path}' not found; line skipped")
                continue
            windows, ys = window_targets(task, length, annotations, label_to_id)
            segments += [Segment(str(audio), st, ed, float(task.window_width)) for st, ed in windows]
            targets.append(ys)
            rows += [line_no] * len(windows)
    y = np.concatenate(targets) if targets else np.zeros((0, task.num_labels), dtype=np.float32)
    return Split(split, file, segments, y, rows, problems)


def unseen_label_problems(train: Split, test: Split, task: Task) -> list[str]:
    """One message per test row whose class never occurs in the training split."""
    if task.type == CLASSIFICATION:
        seen = set(train.targets.tolist())
        return [
            f"'{test.file}' row {row}: label '{task.labels[y]}' does not occur in the training split '{train.file}'"
            for y, row in zip(test.targets.tolist(), test.rows)
            if y not in seen
        ]
    seen_cols = train.targets.sum(0) > 0
    lines = sorted({test.rows[i] for i in np.nonzero(test.targets[:, ~seen_cols].sum(1) > 0)[0]})
    unseen = [task.labels[c] for c in np.nonzero(~seen_cols & (test.targets.sum(0) > 0))[0]]
    return [
        f"'{test.file}' line {line}: windows labelled with {unseen} (labels that never occur in '{train.file}')"
        for line in lines
    ]
