"""Sources: each yields Records (metadata) and fetches one record's audio to a local file.

A source is built from its config (``SourceConfig``): ``type`` picks the module, its options are
the class's arguments (every remote source takes ``base_url``, ``rate``, ``retries``, ``timeout``).
"""

from __future__ import annotations

import importlib
import inspect

MODULES = {
    "synthetic": ("synthetic", "SyntheticSource"),
    "local": ("local", "LocalSource"),
    "xeno-canto": ("xeno_canto", "XenoCantoSource"),
    "inaturalist": ("inaturalist", "INaturalistSource"),
    "gbif": ("gbif", "GbifSource"),
    "animalspeak-csv": ("animalspeak_csv", "AnimalSpeakCsvSource"),
}
COMMON = {"type", "max_records"}


class SourceError(RuntimeError):
    """A source cannot list its records (bad options, the archive refuses the query...)."""


def make_source(config, base_dir=None):
    """The source a :class:`data_pipeline.config.SourceConfig` describes (its ``type`` and options)."""
    kind = config.type
    if kind not in MODULES:
        raise ValueError(f"unknown source type {kind!r} (known: {', '.join(MODULES)})")
    module_name, class_name = MODULES[kind]
    try:
        cls = getattr(importlib.import_module(f"{__name__}.{module_name}"), class_name)
    except ModuleNotFoundError as e:
        raise ValueError(f"source type {kind!r} is not available in this version: {e}") from e
    options = {k: v for k, v in config.options.items() if k not in COMMON}
    accepted = set(inspect.signature(cls).parameters)
    unknown = set(options) - accepted
    if unknown:
        raise ValueError(
            f"source {kind!r}: unknown option(s) {sorted(unknown)} (known: {sorted(accepted - {'base_dir'})})"
        )
    if "base_dir" in accepted:
        options["base_dir"] = base_dir
    return cls(**options)
