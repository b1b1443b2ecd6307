"""Reading a BirdSet config (HSN, NBP, ... or the XCM/XCL train sets) from a local copy, in the formats
Hugging Face publishes it: a ``save_to_disk`` folder (per split: ``data-*.arrow`` in Arrow's stream
format, ``dataset_info.json``, ``state.json``) or parquet files (``SPLIT/*.parquet``, ``SPLIT-*.parquet``
or ``data/SPLIT-*.parquet``, the features in the schema's ``huggingface`` metadata). Read with pyarrow,
not the ``datasets`` package.

In: the config folder and a split name. Out: a :class:`~eval.beans_data.Split` of 5 s
:class:`~eval.beans_data.Segment` windows with multi-hot targets over the config's classes (the
ClassLabel names of ``ebird_code``, in class-id order), as BirdSet's multi-label protocol builds them:

- ``test_5s``: one window per row, [start_time, end_time) of ``filepath`` (the published rows are
  pre-cut 5 s files with 0 / 5), clamped to 1..5 s and zero-padded to 5 s as BirdSet's
  ``EventDecoding`` loads them; targets from ``ebird_code_multilabel`` (an empty list: no bird).
- ``train``: BirdSet's ``XCEventMapping``: per recording, the events of its biggest
  ``event_cluster`` (the noise cluster -1 dropped unless it is the only one), one window per event,
  or [0, 5) when none was detected; then at most ``events_per_recording`` windows per recording and
  ``class_limit`` per class (a deterministic simplification of BirdSet's ``_smart_sampling``, which
  samples at random). BirdSet cuts a random 5 s out of the event extended to 6 s; we take the 5 s
  centred on the event, its expected position, so embeddings can be cached.

Rows that cannot be used (audio missing, a label outside the class list) are reported with the split
file and row, and skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from biolingual.extras import require

from ..types import Segment, Split, TaskDataError

log = logging.getLogger(__name__)
WINDOW_S = 5.0  # BirdSet's test_5s windows and its training crops (EventDecoding extracted_interval)
MIN_S = 1.0  # EventDecoding min_len: shorter spans are extended to 1 s
EVENTS_PER_RECORDING = 5  # BirdSet's eventlimit (configs/datamodule/*.yaml)
CLASS_LIMIT = 500  # BirdSet's classlimit
COLUMNS = (
    "audio",
    "filepath",
    "start_time",
    "end_time",
    "ebird_code",
    "ebird_code_multilabel",
    "detected_events",
    "event_cluster",
)


def _pa():
    return require("pyarrow", "eval", "reading BirdSet's Arrow/parquet files")


def split_files(folder: Path, split: str) -> list[Path]:
    """The Arrow or parquet files of ``split`` under a config ``folder``, in their order."""
    d = folder / split
    if d.is_dir():
        state = d / "state.json"
        if state.is_file():  # save_to_disk lists its shards in order
            names = [f["filename"] for f in json.loads(state.read_text()).get("_data_files", [])]
            if names:
                return [d / n for n in names]
        found = sorted(d.glob("*.arrow")) or sorted(d.glob("*.parquet"))
        if found:
            return found
    found = sorted(folder.glob(f"{split}-*.parquet")) or sorted(folder.glob(f"data/{split}-*.parquet"))
    if found:
        return found
    raise TaskDataError(
        f"split '{split}' not found under '{folder}': looked for {d}/ (save_to_disk Arrow or "
        f"parquet files), {folder}/{split}-*.parquet and {folder}/data/{split}-*.parquet"
    )


def read_table(files: list[Path]):
    """One pyarrow Table from a split's files (Arrow IPC stream, Arrow IPC file, or parquet)."""
    pa = _pa()
    tables = []
    for f in files:
        try:
            if f.suffix == ".parquet":
                tables.append(require("pyarrow.parquet", "eval", "reading BirdSet's parquet files").read_table(f))
                continue
            with pa.memory_map(str(f)) as source:
                try:
                    tables.append(pa.ipc.open_stream(source).read_all())  # what datasets' save_to_disk writes
                except pa.ArrowInvalid:
                    source.seek(0)
                    tables.append(pa.ipc.open_file(source).read_all())
        except (OSError, pa.ArrowException) as e:
            raise TaskDataError(f"'{f}' is not a readable Arrow/parquet file: {e}") from None
    return pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]


