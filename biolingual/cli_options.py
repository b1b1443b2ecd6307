"""Command-line options every BioLingual command shares, defined once.

Used by the ``biolingual`` command (:mod:`biolingual.cli`), its ``index``/``search``/``detect``
subcommands (:mod:`biolingual.search.cli`) and the evaluation runners (``eval/runtime.py``), so an
option has one name and one meaning everywhere. In: an :class:`argparse.ArgumentParser` (each
``add_*`` adds options to it) or parsed arguments (:func:`read_labels`). Out: the options added, or
the labels list. Only defaults and help texts differ per command, and they are arguments here.

``--dtype`` (:func:`add_dtype_arg`) is the one precision option of ``embed``, ``predict``, ``index``,
``search``, ``detect`` and the evaluation runners; :func:`precision_line` is the line they print.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

from .errors import UsageError
from .prompts import check_labels, check_template
from .species_lists import (
    DEFAULT_MIN_RECORDS,
    DEFAULT_RADIUS_KM,
    DEFAULT_TAXA,
    DEFAULT_WEEKS,
    GBIF_API,
    SpeciesList,
    SpeciesListError,
    read_species_list,
    species_near,
)
from .vocabulary import PRECISIONS


def add_model_arg(p: argparse.ArgumentParser, help: str, default: str | None = None) -> None:
    """``--model``: a hub id or a local folder. ``default`` None lets the command choose (the default
    model, or the model an index was built with)."""
    p.add_argument("--model", default=default, help=help)


def add_device_arg(p: argparse.ArgumentParser) -> None:
    """``--device``: None leaves the choice to :func:`biolingual.loading.resolve_device` (cuda when available)."""
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")


def add_dtype_arg(p: argparse.ArgumentParser, default: str = "float32") -> None:
    """``--dtype``: the precision embeddings are computed at (:mod:`biolingual.precision`); ``auto``
    chooses by the processor or GPU and the command says what it chose (:func:`precision_line`)."""
    p.add_argument(
        "--dtype",
        choices=PRECISIONS,
        default=default,
        help="precision: float32, bfloat16 (fast on CPUs with avx512_bf16/amx_bf16), int8 (CPU, "
        "dynamic quantization), float16 (GPU only), or auto to choose by the hardware "
        f"(default: {default})",
    )


def precision_line(asked: str, model) -> str | None:
    """What a command prints (to stderr) about its precision: None for plain float32, else the precision
    it runs at and, for ``auto``, why it was chosen."""
    from .precision import describe_choice

    if asked == "float32" and model.precision == "float32":
        return None
    return describe_choice(asked, model.device, model.precision)


def add_batch_size_arg(p: argparse.ArgumentParser, default: int | None, help: str) -> None:
    """``--batch-size``: inputs per forward pass; what an input is (10 s window, clip, chunk) is in ``help``."""
    p.add_argument("--batch-size", type=int, default=default, help=help)


def add_labels_args(p: argparse.ArgumentParser, help: str) -> None:
    """``--labels A B ...`` and ``--labels-file FILE``, or candidates by place and season (``--species-near``,
    ``--species-list``); :func:`read_labels` reads them."""
    p.add_argument("--labels", nargs="+", help=help)
    p.add_argument("--labels-file", help="a text file with one label per line")
    add_species_args(p)


def add_species_args(
    p: argparse.ArgumentParser, title: str = "candidate species by place and season (instead of --labels)"
) -> None:
    """``--species-near LAT,LON`` (with ``--date``, ``--weeks``, ``--radius-km``, ``--min-records``, ``--taxa``,
    ``--species-cache``, ``--gbif-api``) or ``--species-list FILE``: the species of a place and season, read
    by :func:`read_species`. ``title`` says what the list does in this command (the candidates, or a filter
    on a benchmark's classes)."""
    g = p.add_argument_group(title)
    g.add_argument(
        "--species-near",
        metavar="LAT,LON",
        help="the species with GBIF occurrence records near this point in the weeks around --date",
    )
    g.add_argument("--date", help="YYYY-MM-DD: the season of --species-near (default: today)")
    g.add_argument(
        "--weeks",
        type=positive_int,
        default=DEFAULT_WEEKS,
        help="weeks either side of --date (GBIF filters by month: widened to the months they touch; "
        f"default {DEFAULT_WEEKS})",
    )
    g.add_argument(
        "--radius-km",
        type=float,
        default=DEFAULT_RADIUS_KM,
        help=f"how far from the point (default {DEFAULT_RADIUS_KM:g} km)",
    )
    g.add_argument(
        "--min-records",
        type=positive_int,
        default=DEFAULT_MIN_RECORDS,
        help="the threshold: species with fewer occurrence records there and then are left out "
        f"(default {DEFAULT_MIN_RECORDS})",
    )
    g.add_argument(
        "--taxa", default=",".join(DEFAULT_TAXA), help=f"which calling animals (default {','.join(DEFAULT_TAXA)})"
    )
    g.add_argument(
        "--species-cache",
        default=str(Path.home() / ".cache" / "biolingual" / "species"),
        help="where GBIF's answers are kept, so a later run needs no network (default ~/.cache/biolingual/species)",
    )
    g.add_argument("--gbif-api", default=GBIF_API, help=f"GBIF's API (default {GBIF_API})")
    g.add_argument(
        "--species-list", help="a list saved by an earlier run (species.csv) or a file of names: the candidates"
    )


def positive_int(text: str) -> int:
    """An argparse ``type`` for counts that must be at least 1 (``--top-k``): 0 or -2 is refused with the
    option named, instead of being read as 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def read_template(template: str) -> str:
    """``--template`` checked before any model loads (:func:`biolingual.model.check_template`: exactly one
    ``{}``), as a :class:`~biolingual.errors.UsageError` that the command prints as ``error: ...``."""

    try:
        return check_template(template)
    except ValueError as e:
        raise UsageError(f"--template: {e}") from None


def read_species(args: argparse.Namespace) -> SpeciesList | None:
    """The candidate species of ``--species-near`` (asked of GBIF, cached) or ``--species-list`` (a file), or
    None when neither is given; its one-line description goes to stderr, where the threshold can be seen.
    A :class:`~biolingual.errors.UsageError` for a mistake or a GBIF that cannot be reached (saying how to
    work offline)."""
    near, listed = getattr(args, "species_near", None), getattr(args, "species_list", None)
    if not near and not listed:
        return None
    if near and listed:
        raise UsageError("give --species-near or --species-list, not both")
    if getattr(args, "labels", None) or getattr(args, "labels_file", None):  # runners without --labels
        raise UsageError(
            "--species-near/--species-list give the candidate labels: leave out --labels and --labels-file"
        )
    try:
        if listed:
            species = read_species_list(listed)
        else:
            try:
                lat, lon = (float(v) for v in near.split(","))
            except ValueError:
                raise UsageError(
                    f"--species-near takes LAT,LON in decimal degrees (e.g. 42.44,-76.50), got {near!r}"
                ) from None
            try:
                date = dt.date.fromisoformat(args.date) if args.date else dt.date.today()
            except ValueError:
                raise UsageError(f"--date takes YYYY-MM-DD, got {args.date!r}") from None
            taxa = tuple(t.strip() for t in args.taxa.split(",") if t.strip())
            species = species_near(
                lat,
                lon,
                date,
                weeks=args.weeks,
                radius_km=args.radius_km,
                taxa=taxa,
                min_records=args.min_records,
                cache_dir=args.species_cache,
                api=args.gbif_api,
            )
    except SpeciesListError as e:
        raise UsageError(str(e)) from None
    print(species.describe(), file=sys.stderr)
    return species


def save_species(species: SpeciesList | None, results: str | os.PathLike | None) -> None:
    """Write the candidate list beside a command's results (``RESULTS.species.csv`` for a results file,
    ``RESULTS/species.csv`` in a results folder, as the evaluation runners write), so what was compared
    against, and with which threshold, stays with them; nothing without a list or results."""
    if species is None or not results:
        return
    path = Path(results) / "species.csv" if Path(results).is_dir() else Path(f"{results}.species.csv")
    species.save(path)
    print(f"wrote {path} (the candidate species)", file=sys.stderr)


def read_labels(args: argparse.Namespace) -> list[str]:
    """The candidate species (:func:`read_species`, kept as ``args.species`` for :func:`save_species`), or
    else the labels of ``--labels`` followed by those of ``--labels-file`` (one per line; blank lines and
    lines starting with ``#`` left out), in order. Exits with an ``error: ...`` line naming the file when
    it is missing, saying how to give labels when there are none, and naming a label given twice or a
    blank one (the API's rule, :func:`biolingual.model.check_labels`): a
    :class:`~biolingual.errors.UsageError`, which the command's ``main`` prints as ``error: ...``."""
    args.species = read_species(args)
    if args.species is not None:
        return check_labels(args.species.names)
    labels = list(args.labels or [])
    if args.labels_file:
        path = Path(args.labels_file)
        if not path.is_file():
            raise UsageError(f"labels file not found: '{path}'")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read labels file '{path}': {e}") from None
        listed = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
        if not listed:  # an empty file is a mistake even beside --labels: name it, not the options
            raise UsageError(
                f"labels file '{path}' holds no labels (one label per line; blank lines and lines "
                "starting with # are left out)"
            )
        labels += listed
    if not labels:
        raise UsageError(
            "give labels with --labels A B ... or --labels-file FILE (one label per line), or candidates "
            "by place and season with --species-near LAT,LON --date YYYY-MM-DD"
        )

    try:
        return check_labels(labels)
    except ValueError as e:
        where = f" (--labels and --labels-file '{args.labels_file}')" if args.labels_file else ""
        raise UsageError(f"{e}{where}") from None
