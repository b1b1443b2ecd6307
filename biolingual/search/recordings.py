"""The recordings of an index as deployments: each one's site, place, recorder and clock time, kept beside it.

In: an index folder, its recordings, and optionally a deployments CSV (:mod:`biolingual.deployments`). Out:
``{recording path: RecordingInfo}``, read from ``INDEX/recordings.json`` and completed there for recordings
it does not describe yet (an index built before, or grown since), so every result row can carry a site and
clock times without reading file headers again. ``biolingual index --deployments FILE`` describes them
when the index is built; giving ``--deployments`` again (to index, search or detect) describes them anew.

``RecordingInfo.path`` is the recording relative to the folder that holds all of the index's recordings,
the name a person recognises (``SITE-A/SITE-A_20240512_050000.WAV``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ..atomic import atomic_write_text
from ..deployments import RecordingInfo, describe_recording, read_deployments

FILE = "recordings.json"


def common_root(files: Sequence[str]) -> str:
    """The folder that holds every one of ``files`` (their common parent)."""
    folders = [os.path.dirname(os.path.abspath(f)) for f in files]
    return os.path.commonpath(folders) if folders else ""


def recordings_of(
    index_dir: str | os.PathLike, files: Sequence[str], deployments: str | os.PathLike | None = None
) -> dict[str, RecordingInfo]:
    """What is known of each of ``files`` (see the module docstring); with ``deployments`` every recording is
    described anew against that CSV, else only those ``recordings.json`` lacks. Raises
    :class:`~biolingual.deployments.DeploymentsError` for a bad CSV, naming its rows."""
    path = Path(index_dir) / FILE
    root = common_root(files)
    stored, stored_table = {}, None
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            if data.get("root") == root:  # a grown index may have another root: names are relative to it
                stored, stored_table = data.get("recordings") or {}, data.get("deployments")
        except (OSError, ValueError):
            pass  # unreadable: described again below and rewritten
    if deployments is not None and str(deployments) != stored_table:
        stored, stored_table = {}, str(deployments)  # another table: every recording described anew
    # the table is read only to describe a recording (or when given): an index copied elsewhere for review, its
    # CSV left behind, still knows what recordings.json says
    table = read_deployments(stored_table) if deployments is not None else None
    out, changed = {}, not path.is_file()
    for f in files:
        if f in stored:
            out[f] = RecordingInfo.from_dict(stored[f])
        else:
            if table is None:
                table = read_deployments(stored_table) if stored_table else []
            out[f] = describe_recording(f, root, table)
            changed = True
    if changed:
        data = {"root": root, "deployments": stored_table, "recordings": {f: info.to_dict() for f, info in out.items()}}
        atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True))
    return out


def summary_line(infos: dict[str, RecordingInfo]) -> str:
    """One line on how many recordings have a site and a clock time, and the first thing that could not be read."""
    placed = sum(1 for i in infos.values() if i.site and i.start is not None)
    problems = [(i.path, p) for i in infos.values() for p in i.problems]
    line = f"{placed} of {len(infos)} recordings have a site and a clock time"
    if problems:
        path, problem = problems[0]
        line += f"; {len(problems)} notes (first: {path}: {problem})"
    return line


def remember_recordings(index_dir: str | os.PathLike, files: Sequence[str], infos: dict[str, RecordingInfo]) -> None:
    """Keep ``infos``, what another source says of some of the index's recordings (a perch-hoplite database's
    deployments and datetimes), in ``recordings.json`` as what is known of them; ``files`` are all of the index's
    recordings (the names are relative to their common folder). The others keep what is stored of them."""
    path = Path(index_dir) / FILE
    root = common_root(files)
    data = {"root": root, "deployments": None, "recordings": {}}
    try:
        stored = json.loads(path.read_text())
        if stored.get("root") == root:
            data = stored
    except (OSError, ValueError):
        pass  # none yet, or unreadable: written anew
    data.setdefault("recordings", {}).update(
        {f: replace(info, path=Path(os.path.relpath(f, root)).as_posix()).to_dict() for f, info in infos.items()}
    )
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True))
