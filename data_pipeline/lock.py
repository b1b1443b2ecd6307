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

import errno
import fcntl
import logging
import os
import socket
from contextlib import ExitStack, contextmanager
from pathlib import Path

log = logging.getLogger("data_pipeline")


class BuildLocked(RuntimeError):
    """Another process is building the same output folder (or the same part of it)."""


def _holders(paths) -> list[str]:
    """'pid N on HOST' of each of ``paths`` that some process holds locked now."""
    found = []
    for path in paths:
        try:
            with open(path, "r+") as f:
                try:
                    fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    found.append(f.read().strip() or "pid unknown")
                else:
                    fcntl.flock(f, fcntl.LOCK_UN)
        except OSError:
            continue
    return found


def _take(stack: ExitStack, path: Path, exclusive: bool) -> bool:
    """Lock ``path`` without waiting; False if another process holds it. A filesystem without locks
    (some network mounts) gives a warning, not a refusal: the build then runs unguarded."""
    f = stack.enter_context(open(path, "a+"))
    try:
        fcntl.flock(f, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise
        log.warning("cannot lock '%s' (%s): this filesystem has no file locks, so make sure no other build "
                    "writes to this folder (or to this --partition of it) at the same time", path, e.strerror)
        return True
    if exclusive:  # the holder's name for a refused run's message; a stale one is overwritten here
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
    return True


@contextmanager
def build_lock(out: Path, part: int = 1, parts: int = 1):
    """Hold the lock of ``out`` (of part ``part`` of ``parts`` when ``parts`` > 1) for the ``with`` body.

    Raises BuildLocked, naming the holder's pid, when another build of the same folder (whole) or of the
    same part is running.
    """
    out = Path(out)
    folder = out / "build.lock"
    what = f"'{out}'" if parts == 1 else f"part {part}/{parts} of '{out}'"
    advice = ("wait for it to finish or stop it (two builds writing the same shards corrupt them); to build in "
              "parallel, give each run its own --partition I/N")
    with ExitStack() as stack:
        if parts == 1:
            if not _take(stack, folder, exclusive=True):
                # a whole build holds it exclusively (its pid is in it), partition runs shared (theirs are in theirs)
                who = _holders([folder]) or _holders(sorted(out.glob("build-*-of-*.lock"))) or ["pid unknown"]
                raise BuildLocked(f"{what} is being built by another process ({', '.join(who)}; lock file "
                                  f"'{folder}'): {advice}")
        else:
            mine = out / f"build-{part}-of-{parts}.lock"
            if not _take(stack, folder, exclusive=False):
                raise BuildLocked(f"'{out}' is being built whole (no --partition) by another process "
                                  f"({', '.join(_holders([folder])) or 'pid unknown'}; lock file '{folder}'): {advice}")
            if not _take(stack, mine, exclusive=True):
                raise BuildLocked(f"{what} is being built by another process ({', '.join(_holders([mine])) or 'pid unknown'}; "
                                  f"lock file '{mine}'): {advice}")
        yield


@contextmanager
def held(path: Path):
    """Hold an exclusive ``fcntl.flock`` on ``path`` (created if missing) for the ``with`` body, waiting for
    it as long as another process (or another open of the file in this one) holds it. A filesystem without
    locks gives a warning and an unguarded body, as for the build lock."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX)
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            log.warning("cannot lock '%s' (%s): this filesystem has no file locks, so the parts of a build "
                        "do not take turns at it", path, e.strerror)
        yield f  # the lock goes with the file's closing
