"""Indexing speed: hours of audio indexed per minute of wall time, `build_index` vs `embed_audio`.

Ours is ``biolingual.search.build_index`` on one long recording (streamed block by block, resampled
with soxr's ResampleStream, windows embedded in batches, float16 parts written). The reference is the
library's one-shot path on the same file, ``model.embed_audio(path)``: decode the whole file, resample,
cut into the same 10 s windows, embed them in batches of the same size (then pool). Both embed the same
number of windows with the same model, so the ratio shows what streaming and writing the index cost
(or save); the hours per minute show what a season of recordings takes on this machine.

The recording is synthetic (species calls over noise, 24 kHz, FLAC). No weights can be downloaded
here: each preset is freshly initialised (seed 0); the compute per window does not depend on the weights.

    python benchmarks/bench_search_indexing.py [--presets tiny base] [--minutes tiny=30 base=4] \
        [--batch-size N] [--repeats 3]
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

import biolingual
from biolingual.search import build_index
from biolingual.synthetic import SPECIES, synth_call
from biolingual.windows import iter_windows

NAME = "search_indexing"
RATE = 24_000
DEFAULT_MINUTES = {"tiny": 30.0, "base": 4.0}


def write_recording(path: Path, minutes: float) -> None:
    """``minutes`` of calls of the synthetic species one after another, one minute each, written in blocks."""
    species = sorted(SPECIES)
    with sf.SoundFile(path, "w", RATE, 1, format="FLAC", subtype="PCM_16") as f:
        for i in range(int(np.ceil(minutes))):
            seconds = min(60.0, minutes * 60 - i * 60)
            f.write(synth_call(species[i % len(species)], seconds, RATE, seed=i))


def bench(preset: str, minutes: float, batch_size: int | None, tmp: Path, repeats: int = 3) -> dict:
    recording = tmp / f"{preset}.flac"
    write_recording(recording, minutes)
    model = biolingual.create(preset, tokenizer_texts=[p.description for p in SPECIES.values()], seed=0, device="cpu")
    hours = minutes / 60
    model.embed_audio(np.zeros(2 * model.window_samples, np.float32), sampling_rate=model.sampling_rate)  # warm-up
    ref_s, our_s, ref_load, our_load = [], [], [], []
    for _ in range(repeats):  # interleaved, so that a slow spell of a shared machine falls on both alike
        with c.OtherLoad() as load:
            t = time.perf_counter()
            reference = model.embed_audio(str(recording), batch_size=batch_size, progress=False)
            ref_s.append(time.perf_counter() - t)
        ref_load.append(load.share)
        shutil.rmtree(tmp / f"index-{preset}", ignore_errors=True)  # a fresh index each round, not a resumed one
        with c.OtherLoad() as load:
            t = time.perf_counter()
            report = build_index([recording], model, tmp / f"index-{preset}", batch_size=batch_size, progress=False)
            our_s.append(time.perf_counter() - t)
        our_load.append(load.share)
    assert reference.shape[0] == 1
    ratios = [r / o for r, o in zip(ref_s, our_s)]
    # Decoding alone (read, resample, cut): what overlapping it with the model can save at most. With torch's
    # threads on every core it can only fill their parallel slack, so the ratio stays near 1 on a small machine.
    window = model.window_samples
    decode_s = c.median(
        [
            c.time_once(lambda: sum(1 for _ in iter_windows(recording, model.sampling_rate, window, window)))
            for _ in range(repeats)
        ]
    )
    return {
        "preset": preset,
        "audio_minutes": minutes,
        "windows": report.windows,
        "batch_size": batch_size,
        "repeats": repeats,
        "index_s": c.median(our_s),
        "reference_s": c.median(ref_s),
        "index_s_all": our_s,
        "reference_s_all": ref_s,
        "index_hours_per_minute": hours / (c.median(our_s) / 60),
        "reference_hours_per_minute": hours / (c.median(ref_s) / 60),
        "speedup_vs_reference": c.median(ratios),
        "decode_s": decode_s,
        "speedup_range": [min(ratios), max(ratios)],
        "other_load_index": max(our_load),
        "other_load_reference": max(ref_load),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "base"])
    parser.add_argument("--minutes", nargs="*", default=[], help="PRESET=MINUTES of audio per preset")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="windows per forward pass on both sides (default: the model's, as a user gets it)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds of both paths; medians are reported")
    args = parser.parse_args()
    c.quiet_transformers()
    minutes = {**DEFAULT_MINUTES, **{k: float(v) for k, v in (m.split("=") for m in args.minutes)}}
    load_start = c.load_average()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            r = bench(preset, minutes[preset], args.batch_size, Path(tmp), args.repeats)
            rows.append(r)
            print(
                f"{preset}: {r['index_hours_per_minute']:.3f} h of audio per minute indexed "
                f"({r['speedup_vs_reference']:.2f}x embed_audio), other load {r['other_load_index']}"
            )
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": c.machine_info(),
        "torch_threads": torch.get_num_threads(),
        "rows": rows,
        "load_average": [load_start, c.load_average()],
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    header = [
        "preset",
        "audio",
        "windows (10 s)",
        "build_index: h audio / min",
        "embed_audio (reference): h audio / min",
        "ratio vs reference",
        "range over rounds",
        "decoding alone: share of embed_audio's time",
        "other processes' CPU share",
    ]
    table = [
        [
            r["preset"],
            f"{r['audio_minutes']:g} min",
            r["windows"],
            f"{r['index_hours_per_minute']:.3f}",
            f"{r['reference_hours_per_minute']:.3f}",
            c.fmt_ratio(r["speedup_vs_reference"]),
            "–".join(f"{v:.2f}" for v in r["speedup_range"]),
            f"{r['decode_s']:.2f} s ({100 * r['decode_s'] / r['reference_s']:.0f}%)" if "decode_s" in r else "—",
            "—" if r["other_load_index"] is None else f"{100 * r['other_load_index']:.0f}%",
        ]
        for r in rows
    ]
    batch = (
        "the model's default on both sides (4 windows on a CPU, as a user gets them)"
        if args.batch_size is None
        else f"{args.batch_size} windows on both sides"
    )
    md = c.markdown_table(header, table) + (
        f"\n\n- Batches: {batch}. {args.repeats} interleaved rounds (embed_audio, "
        "then build_index into a fresh folder): median times, and the median and "
        "range of the per-round ratio. Decoding alone: reading, resampling and cutting the recording "
        "(what overlapping it with the model could save at most; torch's threads "
        "already use every core, so the decoder can only take their idle time)."
    )
    print(md)
    print("wrote", *c.write_outputs(NAME, result, md))


if __name__ == "__main__":
    main()
