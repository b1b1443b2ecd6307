"""Search internals on real arrays: exact top-k, faiss recall against exact, merging hits, export formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from biolingual.search.export import RAVEN_COLUMNS, export_clips, read_raven, write_audacity, write_csv, write_raven
from biolingual.search.index import IndexData
from biolingual.search.query import (
    FaissSearcher,
    Hit,
    cosines,
    exact_topk,
    merge_intervals,
    merge_overlapping_hits,
    recall_at_k,
    search,
)


def _unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _clustered(n, d, seed):
    """Embeddings as real ones are: clustered (calls of a kind), not uniform on the sphere."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((64, d))
    return _unit(centers[rng.integers(0, 64, n)] + 0.6 * rng.standard_normal((n, d))).astype(np.float16)


def _index(starts, ends, file_ids, files, embeddings=None, window=10.0, hop=5.0):
    n = len(starts)
    emb = embeddings if embeddings is not None else np.zeros((n, 4), np.float16)
    return IndexData(
        {"window_s": window, "hop_s": hop},
        emb,
        np.array(starts, float),
        np.array(ends, float),
        np.array(file_ids, np.int32),
        files,
        Path("."),
    )


def test_exact_topk_matches_a_full_sort():
    emb = _clustered(5000, 32, 0)
    queries = _unit(np.random.default_rng(1).standard_normal((3, 32)))
    from biolingual.search import query

    old, query.CHUNK = query.CHUNK, 700  # several chunks, with a ragged last one
    try:
        scores, rows = exact_topk(emb, queries, 25)
    finally:
        query.CHUNK = old
    full = queries @ _unit(emb.astype(np.float32)).T  # cosines: float16 rows re-normalised in float32
    np.testing.assert_array_equal(rows, np.argsort(-full, axis=1, kind="stable")[:, :25])
    np.testing.assert_allclose(scores, np.take_along_axis(full, rows, 1), rtol=1e-6)


def test_faiss_search_recalls_the_exact_top_50():
    emb = _clustered(10_000, 64, 2)
    queries = emb[np.random.default_rng(3).choice(10_000, 20)].astype(np.float32) + 0.05
    searcher = FaissSearcher.build(emb, nlist=64, progress=False)
    approx_s, approx = searcher.search(queries, 50)
    exact_s, exact = exact_topk(emb, queries, 50)
    assert recall_at_k(approx, exact) >= 0.95
    assert (np.diff(approx_s, axis=1) <= 1e-6).all()  # best first, exact scores after re-ranking


def test_scores_are_cosines_never_above_1_exact_and_faiss():
    rng = np.random.default_rng(5)
    v = _unit(rng.standard_normal((3000, 32)))
    stored = v.astype(np.float16)
    excess = (v * stored.astype(np.float32)).sum(1) - 1  # float16 rounding lengthens some rows
    queries = v[np.argsort(-excess)[:5]]  # the rows whose stored copies are longest: plain dot products up to 1.0003
    assert excess.max() > 1e-4
    searcher = FaissSearcher.build(stored, nlist=16, progress=False)
    for scores, rows in (exact_topk(stored, queries, 3), searcher.search(queries, 3)):
        assert scores.max() <= 1.0
        np.testing.assert_array_equal(rows[:, 0], np.argsort(-excess)[:5])  # each finds its own row
        np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-6)


def test_overlapping_windows_merge_into_one_hit():
    # file 0: windows every 5 s; the call is around 20-30 s; file 1 has one good window
    starts = [0, 5, 10, 15, 20, 25, 30, 0]
    index = _index(starts, [s + 10 for s in starts], [0] * 7 + [1], ["a.wav", "b.wav"])
    scores = np.array([0.1, 0.1, 0.2, 0.7, 0.9, 0.8, 0.3, 0.75])
    hits = merge_overlapping_hits(index, scores, np.arange(8), "q")
    assert [(h.file, h.start, h.end, h.score) for h in hits[:3]] == [
        ("a.wav", 15.0, 35.0, 0.9),
        ("b.wav", 0.0, 10.0, 0.75),
        ("a.wav", 0.0, 15.0, 0.1),
    ]


def test_search_fetches_more_until_k_separate_hits():
    starts = list(range(0, 200, 5))
    n = len(starts)
    emb = np.zeros((n, 2), np.float16)
    emb[:, 0] = np.linspace(1, 0, n)  # early windows score highest: the top k*overlap rows all overlap
    emb[:, 1] = np.sqrt(1 - emb[:, 0].astype(np.float32) ** 2)
    index = _index(starts, [s + 10 for s in starts], [0] * n, ["a.wav"], emb)
    (hits,) = search(index, np.array([[1.0, 0.0]]), ["q"], k=5, method="exact")
    assert len(hits) == 5
    assert all(a.end <= b.start or b.end <= a.start for i, a in enumerate(hits) for b in hits[i + 1 :])


