"""Writes small real webdataset shards of synthetic calls for the data and training tests."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from biolingual.synthetic import invented_species, synth_pattern
from data_pipeline.shards import ShardSink

RATE = 48_000


def write_shards(
    out: Path,
    prefix: str = "train",
    n_species: int = 4,
    per_species: int = 6,
    per_shard: int = 8,
    seconds: float = 1.0,
    seed: int = 0,
) -> tuple[list[str], dict]:
    species = invented_species(n_species, seed=seed)
    with ShardSink(out, prefix, max_samples=per_shard) as sink:
        for i in range(per_species):
            for j, (name, pattern) in enumerate(species.items()):
                audio = synth_pattern(pattern, seconds, RATE, seed=seed * 1000 + i * 10 + j)
                sink.write(
                    f"{prefix}_{j}_{i}", audio, RATE, [f"The sound of a {name}", f"{name} calling"], species=name
                )
    return sorted(str(p) for p in Path(out).glob(f"{prefix}-*.tar")), species


def add_member(tar_path: Path, name: str, data: bytes) -> None:
    """Append a raw member to an existing shard (to plant corrupt or odd samples)."""
    with tarfile.open(tar_path, "a") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def laion_sample(tar_path: Path, key: str, audio_flac: bytes, text) -> None:
    add_member(tar_path, f"{key}.flac", audio_flac)
    add_member(tar_path, f"{key}.json", json.dumps({"text": text}).encode())
