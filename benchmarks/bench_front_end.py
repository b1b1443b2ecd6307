"""Front end: clips/s of the batched torch front end vs transformers' ClapFeatureExtractor.

Target: at least 2x the reference's clips/s with the default precision (float32), on the same 10 s
clips at 48 kHz, on this CPU. float64 is reported too (it matches the reference to 1e-3 dB everywhere;
see the docstring of biolingual/features.py). On a machine with a GPU, ours is also timed on CUDA.

    python benchmarks/bench_front_end.py [--clips 64] [--batch-sizes 16 64] [--repeats 3]
"""
from __future__ import annotations

import argparse

import _common as c
import numpy as np
import torch

from biolingual.features import FrontEndConfig, LogMelFrontEnd

NAME = "front_end"
TARGET = 2.0


def _ours(front_end: LogMelFrontEnd, clips: list[np.ndarray], batch_size: int, device: str):
    """Stack each batch, move it to ``device``, compute the features and bring them back (as a loader would)."""

    def run():
        for i in range(0, len(clips), batch_size):
            front_end(torch.from_numpy(np.stack(clips[i : i + batch_size])).to(device)).cpu()

    return run


def run(n_clips: int = 64, batch_sizes: tuple[int, ...] = (16, 64), repeats: int = 3) -> dict:
    c.quiet_transformers()
    config = FrontEndConfig()
    clips = c.synthetic_clips(n_clips, seconds=config.max_length_s, sampling_rate=config.sampling_rate)
    if any(len(x) != config.window_samples for x in clips):
        raise RuntimeError("the synthetic clips must be exactly one model window long")
    reference = config.to_feature_extractor()

    def run_reference():
        return reference(clips, sampling_rate=config.sampling_rate, return_tensors="np")

    ref_features = run_reference()["input_features"]  # also the warm-up

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    fns, fn_devices, variants = {"reference": run_reference}, {}, {}
    for device in devices:
        for precision in ("float32", "float64"):
            front_end = LogMelFrontEnd(config, precision=precision).to(device)
            # How far ours is from the reference on these clips, in dB (the features are 10*log10 mel).
            ours_features = torch.cat(
                [front_end(torch.from_numpy(np.stack(clips[i : i + 16])).to(device)).cpu() for i in range(0, n_clips, 16)]
            ).numpy()
            max_abs_db = float(np.abs(ours_features - ref_features).max())
            for bs in batch_sizes:
                key = f"{device}/{precision}/batch{bs}"
                fns[key] = _ours(front_end, clips, bs, device)
                fn_devices[key] = device
                variants[key] = {"device": device, "precision": precision, "batch_size": bs, "max_abs_diff_db": max_abs_db}
                fns[key]()  # warm-up at this batch shape

    with c.OtherLoad() as other:
        times = c.time_interleaved(fns, repeats, fn_devices)
    ref_s = c.median(times["reference"])
    ref_rate = n_clips / ref_s
    rows = []
    for key, v in variants.items():
        s = c.median(times[key])
        rate = n_clips / s
        default = v["precision"] == "float32"
        rows.append({
            **v,
            "median_s": s,
            "times_s": times[key],
            "clips_per_s": rate,
            "speedup": rate / ref_rate,
            "target": TARGET if default else None,
            "target_met": (rate / ref_rate >= TARGET) if default else None,
        })
    return {
        **c.run_header(NAME),
        "clips": n_clips,
        "clip_seconds": config.max_length_s,
        "sampling_rate": config.sampling_rate,
        "repeats": repeats,
        "other_processes_cpu_share": other.share,
        "reference": {
            "name": "transformers ClapFeatureExtractor (numpy, float64), called on the list of clips",
            "median_s": ref_s,
            "times_s": times["reference"],
            "clips_per_s": ref_rate,
        },
        "ours": rows,
    }


def to_markdown(result: dict) -> str:
    ref = result["reference"]
    header = ["Ours (LogMelFrontEnd)", "Reference clips/s", "Ours clips/s", "Speed-up", "Target", "Max \\|Δ\\| vs reference (dB)"]
    rows = []
    for r in result["ours"]:
        target = "—" if r["target"] is None else f"≥ {r['target']:g}x ({'met' if r['target_met'] else 'NOT met'})"
        rows.append([
            f"{r['precision']}{' (default)' if r['precision'] == 'float32' else ''}, batch {r['batch_size']}, {r['device']}",
            c.fmt_rate(ref["clips_per_s"]),
            c.fmt_rate(r["clips_per_s"]),
            c.fmt_ratio(r["speedup"]),
            target,
            f"{r['max_abs_diff_db']:.1e}",
        ])
    notes = [
        f"{result['clips']} synthetic clips of exactly {result['clip_seconds']:g} s at {result['sampling_rate']} Hz; "
        f"median of {result['repeats']} interleaved runs; reference: {ref['name']}.",
        "Ours includes stacking each batch into a tensor and returning the features to the CPU.",
    ]
    by_key = {(r["device"], r["precision"], r["batch_size"]): r["clips_per_s"] for r in result["ours"]}
    gains = [rate / by_key[(d, "float64", bs)] for (d, p, bs), rate in by_key.items() if p == "float32"]
    notes.append(
        f"float32 (the default) ran {min(gains):.1f}-{max(gains):.1f}x as fast as float64 here; float64 matches the "
        "reference within 1e-3 dB everywhere: see the docstring of `biolingual/features.py` for the precision trade-off."
    )
    if result["other_processes_cpu_share"] is not None:
        notes.append(f"Other processes used {result['other_processes_cpu_share']:.0%} of the machine's CPU time "
                     "while these were timed.")
    if not result["gpu_available"]:
        notes.append("No GPU on this machine: ours was timed on the CPU only.")
    return c.markdown_table(header, rows) + "\n\n" + "\n".join(f"- {n}" for n in notes)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    result = run(args.clips, tuple(args.batch_sizes), args.repeats)
    return c.report(NAME, result, to_markdown(result))


if __name__ == "__main__":
    main()
