"""Labels of index windows, per target, in one SQLite file that survives crashes and concurrent writers.

In: an index folder. Out: ``<index_dir>/agile/labels.sqlite`` holding

- ``targets``: name (unique), prompt, example description, the seed embeddings (float32 blobs: the prompt's
  text embedding and the example's audio embedding, so proposing and fitting need no model), created;
- ``labels``: id, target, row (window position in the merged index), recording path, start and end (s),
  value (positive / negative / unsure), source (page, cli, raven, api ...), created, undone flag.

Labels are never deleted: a newer label of the same (target, row) supersedes the older one, and undo sets
the undone flag, after which the previous live label of that row (if any) is current again. So the history
is complete and an undo is itself undoable by labelling again.

Durability: WAL journal with ``synchronous=FULL`` and every write its own transaction, committed before the
call returns, so a label that was acknowledged survives ``kill -9`` or a power cut. Several threads (one
connection each) and processes (two browser tabs, the page and the CLI) may write at once: writers take the
database lock with ``BEGIN IMMEDIATE`` and wait for each other up to ``busy_timeout``, so none is lost.

Row ids stay valid while the index is not extended. Each label also stores its window's recording and
times, and :meth:`LabelStore.remap` moves labels to their window's new row after the index grew.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..faults import fault_point
from ..vocabulary import slug

VALUES = ("positive", "negative", "unsure")
BUSY_TIMEOUT_MS = 60_000  # a writer waits this long for another one's transaction before giving up

_SCHEMA = """
CREATE TABLE IF NOT EXISTS targets (
    name TEXT PRIMARY KEY,
    prompt TEXT,
    example TEXT,
    text_embedding BLOB,
    example_embedding BLOB,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS labels (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    target TEXT NOT NULL REFERENCES targets(name),
    win_row INTEGER NOT NULL,
    recording TEXT,
    start_s REAL,
    end_s REAL,
    value TEXT NOT NULL CHECK (value IN ('positive', 'negative', 'unsure')),
    source TEXT NOT NULL,
    created REAL NOT NULL,
    undone INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS labels_by_target_row ON labels(target, win_row, id);
"""


@dataclass(frozen=True)
class Target:
    name: str
    prompt: str | None
    example: str | None  # what the example is, in words ("row 12: owl.flac 10.0-20.0 s", a file name)
    text_embedding: np.ndarray | None  # float32 [D], L2-normalised
    example_embedding: np.ndarray | None
    created: float


@dataclass(frozen=True)
class Label:
    id: int
    target: str
    row: int
    recording: str | None
    start: float | None
    end: float | None
    value: str
    source: str
    created: float
    undone: bool


def _blob(v) -> bytes | None:
    return None if v is None else np.asarray(v, np.float32).ravel().tobytes()


def _vector(b: bytes | None) -> np.ndarray | None:
    return None if b is None else np.frombuffer(b, np.float32).copy()


class LabelStore:
    """The labels of one index (see the module docstring). ``index`` (an :class:`~biolingual.search.index.IndexData`)
    lets :meth:`label` record each window's recording and times and check rows; without it, the index
    folder is opened on the first label that needs it."""

    def __init__(self, index_dir: str | os.PathLike, index=None):
        self.index_dir = Path(index_dir)
        self.path = self.index_dir / "agile" / "labels.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._index = index
        self._index_lock = threading.Lock()  # threads share one lazily opened index
        self._local = threading.local()  # one connection per thread: sqlite3 connections are not shared
        with self._write() as db:
            for statement in filter(str.strip, _SCHEMA.split(";")):  # not executescript, which commits by itself
                db.execute(statement)

    # ---- connections ---------------------------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            # isolation_level=None: no implicit transactions; writes open their own with BEGIN IMMEDIATE
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # the commit is on disk (WAL fsynced) before it returns
            self._local.db = db
        return db

    @contextmanager
    def _write(self):
        """One write transaction, committed (durably) when the block ends, rolled back on error."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")  # take the write lock now: no upgrade deadlock between two writers
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        """Close this thread's connection (others close when their thread's store is collected)."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # ---- targets -------------------------------------------------------------------------------
    def add_target(
        self,
        name: str,
        prompt: str | None = None,
        example: str | None = None,
        text_embedding=None,
        example_embedding=None,
    ) -> Target:
        """Create the target ``name``, or update the fields given of an existing one."""
        name = (name or "").strip()
        if not name:
            raise UsageError("a target needs a name, e.g. 'Barred Owl'")
        with self._write() as db:
            rows = db.execute("SELECT name FROM targets").fetchall()
            clash = [n for (n,) in rows if n != name and slug(n) == slug(name)]
            if clash:
                raise UsageError(
                    f"target name '{name}' is too close to the existing target '{clash[0]}' (both are "
                    f"'{slug(name)}' as a file name); choose another name"
                )
            db.execute("INSERT OR IGNORE INTO targets (name, created) VALUES (?, ?)", (name, time.time()))
            for column, value in (
                ("prompt", prompt),
                ("example", example),
                ("text_embedding", _blob(text_embedding)),
                ("example_embedding", _blob(example_embedding)),
            ):
                if value is not None:
                    db.execute(f"UPDATE targets SET {column} = ? WHERE name = ?", (value, name))
        return self.target(name)

    def targets(self) -> list[Target]:
        rows = (
            self._db()
            .execute(
                "SELECT name, prompt, example, text_embedding, example_embedding, created FROM targets "
                "ORDER BY created, name"
            )
            .fetchall()
        )
        return [Target(r[0], r[1], r[2], _vector(r[3]), _vector(r[4]), r[5]) for r in rows]

    def target(self, name: str) -> Target:
        """The target ``name``; :class:`~biolingual.errors.UsageError` naming the existing ones if there is none."""
        r = (
            self._db()
            .execute(
                "SELECT name, prompt, example, text_embedding, example_embedding, created FROM targets WHERE name = ?",
                (name,),
            )
            .fetchone()
        )
        if r is None:
            known = ", ".join(repr(t.name) for t in self.targets()) or "none yet"
            raise UsageError(
                f"no target '{name}' in {self.path} (targets: {known}); add it first "
                f"(`biolingual agile target INDEX --name NAME --prompt TEXT`)"
            )
        return Target(r[0], r[1], r[2], _vector(r[3]), _vector(r[4]), r[5])

    # ---- labels --------------------------------------------------------------------------------
    def _index_data(self):
        with self._index_lock:
            if self._index is None:
                from ..search.index import load_index

                self._index = load_index(self.index_dir)
        return self._index

    def _window(self, row: int) -> tuple[str, float, float]:
        index = self._index_data()
        if not 0 <= row < len(index):
            raise UsageError(
                f"row {row} is not a window of the index '{self.index_dir}' (it has {len(index)} windows, "
                f"rows 0 to {len(index) - 1})"
            )
        return index.files[int(index.file_ids[row])], float(index.starts[row]), float(index.ends[row])

    def label(self, target: str, row: int, value: str, source: str = "api") -> int:
        """Label window ``row`` of the index ``value`` for ``target``; returns the label's id once it is
        committed to disk. A newer label of the same row supersedes this one."""
        return self.label_many(target, [(row, value)], source)[0]

    def label_many(self, target: str, items: Iterable[tuple[int, str]], source: str = "api") -> list[int]:
        """Several labels (row, value) in one transaction: all are stored, or none. Returns their ids."""
        items = [(int(row), value) for row, value in items]
        for row, value in items:
            if value not in VALUES:
                raise UsageError(f"label value must be one of {', '.join(VALUES)}, got {value!r} (row {row})")
        windows = [self._window(row) for row, _ in items]
        self.target(target)  # a clear error for an unknown target
        now = time.time()
        ids = []
        with self._write() as db:
            for (row, value), (recording, start, end) in zip(items, windows):
                cur = db.execute(
                    "INSERT INTO labels (target, win_row, recording, start_s, end_s, value, source, created) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (target, row, recording, start, end, value, source, now),
                )
                ids.append(int(cur.lastrowid))
        fault_point("agile.label_committed")  # crash tests: killed right after a label was committed
        return ids

    def undo(self, target: str, label_id: int | None = None) -> Label | None:
        """Undo the latest live label of ``target`` (or label ``label_id``); returns it, or None if there was none.
        The row's previous live label, if any, is current again."""
        with self._write() as db:
            if label_id is None:
                r = db.execute(
                    "SELECT id FROM labels WHERE target = ? AND undone = 0 ORDER BY id DESC LIMIT 1", (target,)
                ).fetchone()
                if r is None:
                    return None
                label_id = r[0]
            cur = db.execute(
                "UPDATE labels SET undone = 1 WHERE id = ? AND target = ? AND undone = 0", (label_id, target)
            )
            if cur.rowcount == 0:
                return None
        return self._label(label_id)

    def _label(self, label_id: int) -> Label:
        r = (
            self._db()
            .execute(
                "SELECT id, target, win_row, recording, start_s, end_s, value, source, created, undone "
                "FROM labels WHERE id = ?",
                (label_id,),
            )
            .fetchone()
        )
        return Label(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], bool(r[9]))

    _CURRENT = (
        "SELECT id, target, win_row, recording, start_s, end_s, value, source, created, undone FROM labels "
        "WHERE id IN (SELECT MAX(id) FROM labels WHERE target = ? AND undone = 0 GROUP BY win_row) ORDER BY win_row"
    )

    def current(self, target: str) -> list[Label]:
        """The current (latest live) label of every labelled row of ``target``, by row."""
        return [
            Label(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], bool(r[9]))
            for r in self._db().execute(self._CURRENT, (target,))
        ]

    def labels(self, target: str) -> dict[int, str]:
        """{row: value} of the current labels of ``target``."""
        return {lab.row: lab.value for lab in self.current(target)}

    def history(self, target: str) -> list[Label]:
        """Every label of ``target`` ever given, undone ones included, oldest first."""
        rows = (
            self._db()
            .execute(
                "SELECT id, target, win_row, recording, start_s, end_s, value, source, created, undone "
                "FROM labels WHERE target = ? ORDER BY id",
                (target,),
            )
            .fetchall()
        )
        return [Label(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], bool(r[9])) for r in rows]

    def counts(self, target: str) -> dict[str, int]:
        out = dict.fromkeys(VALUES, 0)
        for value in self.labels(target).values():
            out[value] += 1
        return out

    def remap(self, index) -> int:
        """Move labels whose row no longer holds their window (recording, start, end) to the row that does,
        after the index was extended; returns how many moved. A label whose window is gone stays as it is. A label
        of a recording the index now finds elsewhere (``biolingual index --relocate``) is given its new path."""
        from ..search.index import current_path

        moved, renamed = [], []
        by_window = None
        meta = getattr(index, "meta", None) or {}
        for lab_id, row, recording, start in self._db().execute("SELECT id, win_row, recording, start_s FROM labels"):
            if recording is None:
                continue
            now = current_path(meta, recording)
            ok = (
                0 <= row < len(index)
                and index.files[int(index.file_ids[row])] == now
                and abs(float(index.starts[row]) - start) < 1e-6
            )
            if ok:
                if now != recording:
                    renamed.append((now, lab_id))
                continue
            if by_window is None:
                by_window = {
                    (index.files[int(f)], round(float(s), 6)): i
                    for i, (f, s) in enumerate(zip(index.file_ids, index.starts))
                }
            new = by_window.get((now, round(start, 6)))
            if new is not None:
                moved.append((new, now, lab_id))
        if moved or renamed:
            with self._write() as db:
                db.executemany("UPDATE labels SET win_row = ?, recording = ? WHERE id = ?", moved)
                db.executemany("UPDATE labels SET recording = ? WHERE id = ?", renamed)
        return len(moved)

    def rows_with_labels(self, target: str, values: Sequence[str] = VALUES) -> np.ndarray:
        """The rows whose current label of ``target`` is one of ``values``, sorted."""
        return np.array(sorted(r for r, v in self.labels(target).items() if v in values), np.int64)
