"""The build config: typed dataclasses read from YAML, with ``--section.key value`` overrides, every value
checked in one place.

:func:`load_config` (a file, plus command-line overrides) and :func:`resolve_config` (a mapping)
return a :class:`PipelineConfig` (sections ``audio``, ``shards``, ``splits``, ``download``; the
``sources`` list, the ``captioner`` and the ``licenses`` list) with defaults filled in and sizes
('500MB') as bytes, or raise :class:`ConfigError` naming the file (and line, where YAML gives it) or
the command line, and the key, of every mistake at once: YAML syntax, a top level that is not a
mapping, unknown keys and source or captioner options, wrong types, values out of range or not
allowed. Reading YAML, converting values and reading overrides are biolingual/config_io.py's, shared
with the training config, so both accept and refuse the same spellings.

A source's and the captioner's options depend on their ``type`` (a source's names come from its
class's signature), so they stay a mapping inside :class:`SourceConfig` and :class:`CaptionerConfig`,
checked against :data:`OPTIONS`.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import inspect
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

from biolingual.config_io import ConfigError as _BaseConfigError
from biolingual.config_io import command_line_value, describe_value, find_key, parse_overrides, read_yaml, typed

from .licenses import KNOWN, normalize_license

_UNITS = {"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}

SIZE = "size"  # a kind: bytes, or a string such as 500MB
# (check, what the check asks): a key's range, in its field's metadata or in OPTIONS
_AT_LEAST_0 = (lambda v: v >= 0, "at least 0")
_AT_LEAST_1 = (lambda v: v >= 1, "at least 1")
_ABOVE_0 = (lambda v: v > 0, "greater than 0")
_FRACTION = (lambda v: 0 <= v < 1, "in [0, 1)")


def _key(default, check=None, size: bool = False):
    """A section's key: its default, its range check, and whether it is a size ('500MB' -> bytes)."""
    return field(default=default, metadata={"check": check, "size": size})


@dataclass
class AudioConfig:
    sample_rate: int = _key(48000, (lambda v: v >= 8000, "at least 8000 (Hz)"))
    clip_seconds: float = _key(10.0, _ABOVE_0)
    max_chunks: int = _key(4, _AT_LEAST_1)  # clips per recording of a species with few recordings
    few_recordings: int = _key(30, _AT_LEAST_0)
    min_seconds: float = _key(1.0, _AT_LEAST_0)
    min_tail_seconds: float = _key(2.0, _AT_LEAST_0)
    silence_dbfs: float = _key(-60.0, (lambda v: v <= 0, "at most 0 (dBFS: 0 is full scale)"))


@dataclass
class ShardsConfig:
    max_samples: int = _key(2000, _AT_LEAST_1)
    max_bytes: int = _key(500_000_000, _AT_LEAST_1, size=True)  # 500MB


@dataclass
class SplitsConfig:
    valid: float = _key(0.02, _FRACTION)
    test: float = _key(0.02, _FRACTION)
    unseen_species: float = _key(0.02, _FRACTION)
    seed: int = _key(0)


@dataclass
class DownloadConfig:
    concurrency: int = _key(4, (lambda v: 1 <= v <= 256, "between 1 and 256"))
    max_bytes: int = _key(300_000_000, _AT_LEAST_1, size=True)  # 300MB


@dataclass
class SourceConfig:
    """One entry of ``sources``: its ``type`` and its options as checked (numeric strings converted,
    other values as written: a source's listing is identified by a hash of :meth:`as_dict`)."""

    type: str
    options: dict = field(default_factory=dict)  # max_records (every source) and the source class's own

    @property
    def max_records(self) -> int | None:
        return self.options.get("max_records")

    def as_dict(self) -> dict:
        return {"type": self.type, **self.options}


@dataclass
class CaptionerConfig:
    type: str = "template"  # template | openai
    options: dict = field(default_factory=dict)  # the openai captioner's (model, base_url, ...)

    def as_dict(self) -> dict:
        return {"type": self.type, **self.options}