def _features(files: list[Path], table) -> dict:
    """The split's Hugging Face features: dataset_info.json beside the files, else the schema metadata."""
    info = files[0].parent / "dataset_info.json"
    if info.is_file():
        features = json.loads(info.read_text()).get("features")
        if features:
            return features
    meta = (table.schema.metadata or {}).get(b"huggingface")
    if meta:
        return json.loads(meta).get("info", {}).get("features", {})
    return {}


def _names(feature) -> list[str] | None:
    """The ClassLabel names inside a feature (a ClassLabel, or a Sequence/List of one)."""
    if isinstance(feature, dict):
        if feature.get("_type") == "ClassLabel" and "names" in feature:
            return [str(n) for n in feature["names"]]
        for key in ("feature", "dtype"):
            found = _names(feature.get(key))
            if found:
                return found
    if isinstance(feature, list) and feature:
        return _names(feature[0])
    return None


def class_names(folder: Path, split: str) -> list[str]:
    """The config's classes (eBird codes) in class-id order: the ClassLabel names of ``ebird_code``."""
    files = split_files(folder, split)
    table = read_table(files[:1])
    features = _features(files, table)
    names = _names(features.get("ebird_code")) or _names(features.get("ebird_code_multilabel"))
    if not names:
        raise TaskDataError(
            f"'{files[0].parent}': no ClassLabel names for 'ebird_code' in dataset_info.json or the "
            "file's huggingface metadata; the class list cannot be known"
        )
    return names


class _Audio:
    """Finds a row's audio file; rows that carry the bytes themselves are written once under ``spill``."""

    def __init__(self, folder: Path, split_dir: Path, spill: Path):
        self.bases = [split_dir, folder, folder.parent]
        self.spill = spill

    def __call__(self, audio, filepath) -> str | None:
        paths = [audio.get("path") if isinstance(audio, dict) else audio, filepath]
        for p in paths:
            if not p:
                continue
            p = Path(p)
            for candidate in [p] if p.is_absolute() else [b / p for b in self.bases]:
                if candidate.is_file():
                    return str(candidate)
        data = audio.get("bytes") if isinstance(audio, dict) else None
        if data:
            # content-addressed, so a re-run finds the same file and the embedding cache hits
            name = hashlib.sha256(data).hexdigest()[:24] + (Path(str(paths[0] or paths[1] or "")).suffix or ".ogg")
            target = self.spill / name
            if not target.is_file():
                self.spill.mkdir(parents=True, exist_ok=True)
                tmp = target.with_suffix(target.suffix + ".part")
                tmp.write_bytes(data)
                tmp.replace(target)
            return str(target)
        return None


def _test_window(path: str, start, end) -> Segment:
    """BirdSet's EventDecoding for a test row: [start, end) when either is set (extended to 1 s, cut to
    5 s), else the first 5 s; always zero-padded to 5 s."""
    start, end = float(start or 0.0), float(end or 0.0)
    if not (start or end):
        return Segment(path, 0.0, WINDOW_S, WINDOW_S)
    end = max(end, start + MIN_S)
    return Segment(path, start, min(end, start + WINDOW_S), WINDOW_S)


def _event_windows(events, clusters) -> list[tuple[float, float]]:
    """XCEventMapping: the biggest cluster's events (noise -1 dropped unless alone) -> 5 s windows."""
    events = [tuple(map(float, e)) for e in (events or []) if e is not None and len(e) == 2]
    clusters = list(clusters or [])
    if len(clusters) == len(events) and events:
        if not (len(clusters) == 1 and clusters[0] == -1):
            keep = [i for i, c in enumerate(clusters) if c != -1]
            events, clusters = [events[i] for i in keep], [clusters[i] for i in keep]
        if events:
            values, counts = np.unique(clusters, return_counts=True)
            biggest = values[counts.argmax()]  # ties: the smallest cluster id, as np.unique sorts
            events = [e for e, c in zip(events, clusters) if c == biggest]
    if not events:
        return [(0.0, WINDOW_S)]
    out = []
    for st, ed in events:
        start = max(0.0, (st + ed) / 2 - WINDOW_S / 2)
        out.append((start, start + WINDOW_S))
    return out


