"""BirdSet runner embedding throughput: windows/s of ``eval.birdset``'s extraction vs transformers per clip.

Ours is what ``python -m eval.birdset`` runs when the cache is cold: the config read from its Arrow files
(``eval.birdset.data.read_split``: the ``test_5s`` windows and the event windows of ``train``), then
``EmbeddingCache.embed`` on those windows (each file decoded once in threads, batched front end and
forward passes, each batch written to the SQLite cache). The reference is the per-clip path
transformers documents, on the same windows: decode the file (the same ``biolingual.audio.load_audio``),
cut the 5 s window, ``ClapFeatureExtractor(window, sampling_rate=48000)``, then
``ClapModel.get_audio_features`` on that one window. Same model (one ``ClapModel`` for both). Also a
warm-cache re-run (what a repeated or resumed run, or linear after zero-shot, costs).

The data is the example config ``python -m eval.birdset --write-example-fixture`` writes (BirdSet's
schema, 32 kHz OGG, synthetic calls), written ``--copies`` times so there are enough windows. No
weights can be downloaded here, so each preset is freshly initialised (seed 0); the compute per window
depends on the architecture, not on the weights.

    python benchmarks/bench_birdset.py [--copies 2] [--presets tiny base] [--reference-clips N] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import _common as c

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for eval/

from bench_eval_embedding import (
    add_extraction_args,
    compare_extraction,
    device_of,
    extraction_markdown,
    reference_clip_count,
)

from eval.birdset.data import class_names, read_split
from eval.birdset.fixture import write_example_fixture
from eval.embedding_cache import load_segment

NAME = "birdset"


def windows(root: Path, copies: int) -> list:
    """The windows the runner embeds for test_5s and train, over ``copies`` copies of the example config."""
    segments = []
    for k in range(copies):
        folder = write_example_fixture(root / f"copy{k}")
        classes = class_names(folder, "test_5s")
        for split in ("test_5s", "train"):
            segments += read_split(folder, split, classes, root / "spill").segments
    return segments


def bench_preset(preset: str, segments: list, reference_clips: int, batch_size: int, workers: int) -> dict:
    return compare_extraction(
        preset,
        len(segments),
        lambda: (load_segment(s, 48_000) for s in segments[:reference_clips]),
        reference_clips,
        lambda model, cache: cache.embed(model, segments, batch_size=batch_size, workers=workers, progress=False)[0],
    )


def run(copies: int, presets, reference_clips: int | None, batch_size: int, workers: int) -> dict:
    c.quiet_transformers()
    with tempfile.TemporaryDirectory() as d:
        segments = windows(Path(d), copies)
        rows = [
            bench_preset(p, segments, reference_clip_count(p, len(segments), reference_clips), batch_size, workers)
            for p in presets
        ]
        n_files = len({s.path for s in segments})
    return {
        **c.run_header(NAME),
        "windows": len(segments),
        "files": n_files,
        "copies": copies,
        "batch_size": batch_size,
        "workers": workers,
        "reference": (
            "load_audio + 5 s window + ClapFeatureExtractor + ClapModel.get_audio_features, one window at a time"
        ),
        "results": rows,
    }


def to_markdown(result: dict) -> str:
    return extraction_markdown(
        result,
        [
            f"{result['windows']} windows of 5 s (the example config's test_5s windows and train event windows, "
            f"{result['copies']} copies) from {result['files']} 32 kHz OGG files; median of 3 interleaved runs; ours "
            f"in batches of {result['batch_size']} with {result['workers']} decoding threads; device: "
            f"{device_of(result)}.",
            "Reference: " + result["reference"] + ". Cold cache: a new cache file each run; warm cache: every "
            "embedding read back (a repeated run, or linear after zero-shot).",
            "min cosine: the lowest cosine similarity between our embedding and the reference's for the same window.",
        ],
        unit="windows",
    )


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=1, help="copies of the example config (72 windows each)")
    add_extraction_args(ap, unit="windows")
    args = ap.parse_args(argv)
    result = run(args.copies, args.presets, args.reference_clips, args.batch_size, args.workers)
    return c.report(NAME, result, to_markdown(result))


if __name__ == "__main__":
    main()
