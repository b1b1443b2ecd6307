"""The ``python -m eval.birdset`` command: one BirdSet config (or several) in one mode, scored as BirdSet scores.

In: ``--data`` (a folder holding the config folders, e.g. ``data/birdset/HSN``, or one config folder),
``--task HSN[,NBP,...]``, ``--mode zero-shot|linear|finetune``. Out: ``OUT/<TASK>/<mode>.json`` (cmAP,
AUROC, top-1, per-class AP/AUROC, the skipped rows), then ``OUT/results.md`` / ``results.csv`` (every
result in OUT beside the published figures) and ``OUT/birdset.png``. A finished (task, mode) is skipped
when the command is repeated (``--overwrite`` recomputes it); embeddings go through the library's
embedding cache (``OUT/embeddings.sqlite``), so a repeated or resumed run embeds nothing twice.

Zero-shot with ``--species-near LAT,LON --date D`` (or ``--species-list FILE``, the options of ``biolingual
predict``) keeps the eBird codes whose code, common or scientific name (from ``--names``) is on the species list
of a place and season: the other codes leave the classes and every window's targets, a window keeps its listed
labels, and a window left with none stays in as a window without a call (a negative for every class, out of
top-1, as BirdSet scores windows without a bird), counted. The list is written to ``OUT/species.csv``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

import biolingual
from biolingual.cli_options import add_species_args, read_species, save_species
from biolingual.extras import MissingExtraError
from biolingual.metrics import (
    class_mean_average_precision,
    multilabel_auroc,
    multilabel_average_precision,
    multilabel_top1_accuracy,
)
from biolingual.prompts import DEFAULT_TEMPLATE

from ..embedding_cache import EmbeddingCache, embed_split
from ..heads import SEED, finetune, linear_probe
from ..report import fmt, markdown_table, pyplot, write_csv, write_json
from ..runtime import EXIT_OK, InputError, add_runtime_args, check_runtime, finish_tasks, run_main
from ..species_filter import done_with, match_classes, species_line, species_report
from ..tasks import DETECTION, Task
from ..types import Split, TaskDataError
from .data import CLASS_LIMIT, EVENTS_PER_RECORDING, class_names, hold_out, read_split
from .fixture import write_example_fixture

log = logging.getLogger(__name__)
MODES = ("zero-shot", "linear", "finetune")
TEST_CONFIGS = ("HSN", "NBP", "POW", "SSW", "SNE", "PER", "NES", "UHH")
TEST_SPLIT = "test_5s"
DEFAULT_LRS = {"linear": [1e-3, 5e-3, 1e-2], "finetune": [1e-5, 5e-5]}  # finetune: BirdSet's AdamW lr is 1e-5
# Published BirdSet figures for BioLingual: (model, mode, task, cmAP, AUROC, T1-Acc).
REFERENCES = [("BioLingual (BirdSet paper)", "finetune", "HSN", 0.33, 0.79, None)]
REFERENCE_SOURCES = (
    "Published row: the BirdSet paper (Rauch et al., arXiv 2403.10380), BioLingual fine-tuned on HSN's "
    "dedicated training set, as issue 18 quotes it (cmAP 0.33, AUROC 0.79); the paper's table itself was "
    "not reachable offline, so its T1-Acc is not given here."
)


def read_names(
    path: Path | None, classes: list[str], scientific: dict[str, str] | None = None
) -> tuple[list[str], list[str]]:
    """Prompt names for the classes and the codes left without one; the scientific names the file gives are
    put in ``scientific`` (code -> name) when asked, for matching the codes against a species list.

    ``path`` is a JSON object mapping eBird codes to names: either plain common names or BirdSet's
    ``eBird_taxonomy_codes_2021E.json`` form "Scientific name_Common name" (its reverse entries are
    ignored). The common name is what the prompt uses; a code it lacks is prompted as the bare code.
    """
    if path is None:
        return list(classes), list(classes)
    try:
        mapping = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"--names '{path}': cannot read a JSON object of eBird code -> name ({e})") from None
    if not isinstance(mapping, dict):
        raise InputError(f"--names '{path}': expected a JSON object of eBird code -> name")
    names, missing = [], []
    for code in classes:
        value = mapping.get(code)
        if isinstance(value, str) and value.strip():
            names.append(value.split("_", 1)[1] if "_" in value else value)
            if scientific is not None and "_" in value:
                scientific[code] = value.split("_", 1)[0]
        else:
            names.append(code)
            missing.append(code)
    return names, missing


def scores(probs: np.ndarray, targets: np.ndarray, classes: list[str]) -> dict:
    """BirdSet's three numbers on one test set, and the per-class values behind the first two."""
    ap = multilabel_average_precision(probs, targets)
    auc = multilabel_auroc(probs, targets, per_class=True)
    positives = targets.sum(0).astype(int)
    return {
        "cmap": class_mean_average_precision(probs, targets),
        "auroc": float(auc.mean()),
        "top1": multilabel_top1_accuracy(probs, targets),
        "n_windows": int(len(targets)),
        "n_windows_without_bird": int((targets.sum(1) == 0).sum()),
        "classes_without_positives": [c for c, n in zip(classes, positives) if n == 0],
        "per_class": {
            c: {"ap": None if np.isnan(a) else float(a), "auroc": float(u), "n_positive": int(n)}
            for c, a, u, n in zip(classes, ap, auc, positives)
        },
    }


