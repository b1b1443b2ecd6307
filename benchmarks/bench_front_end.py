"""Front end: clips/s of the batched torch front end vs transformers' ClapFeatureExtractor, and how far
its features are from the reference's.

Target: at least 2x the reference's clips/s with the default precision (float32), on the same 10 s
clips at 48 kHz, on this CPU. float64 is reported too. On a machine with a GPU, ours is also timed on CUDA.

The precision figures (``precision_figures``; deterministic, so ``--precision-only`` measures them without
timing anything) are the ones docs/audio.md, docs/performance.md and the docstring of biolingual/features.py
quote: the largest |ours - reference| in dB over synthetic calls recorded at 16, 44.1 and 48 kHz (3 s and
10 s, resampled to 48 kHz), overall and over the cells above -60 dB, per precision.

    python benchmarks/bench_front_end.py [--clips 64] [--batch-sizes 16 64] [--repeats 3]
    python benchmarks/bench_front_end.py --precision-only   # writes results/front_end_precision.{json,md}
"""

from __future__ import annotations

import argparse

import _common as c
import numpy as np
import torch

from biolingual.audio import load_audio, repeat_pad
from biolingual.features import FrontEndConfig, LogMelFrontEnd
from biolingual.synthetic import synth_call

NAME = "front_end"
PRECISION_NAME = "front_end_precision"
TARGET = 2.0
AUDIBLE_DB = -60.0


def precision_figures() -> dict:
    """Max |ours - ClapFeatureExtractor| in dB per precision: on full-band clips (recorded at 44.1 or 48 kHz),
    and on clips recorded at 16 kHz (upsampled: their empty upper band sits near the -100 dB floor), overall
    and over the cells above AUDIBLE_DB. The same clips as tests/test_features.py."""
    config = FrontEndConfig()
    reference = config.to_feature_extractor()
    out: dict = {
        "audible_db": AUDIBLE_DB,
        "clips": "synth_call('Common Loon', noise=0.05) at 16000, 44100 and "
        "48000 Hz, 3 s and 10 s, resampled to 48 kHz",
    }
    for precision in ("float32", "float64"):
        front_end = LogMelFrontEnd(config, precision=precision)
        worst = {"full_band": 0.0, "recorded_16k": 0.0, "recorded_16k_audible": 0.0}
        clips = c.synthetic_clips(
            64, seconds=config.max_length_s, sampling_rate=config.sampling_rate
        )  # the timed clips
        expected = reference(clips, sampling_rate=config.sampling_rate, return_tensors="np")["input_features"]
        ours = torch.cat([front_end(torch.from_numpy(np.stack(clips[i : i + 16]))) for i in range(0, 64, 16)]).numpy()
        worst["benchmark_clips"] = float(np.abs(ours - expected).max())
        for rate in (16000, 44100, 48000):
            for seconds in (3.0, 10.0):
                raw = synth_call("Common Loon", seconds, rate, seed=int(rate + seconds), noise=0.05)
                audio = load_audio(raw, config.sampling_rate, sampling_rate=rate)
                expected = reference(audio, sampling_rate=config.sampling_rate, return_tensors="np")["input_features"]
                ours = front_end(torch.from_numpy(repeat_pad(audio, config.window_samples))).numpy()
                diff = np.abs(ours - expected)
                if rate == 16000:
                    worst["recorded_16k"] = max(worst["recorded_16k"], float(diff.max()))
                    worst["recorded_16k_audible"] = max(
                        worst["recorded_16k_audible"], float(diff[expected > AUDIBLE_DB].max())
                    )
                else:
                    worst["full_band"] = max(worst["full_band"], float(diff.max()))
        out[precision] = worst
    return out


