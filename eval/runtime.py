"""What every runner shares on the command line: the model, device, precision and batch options (defined once, in
:mod:`biolingual.cli_options`, for the ``biolingual`` command too), the checks made
before any heavy work, and the exit codes.

Exit codes (the ``biolingual predict`` convention): :data:`EXIT_OK` 0, everything was evaluated;
:data:`EXIT_SKIPPED` 2, the run finished and wrote its results but skipped some rows or files (each
listed with the reason in the results); :data:`EXIT_ERROR` 1, nothing usable came out (a wrong
option, a device this machine lacks, a missing or malformed input file), with one ``error: ...`` line.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from biolingual.cli_options import add_batch_size_arg, add_device_arg, add_dtype_arg, add_model_arg
from biolingual.errors import DeviceError, ModelNotFoundError, UsageError
from biolingual.extras import MissingExtraError, require
from biolingual.loading import DEFAULT_MODEL, resolve_device
from biolingual.precision import resolve_precision

from .report import write_json

EXIT_OK, EXIT_ERROR, EXIT_SKIPPED = 0, 1, 2


class InputError(ValueError):
    """A runner's input or option cannot be used at all; the message names it and says what to do."""


# The user mistakes a runner reports as one line: the device and model come from biolingual's own checks,
# as do the options shared with the biolingual command (UsageError: a species list that cannot be had);
# a missing optional package names the extra that installs it.
USER_ERRORS = (InputError, DeviceError, ModelNotFoundError, UsageError, MissingExtraError)


def add_runtime_args(ap: argparse.ArgumentParser, batch_size: int, batch_help: str = "clips per forward pass") -> None:
    add_model_arg(ap, "anything biolingual.load() accepts: a hub id or a folder", default=DEFAULT_MODEL)
    add_batch_size_arg(ap, batch_size, batch_help)
    ap.add_argument("--workers", type=int, default=2, help="decoding threads/processes")
    add_device_arg(ap)
    add_dtype_arg(ap)  # pass args.dtype to biolingual.load(..., dtype=): the caches key on the precision too


def shard_embedder(runner: str):
    """:func:`biolingual.embedding.embed_shards`, imported only by a runner about to read webdataset
    shards. Its packages are checked first as the ``eval`` extra's, so a missing one names that extra
    (biolingual.data, imported on its own, names ``train``, which installs them too)."""
    for module in ("braceexpand", "webdataset"):
        require(module, "eval", f"reading webdataset shards ({runner})")
    from biolingual.embedding import embed_shards

    return embed_shards


def check_device(device) -> None:
    """Refuse a device this machine cannot run (:class:`DeviceError`, naming it and what to use instead)
    before a model is loaded or a file read: biolingual's own check, the one ``biolingual.load`` makes."""
    resolve_device(device)


def check_out_dir(out: Path, option: str = "--out") -> None:
    """``out`` must be a folder or not exist yet (it is created); an existing file is refused up front,
    not after the run when the results are written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{option} '{out}' is a file; give a folder for the results (it is created if missing)")
    for parent in out.parents:  # a file standing where a parent folder must go fails the same way
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{option} '{out}': '{parent}' is a file, so no folder can be made under it")
            break


def check_runtime(args: argparse.Namespace) -> None:
    """The cheap checks every runner makes first: the device and the precision on it, then the results folder."""
    check_device(args.device)
    if getattr(args, "dtype", None) is not None:  # a PrecisionError (a DeviceError) names what this machine lacks
        resolve_precision(args.dtype, resolve_device(args.device))
    check_out_dir(Path(args.out))


def run_main(parse_args, run, argv=None) -> int:
    """A runner's ``main``: INFO logging, ``parse_args(argv)``, then ``run(args)``'s exit code, with a
    user mistake (:data:`USER_ERRORS`) printed as one ``error:`` line and :data:`EXIT_ERROR`."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = parse_args(argv)
    try:
        return run(args)
    except USER_ERRORS as e:
        return fail(e)


def fail(error: Exception) -> int:
    """Print a user mistake as ``error: ...`` (no traceback) and return :data:`EXIT_ERROR`."""
    print(f"error: {error}", file=sys.stderr)
    return EXIT_ERROR


def finish(skipped: list[str], where: str, count: int | None = None) -> int:
    """:data:`EXIT_SKIPPED` after saying how many rows were skipped and where they are listed, else :data:`EXIT_OK`.
    ``count`` is the number of rows when one entry of ``skipped`` stands for several (undecodable shard
    samples are counted by the shard reader, which names each in the log)."""
    count = len(skipped) if count is None else count
    if not count:
        return EXIT_OK
    print(
        f"{count} row(s) skipped, each listed with the reason in {where} or the log; exit code {EXIT_SKIPPED}",
        file=sys.stderr,
    )
    return EXIT_SKIPPED


def finish_tasks(out: Path, mode: str, tasks: list[str], failed: dict[str, str]) -> int:
    """A task runner's exit code (BEANS, BirdSet): failed tasks (name -> reason) written to
    ``OUT/failed-MODE.json`` and named, else the rows skipped by the tasks asked for, whether run now or earlier
    (their ``OUT/TASK/MODE.json`` results are what this run reports)."""
    if failed:
        write_json(out / f"failed-{mode}.json", failed)
        print(f"\n{len(failed)} task(s) failed: " + "; ".join(f"{k}: {v}" for k, v in failed.items()))
        return EXIT_ERROR
    skipped = []
    for name in tasks:
        skipped += [name] * json.loads((out / name / f"{mode}.json").read_text()).get("n_skipped", 0)
    return finish(skipped, f'the "problems" of {out}/<task>/{mode}.json ({", ".join(sorted(set(skipped)))})')
