"""A small BEANS-Zero in its published on-disk schema, with synthetic audio, for tests and the docs.

    python -m eval.beans_zero.make_fixture DIR [--format save_to_disk|parquet] [--corrupt]

In: a folder. Out: the folder holding a few dozen examples in BEANS-Zero's columns (``source_dataset``,
``audio`` as a list of float32 samples, ``id``, ``created_at``, ``metadata`` (JSON with ``duration`` and
``sample_rate``), ``file_name``, ``instruction``, ``instruction_text``, ``output``, ``task``,
``dataset_name``, ``license``), laid out as ``datasets``' ``save_to_disk`` writes a split (Arrow IPC
stream ``data-00000-of-00001.arrow``, ``dataset_info.json``, ``state.json``) or as parquet shards
(``shard-0000N-of-00002.parquet``, the Hub's ``shard*`` files). Four components: two classification
(species by common and by scientific name, :data:`biolingual.synthetic.SPECIES`), one detection
(several species or "None" per window, as BEANS-Zero's detection outputs are written) and one
captioning. ``--corrupt`` adds two examples that must be skipped: audio holding NaN, and metadata
without a sample rate.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import uuid
from pathlib import Path

import numpy as np

from biolingual.atomic import atomic_write_text
from biolingual.extras import require
from biolingual.synthetic import SPECIES, synth_call

RATE = 16_000  # the rate of most BEANS-Zero components
COLUMNS = (
    "source_dataset",
    "audio",
    "id",
    "created_at",
    "metadata",
    "file_name",
    "instruction",
    "instruction_text",
    "output",
    "task",
    "dataset_name",
    "license",
)
AUDIO_TAG = "<Audio><AudioHere></Audio> "  # instruction = this placeholder + instruction_text
INSTRUCTIONS = {  # as BEANS-Zero phrases them (NatureLM-audio's demo page lists examples)
    "unseen-species-cmn": "What is the common name for the focal species in the audio?",
    "unseen-species-sci": "What is the scientific name for the focal species in the audio?",
    "enabirds": "What are the common names for the species in the audio, if any?",
    "captioning": "Caption the audio, using the common name for any animal species.",
}
# Detection windows: the species calling in each (an empty tuple is the output "None").
DETECTION = [
    (),
    ("Barred Owl",),
    ("Spring Peeper",),
    ("Barred Owl", "Spring Peeper"),
    ("Field Cricket",),
    (),
    ("Common Loon",),
    ("Field Cricket", "Barred Owl"),
    ("Spring Peeper",),
    (),
    ("Common Loon", "Field Cricket"),
    ("Barred Owl",),
]


def make_row(
    component: str,
    task: str,
    output: str,
    audio: np.ndarray | None,
    n: int,
    metadata: str | None = None,
    instruction: str = "",
) -> dict:
    """One example in BEANS-Zero's columns: ``audio`` at :data:`RATE`, ``n`` makes its id."""
    instruction = instruction or INSTRUCTIONS.get(
        component, "What is the common name for the focal species in the audio?"
    )
    seconds = 0.0 if audio is None else len(audio) / RATE
    return {
        "source_dataset": "synthetic",
        "audio": None if audio is None else audio.astype(np.float32),
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"beans-zero-fixture/{component}/{n}")),
        "created_at": dt.datetime(2025, 4, 12, tzinfo=dt.UTC).isoformat(),
        "metadata": metadata if metadata is not None else json.dumps({"duration": seconds, "sample_rate": RATE}),
        "file_name": f"{component}_{n:03d}.wav",
        "instruction": AUDIO_TAG + instruction,
        "instruction_text": instruction,
        "output": output,
        "task": task,
        "dataset_name": component,
        "license": "CC0",
    }


