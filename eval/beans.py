"""The BEANS benchmark: zero-shot, linear probe and full fine-tuning, task by task.

    python -m eval.beans --model M --beans-root data/beans --tasks watkins,cbi,dcase --mode zero-shot \
        --out results/beans
    python -m eval.beans --model M --beans-root data/beans --tasks all --mode linear      # or finetune

``--beans-root`` is the BEANS checkout (holding ``data/<task>/...`` as its download scripts leave
it) or that ``data/`` folder. Each finished (task, mode) is written to ``OUT/<task>/<mode>.json``
at once and skipped when the run is repeated, so an interrupted run resumes task by task. A task
that cannot run (missing folder or file, an empty split) is reported and the others go on. After
every task ``OUT/results.md`` / ``results.csv`` are rewritten: every task and mode found in OUT,
with published figures beside ours.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import biolingual
from biolingual.metrics import detection_map

from .beans_data import read_split, unseen_label_problems
from .embedding_cache import EmbeddingCache, embed_split
from .heads import finetune, linear_probe
from .report import fmt, markdown_table, write_csv, write_json
from .runtime import InputError, add_runtime_args, check_runtime, finish_tasks, run_main
from .tasks import CLASSIFICATION, REFERENCE_SOURCES, REFERENCES, TASKS, Task, parse_tasks
from .types import Split, TaskDataError
from .zero_shot import classification_results

log = logging.getLogger(__name__)
MODES = ("zero-shot", "linear", "finetune")
DEFAULT_LRS = {"linear": [1e-3, 5e-3, 1e-2], "finetune": [1e-5, 5e-5, 1e-4]}  # finetune: BEANS' own grid


def task_prompts(task: Task, split: Split) -> list[str]:
    """The task's zero-shot prompts; a ``prompts.json`` ({label: prompt}) beside the split files overrides them."""
    custom = split.file.parent / "prompts.json"
    mapping = json.loads(custom.read_text()) if custom.is_file() else {}
    return [mapping.get(label, p) for label, p in zip(task.labels, task.prompts())]


def run_zero_shot(task: Task, model, root: Path, cache: EmbeddingCache, args) -> dict:
    problems: list[str] = []
    test = read_split(root, task, "test")
    problems += test.problems
    audio, test = embed_split(cache, model, test, args, problems)
    label_emb = model.embed_labels(task_prompts(task, test), args.template or ["{}"])
    logits = model.logits(audio, label_emb)
    if task.type == CLASSIFICATION:
        details = classification_results(test.targets, logits, list(task.labels))
        value = details["top1"]
    else:
        value = detection_map(logits, test.targets)
        details = {"n_windows": len(test.segments)}
    return {"test": value, "n_skipped": len(problems), "problems": problems, **details}


def run_supervised(task: Task, mode: str, model, root: Path, cache: EmbeddingCache, args) -> dict:
    splits = {name: read_split(root, task, name) for name in ("train", "valid", "test")}
    problems = [p for s in splits.values() for p in s.problems]
    unseen = unseen_label_problems(splits["train"], splits["test"], task)
    for p in unseen:  # reported, and kept in the test split: BEANS scores them too
        log.warning(p)
    problems += unseen
    lrs = args.lrs or DEFAULT_LRS[mode]
    if mode == "linear":
        features = {}
        for name in splits:
            features[name], splits[name] = embed_split(cache, model, splits[name], args, problems)
        result = linear_probe(task, features, splits, lrs, args.epochs, batch_size=args.train_batch_size)
    else:
        result = finetune(task, model, splits, lrs, args.epochs, batch_size=args.train_batch_size, workers=args.workers)
    return {
        **result,
        "lrs": lrs,
        "epochs": args.epochs,
        "n_skipped": len(problems) - len(unseen),
        "problems": problems,
        "n": {name: len(s.segments) for name, s in splits.items()},
    }


