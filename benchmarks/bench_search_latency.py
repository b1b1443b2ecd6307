"""Search latency: top-50 per query over N windows of 512-d float16 embeddings, faiss vs exact search.

The reference is exact search (``exact_topk``: every window scored, chunked float16 -> float32 cosines)
on the same embeddings and queries, measured in the same run. Ours is the library's ``FaissSearcher``
(IVF with 4-bit fast-scan PQ codes, then RERANK x k candidates ranked as ``exact_topk`` ranks them, from the
stored float16 embeddings). Both are warmed up on the same 5 queries before they are timed, so neither
pays for first-touch page faults or thread start-up the other does not. Reported: median ms per query
(one query per call, as the CLI does), recall@50 of faiss against exact, the speed-up over exact, and
the memory each needs. Target (issue 8): <= 100 ms per query at recall@50 >= 0.95 over 10,000,000 windows.

The embeddings are synthetic: clustered unit vectors (2,000 clusters; calls of a kind cluster), not
uniform noise, and not real recordings; queries are perturbed cluster centres (a text query lies near,
not on, the audio it describes). The library's faiss defaults (nprobe, re-rank pool) were tuned on
these embeddings; real embeddings may cluster differently, so check recall on your own index.

    python benchmarks/bench_search_latency.py [--n 1000000] [--queries 50] [--exact-queries 10]
        [--settings NPROBE:RERANK ...] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import tempfile
import time
from pathlib import Path

import _common as c
import numpy as np

from biolingual.search.query import FaissSearcher, exact_topk, recall_at_k

NAME = "search_latency"
DIM = 512
CLUSTERS = 2000


def synthetic_embeddings(path: Path, n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(float16 memmap [n, dim] of clustered unit vectors, the cluster centres), written in chunks; a complete
    file already at ``path`` (kept by --keep) is reused."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CLUSTERS, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    done = path.with_suffix(".done")
    if done.is_file():
        return np.load(path, mmap_mode="r"), centres
    emb = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, dim))
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        x = centres[rng.integers(0, CLUSTERS, m)] + rng.standard_normal((m, dim), dtype=np.float32) * (
            1.2 / np.sqrt(dim)
        )
        emb[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    emb.flush()
    done.touch()
    return np.load(path, mmap_mode="r"), centres


def per_query_ms(fn, queries: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    times, rows = [], []
    for q in queries:
        t = time.perf_counter()
        _, r = fn(q[None], k)
        times.append(time.perf_counter() - t)
        rows.append(r[0])
    return 1000 * c.median(times), np.stack(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="windows in the index")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument(
        "--exact-queries", type=int, default=10, help="queries timed with exact search (slow at large n)"
    )
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument(
        "--settings",
        nargs="+",
        default=["default", "32:10", "64:20", "128:40", "256:40"],
        help="faiss settings to measure, each NPROBE:RERANK (lists visited, candidates re-ranked per hit), "
        "or 'default': the library's own choice for this many windows",
    )
    parser.add_argument("--workdir", default=None, help="where the embeddings file goes (default: a temp folder)")
    parser.add_argument(
        "--keep",
        default=None,
        help="a folder that keeps the embeddings and the faiss index for later runs "
        "(e.g. other --settings), instead of a temp folder",
    )
    args = parser.parse_args()
    import faiss

    load_start = c.load_average()
    with contextlib.nullcontext(args.keep) if args.keep else tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        Path(tmp).mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        emb, centres = synthetic_embeddings(Path(tmp) / f"embeddings_{args.n}.npy", args.n, DIM)
        print(f"wrote {args.n:,} x {DIM} float16 embeddings in {time.perf_counter() - t:.0f} s")
        rng = np.random.default_rng(1)
        queries = centres[rng.integers(0, CLUSTERS, args.queries)] + rng.standard_normal((args.queries, DIM)).astype(
            np.float32
        ) * (0.8 / np.sqrt(DIM))
        queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)

        per_query_ms(lambda q, k: exact_topk(emb, q, k), queries[:5], args.k)  # warm-up, as for faiss below
        with c.OtherLoad() as exact_load:
            exact_ms, _ = per_query_ms(lambda q, k: exact_topk(emb, q, k), queries[: args.exact_queries], args.k)
        _, exact_rows = exact_topk(emb, queries, args.k)  # all queries at once: the recall reference
        print(f"exact: {exact_ms:.0f} ms per query")

        kept_index, kept_build = Path(tmp) / f"faiss_{args.n}.index", Path(tmp) / f"faiss_{args.n}.json"
        if kept_index.is_file() and kept_build.is_file():
            searcher = FaissSearcher(faiss.read_index(str(kept_index)), emb)
            build_s, build_share = json.loads(kept_build.read_text())["build_s"], None
            print(f"faiss index read from {kept_index} (built in {build_s:.0f} s)")
        else:
            t = time.perf_counter()
            with c.OtherLoad() as build_load:
                searcher = FaissSearcher.build(emb, progress=True)
            build_s, build_share = time.perf_counter() - t, build_load.share
            if args.keep:
                faiss.write_index(searcher.index, str(kept_index))
                kept_build.write_text(json.dumps({"build_s": build_s}))
        index_bytes = len(faiss.serialize_index(searcher.index))
        print(f"faiss build {build_s:.0f} s, index {index_bytes / 2**20:.0f} MiB")
        rows = []
        for setting in args.settings:
            if setting == "default":  # what `biolingual search` uses for an index of this size
                defaults = FaissSearcher(searcher.index, emb)
                nprobe, rerank = defaults.index.nprobe, defaults.rerank
            else:
                nprobe, rerank = (int(x) for x in setting.split(":"))
            searcher.index.nprobe, searcher.rerank = nprobe, rerank
            per_query_ms(searcher.search, queries[:5], args.k)  # warm-up
            with c.OtherLoad() as load:
                ms, approx = per_query_ms(searcher.search, queries, args.k)
            recall = recall_at_k(approx, exact_rows)
            rows.append(
                {
                    "default": setting == "default",
                    "nprobe": nprobe,
                    "rerank": rerank,
                    "ms_per_query": ms,
                    "recall_at_k": recall,
                    "speedup_vs_exact": exact_ms / ms,
                    "other_load": load.share,
                }
            )
            print(
                f"nprobe {nprobe}, re-rank {rerank}x: {ms:.1f} ms per query, recall@{args.k} {recall:.3f}, "
                f"{exact_ms / ms:.0f}x exact"
            )

    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": c.machine_info(),
        "n": args.n,
        "dim": DIM,
        "k": args.k,
        "queries": args.queries,
        "exact_ms_per_query": exact_ms,
        "exact_memory_bytes": args.n * DIM * 2,
        "faiss_index_bytes": index_bytes,
        "faiss_nlist": searcher.index.nlist,
        "faiss_build_s": build_s,
        "rows": rows,
        "load_average": [load_start, c.load_average()],
        "other_load_exact": exact_load.share,
        "other_load_build": build_share,
        "exact_warmup_queries": 5,
        "scores": "float32 cosines",  # what older results files lack
    }
    header = [
        "search",
        "nprobe / re-rank",
        "ms per query (median)",
        f"recall@{args.k} vs exact",
        "speed-up vs exact",
        "memory",
    ]
    table = [
        ["exact (reference)", "—", f"{exact_ms:,.0f}", "1.000", "1.00x", f"{args.n * DIM * 2 / 2**20:,.0f} MiB float16"]
    ]
    table += [
        [
            "faiss IVF-PQ4fs + re-rank" + (" (library default)" if r["default"] else ""),
            f"{r['nprobe']} / {r['rerank']}x",
            f"{r['ms_per_query']:.1f}",
            f"{r['recall_at_k']:.3f}",
            c.fmt_ratio(r["speedup_vs_exact"]),
            f"{index_bytes / 2**20:,.0f} MiB codes + float16 rows read for re-ranking",
        ]
        for r in rows
    ]
    md = (
        f"Top-{args.k} over {args.n:,} windows of {DIM}-d embeddings, {args.queries} queries "
        f"(exact timed on {args.exact_queries}); faiss nlist {searcher.index.nlist}, built in {build_s:.0f} s.\n\n"
        + c.markdown_table(header, table)
    )
    paths = c.write_outputs(NAME if args.n == 1_000_000 else f"{NAME}_{args.n}", result, md)
    print(md)
    print("wrote", *paths)


if __name__ == "__main__":
    main()
