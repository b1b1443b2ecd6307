"""Hits and detections as a terminal table, CSV, Parquet, Kaleidoscope CSV, Raven Pro selection tables, Audacity
labels and audio clips.

In: a list of :class:`~biolingual.search.query.Hit` (file, start and end seconds within the file, score, query
or label) and, for the Raven tables, the recordings of the sequence (default: those with hits). Out:

- :func:`write_csv` / :func:`write_parquet`: one row per hit, ``rank, query, file, start_s, end_s, <score>``
  where ``<score>`` is named for what it is (``cosine`` for search, ``probability`` for detect);
- :func:`write_raven`: one selection table over all recordings, following Raven's file-sequence convention
  (recordings in path order; ``Begin Time (s)`` in sequence time, ``File Offset (s)`` within ``Begin File``);
- :func:`write_raven_per_file`: one table per recording, ``<stem>.BioLingual.selection.table.txt`` as BirdNET
  names its own (times within the file), the form crowsetta and OpenSoundscape read with the audio file;
- :func:`write_kaleidoscope`: BirdNET's ``kaleidoscope`` columns (INDIR, FOLDER, IN FILE, OFFSET, DURATION ...);
- :func:`write_audacity`, :func:`export_clips`: label tracks and wav clips.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

from ..atomic import atomic_write_bytes, atomic_write_text
from ..audio import decode, load_audio
from ..errors import UsageError
from ..extras import require
from .query import Hit
from ..windows import read_segment

RAVEN_COLUMNS = ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)", "High Freq (Hz)",
                 "Begin Path", "Begin File", "File Offset (s)", "Annotation", "Score", "Rank"]
PER_FILE_SUFFIX = ".BioLingual.selection.table.txt"  # as BirdNET's <stem>.BirdNET.selection.table.txt
KALEIDOSCOPE_COLUMNS = ["INDIR", "FOLDER", "IN FILE", "OFFSET", "DURATION", "label"]  # then the score, lat, lon


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


@lru_cache(maxsize=4096)
def _duration(path: str) -> float:
    """Seconds of audio in ``path``: from its header, or by decoding it when libsndfile cannot read it."""
    try:
        return sf.info(path).duration
    except Exception:  # not a libsndfile format (or a header it cannot read): decode it whole
        try:
            samples, rate = decode(path)
        except Exception as e:
            raise UsageError(f"cannot read the duration of '{path}' for the Raven sequence table's offsets: {e}") from None
        return len(samples) / rate


def sequence_offsets(recordings: Sequence[str]) -> dict[str, float]:
    """{recording: seconds from the start of the sequence to its start}: the recordings in path order (the order
    Raven lists a folder's files in, and for recorder names such as SITE_YYYYMMDD_HHMMSS the order in time), each
    as long as its audio (``soundfile.info``)."""
    offsets, t = {}, 0.0
    for f in sorted(set(recordings)):
        offsets[f] = t
        t += _duration(f)
    return offsets


def _raven_text(rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter="\t", lineterminator="\n")
    w.writerow(RAVEN_COLUMNS)
    w.writerows(rows)
    return buf.getvalue()


def _raven_row(selection: int, begin: float, h: Hit, rank: int) -> list:
    return [selection, "Spectrogram 1", 1, f"{begin:.3f}", f"{begin + h.end - h.start:.3f}", "0.0", f"{_nyquist(h.file):.1f}",
            h.file, os.path.basename(h.file), f"{h.start:.3f}", h.query, f"{h.score:.6f}", rank]


def write_raven(hits: Sequence[Hit], path: str | os.PathLike, recordings: Sequence[str] | None = None) -> None:
    """A Raven Pro selection table over a sequence of recordings (Raven's file-sequence convention): tab-separated,
    one selection per hit, in sequence order; ``Begin Time (s)``/``End Time (s)`` from the start of the sequence
    (the recordings ``recordings``, default those with hits, in path order, see :func:`sequence_offsets`),
    ``File Offset (s)`` the time within ``Begin File`` (``Begin Path`` its full path); the frequency box spans the
    whole band (0 Hz to the file's Nyquist). The query or label is in ``Annotation``, the column crowsetta reads by
    default and OpenSoundscape reads when told (``annotation_column='Annotation'``); ``Score`` and ``Rank`` (within
    its query) follow. Written atomically."""
    offsets = sequence_offsets(list(recordings or []) + [h.file for h in hits])
    ranked = sorted(zip(_ranks(hits), hits), key=lambda x: (offsets[x[1].file] + x[1].start, x[1].query))
    atomic_write_text(path, _raven_text(_raven_row(n, offsets[h.file] + h.start, h, rank)
                                        for n, (rank, h) in enumerate(ranked, 1)))


def write_raven_per_file(hits: Sequence[Hit], folder: str | os.PathLike, recordings: Sequence[str] | None = None) -> list[Path]:
    """One Raven selection table per recording, ``folder/<stem>.BioLingual.selection.table.txt`` (BirdNET's
    naming): times within the file (``Begin Time (s)`` = ``File Offset (s)``), ``Begin File`` and ``Begin Path``
    naming it. Every recording of ``recordings`` gets a table, an empty one when it has no hit (as BirdNET writes
    them: a table per analysed file). Returns the tables written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ranks = _ranks(hits)
    names = _per_file_names(sorted(set(list(recordings or []) + [h.file for h in hits])))
    written = []
    for f, stem in names.items():
        rows = sorted(((r, h) for r, h in zip(ranks, hits) if h.file == f), key=lambda x: (x[1].start, x[1].query))
        written.append(atomic_write_text(folder / f"{stem}{PER_FILE_SUFFIX}",
                                         _raven_text(_raven_row(n, h.start, h, rank) for n, (rank, h) in enumerate(rows, 1))))
    return written


def write_kaleidoscope(hits: Sequence[Hit], path: str | os.PathLike, score_name: str = "score",
                       locations: dict[str, tuple[float | None, float | None]] | None = None) -> None:
    """A CSV with BirdNET's ``kaleidoscope`` columns, as Kaleidoscope Pro's results are laid out: INDIR (the folder
    above the recording's), FOLDER (the recording's folder), IN FILE, OFFSET and DURATION (seconds), then our
    ``label`` (the query or label as given: we do not know whether it is a scientific or a common name), the score
    named ``score_name``, and ``lat``/``lon`` where ``locations`` knows the recording's place (empty otherwise).
    Sorted by file and offset."""
    locations = locations or {}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(KALEIDOSCOPE_COLUMNS + [score_name, "lat", "lon"])
    for h in sorted(hits, key=lambda h: (h.file, h.start, h.query)):
        folder, name = os.path.split(h.file)
        indir, sub = os.path.split(folder)
        lat, lon = locations.get(h.file, (None, None))
        w.writerow([indir, sub, name, f"{h.start:.3f}", f"{h.end - h.start:.3f}", h.query, f"{h.score:.6f}",
                    "" if lat is None else f"{lat:.6f}", "" if lon is None else f"{lon:.6f}"])
    atomic_write_text(path, buf.getvalue())


def write_parquet(hits: Sequence[Hit], path: str | os.PathLike, score_name: str = "score") -> None:
    """The CSV's rows (:func:`write_csv`) as a Parquet file with typed columns (rank int32, start_s/end_s and the
    score float64). Needs pyarrow (the ``eval`` extra)."""
    pa = require("pyarrow", "eval", "Parquet output")  # MissingExtraError naming the extra: main prints it as one line
    pq = require("pyarrow.parquet", "eval", "Parquet output")
    table = pa.table({"rank": pa.array(_ranks(hits), pa.int32()), "query": [h.query for h in hits], "file": [h.file for h in hits],
                      "start_s": pa.array([h.start for h in hits], pa.float64()), "end_s": pa.array([h.end for h in hits], pa.float64()),
                      score_name: pa.array([h.score for h in hits], pa.float64())})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    atomic_write_bytes(path, sink.getvalue())


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
