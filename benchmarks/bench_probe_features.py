"""Probing feature extraction: clips/s of eval.probe's extraction vs a plain transformers loop.

Ours is ``eval.probe.features.extract`` with an empty cache: decode in threads, peak-normalise, batch clips of
equal length, one forward pass per batch with ``output_hidden_states``, every layer pooled (mean and unbiased
std over time) and written to the SQLite cache. The reference is what a transformers user would write for the
same features: for each clip, read it with soundfile, peak-normalise it, run one forward pass with
``output_hidden_states=True`` and take every layer's mean and std over time (kept in memory, no cache). Same
model and clips; both get all layers from one pass per clip, so the ratio measures batching, threaded
decoding and the cache writes, not a layer-by-layer strawman. Also reported: the cache's size on disk per clip
(all layers) and per clip and layer.

The model is a HuBERT-base architecture (12 transformer layers, width 768: 13 hidden states, as
facebook/hubert-base-ls960 and AVES) with random weights: no weights can be downloaded here, and the compute
per clip depends on the architecture, not on the weights.

    python benchmarks/bench_probe_features.py [--clips 24] [--seconds 3] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import _common as c
import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for eval/

from eval.probe.encoders import SpeechEncoder
from eval.probe.features import LayerFeatureCache, extract

NAME = "probe_features"
RATE = 16_000


def plain_transformers(model, files: list[str]) -> dict[int, np.ndarray]:
    """The reference: per clip, soundfile, x / max|x|, one forward pass with every hidden state, mean ++ std."""
    rows = []
    for f in files:
        x, _ = sf.read(f, dtype="float32")
        x = x / np.abs(x).max()
        with torch.inference_mode():
            hidden = model(input_values=torch.from_numpy(x)[None], output_hidden_states=True).hidden_states
        rows.append([torch.cat([h[0].mean(0), h[0].std(0)]).numpy() for h in hidden])
    return {layer: np.stack([r[layer] for r in rows]) for layer in range(len(rows[0]))}


def to_markdown(result: dict) -> str:
    """The table and notes of one run (a run without the reference shows ours alone)."""
    layers, width, per_clip = result["layers"], result["width"], result["cache_bytes_per_clip"]
    ref_rate, empty_bytes = result.get("reference_clips_per_s"), result["empty_cache_bytes"]
    cache = (
        f"{per_clip / 1024:.0f} KiB per clip ({per_clip / layers / 1024:.1f} KiB per clip and layer); "
        f"{(per_clip * 10_000 + empty_bytes) / 2**20:,.0f} MiB for 10,000 clips"
    )
    header = ["extraction", "clips/s", "ratio", "cache on disk"]
    rows = [
        [
            "plain transformers loop, one clip per pass (reference)",
            c.fmt_rate(ref_rate),
            "1.00x" if ref_rate else "—",
            "—",
        ],
        [
            "`eval.probe` extraction (ours, cold cache)",
            c.fmt_rate(result["ours_clips_per_s"]),
            c.fmt_ratio(result["ours_clips_per_s"] / ref_rate) if ref_rate else "—",
            cache,
        ],
    ]
    notes = [
        f"{result['clips']} synthetic {result['seconds']:g} s clips at {RATE} Hz (WAV files); {layers} hidden states "
        f"of width {width}, each pooled to mean ++ std = {2 * width} float32 values "
        f"({result['payload_bytes_per_clip'] / 1024:.0f} KiB per clip for all layers before SQLite's overhead; a fresh "
        f"cache file takes {empty_bytes / 1024:.0f} KiB); batches of {result['batch_size']}; median of "
        f"{len(result['times_s']['ours'])} interleaved runs; CPU; run of {result['date']}.",
    ]
    if ref_rate:
        notes.append(f"Both give the same features: largest absolute difference {result['max_abs_difference']:.1e}.")
    else:
        notes.append(
            "No reference in this run: the earlier reference ran one full forward pass per layer, so its "
            "ratio only counted passes; re-run this script for the ratio against a plain transformers loop."
        )
    if result.get("other_processes_cpu_share") is not None:
        notes.append(
            f"Other processes used {result['other_processes_cpu_share']:.0%} of the machine's CPU time while "
            "these were timed."
        )
    return c.markdown_table(header, rows) + "\n\n" + "\n".join(f"- {n}" for n in notes)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--seconds", type=float, default=3.0, help="clip length (BEANS' Watkins clips are 3 s)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    c.quiet_transformers()
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    encoder = SpeechEncoder(HubertModel(HubertConfig()), "hubert-base (random)", "HubertConfig()", device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, clip in enumerate(c.synthetic_clips(args.clips, seconds=args.seconds, sampling_rate=RATE)):
            files.append(str(Path(tmp) / f"clip{i:04d}.wav"))
            sf.write(files[-1], clip, RATE)
        runs = {"n": 0}

        empty = LayerFeatureCache(Path(tmp) / "empty", encoder)
        empty_bytes = empty.nbytes()  # tables and indexes of a fresh cache: not part of the per-clip cost
        empty.close()

        def ours():
            runs["n"] += 1
            cache = LayerFeatureCache(Path(tmp) / f"cache{runs['n']}", encoder)
            keys, _ = extract(encoder, files, cache, args.batch_size, args.workers, progress=False)
            result = {layer: cache.features(keys, layer) for layer in range(encoder.num_layers)}
            cache.close()
            return result, cache.path.stat().st_size

        def reference():
            return plain_transformers(encoder.module, files)

        (ours_feats, cache_bytes), ref_feats = ours(), reference()  # warm-up, and the features to compare
        max_diff = max(float(np.abs(ours_feats[layer] - ref_feats[layer]).max()) for layer in ref_feats)
        with c.OtherLoad() as other:
            times = c.time_interleaved({"reference": reference, "ours": ours}, args.repeats)
    ours_rate, ref_rate = args.clips / c.median(times["ours"]), args.clips / c.median(times["reference"])
    layers, width = encoder.num_layers, encoder.module.config.hidden_size
    result = {
        **c.run_header(NAME),
        "model": "HuBERT base architecture, random weights",
        "layers": layers,
        "width": width,
        "reference": (
            "per clip: soundfile, peak-normalise, one forward pass with output_hidden_states=True, mean ++ std"
        ),
        "clips": args.clips,
        "seconds": args.seconds,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "times_s": times,
        "ours_clips_per_s": ours_rate,
        "reference_clips_per_s": ref_rate,
        "speedup": ours_rate / ref_rate,
        "max_abs_difference": max_diff,
        "cache_bytes": cache_bytes,
        "empty_cache_bytes": empty_bytes,
        "cache_bytes_per_clip": (cache_bytes - empty_bytes) / args.clips,
        "payload_bytes_per_clip": layers * 2 * width * 4,
        "other_processes_cpu_share": other.share,
    }
    return c.report(NAME, result, to_markdown(result))


if __name__ == "__main__":
    main()