def test_merge_intervals_joins_overlapping_and_close_ones():
    rows = [(0, 10, 0.6), (5, 15, 0.9), (30, 40, 0.7), (41, 50, 0.8)]
    assert merge_intervals(rows) == [(0, 15, 0.9, 5), (30, 40, 0.7, 30), (41, 50, 0.8, 41)]
    assert merge_intervals(rows, gap=2) == [(0, 15, 0.9, 5), (30, 50, 0.8, 41)]


def test_raven_csv_audacity_and_clips(tmp_path):
    rec = tmp_path / "night one.flac"
    sf.write(rec, np.sin(np.arange(16_000 * 20) / 10).astype(np.float32), 16_000)
    hits = [Hit(str(rec), 5.0, 15.0, 0.91, "a frog trilling"), Hit(str(rec), 0.0, 2.5, 0.5, "a frog trilling")]
    write_raven(hits, tmp_path / "t.txt")
    rows = read_raven(tmp_path / "t.txt")
    assert list(rows[0]) == RAVEN_COLUMNS
    # in time order (a selection table is read as a timeline), each with its rank within its query
    assert rows[1]["Begin Time (s)"] == "5.000" and rows[1]["End Time (s)"] == "15.000" and rows[1]["Rank"] == "1"
    assert rows[1]["High Freq (Hz)"] == "8000.0" and rows[1]["Begin File"] == "night one.flac"
    assert rows[0]["Annotation"] == "a frog trilling" and float(rows[0]["Score"]) == 0.5
    write_csv(hits, tmp_path / "h.csv")
    assert (tmp_path / "h.csv").read_text().splitlines()[0] == (
        "rank,query,file,start_s,end_s,recording,site,start_time,end_time,latitude,longitude,score"
    )
    (labels,) = write_audacity(hits, tmp_path / "aud")
    assert labels.read_text().splitlines() == [
        "0.000000\t2.500000\ta frog trilling (0.500)",
        "5.000000\t15.000000\ta frog trilling (0.910)",
    ]
    clips = export_clips(hits, tmp_path / "clips", pad_s=1.0)
    assert [sf.info(c).duration for c in clips] == [12.0, 3.5]
    data, _ = sf.read(clips[0])
    source, _ = sf.read(rec, start=4 * 16_000, frames=12 * 16_000)
    np.testing.assert_allclose(data, source, atol=1e-4)


def test_exact_topk_is_exact_with_many_tied_windows_at_512_d():
    """Real indexes hold runs of near-identical windows (silence, rain): the scan's float16 cosines cannot order
    them, so the candidate pool must grow until it provably holds the float32 top k, ties broken by row."""
    rng = np.random.default_rng(7)
    emb = _clustered(3000, 512, 6)
    quiet = _unit(rng.standard_normal(512))
    emb[rng.choice(3000, 400, replace=False)] = (quiet + 1e-3 * rng.standard_normal((400, 512))).astype(np.float16)
    emb[100:160] = emb[99]  # exact duplicates: equal cosines, which must come in row order
    queries = _unit(np.stack([quiet, emb[99].astype(np.float32), rng.standard_normal(512)]))
    # rows up to 0.5% longer or shorter than 1: the inner-product scan (given that bound) must still find the cosines'
    emb[::7] = (emb[::7].astype(np.float32) * rng.uniform(0.995, 1.005, (len(emb[::7]), 1))).astype(np.float16)
    stored = emb.astype(np.float64)
    full = queries.astype(np.float64) @ (stored / np.linalg.norm(stored, axis=1, keepdims=True)).T  # every row, float64
    deviation = float(np.abs(np.linalg.norm(stored, axis=1) - 1).max())
    for scan in (None, deviation):  # the cosine scan, and the inner-product scan with the rows' length bound
        scores, rows = exact_topk(emb, queries, 50, norm_deviation=scan)
        np.testing.assert_array_equal(rows, np.argsort(-full, axis=1, kind="stable")[:, :50])
        np.testing.assert_allclose(scores, np.take_along_axis(full, rows, 1), rtol=1e-6)
        np.testing.assert_allclose(scores, np.take_along_axis(cosines(emb, queries), rows, 1), atol=1e-6)  # float32's


