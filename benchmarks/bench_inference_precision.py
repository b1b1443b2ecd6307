"""Inference precision: `biolingual index` at float32, bfloat16 and int8 against float32 `embed_audio`, with the
accuracy each precision keeps and how close the audio tower gets to this CPU's matrix units.

For each preset, one synthetic recording (species calls over noise, 24 kHz FLAC, one species a minute)
is embedded five ways in one run: the library's one-shot ``model.embed_audio(path)`` at float32 (the
reference), then ``build_index`` (what ``biolingual index`` runs) into a fresh folder at float32,
bfloat16 and int8 (``--dtype``). All embed the same 10 s windows (hop = window) in batches of the same
size. Reported: windows/s and hours of audio per minute of wall time, the ratio to the reference, the
minimum and mean cosine of each window's embedding to the float32 index's, and the mean top-50 overlap
of 100 text queries (float32 query embeddings; species names in several phrasings) between the float32
index and each other one.

The ceiling table counts the FLOPs of one 10 s window through the audio tower (front end excluded;
``torch.utils.flop_counter.FlopCounterMode`` at float32, the same work at every precision: int8's
quantized linear layers do the same multiply-adds), multiplies by the tower's own windows/s at each
precision (forward passes on prepared features, no decoding) and by the index's windows/s, and sets
them against the practical peak of this CPU: a large square matmul (2048^3) at float32, bfloat16
(``torch.mm``) and int8 (``torch._int_mm``, and the dynamic quantized linear op int8 indexing uses).

No weights can be downloaded here: each preset is freshly initialised (seed 0). Compute per window does
not depend on the weights, but accuracy can: an untrained model's embeddings are closer to each other
than a trained one's, so the cosines and above all the top-50 overlaps are harder tests here than on
the published model (near-ties reorder under small perturbations).

    python benchmarks/bench_inference_precision.py [--presets tiny base] [--minutes tiny=60 base=20] [--batch-size 16]
"""
from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
import warnings
from pathlib import Path

import _common as c
import numpy as np
import torch
from bench_search_indexing import write_recording
from torch.utils.flop_counter import FlopCounterMode

import biolingual
from biolingual.precision import cpu_flags, quantize_linears, resolve_precision
from biolingual.search import build_index, load_index
from biolingual.synthetic import SPECIES

NAME = "inference_precision"
DEFAULT_MINUTES = {"tiny": 60.0, "base": 20.0}
PRECISIONS = ("float32", "bfloat16", "int8")
PHRASINGS = ("The sound of a {}", "{} calling", "a {} singing at night", "{} song", "recording of a {}",
             "a distant {}", "{} call in the rain", "close-up {}", "{} chorus")


