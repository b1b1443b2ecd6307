"""Top-k cosine search over an index: exact for small indexes, faiss IVF-PQ plus exact re-ranking for large ones.

In: the stored float16 rows (memory-mapped) and L2-normalised float32 queries. Out: (scores, rows), best first.
Nothing here imports torch: a process that searches by an embedding or by an index row (no text to embed)
starts without it (tests/test_search_query.py checks).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from ..atomic import atomic_write, atomic_write_text
from ..extras import require
from .index import IndexData

EXACT_BELOW = 500_000  # windows; above this "auto" uses faiss
CHUNK = 131_072  # rows converted from float16 at a time where every row's cosine is wanted: bounded memory
# rows below which a scan runs on one thread: a faiss re-rank's few thousand candidates take ~0.5 ms on one core, and
# waiting for a second thread on a loaded machine cost more than that
SCAN_THREADED_FROM = 16_384
SCAN_SLACK = 1e-5  # arithmetic error allowed, beyond the query's rounding, between the scan's cosines and ours

log = logging.getLogger(__name__)


@dataclass
class Hit:
    file: str
    start: float  # seconds
    end: float
    score: float  # cosine similarity for search, probability for detect
    query: str  # the text query, example file or label


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to norm 1 (a zero row stays zero), as float32. Divided in float64, so that a row
    already of norm 1 in float32 comes back unchanged: a head's stored direction scores exactly as its seed."""
    x = np.asarray(x, np.float64)
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), np.finfo(np.float32).tiny)).astype(np.float32)


