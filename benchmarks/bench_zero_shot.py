"""Zero-shot inference: clips/s of model.zero_shot vs transformers' zero-shot-audio-classification pipeline.

The reference is ``pipeline("zero-shot-audio-classification")`` on the same saved model, called clip
by clip as its documentation shows (so it encodes all the labels again for every clip); ours is one
``model.zero_shot`` call on all the clips (labels encoded once, clips batched). Same model, clips,
labels and prompt template. Target: at least 5x the pipeline's clips/s.

No weights can be downloaded here, so each preset is freshly initialised (seed 0) with a tokenizer
trained on the prompts; the compute per clip depends on the architecture, not on the weights.

    python benchmarks/bench_zero_shot.py [--clips 200] [--labels 50] [--presets tiny base]
        [--pipeline-clips N] [--repeats 3] [--batch-size N]
"""

from __future__ import annotations

import argparse
import gc
import tempfile

import _common as c
import numpy as np
import torch
from transformers import pipeline

import biolingual
from biolingual.synthetic import SPECIES

NAME = "zero_shot"
TARGET = 5.0
TEMPLATE = "The sound of a {}"
# The pipeline is slow on big models on a CPU; by default it is timed on this many clips (ours always on all).
DEFAULT_PIPELINE_CLIPS = {"base": 40}

# The six synthetic species first, then plausible others: 50 candidate labels in all.
LABELS = list(SPECIES) + [
    "American Robin",
    "Northern Cardinal",
    "Blue Jay",
    "Black-capped Chickadee",
    "Carolina Wren",
    "Song Sparrow",
    "Red-winged Blackbird",
    "Mourning Dove",
    "Great Horned Owl",
    "Eastern Screech-Owl",
    "Common Raven",
    "American Crow",
    "Wood Thrush",
    "Hermit Thrush",
    "Northern Mockingbird",
    "Red-tailed Hawk",
    "Bald Eagle",
    "Canada Goose",
    "Mallard",
    "Sandhill Crane",
    "Wild Turkey",
    "Ruffed Grouse",
    "Pileated Woodpecker",
    "Downy Woodpecker",
    "Killdeer",
    "Green Frog",
    "Wood Frog",
    "Gray Treefrog",
    "American Toad",
    "Pacific Chorus Frog",
    "Northern Leopard Frog",
    "Coqui",
    "Cane Toad",
    "Gray Wolf",
    "Coyote",
    "Red Fox",
    "White-tailed Deer",
    "Elk",
    "Eastern Chipmunk",
    "Red Squirrel",
    "Little Brown Bat",
    "Bottlenose Dolphin",
    "Killer Whale",
    "Harbor Seal",
]

CAPTIONS = [p.description for p in SPECIES.values()] + [
    "a bird singing at dawn",
    "frogs calling from a pond at night",
    "insects chirping in a meadow",
    "a mammal barking in the distance",
    "whale song recorded underwater",
    "wind and rain with a distant call",
]


def labels_for(n: int) -> list[str]:
    """The first ``n`` labels; beyond the 50 named ones, numbered variants."""
    return [LABELS[i % len(LABELS)] + (f" {i // len(LABELS) + 1}" if i >= len(LABELS) else "") for i in range(n)]


