"""Hits and detections as a terminal table, CSV, Raven Pro selection table, Audacity labels and audio clips."""
from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

from ..audio import load_audio
from .query import Hit
from .stream import read_segment

RAVEN_COLUMNS = ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)", "High Freq (Hz)",
                 "Begin Path", "Begin File", "File Offset (s)", "Annotation", "Score", "Rank"]


@lru_cache(maxsize=4096)
def _nyquist(path: str) -> float:
    try:
        return sf.info(path).samplerate / 2
    except Exception:  # not a libsndfile format: the model's 48 kHz is what was analysed
        return 24_000.0


def _ranks(hits: Sequence[Hit]) -> list[int]:
    """Rank of each hit within its own query (hits come best first per query)."""
    seen: dict[str, int] = {}
    out = []
    for h in hits:
        seen[h.query] = seen.get(h.query, 0) + 1
        out.append(seen[h.query])
    return out


def format_table(hits: Sequence[Hit], score_name: str = "score") -> str:
    if not hits:
        return "no hits"
    width = max(len(h.file) for h in hits)
    qwidth = min(40, max(len(h.query) for h in hits))
    lines = [f"{'rank':>4}  {'query':<{qwidth}}  {'file':<{width}}  {'start (s)':>9}  {'end (s)':>9}  {score_name}"]
    for rank, h in zip(_ranks(hits), hits):
        lines.append(f"{rank:>4}  {h.query[:qwidth]:<{qwidth}}  {h.file:<{width}}  {h.start:>9.2f}  {h.end:>9.2f}  {h.score:.4f}")
    return "\n".join(lines)


def write_csv(hits: Sequence[Hit], path: str | os.PathLike, score_name: str = "score") -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rank", "query", "file", "start_s", "end_s", score_name])
        w.writerows([rank, h.query, h.file, f"{h.start:.3f}", f"{h.end:.3f}", f"{h.score:.6f}"] for rank, h in zip(_ranks(hits), hits))


def write_raven(hits: Sequence[Hit], path: str | os.PathLike) -> None:
    """A Raven Pro selection table: tab-separated, one selection per hit, times within its file,
    frequency box spanning the whole band (0 Hz to the file's Nyquist). The query or label is in the
    ``Annotation`` column, the one Raven users and readers such as crowsetta and OpenSoundscape take the
    label from by default."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(RAVEN_COLUMNS)
        for selection, (rank, h) in enumerate(zip(_ranks(hits), hits), 1):
            w.writerow([selection, "Spectrogram 1", 1, f"{h.start:.3f}", f"{h.end:.3f}", "0.0", f"{_nyquist(h.file):.1f}",
                        h.file, os.path.basename(h.file), f"{h.start:.3f}", h.query, f"{h.score:.6f}", rank])


def read_raven(path: str | os.PathLike) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _per_file_names(files: Sequence[str]) -> dict[str, str]:
    """A distinct file stem per recording (recordings in different folders may share a name)."""
    names, seen = {}, set()
    for f in dict.fromkeys(files):
        stem = Path(f).stem
        if stem in seen:
            stem = f"{stem}_{hashlib.sha1(f.encode()).hexdigest()[:8]}"
        seen.add(stem)
        names[f] = stem
    return names


def write_audacity(hits: Sequence[Hit], folder: str | os.PathLike) -> list[Path]:
    """One Audacity label file per recording (labels belong to one track): ``folder/<stem>.txt``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = _per_file_names([h.file for h in hits])
    written = []
    for f, stem in names.items():
        out = folder / f"{stem}.txt"
        rows = sorted((h for h in hits if h.file == f), key=lambda h: h.start)
        out.write_text("".join(f"{h.start:.6f}\t{h.end:.6f}\t{h.query} ({h.score:.3f})\n" for h in rows))
        written.append(out)
    return written


def export_clips(hits: Sequence[Hit], folder: str | os.PathLike, pad_s: float = 0.0) -> list[Path]:
    """The audio of each hit as a wav file at the recording's own rate: ``folder/<rank>_<stem>_<start>-<end>.wav``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = _per_file_names([h.file for h in hits])
    written = []
    for rank, h in enumerate(hits, 1):  # numbered across queries: file names stay unique
        start, end = max(0.0, h.start - pad_s), h.end + pad_s
        try:
            data, rate = read_segment(h.file, start, end)
        except (sf.LibsndfileError, RuntimeError, TypeError):  # not seekable by libsndfile: decode whole (small files)
            rate = 48_000
            data = load_audio(h.file, rate)[int(start * rate) : int(end * rate), None]
        out = folder / f"{rank:03d}_{names[h.file]}_{h.start:.1f}-{h.end:.1f}.wav"
        sf.write(out, np.asarray(data), rate)
        written.append(out)
    return written
