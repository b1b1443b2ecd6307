"""InfoNCE against the sigmoid loss, and distillation, on the demo's synthetic species (issue 29).

1. ``train.loss`` infonce and sigmoid at batch 8, 16 and 32: the tiny preset on the demo shards
   (configs/demo.yaml), the same steps and seed, then held-out zero-shot top-1 and text->audio R@1 on the
   demo's test clips (``demo/run_demo.py``'s evaluation).
2. Distillation: the teacher is part 1's infonce run at the largest batch (32: the same steps, four times the
   clips of the student's), the student (tiny, batch 8) trained alone (part 1's infonce batch-8 run) and
   distilled from the teacher (``distill.teacher``, live, the ``distill.*`` defaults), the same steps:
   held-out zero-shot top-1 of all three. The teacher is trained first, then the distilled student, then the
   rest of part 1.

3. ``--strong-teacher TEACHER``: the same student alone and distilled, with the defaults and each of VARIANTS'
   weights (``--student-steps``: for that many steps, the student alone too), from a saved teacher trained
   further (e.g. the demo recipe: ``train.py --config configs/demo.yaml --data.valid ''``, 400 steps at batch
   24), beside that teacher's own held-out top-1. Part 2's teacher, 100 steps at batch 32, tells its
   12 species' names apart by hair's breadths (their label embeddings pair off at cosines up to 0.9997), which a
   student cannot copy; this part shows what the same code does with a teacher whose names are apart.

Synthetic data (12 invented species, demo/make_dataset.py), CPU. Results are written after every run, so a
run cut short keeps what it measured; ``--keep-measured`` keeps the part-1 rows of results/losses.json measured
at the same steps and trains only the others (and the teacher, whose model the distillation needs).

    python benchmarks/bench_losses.py [--steps 100] [--data demo_data] [--keep-measured]
    python benchmarks/bench_losses.py --strong-teacher RUN/best [--data demo_data] [--student-steps 300] [--only ...]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

import _common as c

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for demo/

from biolingual.training.config import TrainConfig
from biolingual.training.loop import main as train
from demo.run_demo import evaluate

ROOT = Path(__file__).resolve().parents[1]
NAME = "losses"
# distill.* weights tried against a saved teacher (--variants): which term helps a student of the teacher's size
VARIANTS = {
    "feature + contrastive (affinity 0)": ["--distill.affinity_weight", "0"],
    "feature alone": ["--distill.affinity_weight", "0", "--distill.contrastive_weight", "0"],
    # at step 0 the feature term's gradient is 1/27 (batch-32 teacher) to 1/53 (stronger teacher) of the contrastive
    # and affinity terms' together, which point the same way (cosine 0.999): weight 50 gives it an equal say
    "feature x50 + contrastive + affinity": ["--distill.feature_weight", "50"],
    # TinyCLAP's recipe: the student keeps the teacher's text tower (frozen) and copies its audio space
    "teacher's text tower, defaults": ["--distill.teacher_text", "true"],
    "teacher's text tower, feature + affinity": ["--distill.teacher_text", "true", "--distill.contrastive_weight", "0"],
    "teacher's text tower, feature alone": [
        "--distill.teacher_text",
        "true",
        "--distill.affinity_weight",
        "0",
        "--distill.contrastive_weight",
        "0",
    ],
}


def run(data: Path, out: Path, steps: int, batch: int, *extra: str) -> dict:
    t = time.perf_counter()
    train(
        [
            "--config",
            str(ROOT / "configs" / "demo.yaml"),
            "--out",
            str(out),
            "--data.train",
            f"{data}/train-{{000000..000003}}.tar",
            "--data.valid",
            "",
            "--train.steps",
            str(steps),
            "--train.batch_size",
            str(batch),
            "--checkpoint.every",
            "0",
            "--log.tensorboard",
            "false",
            *extra,
        ]
    )
    seconds = time.perf_counter() - t
    rows = {name: value for name, value, _ in evaluate(out / "best", f"{data}/test-000000.tar")}
    top1 = next(v for k, v in rows.items() if k.startswith("zero-shot top-1"))
    return {
        "zero_shot_top1": top1,
        "t2a_R@1": rows["retrieval text->audio R@1"],
        "a2t_R@1": rows["retrieval audio->text R@1"],
        "train_s": seconds,
    }


def distillation_rows(result: dict) -> list[dict]:
    """Teacher (infonce at the largest batch), student alone (infonce at the smallest) and distilled, as measured."""
    rows = {(r["loss"], r["batch"]): r for r in result["losses"]}
    teacher = rows.get(("infonce", result["teacher_batch"]))
    alone = rows.get(("infonce", result["student_batch"]))
    out = []
    if teacher:
        out.append({"model": f"teacher (infonce, batch {teacher['batch']})", **teacher})
    if alone:
        out.append({"model": f"student alone (infonce, batch {alone['batch']})", **alone})
    if result["distilled"]:
        out.append({"model": f"student distilled (batch {result['distilled']['batch']})", **result["distilled"]})
    return out


def strong_entries(result: dict) -> list[dict]:
    """Part 3's runs, one per student length (results of before --student-steps held one, as a dict)."""
    entries = result.get("strong_teacher") or []
    if isinstance(entries, dict):
        entries = [{"student_steps": result["steps"], **entries}]
    return entries