@dataclass
class PipelineConfig:
    sources: list[SourceConfig] = field(default_factory=list)
    captioner: CaptionerConfig = field(default_factory=CaptionerConfig)
    licenses: list[str] = field(default_factory=lambda: ["cc0", "cc-by", "cc-by-sa", "cc-by-nc", "cc-by-nc-sa"])
    audio: AudioConfig = field(default_factory=AudioConfig)
    shards: ShardsConfig = field(default_factory=ShardsConfig)
    splits: SplitsConfig = field(default_factory=SplitsConfig)
    download: DownloadConfig = field(default_factory=DownloadConfig)


TOP_KEYS = tuple(f.name for f in dataclasses.fields(PipelineConfig))
# Set in the config file only: their options depend on their type.
_FILE_ONLY = ("sources", "captioner")


def _specs(cls) -> dict[str, tuple[object, tuple | None]]:
    """A section's keys -> (kind, check), from its dataclass: the fields are the one list of keys."""
    kinds = typing.get_type_hints(cls)
    return {
        f.name: (SIZE if f.metadata["size"] else kinds[f.name], f.metadata["check"]) for f in dataclasses.fields(cls)
    }


# section -> key -> (kind, check): audio, shards, splits, download
SECTIONS = {
    name: _specs(kind)
    for name, kind in typing.get_type_hints(PipelineConfig).items()
    if dataclasses.is_dataclass(kind) and name not in _FILE_ONLY
}

# Source and captioner options: the names a source takes come from its class's signature (so they
# cannot drift); their kinds and ranges are here. tests/test_pipeline_config.py checks that every
# option of every source and captioner has an entry.
OPTIONS = {
    "max_records": (int, (lambda v: v >= 1, "at least 1 (leave it out for no limit)")),
    "base_url": (str, None),
    "rate": (float, (lambda v: v >= 0, "at least 0 (requests/s; 0: no limit)")),
    "retries": (int, _AT_LEAST_0),
    "backoff": (float, _AT_LEAST_0),
    "timeout": (float, _ABOVE_0),
    "deadline": (float, _ABOVE_0),
    "max_bytes": (SIZE, _AT_LEAST_1),
    "params": (dict, None),
    "query": (str, (lambda v: bool(v.strip()), "a non-empty query such as 'grp:birds q:A'")),
    "key": (str, None),
    "per_page": (int, _AT_LEAST_1),
    "limit": (int, _AT_LEAST_1),
    "common_names": (bool, None),
    "path": (str, (lambda v: bool(v.strip()), "a non-empty path")),
    "metadata": (str, None),
    "license": (str, None),
    "species": (int, _AT_LEAST_1),
    "clips_per_species": (int, _AT_LEAST_1),
    "seconds": (float, _ABOVE_0),
    "seed": (int, None),
    "include_bad": (bool, None),
    # the openai captioner
    "model": (str, (lambda v: bool(v.strip()), "a model name")),
    "api_key_env": (str, (lambda v: bool(v.strip()), "a variable name")),
    "prompt": (str, None),
    "concurrency": (int, _AT_LEAST_1),
    "max_retries": (int, _AT_LEAST_0),
    "temperature": (float, (lambda v: 0 <= v <= 2, "between 0 and 2")),
    "retry_temperature": (float, (lambda v: 0 <= v <= 2, "between 0 and 2")),
    "max_tokens": (int, _AT_LEAST_1),
}
CAPTIONERS = ("template", "openai")


class ConfigError(_BaseConfigError):
    """A mistake in a data pipeline config; the message names the file (and line) or the command line, and the key."""


def parse_size(value, name: str) -> int:
    """``500MB``, ``2GiB``, ``1e9`` or a number -> bytes; ConfigError naming ``name`` otherwise."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return int(value)
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?(?:[eE]\d+)?)\s*([A-Za-z]*)\s*", str(value)) if isinstance(value, str) else None
    if not m or m.group(2).upper() not in _UNITS:
        raise ConfigError(f"'{name}': cannot read size {value!r} (use e.g. 500MB, 2GB or a number of bytes)")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def load_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """The config file at ``path`` with the command line's ``overrides`` (``--section.key value``
    tokens) on top, checked and with defaults; ConfigError for any mistake."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: '{path}'")
    if not path.is_file():
        raise ConfigError(f"config file '{path}' is not a file")
    try:
        raw, lines = read_yaml(path, "pipeline")
    except _BaseConfigError as e:  # names the file, line and column
        raise ConfigError(str(e)) from None
    return resolve_config(raw, str(path), lines, overrides or ())


