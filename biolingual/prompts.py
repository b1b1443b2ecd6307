"""Prompts: the template a label is put in, the background texts of detection, and the checks every
label list and template goes through (the API and the command line follow one rule). Standard library
only, so the command line can check a mistake before anything heavy loads."""

from __future__ import annotations

import string
from collections.abc import Sequence

DEFAULT_TEMPLATE = "The sound of a {}"
DEFAULT_BACKGROUND = ("background noise",)  # detection's texts for "none of the labels" (used as written)


def check_labels(labels: Sequence[str]) -> list[str]:
    """``labels`` as a list, or a ValueError naming what is wrong: none given, one that is not a string, is
    blank, or is given more than once (compared without surrounding spaces). Repeats are refused rather than
    dropped: a softmax over ``["Owl", "Owl", "Loon"]`` would split Owl's probability between its copies, and
    dropping one would shift the columns the caller expects. Used by the API (zero-shot, predict, detect)
    and, through :func:`biolingual.cli_options.read_labels`, by the command line, so both follow one rule."""
    labels = [labels] if isinstance(labels, str) else list(labels)
    if not labels:
        raise ValueError("labels is empty: give at least one label")
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):
        if not isinstance(label, str):
            raise ValueError(f"label #{i} is a {type(label).__name__}, not a string")
        if not label.strip():
            raise ValueError(f"label #{i} is blank ({label!r}): give each label as text, e.g. 'Barred Owl'")
        if label.strip() in seen:
            raise ValueError(
                f"the label '{label.strip()}' is given more than once (#{seen[label.strip()]} and #{i}): "
                "give each label once"
            )
        seen[label.strip()] = i
    return labels


def check_template(template: str) -> str:
    """``template`` if it holds exactly one ``{}`` (where the label goes) and no other field; else a
    ValueError that says so. ``str.format`` would raise IndexError for two ``{}``, KeyError for ``{name}``
    and ignore a template without any (every label the same prompt)."""
    if not isinstance(template, str):
        raise ValueError(f"a template is a string with '{{}}' where the label goes, got a {type(template).__name__}")
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
    except ValueError as e:  # a lone '{' or '}'
        raise ValueError(
            f"template {template!r} cannot be filled in ({e}); write a literal brace as '{{{{' or '}}}}'"
        ) from None
    if len(fields) != 1 or fields[0] != ("", "", None):
        raise ValueError(
            f"template {template!r} must hold '{{}}' exactly once, where the label goes, and no other "
            f"'{{...}}' field (it has {len(fields)}), e.g. 'The sound of a {{}}'"
        )
    return template
