"""The SQLite manifest: each record's stage and error, staged samples, committed shards.

Stages of a record: ``listed`` -> ``staged`` (audio processed, samples waiting in the staging folder)
-> ``written`` (all its samples are in committed shards). Or: ``duplicate``, ``excluded`` (no usable
licence, restricted, excluded archive), ``rejected`` (audio silent/too short/undecodable: permanent),
``failed`` (fetch or caption error, or a file this process may not read: retried by the next run).
"""

from __future__ import annotations

import shlex
import sqlite3
import time
from pathlib import Path

from .splits import mix_order

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    uid TEXT PRIMARY KEY, key TEXT, source TEXT, dedup TEXT, species TEXT, split TEXT,
    mine INTEGER, stage TEXT, reason TEXT, record TEXT, updated REAL);
CREATE INDEX IF NOT EXISTS records_dedup ON records(dedup);
CREATE INDEX IF NOT EXISTS records_stage ON records(stage, mine);
CREATE INDEX IF NOT EXISTS records_species ON records(species);
CREATE TABLE IF NOT EXISTS aliases (alias TEXT PRIMARY KEY, uid TEXT);
CREATE TABLE IF NOT EXISTS samples (
    key TEXT PRIMARY KEY, uid TEXT, split TEXT, bytes INTEGER, shard TEXT);
