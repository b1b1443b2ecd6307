"""The output folder's build lock: one ``build`` per folder, or one per part when ``--partition`` runs share it.

Two locks, both ``fcntl.flock`` on files in the output folder, so they die with their holder (a
``kill -9`` leaves the file, never the lock, and the next run takes it):

- ``build.lock``: a whole build (no ``--partition``) holds it exclusively; every partition run holds it
  shared, so parts run side by side but never beside a whole build (their shard names would collide);
- ``build-I-of-N.lock``: a partition run holds its own part's exclusively (two runs of part 3/16 would
  write the same shards).

:func:`held` is the waiting kind, for the short turns that the parts of one build take at shared files (the
request clocks of :mod:`.http`, the shared catalogue listings of :mod:`.build`).

The holder writes ``pid PID on HOST`` into the file it holds exclusively, and a refused run names it.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from pathlib import Path

from biolingual.locks import held as _held
from biolingual.locks import lock_holders, take_lock


class BuildLocked(RuntimeError):
    """Another process is building the same output folder (or the same part of it)."""


def _take(stack: ExitStack, path: Path, exclusive: bool) -> bool:
    return take_lock(stack, path, exclusive, what="this folder (or this --partition of it)")


@contextmanager
def build_lock(out: Path, part: int = 1, parts: int = 1):
    """Hold the lock of ``out`` (of part ``part`` of ``parts`` when ``parts`` > 1) for the ``with`` body.

    Raises BuildLocked, naming the holder's pid, when another build of the same folder (whole) or of the
    same part is running.
    """
    out = Path(out)
    folder = out / "build.lock"
    what = f"'{out}'" if parts == 1 else f"part {part}/{parts} of '{out}'"
    advice = (
        "wait for it to finish or stop it (two builds writing the same shards corrupt them); to build in "
        "parallel, give each run its own --partition I/N"
    )
    with ExitStack() as stack:
        if parts == 1:
            if not _take(stack, folder, exclusive=True):
                # a whole build holds it exclusively (its pid is in it), partition runs shared (theirs are in theirs)
                who = lock_holders([folder]) or lock_holders(sorted(out.glob("build-*-of-*.lock"))) or ["pid unknown"]
                raise BuildLocked(
                    f"{what} is being built by another process ({', '.join(who)}; lock file '{folder}'): {advice}"
                )
        else:
            mine = out / f"build-{part}-of-{parts}.lock"
            if not _take(stack, folder, exclusive=False):
                raise BuildLocked(
                    f"'{out}' is being built whole (no --partition) by another process "
                    f"({', '.join(lock_holders([folder])) or 'pid unknown'}; lock file '{folder}'): {advice}"
                )
            if not _take(stack, mine, exclusive=True):
                raise BuildLocked(
                    f"{what} is being built by another process ({', '.join(lock_holders([mine])) or 'pid unknown'}; "
                    f"lock file '{mine}'): {advice}"
                )
        yield


def held(path: Path):
    """Hold an exclusive lock on ``path`` for the ``with`` body, waiting for it (:func:`biolingual.locks.held`)."""
    return _held(path, what="it (the parts of a build do not take turns)")