def cosines(rows: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """[Q, R] cosine similarities in float32, within [-1, 1] (a float32 product: what scoring every window of
    an index, as agile heads do, can afford; :func:`exact_topk` ranks its candidates by :func:`_cosines64`).

    Stored float16 rows are not exactly unit vectors (rounding moves a 512-d row's norm by up to ~5e-4),
    so a plain dot product with a query equal to a stored window could read 1.0001; the rows are
    re-normalised in float32 after the cast, and what float32 rounding still leaves outside [-1, 1] is clipped.
    """
    block = np.asarray(rows, np.float32)
    q = _unit(queries)
    # dividing the [Q, R] scores by the row norms, not the [R, D] rows: one pass over the block fewer
    norms = np.maximum(np.sqrt(np.einsum("ij,ij->i", block, block)), np.finfo(np.float32).tiny)
    return np.clip((q @ block.T) / norms, -1.0, 1.0)


def _cosines64(rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Cosines [R] of ``rows`` with the unit ``query`` in float64: a row's value does not depend on which other
    rows are scored with it (a float32 product rounds a row differently in a block of another shape, so the
    exact search's candidates, re-scored alone, could be ordered differently from the whole index's rows)."""
    block = np.asarray(rows, np.float64)
    norms = np.maximum(np.sqrt(np.einsum("ij,ij->i", block, block)), np.finfo(np.float32).tiny)
    # einsum, not ``block @ query``: BLAS splits a product of a few hundred rows over its threads, which on a loaded
    # machine waited ~8 ms per call for the other thread (benchmarks/bench_store.py), for ~0.1 ms of work
    return np.clip(np.einsum("ij,j->i", block, query.astype(np.float64)) / norms, -1.0, 1.0)


def _scan(embeddings: np.ndarray, query: np.ndarray, count: int, inner: bool = False) -> tuple[np.ndarray, float]:
    """Rows of the ``count`` largest cosines (``inner``: inner products) of ``query`` (already cast to the rows'
    dtype), and the smallest of those values among them: every row scored by numkong's SIMD kernels on the float16
    rows as they are stored (every core), where converting them to float32 first cost ~4x more than the products
    themselves. The inner product skips the rows' lengths (~15% less time than the cosine). On 100,000 512-d rows
    this took 15 ms against 19 ms for usearch's exact search of the same array (which perch-hoplite uses), and
    usearch's extension loaded before faiss made faiss.index_factory crash the process (SIGSEGV). Fewer than
    :data:`SCAN_THREADED_FROM` rows (a faiss re-rank's candidates) are scanned on one thread."""
    import numkong  # a core dependency; imported here, at first use

    threads = 1 if len(embeddings) < SCAN_THREADED_FROM else os.cpu_count() or 1
    values = np.asarray(numkong.cdist(embeddings, query[None], metric="dot" if inner else "angular", threads=threads))[
        :, 0
    ]
    scores = values if inner else 1.0 - values  # angular: 1 - cosine
    count = min(count, len(scores))
    rows = np.argpartition(-scores, count - 1)[:count] if count < len(scores) else np.arange(len(scores))
    return rows.astype(np.int64), float(scores[rows].min()) if len(rows) else 1.0


def exact_topk(
    embeddings: np.ndarray, queries: np.ndarray, k: int, norm_deviation: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(scores [Q, k] float32, row indices [Q, k]) of the largest cosines (float64), best first, ties by row; exact.

    A scan (:func:`_scan`) of the stored rows with the query rounded to their precision picks a pool of
    candidates; the pool is re-scored (:func:`_cosines64`), and is known to hold the true top k when
    the lowest scan cosine in it, plus the most the rounding can move a cosine (2 |q - round(q)|, plus
    :data:`SCAN_SLACK`), is still below the k-th re-scored cosine: every row outside it scores lower. Otherwise
    the pool grows 4x and the scan runs again (near-ties, duplicated windows), up to every row.

    ``norm_deviation`` (the largest | |row| - 1 |, :attr:`IndexData.norm_deviation`) lets the scan use the inner
    product: a row outside the pool then has a cosine of at most floor / (1 -+ deviation) + |q - round(q)|.
    """
    queries = _unit(np.ascontiguousarray(queries, dtype=np.float32))
    n = len(embeddings)
    k = min(k, n)
    stored = embeddings if embeddings.dtype in (np.float16, np.float32) else np.asarray(embeddings, np.float32)
    out_s = np.empty((len(queries), k), np.float32)
    out_i = np.empty((len(queries), k), np.int64)
    inner = norm_deviation is not None and norm_deviation < 0.01
    for qi, q in enumerate(queries):
        cast = q.astype(stored.dtype)
        rounding = float(np.linalg.norm(q - cast.astype(np.float32)))
        pool = min(n, max(2 * k, k + 16))
        while True:
            rows, floor = _scan(stored, cast, pool, inner)
            if inner:  # the bound on the cosine of any row the scan left out
                floor = floor / (1 - norm_deviation) if floor >= 0 else floor / (1 + norm_deviation)
                margin = rounding + SCAN_SLACK
            else:
                margin = 2 * rounding + SCAN_SLACK
            rows = np.sort(rows)  # in row order: the memory map is read in order, and stable sorting breaks ties by row
            scores = _cosines64(stored[rows], q)
            top = np.argsort(-scores, kind="stable")[:k]
            if pool >= n or (len(top) == k and floor + margin < scores[top[-1]]):
                break
            pool = min(n, 4 * pool)
        out_s[qi], out_i[qi] = scores[top], rows[top]  # float64 rounded once to float32
    return out_s, out_i


FAISS_MIN = 2_000  # windows; below this faiss cannot train its quantisers well and exact search is instant anyway
# the build's version, saved with the faiss index (see _faiss_for): raise it when the build changes in a way its
# factory string does not show (training sample, seed), so that indexes saved by the older build are built again
FAISS_BUILD = 2


def faiss_factory(n: int, d: int, nlist: int | None = None, m: int | None = None) -> str:
    """The faiss index built for ``n`` windows of ``d`` dimensions (``nlist`` and ``m`` given: a test's or
    benchmark's own): IVF over about sqrt(n) lists (faiss wants >= 39 training points per list) of d/8 4-bit
    product-quantiser codes (32 bytes per 512-d window, 43 MB per million, scanned with SIMD: "fast scan")."""
    nlist = nlist or max(1, min(65536, int(math.sqrt(n)), n // 39))
    return f"IVF{nlist},PQ{m or max(2, d // 8)}x4fs"


def default_rerank(n: int) -> int:
    """Candidates re-ranked per hit wanted. The more windows, the more near-equal neighbours the 32-byte PQ
    codes must tell apart, so the pool grows with sqrt(n): 40x at 1M windows (recall@50 1.000; 0.997 when the
    re-rank was float32), 126x at 10M (100x already gives 1.000 there, where 40x gives 0.902; docs/performance.md)."""
    return int(min(400, max(40, round(40 * math.sqrt(n / 1_000_000)))))


class FaissSearcher:
    """IVF-PQ candidates (32-byte codes per 512-d window) re-ranked exactly: the candidates' stored float16 rows
    are searched by :func:`exact_topk`, so the hits are those exact search would give among them, with the same
    float64 cosines and ties broken by row.

    The PQ codes alone give approximate scores; re-ranking ``rerank`` x k candidates with the real
    embeddings restores the order, which is what lifts recall@k close to exact search
    (measured in docs/performance.md). The re-rank scans the candidates with numkong on one thread: at 1M windows
    on a loaded machine the float32 BLAS product it replaced took 20-32 ms per query (BLAS's two threads waiting
    for each other), numkong 1.4 ms; faiss's own search took under 1 ms.
    """

    def __init__(self, index, embeddings: np.ndarray, nprobe: int | None = None, rerank: int | None = None):
        self.index, self.embeddings = index, embeddings
        self.rerank = rerank or default_rerank(len(embeddings))
        # about 6% of the lists, at least 64: recall@50 1.000 at 1M windows and at 10M (docs/performance.md)
        self.index.nprobe = nprobe or min(index.nlist, max(64, index.nlist // 16))

    @classmethod
    def build(
        cls,
        embeddings: np.ndarray,
        nlist: int | None = None,
        m: int | None = None,
        train_size: int | None = None,
        seed: int = 0,
        progress: bool = True,
        **kwargs,
    ) -> FaissSearcher:
        faiss = _faiss()
        n, d = embeddings.shape
        index = faiss.index_factory(d, faiss_factory(n, d, nlist, m), faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(n, size=min(n, train_size or 50 * index.nlist), replace=False))
        index.train(np.asarray(embeddings[sample], dtype=np.float32))
        for start in tqdm(range(0, n, CHUNK), desc="faiss add", disable=not progress):
            index.add(np.asarray(embeddings[start : start + CHUNK], dtype=np.float32))
        return cls(index, embeddings, **kwargs)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, len(self.embeddings))
        _, candidates = self.index.search(queries, k * self.rerank)
        out_s = np.full((len(queries), k), -np.inf, np.float32)
        out_i = np.full((len(queries), k), -1, np.int64)
        for q, (query, cand) in enumerate(zip(queries, candidates)):
            cand = np.unique(cand[cand >= 0])  # sorted rows read the memory map in order, and ties go by row
            if len(cand):
                scores, top = exact_topk(self.embeddings[cand], query[None], k)
                out_s[q, : top.shape[1]], out_i[q, : top.shape[1]] = scores[0], cand[top[0]]
        return out_s, out_i


def _faiss():
    """faiss, imported on first use: only large indexes need it (the search extra)."""
    return require("faiss", "search", "faiss search (--method faiss, or auto at 500,000+ windows)")


def _faiss_for(index: IndexData, progress: bool) -> FaissSearcher:
    """The index's faiss searcher, built once and saved beside the merged embeddings.

    Saved with a stamp naming what it was built from and how: the embeddings file (size, mtime), the factory and
    :data:`FAISS_BUILD`. A saved index whose stamp differs (other embeddings, or an older build's parameters, such
    as the stamps before this one, which held merged/parts.json) is built again. A merge replaces merged/ whole, so
    a grown index never finds the old faiss index anyway."""
    faiss = _faiss()
    folder = index.folder / "merged"
    path, stamp = folder / "faiss_ivfpq.index", folder / "faiss_ivfpq.json"
    st = (folder / "embeddings.npy").stat()
    n, d = index.embeddings.shape
    expected = json.dumps(
        {"build": FAISS_BUILD, "factory": faiss_factory(n, d), "embeddings": [st.st_size, st.st_mtime_ns]}
    )
    if path.is_file() and stamp.is_file() and stamp.read_text() == expected:
        return FaissSearcher(faiss.read_index(str(path)), index.embeddings)
    log.info("building the faiss index for %d windows (once)", len(index))
    searcher = FaissSearcher.build(index.embeddings, progress=progress)
    atomic_write(path, lambda f: faiss.write_index(searcher.index, faiss.PyCallbackIOWriter(f.write)))
    # last: a crash before it leaves the index to be built again, never a stale one used
    atomic_write_text(stamp, expected)
    return searcher


DEFAULT_MAX_CALL_S = 30.0  # a merged call longer than this is split: a chorus should not become one 10-minute "call"


def merge_intervals(
    rows: list[tuple[float, float, float]], gap: float = 0.0, max_length: float | None = None
) -> list[tuple[float, float, float, float]]:
    """Union intervals (start, end, score) that overlap or lie within ``gap`` seconds of each other, a union
    growing no longer than ``max_length`` seconds (an interval that would take it past starts the next one).

    Returns (start, end, best score, start of the best interval), sorted by start.
    """
    merged: list[list[float]] = []
    for start, end, score in sorted(rows):
        if (
            merged
            and start <= merged[-1][1] + gap
            and (max_length is None or max(end, merged[-1][1]) - merged[-1][0] <= max_length)
        ):
            last = merged[-1]
            last[1] = max(last[1], end)
            if score > last[2]:
                last[2], last[3] = score, start
        else:
            merged.append([start, end, score, start])
    return [tuple(m) for m in merged]


def merge_overlapping_hits(index: IndexData, scores: np.ndarray, rows: np.ndarray, query: str) -> list[Hit]:
    """Non-maximum merging: in score order, a window overlapping no hit starts a new hit; one overlapping
    a single hit's best window extends that hit's span; any other overlapping window is absorbed. So
    hits never overlap, and a hit spans at most its best window plus one window either side."""
    hits: list[list] = []  # [best start, best end, span start, span end, score, file id]
    by_file: dict[int, list[list]] = {}
    for s, r in sorted(zip(scores.tolist(), rows.tolist()), key=lambda x: -x[0]):
        if r < 0:
            continue
        f, a, b = int(index.file_ids[r]), float(index.starts[r]), float(index.ends[r])
        touching = [h for h in by_file.get(f, []) if a < h[3] and b > h[2]]
        if not touching:
            hit = [a, b, a, b, s, f]
            by_file.setdefault(f, []).append(hit)
            hits.append(hit)
        elif len(touching) == 1 and a < touching[0][1] and b > touching[0][0]:
            touching[0][2], touching[0][3] = min(touching[0][2], a), max(touching[0][3], b)
    return [Hit(index.files[h[5]], h[2], h[3], h[4], query) for h in hits]


def search(
    index: IndexData,
    queries: np.ndarray,
    names: list[str],
    k: int = 50,
    method: str = "auto",
    merge: bool = True,
    progress: bool = True,
) -> list[list[Hit]]:
    """Top ``k`` hits per query (rows of ``queries``: L2-normalised embeddings), best first.

    ``method``: "exact", "faiss" or "auto" (exact below EXACT_BELOW windows). With ``merge``,
    overlapping windows among the top hits become one hit spanning them (scored by its best window),
    and more candidates are fetched until there are ``k`` separate hits or the index is exhausted.
    """
    if len(index) == 0:
        return [[] for _ in names]
    if method == "auto":
        method = "exact" if len(index) < EXACT_BELOW else "faiss"
    if method not in ("exact", "faiss"):
        raise ValueError(f"method must be exact, faiss or auto, got '{method}'")
    if method == "faiss" and len(index) < FAISS_MIN:
        log.warning("only %d windows: searching exactly instead of with faiss", len(index))
        method = "exact"
    find = (
        _faiss_for(index, progress).search
        if method == "faiss"
        else (lambda q, kk: exact_topk(index.embeddings, q, kk, index.norm_deviation))
    )
    overlap = max(1, math.ceil(index.meta["window_s"] / index.meta["hop_s"]))
    results = []
    for query, name in zip(np.asarray(queries, np.float32), names):
        fetch = k * overlap if merge else k
        while True:
            s, r = find(query[None], min(fetch, len(index)))
            if not merge:
                hits = [
                    Hit(index.files[index.file_ids[i]], float(index.starts[i]), float(index.ends[i]), float(v), name)
                    for v, i in zip(s[0], r[0])
                    if i >= 0
                ]
                break
            hits = merge_overlapping_hits(index, s[0], r[0], name)
            if len(hits) >= k or fetch >= len(index):
                break
            fetch *= 4
        results.append(hits[:k])
    return results


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of the exact top-k rows that the approximate search also returned."""
    return float(np.mean([len(set(a) & set(e)) / len(e) for a, e in zip(approx, exact)]))
