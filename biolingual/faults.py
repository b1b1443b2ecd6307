"""Fault injection for crash tests: a process kills itself (SIGKILL) at a named point in the code.

A test that needs a crash at a given moment sets ``BIOLINGUAL_KILL_AT`` in the child's environment
instead of sleeping and killing it from outside, so the moment is the same on an idle machine and a
loaded one:

    BIOLINGUAL_KILL_AT="index.file_checkpoint"        the first time that point is reached
    BIOLINGUAL_KILL_AT="index.file_checkpoint:3"      the third time (counted per process)
    BIOLINGUAL_KILL_AT="a:2,b"                        whichever comes first

Points are plain strings named where they are placed (``fault_point("...")``); the points in use are
listed by ``grep -rn fault_point biolingual data_pipeline``. With the variable unset, a point costs
one dictionary lookup.

A test that needs a process *held* at a point (say, to start a second one while the first is there)
sets ``BIOLINGUAL_PAUSE_AT="NAME=PATH"``: on its first arrival at NAME the process writes its pid to
``PATH.paused`` and waits until ``PATH`` exists, then goes on.

A test that needs an operating-system error where a real one would come (a full disk while a checkpoint
or a shard is written, a folder it may not write) sets ``BIOLINGUAL_FAIL_AT="NAME=ERRNO"``, e.g.
``atomic.write=ENOSPC`` or ``pipeline.out:2=EACCES``: from the requested arrival at NAME on (a full
disk stays full), the point raises ``OSError(errno.ERRNO, ...)`` as the system call would. Tests run as
root, where a read-only folder or a small quota cannot be made, so this is the deterministic way.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ENV = "BIOLINGUAL_KILL_AT"
PAUSE_ENV = "BIOLINGUAL_PAUSE_AT"
FAIL_ENV = "BIOLINGUAL_FAIL_AT"
_reached: Counter = Counter()
_lock = threading.Lock()  # points may sit in worker threads: count each arrival exactly once


def _wanted(spec: str) -> dict[str, int]:
    wanted = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, count = item.partition(":")
        wanted[name] = int(count) if count else 1
    return wanted


def fault_point(name: str, path: str | os.PathLike | None = None) -> None:
    """Kill this process with SIGKILL (as a crash or ``kill -9`` would) if ``BIOLINGUAL_KILL_AT`` names ``name``
    and this is the requested arrival at it, or hold it there if ``BIOLINGUAL_PAUSE_AT`` names it (see above);
    or raise the OSError that ``BIOLINGUAL_FAIL_AT`` names there (see above; ``path`` is the file it names, as the
    failing system call's error would); otherwise do nothing."""
    pause = os.environ.get(PAUSE_ENV)
    if pause:
        _pause(name, pause)
    fail = os.environ.get(FAIL_ENV)
    if fail:
        _fail(name, fail, path)
    spec = os.environ.get(ENV)
    if not spec:
        return
    wanted = _wanted(spec)
    if name not in wanted:
        return
    with _lock:
        _reached[name] += 1
        arrival = _reached[name]
    if arrival == wanted[name]:
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def _fail(name: str, spec: str, path) -> None:
    """Raise the OSError ``spec`` ("NAME[:N]=ERRNO,...") asks for at ``name``, from its N-th arrival on."""
    failures = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        point, _, code = item.partition("=")
        failures[point.partition(":")[0]] = (point, code.strip())
    if name not in failures:
        return
    point, code = failures[name]
    number = getattr(errno, code, None)
    if not isinstance(number, int):
        raise ValueError(f"{FAIL_ENV}: '{code}' is not an errno name (like ENOSPC or EACCES) in {spec!r}")
    with _lock:
        _reached["fail:" + name] += 1
        arrival = _reached["fail:" + name]
    if arrival >= _wanted(point)[name]:
        raise OSError(number, os.strerror(number), *([os.fspath(path)] if path is not None else []))


def _pause(name: str, spec: str) -> None:
    point, _, path = spec.partition("=")
    if point != name:
        return
    with _lock:
        _reached["pause:" + name] += 1
        first = _reached["pause:" + name] == 1
    if not first:
        return
    release = Path(path)
    # written under a temporary name and renamed, so whoever waits for it reads a whole pid; not through
    # atomic.py, which has fault points of its own (faults sits below it)
    tmp = f"{path}.paused.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(str(os.getpid()))
    os.replace(tmp, path + ".paused")
    while not release.exists():  # the test creates the file when the process may go on
        time.sleep(0.02)
