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


@pytest.mark.parametrize(
    "kill_at, arrivals",
    [("test.point", 1), ("test.point:3", 3), ("nowhere,test.point:2", 2), ("test.point:4,test.other:2", 2)],
)
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


def test_fail_at_raises_the_named_os_error_from_the_chosen_arrival_on(monkeypatch, tmp_path):
    """BIOLINGUAL_FAIL_AT makes a point raise the OSError a full disk (or a refused folder) would, from the chosen
    arrival on; biolingual.atomic turns such a failure, wrapped or not (torch.save raises a RuntimeError while
    handling the OSError), into one WriteError naming the file, and leaves no temporary file."""
    import errno

    import torch

    from biolingual import faults
    from biolingual.atomic import atomic_write, atomic_write_text
    from biolingual.errors import WriteError

    monkeypatch.setattr(faults, "_reached", faults.Counter())
    monkeypatch.setenv(faults.FAIL_ENV, "test.point:2=ENOSPC,test.other=EACCES")
    faults.fault_point("test.point")
    for _ in range(2):  # a full disk stays full
        with pytest.raises(OSError) as info:
            faults.fault_point("test.point", tmp_path / "x")
        assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "x")
    with pytest.raises(PermissionError):
        faults.fault_point("test.other")
    monkeypatch.setenv(faults.FAIL_ENV, "atomic.write=ENOSPC")
    (tmp_path / "kept.txt").write_text("old")
    with pytest.raises(WriteError, match=r"^could not write '.*kept.txt': No space left on device$"):
        atomic_write_text(tmp_path / "kept.txt", "new")
    monkeypatch.delenv(faults.FAIL_ENV)
    with (
        pytest.raises(WriteError, match=r"could not write '.*model.pt': No space left on device"),
        open("/dev/full", "wb", buffering=0) as full,
    ):
        atomic_write(tmp_path / "model.pt", lambda f: torch.save({"w": torch.zeros(100_000)}, full))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.txt"] and (tmp_path / "kept.txt").read_text() == "old"
