"""Text<->audio retrieval on webdataset shards: R@1/5/10, P@1/5/10 and mAP@10 in both directions.

    python -m eval.retrieval --model M --shards "data/animalspeak/test-*.tar" --out results/ret

Two relevance rules, both reported:
  * ``caption`` (what BioLingual reports): items whose captions are equal, after stripping the
    prefix "The sound of a " / "The sound of an ", are all matches; mAP@10 is normalised by
    min(10, number relevant);
  * ``strict``: only the paired item is a match (one-to-one).
Scoring is :func:`biolingual.metrics.retrieval_metrics`, chunked over queries, so 100k items fit in memory.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import biolingual
from biolingual.metrics import relevance_key, retrieval_metrics

from .report import fmt, markdown_table, write_csv, write_json
from .runtime import InputError, add_runtime_args, check_runtime, finish, run_main, shard_embedder

log = logging.getLogger(__name__)


def evaluate(audio, text, captions: list[str], strip_prefix: bool = True, chunk_size: int = 4096) -> dict:
    """{"caption": metrics, "strict": metrics} for paired embeddings and their captions (the caption rule is
    :func:`biolingual.metrics.relevance_key`, the one training validation uses)."""
    keys = [relevance_key(c, strip_prefix) for c in captions]
    return {
        "caption": retrieval_metrics(audio, text, captions=keys, chunk_size=chunk_size),
        "strict": retrieval_metrics(audio, text, strict=True, chunk_size=chunk_size),
    }


def table(results: dict) -> tuple[list[str], list[list[str]]]:
    header = ["relevance", "direction", "R@1", "R@5", "R@10", "P@1", "P@5", "P@10", "mAP@10"]
    rows = []
    for rule, metrics in results.items():
        for direction in ("text_to_audio", "audio_to_text"):
            rows.append([rule, direction.replace("_", " ")] + [fmt(metrics[f"{direction}/{k}"]) for k in header[2:]])
    return header, rows


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m eval.retrieval", description=__doc__.split("\n\n")[0])
    ap.add_argument("--shards", required=True, help="webdataset shards, a brace pattern (several joined by ::)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--max-samples", type=int, default=0, help="evaluate only the first N samples (0: all)")
    ap.add_argument("--no-strip-prefix", action="store_true", help="compare captions exactly as written")
    ap.add_argument("--chunk-size", type=int, default=4096, help="queries scored at a time")
    add_runtime_args(ap, 32)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    """Run from the command line; returns the exit code: 0 all evaluated, 2 evaluated with shard samples
    that did not decode skipped (each named in the log, counted in metrics.json), 1 an error (one
    ``error:`` line)."""
    return run_main(parse_args, run, argv)


def run(args: argparse.Namespace) -> int:
    check_runtime(args)
    embed_shards = shard_embedder("python -m eval.retrieval")
    model = biolingual.load(args.model, device=args.device, dtype=args.dtype)
    try:
        audio, text, captions, _, skipped = embed_shards(
            model, args.shards, args.batch_size, args.workers, args.max_samples
        )
    except ValueError as e:  # ShardError (missing, empty or unreadable shards) or no usable sample
        raise InputError(str(e)) from None
    results = evaluate(audio, text, captions, not args.no_strip_prefix, args.chunk_size)
    header, rows = table(results)
    args.out.mkdir(parents=True, exist_ok=True)
    problems = [f"{skipped} shard sample(s) did not decode, each named in the log; skipped"] if skipped else []
    write_json(
        args.out / "metrics.json",
        {
            "model": str(args.model),
            "shards": args.shards,
            "n_items": len(captions),
            "n_skipped": skipped,
            "problems": problems,
            "distinct_captions": len(set(captions)),
            **results,
        },
    )
    write_csv(args.out / "metrics.csv", header, rows)
    (args.out / "results.md").write_text(
        f"# Retrieval: {args.shards}\n\n{len(captions)} clip-caption pairs, {len(set(captions))} distinct captions.\n\n"
        + markdown_table(header, rows)
    )
    print(markdown_table(header, rows), end="")
    return finish(problems, args.out / "metrics.json", skipped)


if __name__ == "__main__":
    sys.exit(main())