def config_folder(data: Path, task: str) -> Path:
    """``DATA/TASK`` when it exists, else DATA itself when it holds the test split."""
    for candidate in (data / task, data):
        if (
            (candidate / TEST_SPLIT).exists()
            or list(candidate.glob(f"{TEST_SPLIT}-*.parquet"))
            or list(candidate.glob(f"data/{TEST_SPLIT}-*.parquet"))
        ):
            return candidate
    raise TaskDataError(f"task '{task}': no '{TEST_SPLIT}' split under '{data / task}' or '{data}'")


def restrict_to_species(species, test, classes: list[str], names: list[str], scientific: dict[str, str]):
    """Keep the codes on ``species`` (by code, common or scientific name): the test split's targets and the
    classes and prompt names lose the other codes. BirdSet is multi-label, so a window keeps its listed labels;
    one left with none stays in as a window without a call, and is counted. Out: the split, classes, names and
    the ``species_list`` report."""
    matched = match_classes(species, classes, [(c, n, scientific.get(c)) for c, n in zip(classes, names)])
    on = [i for i, c in enumerate(classes) if c in matched]
    targets = test.targets[:, on]
    unlabelled = int((test.targets.any(1) & ~targets.any(1)).sum())
    report = species_report(species, classes, matched, 0, samples_without_listed_label=unlabelled)
    test = Split(test.name, test.file, test.segments, targets, test.rows, test.problems)
    return test, [classes[i] for i in on], [names[i] for i in on], report


def run_task(task: str, mode: str, model, cache: EmbeddingCache, args, species=None) -> dict:
    folder = config_folder(args.data, task)
    classes = class_names(folder, TEST_SPLIT)
    spill = args.out / "audio_from_bytes"
    test = read_split(folder, TEST_SPLIT, classes, spill)
    problems = list(test.problems)
    listed = {}  # the species list's report, zero-shot with a list only
    if mode == "zero-shot":
        scientific: dict[str, str] = {}
        names, missing = read_names(args.names, classes, scientific)
        if species is not None:  # before embedding, so a list that matches no class costs nothing
            test, classes, names, report = restrict_to_species(species, test, classes, names, scientific)
            missing = [c for c in missing if c in classes]
            listed = {"species_list": report}
            print(f"{task}: {species_line(report, 'window')}")
        if missing:
            log.warning(
                "%s: no name for %d of %d codes (%s); their prompts use the bare code",
                task,
                len(missing),
                len(classes),
                ", ".join(missing[:10]),
            )
        audio, test = embed_split(cache, model, test, args, problems)
        templates = args.template or [DEFAULT_TEMPLATE]
        labels = model.embed_labels(names, templates)
        # cosine similarities: the ranking CLAP's logits give, without a temperature that would saturate a sigmoid
        sim = (audio.float() @ labels.float().cpu().T).numpy()
        result = scores(sim, test.targets, classes)
        extra = {
            "templates": templates,
            "prompts": [templates[0].format(n) for n in names],
            "codes_without_name": missing,
        }
    else:
        train_folder = config_folder(args.train_data, task) if args.train_data else folder
        train_all = read_split(train_folder, "train", classes, spill, args.events_per_recording, args.class_limit)
        problems += train_all.problems
        train, valid = hold_out(train_all, args.valid_fraction, SEED)
        splits = {"train": train, "valid": valid, "test": test}
        spec = Task(task, DETECTION, {}, tuple(classes), 32_000)  # multi-hot targets, BCE loss in eval.heads

        def metric(logits, targets):
            return class_mean_average_precision(torch.sigmoid(logits.float()).numpy(), targets)

        def details(logits):
            return scores(torch.sigmoid(logits.float()).numpy(), splits["test"].targets, classes)

        lrs = args.lrs or DEFAULT_LRS[mode]
        if mode == "linear":
            features = {}
            for name in splits:
                features[name], splits[name] = embed_split(cache, model, splits[name], args, problems)
            fit = linear_probe(spec, features, splits, lrs, args.epochs, args.train_batch_size, metric, details)
        else:
            fit = finetune(spec, model, splits, lrs, args.epochs, args.train_batch_size, args.workers, metric, details)
        result = fit.pop("details")
        extra = {
            "valid_cmap": fit["valid"],
            "lr": fit["lr"],
            "epoch": fit["epoch"],
            "lrs": lrs,
            "epochs": args.epochs,
            "history": fit["history"],
            "n": {k: len(s.segments) for k, s in splits.items()},
            "train_source": str(train_all.file),
        }
    return {**result, **extra, **listed, "n_skipped": len(problems), "problems": problems}


