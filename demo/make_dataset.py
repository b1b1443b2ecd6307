"""The embedded demo dataset: a synthetic AnimalSpeak-like set written as webdataset shards.

12 invented species, each with its own call signature (pitch band, sweep, rhythm, timbre); every
recording is a new individual (pitch jitter, timing, noise) and its captions name the species and
describe what is heard. Train, validation and test recordings are disjoint.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import zlib
from pathlib import Path

from biolingual.synthetic import invented_species, synth_pattern
from data_pipeline.shards import ShardSink

RATE = 48_000
SPLITS = {"train": 40, "valid": 4, "test": 8}  # recordings per species
SHARDS = {"train": 4, "valid": 1, "test": 1}  # a fixed count, so configs/demo.yaml can name them


def captions(rng: random.Random, name: str, scientific: str, description: str) -> list[str]:
    article = "an" if name[0] in "AEIOU" else "a"
    return [
        f"The sound of {article} {name}",
        f"{article.capitalize()} {name} ({scientific}) making {description.split(' calls of ')[0]} calls",
        rng.choice(
            [
                f"{description.capitalize()}: {article} {name}",
                f"A recording of {article} {name} calling",
                f"{name} vocalizing, {description}",
            ]
        ),
    ]


def build(out: Path, n_species: int = 12, seconds: float = 5.0, seed: int = 0) -> dict:
    species = invented_species(n_species, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split_index, (split, per_species) in enumerate(SPLITS.items()):
        rng = random.Random(f"{seed}-{split}")
        items = [(name, i) for name in species for i in range(per_species)]
        rng.shuffle(items)
        with ShardSink(out, split, max_samples=math.ceil(len(items) / SHARDS[split])) as sink:
            for name, i in items:
                p = species[name]
                audio = synth_pattern(
                    p, seconds, RATE, seed=zlib.crc32(f"{seed}-{split_index}-{name}-{i}".encode()), noise=0.03
                )
                sink.write(
                    f"{split}_{name.replace(' ', '_')}_{i:03d}",
                    audio,
                    RATE,
                    captions(rng, name, p.scientific, p.description),
                    species=name,
                    scientific=p.scientific,
                )
            counts[split] = sink.count
    (out / "species.json").write_text(
        json.dumps(
            {n: {"scientific": p.scientific, "description": p.description} for n, p in species.items()}, indent=1
        )
    )
    return counts


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo_data")
    parser.add_argument("--species", type=int, default=12)
    args = parser.parse_args(argv)
    counts = build(Path(args.out), args.species)
    print(f"wrote demo dataset to {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
