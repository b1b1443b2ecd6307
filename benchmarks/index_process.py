"""`build_index` timed as the `biolingual index` command runs it: in its own process, with the environment the
command's entry point sets before torch loads (:mod:`biolingual.launch`: OpenMP's idle threads sleep instead of
spinning, so the decoding thread gets the cores). That setting cannot be made inside a process that has already
imported torch, so the benchmarks that compare indexing with ``embed_audio`` (which runs with torch's defaults,
in the benchmark's own process) time it here.

    index_seconds(preset, texts, recording, folder, batch_size, dtype) -> (seconds, windows)

The child builds the same freshly initialised model (``biolingual.create(preset, tokenizer_texts=texts, seed=0)``),
warms it up at the precision, and times only ``build_index``; model building and imports are not counted.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def index_seconds(preset: str, texts: list[str], recording: Path, folder: Path, batch_size: int | None,
                  dtype: str = "float32") -> tuple[float, int]:
    """Seconds ``build_index`` took on ``recording`` into ``folder`` in a child process, and the windows indexed."""
    from biolingual.launch import process_environment

    env = {**os.environ, **process_environment(["index"], os.environ)}
    spec = json.dumps({"preset": preset, "texts": texts, "recording": str(recording), "folder": str(folder),
                       "batch_size": batch_size, "dtype": dtype})
    out = subprocess.run([sys.executable, __file__, spec], capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"indexing child failed:\n{out.stderr[-4000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["seconds"], result["windows"]


def _child(spec: dict) -> None:
    import numpy as np

    import biolingual
    from biolingual.search import build_index

    model = biolingual.create(spec["preset"], tokenizer_texts=spec["texts"], seed=0, device="cpu")
    batch = spec["batch_size"] or model.default_audio_batch
    model.embed_audio(np.zeros(batch * model.window_samples, np.float32), sampling_rate=model.sampling_rate,
                      batch_size=batch, dtype=spec["dtype"], progress=False)  # warm-up: oneDNN primitives, int8 copy
    t = time.perf_counter()
    report = build_index([spec["recording"]], model, spec["folder"], batch_size=spec["batch_size"], dtype=spec["dtype"],
                         progress=False)
    seconds = time.perf_counter() - t
    print(json.dumps({"seconds": seconds, "windows": report.windows,
                      "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}))


if __name__ == "__main__":
    import _common as c  # this file's folder is on the path when it runs as a script

    c.quiet_transformers()
    _child(json.loads(sys.argv[1]))