def summarise(out: Path) -> str:
    """Rewrite OUT/results.md, results.csv and birdset.png from every ``<task>/<mode>.json`` in OUT."""
    found, lists = [], []
    for path in sorted(out.glob("*/*.json")):
        if path.stem in MODES:
            r = json.loads(path.read_text())
            found.append(("ours", path.stem, path.parent.name, r["cmap"], r["auroc"], r["top1"]))
            if r.get("species_list"):
                listed = r["species_list"]
                lists.append(f"{path.parent.name}: {species_line(listed, 'window')} ({listed['list']}).\n")
    tasks = {f[2] for f in found}
    refs = [r for r in REFERENCES if r[2] in tasks]
    header = ["model", "mode", "task", "cmAP", "AUROC", "T1-Acc"]
    rows = [[m, mode, t, fmt(a), fmt(b), fmt(c)] for m, mode, t, a, b, c in found + refs]
    write_csv(out / "results.csv", header, rows)
    text = (
        "# BirdSet results (test_5s)\n\nOurs first, then published figures for the same task; — means not "
        "published.\n\n" + markdown_table(header, rows) + "\n" + REFERENCE_SOURCES + "\n"
    )
    if lists:
        text += "\nZero-shot on the species list of a place and season (species.csv):\n\n" + "\n".join(lists)
    (out / "results.md").write_text(text)
    if found:
        _plot(found + refs, out / "birdset.png")
    return text