def summarise(out: Path) -> str:
    """Rewrite OUT/results.md and results.csv from every ``<task>/<mode>.json`` in OUT."""
    found: dict[str, dict[str, float]] = {}
    for path in sorted(out.glob("*/*.json")):
        if path.parent.name in TASKS and path.stem in MODES:
            found.setdefault(path.stem, {})[path.parent.name] = json.loads(path.read_text())["test"]
    tasks = [t for t in TASKS if any(t in v for v in found.values())]
    header = ["model", "mode"] + [f"{t} ({TASKS[t].metric})" for t in tasks]
    rows = [["ours", mode] + [fmt(found[mode].get(t)) for t in tasks] for mode in MODES if mode in found]
    refs = [
        [name, protocol] + [fmt(values.get(t)) for t in tasks]
        for name, protocol, values in REFERENCES
        if any(t in values for t in tasks)
    ]
    write_csv(out / "results.csv", header, rows + refs)
    text = (
        "# BEANS results (test split)\n\nOurs first, then published figures where they exist; — means "
        "not measured or not published.\n\n" + markdown_table(header, rows + refs) + "\n\n" + REFERENCE_SOURCES + "\n"
    )
    (out / "results.md").write_text(text)
    return text


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m eval.beans", description=__doc__.split("\n\n")[0])
    ap.add_argument("--beans-root", type=Path, required=True)
    ap.add_argument("--tasks", default="all", help="comma-separated task names, 'main' (the 10 BEANS tasks) or 'all'")
    ap.add_argument("--mode", choices=MODES, default="zero-shot")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--template", action="append", help="zero-shot: template(s) around each task prompt (default '{}')")
    ap.add_argument(
        "--lrs",
        type=lambda s: [float(x) for x in s.split(",")],
        help=f"learning-rate grid, comma-separated (default linear {DEFAULT_LRS['linear']}, "
        f"finetune {DEFAULT_LRS['finetune']})",
    )
    ap.add_argument("--epochs", type=int, default=50, help="epochs per learning rate (BEANS' runner uses 50)")
    ap.add_argument("--train-batch-size", type=int, default=32)
    ap.add_argument("--cache", type=Path, help="embedding cache file (default OUT/embeddings.sqlite)")
    ap.add_argument("--overwrite", action="store_true", help="recompute tasks that already have a result")
    add_runtime_args(ap, 16, "clips per forward pass when embedding")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    """Run from the command line; returns the exit code: 0 every task evaluated in full, 2 finished with
    rows skipped (counted in each task's JSON), 1 an error or a task that could not run."""
    return run_main(parse_args, run, argv)


def run(args: argparse.Namespace) -> int:
    try:
        names = parse_tasks(args.tasks)
    except ValueError as e:
        raise InputError(str(e)) from None
    check_runtime(args)
    if not args.beans_root.is_dir():
        raise InputError(
            f"--beans-root '{args.beans_root}' is not a folder; give the BEANS checkout (or its data/ folder)"
        )
    model = biolingual.load(args.model, device=args.device, dtype=args.dtype)
    failed = {}
    with EmbeddingCache(args.cache or args.out / "embeddings.sqlite") as cache:
        for name in names:
            task, target = TASKS[name], args.out / name / f"{args.mode}.json"
            if target.exists() and not args.overwrite:
                log.info("%s: %s already done (%s); skipped", name, args.mode, target)
                continue
            start = time.time()
            try:
                if args.mode == "zero-shot":
                    result = run_zero_shot(task, model, args.beans_root, cache, args)
                else:
                    result = run_supervised(task, args.mode, model, args.beans_root, cache, args)
            except (TaskDataError, ValueError, OSError) as e:
                log.error("%s: %s", name, e)
                failed[name] = str(e)
                continue
            result = {
                "task": name,
                "mode": args.mode,
                "metric": task.metric,
                "model": str(args.model),
                "seconds": round(time.time() - start, 1),
                **result,
            }
            write_json(target, result)
            log.info("%s %s: test %s %.4f", name, args.mode, task.metric, result["test"])
            summarise(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    print(summarise(args.out), end="")
    return finish_tasks(args.out, args.mode, names, failed)


if __name__ == "__main__":
    sys.exit(main())
