"""A small BirdSet config written in the published on-disk schema, with synthetic audio, for the docs and tests.

In: a folder. Out: ``FOLDER/HSN/`` as ``datasets``' ``save_to_disk`` leaves a DatasetDict
(``dataset_dict.json``; per split ``data-00000-of-00001.arrow`` in Arrow's stream format,
``dataset_info.json`` with the features, ``state.json``), the 23 columns BirdSet's splits have, 32 kHz
OGG files under ``FOLDER/HSN/audio/``, and ``FOLDER/ebird_names.json`` in the format of BirdSet's
``resources/birdnet/eBird_taxonomy_codes_2021E.json`` (code -> "Scientific name_Common name").

The classes are six eBird-style codes for the species :mod:`biolingual.synthetic` can voice. ``test_5s``
holds 5 s windows cut from four "soundscapes" with zero, one or two species each; one class
(``humwha``) occurs in train but never in the test windows, so the metrics meet a class without
positives. ``train`` holds focal recordings with ``detected_events`` and ``event_cluster`` (a noise
cluster -1 among them) as BirdSet's XCEventMapping reads them; ``test`` holds the per-event rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

from biolingual.extras import require
from biolingual.synthetic import SPECIES, synth_call

RATE = 32_000  # BirdSet's published rate
CODES = {
    "brdowl": "Barred Owl",
    "comloo": "Common Loon",
    "sprpee": "Spring Peeper",
    "amebul": "American Bullfrog",
    "fiecri": "Field Cricket",
    "humwha": "Humpback Whale",
}
# The species in each 5 s test window (class ids into CODES); [] is a window without any call.
TEST_WINDOWS = [
    [0],
    [1],
    [0, 2],
    [],
    [3],
    [4, 1],
    [2],
    [0, 3],
    [],
    [1, 2],
    [4],
    [3, 0],
    [2, 4],
    [0],
    [],
    [1],
    [3],
    [4, 0],
    [2],
    [1, 3],
    [],
    [0, 1],
    [4],
    [2, 3],
]
TRAIN_PER_CLASS = 3
TRAIN_SECONDS = 8.0


def _features(names: list[str]) -> dict:
    def value(dtype):
        return {"dtype": dtype, "_type": "Value"}

    def seq(feature):
        return {"feature": feature, "_type": "Sequence"}

    label = {"names": names, "_type": "ClassLabel"}
    return {
        "audio": {"sampling_rate": RATE, "mono": True, "decode": False, "_type": "Audio"},
        "filepath": value("string"),
        "start_time": value("float64"),
        "end_time": value("float64"),
        "low_freq": value("int64"),
        "high_freq": value("int64"),
        "ebird_code": label,
        "ebird_code_multilabel": seq(label),
        "ebird_code_secondary": seq(value("string")),
        "call_type": value("string"),
        "sex": value("string"),
        "lat": value("float64"),
        "long": value("float64"),
        "length": value("int64"),
        "microphone": value("string"),
        "license": value("string"),
        "source": value("string"),
        "local_time": value("string"),
        "detected_events": seq(seq(value("float64"))),
        "event_cluster": seq(value("int64")),
        "peaks": seq(value("float64")),
        "quality": value("string"),
        "recordist": value("string"),
    }


def _schema(pa, features: dict):
    t = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    types = {
        "audio": t,
        "filepath": pa.string(),
        "start_time": pa.float64(),
        "end_time": pa.float64(),
        "low_freq": pa.int64(),
        "high_freq": pa.int64(),
        "ebird_code": pa.int64(),
        "ebird_code_multilabel": pa.list_(pa.int64()),
        "ebird_code_secondary": pa.list_(pa.string()),
        "call_type": pa.string(),
        "sex": pa.string(),
        "lat": pa.float64(),
        "long": pa.float64(),
        "length": pa.int64(),
        "microphone": pa.string(),
        "license": pa.string(),
        "source": pa.string(),
        "local_time": pa.string(),
        "detected_events": pa.list_(pa.list_(pa.float64())),
        "event_cluster": pa.list_(pa.int64()),
        "peaks": pa.list_(pa.float64()),
        "quality": pa.string(),
        "recordist": pa.string(),
    }
    meta = {"huggingface": json.dumps({"info": {"features": features}})}
    return pa.schema([(name, types[name]) for name in features], metadata=meta)


def _write_split(pa, folder: Path, split: str, rows: list[dict], features: dict) -> None:
    d = folder / split
    d.mkdir(parents=True, exist_ok=True)
    schema = _schema(pa, features)
    full = [{name: row.get(name) for name in features} for row in rows]
    table = pa.Table.from_pylist(full, schema=schema)
    with pa.OSFile(str(d / "data-00000-of-00001.arrow"), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        writer.write_table(table)
    (d / "dataset_info.json").write_text(
        json.dumps(
            {"builder_name": "birdset", "config_name": folder.name, "dataset_name": "birdset", "features": features},
            indent=2,
        )
    )
    (d / "state.json").write_text(
        json.dumps(
            {"_data_files": [{"filename": "data-00000-of-00001.arrow"}], "_split": split, "_format_type": None},
            indent=2,
        )
    )


def _common(i: int) -> dict:
    return {
        "lat": 37.0,
        "long": -119.0,
        "license": "synthetic",
        "source": "biolingual.synthetic",
        "local_time": f"06:{i % 60:02d}:00",
        "microphone": "Soundscape",
    }


def write_example_fixture(root: str | Path, config: str = "HSN") -> Path:
    """Write the example config under ``root``; returns ``root/config``. Deterministic."""
    pa = require("pyarrow", "eval", "writing the BirdSet example fixture")
    root = Path(root)
    folder = root / config
    audio = folder / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    names = list(CODES)
    features = _features(names)

    test_5s, test = [], []
    for w, species in enumerate(TEST_WINDOWS):
        scape, k = divmod(w, 6)  # six 5 s windows per soundscape
        wave = 0.01 * np.random.default_rng(w).standard_normal(int(5 * RATE)).astype(np.float32)
        for j, c in enumerate(species):
            wave += synth_call(CODES[names[c]], 5.0, RATE, seed=100 * w + j, noise=0.0)
        path = audio / "test_5s" / f"{config}_{scape + 1:03d}_20150708_061805_{5 * k:03d}_{5 * k + 5:03d}.ogg"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, np.clip(wave, -1, 1), RATE)
        test_5s.append(
            {
                "audio": {"bytes": None, "path": str(path.resolve())},
                "filepath": str(path.resolve()),
                "start_time": 0.0,
                "end_time": 5.0,
                "ebird_code": None,
                "ebird_code_multilabel": species,
                **_common(w),
            }
        )
        for c in species:  # the per-event rows of the "test" split (strong labels on the soundscape)
            test.append(
                {
                    "audio": {"bytes": None, "path": str(path.resolve())},
                    "filepath": str(path.resolve()),
                    "start_time": 5.0 * k + 0.5,
                    "end_time": 5.0 * k + 4.5,
                    "low_freq": 500,
                    "high_freq": 6000,
                    "ebird_code": c,
                    "ebird_code_multilabel": [c],
                    **_common(w),
                }
            )

    train = []
    for c, code in enumerate(names):
        for r in range(TRAIN_PER_CLASS):
            i = c * TRAIN_PER_CLASS + r
            path = audio / "train" / f"XC{100000 + i}.ogg"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, synth_call(CODES[code], TRAIN_SECONDS, RATE, seed=1000 + i), RATE)
            events = [[0.5, 1.5], [2.5, 3.5], [5.0, 6.5], [7.0, 7.5]]
            clusters = [0, 0, 0, -1] if r != 1 else [1, 0, 0, -1]  # a smaller cluster, and noise, to be dropped
            train.append(
                {
                    "audio": {"bytes": None, "path": str(path.resolve())},
                    "filepath": str(path.resolve()),
                    "ebird_code": c,
                    "ebird_code_multilabel": [c],
                    "ebird_code_secondary": [],
                    "call_type": "song",
                    "length": int(TRAIN_SECONDS),
                    "quality": "A",
                    "recordist": "synthetic",
                    "detected_events": events,
                    "event_cluster": clusters,
                    "peaks": [1.0, 3.0, 5.7, 7.2],
                    **_common(i),
                    "microphone": "focal",
                }
            )

    for split, rows in (("train", train), ("test", test), ("test_5s", test_5s)):
        _write_split(pa, folder, split, rows, features)
    (folder / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test", "test_5s"]}))
    taxonomy = {}
    for code, common in CODES.items():
        taxonomy[code] = f"{SPECIES[common].scientific}_{common}"
        taxonomy[f"{SPECIES[common].scientific}_{common}"] = code  # BirdSet's file maps both ways
    (root / "ebird_names.json").write_text(json.dumps(taxonomy, indent=2))
    return folder
