"""``biolingual agile ...``: agile modelling from the command line (the same API as the review page).

In: an index folder (``biolingual index``) and a subcommand: ``target`` (name, prompt and/or example),
``targets``, ``propose``, ``label``, ``undo``, ``import-raven``, ``fit``, ``rank``, ``threshold``, ``density-sample``,
``density``, ``export``. Out: labels
in ``INDEX/agile/labels.sqlite``, heads in ``INDEX/agile/heads/``, tables on the terminal, CSV and Raven
files. Only ``target`` loads the model (to embed a prompt or an audio example); the others work on the
stored embeddings and labels, so each takes about as long as Python takes to start.
"""

from __future__ import annotations

import argparse
import sys

from ..cli_options import add_device_arg, add_model_arg
from ..errors import SearchIndexError
from .defaults import DEFAULT_L2, L2_GRID


def _session(args):
    from .session import AgileSession

    return AgileSession(args.index, model=getattr(args, "model", None), device=getattr(args, "device", None))


def _print_rows(session, target: str, rows) -> None:
    labels = session.labels.labels(target)
    width = max([len(session.window(r.row)[0]) for r in rows] + [9])
    print(f"{'row':>7}  {'recording':<{width}}  {'start (s)':>9}  {'end (s)':>9}  {'score':>7}  {'why':<6}  label")
    for r in rows:
        recording, start, end = session.window(r.row)
        print(
            f"{r.row:>7}  {recording:<{width}}  {start:>9.2f}  {end:>9.2f}  {r.score:>7.4f}  "
            f"{getattr(r, 'reason', ''):<6}  {labels.get(r.row, '')}"
        )


def cmd_target(args) -> int:
    if args.example_row is not None and args.example_audio is not None:
        print("error: give --example-row or --example-audio, not both", file=sys.stderr)
        return 1
    session = _session(args)
    example = args.example_row if args.example_row is not None else args.example_audio
    t = session.add_target(args.name, args.prompt, example)
    seeded = " and ".join(
        x for x, v in (("the prompt", t.text_embedding), ("the example", t.example_embedding)) if v is not None
    )
    print(
        f"target '{t.name}'"
        + (f", seeded by {seeded}" if seeded else ", no seed yet (labels only)")
        + (f"; prompt: {t.prompt!r}" if t.prompt else "")
        + (f"; example: {t.example}" if t.example else "")
    )
    return 0


def cmd_targets(args) -> int:
    session = _session(args)
    for t in session.targets():
        c = session.counts(t.name)
        fitted = "fitted" if session.head_path(t.name).is_file() else "not fitted"
        print(
            f"{t.name}: {c['positive']} positive, {c['negative']} negative, {c['unsure']} unsure; {fitted}"
            + (f"; prompt: {t.prompt!r}" if t.prompt else "")
            + (f"; example: {t.example}" if t.example else "")
        )
    return 0


def cmd_propose(args) -> int:
    session = _session(args)
    proposals = session.propose(args.target, n=args.n, mix=args.mix, seed=args.seed)
    if not proposals:
        print("every window is labelled for this target")
        return 0
    _print_rows(session, args.target, proposals)
    return 0


def cmd_label(args) -> int:
    from ..errors import UsageError
    from .labels import LabelStore

    session = _session(args)
    store: LabelStore = session.labels
    rows = list(args.row or [])
    for recording, seconds in args.at or []:
        try:
            moment = float(seconds)
        except ValueError:
            raise UsageError(f"--at takes a recording and a time in seconds, got {recording!r} {seconds!r}") from None
        rows.append(session.row_at(recording, moment))  # its UsageError names a recording not in the index
    if not rows:
        raise UsageError("give the windows to label with --row R ... or --at RECORDING SECONDS")
    ids = store.label_many(args.target, [(r, args.value) for r in rows], source="cli")
    c = store.counts(args.target)
    print(
        f"labelled {len(ids)} windows {args.value} (label ids {', '.join(map(str, ids))}); "
        f"'{args.target}' has {c['positive']} positive, {c['negative']} negative, {c['unsure']} unsure"
    )
    return 0


