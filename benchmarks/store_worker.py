"""One side of benchmarks/bench_store.py, in a process of its own: ingest synthetic windows into a store, or open
one and answer queries, for ours (a biolingual index folder; this repository's venv) or perch-hoplite's SQLite +
USearch database (a venv with ``perch-hoplite``, whose dependencies are not ours).

In: commands as JSON lines on stdin. Out: one JSON line per command on stdout. Imports numpy and the store's own
package only (neither torch nor the benchmark helpers), so the memory it reports is that of a query process.

    {"op": "ingest", "vectors": "v.npy", "out": "store/"}     -> {"cpu_s", "wall_s", "disk_bytes", "windows"}
    {"op": "open", "store": "store/"}                          -> {"cpu_s", "rss_mb", "torch": false}
    {"op": "query", "kind": "exact"|"approx", "queries": "q.npy", "k": 50}
                                                               -> {"ms": [...], "cpu_ms": [...], "rows": [[...]]}
    {"op": "build_approx", "store": "store/"}                  -> {"cpu_s", "wall_s", "bytes"} (ours: its faiss index)
    {"op": "rss"}                                              -> {"rss_mb"}
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

WINDOWS_PER_RECORDING = 360  # a 1 h recording in 10 s windows
WINDOW_S = 10.0


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rss_mb() -> float:
    """Peak resident memory of this process image, MB: VmHWM of /proc/self/status (getrusage's ru_maxrss keeps the
    peak of the process it was forked from across exec, the benchmark's own gigabytes)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def disk_bytes(path: str) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


class Ours:
    """A biolingual index folder: parts written as ``biolingual index`` writes them after embedding (one per
    recording, atomically), then merged (which folds them into merged/, the one copy kept); searched by
    ``exact_topk`` and the approximate searcher ``auto`` uses from 500,000 windows (built once, saved in merged/)."""

    def ingest(self, vectors: str, out: str) -> None:
        from biolingual.atomic import atomic_write
        from biolingual.search.index import FORMAT_VERSION, merge

        emb = np.load(vectors, mmap_mode="r")
        folder = Path(out)
        (folder / "parts").mkdir(parents=True, exist_ok=True)
        meta = {
            "format": FORMAT_VERSION,
            "model": {"name": "synthetic", "fingerprint": "0" * 64, "dim": int(emb.shape[1])},
            "window_s": WINDOW_S,
            "hop_s": WINDOW_S,
            "sampling_rate": 48_000,
            "precision": ["float32"],
        }
        (folder / "index.json").write_text(json.dumps(meta))
        for r, start in enumerate(range(0, len(emb), WINDOWS_PER_RECORDING)):
            rows = np.asarray(emb[start : start + WINDOWS_PER_RECORDING])
            starts = WINDOW_S * np.arange(len(rows), dtype=np.float64)
            arrays = dict(
                embeddings=rows,
                starts=starts,
                ends=starts + WINDOW_S,
                path=np.array(f"/recordings/rec{r:06d}.wav"),
                size=np.array(0),
                mtime=np.array(0.0),
                precision=np.array("float32"),
            )
            # the merged rows are in the order of the recordings' paths (rec000000.wav, ...): the vectors' rows
            atomic_write(folder / "parts" / f"{r:08d}.npz", lambda f, a=arrays: np.savez(f, **a))
        merge(folder)

    def open(self, store: str) -> None:
        from biolingual.search.index import load_index

        self.index = load_index(store)

    def build_approx(self, store: str) -> dict:
        """The approximate index built from scratch (what the first approximate search of an index costs), timed;
        the figures are kept in the store beside the stamp of the index they measured, and a later run whose saved
        index has that stamp (the same build of the same embeddings) reuses them rather than building again."""
        from biolingual.search.query import _faiss_for

        merged, record = Path(store) / "merged", Path(store) / "approx_build.json"
        saved = [merged / "faiss_ivfpq.index", merged / "faiss_ivfpq.json"]
        if record.is_file() and saved[1].is_file():
            measured = json.loads(record.read_text())
            if measured["stamp"] == saved[1].read_text():
                return measured
        for f in saved:
            f.unlink(missing_ok=True)
        c0, t0 = cpu_s(), time.perf_counter()
        _faiss_for(self.index, False)
        measured = {"cpu_s": cpu_s() - c0, "wall_s": time.perf_counter() - t0, "bytes": saved[0].stat().st_size}
        record.write_text(json.dumps({**measured, "stamp": saved[1].read_text()}))
        return measured

    def query(self, kind: str, queries: np.ndarray, k: int) -> tuple[list[float], list[float], list[list[int]]]:
        from biolingual.search.query import _faiss_for, exact_topk

        find = (
            (lambda q: exact_topk(self.index.embeddings, q, k))
            if kind == "exact"
            else _faiss_for(self.index, False).search
        )
        times, cpu, rows = [], [], []
        for q in queries:
            t, c = time.perf_counter(), cpu_s()
            if kind == "exact":
                _, r = find(q[None])
            else:
                _, r = find(q[None], k)
            times.append(1000 * (time.perf_counter() - t))
            cpu.append(1000 * (cpu_s() - c))
            rows.append([int(x) for x in r[0]])
        return times, cpu, rows


class Hoplite:
    """perch-hoplite's SQLite + USearch database with its default configuration (float16, inner product, HNSW),
    filled as the field notes say a tool fills it (``insert_windows_batch(..., handle_duplicates='allow')``), and
    searched with its own ``search`` (exact: usearch's exhaustive scan; approximate: the HNSW graph), both re-ranked."""

    def ingest(self, vectors: str, out: str) -> None:
        from perch_hoplite.db import sqlite_usearch_impl as impl

        emb = np.load(vectors, mmap_mode="r")
        db = impl.SQLiteUSearchDB.create(out, usearch_cfg=impl.get_default_usearch_config(int(emb.shape[1])))
        deployment = db.insert_deployment(name="site", project="bench")
        first = None
        for r, start in enumerate(range(0, len(emb), WINDOWS_PER_RECORDING)):
            rows = np.asarray(emb[start : start + WINDOWS_PER_RECORDING])
            recording = db.insert_recording(filename=f"rec{r:06d}.wav", deployment_id=deployment)
            ids = db.insert_windows_batch(
                [{"recording_id": recording, "offsets": [WINDOW_S * i]} for i in range(len(rows))],
                rows,
                handle_duplicates="allow",
            )
            first = ids[0] if first is None else first
        db.commit()
        (Path(out) / "first_id.json").write_text(json.dumps(int(first)))

    def open(self, store: str) -> None:
        from perch_hoplite.db import sqlite_usearch_impl as impl

        self.db = impl.SQLiteUSearchDB.create(store)
        self.first = json.loads((Path(store) / "first_id.json").read_text())

    def query(self, kind: str, queries: np.ndarray, k: int) -> tuple[list[float], list[float], list[list[int]]]:
        times, cpu, rows = [], [], []
        for q in queries:
            t, c = time.perf_counter(), cpu_s()
            results = self.db.search(q, k, approximate=kind != "exact")
            times.append(1000 * (time.perf_counter() - t))
            cpu.append(1000 * (cpu_s() - c))
            rows.append([int(r.window_id) - self.first for r in results])  # best first
        return times, cpu, rows


def main() -> None:
    store = {"ours": Ours, "hoplite": Hoplite}[sys.argv[1]]()
    for line in sys.stdin:
        cmd = json.loads(line)
        c0, t0 = cpu_s(), time.perf_counter()
        if cmd["op"] == "ingest":
            store.ingest(cmd["vectors"], cmd["out"])
            reply = {"cpu_s": cpu_s() - c0, "wall_s": time.perf_counter() - t0, "disk_bytes": disk_bytes(cmd["out"])}
        elif cmd["op"] == "open":
            store.open(cmd["store"])
            reply = {"cpu_s": cpu_s() - c0, "rss_mb": rss_mb(), "torch": "torch" in sys.modules}
        elif cmd["op"] == "query":
            ms, cpu, rows = store.query(cmd["kind"], np.load(cmd["queries"]), int(cmd["k"]))
            reply = {"ms": ms, "cpu_ms": cpu, "rows": rows, "rss_mb": rss_mb(), "torch": "torch" in sys.modules}
        elif cmd["op"] == "build_approx":
            reply = store.build_approx(cmd["store"])
        else:
            reply = {"rss_mb": rss_mb()}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