def resolve_config(
    raw, name: str = "config", lines: dict[str, int] | None = None, overrides: typing.Sequence[str] = ()
) -> PipelineConfig:
    """Defaults filled in, every value checked, sizes parsed to bytes.

    ``name`` (the file) and ``lines`` (dotted key -> line) say where a mistake is; ``overrides`` are
    command-line tokens (``--audio.clip_seconds 5``, ``--licenses cc0,cc-by``) set on top of ``raw``
    and checked the same way. All mistakes in values are reported at once in one ConfigError.
    """
    problems: list[tuple[str, str]] = []  # (dotted key, to say where it was set; message)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{name}: the top level must be a mapping of keys ({', '.join(TOP_KEYS)}), got {describe_value(raw)}"
        )
    origins = {key: f"{name}, line {line}" for key, line in (lines or {}).items()}
    named: list[str] = []  # command-line keys that are not keys, each message with its place
    raw = _with_overrides(raw, overrides, origins, named)
    config = PipelineConfig()
    for key, value in raw.items():
        if key not in TOP_KEYS:
            problems.append((str(key), f"unknown key '{key}' (known: {', '.join(TOP_KEYS)})"))
        elif key in SECTIONS:
            _section(getattr(config, key), key, value, problems)
        elif key == "licenses":
            config.licenses = _licenses(value, problems)
        elif key == "sources":
            config.sources = _sources(value, problems)
        else:
            config.captioner = _captioner(value, problems)
    if "sources" not in raw:
        problems.append(
            ("sources", "'sources' is missing: list at least one source, e.g. sources: [{type: synthetic}]")
        )
    splits = config.splits
    if splits.valid + splits.test + splits.unseen_species >= 1:
        problems.append(
            (
                "splits",
                "'splits' valid + test + unseen_species must be below 1 (the rest is train), got "
                f"{splits.valid} + {splits.test} + {splits.unseen_species}",
            )
        )
    if problems or named:
        messages = [f"{_origin(key, origins, name)}: {text}" for key, text in problems] + named
        raise ConfigError(
            messages[0]
            if len(messages) == 1
            else f"{len(messages)} problems in the config:\n  " + "\n  ".join(messages)
        )
    return config


def _origin(key: str, origins: dict[str, str], name: str) -> str:
    """Where ``key`` was set: its own line, else its parent's (a list item: the list), else where a key
    under it was set (the splits' sum: a fraction set on the command line), else the file."""
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in origins:
            return origins[".".join(parts[:n])]
    return next((where for k, where in origins.items() if k.startswith(key + ".")), name)


def _with_overrides(raw: dict, overrides: typing.Sequence[str], origins: dict[str, str], named: list[str]) -> dict:
    """``raw`` with each ``--section.key value`` set in it as the file would have set it (a list key's
    value split at commas), and ``origins`` saying "command line" for those keys. A key that is not one
    (or ``sources``/``captioner``, whose options depend on their type) is added to ``named``, so it is reported
    with every other mistake; only tokens that are no override at all stop the reading at once."""
    if not overrides:
        return raw
    merged = copy.deepcopy(raw)
    for dotted, text in parse_overrides(list(overrides), "--audio.clip_seconds 5"):
        top = dotted.split(".", 1)[0]
        if top in _FILE_ONLY:
            named.append(
                f"command line: '{dotted}': '{top}' is set in the config file only (its options depend on its type)"
            )
            continue
        try:
            _, key, kind = find_key(
                PipelineConfig(), dotted, "command line"
            )  # the same names and messages as train.py's
        except _BaseConfigError as e:
            named.append(str(e))
            continue
        value = command_line_value(text, kind)
        if "." in dotted:
            section = merged.get(top)
            if section is None:
                section = merged[top] = {}
            if not isinstance(section, dict):
                continue  # the file's section is not a mapping: reported as such
            section[key] = value
        else:
            merged[dotted] = value
        for known in [k for k in origins if k.startswith(dotted + ".")]:  # list items of the file's value
            del origins[known]
        origins[dotted] = "command line"
    return merged


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
        shown = converted if isinstance(value, str) and kind in (int, float) else value  # '0' from the command line: 0
        problems.append((dotted, f"{label} must be {check[1]}, got {shown!r}"))
        return False, value
    return True, converted


