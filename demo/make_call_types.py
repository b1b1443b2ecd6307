"""A small synthetic call-type dataset for probing: four call types of one invented species (told apart by
pitch, sweep and rhythm), clips of 0.5-2.5 s at 16 and 22.05 kHz, written as WAV files with a
``path,label`` CSV (no split column: the probe splits 70/20/10).

    python -m demo.make_call_types OUT_DIR [--per-type 15]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import soundfile as sf

from biolingual.synthetic import CallPattern, synth_pattern

CALL_TYPES = {
    "tsik": CallPattern("", 3000, 3400, 0.08, 0.15),
    "phee": CallPattern("", 1200, 1250, 0.9, 0.3, 2),
    "trill": CallPattern("", 2000, 2000, 0.5, 0.2, 1, 30),
    "twitter": CallPattern("", 5000, 3000, 0.2, 0.1),
}


def write_call_types(
    folder: str | Path, per_type: int = 15, seed: int = 0, quirks: bool = False, noise: float = 0.3
) -> Path:
    """Write the clips and ``calls.csv`` into ``folder``; returns the CSV path. With ``quirks`` one clip is
    shorter than 5000 samples and one is silent, as field data can be."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows, rng = [], np.random.default_rng(seed)
    for label, pattern in CALL_TYPES.items():
        for k in range(per_type):
            rate = 16000 if k % 2 else 22050
            seconds = 0.2 if quirks and (label, k) == ("tsik", 0) else float(rng.uniform(0.5, 2.5))
            audio = synth_pattern(pattern, seconds, rate, seed=100 * k + len(label) + seed, noise=noise)
            if quirks and (label, k) == ("phee", 3):
                audio = np.zeros_like(audio)
            sf.write(folder / f"{label}_{k}.wav", audio, rate)
            rows.append([f"{label}_{k}.wav", label])
    path = folder / "calls.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([["path", "label"], *rows])
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--per-type", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print("wrote", write_call_types(args.out, args.per_type, args.seed))


if __name__ == "__main__":
    main()
