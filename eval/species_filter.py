"""Which of a benchmark's classes are on a species list of a place and season, shared by the runners that take
``--species-near`` / ``--species-list`` (eval.zero_shot, eval.birdset, eval.beans_zero).

In: a :class:`~biolingual.species_lists.SpeciesList`, the classes, and for each class the names it goes by (its
label, a prompt, an eBird code's common and scientific names). Out: which list name each kept class matched
(:func:`match_classes`), the report a runner writes under ``species_list`` in its JSON
(:func:`species_report`) and the line it prints and puts in ``results.md`` (:func:`species_line`). What a
runner then does with the samples of the dropped classes (left out for single-label data, labels dropped for
multi-label data) is its own, and it says so in the counts it passes.
"""

from __future__ import annotations

from collections.abc import Sequence

from biolingual.species_lists import SpeciesList

from .types import TaskDataError


class OffListError(TaskDataError):
    """No class of the data is on the species list: there would be nothing to evaluate (a task runner records
    the task as failed and goes on with the others, as for any unusable task data)."""


def match_classes(species: SpeciesList, classes: Sequence[str], aliases: Sequence[Sequence[str]]) -> dict[str, str]:
    """``{class: list name}`` for the classes on ``species``: a class is on it when any of its ``aliases`` (one
    sequence per class, e.g. its label and its prompt) is a listed common or scientific name
    (:meth:`SpeciesList.match`: case and ``_`` aside). Raises :class:`OffListError` when none is, naming the
    data's classes, since an empty benchmark is a mistaken list or place rather than a result."""
    matched = {}
    for cls, names in zip(classes, aliases):
        name = next((m for m in (species.match(n) for n in names if n) if m), None)
        if name:
            matched[cls] = name
    if not matched:
        shown = ", ".join(classes[:8]) + (" ..." if len(classes) > 8 else "")
        raise OffListError(
            f"no class of the data is on the species list ({species.describe()}); the data's classes are "
            f"{shown}, compared with the list's common and scientific names"
        )
    return matched


def species_report(
    species: SpeciesList, classes: Sequence[str], matched: dict[str, str], samples_dropped: int, **counts: int
) -> dict:
    """The ``species_list`` entry of a runner's JSON: the list and its query, the classes kept and left out, the
    samples left out, which list name each kept class matched, and any further ``counts`` a runner keeps (e.g.
    ``samples_without_listed_label`` for multi-label windows that stay in without a label)."""
    return {
        "list": species.describe(),
        "species": list_key(species),
        "source": species.source,
        "query": species.query,
        "file": "species.csv",
        "classes": len(classes),
        "classes_kept": len(matched),
        "classes_dropped": [c for c in classes if c not in matched],
        "samples_dropped": samples_dropped,
        "matched": matched,
        **counts,
    }


def list_key(species: SpeciesList | None) -> list | None:
    """What a result computed with ``species`` depends on: every listed name with its scientific name, sorted
    (None without a list). A runner that skips results already written compares it, so a run with another list
    computes them again rather than reporting the earlier list's."""
    if species is None:
        return None
    return sorted([name, species.scientific.get(name, "")] for name in species.names)


def done_with(result: dict, species: SpeciesList | None) -> bool:
    """Whether ``result`` (a runner's JSON) was computed with the same species list (or none) as ``species``."""
    return (result.get("species_list") or {}).get("species") == list_key(species)


def species_line(report: dict, unit: str = "clip") -> str:
    """What a run says about the list: classes kept of all, the classes (and samples, when any were) left out,
    and the samples kept without a listed label when the runner counted them."""
    dropped, n = report["classes_dropped"], report["samples_dropped"]
    plural = "" if len(dropped) == 1 else "es"
    samples = f" ({n} {unit}{'' if n == 1 else 's'})" if n or "samples_without_listed_label" not in report else ""
    line = f"{report['classes_kept']} of {report['classes']} classes on the species list; {len(dropped)} class{plural}"
    line += f"{samples} off the list left out"
    line += f": {', '.join(dropped[:10])}{' ...' if len(dropped) > 10 else ''}" if dropped else ""
    unlabelled = report.get("samples_without_listed_label")
    if unlabelled is not None:
        line += f"; {unlabelled} {unit}{'' if unlabelled == 1 else 's'} left with no listed label"
    return line
