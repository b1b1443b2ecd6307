"""BEANS-Zero embedding extraction: clips/s of ``eval.beans_zero`` vs transformers per clip, from the same Arrow file.

Ours is what ``python -m eval.beans_zero`` runs when the cache is cold: ``embed_examples`` reading the
examples' audio from a ``save_to_disk`` Arrow file (memory-mapped, only the rows it needs), the one
audio loader (checks, resampling to 48 kHz) in threads, batched front end and forward passes, each
batch written to the SQLite embedding cache. The reference is the per-clip path a transformers user
writes over the same file: take one row's ``audio`` list, resample it to 48 kHz (the same
``biolingual.audio.load_audio``), ``ClapFeatureExtractor(clip, sampling_rate=48000)``, then
``ClapModel.get_audio_features`` on that one clip. Same model (one ``ClapModel`` for both), same rows.
We also report a warm-cache re-run (another prompt choice, a repeated or resumed run).

The data are synthetic calls written in BEANS-Zero's schema at 16 kHz (the rate of most of its
components) by ``eval.beans_zero.make_fixture``. No weights can be downloaded here, so each preset is
freshly initialised (seed 0); the compute per clip depends on the architecture, not on the weights.

    python benchmarks/bench_beans_zero.py [--clips 64] [--presets tiny base] [--reference-clips N]
        [--seconds 5] [--batch-size 16]
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

from biolingual.audio import load_audio
from eval.beans_zero.data import LocalCopy
from eval.beans_zero.embed import embed_examples
from eval.beans_zero.make_fixture import RATE, make_row, write_rows

NAME = "beans_zero"


def bench_preset(preset: str, data: LocalCopy, reference_clips: int, batch_size: int, workers: int) -> dict:
    examples = data.examples

    def reference_audio():  # one row's audio list at a time, resampled to 48 kHz by the one audio loader
        for example, samples in data.iter_audio(examples[:reference_clips]):
            yield load_audio(samples, 48_000, sampling_rate=example.sample_rate)

    return compare_extraction(
        preset,
        len(examples),
        reference_audio,
        reference_clips,
        lambda model, cache: embed_examples(
            cache, model, data, examples, batch_size=batch_size, workers=workers, progress=False
        )[0],
    )


def run(n_clips: int, presets, reference_clips: int | None, seconds: float, batch_size: int, workers: int) -> dict:
    c.quiet_transformers()
    with tempfile.TemporaryDirectory() as d:
        rows = [
            make_row("unseen-species-cmn", "classification", f"species {i % 8}", clip, i)
            for i, clip in enumerate(c.synthetic_clips(n_clips, seconds=seconds, sampling_rate=RATE))
        ]
        data = LocalCopy(write_rows(Path(d) / "beans_zero", rows, "save_to_disk"))
        results = [
            bench_preset(p, data, reference_clip_count(p, n_clips, reference_clips), batch_size, workers)
            for p in presets
        ]
    return {
        **c.run_header(NAME),
        "clips": n_clips,
        "clip_seconds": seconds,
        "file_rate": RATE,
        "batch_size": batch_size,
        "workers": workers,
        "reference": "one row's audio from the Arrow file + load_audio to 48 kHz + ClapFeatureExtractor + "
        "ClapModel.get_audio_features, one clip at a time",
        "results": results,
    }


def to_markdown(result: dict) -> str:
    return extraction_markdown(
        result,
        [
            f"{result['clips']} synthetic clips of {result['clip_seconds']:g} s at {result['file_rate']} Hz in one "
            f"BEANS-Zero save_to_disk Arrow file; median of 3 interleaved runs; ours in batches of "
            f"{result['batch_size']} with {result['workers']} threads for the audio loader; device: "
            f"{device_of(result)}.",
            "Reference: " + result["reference"] + ". Cold cache: a new cache file each run (everything computed and "
            "stored); warm cache: every embedding read back.",
            "min cosine: the lowest cosine similarity between our embedding and the reference's for the same clip "
            "(1.0 = the same numbers).",
        ],
    )


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=5.0)
    add_extraction_args(ap)
    args = ap.parse_args(argv)
    result = run(args.clips, args.presets, args.reference_clips, args.seconds, args.batch_size, args.workers)
    return c.report(NAME, result, to_markdown(result))


if __name__ == "__main__":
    main()
