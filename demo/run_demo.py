"""`make demo`: build the synthetic demo dataset, train the tiny preset on CPU, evaluate on held-out clips.

1. demo_data/: 12 invented species as webdataset shards (made once; see demo/make_dataset.py)
2. train.py --config configs/demo.yaml: symmetric InfoNCE, checkpoints, validation, export to OUT/run/best
3. on the held-out test clips: zero-shot species classification and text<->audio retrieval, each
   figure beside its chance level
4. the exported model is a plain transformers CLAP checkpoint, used through `biolingual predict`
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

import biolingual
from biolingual.embedding import embed_shards
from biolingual.metrics import retrieval_metrics, top_k_accuracy, unweighted_average_recall
from biolingual.training.loop import main as train

HERE = Path(__file__).parent
ROOT = HERE.parent
TEMPLATE = "The sound of a {}"


def chance_retrieval(captions: list[str], dim: int, trials: int = 20) -> dict:
    """Retrieval metrics of random embeddings, averaged: the chance level of each figure."""
    g = torch.Generator().manual_seed(0)
    runs = []
    for _ in range(trials):
        a = torch.nn.functional.normalize(torch.randn(len(captions), dim, generator=g), dim=-1)
        t = torch.nn.functional.normalize(torch.randn(len(captions), dim, generator=g), dim=-1)
        runs.append(retrieval_metrics(a, t, captions=captions))
    return {k: sum(r[k] for r in runs) / trials for k in runs[0]}


def evaluate(model_dir: Path, test_pattern: str) -> list[tuple[str, float, float]]:
    model = biolingual.load(model_dir, device="cpu")
    audio, text, captions, metas, _ = embed_shards(model, test_pattern, batch_size=48, workers=2)
    species = sorted({m["species"] for m in metas})
    truth = torch.tensor([species.index(m["species"]) for m in metas])
    probs = model.similarity_to_probs(audio, model.embed_labels(species, TEMPLATE))
    n = len(species)
    rows = [
        (f"zero-shot top-1 accuracy ({n} species)", top_k_accuracy(truth, probs, 1), 1 / n),
        ("zero-shot top-3 accuracy", top_k_accuracy(truth, probs, 3), 3 / n),
        ("zero-shot macro recall (UAR)", unweighted_average_recall(truth, probs.argmax(-1)), 1 / n),
    ]
    got, chance = retrieval_metrics(audio, text, captions=captions), chance_retrieval(captions, audio.shape[1])
    for key in (
        "text_to_audio/R@1",
        "text_to_audio/R@10",
        "text_to_audio/mAP@10",
        "audio_to_text/R@1",
        "audio_to_text/mAP@10",
    ):
        rows.append((f"retrieval {key.replace('_to_', '->').replace('/', ' ')}", got[key], chance[key]))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo_out")
    parser.add_argument("--data", default="demo_data")
    parser.add_argument("--steps", type=int, default=None, help="override the training steps of configs/demo.yaml")
    args = parser.parse_args(argv)
    hf_logging.disable_progress_bar()
    out, data = Path(args.out), Path(args.data)
    t0 = time.time()

    print("[1] demo dataset")
    if not (data / "test-000000.tar").is_file():
        from demo.make_dataset import build

        counts = build(data)
        print(f"    wrote {data}/: " + ", ".join(f"{k} {v} clips" for k, v in counts.items()))
    else:
        print(f"    using {data}/ (delete it to regenerate)")
    species = json.loads((data / "species.json").read_text())
    print(
        f"    {len(species)} invented species, e.g. "
        + "; ".join(f"{k}: {v['description']}" for k, v in list(species.items())[:2])
    )

    print("\n[2] training the tiny preset (configs/demo.yaml)")
    overrides = [
        "--out",
        str(out / "run"),
        "--data.train",
        f"{data}/train-{{000000..000003}}.tar",
        "--data.valid",
        f"{data}/valid-000000.tar",
    ]
    if args.steps:
        overrides += ["--train.steps", str(args.steps)]
    result = train(["--config", str(ROOT / "configs" / "demo.yaml"), *overrides])
    print(f"    trained {result['step']} steps; best checkpoint exported to {out / 'run' / 'best'}")

    print("\n[3] held-out test clips (never seen in training)")
    rows = evaluate(out / "run" / "best", f"{data}/test-000000.tar")
    width = max(len(r[0]) for r in rows)
    print(f"    {'metric':<{width}}  {'model':>7}  {'chance':>7}  {'x chance':>8}")
    for name, value, chance in rows:
        print(f"    {name:<{width}}  {value:7.3f}  {chance:7.3f}  {value / chance:8.1f}")
    results = {name: {"model": v, "chance": c} for name, v, c in rows}

    print("\n[4] the exported folder is a transformers CLAP checkpoint; the command line uses it:")
    import soundfile as sf

    from biolingual.cli import main as cli
    from biolingual.synthetic import invented_species, synth_pattern
    from demo.make_dataset import RATE

    labels, patterns, clips = list(species), invented_species(len(species)), []
    for name in labels[:3]:  # new individuals (a seed no split uses), recorded as the dataset was
        clips.append(out / f"new_{name.lower().replace(' ', '_')}.flac")
        sf.write(clips[-1], synth_pattern(patterns[name], 5.0, RATE, seed=999, noise=0.03), RATE)
    print(f"    new recordings of {', '.join(labels[:3])} (file names give the truth):")
    cli(["predict", *map(str, clips), "--model", str(out / "run" / "best"), "--labels", *labels, "--top-k", "2"])
    seconds = time.time() - t0
    (out / "results.json").write_text(
        json.dumps({**results, "_seconds": seconds}, indent=1)
    )  # read by benchmarks/run_all.py
    print(f"\ndone in {seconds:.0f} s; outputs in {out}/ (tensorboard --logdir {out / 'run'})")


if __name__ == "__main__":
    main()