def strong_alone(result: dict, entry: dict) -> dict | None:
    """The student alone at the entry's length: trained in part 3, or part 1's run of the same steps."""
    if entry.get("alone"):
        return entry["alone"]
    if entry["student_steps"] != result["steps"] or entry.get("seed") is not None:
        return None
    return next((r for r in result["losses"] if (r["loss"], r["batch"]) == ("infonce", result["student_batch"])), None)


def strong_rows(result: dict, entry: dict) -> list[list]:
    """Part 3's table rows: the stronger teacher, the student alone and each distilled student."""
    teacher = entry["zero_shot_top1"]
    steps = entry["student_steps"]
    rows = [(f"teacher ({entry['model']})", entry["steps"], entry["batch"], teacher)]
    alone = strong_alone(result, entry)
    if alone:
        rows.append(
            (f"student alone (infonce, batch {alone['batch']})", steps, alone["batch"], alone["zero_shot_top1"])
        )
    rows += [(f"student distilled, {r['variant']}", steps, r["batch"], r["zero_shot_top1"]) for r in entry["variants"]]
    return [[name, n, batch, f"{top1:.3f}", f"{100 * top1 / teacher:.0f}%"] for name, n, batch, top1 in rows]


def notes(result: dict) -> list[str]:
    """What the tables say: InfoNCE against sigmoid at each batch, and issue 29's distillation target."""
    rows = {(r["loss"], r["batch"]): r for r in result["losses"]}
    lines = []
    batches = sorted({b for _, b in rows if ("infonce", b) in rows and ("sigmoid", b) in rows})
    if batches:
        wins = {
            key: sum(rows[("infonce", b)][key] > rows[("sigmoid", b)][key] for b in batches)
            - sum(rows[("infonce", b)][key] < rows[("sigmoid", b)][key] for b in batches)
            for key in ("zero_shot_top1", "t2a_R@1")
        }
        lines.append(
            f"InfoNCE against sigmoid at batch {', '.join(map(str, batches))} ({result['steps']} steps, the same "
            "seed): "
            + "; ".join(
                f"batch {b}: top-1 {rows[('infonce', b)]['zero_shot_top1']:.3f} against "
                f"{rows[('sigmoid', b)]['zero_shot_top1']:.3f}, text->audio R@1 {rows[('infonce', b)]['t2a_R@1']:.3f} "
                f"against {rows[('sigmoid', b)]['t2a_R@1']:.3f}"
                for b in batches
            )
            + f" (InfoNCE's wins minus losses: top-1 {wins['zero_shot_top1']:+d}, R@1 {wins['t2a_R@1']:+d}). "
            f"`train.loss` default: {TrainConfig().loss}."
        )
    distilled = distillation_rows(result)
    if result["distilled"] and distilled[0]["model"].startswith("teacher"):
        share = result["distilled"]["zero_shot_top1"] / distilled[0]["zero_shot_top1"]
        best = max(result.get("variants", []), key=lambda r: r["zero_shot_top1"], default=None)
        lines.append(
            f"Target (issue 29), distilled student ≥ 95% of the teacher's held-out zero-shot top-1, against part 2's "
            f"teacher (infonce, batch {result['teacher_batch']}, {result['steps']} steps): "
            f"{100 * share:.0f}% with the `distill.*` defaults ({'met' if share >= 0.95 else '**NOT met**'})"
            + (
                f"; {100 * best['zero_shot_top1'] / distilled[0]['zero_shot_top1']:.0f}% with {best['variant']} "
                f"({'met' if best['zero_shot_top1'] >= 0.95 * distilled[0]['zero_shot_top1'] else '**NOT met**'})"
                if best
                else ""
            )
            + "."
        )
    for strong in strong_entries(result):
        if not strong["variants"]:
            continue
        best = max(strong["variants"], key=lambda r: r["zero_shot_top1"])
        share = best["zero_shot_top1"] / strong["zero_shot_top1"]
        defaults = next((r for r in strong["variants"] if r["variant"] == "defaults"), None)
        alone = strong_alone(result, strong)
        lines.append(
            f"Target (issue 29) against a stronger teacher ({strong['model']}, top-1 {strong['zero_shot_top1']:.3f}), "
            "student "
            f"{strong['student_steps']} steps of {result['student_batch']} clips"
            + (f", seed {strong['seed']}" if strong.get("seed") is not None else "")
            + ": "
            + (f"alone {alone['zero_shot_top1']:.3f}; " if alone else "")
            + (
                f"{100 * defaults['zero_shot_top1'] / strong['zero_shot_top1']:.0f}% with the defaults; "
                if defaults
                else ""
            )
            + f"best {100 * share:.0f}% with {best['variant']} ({'met' if share >= 0.95 else '**NOT met**'})."
        )
    kept = [r for r in result["losses"] if r.get("kept")]
    if kept:
        lines.append(
            "Rows kept from an earlier run of the same steps (--keep-measured): "
            + ", ".join(f"{r['loss']} batch {r['batch']}" for r in kept)
            + "."
        )
    lines.append(f"Load average after each run: {result['load_average']} (2 cores shared with other work).")
    return lines