def _plot(rows, path: Path) -> None:
    plt = pyplot()
    metrics = ("cmAP", "AUROC", "T1-Acc")
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(rows)), 3.5))
    width = 0.8 / len(metrics)
    for k, name in enumerate(metrics):
        values = [r[3 + k] if r[3 + k] is not None else np.nan for r in rows]
        ax.bar(np.arange(len(rows)) + (k - 1) * width, values, width, label=name)
    ax.set_xticks(range(len(rows)), [f"{r[2]} {r[1]}\n{r[0]}" for r in rows], fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("score")
    ax.set_title("BirdSet test_5s")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m eval.birdset", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--data", type=Path, help="folder holding the config folders (HSN/, NBP/, ...) or one config folder"
    )
    ap.add_argument("--task", default="HSN", help=f"comma-separated BirdSet configs ({', '.join(TEST_CONFIGS)})")
    ap.add_argument("--mode", choices=MODES, default="zero-shot")
    ap.add_argument("--out", type=Path, help="results folder")
    ap.add_argument(
        "--train-data",
        type=Path,
        help="linear/finetune: where the train split is (default: --data); "
        "e.g. an XCL or XCM folder, whose labels are mapped onto the test classes by eBird code",
    )
    ap.add_argument(
        "--names",
        type=Path,
        help="zero-shot: JSON of eBird code -> name (BirdSet's "
        "resources/birdnet/eBird_taxonomy_codes_2021E.json works); without it prompts use the codes",
    )
    ap.add_argument(
        "--template",
        action="append",
        help=f"zero-shot: prompt template(s) around each name, several are averaged (default {DEFAULT_TEMPLATE!r})",
    )
    ap.add_argument(
        "--lrs",
        type=lambda s: [float(x) for x in s.split(",")],
        help=f"learning-rate grid (default linear {DEFAULT_LRS['linear']}, finetune {DEFAULT_LRS['finetune']})",
    )
    ap.add_argument(
        "--epochs",
        type=int,
        default=10,
        help="epochs per learning rate; the best (lr, epoch) by "
        "validation cmAP is reported, as BirdSet keeps its best validation cmAP checkpoint",
    )
    ap.add_argument("--train-batch-size", type=int, default=32)
    ap.add_argument("--valid-fraction", type=float, default=0.2, help="training recordings held out for selection")
    ap.add_argument("--events-per-recording", type=int, default=EVENTS_PER_RECORDING)
    ap.add_argument("--class-limit", type=int, default=CLASS_LIMIT, help="training windows per class")
    ap.add_argument("--cache", type=Path, help="embedding cache file (default OUT/embeddings.sqlite)")
    ap.add_argument("--overwrite", action="store_true", help="recompute results that already exist")
    ap.add_argument(
        "--write-example-fixture",
        type=Path,
        metavar="DIR",
        help="write a small HSN config in BirdSet's on-disk schema (synthetic audio) to DIR and exit",
    )
    add_species_args(ap, "zero-shot: the species of a place and season; only the codes on the list are scored")
    add_runtime_args(ap, 16, "clips per forward pass when embedding")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    """Exit code: 0 every task evaluated in full, 2 finished with rows skipped (listed in each task's JSON),
    1 an error or a task that could not run."""
    return run_main(parse_args, run, argv)


def run(args: argparse.Namespace) -> int:
    if args.write_example_fixture:
        folder = write_example_fixture(args.write_example_fixture)
        print(f"wrote {folder} and {args.write_example_fixture / 'ebird_names.json'}")
        return EXIT_OK
    if args.data is None or args.out is None:
        raise InputError("--data and --out are required (or --write-example-fixture DIR)")
    tasks = [t.strip() for t in args.task.split(",") if t.strip()]
    if not tasks:
        raise InputError("--task is empty")
    check_runtime(args)
    if not args.data.is_dir():
        raise InputError(f"--data '{args.data}' is not a folder")
    if not 0 < args.valid_fraction < 1:
        raise InputError("--valid-fraction must be between 0 and 1")
    if args.mode != "zero-shot" and (args.species_list or args.species_near):
        raise InputError("--species-list/--species-near filter the classes of --mode zero-shot only")
    species = read_species(args)  # asked of GBIF (or read) before the model is loaded
    model = biolingual.load(args.model, device=args.device, dtype=args.dtype)
    failed = {}
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        with EmbeddingCache(args.cache or args.out / "embeddings.sqlite") as cache:
            for task in tasks:
                target = args.out / task / f"{args.mode}.json"
                if target.exists() and not args.overwrite:
                    if done_with(json.loads(target.read_text()), species):
                        log.info("%s: %s already done (%s); skipped", task, args.mode, target)
                        continue
                    log.info("%s: %s was computed with another species list (or none); computed again", task, args.mode)
                start = time.time()
                try:
                    result = run_task(task, args.mode, model, cache, args, species)
                except (TaskDataError, ValueError, OSError) as e:
                    log.error("%s: %s", task, e)
                    failed[task] = str(e)
                    continue
                result = {
                    "task": task,
                    "mode": args.mode,
                    "model": str(args.model),
                    "split": TEST_SPLIT,
                    "seconds": round(time.time() - start, 1),
                    **result,
                }
                write_json(target, result)
                log.info(
                    "%s %s: cmAP %.4f AUROC %.4f T1 %.4f",
                    task,
                    args.mode,
                    result["cmap"],
                    result["auroc"],
                    result["top1"],
                )
        save_species(species, args.out)
        print(summarise(args.out), end="")
    except MissingExtraError as e:
        raise InputError(str(e)) from None
    return finish_tasks(args.out, args.mode, tasks, failed)
