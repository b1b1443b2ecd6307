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
import logging
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
from ..windows import read_segment
from .query import Hit

log = logging.getLogger(__name__)

RAVEN_COLUMNS = [
    "Selection",
    "View",
    "Channel",
    "Begin Time (s)",
    "End Time (s)",
    "Low Freq (Hz)",
    "High Freq (Hz)",
    "Begin Path",
    "Begin File",
    "File Offset (s)",
    "Annotation",
    "Score",
    "Rank",
]
PER_FILE_SUFFIX = ".BioLingual.selection.table.txt"  # as BirdNET's <stem>.BirdNET.selection.table.txt
KALEIDOSCOPE_COLUMNS = ["INDIR", "FOLDER", "IN FILE", "OFFSET", "DURATION", "label"]  # then the score, lat, lon


@lru_cache(maxsize=4096)
def _nyquist(path: str) -> float:
    try:
        return sf.info(path).samplerate / 2
    except Exception:  # not a libsndfile format: the model's 48 kHz is what was analysed
        return 24_000.0


def _ranks(hits: Sequence[Hit]) -> list[int]:
    """Rank of each hit by its score within its own query or label (1: the highest; ties in order), whatever
    order the rows are in: detections come sorted by recording and time, not by score."""
    order = sorted(range(len(hits)), key=lambda i: (hits[i].query, -hits[i].score, i))
    out, seen = [0] * len(hits), {}
    for i in order:
        seen[hits[i].query] = seen.get(hits[i].query, 0) + 1
        out[i] = seen[hits[i].query]
    return out


PLACE_COLUMNS = ["recording", "site", "start_time", "end_time", "latitude", "longitude"]


def _place(h: Hit, infos) -> list[str]:
    """The hit's recording (relative name), site, clock times and coordinates; empty where not known."""
    info = infos.get(h.file) if infos else None
    if info is None:
        return ["", "", "", "", "", ""]
    start, end = info.at(h.start), info.at(h.end)
    return [
        info.path,
        info.site or "",
        start.isoformat(timespec="seconds") if start else "",
        end.isoformat(timespec="seconds") if end else "",
        "" if info.latitude is None else f"{info.latitude:.6f}",
        "" if info.longitude is None else f"{info.longitude:.6f}",
    ]


def format_table(hits: Sequence[Hit], score_name: str = "score", infos=None) -> str:
    """The hits as a terminal table; with ``infos`` (:func:`biolingual.search.recordings.recordings_of`) the
    recording's relative name, its site and the clock time of the start where they are known."""
    if not hits:
        return "no hits"
    names = [infos[h.file].path if infos and h.file in infos else h.file for h in hits]
    when = [_when(h, infos) for h in hits]
    width, wwidth = max(len(n) for n in names), max(len(w) for w in when)
    qwidth = min(40, max(len(h.query) for h in hits))
    head = f"{'rank':>4}  {'query':<{qwidth}}  {'file':<{width}}  {'start (s)':>9}  {'end (s)':>9}  "
    lines = [head + (f"{'site, clock time':<{wwidth}}  " if wwidth else "") + score_name]
    for rank, h, name, w in zip(_ranks(hits), hits, names, when):
        lines.append(
            f"{rank:>4}  {h.query[:qwidth]:<{qwidth}}  {name:<{width}}  {h.start:>9.2f}  {h.end:>9.2f}  "
            + (f"{w:<{wwidth}}  " if wwidth else "")
            + f"{h.score:.4f}"
        )
    return "\n".join(lines)


def _when(h: Hit, infos) -> str:
    info = infos.get(h.file) if infos else None
    if info is None:
        return ""
    start = info.at(h.start)
    return ", ".join(x for x in (info.site, start.strftime("%Y-%m-%d %H:%M:%S %z") if start else "") if x)


