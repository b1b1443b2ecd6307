"""Recordings as ecologists know them: a site, its coordinates, a recorder and a start time with its timezone.

In: an audio file (and the folder it was indexed from) and, optionally, a deployments CSV. Out: a
:class:`RecordingInfo` with what could be read and, for what could not, a problem saying why. Nothing
is guessed: a start time read from a file name with no timezone from any source stays unknown (a wrong
hour would move every detection into another night).

Where each field comes from, in this order (an earlier source wins; a later one that disagrees is
reported as a problem):

1. a deployments CSV the user writes (:func:`read_deployments`): ``site, latitude, longitude, folder``
   (or ``pattern``, a glob on the path relative to the indexed folder), ``timezone`` (an IANA name such as
   ``America/Bogota`` or an offset such as ``-05:00``) and optionally ``recorder``;
2. GUANO metadata (a ``guan`` chunk that Wildlife Acoustics recorders and bat detectors write: the
   ``guano`` package): ``Timestamp``, ``Loc Position``, ``Make``/``Model``/``Serial``;
3. the AudioMoth comment in the WAV's INFO chunk (the ``metamoth`` package): start time with its UTC
   offset, and the recorder's id;
4. the file name: ``YYYYMMDD_HHMMSS`` or ``PREFIX_YYYYMMDD_HHMMSS`` (Song Meters put the site or
   recorder name first: it becomes the site when nothing else names one). The time is local to the
   timezone a deployment gives; AudioMoth names files in UTC unless configured otherwise, which is
   why its own comment, not the name, gives its time.
"""

from __future__ import annotations

import csv
import datetime as dt
import fnmatch
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

log = logging.getLogger(__name__)

# PREFIX_YYYYMMDD_HHMMSS or YYYYMMDD_HHMMSS (also with - or T between date and time), anywhere in the stem
_NAME_TIME = re.compile(r"(?:^|(?P<prefix>.*?)[_-])(?P<date>(?:19|20)\d{6})[_T-](?P<time>\d{6})(?:$|[_.-])")
_OFFSET = re.compile(r"(?:UTC|GMT)?\s*([+-])(\d{1,2})(?::?(\d{2}))?$", re.I)


class DeploymentsError(ValueError):
    """A deployments CSV cannot be used: the message names the file, the row and what is wrong."""


@dataclass(frozen=True)
class Deployment:
    """One row of a deployments CSV: where a recorder stood and which recordings it made."""

    site: str
    latitude: float | None
    longitude: float | None
    timezone: dt.tzinfo | None
    match: str  # a folder (relative to the indexed root) or a glob pattern on the relative path
    recorder: str | None = None
    row: int = 0

    def covers(self, relative: str) -> bool:
        if any(ch in self.match for ch in "*?["):
            return fnmatch.fnmatch(relative, self.match)
        folder = self.match.strip("/")
        return folder in ("", ".") or relative == folder or relative.startswith(folder + "/")


@dataclass
class RecordingInfo:
    """What is known of one recording. ``start`` is timezone-aware or None; ``sources`` says where each
    field came from; ``problems`` what could not be read or disagreed."""

    path: str  # relative to the indexed root when it lies under it
    site: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    recorder: str | None = None
    start: dt.datetime | None = None
    sources: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def at(self, seconds: float) -> dt.datetime | None:
        """The clock time ``seconds`` into the recording, in its own timezone (None without a start time)."""
        if self.start is None:
            return None
        # through UTC: adding to an aware time only moves its wall clock, so a night recording that crosses a
        # daylight-saving change would read an hour off (or an hour that does not exist) after it
        moment = self.start.astimezone(dt.UTC) + dt.timedelta(seconds=float(seconds))
        return moment.astimezone(self.start.tzinfo)

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "site": self.site,
            "latitude": self.latitude,
            "longitude": self.longitude,
            "recorder": self.recorder,
            "start": self.start.isoformat() if self.start else None,
            "sources": dict(self.sources),
            "problems": list(self.problems),
        }

    @classmethod
    def from_dict(cls, data: dict) -> RecordingInfo:
        start = data.get("start")
        return cls(
            path=data["path"],
            site=data.get("site"),
            latitude=data.get("latitude"),
            longitude=data.get("longitude"),
            recorder=data.get("recorder"),
            start=dt.datetime.fromisoformat(start) if start else None,
            sources=dict(data.get("sources") or {}),
            problems=list(data.get("problems") or []),
        )

    def _set(self, name: str, value, source: str) -> None:
        """Fill ``name`` from ``source`` unless an earlier source gave it; a disagreement is a problem."""
        if value is None:
            return
        current = getattr(self, name)
        if current is None:
            setattr(self, name, value)
            self.sources[name] = source
        elif not _same(current, value):
            self.problems.append(
                f"{name} {_show(value)} from {source} differs from {_show(current)} from {self.sources[name]} (kept)"
            )


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) < 1e-4
    return a == b


