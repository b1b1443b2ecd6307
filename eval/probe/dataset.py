"""A probing dataset: a CSV of ``path,label[,split]`` rows, checked up front, with its train/valid/test split.

Without a split column the split follows the paper's code (idiap/ssl-human-animal's data modules): a random
70/20/10 over all items, train ``int(0.7 N)``, valid ``int(0.2 N)``, test the rest, drawn as
``torch.utils.data.random_split`` draws it with a generator seeded 42. ``split_rule="stratified"`` splits
class by class instead.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

SPLITS = ("train", "valid", "test")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "valid": "valid",
    "val": "valid",
    "validation": "valid",
    "dev": "valid",
    "test": "test",
    "eval": "test",
}
DEFAULT_FRACTIONS = (0.7, 0.2, 0.1)
SPLIT_SEED = 42
SPLIT_RULES = ("random", "stratified")


class ProbeDataError(ValueError):
    """A probing CSV that cannot be used as given (the message names the file and row)."""


@dataclass
class ProbeDataset:
    name: str
    paths: list[str]
    labels: list[str]  # class names, sorted; ``targets`` index into them
    targets: np.ndarray
    split: np.ndarray  # "train" / "valid" / "test" per row
    split_source: str = "csv"
    csv_path: str = ""
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)

    def counts(self) -> dict[str, int]:
        return {s: int((self.split == s).sum()) for s in SPLITS}


def random_split(n: int, fractions=DEFAULT_FRACTIONS, seed: int = SPLIT_SEED) -> np.ndarray:
    """The paper's split of ``n`` items: sizes ``int(f_train * n)``, ``int(f_valid * n)`` and the rest for test,
    over one permutation ``torch.randperm(n)`` from a generator seeded ``seed`` (what
    ``torch.utils.data.random_split(range(n), sizes, generator)`` assigns). Classes are not balanced: a rare
    class may miss a split."""
    n_train, n_valid = int(fractions[0] * n), int(fractions[1] * n)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    split = np.empty(n, dtype=object)
    split[order[:n_train]] = "train"
    split[order[n_train : n_train + n_valid]] = "valid"
    split[order[n_train + n_valid :]] = "test"
    return split


def stratified_split(targets: np.ndarray, fractions=DEFAULT_FRACTIONS, seed: int = SPLIT_SEED) -> np.ndarray:
    """Assign each item to train/valid/test, class by class, in the given proportions.

    Written by hand rather than with scikit-learn's splitters because those refuse classes with fewer
    than two items; here a class of one goes to train, a class of two to train and valid.
    """
    rng = np.random.default_rng(seed)
    split = np.empty(len(targets), dtype=object)
    for c in np.unique(targets):
        idx = rng.permutation(np.flatnonzero(targets == c))
        n = len(idx)
        n_test = int(round(fractions[2] * n)) if n >= 3 else 0
        n_valid = int(round(fractions[1] * n)) if n >= 2 else 0
        n_valid = max(n_valid, 1) if n >= 2 else 0
        n_test = max(n_test, 1) if n >= 3 else 0
        split[idx[: n - n_valid - n_test]] = "train"
        split[idx[n - n_valid - n_test : n - n_test]] = "valid"
        split[idx[n - n_test :]] = "test"
    return split


def read_csv(
    path: str | os.PathLike,
    fractions=DEFAULT_FRACTIONS,
    seed: int = SPLIT_SEED,
    root: str | os.PathLike | None = None,
    split_rule: str = "random",
) -> ProbeDataset:
    """Read ``path,label[,split]`` rows. A header row naming ``path`` and ``label`` (in any columns, as in BEANS'
    annotation CSVs, which start with an unnamed index) is optional. Relative audio paths are resolved against
    ``root`` (default: the CSV's folder). Every audio file must exist: the error lists the missing ones with
    their row numbers. Without a split column, ``split_rule`` ("random", the paper's, or "stratified") splits
    the rows in ``fractions`` with ``seed``."""
    if split_rule not in SPLIT_RULES:
        raise ProbeDataError(f"split rule must be one of {', '.join(SPLIT_RULES)}, got '{split_rule}'")
    path = Path(path)
    base = Path(root) if root is not None else path.parent
    if not path.is_file():
        raise ProbeDataError(f"{path}: no such CSV file")
    with open(path, newline="") as f:
        rows = [(i + 1, r) for i, r in enumerate(csv.reader(f)) if r and any(c.strip() for c in r)]
    if rows and {"path", "label"} <= {c.strip().lower() for c in rows[0][1]}:
        header = [c.strip().lower() for c in rows[0][1]]
        rows = rows[1:]
    else:
        header = ["path", "label", "split"][: len(rows[0][1])] if rows else []
    if not rows:
        raise ProbeDataError(f"{path}: no rows (expected path,label[,split])")
    col = {name: header.index(name) for name in ("path", "label", "split") if name in header}
    if "path" not in col or "label" not in col:
        raise ProbeDataError(f"{path}: the header must name 'path' and 'label' columns, got {header}")

    paths, labels, splits, missing = [], [], [], []
    for line, row in rows:
        if len(row) <= max(col["path"], col["label"]):
            raise ProbeDataError(f"{path}, row {line}: expected path,label[,split], got {row}")
        audio = Path(row[col["path"]].strip())
        audio = audio if audio.is_absolute() else base / audio
        label = row[col["label"]].strip()
        if not label:
            raise ProbeDataError(f"{path}, row {line}: empty label for {audio}")
        if not audio.is_file():
            missing.append(f"row {line}: {audio}")
        paths.append(str(audio))
        labels.append(label)
        if "split" in col:
            value = row[col["split"]].strip().lower() if len(row) > col["split"] else ""
            if value not in SPLIT_ALIASES:
                raise ProbeDataError(f"{path}, row {line}: split must be one of train/valid/test, got '{value}'")
            splits.append(SPLIT_ALIASES[value])
    if missing:
        more = f" (and {len(missing) - 10} more)" if len(missing) > 10 else ""
        raise ProbeDataError(f"{path}: {len(missing)} audio file(s) not found{more}:\n  " + "\n  ".join(missing[:10]))

    classes = sorted(set(labels))
    if len(classes) < 2:
        raise ProbeDataError(f"{path}: a probe needs at least two classes, found {classes}")
    targets = np.array([classes.index(x) for x in labels], dtype=np.int64)
    if splits:
        split, source = np.array(splits, dtype=object), "csv"
    else:
        split = (
            random_split(len(targets), fractions, seed)
            if split_rule == "random"
            else stratified_split(targets, fractions, seed)
        )
        source = f"{split_rule} {'/'.join(str(round(100 * f)) for f in fractions)}, seed {seed}"
    ds = ProbeDataset(path.stem, paths, classes, targets, split, source, str(path))
    for s in ("train", "valid"):
        if not (ds.split == s).any():
            raise ProbeDataError(f"{path}: the {s} split is empty")
    if not (ds.split == "test").any():
        raise ProbeDataError(f"{path}: the test split is empty")
    absent = [classes[c] for c in np.unique(targets) if not ((targets == c) & (split == "train")).any()]
    if absent:
        ds.notes.append(f"classes without training items: {', '.join(absent)}")
    return ds
