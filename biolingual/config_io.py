"""Reading YAML configuration files and their values, for the two YAML-driven tools (training and the
data pipeline): one strict YAML reader (duplicate keys refused, line numbers kept) and one value
converter, so both name the file, line and key the same way.

In: a path, or a value read from YAML or the command line. Out: the parsed tree and the line of each
dotted key, or the value as the wanted type; :class:`ConfigError` (or ValueError from :func:`typed`)
saying what is wrong.
"""
from __future__ import annotations

import math
from pathlib import Path

import yaml


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
    list anywhere), lenient about spelling: numeric strings are numbers (PyYAML reads ``1e-3``
    as a string), a whole float is an int, a number for a text key is its text.
    """
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

class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML silently keeps the last,
    so a second ``train:`` section would drop the first)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:  # as written: keys brought in by a '<<' merge may be overridden
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                    if key_node.value in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"'{key_node.value}' is given twice in the same mapping", key_node.start_mark)
                    seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


def key_lines(node, prefix: str = "", lines: dict | None = None) -> dict[str, int]:
    """Dotted key -> 1-based line where it is written; list items are ``#1``, ``#2``... (the data
    pipeline's config has lists of sources)."""
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


def read_yaml(path: Path) -> tuple[object, dict[str, int]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start}); a config is a YAML file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config file: {e.strerror or e}") from None
    loader = _Loader(text)
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