def _show(value) -> str:
    return value.isoformat() if isinstance(value, dt.datetime) else repr(value)


def parse_timezone(text: str) -> dt.tzinfo:
    """An IANA name (``Europe/Berlin``), ``UTC``, or an offset (``+02:00``, ``-0500``, ``UTC+2``) -> tzinfo;
    ValueError naming the text otherwise."""
    text = text.strip()
    if text.upper() in ("UTC", "Z", "GMT"):
        return dt.UTC
    m = _OFFSET.fullmatch(text)
    if m:
        sign = -1 if m.group(1) == "-" else 1
        return dt.timezone(sign * dt.timedelta(hours=int(m.group(2)), minutes=int(m.group(3) or 0)))
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown timezone {text!r}: give an IANA name (e.g. America/Bogota) or an offset (e.g. -05:00)"
        ) from None


def read_deployments(path: str | Path) -> list[Deployment]:
    """The rows of a deployments CSV (columns ``site``, ``latitude``, ``longitude``, ``timezone``, and
    ``folder`` or ``pattern``; ``recorder`` optional). All problems at once, as :class:`DeploymentsError`."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DeploymentsError(f"cannot read deployments file '{path}': {e}") from None
    if not rows:
        raise DeploymentsError(
            f"deployments file '{path}' has no rows (columns: site, latitude, longitude, folder "
            "or pattern, timezone, and optionally recorder)"
        )
    columns = {c.strip().lower() for c in rows[0] if c}
    missing = [c for c in ("site",) if c not in columns] + (
        [] if columns & {"folder", "pattern"} else ["folder or pattern"]
    )
    if missing:
        raise DeploymentsError(
            f"deployments file '{path}' lacks the column(s) {', '.join(missing)}; it has "
            f"{', '.join(sorted(columns)) or 'none'}"
        )
    found, problems = [], []
    for number, raw in enumerate(rows, start=2):  # row 1 is the header
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items()}
        where = f"'{path}', row {number}"
        try:
            found.append(_deployment(row, number))
        except ValueError as e:
            problems.append(f"{where}: {e}")
    if problems:
        raise DeploymentsError(
            "; ".join(problems[:10]) + (f" (and {len(problems) - 10} more)" if len(problems) > 10 else "")
        )
    return found


def _deployment(row: dict, number: int) -> Deployment:
    if not row.get("site"):
        raise ValueError("no site name")
    match = row.get("folder") or row.get("pattern")
    if not match:
        raise ValueError("give the folder (relative to the indexed folder) or a pattern such as 'SITE-A_*.WAV'")
    lat, lon = _coordinate(row.get("latitude"), "latitude", 90), _coordinate(row.get("longitude"), "longitude", 180)
    zone = parse_timezone(row["timezone"]) if row.get("timezone") else None
    return Deployment(row["site"], lat, lon, zone, match.replace("\\", "/"), row.get("recorder") or None, number)


def _coordinate(text: str | None, name: str, limit: float) -> float | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} {text!r} is not a number (decimal degrees)") from None
    if not -limit <= value <= limit:
        raise ValueError(f"{name} {value} is outside -{limit:g}..{limit:g}")
    return value


def file_name_time(name: str) -> tuple[str | None, dt.datetime] | None:
    """(prefix or None, naive start time) from a recorder-style file name, or None when it holds no
    ``YYYYMMDD_HHMMSS`` (or an impossible date)."""
    m = _NAME_TIME.search(Path(name).stem)
    if not m:
        return None
    try:
        start = dt.datetime.strptime(m.group("date") + m.group("time"), "%Y%m%d%H%M%S")
    except ValueError:
        return None
    prefix = (m.group("prefix") or "").strip("_- ") or None
    return prefix, start


def _guano(path: Path, info: RecordingInfo) -> None:
    try:
        import guano
    except ImportError:  # an optional reader: without it GUANO metadata is not read, and that is said
        info.problems.append("GUANO metadata not read (install the guano package)")
        return
    try:
        meta = guano.GuanoFile(str(path))
    except Exception as e:  # any unreadable chunk is the file's problem, reported, never fatal
        info.problems.append(f"GUANO metadata unreadable: {e}"[:200])
        return
    if not meta:
        return
    stamp = meta.get("Timestamp")
    if isinstance(stamp, dt.datetime):
        if stamp.tzinfo is None:
            info.problems.append(f"GUANO Timestamp {stamp.isoformat()} has no timezone")
        else:
            info._set("start", stamp, "GUANO")
    position = meta.get("Loc Position")
    if isinstance(position, (tuple, list)) and len(position) == 2:
        info._set("latitude", float(position[0]), "GUANO")
        info._set("longitude", float(position[1]), "GUANO")
    recorder = " ".join(str(meta.get(k)) for k in ("Make", "Model", "Serial") if meta.get(k))
    info._set("recorder", recorder or None, "GUANO")


def _audiomoth(path: Path, info: RecordingInfo) -> None:
    if path.suffix.lower() != ".wav":
        return
    try:
        import metamoth
    except ImportError:
        info.problems.append("AudioMoth metadata not read (install the metamoth package)")
        return
    try:
        meta = metamoth.parse_metadata(str(path))
    except Exception:  # not an AudioMoth file (no such comment): nothing to read, nothing wrong
        return
    start = getattr(meta, "datetime", None)
    if isinstance(start, dt.datetime):
        # metamoth gives the clock time and its UTC offset apart; the oldest firmware always recorded in UTC
        zone = start.tzinfo or getattr(meta, "timezone", None) or (dt.UTC if "(UTC)" in meta.comment else None)
        if zone is None:
            info.problems.append(f"the AudioMoth comment gives {start.isoformat(sep=' ')} without a timezone")
        else:
            info._set("start", start.replace(tzinfo=zone), "AudioMoth comment")
    info._set(
        "recorder",
        f"AudioMoth {meta.audiomoth_id}" if getattr(meta, "audiomoth_id", None) else None,
        "AudioMoth comment",
    )


def describe_recording(
    path: str | Path, root: str | Path | None = None, deployments: list[Deployment] = ()
) -> RecordingInfo:
    """What can be read of ``path``'s site, place, recorder and start time (see the module docstring)."""
    path = Path(path)
    relative = path.name
    if root is not None:
        try:
            relative = path.resolve().relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            relative = path.as_posix()
    info = RecordingInfo(path=relative)
    zone = None
    matches = [d for d in deployments if d.covers(relative)]
    if matches:
        d = matches[-1]  # the last matching row: a specific pattern after a folder-wide one wins
        source = f"deployments row {d.row}"
        info._set("site", d.site, source)
        info._set("latitude", d.latitude, source)
        info._set("longitude", d.longitude, source)
        info._set("recorder", d.recorder, source)
        zone = d.timezone
    _guano(path, info)
    _audiomoth(path, info)
    named = file_name_time(path.name)
    if named is not None:
        prefix, naive = named
        if info.start is not None:
            # the recorder's own metadata gave the time, with its zone; a name's zone is a convention (UTC or local)
            pass
        elif zone is not None:
            info._set("start", naive.replace(tzinfo=zone), "file name")
        else:
            info.problems.append(
                f"the file name gives {naive.isoformat(sep=' ')} but no timezone is known: add "
                "the recording's folder to a deployments CSV with its timezone"
            )
        if info.site is None:  # a name's prefix is often the recorder's, so it only names a site nothing else names
            info._set("site", prefix, "file name")
    if info.start is None and named is None and "start" not in info.sources:
        info.problems.append("no start time: no recorder metadata and no YYYYMMDD_HHMMSS in the file name")
    if info.site is None:
        info.problems.append("no site: name it in a deployments CSV (or a PREFIX_ in the file name)")
    return info
