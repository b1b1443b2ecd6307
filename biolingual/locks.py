"""Folder locks that die with their holder: one writer per run folder (training) or build folder (dataset).

A lock is ``fcntl.flock`` on a small file in the folder. The kernel drops it when the holding process
exits, however it exits, so a ``kill -9`` leaves the file but never the lock, and the next run takes
it. The holder writes who it is into the file (``pid PID on HOST``, plus anything the caller adds, such
as the pids of a job's other processes), and a refused run names it.

In: the lock file's path and whether the lock is exclusive. Out: True/False (taken or held by another
process), and :func:`lock_holders` for the message of a refused run. :func:`held` is the waiting kind,
for short turns that processes take at a shared file.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
from contextlib import ExitStack, contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

# errors of a filesystem that has no file locks (some network mounts): the caller warns and runs unguarded
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


def holder_text(extra: str = "") -> str:
    """``pid PID on HOST`` for this process, with ``extra`` after it when given."""
    return f"pid {os.getpid()} on {socket.gethostname()}" + (f" {extra}" if extra else "")


def take_lock(
    stack: ExitStack, path: str | Path, exclusive: bool = True, holder: str | None = None, what: str = "this folder"
) -> bool:
    """Lock ``path`` (created if missing) without waiting, held until ``stack`` closes; False if another
    process holds it. An exclusive holder writes ``holder`` (default :func:`holder_text`) into the file,
    replacing a stale name. On a filesystem without locks it logs a warning naming ``what`` and returns
    True: the work then runs unguarded rather than not at all."""
    f = stack.enter_context(open(path, "a+"))
    try:
        fcntl.flock(f, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno not in _NO_LOCKS:
            raise
        log.warning(
            "cannot lock '%s' (%s): this filesystem has no file locks, so make sure no other process "
            "writes to %s at the same time",
            path,
            e.strerror,
            what,
        )
        return True
    if exclusive:
        write_holder(f, holder or holder_text())
    return True


def write_holder(f, text: str) -> None:
    """Replace the holder's name in an open lock file ``f`` that this process holds."""
    f.seek(0)
    f.truncate()
    f.write(text.rstrip("\n") + "\n")
    f.flush()


def lock_holders(paths) -> list[str]:
    """The holder text of each of ``paths`` that some process holds locked now (``pid unknown`` when the
    holder wrote none); files nobody holds are left out."""
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


@contextmanager
def held(path: str | Path, what: str = "this file"):
    """Hold an exclusive lock on ``path`` (created, with its folder, if missing) for the ``with`` body,
    waiting as long as another process (or another open of the file in this one) holds it; yields the
    open file. A filesystem without locks gives a warning naming ``what`` and an unguarded body."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX)
        except OSError as e:
            if e.errno not in _NO_LOCKS:
                raise
            log.warning(
                "cannot lock '%s' (%s): this filesystem has no file locks, so processes do not take turns at %s",
                path,
                e.strerror,
                what,
            )
        yield f  # the lock goes with the file's closing