def write_csv(hits: Sequence[Hit], path: str | os.PathLike, score_name: str = "score", infos=None) -> None:
    """One row per hit: ``rank, query, file, start_s, end_s``, where the recording is and when (``recording``
    relative to the recordings' folder, ``site``, ``start_time``/``end_time`` as ISO clock times with their UTC
    offset, ``latitude``, ``longitude``; empty where not known), and the score column named ``score_name``."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["rank", "query", "file", "start_s", "end_s", *PLACE_COLUMNS, score_name])
    w.writerows(
        [rank, h.query, h.file, f"{h.start:.3f}", f"{h.end:.3f}", *_place(h, infos), f"{h.score:.6f}"]
        for rank, h in zip(_ranks(hits), hits)
    )
    atomic_write_text(path, buf.getvalue())


@lru_cache(maxsize=4096)
def _duration(path: str) -> float:
    """Seconds of audio in ``path``: from its header, or by decoding it when libsndfile cannot read it."""
    try:
        return sf.info(path).duration
    except Exception:  # not a libsndfile format (or a header it cannot read): decode it whole
        try:
            samples, rate = decode(path)
        except Exception as e:
            raise UsageError(
                f"cannot read the duration of '{path}' for the Raven sequence table's offsets: {e}"
            ) from None
        return len(samples) / rate


def index_durations(index) -> dict[str, float]:
    """{recording: the end of its last window} of an index: how long each recording was when it was indexed,
    for a recording that cannot be read any more (moved or deleted since)."""
    ends: dict[str, float] = {}
    for f, end in zip(index.file_ids.tolist(), index.ends.tolist()):
        name = index.files[f]
        ends[name] = max(ends.get(name, 0.0), float(end))
    return ends


def sequence_offsets(recordings: Sequence[str], known: dict[str, float] | None = None) -> dict[str, float]:
    """{recording: seconds from the start of the sequence to its start}: the recordings in path order (the order
    Raven lists a folder's files in, and for recorder names such as SITE_YYYYMMDD_HHMMSS the order in time), each
    as long as its audio (``soundfile.info``); a recording that cannot be read takes its length from ``known``
    (:func:`index_durations`), with a warning, or is an error naming it."""
    offsets, t = {}, 0.0
    for f in sorted(set(recordings)):
        offsets[f] = t
        try:
            t += _duration(f)
        except UsageError:
            if not known or f not in known:
                raise
            log.warning("'%s' cannot be read: its length in the Raven sequence is the index's (%.1f s)", f, known[f])
            t += known[f]
    return offsets


def _raven_text(rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter="\t", lineterminator="\n")
    w.writerow(RAVEN_COLUMNS)
    w.writerows(rows)
    return buf.getvalue()


def _raven_row(selection: int, begin: float, h: Hit, rank: int) -> list:
    return [
        selection,
        "Spectrogram 1",
        1,
        f"{begin:.3f}",
        f"{begin + h.end - h.start:.3f}",
        "0.0",
        f"{_nyquist(h.file):.1f}",
        h.file,
        os.path.basename(h.file),
        f"{h.start:.3f}",
        h.query,
        f"{h.score:.6f}",
        rank,
    ]


def write_raven(
    hits: Sequence[Hit],
    path: str | os.PathLike,
    recordings: Sequence[str] | None = None,
    known: dict[str, float] | None = None,
) -> None:
    """A Raven Pro selection table over a sequence of recordings (Raven's file-sequence convention): tab-separated,
    one selection per hit, in sequence order; ``Begin Time (s)``/``End Time (s)`` from the start of the sequence
    (the recordings ``recordings``, default those with hits, in path order, see :func:`sequence_offsets`),
    ``File Offset (s)`` the time within ``Begin File`` (``Begin Path`` its full path); the frequency box spans the
    whole band (0 Hz to the file's Nyquist). The query or label is in ``Annotation``, the column crowsetta reads by
    default and OpenSoundscape reads when told (``annotation_column='Annotation'``); ``Score`` and ``Rank`` (within
    its query) follow; ``known``: lengths for recordings that cannot be read (:func:`sequence_offsets`). Written
    atomically."""
    offsets = sequence_offsets(list(recordings or []) + [h.file for h in hits], known)
    ranked = sorted(zip(_ranks(hits), hits), key=lambda x: (offsets[x[1].file] + x[1].start, x[1].query))
    atomic_write_text(
        path, _raven_text(_raven_row(n, offsets[h.file] + h.start, h, rank) for n, (rank, h) in enumerate(ranked, 1))
    )


def write_raven_per_file(
    hits: Sequence[Hit], folder: str | os.PathLike, recordings: Sequence[str] | None = None
) -> list[Path]:
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
        written.append(
            atomic_write_text(
                folder / f"{stem}{PER_FILE_SUFFIX}",
                _raven_text(_raven_row(n, h.start, h, rank) for n, (rank, h) in enumerate(rows, 1)),
            )
        )
    return written


def write_kaleidoscope(
    hits: Sequence[Hit],
    path: str | os.PathLike,
    score_name: str = "score",
    locations: dict[str, tuple[float | None, float | None]] | None = None,
) -> None:
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
        w.writerow(
            [
                indir,
                sub,
                name,
                f"{h.start:.3f}",
                f"{h.end - h.start:.3f}",
                h.query,
                f"{h.score:.6f}",
                "" if lat is None else f"{lat:.6f}",
                "" if lon is None else f"{lon:.6f}",
            ]
        )
    atomic_write_text(path, buf.getvalue())


def write_parquet(hits: Sequence[Hit], path: str | os.PathLike, score_name: str = "score", infos=None) -> None:
    """The CSV's rows (:func:`write_csv`) as a Parquet file with typed columns (rank int32, start_s/end_s and the
    score float64). Needs pyarrow (the ``eval`` extra)."""
    pa = require("pyarrow", "eval", "Parquet output")  # MissingExtraError naming the extra: main prints it as one line
    pq = require("pyarrow.parquet", "eval", "Parquet output")
    table = pa.table(
        {
            "rank": pa.array(_ranks(hits), pa.int32()),
            "query": [h.query for h in hits],
            "file": [h.file for h in hits],
            "start_s": pa.array([h.start for h in hits], pa.float64()),
            "end_s": pa.array([h.end for h in hits], pa.float64()),
            **{c: [_place(h, infos)[j] for h in hits] for j, c in enumerate(PLACE_COLUMNS)},
            score_name: pa.array([h.score for h in hits], pa.float64()),
        }
    )
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
