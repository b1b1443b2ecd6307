"""python -m data_pipeline build --config C --out DIR [--partition I/N] [--section.key value ...] | status --out DIR

Only this ``main`` turns mistakes into ``error: ...`` and an exit status: 2 for a bad config, command
line, manifest or an --out folder that cannot be created, 3 for a folder another build holds, 1 when a source
stopped listing, records failed (a rerun retries them) or a write failed (a full disk: a rerun resumes).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from biolingual.errors import WriteError
from biolingual.extras import MissingExtraError
from biolingual.faults import fault_point

from .config import ConfigError, load_config
from .shards import webdataset
from .splits import parse_partition

_EPILOG = """\
Any config key can be set on top of the file as --section.key value (or --section.key=value), e.g.
--audio.clip_seconds 5 --shards.max_bytes 1GB --splits.seed 3 --licenses cc0,cc-by.
Sections: audio, shards, splits, download; sources and the captioner are set in the file only
(see docs/data_pipeline.md)."""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data_pipeline", description="AnimalSpeak-style webdataset shards from archives"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser(
        "build",
        help="list, fetch, caption and shard the configured sources (resumes)",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    b.add_argument("--config", required=True)
    b.add_argument("--out", required=True)
    b.add_argument("--partition", help="I/N: do part I (1..N) of N, e.g. 3/16 on the third of 16 machines")
    b.add_argument("--no-progress", action="store_true")
    s = sub.add_parser("status", help="counts per stage and source, samples per split, errors")
    s.add_argument("--out", required=True)
    s.add_argument("--json", action="store_true")
    args, overrides = parser.parse_known_args(argv)  # the rest: --section.key value, read by the config
    if overrides and args.command != "build":
        parser.error(f"unrecognized arguments: {' '.join(overrides)}")
    args.overrides = overrides

    if args.command == "status":
        from .manifest import ManifestError
        from .status import collect, render

        try:
            status = collect(Path(args.out))
        except (FileNotFoundError, ManifestError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        if args.json:
            print(
                json.dumps(
                    {
                        **status,
                        "stages": [[*k, v] for k, v in status["stages"].items()],
                        "reasons": [[*k, v] for k, v in status["reasons"].items()],
                    },
                    indent=1,
                )
            )
        else:
            print(render(status))
        return 0

    try:  # the config first: a mistake leaves no --out folder (with an empty build.log) behind
        config = load_config(args.config, args.overrides)
        partition = parse_partition(args.partition)
        webdataset()  # the shards' writer, before anything is listed or fetched
    except (ConfigError, ValueError, MissingExtraError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    try:
        fault_point("pipeline.out", out)  # tests: BIOLINGUAL_FAIL_AT=pipeline.out=EACCES (they run as root)
        out.mkdir(parents=True, exist_ok=True)
        handlers = _log_to(out / "build.log")
    except OSError as e:  # a folder the process may not write, or a path through a file
        print(
            f"error: cannot create the output folder '{out}' and its build.log: {e.strerror or e}"
            + (f" ('{e.filename}')" if e.filename and str(e.filename) != str(out) else ""),
            file=sys.stderr,
        )
        return 2
    try:
        return _build(args, out, config, partition)
    finally:
        for handler in handlers:
            logging.getLogger("data_pipeline").removeHandler(handler)
            handler.close()


def _log_to(path: Path) -> list[logging.Handler]:
    """Everything (INFO+) to build.log, warnings and errors to stderr; nothing propagates twice."""
    logger = logging.getLogger("data_pipeline")
    logger.setLevel(logging.INFO)
    file_handler, stream_handler = logging.FileHandler(path), logging.StreamHandler()
    stream_handler.setLevel(logging.WARNING)
    for handler in (file_handler, stream_handler):
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    return [file_handler, stream_handler]


def _build(args, out: Path, config, partition) -> int:
    from .build import build
    from .lock import BuildLocked
    from .sources import SourceError
    from .status import collect, render

    try:
        summary = build(
            config, out, partition, config_dir=Path(args.config).resolve().parent, progress=not args.no_progress
        )
    except BuildLocked as e:  # its own status, so a scheduler can tell "busy, try later" from a mistake
        print(f"error: {e}", file=sys.stderr)
        return 3
    except (SourceError, ValueError, MissingExtraError) as e:  # ValueError includes manifest.ManifestError;
        print(f"error: {e}", file=sys.stderr)  # a remote source without requests names the extra
        return 2
    except WriteError as e:  # a full disk (or a folder that may not be written) while writing a shard
        print(
            f"error: {e}. Nothing was lost: every file is written whole or not at all, and the records done so far "
            f"are kept in '{out}' (the manifest and the staged samples). Free some space and run the same command "
            "again: it resumes where this run stopped",
            file=sys.stderr,
        )
        return 1
    print(render(collect(out)))
    for message in summary["listing_errors"]:
        print(f"error: {message}", file=sys.stderr)
    failed = _failed(summary)
    if failed:
        print(f"error: {failed}", file=sys.stderr)
    return 1 if summary["listing_errors"] or failed else 0


def _failed(summary: dict) -> str:
    """What to say when records of this run's part ended ``failed`` (fetch or caption errors, unreadable files:
    the ones the next run retries), or "": a build that leaves work undone says so in its exit status, as
    `biolingual predict` does for files it skipped. ``rejected`` records (silent, too short, undecodable) are
    the data's verdict, not a failure of the run."""
    n = sum(count for _, stage, count in summary["stages"] if stage == "failed")
    if not n:
        return ""
    reason = next((r for _, stage, r, _ in summary["reasons"] if stage == "failed"), "")
    return (
        f"{n} record{'s' if n != 1 else ''} failed (the commonest reason: {reason[:300]}); the table above and "
        "build.log give each reason: rerun the same command to retry them"
    )


if __name__ == "__main__":
    sys.exit(main())