def cmd_undo(args) -> int:
    session = _session(args)
    undone = session.undo(args.target, args.label_id)
    if undone is None:
        print(
            f"nothing to undo for '{args.target}'"
            + (f" (label {args.label_id} is not a live label of it)" if args.label_id else "")
        )
        return 1 if args.label_id else 0
    now = session.labels.labels(args.target).get(undone.row)
    print(
        f"undid label {undone.id} (row {undone.row} {undone.value}); row {undone.row} is now "
        + (now if now else "unlabelled")
    )
    return 0


def cmd_import_raven(args) -> int:
    session = _session(args)
    counts = session.import_raven(
        args.table, args.target, args.min_overlap, args.negatives_rest, args.recording, args.annotation
    )
    print(
        f"{args.table}: {counts['boxes']} selections -> {counts['positive']} positive and "
        f"{counts['negative']} negative "
        f"windows for '{args.target}'"
        + (f"; {counts['unmatched']} selections skipped (see the warnings)" if counts["unmatched"] else "")
    )
    return 0


def cmd_fit(args) -> int:
    import shutil

    session = _session(args)
    result = session.fit(args.target, l2=args.l2)
    print(result.summary())
    if result.warning:
        print(result.warning_line(), file=sys.stderr)
    if args.out:
        from pathlib import Path

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(result.path, args.out)
        print(f"wrote {args.out}")
    return 0


def cmd_rank(args) -> int:
    session = _session(args)
    _print_rows(session, args.target, session.ranking(args.target, args.top))
    return 0


def cmd_export(args) -> int:
    if not args.csv and not args.raven:
        print("error: give --csv FILE and/or --raven FILE", file=sys.stderr)
        return 1
    session = _session(args)
    if args.raven and not args.target:
        print("error: --raven needs --target (a Raven table holds one target's positive windows)", file=sys.stderr)
        return 1
    if args.csv:
        print(f"wrote {args.csv} ({session.export_csv(args.target, args.csv)} labels)")
    if args.raven:
        print(f"wrote {args.raven} ({session.export_raven(args.target, args.raven)} positive windows)")
    return 0


def cmd_threshold(args) -> int:
    from .thresholds import target_threshold, write_thresholds

    session = _session(args)
    t = target_threshold(session, args.target, args.precision, args.score)
    print(t.summary())
    if t.warning_line():
        print(t.warning_line(), file=sys.stderr)
    if args.out:
        write_thresholds(args.out, [t])
        print(f"wrote {args.out} (the row of '{args.target}')")
    return 0


def cmd_density_sample(args) -> int:
    session = _session(args)
    samples = session.sample_for_density(args.target, args.n, seed=args.seed)
    labels = session.labels.labels(args.target)
    print(
        f"label these {len(samples)} windows of '{args.target}' (drawn at random within score bins), then run "
        "`biolingual agile density`"
    )
    print(f"{'row':>7}  {'bin':>3}  {'recording'}  start-end (s)  label")
    for x in samples:
        recording, start, end = session.window(x.row)
        print(f"{x.row:>7}  {x.bin:>3}  {recording}  {start:.2f}-{end:.2f}  {labels.get(x.row, '')}")
    return 0


def cmd_density(args) -> int:
    session = _session(args)
    estimate = session.estimate_density(args.target, args.confidence)
    print(estimate.summary())
    for b in estimate.bins:
        print(
            f"  scores {b.low:>9.4f} to {b.high:>9.4f}: {100 * b.share:5.1f}% of windows, "
            f"{b.positives} of {b.labelled} "
            "labelled windows positive"
        )
    return 0


