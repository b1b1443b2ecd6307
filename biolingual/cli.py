"""The ``biolingual`` command: ``predict`` (zero-shot labels for clips), ``embed`` (clip embeddings), and
``index``/``search``/``detect`` over long recordings (in :mod:`biolingual.search`)."""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
from pathlib import Path

import numpy as np

from .agile.cli import add_subcommands as add_agile_subcommands
from .agile.hoplite_cli import add_hoplite_subcommand
from .agile.review_cli import add_review_subcommand
from .atomic import atomic_write, atomic_write_text
from .cli_options import (
    add_batch_size_arg,
    add_device_arg,
    add_dtype_arg,
    add_labels_args,
    add_model_arg,
    positive_int,
    precision_line,
    read_labels,
    read_template,
    save_species,
)
from .errors import DeviceError, ModelNotFoundError, UsageError
from .extras import MissingExtraError
from .prompts import DEFAULT_TEMPLATE
from .search.cli import add_subcommands
from .search.summary import read_detections, summarise, write_summary


def _add_model_args(p: argparse.ArgumentParser) -> None:
    add_model_arg(p, "hub id or local folder (default: davidrrobinson/BioLingual)")
    add_device_arg(p)
    add_batch_size_arg(p, None, "10 s windows per forward pass (default: 4 on CPU, 32 on GPU)")
    add_dtype_arg(p)
    p.add_argument(
        "--pooling", choices=["mean", "max", "first"], default="mean", help="how windows of long clips combine"
    )


def _load(args):
    from .loading import load

    model = load(args.model, device=args.device, dtype=args.dtype)
    if (line := precision_line(args.dtype, model)) is not None:
        print(line, file=sys.stderr)
    return model


def quiet_weight_loading() -> None:
    """No progress bar per weight file (noise on a command line), without importing transformers for a
    command that loads no model: transformers reads HF_HUB_DISABLE_PROGRESS_BARS when it is first imported."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:  # already imported (a caller's process): tell it directly
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def _report_skipped(errors: dict) -> None:
    for path, message in errors.items():
        print(f"skipped {path}: {message}", file=sys.stderr)


def cmd_predict(args) -> int:
    labels = read_labels(args)
    read_template(args.template)  # before the model loads: a mistake costs no wait
    model = _load(args)
    embeddings, paths, errors = model.embed_files(args.files, batch_size=args.batch_size, pooling=args.pooling)
    _report_skipped(errors)
    if not paths:
        print("error: none of the files could be read", file=sys.stderr)
        return 1
    probs = model.similarity_to_probs(embeddings, model.embed_labels(labels, args.template))
    k = min(args.top_k, len(labels))
    rows = []
    for path, p in zip(paths, probs):
        values, indices = p.topk(k)
        for rank, (v, i) in enumerate(zip(values.tolist(), indices.tolist()), start=1):
            rows.append((str(path), rank, labels[i], v))
    width = max(len(r[0]) for r in rows)
    print(f"{'file':<{width}}  rank  {'label':<30}  prob")
    for path, rank, label, prob in rows:
        print(f"{path:<{width}}  {rank:>4}  {label:<30}  {prob:.4f}")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["file", "rank", "label", "probability"])
            writer.writerows(rows)
        print(f"wrote {args.csv}")
    save_species(args.species, args.csv)
    return 2 if errors else 0


def cmd_embed(args) -> int:
    model = _load(args)
    embeddings, paths, errors = model.embed_files(args.files, batch_size=args.batch_size, pooling=args.pooling)
    _report_skipped(errors)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # np.save on a path adds ".npy" to a name without it; on an open file it writes where it is told, so
    # the file is exactly the one the user named (and the message below names the file that exists).
    atomic_write(out, lambda f: np.save(f, embeddings.numpy()))
    index = out.with_suffix(".files.txt")
    atomic_write_text(index, "".join(f"{p}\n" for p in paths))
    print(f"wrote {out} ({embeddings.shape[0]} x {embeddings.shape[1]} float32, row order in {index})")
    return 2 if errors else 0


def cmd_summary(args) -> int:
    try:
        rows = read_detections(args.detections)
    except (OSError, ValueError, KeyError) as e:
        raise UsageError(f"cannot read detections '{args.detections}': {e}") from None
    summary = summarise(rows)
    if summary["unplaced"] == len(rows):
        raise UsageError(
            f"no detection in '{args.detections}' has a site and a start time: index the recordings with "
            "their deployments (biolingual index --deployments FILE) and detect again"
        )
    written = write_summary(summary, args.out, parquet=args.parquet, plots=not args.no_plots)
    nights = len({(r["site"], r["night"]) for r in summary["per_night"]})
    print(
        f"{len(rows) - summary['unplaced']} detections over {nights} site-nights; "
        f"wrote {len(written)} files to {args.out}"
        + (f"; {summary['unplaced']} rows without a site or start time left out" if summary["unplaced"] else "")
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="biolingual", description="Language-audio models for animal sounds")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="zero-shot: rank labels for each audio file")
    p.add_argument("files", nargs="+", help="audio files (wav, flac, ogg, mp3, m4a, ...)")
    add_labels_args(p, "candidate labels, e.g. 'Common Loon' 'Barred Owl'")
    p.add_argument("--top-k", type=positive_int, default=5, help="labels to print per file, at least 1 (default: 5)")
    p.add_argument("--template", default=DEFAULT_TEMPLATE, help="prompt with {} where the label goes")
    p.add_argument("--csv", help="also write the table to this CSV file")
    _add_model_args(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("embed", help="L2-normalised embeddings of audio files, saved as .npy")
    p.add_argument("files", nargs="+", help="audio files")
    p.add_argument(
        "--out",
        required=True,
        help="output file, written exactly as named (.npy format); row order goes to OUT.files.txt",
    )
    _add_model_args(p)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("summary", help="detections per site and night, day, hour and date: tables and plots")
    p.add_argument("detections", help="a detections CSV with site and start_time columns (biolingual detect --csv)")
    p.add_argument("--out", required=True, help="folder for per_night/per_day/per_hour/per_date.csv and the plots")
    p.add_argument(
        "--parquet", action="store_true", help="also write each table as Parquet (needs pyarrow: the eval extra)"
    )
    p.add_argument("--no-plots", action="store_true", help="tables only (the plots need matplotlib: the eval extra)")
    p.set_defaults(func=cmd_summary)

    add_subcommands(sub)  # index, search, detect over long field recordings
    add_agile_subcommands(sub)  # agile: targets, labels, heads over an index
    add_review_subcommand(sub)  # review: label windows of an index in the browser
    add_hoplite_subcommand(sub)  # hoplite: perch-hoplite databases in and out
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    quiet_weight_loading()
    try:
        return args.func(args)
    except (
        ModelNotFoundError,
        DeviceError,
        MissingExtraError,
        UsageError,
    ) as e:  # MissingExtraError: names the pip install
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
