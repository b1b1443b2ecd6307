"""Loader: samples/s of biolingual.data.train_loader vs bare soundfile decoding of the same FLAC files.

The reference reads each FLAC sample of the shards with soundfile in one loop (the floor of what
decoding costs); ours streams the same shards through the full training loader (shard sampling,
shuffle, decode, crop, caption choice, batching, worker processes). Target: at least 0.7x.

    python benchmarks/bench_loader.py [--clips 256] [--batch-size 32] [--workers 0 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import tarfile
import tempfile
import time
from pathlib import Path

import _common as c
import soundfile as sf
from bench_training import write_shards

from biolingual.data import train_loader

NAME = "loader"
TARGET = 0.7


def bare_decode(folder: Path) -> tuple[int, float]:
    """Decode every .flac member of the shards with soundfile; (samples, seconds)."""
    start, n = time.perf_counter(), 0
    for shard in sorted(folder.glob("bench-*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar:
                if member.name.endswith(".flac"):
                    sf.read(io.BytesIO(tar.extractfile(member).read()), dtype="float32")
                    n += 1
    return n, time.perf_counter() - start


def ours(pattern: str, n: int, batch_size: int, workers: int) -> tuple[int, float]:
    steps = n // batch_size
    start, seen = time.perf_counter(), 0
    for batch in train_loader(pattern, batch_size=batch_size, steps_per_epoch=steps, workers=workers):
        seen += len(batch["text"])
    return seen, time.perf_counter() - start


def run(n_clips: int = 256, batch_size: int = 32, workers=(0, 2), repeats: int = 3) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pattern = write_shards(folder, n_clips)
        bare_decode(folder)  # warm the page cache
        rows = []
        for w in workers:
            ref_rates, our_rates = [], []
            with c.OtherLoad() as load:
                for _ in range(repeats):  # interleaved, so a slow spell hits both
                    n, s = bare_decode(folder)
                    ref_rates.append(n / s)
                    n, s = ours(pattern, n_clips, batch_size, w)
                    our_rates.append(n / s)
            ref, mine = c.median(ref_rates), c.median(our_rates)
            rows.append(
                {
                    "workers": w,
                    "reference_samples_per_s": ref,
                    "ours_samples_per_s": mine,
                    "ratio": mine / ref,
                    "other_load": load.share,
                }
            )
    return {
        "date": dt.date.today().isoformat(),
        "machine": c.machine_info(),
        "clips": n_clips,
        "batch_size": batch_size,
        "results": rows,
    }


def markdown(result: dict) -> str:
    rows = [
        [
            r["workers"],
            c.fmt_rate(r["reference_samples_per_s"]),
            c.fmt_rate(r["ours_samples_per_s"]),
            c.fmt_ratio(r["ratio"]),
            "—" if r["other_load"] is None else f"{100 * r['other_load']:.0f}%",
        ]
        for r in result["results"]
    ]
    table = c.markdown_table(
        [
            "loader workers",
            "bare soundfile decode samples/s (1 process)",
            "our loader samples/s",
            "ratio",
            "CPU taken by other processes",
        ],
        rows,
    )
    return (
        f"{result['clips']} FLAC clips of 10 s at 48 kHz in 4 shards, batches of {result['batch_size']}. "
        f"Target: ≥ {TARGET}x.\n\n{table}"
    )


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    result = run(args.clips, args.batch_size, tuple(args.workers), args.repeats)
    return c.report(NAME, result, markdown(result))


if __name__ == "__main__":
    main()
