"""Detections summed up as ecologists report them: per site and night (or day), per site and hour, and
through the season, as tables (CSV, and Parquet where pyarrow is installed) and plots.

In: detection rows that carry a site and a timezone-aware start time (what ``biolingual detect`` writes
for an index with deployments: columns ``site``, ``start_time``, ``label``). Out: files in a folder:

    per_night.csv    site, night (the date the night began: times before noon count to the evening before),
                     label, detections, first and last detection (clock time)
    per_day.csv      the same for days (local dates)
    per_hour.csv     site, label, hour of the day (0-23, local time), detections
    per_date.csv     label, date, detections (all sites): the season's curve
    activity.png     a heat map per site: hour of day across, labels down, detections in each cell
    season.png       detections per date through the season, one line per label

Hours and dates are local to each recording's own timezone (the recorder's clock or its deployment's),
which is what "at dawn" means at each site. Rows without a site or a start time cannot be placed: they
are counted and reported, never guessed.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

from ..atomic import atomic_write, atomic_write_text
from ..extras import require

NIGHT_STARTS_AT = 12  # a night runs from noon to noon, so a dusk-to-dawn survey is one night


def read_detections(path: str | Path) -> list[dict]:
    """Rows of a detections CSV as dicts, ``start_time`` parsed (None where it is empty)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        text = (row.get("start_time") or "").strip()
        row["start_time"] = dt.datetime.fromisoformat(text) if text else None
    return rows


def night_of(moment: dt.datetime) -> dt.date:
    """The date the night began (local): 03:00 on the 13th belongs to the night of the 12th."""
    return (moment - dt.timedelta(hours=NIGHT_STARTS_AT)).date()


def summarise(rows: Iterable[dict]) -> dict:
    """The tables (lists of dicts) of the module docstring, and ``unplaced``: rows lacking a site or time."""
    nights, days = defaultdict(list), defaultdict(list)
    hours, dates = Counter(), Counter()
    unplaced = 0
    for row in rows:
        site, moment, label = (
            (row.get("site") or "").strip(),
            row.get("start_time"),
            row.get("label") or row.get("query") or "",
        )
        if not site or moment is None or moment.tzinfo is None:
            unplaced += 1
            continue
        nights[(site, night_of(moment), label)].append(moment)
        days[(site, moment.date(), label)].append(moment)
        hours[(site, label, moment.hour)] += 1
        dates[(label, moment.date())] += 1

    def spans(groups: dict, key_name: str) -> list[dict]:
        return [
            {
                "site": site,
                key_name: when.isoformat(),
                "label": label,
                "detections": len(times),
                "first": min(times).isoformat(),
                "last": max(times).isoformat(),
            }
            for (site, when, label), times in sorted(groups.items())
        ]

    return {
        "per_night": spans(nights, "night"),
        "per_day": spans(days, "date"),
        "per_hour": [
            {"site": s, "label": label, "hour": h, "detections": n} for (s, label, h), n in sorted(hours.items())
        ],
        "per_date": [
            {"label": label, "date": d.isoformat(), "detections": n} for (label, d), n in sorted(dates.items())
        ],
        "unplaced": unplaced,
    }


def _write_csv(rows: list[dict], path: Path, columns: list[str]) -> None:
    lines = [",".join(columns)]
    for row in rows:
        lines.append(",".join(_cell(row[c]) for c in columns))
    atomic_write_text(path, "\n".join(lines) + "\n")


def _cell(value) -> str:
    text = str(value)
    return '"' + text.replace('"', '""') + '"' if any(ch in text for ch in ',"\n') else text


COLUMNS = {
    "per_night": ["site", "night", "label", "detections", "first", "last"],
    "per_day": ["site", "date", "label", "detections", "first", "last"],
    "per_hour": ["site", "label", "hour", "detections"],
    "per_date": ["label", "date", "detections"],
}


def write_summary(summary: dict, out: str | Path, parquet: bool = False, plots: bool = True) -> list[Path]:
    """Write the tables as CSV (and Parquet with ``parquet``: needs pyarrow, the ``eval`` extra) and the two
    plots (``plots``: matplotlib, the ``eval`` extra) into ``out``; the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, columns in COLUMNS.items():
        _write_csv(summary[name], out / f"{name}.csv", columns)
        written.append(out / f"{name}.csv")
    if parquet:
        pa = require("pyarrow", "eval", "Parquet summaries")
        import pyarrow.parquet as pq

        for name, columns in COLUMNS.items():
            table = pa.table({c: [row[c] for row in summary[name]] for c in columns})
            written.append(atomic_write(out / f"{name}.parquet", lambda f, t=table: pq.write_table(t, f)))
    if plots and summary["per_hour"]:
        written += _plots(summary, out)
    return written


def _plots(summary: dict, out: Path) -> list[Path]:
    matplotlib = require("matplotlib", "eval", "summary plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    sites = sorted({r["site"] for r in summary["per_hour"]})
    labels = sorted({r["label"] for r in summary["per_hour"]})
    fig, axes = plt.subplots(len(sites), 1, figsize=(10, 1.2 + 0.45 * len(labels) * len(sites)), squeeze=False)
    top = max(r["detections"] for r in summary["per_hour"])
    for ax, site in zip(axes[:, 0], sites):
        grid = np.zeros((len(labels), 24))
        for r in summary["per_hour"]:
            if r["site"] == site:
                grid[labels.index(r["label"]), r["hour"]] = r["detections"]
        image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=top)
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xticks(range(0, 24, 2), [f"{h:02d}" for h in range(0, 24, 2)])
        ax.set_title(f"{site}: detections per hour of the day (local time)", fontsize=10)
    fig.colorbar(image, ax=axes[:, 0].tolist(), label="detections")
    activity = atomic_write(out / "activity.png", lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(10, 3.5))
    for label in sorted({r["label"] for r in summary["per_date"]}):
        points = [
            (dt.date.fromisoformat(r["date"]), r["detections"]) for r in summary["per_date"] if r["label"] == label
        ]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    ax.set_ylabel("detections per day (all sites)")
    ax.set_title("Detections through the season")
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    season = atomic_write(out / "season.png", lambda f: fig.savefig(f, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)
    return [activity, season]
