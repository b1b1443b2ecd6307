"""Zero-shot classification: score clips against label prompts, report top-1/top-5 accuracy, macro
recall (UAR), a per-class table and a confusion-matrix plot.

    python -m eval.zero_shot --model M --data labels.csv --template "The sound of a {}" --out results/zs
    python -m eval.zero_shot --model M --beans-root data/beans --task watkins --out results/zs_watkins
    python -m eval.zero_shot --model M --shards "data/test-*.tar" --label-field species --out results/zs_shards

Several ``--template`` options are ensembled (mean of the normalised text embeddings per label).

``--species-near LAT,LON --date D`` (or ``--species-list FILE``, the options of ``biolingual predict``) keeps the
classes on the species list of a place and season, matched by common or scientific name
(:meth:`biolingual.species_lists.SpeciesList.match`): the clips of the other classes are left out and
counted, the metrics are over what remains, and the list (with its threshold) is written to ``OUT/species.csv``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import torch

import biolingual
from biolingual.cli_options import add_species_args, read_species, save_species
from biolingual.metrics import accuracy, confusion_matrix, top_k_accuracy, unweighted_average_recall
from biolingual.prompts import DEFAULT_TEMPLATE
from biolingual.species_lists import SpeciesList

from .beans_data import read_split
from .embedding_cache import EmbeddingCache
from .labelled_csv import LabelledDataError, read_labelled_csv
from .report import fmt, markdown_table, plot_confusion, write_csv, write_json
from .runtime import add_runtime_args, check_runtime, finish, run_main, shard_embedder
from .species_filter import match_classes, species_line, species_report
from .tasks import TASKS
from .types import Segment

log = logging.getLogger(__name__)


def classification_results(y_true: np.ndarray, scores: torch.Tensor, labels: list[str]) -> dict:
    """Top-1 / top-5 accuracy, UAR, per-class recall and support, and the confusion matrix."""
    y_pred = scores.argmax(1).numpy()
    ids = list(range(len(labels)))
    cm = confusion_matrix(y_true, y_pred, labels=ids)
    support = cm.sum(1)
    per_class = [
        {
            "label": labels[i],
            "n": int(support[i]),
            "correct": int(cm[i, i]),
            "recall": float(cm[i, i] / support[i]) if support[i] else None,
            "predicted": int(cm[:, i].sum()),
        }
        for i in ids
    ]
    return {
        "n": int(len(y_true)),
        "n_labels": len(labels),
        "top1": accuracy(y_true, y_pred),
        "top5": top_k_accuracy(y_true, scores, min(5, len(labels))),
        "uar": unweighted_average_recall(y_true, y_pred),
        "chance_top1": 1.0 / len(labels),
        "per_class": per_class,
        "confusion": cm.tolist(),
    }


def read_candidate_labels(args: argparse.Namespace) -> list[str] | None:
    """The labels given with --labels-file or --labels; None when neither is given."""
    if args.labels_file:
        if not args.labels_file.is_file():
            raise LabelledDataError(
                f"--labels-file '{args.labels_file}' not found; give a text file with one label per line"
            )
        labels = [
            ln.strip() for ln in args.labels_file.read_text().splitlines() if ln.strip() and not ln.startswith("#")
        ]
        if not labels:
            raise LabelledDataError(f"--labels-file '{args.labels_file}' holds no label; write one label per line")
        return labels
    if args.labels:
        return [s.strip() for s in args.labels.split(",") if s.strip()]
    return None


def restrict_to_species(
    species: SpeciesList, y_labels: list[str], labels: list[str] | None, prompts: list[str] | None
) -> tuple[list[int], list[str] | None, list[str] | None, dict]:
    """Keep the classes on ``species``: a class is on it when its label (or its prompt, which names a BEANS
    class in words) is a listed common or scientific name (:func:`eval.species_filter.match_classes`). In: the
    clips' true labels, the candidate labels (None: the labels found in the data) and their prompts. Out: the
    indices of the clips to keep (a clip has one label: off the list, it is left out), the candidates and
    prompts on the list, and the report for ``metrics.json``. An OffListError when no class is on the list."""
    classes = list(labels) if labels is not None else sorted(set(y_labels))
    matched = match_classes(species, classes, list(zip(classes, prompts or classes)))
    keep = [i for i, y in enumerate(y_labels) if y in matched]
    if labels is not None:
        on = [i for i, label in enumerate(labels) if label in matched]
        labels, prompts = [labels[i] for i in on], [prompts[i] for i in on] if prompts else None
    return keep, labels, prompts, species_report(species, classes, matched, len(y_labels) - len(keep))


def evaluate(
    model,
    audio_embeddings: torch.Tensor,
    y_labels: list[str],
    labels: list[str],
    templates: list[str],
    prompts: list[str] | None = None,
) -> tuple[dict, torch.Tensor]:
    """Results and scores for embedded clips whose true labels are ``y_labels`` (strings among ``labels``)."""
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted(set(y_labels) - set(index))
    if unknown:
        raise LabelledDataError(f"true labels {unknown[:5]} are not among the candidate labels")
    label_embeddings = model.embed_labels(prompts or labels, templates)
    scores = model.logits(audio_embeddings, label_embeddings)
    return classification_results(np.array([index[y] for y in y_labels]), scores, labels), scores


def write_outputs(
    out: Path, results: dict, labels: list[str], names: list[str], y_labels: list[str], scores, title: str
):
    out.mkdir(parents=True, exist_ok=True)
    rows = [[c["label"], c["n"], c["correct"], fmt(c["recall"]), c["predicted"]] for c in results["per_class"]]
    header = ["label", "n", "correct", "recall", "predicted as"]
    write_csv(out / "per_class.csv", header, rows)
    summary = markdown_table(
        ["clips", "labels", "top-1", "top-5", "UAR (macro recall)", "chance top-1"],
        [
            [
                results["n"],
                results["n_labels"],
                fmt(results["top1"]),
                fmt(results["top5"]),
                fmt(results["uar"]),
                fmt(results["chance_top1"]),
            ]
        ],
    )
    listed = results.get("species_list")
    species = f"Species list ({listed['file']}): {listed['list']}. {species_line(listed)}.\n\n" if listed else ""
    (out / "results.md").write_text(
        f"# Zero-shot: {title}\n\n{summary}\n{species}## Per class\n\n{markdown_table(header, rows)}"
    )
    probs = scores.softmax(1)
    write_csv(
        out / "predictions.csv",
        ["item", "label", "predicted", "probability"],
        [[n, y, labels[int(p.argmax())], f"{float(p.max()):.4f}"] for n, y, p in zip(names, y_labels, probs)],
    )
    plot_confusion(np.array(results["confusion"]), labels, out / "confusion.png", title=f"zero-shot: {title}")
    write_json(out / "metrics.json", results)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m eval.zero_shot", description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="CSV with columns path,label")
    src.add_argument("--task", help="a BEANS classification task (with --beans-root)")
    src.add_argument("--shards", help="webdataset shards (brace pattern); labels from --label-field")
    ap.add_argument("--beans-root", type=Path, help="the BEANS checkout (or its data/ folder)")
    ap.add_argument("--split", default="test", help="BEANS split to evaluate (default test)")
    ap.add_argument("--label-field", default="species", help="shard metadata field holding the label")
    ap.add_argument("--labels", help="candidate labels, comma-separated (default: the labels found in the data)")
    ap.add_argument("--labels-file", type=Path, help="candidate labels, one per line")
    add_species_args(ap, "the species of a place and season: only the classes on the list are evaluated")
    ap.add_argument(
        "--template",
        action="append",
        help="prompt template with {} (repeat to ensemble); "
        f"default '{DEFAULT_TEMPLATE}', or the task's prompts for BEANS",
    )
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cache", type=Path, help="embedding cache file (default OUT/embeddings.sqlite)")
    add_runtime_args(ap, 16)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    """Run from the command line; returns the exit code (0 all evaluated, 2 rows skipped, 1 error)."""
    return run_main(parse_args, run, argv)


def run(args: argparse.Namespace) -> int:
    check_runtime(args)  # device and --out first: nothing is read or loaded for a run that cannot finish
    templates = args.template or ([DEFAULT_TEMPLATE] if args.task is None else ["{}"])
    species = read_species(args)  # asked of GBIF (or read) before any clip is embedded
    labels = read_candidate_labels(args)
    listed = None  # what the species list kept and left out
    problems: list[str] = []  # every skipped row or sample, with the reason
    undecoded = 0  # shard samples that did not decode: one entry in problems stands for them all
    prompts = None
    if args.shards:
        embed_shards = shard_embedder("python -m eval.zero_shot --shards")
        model = biolingual.load(args.model, device=args.device, dtype=args.dtype)
        try:
            audio, _, _, metas, undecoded = embed_shards(model, args.shards, args.batch_size, args.workers)
        except ValueError as e:  # ShardError and "no usable sample": the shards cannot be evaluated
            raise LabelledDataError(str(e)) from None
        keep = [i for i, m in enumerate(metas) if str(m.get(args.label_field, "")).strip()]
        if not keep:
            raise LabelledDataError(f"no sample in '{args.shards}' has the metadata field '{args.label_field}'")
        problems += [
            f"shard sample #{i}: no '{args.label_field}' field; skipped"
            for i in range(len(metas))
            if i not in set(keep)
        ]
        if undecoded:
            problems.append(f"{undecoded} shard sample(s) did not decode, each named in the log; skipped")
        audio = audio[keep]
        y_labels = [str(metas[i][args.label_field]).strip() for i in keep]
        names = [str(metas[i].get("key", i)) for i in keep]
        if species is not None:  # shards are read whole: their labels are known only once embedded
            on, labels, prompts, listed = restrict_to_species(species, y_labels, labels, prompts)
            audio, y_labels, names = audio[on], [y_labels[i] for i in on], [names[i] for i in on]
        title = args.shards
    else:
        if args.task:
            if args.beans_root is None:
                raise LabelledDataError("--task needs --beans-root (the BEANS checkout or its data/ folder)")
            task = TASKS.get(args.task)
            if task is None or task.type != "classification":
                raise LabelledDataError(
                    f"'{args.task}' is not a BEANS classification task (use eval.beans for detection)"
                )
            split = read_split(args.beans_root, task, args.split)
            problems += split.problems
            segments = split.segments
            y_labels = [task.labels[i] for i in split.targets]
            names = [f"{split.file}:{r}" for r in split.rows]
            title = f"BEANS {task.name} ({args.split})"
            if labels is None:
                prompts = task.prompts()
                labels = list(task.labels)
        else:
            paths, y_labels, bad = read_labelled_csv(args.data)
            problems += bad
            segments = [Segment(p, 0.0, float("inf"), 0.0) for p in paths]
            names = paths
            title = str(args.data)
        if species is not None:  # before embedding: the clips of classes off the list are not embedded
            on, labels, prompts, listed = restrict_to_species(species, y_labels, labels, prompts)
            segments, y_labels, names = [segments[i] for i in on], [y_labels[i] for i in on], [names[i] for i in on]
        model = biolingual.load(args.model, device=args.device, dtype=args.dtype)
        with EmbeddingCache(args.cache or args.out / "embeddings.sqlite") as cache:
            audio, errors = cache.embed(model, segments, batch_size=args.batch_size, workers=args.workers)
        for i, e in errors.items():
            problems.append(f"{names[i]}: {e}; skipped")
        keep = [i for i in range(len(segments)) if i not in errors]
        if not keep:
            raise LabelledDataError("no clip could be read" + (f"; first problem: {problems[0]}" if problems else ""))
        audio, y_labels, names = audio[keep], [y_labels[i] for i in keep], [names[i] for i in keep]
    if labels is None:
        labels = sorted(set(y_labels))
    results, scores = evaluate(model, audio, y_labels, labels, templates, prompts)
    n_skipped = len(problems) + max(undecoded - 1, 0)
    results.update(
        {
            "model": str(args.model),
            "templates": templates,
            "source": title,
            "n_skipped": n_skipped,
            "problems": problems,
        }
    )
    if listed is not None:
        results["species_list"] = listed
    write_outputs(args.out, results, labels, names, y_labels, scores, title)
    save_species(species, args.out)
    for p in problems:
        log.warning("%s", p)
    if listed is not None:
        print(species_line(listed))
    print(
        f"top-1 {results['top1']:.3f}  top-5 {results['top5']:.3f}  UAR {results['uar']:.3f}  "
        f"({results['n']} clips, {len(labels)} labels; chance {results['chance_top1']:.3f}) -> {args.out}"
    )
    return finish(problems, args.out / "metrics.json", n_skipped)


if __name__ == "__main__":
    sys.exit(main())
