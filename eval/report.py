"""Writing results: JSON (atomically), markdown and CSV tables, the confusion-matrix plot."""

from __future__ import annotations

import csv
import json
import os

import numpy as np

from biolingual.atomic import atomic_write_text
from biolingual.extras import require


def write_json(path: str | os.PathLike, data: dict) -> None:
    """Write to a temporary file and rename, so a crash never leaves a half-written result."""
    atomic_write_text(path, json.dumps(data, indent=2, default=float) + "\n")


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_csv(path: str | os.PathLike, header: list[str], rows: list[list[object]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def fmt(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend (no display needed), or MissingExtraError
    naming the ``eval`` extra."""
    require("matplotlib", "eval", "plotting results").use("Agg")
    return require("matplotlib.pyplot", "eval", "plotting results")


def plot_confusion(matrix: np.ndarray, labels: list[str], path: str | os.PathLike, title: str = "") -> None:
    """A row-normalised confusion matrix (rows: true class, columns: predicted) as a PNG."""
    plt = pyplot()

    n = len(labels)
    rows = matrix.sum(1, keepdims=True)
    norm = np.divide(matrix, rows, out=np.zeros_like(matrix, dtype=float), where=rows > 0)
    size = min(4 + 0.35 * n, 40)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), labels, rotation=90, fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(
                        j,
                        i,
                        int(matrix[i, j]),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black",
                    )
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
