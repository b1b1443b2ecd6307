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
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from collections import Counter

ENV = "BIOLINGUAL_KILL_AT"
_reached: Counter = Counter()
_lock = threading.Lock()  # points may sit in worker threads: count each arrival exactly once


def _wanted(spec: str) -> dict[str, int]:
    wanted = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, count = item.partition(":")
        wanted[name] = int(count) if count else 1
    return wanted


def fault_point(name: str) -> None:
    """Kill this process with SIGKILL (as a crash or ``kill -9`` would) if ``BIOLINGUAL_KILL_AT`` names ``name``
    and this is the requested arrival at it; otherwise do nothing."""
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
