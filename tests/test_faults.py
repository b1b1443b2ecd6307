"""biolingual.faults: a process kills itself (SIGKILL) at the chosen arrival at a named point, and only there."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from biolingual.faults import ENV

ROOT = Path(__file__).resolve().parents[1]

# Prints before each arrival, so stdout shows how far the process got (fault_point flushes it before dying).
LOOP = """
from biolingual.faults import fault_point
for i in range(1, 6):
    print("before", i)
    fault_point("test.point")
    fault_point("test.other")
print("end")
"""

THREADS = """
import threading
from biolingual.faults import fault_point
def arrive():
    for _ in range(500):
        fault_point("test.point")
threads = [threading.Thread(target=arrive) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("end")
"""


def _run(script: str, kill_at: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if kill_at is not None:
        env[ENV] = kill_at
    return subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)


def _printed(n: int) -> str:
    return "".join(f"before {i}\n" for i in range(1, n + 1))


@pytest.mark.parametrize("kill_at, arrivals", [("test.point", 1), ("test.point:3", 3), ("nowhere,test.point:2", 2),
                                                ("test.point:4,test.other:2", 2)])
def test_dies_by_sigkill_at_the_chosen_arrival_and_not_before(kill_at, arrivals):
    proc = _run(LOOP, kill_at)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert proc.stdout == _printed(arrivals)


@pytest.mark.parametrize("kill_at", [None, "", "test.elsewhere", "test.point:6"])
def test_without_a_matching_point_the_process_runs_to_the_end(kill_at):
    proc = _run(LOOP, kill_at)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == _printed(5) + "end\n"


def test_arrivals_from_several_threads_are_all_counted():
    assert _run(THREADS, "test.point:2000").returncode == -signal.SIGKILL  # the last of 4 x 500 arrivals
    assert _run(THREADS, "test.point:2001").stdout == "end\n"
