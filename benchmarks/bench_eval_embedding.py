"""Evaluation embedding extraction: clips/s of the eval runners' cached extractor vs transformers per clip.

Ours is what ``eval.beans`` / ``eval.zero_shot`` run when the cache is cold: ``EmbeddingCache.embed``
on the clips' files (decoding in threads, batched front end and forward passes, each batch written to
the SQLite cache). The reference is the per-clip path transformers documents: decode the file (the
same ``biolingual.audio.load_audio``), ``ClapFeatureExtractor(clip, sampling_rate=48000)``, then
``ClapModel.get_audio_features`` on that one clip. Same model (one ``ClapModel`` for both), same files.
We also report a warm-cache re-run (what a learning-rate grid or a resumed run costs).

No weights can be downloaded here, so each preset is freshly initialised (seed 0); the compute per
clip depends on the architecture, not on the weights.

    python benchmarks/bench_eval_embedding.py [--clips 64] [--presets tiny base] [--reference-clips N]
        [--seconds 5] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import _common as c
import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for eval/

import biolingual
from biolingual.audio import load_audio
from biolingual.model import pooled_output
from eval.embedding_cache import EmbeddingCache
from eval.types import Segment

NAME = "eval_embedding"
FILE_RATE = 44_100  # BEANS' most common rate: both paths resample to 48 kHz
DEFAULT_REFERENCE_CLIPS = {"base": 24}


def compare_extraction(
    preset: str,
    n_clips: int,
    reference_audio: Callable[[], Iterable[np.ndarray]],
    n_reference: int,
    embed: Callable[[biolingual.BioLingual, EmbeddingCache], torch.Tensor],
) -> dict:
    """One preset's row: the per-clip transformers reference vs our cached extractor, cold and warm.

    ``reference_audio()`` yields the first ``n_reference`` clips as 48 kHz mono arrays, decoded the way a
    transformers user would (the reference's decoding is part of what it is timed on); ``embed(model, cache)``
    is our path on all ``n_clips`` clips (in the same order), returning their embeddings. The BEANS-Zero and
    BirdSet benchmarks call this with their own data, so the three measure the same thing the same way.
    """
    model = biolingual.create(preset, tokenizer_texts=["The sound of a Barred Owl", "a bird singing"], seed=0)
    extractor = model.front_end.config.to_feature_extractor()
    n_params = sum(p.numel() for p in model.clap.audio_model.parameters()) + sum(
        p.numel() for p in model.clap.audio_projection.parameters()
    )
    tmp = tempfile.TemporaryDirectory()

    def reference():
        out = []
        with torch.inference_mode():
            for clip in reference_audio():
                x = extractor(clip, sampling_rate=48_000, return_tensors="pt")
                out.append(
                    pooled_output(model.clap.get_audio_features(input_features=x["input_features"].to(model.device)))
                )
        return torch.cat(out)

    runs = {"n": 0}

    def ours_cold():
        runs["n"] += 1
        with EmbeddingCache(Path(tmp.name) / f"cold{runs['n']}.sqlite") as cache:
            return embed(model, cache)

    with EmbeddingCache(Path(tmp.name) / "warm.sqlite") as warm_cache:
        embed(model, warm_cache)  # fills it

        def ours_warm():
            return embed(model, warm_cache)

        ref_emb = reference()  # warm-up, and the embeddings to compare
        ours_emb = ours_cold()
        with c.OtherLoad() as other:
            times = c.time_interleaved({"reference": reference, "cold": ours_cold, "warm": ours_warm}, 3)
    agreement = float(
        torch.nn.functional.cosine_similarity(ref_emb.float().cpu(), ours_emb[:n_reference], dim=-1).min()
    )
    ref_rate = n_reference / c.median(times["reference"])
    cold_rate, warm_rate = n_clips / c.median(times["cold"]), n_clips / c.median(times["warm"])
    model = None  # freed now (the functions above share the name, so not `del`)
    gc.collect()
    tmp.cleanup()
    return {
        "preset": preset,
        "audio_parameters": n_params,
        "device": str(biolingual.loading.default_device()),
        "reference": {"clips": n_reference, "times_s": times["reference"], "clips_per_s": ref_rate},
        "cold": {"clips": n_clips, "times_s": times["cold"], "clips_per_s": cold_rate},
        "warm": {"clips": n_clips, "times_s": times["warm"], "clips_per_s": warm_rate},
        "speedup_cold": cold_rate / ref_rate,
        "speedup_warm": warm_rate / ref_rate,
        "min_cosine_ours_vs_reference": agreement,
        "other_processes_cpu_share": other.share,
    }


def reference_clip_count(preset: str, available: int, asked: int | None) -> int:
    """How many clips the reference is timed on: ``--reference-clips``, else the preset's default, else all."""
    return min(available, asked or DEFAULT_REFERENCE_CLIPS.get(preset, available))


def bench_preset(
    preset: str, files: list[str], seconds: float, reference_clips: int, batch_size: int, workers: int
) -> dict:
    segments = [Segment(f, 0.0, seconds, seconds) for f in files]
    return compare_extraction(
        preset,
        len(files),
        lambda: (load_audio(f, 48_000) for f in files[:reference_clips]),
        reference_clips,
        lambda model, cache: cache.embed(model, segments, batch_size=batch_size, workers=workers, progress=False)[0],
    )


def run(n_clips: int, presets, reference_clips: int | None, seconds: float, batch_size: int, workers: int) -> dict:
    c.quiet_transformers()
    with tempfile.TemporaryDirectory() as d:
        files = []
        for i, clip in enumerate(c.synthetic_clips(n_clips, seconds=seconds, sampling_rate=FILE_RATE)):
            files.append(str(Path(d) / f"clip{i:04d}.wav"))
            sf.write(files[-1], clip, FILE_RATE)
        rows = [
            bench_preset(p, files, seconds, reference_clip_count(p, n_clips, reference_clips), batch_size, workers)
            for p in presets
        ]
    return {
        **c.run_header(NAME),
        "clips": n_clips,
        "clip_seconds": seconds,
        "file_rate": FILE_RATE,
        "batch_size": batch_size,
        "workers": workers,
        "reference": "load_audio + ClapFeatureExtractor + ClapModel.get_audio_features, one clip at a time",
        "results": rows,
    }


def extraction_markdown(result: dict, notes: list[str], unit: str = "clips") -> str:
    """The table of :func:`compare_extraction` rows, then ``notes`` (what was measured on what) and the notes
    every such run shares: other processes' CPU share, and whether a GPU was there. ``unit``: clips or windows."""
    header = [
        "Preset (audio parameters)",
        f"Reference {unit}/s",
        "Ours, cold cache",
        "Ours, warm cache",
        "Speed-up (cold)",
        "Speed-up (warm)",
        "min cosine",
    ]
    rows = [
        [
            f"{r['preset']} ({c.fmt_params(r['audio_parameters'])})",
            f"{c.fmt_rate(r['reference']['clips_per_s'])} (on {r['reference']['clips']} {unit})",
            c.fmt_rate(r["cold"]["clips_per_s"]),
            c.fmt_rate(r["warm"]["clips_per_s"]),
            c.fmt_ratio(r["speedup_cold"]),
            c.fmt_ratio(r["speedup_warm"]),
            f"{r['min_cosine_ours_vs_reference']:.6f}",
        ]
        for r in result["results"]
    ]
    notes = list(notes)
    shares = [(r["preset"], r["other_processes_cpu_share"]) for r in result["results"]]
    if all(s is not None for _, s in shares):
        notes.append(
            "Other processes used "
            + ", ".join(f"{s:.0%} ({p})" for p, s in shares)
            + " of the machine's CPU time while these were timed."
        )
    if not result["gpu_available"]:
        notes.append("No GPU on this machine: both were timed on the CPU.")
    return c.markdown_table(header, rows) + "\n\n" + "\n".join(f"- {n}" for n in notes)


def device_of(result: dict) -> str:
    return result["results"][0]["device"] if result["results"] else "—"


def to_markdown(result: dict) -> str:
    return extraction_markdown(
        result,
        [
            f"{result['clips']} synthetic clips of {result['clip_seconds']:g} s written as {result['file_rate']} Hz "
            f"WAV files; median of 3 interleaved runs; ours in batches of {result['batch_size']} with "
            f"{result['workers']} decoding threads; device: {device_of(result)}.",
            "Reference: " + result["reference"] + ". Cold cache: a new cache file each run (everything computed and "
            "stored); warm cache: every embedding read back (a learning-rate grid, a resumed run).",
            "min cosine: the lowest cosine similarity between our embedding and the reference's for the same clip "
            "(1.0 = the same numbers).",
        ],
    )


def add_extraction_args(ap: argparse.ArgumentParser, unit: str = "clips") -> None:
    """The options every extraction benchmark takes (this one, BEANS-Zero, BirdSet): presets, how many
    ``unit`` the reference is timed on, our batch size and decoding threads."""
    ap.add_argument("--presets", nargs="+", default=["tiny", "base"], choices=["tiny", "base"])
    ap.add_argument(
        "--reference-clips",
        type=int,
        default=None,
        help=f"{unit} the reference is timed on (default: all; {DEFAULT_REFERENCE_CLIPS['base']} for base)",
    )
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)


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