def to_markdown(result: dict) -> str:
    md = c.markdown_table(
        ["loss", "batch", "zero-shot top-1 (12 species)", "text->audio R@1", "audio->text R@1", "train s"],
        [
            [
                r["loss"],
                r["batch"],
                f"{r['zero_shot_top1']:.3f}",
                f"{r['t2a_R@1']:.3f}",
                f"{r['a2t_R@1']:.3f}",
                f"{r['train_s']:.0f}",
            ]
            for r in result["losses"]
        ],
    )
    distilled = distillation_rows(result)
    if result["distilled"] and distilled[0]["model"].startswith("teacher"):
        teacher = distilled[0]["zero_shot_top1"]
        md += "\n\n" + c.markdown_table(
            ["model", "steps", "batch", "zero-shot top-1", "of the teacher's"],
            [
                [
                    r["model"],
                    result["steps"],
                    r["batch"],
                    f"{r['zero_shot_top1']:.3f}",
                    f"{100 * r['zero_shot_top1'] / teacher:.0f}%",
                ]
                for r in distilled
            ]
            + [
                [
                    f"student distilled, {r['variant']}",
                    result["steps"],
                    r["batch"],
                    f"{r['zero_shot_top1']:.3f}",
                    f"{100 * r['zero_shot_top1'] / teacher:.0f}%",
                ]
                for r in result.get("variants", [])
            ],
        )
    for entry in strong_entries(result):
        seed = f" (student seed {entry['seed']})" if entry.get("seed") is not None else ""
        md += "\n\n" + c.markdown_table(
            [f"distilled from a stronger teacher{seed}", "steps", "batch", "zero-shot top-1", "of the teacher's"],
            strong_rows(result, entry),
        )
    return md + "\n\n" + "\n\n".join(notes(result))


def distil_variants(args) -> None:
    """Students distilled with each of VARIANTS' ``distill.*`` weights from a saved teacher, at the saved results'
    steps and student batch, added to results/losses.json (a teacher other than the one measured there is the
    caller's mistake: its fingerprint is recorded beside the rows)."""
    import biolingual

    result = json.loads((c.RESULTS_DIR / f"{NAME}.json").read_text())
    fingerprint = biolingual.load(args.variants, device="cpu").fingerprint()
    result["variants"] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, extra) in enumerate(VARIANTS.items()):
            r = run(
                args.data or ROOT / "demo_data",
                Path(tmp) / f"variant-{i}",
                result["steps"],
                result["student_batch"],
                "--distill.teacher",
                str(args.variants),
                *extra,
            )
            row = {"variant": name, "args": extra, "batch": result["student_batch"], "teacher": fingerprint, **r}
            result["variants"].append(row)
            result["load_average"].append(c.load_average())
            print(f"distilled, {name}: zero-shot top-1 {r['zero_shot_top1']:.3f}", flush=True)
            c.write_outputs(NAME, result, to_markdown(result))
    print(to_markdown(result))


