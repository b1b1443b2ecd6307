"""Probing feature extraction: clips/s with all layers from one forward pass vs one forward pass per layer.

Ours is ``eval.probe.features.extract`` with an empty cache: decode in threads, peak-normalise, tile, batch
clips of like length, one forward pass per batch with ``output_hidden_states``, every layer pooled (mean and
std over time) and written to the SQLite cache. The reference is what a probe that reads one layer at a time
does: for each layer, the same decoding, preprocessing, batches and pooling, with a full forward pass for
that layer alone. Same model and clips; the reference's clips/s counts each clip once (all its layers).
Also reported: the cache's size on disk per clip (all layers) and per clip and layer.

The model is a HuBERT-base architecture (12 transformer layers, width 768: 13 hidden states, as
facebook/hubert-base-ls960 and AVES) with random weights: no weights can be downloaded here, and the compute
per clip depends on the architecture, not on the weights.

    python benchmarks/bench_probe_features.py [--clips 24] [--reference-clips 8] [--seconds 3] [--batch-size 8]
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

from eval.probe.encoders import SpeechEncoder  # noqa: E402
from eval.probe.features import LayerFeatureCache, _Pooler, extract, peak_normalise  # noqa: E402
from biolingual.audio import load_audio  # noqa: E402

NAME = "probe_features"
RATE = 16_000


def one_layer_per_pass(encoder: SpeechEncoder, files: list[str], batch_size: int) -> dict[int, np.ndarray]:
    """The reference: every layer from its own forward passes over all clips (same preprocessing and batches)."""
    clips = [encoder.chunks(peak_normalise(load_audio(f, RATE))[0])[0] for f in files]
    out = {}
    for layer in range(encoder.num_layers):
        rows = []
        for start in range(0, len(clips), batch_size):
            batch = torch.from_numpy(np.stack(clips[start : start + batch_size]))
            hidden = encoder.hidden_states(batch)[layer]
            pooler = _Pooler()
            for row in range(len(batch)):
                pooler.start(row, 1)
                rows.append(pooler.add(row, [hidden], row)[0])
        out[layer] = np.stack(rows)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--reference-clips", type=int, default=8, help="clips the reference is timed on")
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
        subset = files[: args.reference_clips]
        runs = {"n": 0}

        empty = LayerFeatureCache(Path(tmp) / "empty", encoder)
        empty_bytes = empty.nbytes()  # tables and indexes of a fresh cache: not part of the per-clip cost
        empty.close()

        def ours():
            runs["n"] += 1
            cache = LayerFeatureCache(Path(tmp) / f"cache{runs['n']}", encoder)
            keys, _ = extract(encoder, files, cache, args.batch_size, args.workers, progress=False)
            result = {layer: cache.features(keys[: len(subset)], layer) for layer in range(encoder.num_layers)}
            cache.close()
            return result, cache.path.stat().st_size

        def reference():
            return one_layer_per_pass(encoder, subset, args.batch_size)

        (ours_feats, cache_bytes), ref_feats = ours(), reference()  # warm-up, and the features to compare
        max_diff = max(float(np.abs(ours_feats[layer] - ref_feats[layer]).max()) for layer in ref_feats)
        with c.OtherLoad() as other:
            times = c.time_interleaved({"reference": reference, "ours": ours}, args.repeats)
    ours_rate = args.clips / c.median(times["ours"])
    ref_rate = len(subset) / c.median(times["reference"])
    layers, width = encoder.num_layers, encoder.module.config.hidden_size
    result = {
        **c.run_header(NAME), "model": "HuBERT base architecture, random weights", "layers": layers, "width": width,
        "clips": args.clips, "reference_clips": len(subset), "seconds": args.seconds, "batch_size": args.batch_size,
        "workers": args.workers, "times_s": times, "ours_clips_per_s": ours_rate, "reference_clips_per_s": ref_rate,
        "speedup": ours_rate / ref_rate, "max_abs_difference": max_diff, "cache_bytes": cache_bytes,
        "empty_cache_bytes": empty_bytes, "cache_bytes_per_clip": (cache_bytes - empty_bytes) / args.clips, "payload_bytes_per_clip": layers * 2 * width * 4,
        "other_processes_cpu_share": other.share,
    }
    per_clip = result["cache_bytes_per_clip"]
    header = ["extraction", "clips/s", "speed-up", "cache on disk"]
    rows = [["one forward pass per layer (reference)", f"{c.fmt_rate(ref_rate)} (on {len(subset)} clips)", "1.00x", "—"],
            ["all layers from one pass (ours, cold cache)", c.fmt_rate(ours_rate), c.fmt_ratio(result["speedup"]),
             f"{per_clip / 1024:.0f} KiB per clip ({per_clip / layers / 1024:.1f} KiB per clip and layer); "
             f"{(per_clip * 10_000 + empty_bytes) / 2**20:,.0f} MiB for 10,000 clips"]]
    notes = [
        f"{args.clips} synthetic {args.seconds:g} s clips at {RATE} Hz (WAV files); {layers} hidden states of width {width}, "
        f"each pooled to mean ++ std = {2 * width} float32 values ({result['payload_bytes_per_clip'] / 1024:.0f} KiB per "
        f"clip for all layers before SQLite's overhead; a fresh cache file takes {empty_bytes / 1024:.0f} KiB); batches of {args.batch_size}; median of {args.repeats} interleaved runs; CPU.",
        f"Both give the same features: largest absolute difference {max_diff:.1e}.",
    ]
    if other.share is not None:
        notes.append(f"Other processes used {other.share:.0%} of the machine's CPU time while these were timed.")
    md = c.markdown_table(header, rows) + "\n\n" + "\n".join(f"- {n}" for n in notes)
    return c.report(NAME, result, md)


if __name__ == "__main__":
    main()
