"""The build config (YAML): defaults, and every value checked in one place.

:func:`load_config` (a file) and :func:`resolve_config` (a mapping) return the config with defaults
filled in and sizes ('500MB') as bytes, or raise :class:`ConfigError` naming the file (and line,
where YAML gives it) and the key of every mistake: YAML syntax, a top level that is not a mapping,
unknown keys and source or captioner options, wrong types, values out of range or not allowed.
Reading YAML and converting values reuse the training config's helpers, so both configs accept and
refuse the same spellings.
"""
from __future__ import annotations

import copy
import importlib
import inspect
import math
import re
from pathlib import Path

from biolingual.config_io import ConfigError as _BaseConfigError
from biolingual.config_io import describe_value, read_yaml, typed

from .licenses import KNOWN, normalize_license

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

SIZE = "size"  # a kind: bytes, or a string such as 500MB
# (kind, check, what the check asks) per key; check None: any value of the kind
_AT_LEAST_0 = (lambda v: v >= 0, "at least 0")
_AT_LEAST_1 = (lambda v: v >= 1, "at least 1")
_ABOVE_0 = (lambda v: v > 0, "greater than 0")
_FRACTION = (lambda v: 0 <= v < 1, "in [0, 1)")
SECTIONS = {
    "audio": {"sample_rate": (int, (lambda v: v >= 8000, "at least 8000 (Hz)")), "clip_seconds": (float, _ABOVE_0),
              "max_chunks": (int, _AT_LEAST_1), "few_recordings": (int, _AT_LEAST_0), "min_seconds": (float, _AT_LEAST_0),
              "min_tail_seconds": (float, _AT_LEAST_0),
              "silence_dbfs": (float, (lambda v: v <= 0, "at most 0 (dBFS: 0 is full scale)"))},
    "shards": {"max_samples": (int, _AT_LEAST_1), "max_bytes": (SIZE, _AT_LEAST_1)},
    "splits": {"valid": (float, _FRACTION), "test": (float, _FRACTION), "unseen_species": (float, _FRACTION),
               "seed": (int, None)},
    "download": {"concurrency": (int, (lambda v: 1 <= v <= 256, "between 1 and 256")), "max_bytes": (SIZE, _AT_LEAST_1)},
}
# Source and captioner options: the names a source takes come from its class's signature (so they
# cannot drift); their kinds and ranges are here. tests/test_pipeline_config.py checks that every
# option of every source and captioner has an entry.
OPTIONS = {
    "max_records": (int, (lambda v: v >= 1, "at least 1 (leave it out for no limit)")),
    "base_url": (str, None), "rate": (float, (lambda v: v >= 0, "at least 0 (requests/s; 0: no limit)")),
    "retries": (int, _AT_LEAST_0), "backoff": (float, _AT_LEAST_0), "timeout": (float, _ABOVE_0),
    "deadline": (float, _ABOVE_0), "max_bytes": (SIZE, _AT_LEAST_1), "params": (dict, None),
    "query": (str, (lambda v: bool(v.strip()), "a non-empty query such as 'grp:birds q:A'")), "key": (str, None),
    "per_page": (int, _AT_LEAST_1), "limit": (int, _AT_LEAST_1), "common_names": (bool, None),
    "path": (str, (lambda v: bool(v.strip()), "a non-empty path")), "metadata": (str, None), "license": (str, None),
    "species": (int, _AT_LEAST_1), "clips_per_species": (int, _AT_LEAST_1), "seconds": (float, _ABOVE_0),
    "seed": (int, None), "include_bad": (bool, None),
    # the openai captioner
    "model": (str, (lambda v: bool(v.strip()), "a model name")), "api_key_env": (str, (lambda v: bool(v.strip()), "a variable name")),
    "prompt": (str, None), "concurrency": (int, _AT_LEAST_1), "max_retries": (int, _AT_LEAST_0),
    "temperature": (float, (lambda v: 0 <= v <= 2, "between 0 and 2")),
    "retry_temperature": (float, (lambda v: 0 <= v <= 2, "between 0 and 2")), "max_tokens": (int, _AT_LEAST_1),
}
CAPTIONERS = ("template", "openai")


class ConfigError(_BaseConfigError):
    """A mistake in a data pipeline config; the message names the file (and line) and the key."""


