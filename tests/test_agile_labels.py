"""biolingual.agile.labels: labels committed before they are acknowledged (kill -9 between labels loses none),
concurrent writers (threads and processes) lose nothing, undo, and row re-mapping after the index grew.

The index is a real index folder (index.json and parts, merged and checked by ``load_index``) whose
embeddings the test writes itself: :func:`make_index` is shared with tests/test_agile_head.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from biolingual.agile.labels import LabelStore
from biolingual.errors import UsageError
from biolingual.faults import ENV
from biolingual.search.index import load_index

FINGERPRINT = "0123456789abcdef" * 2


def make_index(
    folder: Path,
    embeddings: np.ndarray,
    n_files: int = 2,
    window_s: float = 5.0,
    fingerprint: str = FINGERPRINT,
    name: str = "synthetic-model",
) -> Path:
    """An index folder holding ``embeddings`` (rows split evenly over ``n_files`` recordings, consecutive
    windows of ``window_s``), written as ``biolingual index`` writes one; the recordings are empty files."""
    folder = Path(folder)
    (folder / "parts").mkdir(parents=True, exist_ok=True)
    meta = {
        "format": 1,
        "model": {"name": name, "fingerprint": fingerprint, "dim": int(embeddings.shape[1])},
        "window_s": window_s,
        "hop_s": window_s,
        "sampling_rate": 48_000,
    }
    (folder / "index.json").write_text(json.dumps(meta))
    for i, rows in enumerate(np.array_split(np.arange(len(embeddings)), n_files)):
        recording = folder / f"rec{i}.wav"
        recording.write_bytes(b"")
        starts = np.arange(len(rows)) * window_s
        np.savez(
            folder / "parts" / f"{i:04d}.npz",
            embeddings=embeddings[rows].astype(np.float16),
            starts=starts,
            ends=starts + window_s,
            path=np.array(str(recording)),
            size=np.array(0),
            mtime=np.array(0.0),
        )
    return folder


@pytest.fixture()
def index_dir(tmp_path):
    rng = np.random.default_rng(0)
    return make_index(tmp_path / "index", rng.standard_normal((40, 8)).astype(np.float32))


def test_labels_supersede_undo_and_history(index_dir):
    store = LabelStore(index_dir)
    store.add_target("Barred Owl", prompt="The sound of a Barred Owl hooting")
    first = store.label("Barred Owl", 3, "positive")
    store.label("Barred Owl", 5, "negative", source="cli")
    store.label("Barred Owl", 3, "unsure")  # supersedes the positive
    assert store.labels("Barred Owl") == {3: "unsure", 5: "negative"}
    assert store.counts("Barred Owl") == {"positive": 0, "negative": 1, "unsure": 1}
    undone = store.undo("Barred Owl")  # the latest: row 3 unsure -> its earlier positive is current again
    assert undone.row == 3 and undone.value == "unsure" and undone.undone
    assert store.labels("Barred Owl") == {3: "positive", 5: "negative"}
    assert store.undo("Barred Owl", first).id == first  # a given label
    assert store.labels("Barred Owl") == {5: "negative"}
    assert store.undo("Barred Owl", first) is None  # already undone
    history = store.history("Barred Owl")
    assert [(h.row, h.value, h.undone) for h in history] == [
        (3, "positive", True),
        (5, "negative", False),
        (3, "unsure", True),
    ]
    index = load_index(index_dir)
    assert (
        history[1].recording == index.files[int(index.file_ids[5])]
        and history[1].start == 25.0
        and history[1].end == 30.0
    )
    assert store.undo("Barred Owl") is not None and store.undo("Barred Owl") is None  # nothing left
    # another store on the same file (another process or tab) sees the same
    assert LabelStore(index_dir).history("Barred Owl") == store.history("Barred Owl")


def test_bad_labels_are_clear_errors(index_dir):
    store = LabelStore(index_dir)
    store.add_target("owl")
    with pytest.raises(UsageError, match="no target 'frog'.*'owl'"):
        store.label("frog", 1, "positive")
    with pytest.raises(UsageError, match="row 40 is not a window.*40 windows"):
        store.label("owl", 40, "positive")
    with pytest.raises(UsageError, match="one of positive, negative, unsure, got 'yes'"):
        store.label("owl", 1, "yes")
    with pytest.raises(UsageError, match="too close to the existing target 'owl'"):
        store.add_target("OWL")
    assert store.history("owl") == []  # nothing half-written


KILLED = """
import sys
from biolingual.agile.labels import LabelStore
store = LabelStore(sys.argv[1])
store.add_target("owl")
for row in range(10):
    store.label("owl", row, "positive" if row % 2 else "negative", source="page")
    print(f"acknowledged {row}", flush=True)