def read_split(
    folder: Path,
    split: str,
    classes: list[str],
    spill: Path,
    events_per_recording: int = EVENTS_PER_RECORDING,
    class_limit: int = CLASS_LIMIT,
) -> Split:
    """Read one split of a config into 5 s windows and multi-hot targets over ``classes``.

    A split whose own class list differs from ``classes`` (an XCL train set for an HSN test set) is
    mapped by eBird code; labels outside ``classes`` are dropped, as BirdSet's class mask drops them.
    """
    files = split_files(folder, split)
    table = read_table(files)
    source = files[0].parent if files[0].parent.name == split else files[0]
    missing = [c for c in ("filepath", "ebird_code_multilabel") if c not in table.column_names]
    if missing:
        raise TaskDataError(
            f"'{source}': no column(s) {missing}; is this a BirdSet split? (columns: {', '.join(table.column_names)})"
        )
    own = _names(_features(files, table).get("ebird_code_multilabel")) or _names(
        _features(files, table).get("ebird_code")
    )
    if own is None:
        own = classes
    to_test = {i: classes.index(code) for i, code in enumerate(own) if code in classes}
    rows = table.select([c for c in COLUMNS if c in table.column_names]).to_pylist()
    find = _Audio(folder, source if source.is_dir() else source.parent, spill / split)
    segments, targets, row_ids, problems = [], [], [], []
    per_class: dict[int, int] = {}
    for i, row in enumerate(rows):
        where = f"'{source}' row {i}"
        path = find(row.get("audio"), row.get("filepath"))
        if path is None:
            problems.append(f"{where}: audio file '{row.get('filepath')}' not found; row skipped")
            continue
        labels = row.get("ebird_code_multilabel")
        if labels is None and row.get("ebird_code") is not None:
            labels = [row["ebird_code"]]
        bad = [x for x in labels or [] if not isinstance(x, int) or not 0 <= x < len(own)]
        if bad:
            problems.append(f"{where}: label id(s) {bad} outside the {len(own)} classes; row skipped")
            continue
        y = np.zeros(len(classes), dtype=np.float32)
        y[[to_test[x] for x in labels or [] if x in to_test]] = 1
        if split == "train":
            if not y.any():
                continue  # a recording of a species outside the test classes: masked out, not a problem
            primary = to_test.get(row.get("ebird_code"), int(np.argmax(y)))
            windows = _event_windows(row.get("detected_events"), row.get("event_cluster"))[:events_per_recording]
            room = class_limit - per_class.get(primary, 0)
            windows = windows[: max(room, 0)]
            per_class[primary] = per_class.get(primary, 0) + len(windows)
            new = [Segment(path, st, ed, WINDOW_S) for st, ed in windows]
        else:
            new = [_test_window(path, row.get("start_time"), row.get("end_time"))]
        segments += new
        targets += [y] * len(new)
        row_ids += [i] * len(new)
    for p in problems:
        log.warning(p)
    if not segments:
        raise TaskDataError(
            f"'{source}' has no usable row" + (f" ({len(problems)} skipped, first: {problems[0]})" if problems else "")
        )
    y = np.stack(targets) if targets else np.zeros((0, len(classes)), dtype=np.float32)
    return Split(split, source, segments, y, row_ids, problems)


def hold_out(train: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """Split the training windows into train and validation by recording (all windows of a recording on
    one side), ``fraction`` of the recordings to validation; BirdSet holds out 20 % (val_split 0.2)."""
    recordings = sorted({s.path for s in train.segments})
    if len(recordings) < 2:
        raise TaskDataError(f"'{train.file}': {len(recordings)} recording(s) cannot be split into train and validation")
    order = np.random.default_rng(seed).permutation(len(recordings))
    n_valid = min(max(1, int(round(fraction * len(recordings)))), len(recordings) - 1)
    valid_set = {recordings[i] for i in order[:n_valid]}

    def part(name, keep):
        ix = [i for i, s in enumerate(train.segments) if (s.path in valid_set) == keep]
        return Split(
            name, train.file, [train.segments[i] for i in ix], train.targets[ix], [train.rows[i] for i in ix], []
        )

    return part("train", False), part("valid", True)