def parse_size(value, name: str) -> int:
    """``500MB``, ``2GiB``, ``1e9`` or a number -> bytes; ConfigError naming ``name`` otherwise."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return int(value)
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?(?:[eE]\d+)?)\s*([A-Za-z]*)\s*", str(value)) if isinstance(value, str) else None
    if not m or m.group(2).upper() not in _UNITS:
        raise ConfigError(f"'{name}': cannot read size {value!r} (use e.g. 500MB, 2GB or a number of bytes)")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def load_config(path: str | Path) -> dict:
    """The config file at ``path``, checked and with defaults; ConfigError for any mistake."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: '{path}'")
    if not path.is_file():
        raise ConfigError(f"config file '{path}' is not a file")
    try:
        raw, lines = read_yaml(path)
    except _BaseConfigError as e:  # names the file, line and column
        raise ConfigError(str(e)) from None
    return resolve_config(raw, str(path), lines)


def resolve_config(raw, name: str = "config", lines: dict[str, int] | None = None) -> dict:
    """Defaults filled in, every value checked, sizes parsed to bytes.

    ``name`` (the file) and ``lines`` (dotted key -> line) say where a mistake is; all mistakes are
    reported at once in one ConfigError.
    """
    problems: list[tuple[str, str]] = []  # (dotted key for the line, message)
    config = copy.deepcopy(DEFAULTS)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{name}: the top level must be a mapping of keys ({', '.join(DEFAULTS)}), got {describe_value(raw)}")
    for key, value in raw.items():
        if key not in DEFAULTS:
            problems.append((str(key), f"unknown key '{key}' (known: {', '.join(DEFAULTS)})"))
        elif key in SECTIONS:
            config[key].update(_section(key, value, problems))
        elif key == "licenses":
            config[key] = _licenses(value, problems)
        elif key == "sources":
            config[key] = _sources(value, problems)
        else:
            config[key] = _captioner(value, problems)
    if "sources" not in raw:
        problems.append(("sources", "'sources' is missing: list at least one source, e.g. sources: [{type: synthetic}]"))
    for key in ("shards", "download"):  # the defaults are strings too
        if isinstance(config[key]["max_bytes"], str):
            config[key]["max_bytes"] = parse_size(config[key]["max_bytes"], f"{key}.max_bytes")
    splits = config["splits"]
    if all(isinstance(splits[k], float) for k in ("valid", "test", "unseen_species")) and \
            splits["valid"] + splits["test"] + splits["unseen_species"] >= 1:
        problems.append(("splits", "'splits' valid + test + unseen_species must be below 1 (the rest is train), got "
                                   f"{splits['valid']} + {splits['test']} + {splits['unseen_species']}"))
    if problems:
        lines = lines or {}
        messages = [f"{name}, line {lines[key]}: {text}" if key in lines else f"{name}: {text}" for key, text in problems]
        raise ConfigError(messages[0] if len(messages) == 1 else
                          f"{len(messages)} problems in the config:\n  " + "\n  ".join(messages))
    return config


def _value(dotted: str, label: str, value, spec, problems) -> tuple[bool, object]:
    """(ok, ``value`` as its kind); a problem naming ``label`` (the key, quoted) when not ok."""
    kind, check = spec
    if kind is SIZE:
        try:
            converted = parse_size(value, dotted)
        except ConfigError:
            problems.append((dotted, f"{label}: cannot read size {value!r} (use e.g. 500MB, 2GB or a number of bytes)"))
            return False, value
    elif kind is dict:
        if value is None:
            return True, {}
        if not isinstance(value, dict):
            problems.append((dotted, f"{label} must be a mapping, got {describe_value(value)}"))
            return False, value
        return True, value
    else:
        try:
            converted = typed(value, kind)
        except ValueError as e:
            problems.append((dotted, f"{label}: {e}" + ("" if "got" in str(e) else f"; got {value!r}")))
            return False, value
        if isinstance(converted, float) and not math.isfinite(converted):
            problems.append((dotted, f"{label} must be a finite number, got {value!r}"))
            return False, value
    if check is not None and not check[0](converted):
        problems.append((dotted, f"{label} must be {check[1]}, got {value!r}"))
        return False, value
    return True, converted


def _section(section: str, value, problems) -> dict:
    if value is None:
        return {}
    known = SECTIONS[section]
    if not isinstance(value, dict):
        problems.append((section, f"'{section}' must be a mapping of {', '.join(known)}, got {describe_value(value)}"))
        return {}
    out = {}
    for key, item in value.items():
        dotted = f"{section}.{key}"
        if key not in known:
            problems.append((dotted, f"unknown key '{dotted}' (known in '{section}': {', '.join(known)})"))
            continue
        ok, converted = _value(dotted, f"'{dotted}'", item, known[key], problems)
        if ok:
            out[key] = converted
    return out


