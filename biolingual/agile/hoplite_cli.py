"""``biolingual hoplite export | import``: perch-hoplite databases (BirdNET-Analyzer's and OpenSoundscape's embedding
store) from an index with its agile labels, and an index (searchable by text) from a database of BioLingual
embeddings. In: the command line. Out: the database or index folder, and one line on what was written; bad input
is one ``error:`` line and exit 1. Export loads no model; import loads the model given (default: the one the
database names) to check it is the database's."""

from __future__ import annotations

import sys

from ..cli_options import add_device_arg, add_model_arg
from ..errors import SearchIndexError, UsageError


def cmd_export(args) -> int:
    from .hoplite import export_hoplite

    report = export_hoplite(args.index, args.db_dir, args.project)
    print(
        f"wrote the perch-hoplite database {args.db_dir}: {report.deployments} deployments, {report.recordings} "
        f"recordings, {report.windows} windows, {report.annotations} annotations (agile labels)"
        + (
            f"; {report.skipped_annotations} labels of recordings no longer in the index left out"
            if report.skipped_annotations
            else ""
        )
    )
    return 0


def cmd_import(args) -> int:
    from ..search.hoplite import read_model_config
    from .hoplite import import_hoplite

    config = read_model_config(args.db_dir)  # another model's database is refused before any model loads
    from ..loading import load

    model = load(args.model or config["model_config"].get("model_name"), device=args.device)
    report, counts = import_hoplite(args.db_dir, args.index, model, args.audio_root, args.min_overlap)
    index = report.index
    print(
        f"imported {len(index.added)} recordings ({index.windows} windows) into {args.index}; "
        f"{len(index.already)} already there; {len(report.missing) + len(index.skipped)} left out"
        + (" (named above)" if report.missing or index.skipped else "")
        + f"; {counts['labels']} labels from {counts['annotations']} annotations"
        + (f" ({counts['unmatched']} matched no window)" if counts["unmatched"] else ""),
        file=sys.stderr,
    )
    return 2 if report.missing or index.skipped else 0


def _guard(func):
    """Database, index and model mismatches are one ``error:`` line and exit 1 (usage mistakes: main)."""

    def run(args) -> int:
        try:
            return func(args)
        except (SearchIndexError, UsageError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1

    return run


def add_hoplite_subcommand(subparsers) -> None:
    """Add ``hoplite export`` and ``hoplite import`` to the ``biolingual`` command's subparsers."""
    hoplite = subparsers.add_parser(
        "hoplite",
        help="perch-hoplite databases (BirdNET-Analyzer, OpenSoundscape): export an index with its labels, "
        "or import a database of BioLingual embeddings as an index",
    )
    sub = hoplite.add_subparsers(dest="hoplite_command", required=True)
    p = sub.add_parser("export", help="write an index, its sites and its agile labels as a new perch-hoplite database")
    p.add_argument("index", help="an index folder written by `biolingual index`")
    p.add_argument("db_dir", help="the database folder to create (hoplite.sqlite + usearch.index); must not exist")
    p.add_argument(
        "--project", help="the deployments' project and audio source's name (default: the index's folder name)"
    )
    p.set_defaults(func=_guard(cmd_export))

    p = sub.add_parser(
        "import", help="add a perch-hoplite database of BioLingual embeddings to an index, annotations as labels"
    )
    p.add_argument("db_dir", help="a perch-hoplite database folder whose model_config is a BioLingual model's")
    p.add_argument("index", help="the index folder to create or add to")
    add_model_arg(
        p, "the model the database was embedded with (default: the one its model_config names); another is refused"
    )
    add_device_arg(p)
    p.add_argument(
        "--audio-root",
        metavar="DIR",
        help="the folder holding the recordings, if not the base path the database's audio_sources give",
    )
    p.add_argument(
        "--min-overlap",
        type=float,
        default=0.5,
        help="an annotation not aligned with a window labels the windows it overlaps by at least this share of "
        "the shorter of the two (default: %(default)s)",
    )
    p.set_defaults(func=_guard(cmd_import))
