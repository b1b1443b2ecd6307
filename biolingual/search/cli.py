"""``biolingual index | search | detect``: added to the ``biolingual`` command by :func:`add_subcommands`."""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

from ..cli_options import (
    add_batch_size_arg,
    add_device_arg,
    add_dtype_arg,
    add_labels_args,
    add_model_arg,
    precision_line,
    read_labels,
    read_template,
    save_species,
)
from ..errors import UsageError
from ..prompts import DEFAULT_BACKGROUND, DEFAULT_TEMPLATE
from .query import DEFAULT_MAX_CALL_S


def _model_args(p: argparse.ArgumentParser, model_help: str) -> None:
    add_model_arg(p, model_help)
    add_device_arg(p)
    add_batch_size_arg(p, None, "windows per forward pass (default: the model's, 4 on a CPU and 32 on a GPU)")
    add_dtype_arg(p)


def _mixed_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-mixed-precision",
        action="store_true",
        help="add files to an index built at another --dtype (the index then records both precisions)",
    )


def _decode_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--decode-workers",
        type=int,
        default=None,
        metavar="N",
        help="threads decoding audio ahead of the model, per process (default: 1 on a CPU, where torch "
        "uses the cores; on a GPU the node's cores shared among its processes, at most 8); any N "
        "gives the same index",
    )


def _window_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--window", type=float, default=None, help="window length in seconds (default: the model's, 10 s)")
    p.add_argument("--hop", type=float, default=None, help="seconds between window starts (default: the window)")


def _deployments_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--deployments",
        metavar="CSV",
        help="sites of the recordings: site, latitude, longitude, folder (or pattern), timezone[, recorder] per "
        "row; results then carry each recording's site and clock time (kept beside the index)",
    )


def _output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--csv", help="write the hits to this CSV file")
    p.add_argument(
        "--raven",
        help="write one Raven Pro selection table over all recordings as a file sequence (recordings "
        "in path order; Begin Time in sequence time, File Offset within Begin File)",
    )
    p.add_argument(
        "--raven-per-file",
        metavar="DIR",
        help="write one Raven selection table per recording into DIR, "
        "<stem>.BioLingual.selection.table.txt (as BirdNET names them)",
    )
    p.add_argument(
        "--kaleidoscope", metavar="FILE", help="write a Kaleidoscope-style CSV (BirdNET's kaleidoscope columns)"
    )
    p.add_argument("--parquet", metavar="FILE", help="write the CSV's rows as a Parquet file (needs pyarrow)")
    p.add_argument("--audacity", help="write Audacity label files, one per recording, into this folder")
    p.add_argument("--clips", help="export each hit's audio as a wav file into this folder")
    p.add_argument(
        "--clip-pad", type=float, default=0.0, help="seconds of context added before and after exported clips"
    )


def _relaunch_command(subcommand: str) -> str:
    """What follows ``torchrun --nproc_per_node N`` to run this command line again: this process's own
    arguments when it was started as ``... <subcommand> ...``, else the subcommand with ``...``."""
    argv = sys.argv[1:]
    return "-m biolingual " + (shlex.join(argv) if argv[:1] == [subcommand] else f"{subcommand} ...")


def _load_model(name, device, dtype: str = "float32"):
    import os

    import torch

    from ..device import rank_device
    from ..loading import load

    if device is None and "LOCAL_RANK" in os.environ and torch.cuda.is_available():
        # a GPU per process under accelerate launch / torchrun; more processes than GPUs share them (indexing
        # is decode-bound, so 2 processes per GPU keep it busier than one)
        device = rank_device(int(os.environ["LOCAL_RANK"]), torch.cuda.device_count())
    model = load(name, device=device, dtype=dtype)
    if (line := precision_line(dtype, model)) is not None:
        print(line, file=sys.stderr)
    return model


def _locations(files) -> dict:
    """{recording: (lat, lon)} of the recordings whose own metadata (GUANO, AudioMoth) gives a place."""
    from ..deployments import describe_recording

    out = {}
    for f in set(files):
        info = describe_recording(f)
        if info.latitude is not None and info.longitude is not None:
            out[f] = (info.latitude, info.longitude)
    return out


