"""The build config (YAML): defaults, validation with clear errors, and size strings like '500MB'."""
from __future__ import annotations

import copy
import re
from pathlib import Path

import yaml

DEFAULTS = {
    "sources": [],
    "captioner": {"type": "template"},
    "licenses": ["cc0", "cc-by", "cc-by-sa", "cc-by-nc", "cc-by-nc-sa"],
    "audio": {"sample_rate": 48000, "clip_seconds": 10.0, "max_chunks": 4, "few_recordings": 30,
              "min_seconds": 1.0, "min_tail_seconds": 2.0, "silence_dbfs": -60.0},
    "shards": {"max_samples": 2000, "max_bytes": "500MB"},
    "splits": {"valid": 0.02, "test": 0.02, "unseen_species": 0.02, "seed": 0},
    "download": {"concurrency": 4, "max_bytes": "300MB"},
}
_UNITS = {"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


class ConfigError(ValueError):
    """The config file is missing, not YAML, or has an unknown or invalid key."""


def parse_size(value, name: str) -> int:
    if isinstance(value, (int, float)):
        return int(value)
    m = re.fullmatch(r"\s*([\d.]+)\s*([A-Za-z]*)\s*", str(value))
    if not m or m.group(2).upper() not in _UNITS:
        raise ConfigError(f"{name}: cannot read size {value!r} (use e.g. 500MB, 2GB or a number of bytes)")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def load_config(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: '{path}'")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"'{path}' is not valid YAML: {e}") from e
    return resolve_config(raw, str(path))


def resolve_config(raw: dict, name: str = "config") -> dict:
    """Defaults filled in, unknown keys refused, sizes parsed to bytes."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{name}: the top level must be a mapping")
    config = copy.deepcopy(DEFAULTS)
    for key, value in raw.items():
        if key not in DEFAULTS:
            raise ConfigError(f"{name}: unknown key '{key}' (known: {', '.join(DEFAULTS)})")
        if isinstance(DEFAULTS[key], dict) and key != "captioner":
            if not isinstance(value, dict):
                raise ConfigError(f"{name}: '{key}' must be a mapping")
            unknown = set(value) - set(DEFAULTS[key])
            if unknown:
                raise ConfigError(f"{name}: unknown key(s) {sorted(unknown)} in '{key}' (known: {', '.join(DEFAULTS[key])})")
            config[key].update(value)
        else:
            config[key] = value
    if not config["sources"] or not isinstance(config["sources"], list):
        raise ConfigError(f"{name}: 'sources' must list at least one source")
    for i, source in enumerate(config["sources"]):
        if not isinstance(source, dict) or "type" not in source:
            raise ConfigError(f"{name}: source #{i + 1} must be a mapping with a 'type'")
    if not isinstance(config["captioner"], dict) or "type" not in config["captioner"]:
        raise ConfigError(f"{name}: 'captioner' must be a mapping with a 'type' (template or openai)")
    config["licenses"] = [str(x).lower() for x in config["licenses"]]
    config["shards"]["max_bytes"] = parse_size(config["shards"]["max_bytes"], "shards.max_bytes")
    config["download"]["max_bytes"] = parse_size(config["download"]["max_bytes"], "download.max_bytes")
    splits = config["splits"]
    if splits["valid"] + splits["test"] + splits["unseen_species"] >= 1:
        raise ConfigError(f"{name}: splits valid + test + unseen_species must be below 1")
    return config