def bench_preset(
    preset: str, clips: list[np.ndarray], labels: list[str], pipeline_clips: int, repeats: int, batch_size: int | None
) -> dict:
    texts = [TEMPLATE.format(label) for label in labels] + CAPTIONS
    model = biolingual.create(preset, tokenizer_texts=texts, seed=0)
    batch_size = batch_size or model.default_audio_batch  # the library's default for this device
    n_params = sum(p.numel() for p in model.parameters())
    device, vocab_size = str(model.device), len(model.tokenizer)
    tmp = tempfile.TemporaryDirectory()  # kept until the pipeline is done with the saved weights
    model.save_pretrained(tmp.name)
    classifier = pipeline("zero-shot-audio-classification", model=tmp.name, device=model.device)
    subset = clips[:pipeline_clips]
    found: dict = {}

    def run_pipeline():
        found["pipeline"] = [classifier(x, candidate_labels=labels, hypothesis_template=TEMPLATE) for x in subset]

    def run_ours():
        found["ours"] = model.zero_shot(
            clips, labels, template=TEMPLATE, sampling_rate=c.SAMPLING_RATE, batch_size=batch_size, progress=False
        )

    # Warm-up: one full batch and one partial batch for ours, two clips for the pipeline.
    model.zero_shot(
        clips[: batch_size + batch_size // 2],
        labels,
        template=TEMPLATE,
        sampling_rate=c.SAMPLING_RATE,
        batch_size=batch_size,
        progress=False,
    )
    for x in subset[:2]:
        classifier(x, candidate_labels=labels, hypothesis_template=TEMPLATE)

    with c.OtherLoad() as other:
        times = c.time_interleaved(
            {"pipeline": run_pipeline, "ours": run_ours}, repeats, {"pipeline": model.device, "ours": model.device}
        )
    label_times = [c.time_once(lambda: model.embed_labels(labels, TEMPLATE), model.device) for _ in range(repeats)]

    # Do both give the same answer? (The weights are random, so probabilities are close to uniform and
    # the top label is a strict test of numerical agreement.)
    ours_probs = found["ours"][: len(subset)]
    index = {label: i for i, label in enumerate(labels)}
    pipe_probs = torch.zeros_like(ours_probs)
    for row, result in enumerate(found["pipeline"]):
        for item in result:
            pipe_probs[row, index[item["label"]]] = item["score"]
    same_top = int((ours_probs.argmax(-1) == pipe_probs.argmax(-1)).sum())

    pipe_s, ours_s = c.median(times["pipeline"]), c.median(times["ours"])
    pipe_rate, ours_rate = len(subset) / pipe_s, len(clips) / ours_s
    model = classifier = None  # freed now (the functions above share the names, so not `del`)
    gc.collect()
    tmp.cleanup()
    return {
        "preset": preset,
        "parameters": n_params,
        "vocab_size": vocab_size,
        "device": device,
        "pipeline": {"clips": len(subset), "median_s": pipe_s, "times_s": times["pipeline"], "clips_per_s": pipe_rate},
        "ours": {
            "clips": len(clips),
            "median_s": ours_s,
            "times_s": times["ours"],
            "clips_per_s": ours_rate,
            "batch_size": batch_size,
        },
        "label_encoding_s": c.median(label_times),
        "speedup": ours_rate / pipe_rate,
        "target": TARGET,
        "target_met": ours_rate / pipe_rate >= TARGET,
        "same_top_label": same_top,
        "compared_clips": len(subset),
        "max_abs_prob_diff": float((ours_probs - pipe_probs).abs().max()),
        "other_processes_cpu_share": other.share,
    }


def run(
    n_clips: int = 200,
    n_labels: int = 50,
    presets: tuple[str, ...] = ("tiny", "base"),
    pipeline_clips: int | None = None,
    repeats: int = 3,
    batch_size: int | None = None,
) -> dict:
    c.quiet_transformers()
    clips = c.synthetic_clips(n_clips, seconds=10.0)
    labels = labels_for(n_labels)
    rows = []
    for preset in presets:
        n_pipe = min(n_clips, pipeline_clips or DEFAULT_PIPELINE_CLIPS.get(preset, n_clips))
        rows.append(bench_preset(preset, clips, labels, n_pipe, repeats, batch_size))
    return {
        **c.run_header(NAME),
        "clips": n_clips,
        "clip_seconds": 10.0,
        "sampling_rate": c.SAMPLING_RATE,
        "labels": n_labels,
        "template": TEMPLATE,
        "repeats": repeats,
        "reference": "transformers pipeline('zero-shot-audio-classification'), one call per clip",
        "results": rows,
    }


def to_markdown(result: dict) -> str:
    header = ["Preset (parameters)", "Pipeline clips/s", "Ours clips/s", "Speed-up", "Target", "Same top label"]
    rows = []
    for r in result["results"]:
        p, o = r["pipeline"], r["ours"]
        rows.append(
            [
                f"{r['preset']} ({c.fmt_params(r['parameters'])})",
                f"{c.fmt_rate(p['clips_per_s'])} (on {p['clips']} clips)",
                f"{c.fmt_rate(o['clips_per_s'])} (on {o['clips']} clips)",
                c.fmt_ratio(r["speedup"]),
                f"≥ {r['target']:g}x ({'met' if r['target_met'] else 'NOT met'})",
                f"{r['same_top_label']}/{r['compared_clips']} (max \\|Δp\\| {r['max_abs_prob_diff']:.1e})",
            ]
        )
    notes = [
        f"{result['clips']} synthetic clips of {result['clip_seconds']:g} s at {result['sampling_rate']} Hz, "
        f'{result["labels"]} labels, template "{result["template"]}"; median of {result["repeats"]} interleaved runs; '
        f"device: {result['results'][0]['device'] if result['results'] else '—'}.",
        "Reference: " + result["reference"] + " (it encodes every label again for each clip); ours: one "
        "`model.zero_shot(clips, labels, ...)` call (labels encoded once, clips in batches of "
        f"{result['results'][0]['ours']['batch_size'] if result['results'] else '—'}).",
    ]
    for r in result["results"]:
        if r["pipeline"]["clips"] < r["ours"]["clips"]:
            notes.append(
                f"{r['preset']}: the pipeline's clips/s were measured on its first {r['pipeline']['clips']} "
                f"clips (it is slow on this machine); ours on all {r['ours']['clips']}."
            )
    notes.append(
        "Encoding the labels once takes "
        + ", ".join(f"{r['label_encoding_s'] * 1000:.0f} ms ({r['preset']})" for r in result["results"])
        + "; the pipeline pays this for every clip."
    )
    notes.append(
        "Tokenizer vocabularies (trained on the prompts): "
        + ", ".join(f"{r['vocab_size']} tokens ({r['preset']})" for r in result["results"])
        + "."
    )
    notes.append(
        "The models are freshly initialised (no weights can be downloaded), so their probabilities are "
        "near uniform; the same top label on every clip means both compute the same numbers."
    )
    shares = [(r["preset"], r["other_processes_cpu_share"]) for r in result["results"]]
    if all(share is not None for _, share in shares):
        notes.append(
            "Other processes used "
            + ", ".join(f"{share:.0%} ({preset})" for preset, share in shares)
            + " of the machine's CPU time while these were timed."
        )
    if not result["gpu_available"]:
        notes.append("No GPU on this machine: both were timed on the CPU.")
    return c.markdown_table(header, rows) + "\n\n" + "\n".join(f"- {n}" for n in notes)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=200, help="clips for ours (default 200)")
    parser.add_argument("--labels", type=int, default=50, help="candidate labels (default 50)")
    parser.add_argument("--presets", nargs="+", default=["tiny", "base"], choices=["tiny", "base"])
    parser.add_argument(
        "--pipeline-clips",
        type=int,
        default=None,
        help="clips the pipeline is timed on (default: all for tiny, 40 for base)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the library's (4 on CPU, 32 on GPU)")
    args = parser.parse_args(argv)
    result = run(args.clips, args.labels, tuple(args.presets), args.pipeline_clips, args.repeats, args.batch_size)
    return c.report(NAME, result, to_markdown(result))


if __name__ == "__main__":
    main()
