"""Probing one encoder on one dataset: features (cached), then one probe per layer and the layer fusions,
each result written atomically to ``OUT/<dataset>/<model>/`` so an interrupted run resumes per model and layer."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from biolingual.vocabulary import slug

from ..report import write_json
from .dataset import SPLITS, ProbeDataset
from .encoders import LayerEncoder
from .features import ExtractionReport, LayerFeatureCache, extract
from .mlp import ProbeConfig, standardise, train_probe

log = logging.getLogger(__name__)


def parse_layers(spec: str | None, num_layers: int) -> list[int]:
    """'0-6', '0,3,8-12' or None (all) -> the layer indices that exist in a model of ``num_layers``."""
    if spec is None or spec.strip().lower() == "all":
        return list(range(num_layers))
    wanted: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        if not re.fullmatch(r"\d+(-\d+)?", part):
            raise ValueError(f"--layers: '{part}' is not a layer index or range such as 0-6")
        lo, _, hi = part.partition("-")
        wanted.update(range(int(lo), int(hi or lo) + 1))
    return sorted(layer for layer in wanted if layer < num_layers)


def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def probe_model(
    encoder: LayerEncoder,
    dataset: ProbeDataset,
    cache: LayerFeatureCache,
    out: Path,
    layers: list[int],
    fusions: list[str],
    config: ProbeConfig,
    batch_size: int = 8,
    workers: int = 2,
) -> tuple[list[dict], dict]:
    """(results: one dict per layer, then per fusion; the extraction report) of probing ``encoder`` on
    ``dataset``. Cached results with the same inputs and settings are reused."""
    folder = out / slug(dataset.name) / slug(encoder.name)
    keys, report = extract(encoder, dataset.paths, cache, batch_size, workers, desc=f"{encoder.name} on {dataset.name}")
    usable = np.array([k is not None for k in keys])
    extraction = _write_extraction(folder, encoder, dataset, report)
    idx = {s: np.flatnonzero((dataset.split == s) & usable) for s in SPLITS}
    for s, ix in idx.items():
        if not len(ix):
            raise ValueError(f"{dataset.csv_path}: no readable clips in the {s} split for {encoder.name}")
    y = {s: dataset.targets[ix] for s, ix in idx.items()}
    split_keys = {s: [keys[i] for i in ix] for s, ix in idx.items()}
    base = {
        "dataset": dataset.name,
        "model": encoder.name,
        "source": encoder.source,
        "classes": len(dataset.labels),
        "n": {s: len(ix) for s, ix in idx.items()},
    }
    inputs = _digest(encoder.identity, config.to_dict(), split_keys, {s: v.tolist() for s, v in y.items()})

    def layer_features(layer: int) -> dict[str, np.ndarray]:
        raw = {s: cache.features(split_keys[s], layer) for s in SPLITS}
        return dict(zip(SPLITS, standardise(raw["train"], raw["valid"], raw["test"])))

    results = []
    for layer in tqdm(layers, desc=f"probing {encoder.name} on {dataset.name}", unit="layer"):
        path = folder / f"layer_{layer:02d}.json"
        key = _digest(inputs, layer)
        result = _cached(path, key)
        if result is None:
            result = {
                **base,
                "layer": layer,
                "layer_name": encoder.layer_names[layer],
                "key": key,
                **train_probe(layer_features(layer), y, len(dataset.labels), config),
            }
            write_json(path, result)
        results.append(result)
    for fusion in fusions:
        path = folder / f"fusion_{fusion}.json"
        key = _digest(inputs, fusion, layers)
        result = _cached(path, key)
        if result is None:
            feats = [layer_features(layer) for layer in layers]
            if fusion == "weighted" and len({f["train"].shape[1] for f in feats}) > 1:
                log.warning(
                    "%s: its layers differ in width, so they have no weighted sum; fusion 'weighted' skipped",
                    encoder.name,
                )
                continue
            x = {s: (np.concatenate if fusion == "concat" else np.stack)([f[s] for f in feats], axis=1) for s in SPLITS}
            result = {
                **base,
                "layer": f"fusion: {fusion}",
                "layers": layers,
                "fusion": fusion,
                "key": key,
                **train_probe(x, y, len(dataset.labels), config, fusion=fusion),
            }
            write_json(path, result)
        results.append(result)
    return results, extraction


def _cached(path: Path, key: str) -> dict | None:
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return result if result.get("key") == key else None


def _write_extraction(folder: Path, encoder: LayerEncoder, dataset: ProbeDataset, report: ExtractionReport) -> dict:
    if report.unreadable:
        log.warning(
            "%s: %d unreadable clip(s) skipped for %s (listed in %s)",
            dataset.name,
            len(report.unreadable),
            encoder.name,
            folder / "extraction.json",
        )
    extraction = {
        "dataset": dataset.name,
        "model": encoder.name,
        "source": encoder.source,
        "sampling_rate": encoder.sampling_rate,
        "min_samples": encoder.min_samples,
        "layers": encoder.layer_names,
        **report.to_dict(),
        "unreadable_files": report.unreadable,
    }
    write_json(folder / "extraction.json", extraction)
    return extraction