def precision_markdown(p: dict) -> str:
    rows = [
        [
            precision,
            f"{p[precision]['benchmark_clips']:.1e}",
            f"{p[precision]['full_band']:.1e}",
            f"{p[precision]['recorded_16k_audible']:.1e}",
            f"{p[precision]['recorded_16k']:.1e}",
        ]
        for precision in ("float32", "float64")
    ]
    header = [
        "precision",
        "the 64 timed clips (48 kHz)",
        "calls recorded at 44.1/48 kHz",
        f"recorded at 16 kHz, cells above {p['audible_db']:g} dB",
        "recorded at 16 kHz, all cells",
    ]
    return (
        c.markdown_table(header, rows) + f"\n\n- Max \\|ours − ClapFeatureExtractor\\| in dB; clips: {p['clips']}. "
        "The timed clips are the timing table's 64 synthetic 10 s clips at 48 kHz. Deterministic: "
        "`benchmarks/bench_front_end.py --precision-only` measures it again."
    )


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
                [
                    front_end(torch.from_numpy(np.stack(clips[i : i + 16])).to(device)).cpu()
                    for i in range(0, n_clips, 16)
                ]
            ).numpy()
            max_abs_db = float(np.abs(ours_features - ref_features).max())
            for bs in batch_sizes:
                key = f"{device}/{precision}/batch{bs}"
                fns[key] = _ours(front_end, clips, bs, device)
                fn_devices[key] = device
                variants[key] = {
                    "device": device,
                    "precision": precision,
                    "batch_size": bs,
                    "max_abs_diff_db": max_abs_db,
                }
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
        rows.append(
            {
                **v,
                "median_s": s,
                "times_s": times[key],
                "clips_per_s": rate,
                "speedup": rate / ref_rate,
                "target": TARGET if default else None,
                "target_met": (rate / ref_rate >= TARGET) if default else None,
            }
        )
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
    header = [
        "Ours (LogMelFrontEnd)",
        "Reference clips/s",
        "Ours clips/s",
        "Speed-up",
        "Target",
        "Max \\|Δ\\| vs reference (dB)",
    ]
    rows = []
    for r in result["ours"]:
        target = "—" if r["target"] is None else f"≥ {r['target']:g}x ({'met' if r['target_met'] else 'NOT met'})"
        rows.append(
            [
                f"{r['precision']}{' (default)' if r['precision'] == 'float32' else ''}, batch {r['batch_size']}, "
                f"{r['device']}",
                c.fmt_rate(ref["clips_per_s"]),
                c.fmt_rate(r["clips_per_s"]),
                c.fmt_ratio(r["speedup"]),
                target,
                f"{r['max_abs_diff_db']:.1e}",
            ]
        )
    notes = [
        f"{result['clips']} synthetic clips of exactly {result['clip_seconds']:g} s at {result['sampling_rate']} Hz; "
        f"median of {result['repeats']} interleaved runs; reference: {ref['name']}.",
        "Ours includes stacking each batch into a tensor and returning the features to the CPU.",
    ]
    by_key = {(r["device"], r["precision"], r["batch_size"]): r["clips_per_s"] for r in result["ours"]}
    gains = [rate / by_key[(d, "float64", bs)] for (d, p, bs), rate in by_key.items() if p == "float32"]
    notes.append(
        f"float32 (the default) ran {min(gains):.1f}-{max(gains):.1f}x as fast as float64 here; the last column is "
        "measured on these clips. Precision on full-band and 16 kHz recordings: the table below."
    )
    if result["other_processes_cpu_share"] is not None:
        notes.append(
            f"Other processes used {result['other_processes_cpu_share']:.0%} of the machine's CPU time "
            "while these were timed."
        )
    if not result["gpu_available"]:
        notes.append("No GPU on this machine: ours was timed on the CPU only.")
    return c.markdown_table(header, rows) + "\n\n" + "\n".join(f"- {n}" for n in notes)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision-only", action="store_true", help="measure the precision figures only (no timing)")
    args = parser.parse_args(argv)
    precision = precision_figures()
    c.report(PRECISION_NAME, {"benchmark": PRECISION_NAME, **precision}, precision_markdown(precision))
    if args.precision_only:
        return precision
    result = run(args.clips, tuple(args.batch_sizes), args.repeats)
    return c.report(NAME, result, to_markdown(result))


if __name__ == "__main__":
    main()