def _guard(func):
    """Index and head problems are one ``error:`` line and exit 1 (usage mistakes are handled by main)."""

    def run(args) -> int:
        try:
            return func(args)
        except (SearchIndexError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1

    return run


def _mix(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) < 0 or sum(parts) <= 0:
        raise argparse.ArgumentTypeError(
            f"--mix is three fractions TOP,MARGIN,RANDOM such as 0.5,0.375,0.125; got {text!r}"
        )
    return parts


def add_subcommands(subparsers) -> None:
    """Add ``agile`` and its subcommands to the ``biolingual`` command's subparsers."""
    agile = subparsers.add_parser(
        "agile", help="agile modelling: label windows of an index, fit a classifier head per target"
    )
    sub = agile.add_subparsers(dest="agile_command", required=True)

    def command(name, func, help, target=True):
        p = sub.add_parser(name, help=help)
        p.add_argument("index", help="an index folder written by `biolingual index`")
        if target:
            p.add_argument("--target", required=True, help="the target's name, e.g. 'Barred Owl'")
        p.set_defaults(func=_guard(func))
        return p

    p = command("target", cmd_target, "add a target (or change its prompt or example)", target=False)
    p.add_argument("--name", required=True, help="the target's name, e.g. 'Barred Owl'")
    p.add_argument(
        "--prompt", help="text describing the sound, e.g. 'The sound of a Barred Owl hooting' (zero-shot seed)"
    )
    p.add_argument(
        "--example-row", type=int, help="a window of the index (its row, as `propose` and `rank` print) as example"
    )
    p.add_argument("--example-audio", help="an audio file as example (query by example)")
    add_model_arg(p, "the model to embed the prompt or example with (default: the index's; another is refused)")
    add_device_arg(p)

    command("targets", cmd_targets, "list the targets with their label counts", target=False)

    p = command("propose", cmd_propose, "windows to label next: top-scoring, uncertain and random ones")
    p.add_argument("-n", type=int, default=16, help="how many windows")
    p.add_argument("--mix", type=_mix, default=None, help="fractions TOP,MARGIN,RANDOM (default 0.5,0.375,0.125)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random share")

    p = command("label", cmd_label, "label windows (rows) positive, negative or unsure")
    p.add_argument("--row", type=int, nargs="+", help="window rows, as `propose` and `rank` print them")
    p.add_argument(
        "--at",
        nargs=2,
        action="append",
        metavar=("RECORDING", "SECONDS"),
        help="the window of RECORDING (path or unique file name) at SECONDS; repeat for several",
    )
    p.add_argument("--value", required=True, choices=["positive", "negative", "unsure"])

    p = command("undo", cmd_undo, "undo the latest label of a target (or --label-id N)")
    p.add_argument("--label-id", type=int, help="undo this label instead of the latest")

    p = command("import-raven", cmd_import_raven, "label windows from a Raven selection table")
    p.add_argument("table", help="a Raven selection table (.txt, tab-separated)")
    p.add_argument(
        "--min-overlap",
        type=float,
        default=0.5,
        help="share of the window (or of the box, if shorter) a box must cover for the window to be positive",
    )
    p.add_argument(
        "--negatives-rest",
        action="store_true",
        help="windows of annotated recordings that touch no box become negatives",
    )
    p.add_argument(
        "--recording", help="the recording the table is about, when it has no Begin Path / Begin File column"
    )
    p.add_argument("--annotation", help="import only selections with this label (Annotation, Species ... column)")

    p = command("fit", cmd_fit, "fit the target's head on its labels and print the round's figures")
    p.add_argument("--out", help="also copy the head file here (for `biolingual detect --head`)")
    p.add_argument(
        "--l2",
        type=float,
        default=None,
        help="how strongly the head is held to its text/example seed (default: chosen from the labels by "
        f"cross-validation over {', '.join(map(str, L2_GRID))}; {DEFAULT_L2} with too few to cross-validate)",
    )

    p = command("rank", cmd_rank, "the best windows by the current head (or the seed before any fit)")
    p.add_argument("--top", type=int, default=20)

    p = command(
        "threshold", cmd_threshold, "the score threshold that reaches a precision on the target's reviewed windows"
    )
    p.add_argument("--precision", type=float, required=True, help="the precision wanted, e.g. 0.9")
    p.add_argument(
        "--score",
        choices=["cosine", "head"],
        default=None,
        help="cosine: zero-shot, with the target's prompt/example; head: the fitted head's score, what "
        "`detect --head` uses (default: head once fitted, else cosine)",
    )
    p.add_argument(
        "--out", help="write (or update) the target's row in this thresholds CSV, for `detect --threshold-file`"
    )

    p = command(
        "density-sample", cmd_density_sample, "draw windows to label for a call-density estimate (stratified by score)"
    )
    p.add_argument("-n", type=int, default=8, help="windows per score bin")
    p.add_argument("--seed", type=int, default=0)

    p = command("density", cmd_density, "the share of windows holding the call, with a confidence interval")
    p.add_argument("--confidence", type=float, default=0.95)

    p = command(
        "export",
        cmd_export,
        "labels as CSV (all targets, or --target) and a target's positives as a Raven table",
        target=False,
    )
    p.add_argument("--target", help="only this target's labels")
    p.add_argument("--csv", help="write the labels to this CSV file")
    p.add_argument("--raven", help="write the target's positive windows as a Raven selection table")