def _known(index) -> dict:
    from .export import index_durations

    return index_durations(index)


def _recordings(index_dir, files, args) -> dict:
    """Each recording's site, place and clock time (recordings.json beside the index; ``--deployments``
    describes them anew), with one line on what could not be read."""
    from ..deployments import DeploymentsError
    from .recordings import recordings_of, summary_line

    try:
        infos = recordings_of(index_dir, files, getattr(args, "deployments", None))
    except DeploymentsError as e:
        raise UsageError(str(e)) from None
    print(summary_line(infos), file=sys.stderr)
    return infos


def _write_outputs(hits, args, score_name: str, recordings=(), infos=None, known=None) -> None:
    """Print the hits and write each output asked for; ``recordings``: every recording searched (the Raven
    sequence's files, and a per-file table for each, empty where nothing was found); ``infos``: their sites,
    places and clock times (:func:`_recordings`)."""
    from . import export

    infos = infos or {}
    print(export.format_table(hits, score_name, infos))
    if args.csv:
        export.write_csv(hits, args.csv, score_name, infos)
        print(f"wrote {args.csv}")
        save_species(getattr(args, "species", None), args.csv)
    if args.parquet:
        export.write_parquet(hits, args.parquet, score_name, infos)
        print(f"wrote {args.parquet}")
    if args.kaleidoscope:
        places = {
            f: (i.latitude, i.longitude) for f, i in infos.items() if i.latitude is not None and i.longitude is not None
        }
        export.write_kaleidoscope(hits, args.kaleidoscope, score_name, places or _locations(h.file for h in hits))
        print(f"wrote {args.kaleidoscope}")
    if args.raven:
        export.write_raven(hits, args.raven, recordings, known)
        print(f"wrote {args.raven}")
    if args.raven_per_file:
        written = export.write_raven_per_file(hits, args.raven_per_file, recordings)
        print(f"wrote {len(written)} Raven tables to {args.raven_per_file}")
    if args.audacity:
        written = export.write_audacity(hits, args.audacity)
        print(f"wrote {len(written)} Audacity label files to {args.audacity}")
    if args.clips:
        written = export.export_clips(hits, args.clips, args.clip_pad)
        print(f"wrote {len(written)} clips to {args.clips}")


def _build(args, inputs, out, model=None) -> tuple[object, int]:
    """(model, exit code) after indexing ``inputs`` into ``out`` with ``model``, or the one ``args`` names."""
    from .index import build_index

    model = model or _load_model(args.model, args.device, args.dtype)
    report = build_index(
        inputs,
        model,
        out,
        window_s=args.window,
        hop_s=args.hop,
        batch_size=args.batch_size,
        allow_mixed_precision=args.allow_mixed_precision,
        decode_workers=args.decode_workers,
    )
    # each skipped file was named by build_index's warning as it was skipped (and is in skipped-<rank>.tsv)
    print(
        f"indexed {len(report.added)} new files ({report.windows} windows); {len(report.already)} already in the "
        f"index; {len(report.skipped)} skipped" + (" (named above)" if report.skipped else ""),
        file=sys.stderr,
    )
    return model, 2 if report.skipped else 0