def _licenses(value, problems) -> list[str]:
    if not isinstance(value, list) or not value:
        problems.append(("licenses", f"'licenses' must list the accepted licences (e.g. [cc0, cc-by]), got {describe_value(value)}"))
        return []
    codes = []
    for i, item in enumerate(value, start=1):
        code = normalize_license(item) if isinstance(item, str) else None
        if code is None:
            problems.append((f"licenses.#{i}", f"'licenses' #{i}: unknown licence {item!r} (known: {', '.join(sorted(KNOWN))})"))
        else:
            codes.append(code)
    return codes


def option_names(cls) -> dict[str, object]:
    """The options a source or captioner class takes: name -> default (``inspect.Parameter.empty`` if required)."""
    return {n: p.default for n, p in inspect.signature(cls).parameters.items()
            if n not in {"base_dir", "cache_path"} and p.kind is not p.VAR_KEYWORD}


def source_class(kind: str):
    from .sources import MODULES
    module_name, class_name = MODULES[kind]
    return getattr(importlib.import_module(f"data_pipeline.sources.{module_name}"), class_name)


def _options(label: str, dotted: str, options: dict, accepted: dict, problems) -> dict:
    """Every option of one source or captioner checked; numeric strings converted, other values kept as written
    (a source's listing is identified by a hash of its options)."""
    out = {}
    unknown = [key for key in options if key not in accepted]
    if unknown:
        known = f"known: {', '.join(sorted(accepted))}" if accepted else "it takes none"
        problems.append((f"{dotted}.{unknown[0]}", f"{label}: unknown option(s) {unknown} ({known})"))
    for key, value in options.items():
        if key not in accepted:
            continue
        spec = OPTIONS.get(key, (None, None))
        if spec[0] is None:
            out[key] = value
            continue
        if value is None and accepted[key] is None:  # an optional option left empty
            out[key] = value
            continue
        ok, converted = _value(f"{dotted}.{key}", f"{label}: '{key}'", value, spec, problems)
        out[key] = converted if ok and (isinstance(value, str) or spec[0] is SIZE) else value
    for key, default in accepted.items():
        if default is inspect.Parameter.empty and key not in options:
            problems.append((dotted, f"{label}: '{key}' is required"))
    return out


def _sources(value, problems) -> list:
    from .sources import COMMON, MODULES
    if not isinstance(value, list) or not value:
        problems.append(("sources", f"'sources' must list at least one source (e.g. [{{type: synthetic}}]), got {describe_value(value)}"))
        return []
    out = []
    for i, source in enumerate(value, start=1):
        dotted = f"sources.#{i}"
        if not isinstance(source, dict) or "type" not in source:
            problems.append((dotted, f"source #{i} must be a mapping with a 'type' ({', '.join(MODULES)}), got {describe_value(source)}"))
            continue
        kind = source["type"]
        if kind not in MODULES:
            problems.append((f"{dotted}.type", f"source #{i}: unknown source type {kind!r} (known: {', '.join(MODULES)})"))
            continue
        accepted = {**option_names(source_class(kind)), **{k: None for k in COMMON - {"type"}}}
        options = {k: v for k, v in source.items() if k != "type"}
        out.append({"type": kind, **_options(f"source #{i} ({kind})", dotted, options, accepted, problems)})
    return out


def _captioner(value, problems) -> dict:
    if not isinstance(value, dict) or value.get("type") not in CAPTIONERS:
        got = describe_value(value) if not isinstance(value, dict) else f"type {value.get('type')!r}"
        problems.append(("captioner", f"'captioner' must be a mapping with a 'type' ({' or '.join(CAPTIONERS)}), got {got}"))
        return dict(DEFAULTS["captioner"])
    options = {k: v for k, v in value.items() if k != "type"}
    if value["type"] == "template":
        accepted = {}
    else:
        from .captioning.llm import OpenAICaptioner, load_prompt
        accepted = option_names(OpenAICaptioner)
        if isinstance(options.get("prompt"), str):
            try:
                load_prompt(options["prompt"])
            except (ValueError, OSError) as e:
                problems.append(("captioner.prompt", f"'captioner.prompt': {e}"))
    label = f"captioner '{value['type']}'"
    return {"type": value["type"], **_options(label, "captioner", options, accepted, problems)}