def describe_run(model: Path) -> dict:
    """Loss, batch and steps of the run whose export ``model`` is (RUN/best, beside RUN/config.yaml)."""
    import yaml

    config = model.parent / "config.yaml"
    if model.name != "best" or not config.is_file():
        raise SystemExit(
            f"error: {model} is not a training run's best/ (no {config}): the table says how it was trained"
        )
    train_section = yaml.safe_load(config.read_text())["train"]
    return {"loss": train_section["loss"], "batch": train_section["batch_size"], "steps": train_section["steps"]}


def distil_from_strong(args) -> None:
    """Part 3: the teacher's own held-out scores, then, for ``--student-steps`` (default: results/losses.json's
    steps) at its student batch, the student alone (part 1's run where the steps are the same) and students
    distilled from the teacher with the defaults and each of VARIANTS' weights (``--only`` some of them), under
    results/losses.json's strong_teacher: one entry per student length."""
    import biolingual

    data = args.data or ROOT / "demo_data"
    result = json.loads((c.RESULTS_DIR / f"{NAME}.json").read_text())
    steps = args.student_steps or result["steps"]
    seed = args.seed
    run_of = describe_run(args.strong_teacher)
    rows = {name: value for name, value, _ in evaluate(args.strong_teacher, f"{data}/test-000000.tar")}
    fingerprint = biolingual.load(args.strong_teacher, device="cpu").fingerprint()
    entries = strong_entries(result)
    previous = next((e for e in entries if (e["student_steps"], e.get("seed")) == (steps, seed)), {})
    # students already trained for this very teacher with the same weights are kept, not trained again
    same = previous.get("fingerprint") == fingerprint
    kept = {r["variant"]: r for r in previous.get("variants", [])} if same else {}
    entry = {
        "model": f"{run_of['loss']}, batch {run_of['batch']}, {run_of['steps']} steps",
        **run_of,
        "student_steps": steps,
        "seed": seed,
        "fingerprint": fingerprint,
        "zero_shot_top1": next(v for k, v in rows.items() if k.startswith("zero-shot top-1")),
        "t2a_R@1": rows["retrieval text->audio R@1"],
        "alone": previous.get("alone") if same else None,
        "variants": [],
    }
    result["strong_teacher"] = sorted(
        [e for e in entries if (e["student_steps"], e.get("seed")) != (steps, seed)] + [entry],
        key=lambda e: (e["student_steps"], e.get("seed") is not None, e.get("seed") or 0),
    )
    seeded = ["--train.seed", str(seed)] if seed is not None else []
    todo = {"defaults": [], **VARIANTS}
    if args.only:
        unknown = sorted(set(args.only) - set(todo))
        if unknown:
            raise SystemExit(f"error: --only {unknown}: the variants are {sorted(todo)}")
        todo = {name: extra for name, extra in todo.items() if name in args.only}
    with tempfile.TemporaryDirectory() as tmp:
        if strong_alone(result, entry) is None:
            r = run(data, Path(tmp) / "alone", steps, result["student_batch"], *seeded)
            entry["alone"] = {"loss": "infonce", "batch": result["student_batch"], **r}
            result["load_average"].append(c.load_average())
            print(f"student alone, {steps} steps: zero-shot top-1 {r['zero_shot_top1']:.3f}", flush=True)
            c.write_outputs(NAME, result, to_markdown(result))
        for name, extra in kept.items():
            if name not in todo:  # measured before and not asked for now: kept as it was
                entry["variants"].append(extra)
        for i, (name, extra) in enumerate(todo.items()):
            if name in kept and kept[name]["args"] == extra:
                entry["variants"].append(kept[name])
                continue
            r = run(
                data,
                Path(tmp) / f"strong-{i}",
                steps,
                result["student_batch"],
                "--distill.teacher",
                str(args.strong_teacher),
                *extra,
                *seeded,
            )
            entry["variants"].append({"variant": name, "args": extra, "batch": result["student_batch"], **r})
            result["load_average"].append(c.load_average())
            print(f"distilled from the stronger teacher, {name}: zero-shot top-1 {r['zero_shot_top1']:.3f}", flush=True)
            c.write_outputs(NAME, result, to_markdown(result))
    order = list({"defaults": [], **VARIANTS})
    entry["variants"].sort(key=lambda r: order.index(r["variant"]) if r["variant"] in order else len(order))
    c.write_outputs(NAME, result, to_markdown(result))
    print(to_markdown(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument(
        "--data", type=Path, default=None, help="the demo dataset (default: built in a temporary folder)"
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--skip-distillation", action="store_true")
    parser.add_argument(
        "--keep-measured", action="store_true", help="keep results/losses.json's rows measured at the same steps"
    )
    parser.add_argument(
        "--variants",
        type=Path,
        metavar="TEACHER",
        help="only distil students with VARIANTS' weights from this saved teacher (the InfoNCE batch-32 run's "
        "export), added to results/losses.json",
    )
    parser.add_argument(
        "--strong-teacher",
        type=Path,
        metavar="RUN/best",
        help="only part 3: distil students with the defaults and VARIANTS' weights from this further-trained teacher "
        "(a run's best/ export), added to results/losses.json beside the teacher's own top-1",
    )
    parser.add_argument(
        "--student-steps",
        type=int,
        default=None,
        help="with --strong-teacher: the students' steps (default: results/losses.json's); the student alone is "
        "trained at them too where part 1 has no run of that length",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="with --strong-teacher: the students' train.seed (default: configs/demo.yaml's); kept as its own entry",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="VARIANT",
        help="with --strong-teacher: distil only these ('defaults' or VARIANTS' names); others measured before stay",
    )
    args = parser.parse_args()
    c.quiet_transformers()
    if args.strong_teacher:
        distil_from_strong(args)
        return
    if args.variants:
        distil_variants(args)
        return
    kept = []
    saved = c.RESULTS_DIR / f"{NAME}.json"
    if args.keep_measured and saved.is_file():
        previous = json.loads(saved.read_text())
        kept = previous["losses"] if previous["steps"] == args.steps else []
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": c.machine_info(),
        "steps": args.steps,
        "losses": [],
        "distilled": None,
        "student_batch": min(args.batches),
        "teacher_batch": max(args.batches),
        "load_average": [c.load_average()],
    }

    def write() -> str:
        md = to_markdown(result)
        c.write_outputs(NAME, result, md)
        return md

    def measure(loss: str, batch: int) -> dict:
        r = run(data, Path(tmp) / f"{loss}-{batch}", args.steps, batch, "--train.loss", loss)
        row = {"loss": loss, "batch": batch, **r}
        result["losses"] = sorted([*result["losses"], row], key=lambda x: (x["batch"], x["loss"]))
        print(
            f"{loss} batch {batch}: zero-shot top-1 {r['zero_shot_top1']:.3f}, t->a R@1 {r['t2a_R@1']:.3f}", flush=True
        )
        result["load_average"].append(c.load_average())
        write()
        return row

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            from demo.make_dataset import build

            data = Path(tmp) / "demo_data"
            build(data)
        student_batch, teacher_batch = result["student_batch"], result["teacher_batch"]
        todo = [(loss, batch) for batch in args.batches for loss in ("infonce", "sigmoid")]
        if not args.skip_distillation:  # the teacher's model is needed: it is trained whatever was kept
            todo.remove(("infonce", teacher_batch))
            todo.insert(0, ("infonce", teacher_batch))
        for row in kept:
            if (row["loss"], row["batch"]) in todo[1 if not args.skip_distillation else 0 :]:
                todo.remove((row["loss"], row["batch"]))
                result["losses"].append({**row, "kept": True})
        for i, (loss, batch) in enumerate(todo):
            measure(loss, batch)
            if i == 0 and not args.skip_distillation:
                teacher = Path(tmp) / f"infonce-{teacher_batch}"
                r = run(
                    data, Path(tmp) / "distilled", args.steps, student_batch, "--distill.teacher", str(teacher / "best")
                )
                result["distilled"] = {"steps": args.steps, "batch": student_batch, **r}
                print(f"distilled: zero-shot top-1 {r['zero_shot_top1']:.3f}", flush=True)
                write()
    print(write())


if __name__ == "__main__":
    main()
