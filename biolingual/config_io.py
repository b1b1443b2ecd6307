"""Reading YAML configuration files and their values, for the two YAML-driven tools (training and the
data pipeline): one strict YAML reader (duplicate keys refused, line numbers kept), one value
converter, and one reading of ``--section.key value`` command-line overrides onto a config made of
dataclasses, so both tools name the file, line, command line and key the same way.

In: a path, a value read from YAML or the command line, or the command line's override tokens and the
config dataclass they set. Out: the parsed tree and the line of each dotted key, the value as the
wanted type, or the (dotted key, text) pairs and the field each names; :class:`ConfigError` (or
ValueError from :func:`typed`) saying what is wrong. Nothing here exits: the tools' ``main()`` turns a
ConfigError into ``error: ...`` and an exit status.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from pathlib import Path

from .extras import require


class ConfigError(ValueError):
    """A mistake in a configuration; the message names the file (and line) or the command line, and the key."""


# ---- reading values -------------------------------------------------------------------------------

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_KIND_NAMES = {int: "a whole number", float: "a number", bool: "true or false", str: "text"}


def describe_value(value) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    if value is None:
        return "nothing"
    if isinstance(value, str):
        return f"the text {value!r}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    return type(value).__name__


def typed(value, kind):
    """``value`` (from YAML, or a string from the command line) as ``kind``; ValueError saying why not.

    Strict where a type mix-up hides a mistake (a boolean for a number, a fraction for a count, a
    list where one value is wanted, one value where a list is), lenient about spelling: numeric strings are numbers
    (PyYAML reads ``1e-3`` as a string), a whole float is an int, a number for a text key is its text.
    """
    if typing.get_origin(kind) is list:  # lists as lists: a YAML list, each item of the list's kind
        if not isinstance(value, list):
            raise ValueError(f"expected a list, got {describe_value(value)}")
        (item_kind,) = typing.get_args(kind)
        items = []
        for i, item in enumerate(value, start=1):
            try:
                items.append(typed(item, item_kind))
            except ValueError as e:
                raise ValueError(f"item #{i}: {e}") from None
        return items
    expected = _KIND_NAMES[kind]
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(f"expected {expected}, got {describe_value(value)}")
    if value is None and kind is str:
        return ""
    if isinstance(value, bool):
        hint = " (YAML reads unquoted yes/no/on/off/true/false as booleans; quote the value)" if kind is str else ""
        raise ValueError(f"expected {expected}, got a boolean{hint}")
    if kind is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)):
            return str(value)
        raise ValueError(f"expected {expected}, got {describe_value(value)}")
    number = value
    if isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            try:
                number = float(value.strip())
            except ValueError:
                raise ValueError(f"expected {expected}") from None
    elif not isinstance(value, (int, float)):
        raise ValueError(f"expected {expected}, got {describe_value(value)}")
    if kind is float:
        return float(number)
    if isinstance(number, float):
        if not (math.isfinite(number) and number.is_integer()):
            raise ValueError(f"expected {expected}")
        return int(number)
    return number


# ---- the YAML file --------------------------------------------------------------------------------


def _yaml(extra: str):
    """PyYAML, or MissingExtraError naming ``extra`` (the tool's: train or pipeline); the core never needs it."""
    return require("yaml", extra, "reading YAML config files")


@functools.cache
def _loader_class():
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML silently keeps the last,
    so a second ``train:`` section would drop the first). Made on first use, once PyYAML is imported."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                seen = set()
                for key_node, _ in node.value:  # as written: keys brought in by a '<<' merge may be overridden
                    if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                        if key_node.value in seen:
                            raise yaml.constructor.ConstructorError(
                                None,
                                None,
                                f"'{key_node.value}' is given twice in the same mapping",
                                key_node.start_mark,
                            )
                        seen.add(key_node.value)
            return super().construct_mapping(node, deep=deep)

    return Loader


def key_lines(node, prefix: str = "", lines: dict | None = None) -> dict[str, int]:
    """Dotted key -> 1-based line where it is written; list items are ``#1``, ``#2``... (the data
    pipeline's config has lists of sources)."""
    import yaml  # a node from read_yaml: PyYAML is there

    lines = {} if lines is None else lines
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                name = f"{prefix}{key_node.value}"
                lines[name] = key_node.start_mark.line + 1
                key_lines(value_node, f"{name}.", lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value, start=1):
            lines[f"{prefix}#{i}"] = item.start_mark.line + 1
            key_lines(item, f"{prefix}#{i}.", lines)
    return lines


