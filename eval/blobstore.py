"""The SQLite file behind the evaluation caches (clip embeddings, probe layer features): float32 arrays
stored as blobs under string keys.

In: a file path and the tables' ``CREATE TABLE IF NOT EXISTS`` script. Out: a connection with the parts
both caches need: look-ups of many keys at once (:meth:`BlobStore.select_in`), a transaction that commits
a whole batch or nothing (``with store.transaction():``), and the array <-> blob codec (:func:`to_blob`,
:func:`from_blob`). Each cache keeps its own tables, so existing cache files are read as before.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np

_MAX_PARAMS = 500  # SQLite limits the number of bound parameters in one statement


def to_blob(array) -> bytes:
    """A vector's float32 bytes, as every cache stores it."""
    return np.asarray(array, dtype=np.float32).tobytes()


def from_blob(blob: bytes) -> np.ndarray:
    """The float32 vector stored by :func:`to_blob` (read-only: a view of the blob)."""
    return np.frombuffer(blob, dtype=np.float32)


class BlobStore:
    """One SQLite cache file; a context manager that closes it."""

    def __init__(self, path: str | os.PathLike, schema: str, page_size: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path))
        if page_size:  # only takes effect on a new file, before its first table
            self.db.execute(f"PRAGMA page_size = {int(page_size)}")
        self.db.executescript(schema)
        self.db.commit()

    def select_in(self, sql: str, keys: list[str], *params) -> list[tuple]:
        """Rows of ``sql``, whose ``IN ({})`` is filled with ``keys`` (in parts), after the fixed ``params``."""
        rows = []
        for start in range(0, len(keys), _MAX_PARAMS):
            part = keys[start : start + _MAX_PARAMS]
            rows += self.db.execute(sql.format(",".join("?" * len(part))), [*params, *part]).fetchall()
        return rows

    def transaction(self) -> sqlite3.Connection:
        """``with store.transaction():`` commits everything written inside at once, or nothing on an error, so
        an interrupted run keeps every finished batch and no half of one."""
        return self.db

    def nbytes(self) -> int:
        return self.path.stat().st_size

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