"""


def test_a_label_acknowledged_survives_kill_9(index_dir):
    env = {**os.environ, ENV: "agile.label_committed:4"}  # SIGKILL right after the 4th label's commit
    proc = subprocess.run(
        [sys.executable, "-c", KILLED, str(index_dir)], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert proc.stdout.split("\n")[:3] == ["acknowledged 0", "acknowledged 1", "acknowledged 2"]
    assert "acknowledged 3" not in proc.stdout  # killed between the commit and the acknowledgement
    store = LabelStore(index_dir)  # a new process's view: the WAL is replayed
    assert store.labels("owl") == {0: "negative", 1: "positive", 2: "negative", 3: "positive"}
    store.label("owl", 4, "negative")  # and the store is writable after the crash
    assert len(store.history("owl")) == 5


WRITER = """
import sys
from biolingual.agile.labels import LabelStore
store = LabelStore(sys.argv[1])
first = int(sys.argv[2])
for row in range(first, first + 20):
    store.label("owl", row, "positive", source=f"writer{first}")
"""


def test_two_processes_and_several_threads_writing_at_once_lose_nothing(index_dir):
    LabelStore(index_dir).add_target("owl")
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(index_dir), str(first)]) for first in (0, 20)]
    store = LabelStore(index_dir)
    errors = []

    def write(t: int) -> None:
        try:
            for i in range(25):
                store.label("owl", (t * 7 + i) % 40, "negative", source=f"thread{t}")
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert not errors
    history = store.history("owl")
    assert len(history) == 40 + 100  # every write is there
    assert len({h.id for h in history}) == len(history)
    sources = {h.source for h in history}
    assert sources == {"writer0", "writer20", "thread0", "thread1", "thread2", "thread3"}
    current = store.labels("owl")  # the current value of each row is its newest label's
    for row, value in current.items():
        assert value == [h.value for h in history if h.row == row][-1]


def test_labels_follow_their_window_when_the_index_grows(tmp_path):
    rng = np.random.default_rng(1)
    emb = rng.standard_normal((20, 8)).astype(np.float32)
    folder = make_index(tmp_path / "index", emb[10:], n_files=1)  # rec0.wav only
    index = load_index(folder)
    store = LabelStore(folder, index)
    store.add_target("owl")
    store.label("owl", 2, "positive")
    # a recording that sorts first (rows are in the order of the recordings' paths) is added: the old windows
    # move to rows 10..19
    extra = folder / "aaa.wav"
    extra.write_bytes(b"")
    starts = np.arange(10) * 5.0
    np.savez(
        folder / "parts" / "0000.npz",
        embeddings=emb[:10].astype(np.float16),
        starts=starts,
        ends=starts + 5,
        path=np.array(str(extra)),
        size=np.array(0),
        mtime=np.array(0.0),
    )
    grown = load_index(folder)
    assert grown.files[0] == str(extra)
    assert LabelStore(folder, grown).remap(grown) == 1
    assert LabelStore(folder, grown).labels("owl") == {12: "positive"}
