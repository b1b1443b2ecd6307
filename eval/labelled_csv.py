"""The ``path,label`` CSV an evaluation reads: one audio file and its label per row, under a header row.

In: the CSV's path. Out: its rows as ``(row number, {column: value})`` (:func:`read_rows`), or for zero-shot
the usable audio paths and labels plus a reason for every skipped row (:func:`read_labelled_csv`). A file
that cannot be used at all (missing, not text, without the columns) raises one clear error naming it.
"""

from __future__ import annotations

import csv
from pathlib import Path

from .runtime import InputError

COLUMNS = ("path", "label")


class LabelledDataError(InputError):
    """The evaluation data cannot be used at all (no file, no usable row)."""


def read_rows(path: Path, error: type[Exception] = LabelledDataError) -> list[tuple[int, dict[str, str]]]:
    """``(row number, row)`` for every data row of the ``path,label`` CSV ``path`` (row 1 is the header; other
    columns, such as BEANS' unnamed index, are kept). Raises ``error`` when the file is missing, is not a
    text CSV or its header lacks a ``path`` or ``label`` column."""
    if not path.is_file():
        raise error(f"data file '{path}' not found; give a CSV with the columns path,label")
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header, rows = reader.fieldnames, list(reader)
    except (UnicodeDecodeError, csv.Error) as e:
        raise error(f"'{path}' is not a readable CSV file ({e}); give a text CSV with the columns path,label") from None
    if set(COLUMNS) - set(header or []):
        raise error(
            f"'{path}': needs a header row with the columns path,label (audio file, its label); its header is {header}"
        )
    return list(enumerate(rows, start=2))


def read_labelled_csv(path: Path) -> tuple[list[str], list[str], list[str]]:
    """(audio paths, labels, problems) from a ``path,label`` CSV; paths relative to the CSV's folder or the cwd.
    A row whose label is empty or whose audio file does not exist is a problem (named by file and row) and
    skipped; a file that is missing, not a CSV, lacks those columns or has no usable row raises LabelledDataError."""
    paths, labels, problems = [], [], []
    for row_no, row in read_rows(path):
        audio, label = (row["path"] or "").strip(), (row["label"] or "").strip()
        found = next((p for p in (path.parent / audio, Path(audio)) if audio and p.is_file()), None)
        if not label:
            problems.append(f"'{path}' row {row_no}: empty label; row skipped")
        elif found is None:
            problems.append(f"'{path}' row {row_no}: audio file '{audio}' not found; row skipped")
        else:
            paths.append(str(found))
            labels.append(label)
    if not paths:
        raise LabelledDataError(f"'{path}' has no usable row" + (f"; first problem: {problems[0]}" if problems else ""))
    return paths, labels, problems
