"""Data pipeline: records/s through decode, resample, FLAC encode and shard write, vs bare soundfile
decoding of the same input files (the floor this work cannot beat: every record must be decoded).

Inputs are synthetic 10 s calls written as 44.1 kHz stereo files (mp3 by default, like most archive
audio). Three measurements, interleaved in rounds:
- reference: ``soundfile.read`` of every file, one thread;
- process (1 thread): biolingual.audio decode + mono + resample to 48 kHz (data_pipeline.clips),
  FLAC encode and tar write, one record after another: the per-record work;
- build: the whole ``data_pipeline.build`` on a local-folder source (manifest, staging, packing,
  ``download.concurrency`` worker threads).

    python benchmarks/bench_pipeline.py [--records 48] [--format mp3] [--seconds 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import tempfile
from pathlib import Path

import _common as c
import numpy as np
import soundfile as sf

from data_pipeline.build import build
from data_pipeline.clips import make_clips
from data_pipeline.config import resolve_config
from data_pipeline.shards import flac_bytes, write_tar

NAME = "pipeline"
RATE_IN = 44_100


def make_inputs(folder: Path, n: int, seconds: float, fmt: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    clips = c.synthetic_clips(n, seconds=seconds, sampling_rate=RATE_IN)
    paths = []
    for i, x in enumerate(clips):
        path = folder / f"rec_{i:04d}.{fmt}"
        sf.write(path, np.stack([x, 0.7 * x], axis=1), RATE_IN, format=fmt.upper())
        paths.append(path)
    return paths


def run(n_records: int = 48, fmt: str = "mp3", seconds: float = 10.0, repeats: int = 3, workers: int = 2) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench_pipeline_"))
    try:
        paths = make_inputs(work / "in" / "Synthetic Caller", n_records, seconds, fmt)  # folder name = species
        config = resolve_config(
            {
                "sources": [{"type": "local", "path": str(work / "in"), "license": "cc-by"}],
                "audio": {"few_recordings": 0},  # one 10 s clip per record
                "splits": {"valid": 0, "test": 0, "unseen_species": 0},
                "download": {"concurrency": workers},
            }
        )
        counter = {"build": 0}

        def reference():
            for p in paths:
                sf.read(p, dtype="float32")

        def process():
            samples = []
            for i, p in enumerate(paths):
                clips = make_clips(p, 48_000, 10.0, 1, 1.0, 2.0, -60.0)
                samples.append((f"k{i}", {"flac": flac_bytes(clips.chunks[0], 48_000), "json": b'{"text": ["x"]}'}))
            write_tar(work / "process.tar", samples)

        def full_build():
            counter["build"] += 1
            summary = build(config, work / f"out{counter['build']}", progress=False)
            written = sum(n for _, stage, n in summary["stages"] if stage == "written")
            if written != n_records:  # a sanity check of the work done, not of the time
                raise RuntimeError(f"the build wrote {written} of {n_records} records: {summary}")

        reference(), process()  # warm-up (and the page cache)
        with c.OtherLoad() as load:
            times = c.time_interleaved({"reference": reference, "process": process, "build": full_build}, repeats)
        rates = {k: n_records / c.median(v) for k, v in times.items()}
        return {
            "name": NAME,
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": c.machine_info(),
            "load_average": c.load_average(),
            "other_load_share": load.share,
            "records": n_records,
            "format": fmt,
            "seconds": seconds,
            "input_rate": RATE_IN,
            "workers": workers,
            "repeats": repeats,
            "times": times,
            "records_per_s": rates,
            "ratio_process": rates["process"] / rates["reference"],
            "ratio_build": rates["build"] / rates["reference"],
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def markdown(r: dict) -> str:
    rows = [
        ["bare soundfile decode (reference, 1 thread)", c.fmt_rate(r["records_per_s"]["reference"]), "1.00x"],
        [
            "decode + mono + resample + FLAC + tar (1 thread)",
            c.fmt_rate(r["records_per_s"]["process"]),
            c.fmt_ratio(r["ratio_process"]),
        ],
        [
            f"full build, local source ({r['workers']} worker threads)",
            c.fmt_rate(r["records_per_s"]["build"]),
            c.fmt_ratio(r["ratio_build"]),
        ],
    ]
    share = "—" if r["other_load_share"] is None else f"{100 * r['other_load_share']:.0f}%"
    return "\n".join(
        [
            f"{r['records']} records of {r['seconds']:.0f} s, {r['input_rate'] / 1000:.1f} kHz stereo {r['format']} -> "
            f"48 kHz mono FLAC shards; median of {r['repeats']} interleaved rounds; run of {r['date']}.",
            "",
            c.markdown_table(["", "records/s", "vs reference"], rows),
            "",
            f"Other processes used {share} of the machine's CPUs during the measurement (load average "
            f"{r['load_average']}).",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=48)
    parser.add_argument("--format", default="mp3", choices=["mp3", "wav", "flac", "ogg"])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    result = run(args.records, args.format, args.seconds, args.repeats, args.workers)
    md = markdown(result)
    json_path, md_path = c.write_outputs(NAME, result, md)
    print(md)
    print(f"\nwrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
