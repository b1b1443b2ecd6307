"""Shared helpers for the benchmark scripts: timing, machine info, synthetic clips, markdown, output files.

A benchmark measures; it never asserts a time. Every figure it reports is a ratio against a named
reference measured in the same run on the same machine.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here needs the hub; models are built locally

import numpy as np
import torch
import transformers

from biolingual.synthetic import SPECIES, synth_call

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SAMPLING_RATE = 48_000


def quiet_transformers() -> None:
    """No progress bars or advisory warnings in the benchmark output."""
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def synthetic_clips(n: int, seconds: float = 10.0, sampling_rate: int = SAMPLING_RATE) -> list[np.ndarray]:
    """``n`` deterministic synthetic calls (species cycled, seed = clip index), float32 mono."""
    species = sorted(SPECIES)
    return [synth_call(species[i % len(species)], seconds, sampling_rate, seed=i) for i in range(n)]


def sync(device: torch.device | str | None = None) -> None:
    if torch.cuda.is_available() and torch.device(device or "cpu").type == "cuda":
        torch.cuda.synchronize()


def time_once(fn: Callable[[], object], device=None) -> float:
    """Seconds one call of ``fn`` takes (waiting for the GPU when ``device`` is CUDA)."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def time_interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, devices: dict | None = None
) -> dict[str, list[float]]:
    """Time each function ``repeats`` times, in rounds (a, b, c, a, b, c, ...), so that a slow spell on a
    shared machine hits the reference and ours alike. Warm up before calling this."""
    devices = devices or {}
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(time_once(fn, devices.get(name)))
    return times


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    info = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    if hasattr(os, "sched_getaffinity"):
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    return info


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: other work on the machine shows up here."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _proc_stat(pid: int | str) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (which may hold spaces): field 0 is the state."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def own_tree_cpu_seconds(root: int | None = None) -> float:
    """CPU seconds of this process and every descendant: those alive now (their own time and that of their
    reaped children) and those already reaped (the root's cutime + cstime). Linux only.

    A loader worker or subprocess that exits between two readings moves from 'alive' to the parent's
    cumulative children time with its full total, so differences of this count stay right."""
    tick = os.sysconf("SC_CLK_TCK")
    root = os.getpid() if root is None else root
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _proc_stat(entry)) is not None:
            stats[int(entry)] = fields
            children.setdefault(int(fields[1]), []).append(int(entry))  # field 1 is the parent's pid
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        fields = stats.get(pid) or _proc_stat(pid)
        if fields is not None:
            total += sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
        todo += children.get(pid, [])
    return total / tick


def _cpu_seconds() -> tuple[float, float] | None:
    """(busy CPU seconds of the whole machine, CPU seconds of this process and its descendants) so far; Linux only."""
    try:
        tick = os.sysconf("SC_CLK_TCK")
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in fields[:8])
        machine = (user + nice + system + irq + softirq + steal) / tick
        return machine, own_tree_cpu_seconds()
    except (OSError, ValueError, IndexError):
        return None


class OtherLoad:
    """Measures how much CPU other processes took while the block ran, as a share of all CPUs: the machine's
    busy time minus that of this process and its descendants (loader workers, subprocesses), so a figure
    measured on a busy machine says so in its results and a benchmark's own workers never count as 'other'."""

    def __enter__(self):
        self.start, self.t0 = _cpu_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        end, wall = _cpu_seconds(), time.perf_counter() - self.t0
        if self.start is None or end is None or wall <= 0:
            self.share = None
        else:
            others = (end[0] - self.start[0]) - (end[1] - self.start[1])
            self.share = max(0.0, others / (wall * (os.cpu_count() or 1)))
        return False


class Worker:
    """A benchmark's other side in a process of its own, often under another virtual environment's python (a
    tool whose dependencies are not ours: benchmarks/store_worker.py, birdnet_worker.py): one JSON command in on
    its stdin, one JSON answer out on its stdout."""

    def __init__(self, python: str, script: Path, *args: str):
        self.proc = subprocess.Popen(
            [python, str(script), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
        )

    def ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the worker ended (exit {self.proc.wait()})")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt_rate(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:,.1f}" if x >= 10 else f"{x:.2f}"


def fmt_ratio(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}x"


def fmt_params(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"


def write_outputs(name: str, result: dict, markdown: str) -> tuple[Path, Path]:
    """Write ``benchmarks/results/<name>.json`` and ``<name>.md``."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    json_path, md_path = RESULTS_DIR / f"{name}.json", RESULTS_DIR / f"{name}.md"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    md_path.write_text(markdown + "\n")
    return json_path, md_path


def run_header(name: str) -> dict:
    """The fields every benchmark result starts with: what, when, on which machine, under what load."""
    import datetime as dt

    return {
        "benchmark": name,
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(),
        "load_average": load_average(),
        "gpu_available": torch.cuda.is_available(),
    }


def report(name: str, result: dict, markdown: str) -> dict:
    """Print a benchmark's table and keep it with its raw timings in benchmarks/results/."""
    print(markdown)
    json_path, md_path = write_outputs(name, result, markdown)
    print(f"\nwrote {json_path} and {md_path}")
    return result