CREATE INDEX IF NOT EXISTS samples_pending ON samples(split, shard);
CREATE TABLE IF NOT EXISTS shards (name TEXT PRIMARY KEY, split TEXT, idx INTEGER, count INTEGER, bytes INTEGER);
CREATE TABLE IF NOT EXISTS listings (name TEXT PRIMARY KEY, done INTEGER, count INTEGER);
"""


def manifest_path(out: Path, part: int, parts: int) -> Path:
    return out / ("manifest.sqlite" if parts == 1 else f"manifest-{part}-of-{parts}.sqlite")


class ManifestError(ValueError):
    """A manifest file that SQLite cannot read (truncated, overwritten, not a database)."""


def unreadable(path: Path, error: Exception) -> ManifestError:
    """The error for a manifest SQLite cannot read: names the file and what to do."""
    folder = shlex.quote(str(path.parent))
    return ManifestError(
        f"'{path}' is not a readable build manifest ({error}). It records which shards of '{path.parent}' are "
        f"complete, so the folder cannot be resumed without it: restore it from a backup, or move the folder "
        f"away (e.g. `mv {folder} {shlex.quote(str(path.parent) + '.broken')}`) and build again into an empty one"
    )


class Manifest:
    """One build partition's manifest file, and the only code that runs SQL on it. Writes that must land
    together run in one transaction (``transaction``; a source's records in ``listing_transaction``), so a
    kill leaves all of them or none."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, isolation_level=None)  # explicit transactions below
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
            self._db.execute("SELECT COUNT(*) FROM shards").fetchone()  # a damaged file often fails only on a read
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise unreadable(self.path, e) from None

    def close(self) -> None:
        self._db.close()

    def transaction(self):
        """One write transaction (BEGIN IMMEDIATE): committed when the block ends, rolled back when it raises."""
        return _Transaction(self._db, "BEGIN IMMEDIATE")

    def listing_transaction(self):
        """The transaction a source's listing runs in (a plain BEGIN): ``checkpoint()`` commits what is listed so
        far (a killed listing keeps it), the end of the block commits the rest, an exception rolls it back."""
        return _Transaction(self._db, "BEGIN")

    # ---- listing ------------------------------------------------------------------------------
    def listing_done(self, name: str) -> bool:
        row = self._db.execute("SELECT done FROM listings WHERE name=?", (name,)).fetchone()
        return bool(row and row[0])

    def mark_listing(self, name: str, count: int) -> None:
        self._db.execute("INSERT OR REPLACE INTO listings VALUES (?, 1, ?)", (name, count))

    def find_duplicate(self, uid: str, dedup: str, aliases: list[str]) -> str | None:
        """The uid of an already listed record that is the same recording, or None."""
        if self._db.execute("SELECT 1 FROM records WHERE uid=?", (uid,)).fetchone():
            return uid
        if dedup:
            row = self._db.execute(
                "SELECT uid FROM records WHERE dedup=? AND stage NOT IN ('duplicate','excluded') LIMIT 1", (dedup,)
            ).fetchone()
            if row:
                return row[0]
        for alias in [uid, *aliases]:
            row = self._db.execute("SELECT uid FROM aliases WHERE alias=?", (alias,)).fetchone()
            if row:
                return row[0]
        return None

    def add_record(self, rec, dedup: str, split: str, mine: bool, stage: str, reason: str = "") -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO records VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                rec.uid,
                rec.key,
                rec.source,
                dedup,
                rec.species,
                split,
                int(mine),
                stage,
                reason,
                rec.to_json(),
                time.time(),
            ),
        )
        if stage != "duplicate":
            for alias in rec.aliases:
                self._db.execute("INSERT OR IGNORE INTO aliases VALUES (?, ?)", (alias, rec.uid))

    def species_count(self, species: str) -> int:
        return self._db.execute(
            "SELECT COUNT(*) FROM records WHERE species=? AND stage NOT IN ('duplicate','excluded')", (species,)
        ).fetchone()[0]

    # ---- processing ---------------------------------------------------------------------------
    def pending_count(self) -> int:
        """How many records of this partition are still to process (``listed`` or ``failed``)."""
        return self._db.execute(
            "SELECT COUNT(*) FROM records WHERE mine=1 AND stage IN ('listed','failed')"
        ).fetchone()[0]

    def pending(self, batch: int = 256):
        """Records of this partition still to process, streamed in mixed order (:func:`~.splits.mix_order` of
        the uid: the same in every run and resume), not in listing order: archives list a species' recordings
        together and sources one after another, so shards packed as records finish would each hold one source
        and one or two species, and contrastive batches drawn from a few shards would be full of same-species
        captions (false negatives). Only the rowids are held in memory; records are read ``batch`` at a time."""
        todo = self._db.execute(
            "SELECT rowid, uid FROM records WHERE mine=1 AND stage IN ('listed','failed')"
        ).fetchall()
        todo.sort(key=lambda row: (mix_order(row[1]), row[1]))
        rowids = [rowid for rowid, _ in todo]
        del todo
        for start in range(0, len(rowids), batch):
            page = rowids[start : start + batch]
            rows = {
                r[0]: r[1:]
                for r in self._db.execute(
                    "SELECT rowid, uid, split, record, stage FROM records WHERE rowid IN "
                    f"({','.join('?' * len(page))})",
                    page,
                )
            }
            for rowid in page:
                if rowid in rows and rows[rowid][3] in ("listed", "failed"):
                    yield rows[rowid][:3]

    def set_stage(self, uid: str, stage: str, reason: str = "") -> None:
        self._db.execute(
            "UPDATE records SET stage=?, reason=?, updated=? WHERE uid=?", (stage, reason, time.time(), uid)
        )

    def stage_samples(self, uid: str, split: str, samples: list[tuple[str, int]]) -> str:
        """Mark a record staged with its samples; returns "" or, when a sample key already belongs to another
        record (keys are meant to be unique: see Record.key), the reason it was not staged (nothing changed)."""
        with self.transaction():
            for key, _ in samples:
                row = self._db.execute("SELECT uid FROM samples WHERE key=? AND uid<>?", (key, uid)).fetchone()
                if row:  # replacing it would orphan that record: it would stay 'staged' forever
                    return f"sample key '{key}' is already used by {row[0]}"
            self._db.execute("DELETE FROM samples WHERE uid=? AND shard IS NULL", (uid,))
            self._db.executemany(
                "INSERT OR REPLACE INTO samples VALUES (?,?,?,?,NULL)", [(k, uid, split, b) for k, b in samples]
            )
            self.set_stage(uid, "staged")
        return ""

    def repair_orphans(self) -> int:
        """Records 'staged' with no sample waiting (left by the old key scheme, whose colliding keys let one
        record's samples replace another's): 'written' if their samples are all in shards, else 'listed' again
        (redone by this run). Returns how many were changed."""
        with self.transaction():
            done = self._db.execute(
                "UPDATE records SET stage='written', updated=? WHERE stage='staged' AND mine=1 "
                "AND EXISTS (SELECT 1 FROM samples s WHERE s.uid=records.uid) "
                "AND NOT EXISTS (SELECT 1 FROM samples s WHERE s.uid=records.uid AND s.shard IS NULL)",
                (time.time(),),
            ).rowcount
            redo = self._db.execute(
                "UPDATE records SET stage='listed', reason='staged samples lost', updated=? "
                "WHERE stage='staged' AND mine=1 AND NOT EXISTS (SELECT 1 FROM samples s WHERE s.uid=records.uid)",
                (time.time(),),
            ).rowcount
        return done + redo

    def waiting_samples(self) -> list[tuple[str, str, str]]:
        """(key, uid, split) of every staged sample not yet in a committed shard."""
        return self._db.execute("SELECT key, uid, split FROM samples WHERE shard IS NULL").fetchall()

    def redo_staged(self, uids, reason: str) -> None:
        """In one transaction: drop these records' waiting samples and mark them ``listed`` again with ``reason``
        (their staged files are gone, so this run processes them again)."""
        with self.transaction():
            for uid in uids:
                self._db.execute("DELETE FROM samples WHERE uid=? AND shard IS NULL", (uid,))
                self.set_stage(uid, "listed", reason)

    def staged(self, split: str, limit: int | None = None) -> list[tuple[str, int]]:
        """(key, bytes) of the split's samples waiting for a shard, the first ``limit`` in mixed order
        (:func:`~.splits.mix_order` of the key): a shard's samples, and a record's clips, are spread rather than
        in key order. The pool is at most about a shard plus the records in flight (shards are packed as
        soon as one is full)."""
        rows = self._db.execute("SELECT key, bytes FROM samples WHERE split=? AND shard IS NULL", (split,)).fetchall()
        rows.sort(key=lambda row: (mix_order(row[0]), row[0]))
        return rows[: int(limit)] if limit else rows

    def staged_totals(self) -> dict[str, tuple[int, int]]:
        rows = self._db.execute(
            "SELECT split, COUNT(*), COALESCE(SUM(bytes),0) FROM samples WHERE shard IS NULL GROUP BY split"
        )
        return {split: (n, b) for split, n, b in rows}

    # ---- shards -------------------------------------------------------------------------------
    def shard_indices(self, split: str) -> set[int]:
        return {i for (i,) in self._db.execute("SELECT idx FROM shards WHERE split=?", (split,))}

    def committed_keys(self, uid: str) -> set[str]:
        """Keys of a record's samples already in committed shards."""
        return {k for (k,) in self._db.execute("SELECT key FROM samples WHERE uid=? AND shard IS NOT NULL", (uid,))}

    def commit_shard(self, name: str, split: str, idx: int, keys: list[str], nbytes: int) -> None:
        with self.transaction():
            self._db.execute("INSERT INTO shards VALUES (?,?,?,?,?)", (name, split, idx, len(keys), nbytes))
            self._db.executemany("UPDATE samples SET shard=? WHERE key=?", [(name, k) for k in keys])
            self._db.execute(
                "UPDATE records SET stage='written', updated=? WHERE stage='staged' AND uid IN "
                "(SELECT uid FROM samples WHERE shard=?) AND NOT EXISTS "
                "(SELECT 1 FROM samples s WHERE s.uid=records.uid AND s.shard IS NULL)",
                (time.time(), name),
            )

    def forget_shard(self, name: str) -> None:
        """A committed shard that is lost on disk: in one transaction its records go back to ``listed`` (reason
        'shard lost'), its samples and its row are deleted. Only this shard's samples: a record's other clips may
        sit in another, intact shard, and stay there (the builder skips them when it redoes the record)."""
        with self.transaction():
            self._db.execute(
                "UPDATE records SET stage='listed', reason='shard lost' WHERE uid IN "
                "(SELECT uid FROM samples WHERE shard=?)",
                (name,),
            )
            self._db.execute("DELETE FROM samples WHERE shard=?", (name,))
            self._db.execute("DELETE FROM shards WHERE name=?", (name,))

    def shards(self) -> list[tuple[str, str, int, int]]:
        return self._db.execute("SELECT name, split, count, bytes FROM shards ORDER BY name").fetchall()

    # ---- status -------------------------------------------------------------------------------
    def summary(self) -> dict:
        """Counts of this partition's records (every partition lists all records, each owns its part). Raises
        ManifestError when the file is damaged past the pages opening it read."""
        try:
            return self._summary()
        except sqlite3.DatabaseError as e:  # damage past the first pages shows only when read
            raise unreadable(self.path, e) from None

    def _summary(self) -> dict:
        db = self._db
        return {
            "stages": [
                list(r)
                for r in db.execute(
                    "SELECT source, stage, COUNT(*) FROM records WHERE mine=1 GROUP BY source, stage "
                    "ORDER BY source, stage"
                )
            ],
            "samples": [
                list(r)
                for r in db.execute(
                    "SELECT split, SUM(shard IS NOT NULL), SUM(shard IS NULL) FROM samples GROUP BY split "
                    "ORDER BY split"
                )
            ],
            "shards": db.execute("SELECT COUNT(*), COALESCE(SUM(bytes),0) FROM shards").fetchone(),
            "reasons": [
                list(r)
                for r in db.execute(
                    "SELECT source, stage, reason, COUNT(*) c FROM records WHERE mine=1 AND stage IN "
                    "('rejected','failed','excluded') GROUP BY source, stage, reason ORDER BY c DESC LIMIT 20"
                )
            ],
            "listings": [list(r) for r in db.execute("SELECT name, done, count FROM listings ORDER BY name")],
        }


class _Transaction:
    """``with``: ``begin`` on entry; COMMIT at the end of the block, ROLLBACK when it raises."""

    def __init__(self, db, begin: str):
        self.db, self.begin = db, begin

    def __enter__(self):
        self.db.execute(self.begin)
        return self

    def checkpoint(self) -> None:
        """Commit what this transaction wrote so far and go on in a new one."""
        self.db.execute("COMMIT")
        self.db.execute(self.begin)

    def __exit__(self, exc_type, *_):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
