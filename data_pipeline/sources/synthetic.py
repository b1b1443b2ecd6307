"""Invented species calling (biolingual.synthetic): a key-free, offline source for the demo and tests.

Files are written at 22.05 kHz stereo FLAC so the resampling and mono paths run as for real audio.
``include_bad`` adds a silent, a too-short, a corrupt and an unlicensed recording.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import soundfile as sf

from biolingual.synthetic import invented_species, synth_pattern

from ..record import Record

RATE = 22_050


class SyntheticSource:
    def __init__(
        self,
        species: int = 12,
        clips_per_species: int = 40,
        seconds: float = 4.0,
        seed: int = 0,
        license: str = "cc-by",
        include_bad: bool = False,
    ):
        self.species = invented_species(species, seed=seed)
        self.clips_per_species, self.seconds, self.seed = clips_per_species, float(seconds), seed
        self.license, self.include_bad = license, include_bad

    def records(self):
        for i in range(self.clips_per_species):
            for j, (name, p) in enumerate(self.species.items()):
                sid = f"{self.seed}-{j:03d}-{i:04d}"
                yield Record(
                    "synthetic",
                    sid,
                    name,
                    p.scientific,
                    audio_url=f"synthetic://{sid}",
                    page_url="",
                    license=self.license,
                    attribution="biolingual synthetic calls",
                    recordist="biolingual",
                    description=p.description,
                    extra={"species_index": j, "take": i},
                )
        if self.include_bad:
            name, p = next(iter(self.species.items()))
            for kind in ("silent", "short", "corrupt"):
                yield Record(
                    "synthetic",
                    f"{self.seed}-{kind}",
                    name,
                    p.scientific,
                    audio_url=f"synthetic://{kind}",
                    license=self.license,
                    recordist="biolingual",
                    extra={"kind": kind},
                )
            yield Record(
                "synthetic",
                f"{self.seed}-unlicensed",
                name,
                p.scientific,
                audio_url="synthetic://unlicensed",
                license=None,
                extra={"kind": "unlicensed"},
            )

    def fetch(self, record: Record, dest: Path) -> Path:
        kind = record.extra.get("kind")
        path = dest.with_suffix(".flac")
        if kind == "corrupt":
            path.write_bytes(b"fLaC\x00\x00not really audio" * 10)
            return path
        if kind == "silent":
            audio = np.zeros(int(self.seconds * RATE), np.float32)
        elif kind == "short":
            audio = np.full(int(0.2 * RATE), 0.1, np.float32)
        else:
            p = self.species[record.species_common]
            seed = zlib.crc32(f"{self.seed}-{record.source_id}".encode())
            audio = synth_pattern(p, self.seconds, RATE, seed=seed, noise=0.03)
        sf.write(path, np.stack([audio, 0.8 * audio], axis=1), RATE, format="FLAC")
        return path