def _section(target, section: str, value, problems) -> None:
    """Each key of the mapping ``value`` checked and set on the section dataclass ``target``."""
    if value is None:
        return  # an empty section keeps the defaults
    known = SECTIONS[section]
    if not isinstance(value, dict):
        problems.append((section, f"'{section}' must be a mapping of {', '.join(known)}, got {describe_value(value)}"))
        return
    for key, item in value.items():
        dotted = f"{section}.{key}"
        if key not in known:
            problems.append((dotted, f"unknown key '{dotted}' (known in '{section}': {', '.join(known)})"))
            continue
        ok, converted = _value(dotted, f"'{dotted}'", item, known[key], problems)
        if ok:
            setattr(target, key, converted)


def _licenses(value, problems) -> list[str]:
    if not isinstance(value, list) or not value:
        problems.append(
            ("licenses", f"'licenses' must list the accepted licences (e.g. [cc0, cc-by]), got {describe_value(value)}")
        )
        return []
    codes = []
    for i, item in enumerate(value, start=1):
        code = normalize_license(item) if isinstance(item, str) else None
        if code is None:
            problems.append(
                (f"licenses.#{i}", f"'licenses' #{i}: unknown licence {item!r} (known: {', '.join(sorted(KNOWN))})")
            )
        else:
            codes.append(code)
    return codes


def option_names(cls) -> dict[str, object]:
    """The options a source or captioner class takes: name -> default (``inspect.Parameter.empty`` if required)."""
    return {
        n: p.default
        for n, p in inspect.signature(cls).parameters.items()
        if n not in {"base_dir", "cache_path"} and p.kind is not p.VAR_KEYWORD
    }


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


def _sources(value, problems) -> list[SourceConfig]:
    from .sources import COMMON, MODULES

    if not isinstance(value, list) or not value:
        problems.append(
            (
                "sources",
                f"'sources' must list at least one source (e.g. [{{type: synthetic}}]), got {describe_value(value)}",
            )
        )
        return []
    out = []
    for i, source in enumerate(value, start=1):
        dotted = f"sources.#{i}"
        if not isinstance(source, dict) or "type" not in source:
            problems.append(
                (
                    dotted,
                    f"source #{i} must be a mapping with a 'type' ({', '.join(MODULES)}), got {describe_value(source)}",
                )
            )
            continue
        kind = source["type"]
        if kind not in MODULES:
            problems.append(
                (f"{dotted}.type", f"source #{i}: unknown source type {kind!r} (known: {', '.join(MODULES)})")
            )
            continue
        accepted = {**option_names(source_class(kind)), **{k: None for k in COMMON - {"type"}}}
        options = {k: v for k, v in source.items() if k != "type"}
        out.append(SourceConfig(kind, _options(f"source #{i} ({kind})", dotted, options, accepted, problems)))
    return out


def _captioner(value, problems) -> CaptionerConfig:
    if not isinstance(value, dict) or value.get("type") not in CAPTIONERS:
        got = describe_value(value) if not isinstance(value, dict) else f"type {value.get('type')!r}"
        problems.append(
            ("captioner", f"'captioner' must be a mapping with a 'type' ({' or '.join(CAPTIONERS)}), got {got}")
        )
        return CaptionerConfig()
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
    return CaptionerConfig(value["type"], _options(label, "captioner", options, accepted, problems))