def test_searching_by_an_index_row_does_not_import_torch(tiny_model, clips, tmp_path):
    """A query given as an embedding or as a row of the index needs no model: the process that opens the index
    and searches it never imports torch (390 MB of memory at start, against 63 MB for perch-hoplite's)."""
    import subprocess
    import sys

    from biolingual.search.index import build_index

    index = tmp_path / "index"
    build_index([clips["loon_long.flac"], clips["cricket_48k.wav"]], tiny_model, index, hop_s=2.0, progress=False)
    script = (
        "import sys, numpy as np\n"
        "from biolingual.search.index import load_index\n"
        "from biolingual.search.query import search\n"
        f"index = load_index({str(index)!r})\n"
        "(hits,) = search(index, np.asarray(index.embeddings[[3]], np.float32), ['row 3'], k=3, method='exact', "
        "merge=False)\nassert abs(hits[0].start - index.starts[3]) < 1e-9 and hits[0].score > 0.999, hits\n"
        "assert 0 <= index.norm_deviation < 1e-3, index.norm_deviation  # recorded by the merge: the inner-product "
        "scan\nprint('torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "False"


def test_faiss_builds_after_an_exact_search_in_the_same_process():
    """usearch's extension loaded before faiss made faiss.index_factory crash the process (SIGSEGV): an exact search
    followed by a faiss search, as a session or a benchmark does, must not."""
    import subprocess
    import sys

    script = (
        "import numpy as np\n"
        "from biolingual.search.query import FaissSearcher, exact_topk\n"
        "x = np.random.default_rng(0).standard_normal((3000, 64)).astype(np.float32)\n"
        "x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)\n"
        "exact_topk(x, x[:2].astype(np.float32), 5)\n"
        "print(FaissSearcher.build(x, nlist=16, progress=False).search(x[:2].astype(np.float32), 5)[1][:, 0])\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-1000:]}"
    assert proc.stdout.split() == ["[0", "1]"]


def _merged_index(folder: Path, emb: np.ndarray, per_recording: int = 300) -> Path:
    """An index folder as `biolingual index` leaves it after embedding ``emb`` (one part per recording of
    ``per_recording`` 10 s windows), merged."""
    import json

    from biolingual.atomic import atomic_write
    from biolingual.search.index import FORMAT_VERSION, merge

    (folder / "parts").mkdir(parents=True)
    meta = {
        "format": FORMAT_VERSION,
        "model": {"name": "synthetic", "fingerprint": "0" * 64, "dim": int(emb.shape[1])},
        "window_s": 10.0,
        "hop_s": 10.0,
        "sampling_rate": 48_000,
        "precision": ["float32"],
    }
    (folder / "index.json").write_text(json.dumps(meta))
    for r, start in enumerate(range(0, len(emb), per_recording)):
        rows = emb[start : start + per_recording]
        starts = 10.0 * np.arange(len(rows), dtype=np.float64)
        arrays = dict(
            embeddings=rows,
            starts=starts,
            ends=starts + 10.0,
            path=np.array(str(folder / f"rec{r:04d}.wav")),
            size=np.array(0),
            mtime=np.array(0.0),
            precision=np.array("float32"),
        )
        atomic_write(folder / "parts" / f"{r:08d}.npz", lambda f, a=arrays: np.savez(f, **a))
    merge(folder)
    return folder


def test_a_saved_faiss_index_of_other_parameters_is_built_again(tmp_path):
    """The faiss index is built once and saved in merged/; one saved under other build parameters (as an older
    version saved it: stamped with merged/parts.json, which is always [] since format 2) is built again with the
    current ones, not searched; the new one is then read back, not built a third time."""
    import faiss

    from biolingual.search.index import load_index
    from biolingual.search.query import _faiss_for, faiss_factory

    index = load_index(_merged_index(tmp_path / "index", _clustered(2500, 32, 8)))
    merged = index.folder / "merged"
    faiss.write_index(faiss.index_factory(32, "IVF4,PQ4x4fs"), str(merged / "faiss_ivfpq.index"))
    (merged / "faiss_ivfpq.json").write_text((merged / "parts.json").read_text())
    fresh = faiss.index_factory(32, faiss_factory(2500, 32))  # what the current build makes of these windows

    searcher = _faiss_for(index, progress=False)
    built = faiss.extract_index_ivf(searcher.index)
    assert (built.nlist, built.code_size) == (fresh.nlist, fresh.code_size) != (4, 2)
    saved = (merged / "faiss_ivfpq.index").stat().st_mtime_ns
    again = faiss.extract_index_ivf(_faiss_for(index, progress=False).index)
    assert (merged / "faiss_ivfpq.index").stat().st_mtime_ns == saved and again.nlist == fresh.nlist


def test_faiss_search_gives_the_exact_searchs_rows_and_scores():
    """Re-ranked exactly as exact search ranks (float64 cosines, ties by row): where the candidates hold the exact
    top k, the approximate search returns the same rows with the same scores, so comparing `--method faiss` with
    `--method exact` (as docs/search.md suggests) shows the same windows scored the same."""
    emb = _clustered(6000, 64, 9)
    emb[100:140] = emb[99]  # exact duplicates: equal cosines, which must come in row order
    queries = np.concatenate([emb[[99]].astype(np.float32), _unit(np.random.default_rng(4).standard_normal((4, 64)))])
    searcher = FaissSearcher.build(emb, nlist=16, progress=False, nprobe=16, rerank=120)  # every row a candidate
    approx_s, approx = searcher.search(queries, 50)
    exact_s, exact = exact_topk(emb, queries, 50)
    np.testing.assert_array_equal(approx, exact)
    np.testing.assert_array_equal(approx_s, exact_s)