def read_yaml(path: Path, extra: str) -> tuple[object, dict[str, int]]:
    """The YAML file at ``path`` -> (its tree, dotted key -> line); ConfigError naming the file (and
    line and column) for unreadable text or bad YAML. ``extra`` is the one a missing PyYAML names."""
    yaml = _yaml(extra)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start}); a config is a YAML file"
        ) from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config file: {e.strerror or e}") from None
    loader = _loader_class()(text)
    try:
        node = loader.get_single_node()
        tree = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(path)
        context = f" ({e.context})" if e.context else ""
        raise ConfigError(f"{where}: could not parse YAML: {e.problem}{context}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: could not parse YAML: {e}") from None
    finally:
        loader.dispose()
    return tree, key_lines(node) if node is not None else {}


# ---- dataclass configs: a key by its dotted name, and the command line -----------------------------


def kind_name(kind) -> str:
    """``int``, ``float``, ``list[str]``...: how an error message names a key's type."""
    return kind.__name__ if isinstance(kind, type) else str(kind)


def is_section(target, name: str) -> bool:
    """Whether ``name`` is a field of the dataclass ``target`` that is itself a dataclass (a section)."""
    return name in {f.name for f in dataclasses.fields(target)} and dataclasses.is_dataclass(getattr(target, name))


def section_names(config) -> str:
    """The sections of a config dataclass, comma-separated, for messages."""
    return ", ".join(f.name for f in dataclasses.fields(config) if is_section(config, f.name))


def find_key(config, dotted: str, where: str) -> tuple[object, str, object]:
    """(the dataclass holding ``dotted``, its field name, its type); ConfigError, prefixed with ``where``,
    for a name that is not a key: an unknown section or key, a key used as a section or the reverse."""
    parts = dotted.split(".")
    target = config
    for i, part in enumerate(parts[:-1]):
        if not is_section(target, part):
            named = ".".join(parts[: i + 1])
            if part in {f.name for f in dataclasses.fields(target)}:
                raise ConfigError(f"{where}: '{named}' is a key, not a section, in '{dotted}'")
            raise ConfigError(
                f"{where}: unknown config section '{named}' in '{dotted}' (sections: {section_names(config)})"
            )
        target = getattr(target, part)
    key = parts[-1]
    names = [f.name for f in dataclasses.fields(target)]
    if key not in names:
        raise ConfigError(f"{where}: unknown config key '{dotted}' (known here: {', '.join(names)})")
    if is_section(target, key):
        raise ConfigError(f"{where}: '{dotted}' is a section, not a key; set its keys, e.g. --{dotted}.KEY VALUE")
    return target, key, typing.get_type_hints(type(target))[key]


def command_line_value(text: str, kind):
    """A command-line value as YAML would have given it: a list key takes comma-separated items
    (``cc0,cc-by``, or ``[cc0, cc-by]``); any other key takes the text, which :func:`typed` converts."""
    if typing.get_origin(kind) is not list:
        return text
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return [item.strip() for item in text.split(",") if item.strip()]


def set_key(config, dotted: str, value, where: str) -> None:
    """Set the key ``dotted`` of the dataclass ``config`` to ``value`` converted to its type; ConfigError
    prefixed with ``where`` ("FILE, line N" or "command line") for an unknown key or a bad value."""
    target, key, kind = find_key(config, dotted, where)
    try:
        setattr(target, key, typed(value, kind))
    except ValueError as e:
        raise ConfigError(f"{where}: bad value {value!r} for '{dotted}' ({kind_name(kind)}): {e}") from None


def parse_overrides(tokens: list[str], example: str) -> list[tuple[str, str]]:
    """``--section.key value`` and ``--section.key=value`` tokens -> [(dotted key, text)], in order.

    ``example`` (e.g. ``--train.lr 3e-4``) is shown when a token is not an override. Values may look
    like options (``--train.seed -3``); a key followed by another ``--key``, or by nothing, has no value.
    """
    pairs = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or token == "--":
            raise ConfigError(f"command line: unexpected argument {token!r}; overrides look like {example}")
        if "=" in token:
            dotted, value = token[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(tokens) or tokens[i + 1].startswith("--"):
                raise ConfigError(f"command line: {token} needs a value")
            dotted, value = token[2:], tokens[i + 1]
            i += 2
        pairs.append((dotted, value))
    return pairs
