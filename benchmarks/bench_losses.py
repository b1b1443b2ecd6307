"""InfoNCE against the sigmoid loss, and distillation, on the demo's synthetic species (issue 29).

1. ``train.loss`` infonce and sigmoid at batch 8, 16 and 32: the tiny preset on the demo shards
   (configs/demo.yaml), the same steps and seed, then held-out zero-shot top-1 and text->audio R@1 on the
   demo's test clips (``demo/run_demo.py``'s evaluation).
2. Distillation: a teacher trained twice as many steps at batch 32, the student (tiny, batch 8) trained
   alone (the infonce batch-8 run of part 1) and distilled from the teacher (``distill.teacher``, live),
   the same steps: held-out zero-shot top-1 of all three.

Synthetic data (12 invented species, demo/make_dataset.py), CPU. Results are written after every run, so a
run cut short keeps what it measured.

    python benchmarks/bench_losses.py [--steps 100] [--data demo_data]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

import _common as c

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for demo/

from biolingual.training.loop import main as train
from demo.run_demo import evaluate

ROOT = Path(__file__).resolve().parents[1]
NAME = "losses"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument(
        "--data", type=Path, default=None, help="the demo dataset (default: built in a temporary folder)"
    )
    parser.add_argument("--skip-distillation", action="store_true")
    args = parser.parse_args()
    c.quiet_transformers()
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": c.machine_info(),
        "steps": args.steps,
        "losses": [],
        "distillation": [],
    }

    def write() -> str:
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
        if result["distillation"]:
            md += "\n\n" + c.markdown_table(
                ["model", "steps", "batch", "zero-shot top-1", "of the teacher's"],
                [
                    [
                        r["model"],
                        r["steps"],
                        r["batch"],
                        f"{r['zero_shot_top1']:.3f}",
                        f"{100 * r['zero_shot_top1'] / result['distillation'][0]['zero_shot_top1']:.0f}%",
                    ]
                    for r in result["distillation"]
                ],
            )
        c.write_outputs(NAME, result, md)
        return md

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            from demo.make_dataset import build

            data = Path(tmp) / "demo_data"
            build(data)
        for batch in (8, 16, 32):
            for loss in ("infonce", "sigmoid"):
                r = run(data, Path(tmp) / f"{loss}-{batch}", args.steps, batch, "--train.loss", loss)
                result["losses"].append({"loss": loss, "batch": batch, **r})
                print(
                    f"{loss} batch {batch}: zero-shot top-1 {r['zero_shot_top1']:.3f}, t->a R@1 {r['t2a_R@1']:.3f}",
                    flush=True,
                )
                write()
        if not args.skip_distillation:
            teacher = Path(tmp) / "teacher"
            r = run(data, teacher, 2 * args.steps, 32)
            result["distillation"].append(
                {"model": "teacher (tiny, 2x steps, batch 32)", "steps": 2 * args.steps, "batch": 32, **r}
            )
            alone = next(x for x in result["losses"] if x["loss"] == "infonce" and x["batch"] == 8)
            result["distillation"].append(
                {"model": "student alone (infonce)", "steps": args.steps, "batch": 8, **alone}
            )
            write()
            r = run(data, Path(tmp) / "distilled", args.steps, 8, "--distill.teacher", str(teacher / "best"))
            result["distillation"].append({"model": "student distilled", "steps": args.steps, "batch": 8, **r})
            print(f"distilled: zero-shot top-1 {r['zero_shot_top1']:.3f}", flush=True)
    print(write())


if __name__ == "__main__":
    main()