def cmd_index(args) -> int:
    from ..device import check_launch_size
    from .index import SearchIndexError, load_index, read_meta, relocate

    if args.relocate:  # the archive was moved: its recordings are named under the new root from now on
        try:
            moved = relocate(args.out, args.relocate)
        except SearchIndexError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        absent = moved.recordings - moved.found
        print(
            f"re-pointed '{args.out}' from {moved.old_root} to {moved.new_root}: {moved.found} of {moved.recordings} "
            f"recordings found under {moved.new_root}"
            + (
                f"; not found: {', '.join(moved.missing)}{' ...' if absent > len(moved.missing) else ''}"
                if absent
                else ""
            ),
            file=sys.stderr,
        )
        if not args.inputs:
            return 0
    elif not args.inputs:
        print(
            "error: give audio files or folders to index (or --relocate NEW_ROOT to re-point the index)",
            file=sys.stderr,
        )
        return 1
    try:
        check_launch_size(_relaunch_command("index"))  # before the model loads: a refused launch fails in a second
        if args.model is None and (Path(args.out) / "index.json").is_file():
            args.model = read_meta(args.out)["model"]["name"]  # adding files: the index's own model
        _, code = _build(args, args.inputs, args.out)
        _recordings(args.out, load_index(args.out).files, args)
    except (SearchIndexError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return code


def cmd_search(args) -> int:
    from ..errors import AudioError
    from .index import SearchIndexError, check_model, load_index
    from .query import search

    if not args.queries and not args.audio:
        print("error: give a text query, or example audio with --audio FILE", file=sys.stderr)
        return 1
    blank = [i for i, q in enumerate(args.queries, start=1) if not q.strip()]
    if blank:  # its embedding is that of nothing: the hits would be arbitrary windows
        print(
            f"error: text query #{blank[0]} is blank ({args.queries[blank[0] - 1]!r}): give words to search for, "
            "e.g. 'a frog calling with a fast trill'",
            file=sys.stderr,
        )
        return 1
    try:
        index = load_index(args.index)
        model = _load_model(args.model or index.meta["model"]["name"], args.device, args.dtype)
        check_model(index.meta, model, args.index)
        names, vectors = [], []
        if args.queries:
            names += list(args.queries)
            vectors.append(model.embed_text(list(args.queries)).numpy())
        if args.audio:
            names += list(args.audio)
            vectors.append(model.embed_audio(list(args.audio), batch_size=args.batch_size).numpy())
    except (SearchIndexError, AudioError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    import numpy as np

    results = search(index, np.concatenate(vectors), names, k=args.top, method=args.method, merge=not args.no_merge)
    _write_outputs(
        [h for hits in results for h in hits],
        args,
        "cosine",
        index.files,
        _recordings(args.index, index.files, args),
        _known(index),
    )
    return 0


def cmd_detect(args) -> int:
    from ..agile.detect import detect_heads
    from ..agile.head import Head
    from .detect import detect
    from .index import SearchIndexError, load_index

    species = args.species_near or args.species_list
    labels = read_labels(args) if args.labels is not None or args.labels_file or species or not args.head else []
    if args.threshold_file and not args.head:
        print(
            "error: --threshold-file holds thresholds on agile heads' scores: give the heads with --head FILE "
            "(zero-shot labels use --threshold)",
            file=sys.stderr,
        )
        return 1
    if labels:
        read_template(args.template)  # before any model loads or file is indexed
    given_index = len(args.inputs) == 1 and (Path(args.inputs[0]) / "index.json").is_file()
    with tempfile.TemporaryDirectory(prefix="biolingual-detect-") as tmp:
        try:
            if given_index:
                from .index import check_model, read_meta

                folder = args.inputs[0]
                meta = read_meta(folder)
                heads = [Head.load(h, fingerprint=meta["model"]["fingerprint"]) for h in args.head or []]
                model = None
                if labels:  # heads need no model: they score the stored embeddings
                    model = _load_model(args.model or meta["model"]["name"], args.device, args.dtype)
                    check_model(meta, model, folder)
                code = 0
            else:
                heads = [Head.load(h) for h in args.head or []]
                # the model the heads were fitted with, unless told otherwise
                model = _load_model(args.model or (heads[0].model_name if heads else None), args.device, args.dtype)
                for h in heads:  # refused before anything is embedded
                    h.check(model.fingerprint(), str(model.name_or_path))
                folder = args.index or tmp
                model, code = _build(args, args.inputs, folder, model)
            index = load_index(folder)
            calls = {"gap_s": args.gap, "max_call_s": args.max_call, "merge": not args.no_merge}
            events = (
                detect(model, index, labels, args.threshold, args.template, args.background, **calls) if labels else []
            )
            if heads:
                if args.threshold_file:  # per-target thresholds on the heads' scores, set by `agile threshold`
                    from ..agile.thresholds import detect_heads_thresholded, head_thresholds

                    cuts = head_thresholds(args.threshold_file, heads)
                    for h in heads:
                        if h.target not in cuts:
                            print(
                                f"note: no threshold for '{h.target}' in {args.threshold_file}: --threshold "
                                f"{args.threshold} applies to its probability",
                                file=sys.stderr,
                            )
                    found = detect_heads_thresholded(index, heads, cuts, args.threshold, **calls)
                else:
                    found = detect_heads(index, heads, args.threshold, **calls)
                events = sorted(events + found, key=lambda h: (h.file, h.start, h.query))
        except (SearchIndexError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    _write_outputs(events, args, "probability", index.files, _recordings(folder, index.files, args), _known(index))
    return code


def add_subcommands(subparsers) -> None:
    """Add ``index``, ``search`` and ``detect`` to the ``biolingual`` command's subparsers."""
    p = subparsers.add_parser(
        "index", help="embed long recordings window by window into a searchable index (resumable)"
    )
    p.add_argument("inputs", nargs="*", help="audio files or folders (searched recursively)")
    p.add_argument("--out", required=True, help="index folder; an existing one gets only the new files")
    p.add_argument(
        "--relocate",
        metavar="NEW_ROOT",
        help="the index's recordings were moved: NEW_ROOT now holds what its root held (the folder its recordings "
        "are named relative to, in index.json); re-points the index, then indexes any inputs given",
    )
    _model_args(p, "hub id or local folder (default: the index's model, else davidrrobinson/BioLingual)")
    _mixed_arg(p)
    _window_args(p)
    _decode_arg(p)
    _deployments_arg(p)
    p.set_defaults(func=cmd_index)

    p = subparsers.add_parser("search", help="free-text (or example audio) search of an index")
    p.add_argument("index", help="an index folder written by `biolingual index`")
    p.add_argument("queries", nargs="*", help="text queries, e.g. 'a frog calling with a fast trill'")
    p.add_argument("--audio", nargs="+", help="example audio clips to search by (query by example)")
    p.add_argument("--top", type=int, default=50, help="hits per query")
    p.add_argument(
        "--method",
        choices=["auto", "exact", "faiss"],
        default="auto",
        help="exact cosine, or faiss IVF-PQ with exact re-ranking (auto: faiss from 500,000 windows)",
    )
    p.add_argument("--no-merge", action="store_true", help="keep overlapping windows as separate hits")
    _model_args(p, "the model to embed queries with (default: the index's model; another model is refused)")
    _output_args(p)
    _deployments_arg(p)
    p.set_defaults(func=cmd_search)

    p = subparsers.add_parser(
        "detect", help="detection of labels (zero-shot) or of agile heads over the windows of recordings"
    )
    p.add_argument("inputs", nargs="+", help="audio files or folders, or one index folder")
    add_labels_args(p, "labels to detect, e.g. 'Barred Owl' 'Spring Peeper'")
    p.add_argument(
        "--head",
        action="append",
        metavar="FILE",
        help="a head fitted by `biolingual agile fit` (.head); repeat for several targets; with or without --labels",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="probability at or above which a window is a detection (default: %(default)s)",
    )
    p.add_argument(
        "--threshold-file",
        metavar="FILE",
        help="per-target thresholds on the --head heads' scores, written by `biolingual agile threshold --out`; "
        "targets without a row keep --threshold",
    )
    p.add_argument("--template", default=DEFAULT_TEMPLATE, help="prompt with {} where the label goes")
    p.add_argument(
        "--background",
        nargs="*",
        default=list(DEFAULT_BACKGROUND),
        help="texts competing with the labels for windows with none of them (as written, no template)",
    )
    p.add_argument(
        "--gap",
        type=float,
        default=0.0,
        help="merge a label's windows into one call across gaps of at most this many seconds (default: %(default)s)",
    )
    p.add_argument(
        "--max-call",
        type=float,
        default=DEFAULT_MAX_CALL_S,
        metavar="SECONDS",
        help="a merged call grows no longer than this; the next windows start another (default: %(default)s)",
    )
    p.add_argument(
        "--no-merge", action="store_true", help="one row per window above the threshold, no merging into calls"
    )
    p.add_argument(
        "--index", help="keep the window index here (reused and extended next time) instead of a temp folder"
    )
    _model_args(p, "hub id or local folder (default: davidrrobinson/BioLingual)")
    _mixed_arg(p)
    _window_args(p)
    _decode_arg(p)
    _output_args(p)
    _deployments_arg(p)
    p.set_defaults(func=cmd_detect)
