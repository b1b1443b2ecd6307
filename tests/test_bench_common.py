"""The benchmarks' measure of other processes' CPU load (benchmarks/_common.py) counts the benchmark's own
children (loader workers, subprocesses) as its own, whether they are still running or already reaped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _common as c

BURN = 0.5  # CPU seconds the child uses before it reports


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="reads /proc (Linux)")
def test_own_cpu_time_includes_live_and_reaped_children():
    before = c._cpu_seconds()[1]
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import sys, time\nwhile time.process_time() < {BURN}: pass\nprint('burnt', flush=True)\nsys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "burnt"  # the child is alive and has used BURN CPU seconds
        alive = c._cpu_seconds()[1]
    finally:
        child.stdin.close()
        child.wait()
    reaped = c._cpu_seconds()[1]
    assert alive - before >= BURN - 0.05  # clock ticks are 10 ms
    assert reaped >= alive