def queries(n: int = 100) -> list[str]:
    """``n`` text queries: the synthetic species in several phrasings."""
    names = sorted(SPECIES)
    return [PHRASINGS[i // len(names) % len(PHRASINGS)].format(names[i % len(names)]) for i in range(n)]


def window_flops(model) -> int:
    """FLOPs (2 x multiply-adds) of one 10 s window through the audio tower and projection, front end excluded."""
    features = model.front_end(torch.zeros(1, model.window_samples))
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.encode_features(features)
    return int(counter.get_total_flops())


def tower_rate(model, precision: str, batch_size: int, repeats: int = 2) -> float:
    """Windows/s of the audio tower alone at ``precision`` (features prepared, best of ``repeats``)."""
    features = model.front_end(torch.randn(batch_size, model.window_samples) * 0.1)
    with model.inference(precision):
        model.encode_features(features)  # warm-up: oneDNN primitives, the int8 copy
        best = min(c.time_once(lambda: model.encode_features(features)) for _ in range(repeats))
    return batch_size / best


def matmul_peaks(n: int = 2048, repeats: int = 3) -> dict:
    """Practical peak (GFLOP/s or GOP/s) of an n^3 matmul per kind, best of ``repeats``."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    ai, bi = torch.randint(-128, 128, (n, n), dtype=torch.int8), torch.randint(-128, 128, (n, n), dtype=torch.int8)
    quantized = quantize_linears(torch.nn.Linear(n, n, bias=False))  # what --dtype int8 does to the towers
    kinds = {"float32 (torch.mm)": lambda: a @ b, "bfloat16 (torch.mm)": (lambda x, y: lambda: x @ y)(a.bfloat16(), b.bfloat16()),
             "int8 (torch._int_mm)": lambda: torch._int_mm(ai, bi), "int8 (dynamic quantized linear)": lambda: quantized(a)}
    out = {}
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, fn in kinds.items():
            fn()
            best = min(c.time_once(fn) for _ in range(repeats))
            out[name] = 2 * n**3 / best / 1e9
    return out


def top_overlap(reference: np.ndarray, other: np.ndarray, q: np.ndarray, k: int = 50) -> float:
    """Mean over queries of |top-k of reference ∩ top-k of other| / k (cosine ranking, exact)."""
    k = min(k, len(reference))
    ra, rb = np.argsort(-(q @ reference.T), axis=1)[:, :k], np.argsort(-(q @ other.T), axis=1)[:, :k]
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(ra, rb)]))


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def bench(preset: str, minutes: float, batch_size: int, tmp: Path) -> dict:
    recording = tmp / f"{preset}.flac"
    write_recording(recording, minutes)
    model = biolingual.create(preset, tokenizer_texts=[p.description for p in SPECIES.values()] + queries(), seed=0,
                              device="cpu")
    hours = minutes / 60
    for precision in PRECISIONS:  # warm-up at each precision (oneDNN primitives, the int8 copy), all batch shapes
        model.embed_audio(np.zeros(batch_size * model.window_samples, np.float32), sampling_rate=model.sampling_rate,
                          batch_size=batch_size, dtype=precision, progress=False)
    runs = {}
    with c.OtherLoad() as load:
        t = time.perf_counter()
        model.embed_audio(str(recording), batch_size=batch_size, progress=False)
        runs["embed_audio float32"] = {"seconds": time.perf_counter() - t, "other_load": None}
    runs["embed_audio float32"]["other_load"] = load.share
    embeddings = {}
    for precision in PRECISIONS:
        folder = tmp / f"index-{preset}-{precision}"
        with c.OtherLoad() as load:
            t = time.perf_counter()
            report = build_index([recording], model, folder, batch_size=batch_size, dtype=precision, progress=False)
            seconds = time.perf_counter() - t
        runs[f"index {precision}"] = {"seconds": seconds, "other_load": load.share, "windows": report.windows}
        embeddings[precision] = unit(load_index(folder).embeddings)
    windows = runs["index float32"]["windows"]
    q = model.embed_text(queries()).numpy()
    rows = []
    reference_s = runs["embed_audio float32"]["seconds"]
    for name, r in runs.items():
        precision = name.split()[-1]
        row = {"path": name, "seconds": r["seconds"], "windows_per_s": windows / r["seconds"],
               "hours_per_minute": hours / (r["seconds"] / 60), "ratio_vs_embed_audio": reference_s / r["seconds"],
               "other_load": r["other_load"]}
        if name.startswith("index") and precision != "float32":
            cos = (embeddings[precision] * embeddings["float32"]).sum(1)
            row.update(min_cosine=float(cos.min()), mean_cosine=float(cos.mean()),
                       top50_overlap=top_overlap(embeddings["float32"], embeddings[precision], q))
        rows.append(row)
    flops = window_flops(model)
    tower = {p: tower_rate(model, p, batch_size) for p in PRECISIONS}
    return {"preset": preset, "audio_minutes": minutes, "windows": windows, "batch_size": batch_size, "rows": rows,
            "gflop_per_window": flops / 1e9, "tower_windows_per_s": tower,
            "index_windows_per_s": {p: windows / runs[f"index {p}"]["seconds"] for p in PRECISIONS}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "base"])
    parser.add_argument("--minutes", nargs="*", default=[], help="PRESET=MINUTES of audio per preset")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--render-only", action="store_true", help="rewrite the .md from the saved json")
    args = parser.parse_args()
    if args.render_only:
        render(json.loads((c.RESULTS_DIR / f"{NAME}.json").read_text()), args.batch_size)
        return
    c.quiet_transformers()
    minutes = {**DEFAULT_MINUTES, **{k: float(v) for k, v in (m.split("=") for m in args.minutes)}}
    result = {**c.run_header(NAME), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
              "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "cpu_flags": sorted(f for f in cpu_flags() if "bf16" in f or "amx" in f or "vnni" in f),
              "auto_chooses": resolve_precision("auto", "cpu"), "presets": []}
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            r = bench(preset, minutes[preset], args.batch_size, Path(tmp))
            result["presets"].append(r)
            print(f"{preset}: " + ", ".join(f"{x['path']} {x['ratio_vs_embed_audio']:.2f}x" for x in r["rows"]), flush=True)
    result["matmul_peak_gflops"] = peaks = matmul_peaks()
    result["load_average_end"] = c.load_average()
    result["max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    render(result, args.batch_size)


def render(result: dict, batch_size: int) -> None:
    """results/inference_precision.md from the measured ``result`` (``--render-only`` re-reads the saved json)."""
    peaks = result["matmul_peak_gflops"]

    def fmt(x, digits=4):
        return "—" if x is None else f"{x:.{digits}f}"

    header = ["preset", "path (precision)", "windows/s", "h audio / min", "vs float32 embed_audio", "min cosine",
              "mean cosine", "top-50 overlap", "other processes' CPU"]
    table = []
    for r in result["presets"]:
        for x in r["rows"]:
            table.append([r["preset"], x["path"], f"{x['windows_per_s']:.2f}", f"{x['hours_per_minute']:.3f}",
                          c.fmt_ratio(x["ratio_vs_embed_audio"]), fmt(x.get("min_cosine"), 5), fmt(x.get("mean_cosine"), 5),
                          fmt(x.get("top50_overlap"), 3), "—" if x["other_load"] is None else f"{100 * x['other_load']:.0f}%"])
    ceiling = []
    fp32_peak, bf16_peak = peaks["float32 (torch.mm)"], peaks["bfloat16 (torch.mm)"]
    # the int8 peak is what the CPU's int8 units reach (torch._int_mm); the dynamic quantized linear op that int8
    # indexing runs reaches far less (it quantizes activations on every call), which the list below shows
    int8_peak = peaks["int8 (torch._int_mm)"]
    for r in result["presets"]:
        for p, peak in zip(PRECISIONS, (fp32_peak, bf16_peak, int8_peak)):
            tower = r["gflop_per_window"] * r["tower_windows_per_s"][p]
            index = r["gflop_per_window"] * r["index_windows_per_s"][p]
            ceiling.append([r["preset"], p, f"{r['gflop_per_window']:.2f}", f"{tower:.1f}", f"{index:.1f}", f"{peak:.1f}",
                            f"{100 * tower / peak:.0f}%"])
    md = "\n".join([
        c.markdown_table(header, table), "",
        f"- Synthetic recordings (species calls over noise, 24 kHz FLAC): "
        + ", ".join(f"{r['preset']} {r['audio_minutes']:g} min ({r['windows']} windows of 10 s)" for r in result["presets"])
        + f"; batches of {batch_size}; freshly initialised weights (seed 0); one run each, in this order; "
        f"torch {torch.__version__}, {result['torch_threads']} threads, CPU capability {result['cpu_capability']}, "
        f"flags {', '.join(result['cpu_flags']) or 'none'}: `--dtype auto` chooses {result['auto_chooses']} here.",
        "- Cosines: each window's embedding in the bfloat16 / int8 index against the float32 index's (float16 rows "
        "re-normalised); top-50 overlap: 100 text queries embedded at float32, ranked exactly in both indexes.",
        "", "Ceiling: FLOPs of the audio tower per window against this CPU's practical matmul peak (2048^3).", "",
        c.markdown_table(["preset", "precision", "GFLOP / window", "tower GFLOP/s", "index GFLOP/s (end to end)",
                          "matmul peak GFLOP/s", "tower / peak"], ceiling), "",
        "Matmul peaks: " + ", ".join(f"{k} {v:.1f}" for k, v in peaks.items()) + " GFLOP/s (GOP/s for int8). "
        "In the int8 rows only the linear layers run in int8 (attention products and the rest stay float32), and "
        "their float32 parts keep them far from that peak.",
        f"- Load average at start / end: {result['load_average']} / {result['load_average_end']}.",
    ])
    c.report(NAME, result, md)


if __name__ == "__main__":
    main()