def examples(corrupt: bool = False) -> list[dict]:
    """The fixture's rows, deterministic."""
    rows = []
    for i, name in enumerate(SPECIES):
        for k in range(2):
            clip = synth_call(name, 2.0, RATE, seed=10 * i + k)
            rows.append(make_row("unseen-species-cmn", "classification", name, clip, len(rows)))
    for i, (name, pattern) in enumerate(SPECIES.items()):
        rows.append(
            make_row(
                "unseen-species-sci",
                "classification",
                pattern.scientific,
                synth_call(name, 2.0, RATE, seed=100 + i),
                len(rows),
            )
        )
    rng = np.random.default_rng(7)
    for k, present in enumerate(DETECTION):
        audio = 0.02 * rng.standard_normal(2 * RATE).astype(np.float32)
        for s in present:
            audio += 0.5 * synth_call(s, 2.0, RATE, seed=200 + k)
        rows.append(make_row("enabirds", "detection", ", ".join(present) or "None", np.clip(audio, -1, 1), len(rows)))
    for k, name in enumerate(("Barred Owl", "Common Loon")):
        rows.append(
            make_row(
                "captioning",
                "captioning",
                f"The sound of a {name} calling at night.",
                synth_call(name, 2.0, RATE, seed=300 + k),
                len(rows),
            )
        )
    if corrupt:
        bad = synth_call("Barred Owl", 2.0, RATE, seed=400)
        bad[100:200] = np.nan
        rows.insert(4, make_row("unseen-species-cmn", "classification", "Barred Owl", bad, 900))
        no_rate = json.dumps({"duration": 2.0})
        rows.insert(
            9,
            make_row(
                "unseen-species-cmn",
                "classification",
                "Spring Peeper",
                synth_call("Spring Peeper", 2.0, RATE, seed=401),
                901,
                metadata=no_rate,
            ),
        )
    return rows


def _features() -> dict:
    """``datasets`` Features of the columns, as dataset_info.json and the Arrow schema metadata hold them."""
    string = {"dtype": "string", "_type": "Value"}
    return {
        c: ({"feature": {"dtype": "float32", "_type": "Value"}, "_type": "Sequence"} if c == "audio" else string)
        for c in COLUMNS
    }


def _table(rows: list[dict]):
    pa = require("pyarrow", "eval", "writing the BEANS-Zero fixture")
    schema = pa.schema(
        [(c, pa.list_(pa.float32()) if c == "audio" else pa.string()) for c in COLUMNS],
        metadata={"huggingface": json.dumps({"info": {"features": _features()}})},
    )
    return pa.Table.from_pydict({c: [r[c] for r in rows] for c in COLUMNS}, schema=schema)


def write_fixture(out: str | Path, fmt: str = "save_to_disk", corrupt: bool = False) -> Path:
    """Write the fixture to ``out`` (created) as ``save_to_disk`` or ``parquet``; returns ``out``."""
    return write_rows(out, examples(corrupt), fmt)


def write_rows(out: str | Path, rows: list[dict], fmt: str = "save_to_disk") -> Path:
    """Write rows made by :func:`make_row` to ``out`` (created) in one of the published layouts; returns ``out``."""
    pa = require("pyarrow", "eval", "writing the BEANS-Zero fixture")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "save_to_disk":
        table = _table(rows)
        with (
            pa.OSFile(str(out / "data-00000-of-00001.arrow"), "wb") as sink,
            pa.ipc.new_stream(sink, table.schema) as writer,
        ):
            writer.write_table(table, max_chunksize=16)
        atomic_write_text(
            out / "dataset_info.json",
            json.dumps(
                {"citation": "", "description": "", "features": _features(), "homepage": "", "license": ""}, indent=2
            ),
        )
        atomic_write_text(
            out / "state.json",
            json.dumps(
                {
                    "_data_files": [{"filename": "data-00000-of-00001.arrow"}],
                    "_fingerprint": "beans-zero-fixture",
                    "_format_columns": None,
                    "_format_kwargs": {},
                    "_format_type": None,
                    "_output_all_columns": False,
                    "_split": "test",
                },
                indent=2,
            ),
        )
    elif fmt == "parquet":
        pq = require("pyarrow.parquet", "eval", "writing the BEANS-Zero fixture")
        half = len(rows) // 2
        for i, part in enumerate((rows[:half], rows[half:])):
            pq.write_table(_table(part), str(out / f"shard-{i:05d}-of-00002.parquet"), row_group_size=8)
    else:
        raise ValueError(f"format must be 'save_to_disk' or 'parquet', got {fmt!r}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m eval.beans_zero.make_fixture", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="folder to write (created)")
    ap.add_argument("--format", choices=("save_to_disk", "parquet"), default="save_to_disk")
    ap.add_argument(
        "--corrupt", action="store_true", help="add two examples that cannot be used (NaN audio, no sample rate)"
    )
    args = ap.parse_args(argv)
    write_fixture(args.out, args.format, args.corrupt)
    print(f"BEANS-Zero fixture ({args.format}) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
