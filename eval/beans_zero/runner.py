"""The BEANS-Zero runner: every classification and detection component scored zero-shot, as beans-zero scores it.

In: the options (see :func:`parse_args`). Out, in ``--out``: ``<component>.json`` per component (beans-zero's
metrics, the prompts, problems), ``predictions.jsonl`` (``prediction``, ``label``, ``dataset_name``, ``id``:
the file beans-zero's own ``beans-evaluate`` reads, to check our scores with its code), ``results.json``,
``results.md`` (our figures beside the published ones) and ``results.png``.

A CLAP model answers by ranking texts, so each component is turned into a choice among its own labels:

- classification: the candidates are the component's distinct true outputs, each wrapped in the prompt
  template(s) for the kind of name the component uses (common, scientific or taxonomic, from the ``-cmn`` /
  ``-sci`` / ``-tax`` suffix; several templates are averaged, i.e. ensembled); the prediction is the best one;
- detection: the candidates are the component's classes (the comma-separated parts of its outputs) plus one
  negative text (``--none-prompt``); the prediction is the ``--top-k`` best candidates, or every class whose
  probability (softmax over the candidates) reaches ``--threshold``, without the negative, joined with ", "
  as beans-zero's outputs are; nothing left is "None". The component's multi-hot scores are also scored
  as ranked scores (BEANS' detection mAP), reported apart: beans-zero scores only the strings.

Components whose task is neither (captioning) are listed as out of scope with the reason.

``--species-near LAT,LON --date D`` (or ``--species-list FILE``, the options of ``biolingual predict``) keeps,
in the species-classification components (:data:`SPECIES_COMPONENTS`), the classes on the species list of a
place and season, matched by common or scientific name (a Watkins label "Beluga, White Whale" by either part):
the examples of the other classes are left out and counted, and the metrics are over what remains. The other
components (sound events, life stage, call type, individuals, genus, family, taxonomic strings, detection) are
not filtered and are named as such; the list is written to ``OUT/species.csv``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

import biolingual
from biolingual.cli_options import add_species_args, read_species, save_species
from biolingual.metrics import detection_map

from ..embedding_cache import EmbeddingCache
from ..report import fmt, markdown_table, pyplot, write_json
from ..runtime import InputError, add_runtime_args, check_runtime, finish, run_main
from ..species_filter import OffListError, match_classes, species_line, species_report
from .data import BeansZeroDataError, Example, LocalCopy
from .embed import embed_examples
from .scoring import NONE, PRIMARY, detection_classes, multi_hot, score_component

log = logging.getLogger(__name__)

IN_SCOPE = ("classification", "detection")
OUT_OF_SCOPE_REASON = {
    "captioning": "the answer is free text scored with SPIDEr (SPICE + CIDEr) against one reference caption; a "
    "CLAP model ranks given texts and cannot write a caption, and ranking the benchmark's own "
    "captions would score retrieval, not captioning",
}
# Prompt templates by the kind of name a component's labels are written in; --ensemble averages each list.
TEMPLATES = {
    "common": ["The sound of a {}", "A {} calling", "A recording of a {}", "{}"],
    "scientific": ["The sound of {}", "A recording of {}", "{}"],
    "taxonomic": ["{}", "The sound of {}"],
}
# The classification components whose labels are species names (common or scientific), the ones a species list
# of a place and season filters; -tax labels are taxonomic strings and genus/family are not species.
SPECIES_COMPONENTS = ("watkins", "cbi", "humbugdb", "unseen-species-cmn", "unseen-species-sci")
DEFAULT_NONE_PROMPT = "Other sounds"  # BioLingual's negative prompt for BEANS' gibbon detection
# Published zero-shot figures for CLAP models on BEANS-Zero, {component: (value, metric, source)}. None yet:
# the NatureLM-audio paper (arXiv 2411.07186, Table 5) compares BioLingual and CLAP on the unseen-species
# components, but no copy of its figures could be read where this was written (docs/evaluation.md).
PUBLISHED: dict[str, tuple[float, str, str]] = {}
PUBLISHED_NOTE = (
    "Published: zero-shot figures of BioLingual on BEANS-Zero (NatureLM-audio paper, arXiv "
    "2411.07186, Table 5, unseen species) could not be read here, so the column is empty; — means "
    "not published or not found."
)


def name_kind(component: str) -> str:
    """The kind of name a component's labels are written in, from BEANS-Zero's naming (``unseen-genus-sci``)."""
    return {"sci": "scientific", "tax": "taxonomic"}.get(component.rsplit("-", 1)[-1], "common")


def templates_for(component: str, args: argparse.Namespace) -> list[str]:
    if args.template:
        return list(args.template)
    kind = TEMPLATES[name_kind(component)]
    return kind if args.ensemble else kind[:1]


def group(examples: list[Example]) -> dict[str, list[Example]]:
    """Examples by component, in the order components first appear; a component must have one task."""
    out: dict[str, list[Example]] = {}
    for e in examples:
        out.setdefault(e.component, []).append(e)
    for name, members in out.items():
        tasks = sorted({e.task for e in members})
        if len(tasks) > 1:
            raise BeansZeroDataError(f"component '{name}' mixes tasks {tasks}; each BEANS-Zero component has one")
    return out


def restrict_to_species(species, members: list[Example]) -> tuple[list[Example], dict]:
    """The examples of a species-classification component whose label is on ``species`` (by the whole label or
    one of its comma-separated names), and the ``species_list`` report; an OffListError when none is."""
    classes = sorted({e.output for e in members})
    aliases = [(c, *(part.strip() for part in c.split(","))) for c in classes]
    matched = match_classes(species, classes, aliases)
    kept = [e for e in members if e.output in matched]
    return kept, species_report(species, classes, matched, len(members) - len(kept))


def predict_classification(model, audio: torch.Tensor, outputs: list[str], templates: list[str]):
    labels = sorted(set(outputs))
    logits = model.logits(audio, model.embed_labels(labels, templates))
    return [labels[i] for i in logits.argmax(1).tolist()], {"n_labels": len(labels)}


def predict_detection(
    model, audio: torch.Tensor, outputs: list[str], templates: list[str], args
) -> tuple[list[str], dict]:
    classes = detection_classes(outputs)
    if not classes:
        raise BeansZeroDataError("every true output is 'None': the component names no class to detect")
    text = torch.cat([model.embed_labels(classes, templates), model.embed_labels([args.none_prompt], "{}")])
    probs = model.logits(audio, text).softmax(1)
    if args.threshold is not None:
        chosen = [[c for c in range(len(classes)) if p[c] >= args.threshold] for p in probs]
        rule = f"every class with probability >= {args.threshold} (softmax over the classes and the negative text)"
    else:
        k = min(args.top_k, probs.shape[1])
        chosen = [[c for c in row if c < len(classes)] for row in probs.topk(k, dim=1).indices.tolist()]
        rule = f"the {k} most probable of the classes and the negative text, the negative dropped"
    predictions = [", ".join(classes[c] for c in sorted(row)) or NONE for row in chosen]
    ranked = detection_map(probs[:, : len(classes)], multi_hot(outputs, classes).numpy())
    return predictions, {
        "n_labels": len(classes),
        "decision": rule,
        "none_prompt": args.none_prompt,
        "mAP_of_scores": ranked,
    }


def run_component(
    name: str, task: str, examples: list[Example], data: LocalCopy, model, cache, args
) -> tuple[dict, list[dict]]:
    """Embed, answer and score one component: (its result, its rows of predictions.jsonl)."""
    start = time.time()
    audio, errors, embedded = embed_examples(cache, model, data, examples, args.batch_size, args.workers, desc=name)
    keep = [i for i in range(len(examples)) if i not in errors]
    if not keep:
        raise BeansZeroDataError(
            f"component '{name}': no example could be used; first problem: {next(iter(errors.values()))}"
        )
    kept = [examples[i] for i in keep]
    outputs = [e.output for e in kept]
    templates = templates_for(name, args)
    if task == "classification":
        predictions, details = predict_classification(model, audio[keep], outputs, templates)
    else:
        predictions, details = predict_detection(model, audio[keep], outputs, templates, args)
    metrics = score_component(task, predictions, outputs)
    problems = [errors[i] + "; skipped" for i in sorted(errors)]
    result = {
        "component": name,
        "task": task,
        "model": str(args.model),
        "primary": PRIMARY[task],
        "metrics": metrics,
        "n": len(kept),
        "templates": templates,
        "name_kind": name_kind(name),
        **details,
        "n_skipped": len(problems),
        "problems": problems,
        "embedded_now": embedded,
        "seconds": round(time.time() - start, 2),
    }
    rows = [{"prediction": p, "label": e.output, "dataset_name": name, "id": e.id} for p, e in zip(predictions, kept)]
    return result, rows


def write_summary(
    out: Path, results: dict[str, dict], out_of_scope: dict[str, str], species_notes: list[str] | None = None
) -> str:
    header = ["component", "task", "examples", "metric", "ours", "published (BioLingual)", "all beans-zero metrics"]
    rows = []
    for name, r in results.items():
        published = PUBLISHED.get(name)
        rows.append(
            [
                name,
                r["task"],
                r["n"],
                r["primary"],
                fmt(r["metrics"][r["primary"]]),
                fmt(published[0]) if published else "—",
                "; ".join(f"{k} {v:.3f}" for k, v in r["metrics"].items()),
            ]
        )
    text = (
        "# BEANS-Zero zero-shot results\n\nScored as beans-zero's `compute_metrics` scores them (see "
        "docs/evaluation.md, BEANS-Zero).\n\n"
    )
    text += markdown_table(header, rows) + "\n" + PUBLISHED_NOTE + "\n"
    detection = [
        f"- {n}: predicted {r['decision']}; the ranked scores give BEANS' detection mAP "
        f"{r['mAP_of_scores']:.3f} (not a beans-zero figure)\n"
        for n, r in results.items()
        if r["task"] == "detection"
    ]
    if detection:
        text += "\n## Detection\n\n" + "".join(detection)
    if species_notes:
        text += "\n## Species list of a place and season (species.csv)\n\n" + "".join(f"- {n}\n" for n in species_notes)
    if out_of_scope:
        text += "\n## Out of scope for a CLAP model\n\n" + "".join(f"- {n}: {why}\n" for n, why in out_of_scope.items())
    (out / "results.md").write_text(text)
    write_json(
        out / "results.json",
        {
            "components": {n: {"task": r["task"], "n": r["n"], **r["metrics"]} for n, r in results.items()},
            "out_of_scope": out_of_scope,
        },
    )
    plot(results, out / "results.png")
    return text


def plot(results: dict[str, dict], path: Path) -> None:
    """One bar per component: its primary metric (accuracy or mAP)."""
    plt = pyplot()
    names = list(results)
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.4 * len(names)))
    ax.barh(
        names,
        [results[n]["metrics"][results[n]["primary"]] for n in names],
        color=["tab:blue" if results[n]["task"] == "classification" else "tab:orange" for n in names],
    )
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_xlabel("accuracy (classification, blue) / mAP (detection, orange)")
    ax.set_title("BEANS-Zero, zero-shot")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m eval.beans_zero", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--data",
        type=Path,
        required=True,
        help="the local copy: a save_to_disk folder, a folder of the Hub's parquet files, or one file",
    )
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--components",
        help="comma-separated components to score (default: every classification and detection component in the data)",
    )
    ap.add_argument(
        "--template",
        action="append",
        help="prompt template with {} for every component (repeat to "
        "ensemble); default by the kind of name: " + "; ".join(f"{k} '{v[0]}'" for k, v in TEMPLATES.items()),
    )
    ap.add_argument(
        "--ensemble",
        action="store_true",
        help="average the built-in templates of each kind of name instead of using the first",
    )
    decide = ap.add_mutually_exclusive_group()
    decide.add_argument(
        "--top-k", type=int, default=1, help="detection: predict the K most probable candidates (default 1)"
    )
    decide.add_argument("--threshold", type=float, help="detection: predict every class with probability >= T")
    ap.add_argument(
        "--none-prompt",
        default=DEFAULT_NONE_PROMPT,
        help=f"detection: the negative text competing with the classes (default '{DEFAULT_NONE_PROMPT}')",
    )
    ap.add_argument("--max-examples", type=int, help="score only the first N examples of each component")
    ap.add_argument("--cache", type=Path, help="embedding cache file (default OUT/embeddings.sqlite)")
    add_species_args(
        ap, "the species of a place and season: only the listed classes of the species-classification components"
    )
    add_runtime_args(ap, 16, "clips per forward pass")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    """Run from the command line; returns the exit code (0 every example scored, 2 some skipped, 1 error)."""
    return run_main(parse_args, run, argv)


def run(args: argparse.Namespace) -> int:
    if args.top_k < 1 or (args.threshold is not None and not 0 < args.threshold <= 1):
        raise InputError("--top-k must be at least 1 and --threshold in (0, 1]")
    if args.max_examples is not None and args.max_examples < 1:
        raise InputError("--max-examples must be at least 1")
    check_runtime(args)
    data = LocalCopy(args.data)
    components = group(data.examples)
    if not components:
        first = f"; first problem: {data.problems[0]}" if data.problems else ""
        raise BeansZeroDataError(f"--data '{args.data}' holds no usable example{first}")
    wanted = list(components) if not args.components else [c.strip() for c in args.components.split(",") if c.strip()]
    unknown = [c for c in wanted if c not in components]
    if unknown:
        raise InputError(f"--components {unknown} not in the data; it holds: {', '.join(components)}")
    out_of_scope = {
        c: OUT_OF_SCOPE_REASON.get(
            components[c][0].task, f"task '{components[c][0].task}' is not classification or detection"
        )
        for c in wanted
        if components[c][0].task not in IN_SCOPE
    }
    todo = [c for c in wanted if c not in out_of_scope]
    if not todo:
        raise InputError(f"no classification or detection component among {wanted}")
    species = read_species(args)  # asked of GBIF (or read) before the model is loaded
    members = {name: components[name] for name in todo}
    listed, notes = {}, []  # each filtered component's report; the lines results.md and stdout give
    if species is not None:
        for name in todo:
            if name not in SPECIES_COMPONENTS:
                continue
            try:
                members[name], listed[name] = restrict_to_species(species, members[name])
            except OffListError as e:  # one component off the list leaves the others to score
                notes.append(f"{name}: left out: {e}")
                continue
            notes.append(f"{name}: {species_line(listed[name], 'example')}")
        todo = [c for c in todo if c not in SPECIES_COMPONENTS or c in listed]
        others = [c for c in todo if c not in SPECIES_COMPONENTS]
        if others:
            notes.append(f"not filtered (not species classification): {', '.join(others)}")
        if not todo:
            raise InputError(f"no component of {wanted} is left to score with the species list: {'; '.join(notes)}")
        print("\n".join(notes))
    args.out.mkdir(parents=True, exist_ok=True)
    # --dtype is a runtime option where biolingual.load takes one: passed on, never silently ignored
    precision = {"dtype": args.dtype} if getattr(args, "dtype", None) is not None else {}
    model = biolingual.load(args.model, device=args.device, **precision)
    results, rows, problems = {}, [], list(data.problems)
    with EmbeddingCache(args.cache or args.out / "embeddings.sqlite") as cache:
        for name in todo:
            chosen = members[name][: args.max_examples]
            result, predictions = run_component(name, chosen[0].task, chosen, data, model, cache, args)
            if name in listed:
                result["species_list"] = listed[name]
            write_json(args.out / f"{name}.json", result)
            results[name], problems = result, problems + result["problems"]
            rows += predictions
            log.info(
                "%s: %s %.4f (%d examples, %d embedded now)",
                name,
                result["primary"],
                result["metrics"][result["primary"]],
                result["n"],
                result["embedded_now"],
            )
    (args.out / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    save_species(species, args.out)
    print(write_summary(args.out, results, out_of_scope, notes), end="")
    if data.problems:
        write_json(args.out / "unreadable_rows.json", {"problems": data.problems})
    return finish(problems, f'the "problems" of {args.out}/<component>.json and {args.out}/unreadable_rows.json')
