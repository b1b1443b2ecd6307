"""`make demo`: the whole inference workflow on the clips in demo/clips, fully offline.

Until training lands, the model is a freshly initialised `tiny` model (random weights, tokenizer
trained here from the label prompts), so its predictions are at chance level; the demo shows the
workflow (create -> save -> load -> zero-shot -> embed -> transformers compatibility), not accuracy.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from transformers.utils import logging as hf_logging

import biolingual
from biolingual.cli import main as cli

HERE = Path(__file__).parent


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo_out")
    args = parser.parse_args(argv)
    hf_logging.disable_progress_bar()  # transformers' per-file load bars would drown the demo's output
    out = Path(args.out)
    clips = sorted(str(p) for p in (HERE / "clips").iterdir())
    labels = [line for line in (HERE / "labels.txt").read_text().splitlines() if line]
    print("=" * 78)
    print("BioLingual demo. NOTE: the model below is freshly initialised (untrained, random weights),")
    print("so its predictions are at chance level. This demo shows the workflow, not accuracy.")
    print("=" * 78)

    t0 = time.time()
    prompts = [f"{t.format(label)}" for label in labels for t in ("The sound of a {}", "A {} calling")]
    model = biolingual.create("tiny", tokenizer_texts=prompts, seed=0)
    model.save_pretrained(out / "model")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"\n[1] created a tiny model ({n_params:,} parameters) and saved it to {out / 'model'}")

    print(f"\n[2] zero-shot labels for {len(clips)} demo clips (true species = file name):")
    cli(["predict", *clips, "--model", str(out / "model"), "--labels-file", str(HERE / "labels.txt"),
         "--top-k", "3", "--csv", str(out / "predictions.csv")])

    print("\n[3] clip embeddings:")
    cli(["embed", *clips, "--model", str(out / "model"), "--out", str(out / "embeddings.npy")])
    emb = np.load(out / "embeddings.npy")
    print(f"    shape {emb.shape}, row norms {np.round(np.linalg.norm(emb, axis=1), 4).tolist()}")

    print("\n[4] the saved folder is a plain transformers CLAP checkpoint:")
    from transformers import ClapModel, pipeline

    clap = ClapModel.from_pretrained(out / "model")
    classify = pipeline("zero-shot-audio-classification", model=str(out / "model"))
    audio = biolingual.audio.load_audio(clips[0], model.sampling_rate)
    ours = model.predict(audio, labels, top_k=1, sampling_rate=model.sampling_rate)[0][0]
    theirs = classify(audio, candidate_labels=labels, hypothesis_template="The sound of a {}")[0]["label"]
    print(f"    ClapModel.from_pretrained: {type(clap).__name__}, {sum(p.numel() for p in clap.parameters()):,} parameters")
    print(f"    top label for {Path(clips[0]).name}: biolingual '{ours}', transformers pipeline '{theirs}'")
    print(f"\ndone in {time.time() - t0:.1f} s; outputs in {out}/")


if __name__ == "__main__":
    main()
