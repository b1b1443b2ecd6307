"""Inference precision: `biolingual index` at float32, bfloat16 and int8 against float32 `embed_audio`, with the
accuracy each precision keeps and how close the audio tower gets to this CPU's matrix units.

For each preset, one synthetic recording (species calls over noise, 24 kHz FLAC, one species a minute)
is embedded four ways, in interleaved rounds (``--repeats``, default 3): the library's one-shot
``model.embed_audio(path)`` at float32 (the reference), then ``build_index`` (what ``biolingual index``
runs) into a fresh folder at float32, bfloat16 and int8 (``--dtype``). All embed the same 10 s windows
(hop = window) in batches of the same size (the library's default). Reported: windows/s and hours of
audio per minute of wall time (median over rounds), the ratio to the reference (median of the per-round
ratios, and their range), the minimum and mean cosine of each window's embedding to the float32 index's,
and the mean top-50 overlap of 100 text queries (float32 query embeddings; species names in several
phrasings) between the float32 index and each other one.

The ceiling table counts the FLOPs of one 10 s window through the audio tower (front end excluded;
``torch.utils.flop_counter.FlopCounterMode`` at float32, the same work at every precision: int8's
quantized linear layers do the same multiply-adds), multiplies by the tower's own windows/s at each
precision (forward passes on prepared features, no decoding) and by the index's windows/s, and sets
them against the practical peak of this CPU: a large square matmul (2048^3) at float32, bfloat16
(``torch.mm``) and int8 (``torch._int_mm``, and the dynamic quantized linear op int8 indexing uses).
A last table splits one batch's time in the tower (torch's profiler) into matrix products and the rest,
and from it bounds what bfloat16 can gain here: the matrix products at most the peak ratio, the rest
(memory-bound layer norms, softmax, GELU, adds and copies) what it measured.

No weights can be downloaded here: each preset is freshly initialised (seed 0). Compute per window does
not depend on the weights, but accuracy can: an untrained model's embeddings are closer to each other
than a trained one's, so the cosines and above all the top-50 overlaps are harder tests here than on
the published model (near-ties reorder under small perturbations).

    python benchmarks/bench_inference_precision.py [--presets tiny base] [--minutes tiny=60 base=20] \
        [--batch-size N] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
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
# the profiler's names of the ops that multiply matrices: linear layers, attention products, the patch convolution
MATMUL_OPS = frozenset(
    {
        "aten::addmm",
        "aten::mm",
        "aten::bmm",
        "aten::baddbmm",
        "aten::mkldnn_convolution",
        "aten::convolution",
        "aten::_int_mm",
    }
)
PHRASINGS = (
    "The sound of a {}",
    "{} calling",
    "a {} singing at night",
    "{} song",
    "recording of a {}",
    "a distant {}",
    "{} call in the rain",
    "close-up {}",
    "{} chorus",
)


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
    kinds = {
        "float32 (torch.mm)": lambda: a @ b,
        "bfloat16 (torch.mm)": (lambda x, y: lambda: x @ y)(a.bfloat16(), b.bfloat16()),
        "int8 (torch._int_mm)": lambda: torch._int_mm(ai, bi),
        "int8 (dynamic quantized linear)": lambda: quantized(a),
    }
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


def time_split(model, precision: str, batch_size: int) -> dict:
    """Milliseconds of one batch (the mean of 3 after 2 warm-ups) through the audio tower at ``precision``
    (features prepared), split by torch's profiler into matrix products (what the matmul peak bounds) and
    everything else (layer norms, softmax, GELU, adds, the copies of window partitioning: memory-bound, they gain
    little from bfloat16)."""
    from torch.profiler import profile

    features = model.front_end(torch.randn(batch_size, model.window_samples) * 0.1)
    calls = 3
    with model.inference(precision):
        for _ in range(2):  # warm-up: oneDNN primitives for these shapes
            model.encode_features(features)
        with profile() as prof:
            for _ in range(calls):
                model.encode_features(features)
    events = prof.key_averages()
    matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS) / 1e3 / calls
    total = sum(e.self_cpu_time_total for e in events) / 1e3 / calls
    return {"matmul_ms": matmul, "other_ms": total - matmul, "total_ms": total}


def bench(preset: str, minutes: float, batch_size: int | None, repeats: int, tmp: Path) -> dict:
    recording = tmp / f"{preset}.flac"
    write_recording(recording, minutes)
    model = biolingual.create(
        preset, tokenizer_texts=[p.description for p in SPECIES.values()] + queries(), seed=0, device="cpu"
    )
    batch_size = batch_size or model.default_audio_batch  # what `biolingual index` and embed_audio run by default
    hours = minutes / 60
    for precision in PRECISIONS:  # warm-up at each precision (oneDNN primitives, the int8 copy), all batch shapes
        model.embed_audio(
            np.zeros(batch_size * model.window_samples, np.float32),
            sampling_rate=model.sampling_rate,
            batch_size=batch_size,
            dtype=precision,
            progress=False,
        )
    seconds: dict[str, list[float]] = {}
    loads: dict[str, list[float]] = {}
    embeddings, windows = {}, None
    # Interleaved rounds (reference, then each precision, then again): a slow spell of the machine falls on
    # every path alike instead of on one, and the median over rounds is reported.
    for round_ in range(repeats):
        paths = [("embed_audio float32", None)] + [(f"index {p}", p) for p in PRECISIONS]
        for name, precision in paths:
            with c.OtherLoad() as load:
                t = time.perf_counter()
                if precision is None:
                    model.embed_audio(str(recording), batch_size=batch_size, progress=False)
                else:
                    folder = tmp / f"index-{preset}-{precision}"
                    shutil.rmtree(folder, ignore_errors=True)  # a fresh index each round, not a resumed one
                    windows = build_index(
                        [recording], model, folder, batch_size=batch_size, dtype=precision, progress=False
                    ).windows
                seconds.setdefault(name, []).append(time.perf_counter() - t)
            loads.setdefault(name, []).append(load.share)
            if precision is not None and round_ == 0:
                embeddings[precision] = unit(load_index(folder).embeddings)
    q = model.embed_text(queries()).numpy()
    rows = []
    reference = seconds["embed_audio float32"]
    for name, s in seconds.items():
        precision = name.split()[-1]
        ratios = [r / x for r, x in zip(reference, s)]  # per round: the reference and this path ran side by side
        row = {
            "path": name,
            "seconds": c.median(s),
            "seconds_all": s,
            "windows_per_s": windows / c.median(s),
            "hours_per_minute": hours / (c.median(s) / 60),
            "ratio_vs_embed_audio": c.median(ratios),
            "ratio_range": [min(ratios), max(ratios)],
            "other_load": max(loads[name]),
        }
        if name.startswith("index") and precision != "float32":
            cos = (embeddings[precision] * embeddings["float32"]).sum(1)
            row.update(
                min_cosine=float(cos.min()),
                mean_cosine=float(cos.mean()),
                top50_overlap=top_overlap(embeddings["float32"], embeddings[precision], q),
            )
        rows.append(row)
    flops = window_flops(model)
    tower = {p: tower_rate(model, p, batch_size) for p in PRECISIONS}
    split = {p: time_split(model, p, batch_size) for p in ("float32", "bfloat16")}
    return {
        "preset": preset,
        "audio_minutes": minutes,
        "windows": windows,
        "batch_size": batch_size,
        "repeats": repeats,
        "rows": rows,
        "gflop_per_window": flops / 1e9,
        "tower_windows_per_s": tower,
        "time_split": split,
        "index_windows_per_s": {p: windows / c.median(seconds[f"index {p}"]) for p in PRECISIONS},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "base"])
    parser.add_argument("--minutes", nargs="*", default=[], help="PRESET=MINUTES of audio per preset")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="windows per forward pass (default: the model's, what `biolingual index` runs: 4 on a CPU)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds of every path; medians are reported")
    parser.add_argument("--render-only", action="store_true", help="rewrite the .md from the saved json")
    args = parser.parse_args()
    if args.render_only:
        render(json.loads((c.RESULTS_DIR / f"{NAME}.json").read_text()))
        return
    c.quiet_transformers()
    minutes = {**DEFAULT_MINUTES, **{k: float(v) for k, v in (m.split("=") for m in args.minutes)}}
    result = {
        **c.run_header(NAME),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_flags": sorted(f for f in cpu_flags() if "bf16" in f or "amx" in f or "vnni" in f),
        "auto_chooses": resolve_precision("auto", "cpu"),
        "presets": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            r = bench(preset, minutes[preset], args.batch_size, args.repeats, Path(tmp))
            result["presets"].append(r)
            print(
                f"{preset}: " + ", ".join(f"{x['path']} {x['ratio_vs_embed_audio']:.2f}x" for x in r["rows"]),
                flush=True,
            )
    result["matmul_peak_gflops"] = matmul_peaks()
    result["load_average_end"] = c.load_average()
    result["max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    render(result)


def render(result: dict) -> None:
    """results/inference_precision.md from the measured ``result`` (``--render-only`` re-reads the saved json)."""
    peaks = result["matmul_peak_gflops"]

    def fmt(x, digits=4):
        return "—" if x is None else f"{x:.{digits}f}"

    header = [
        "preset",
        "path (precision)",
        "windows/s",
        "h audio / min",
        "vs float32 embed_audio",
        "range over rounds",
        "min cosine",
        "mean cosine",
        "top-50 overlap",
        "other processes' CPU",
    ]
    table = []
    for r in result["presets"]:
        for x in r["rows"]:
            table.append(
                [
                    r["preset"],
                    x["path"],
                    f"{x['windows_per_s']:.2f}",
                    f"{x['hours_per_minute']:.3f}",
                    c.fmt_ratio(x["ratio_vs_embed_audio"]),
                    "—"
                    if "ratio_range" not in x or x["path"].startswith("embed_audio")
                    else "–".join(f"{v:.2f}" for v in x["ratio_range"]),
                    fmt(x.get("min_cosine"), 5),
                    fmt(x.get("mean_cosine"), 5),
                    fmt(x.get("top50_overlap"), 3),
                    "—" if x["other_load"] is None else f"{100 * x['other_load']:.0f}%",
                ]
            )
    ceiling = []
    fp32_peak, bf16_peak = peaks["float32 (torch.mm)"], peaks["bfloat16 (torch.mm)"]
    # the int8 peak is what the CPU's int8 units reach (torch._int_mm); the dynamic quantized linear op that int8
    # indexing runs reaches far less (it quantizes activations on every call), which the list below shows
    int8_peak = peaks["int8 (torch._int_mm)"]
    for r in result["presets"]:
        for p, peak in zip(PRECISIONS, (fp32_peak, bf16_peak, int8_peak)):
            tower = r["gflop_per_window"] * r["tower_windows_per_s"][p]
            index = r["gflop_per_window"] * r["index_windows_per_s"][p]
            ceiling.append(
                [
                    r["preset"],
                    p,
                    f"{r['gflop_per_window']:.2f}",
                    f"{tower:.1f}",
                    f"{index:.1f}",
                    f"{peak:.1f}",
                    f"{100 * tower / peak:.0f}%",
                ]
            )
    md = "\n".join(
        [
            c.markdown_table(header, table),
            "",
            "- Synthetic recordings (species calls over noise, 24 kHz FLAC): "
            + ", ".join(
                f"{r['preset']} {r['audio_minutes']:g} min ({r['windows']} windows of 10 s)" for r in result["presets"]
            )
            + f"; batches of {', '.join(sorted({str(r.get('batch_size')) for r in result['presets']}))} windows (the "
            "library's default on a CPU); freshly initialised weights (seed 0); "
            f"{result['presets'][0].get('repeats', 1)} interleaved rounds (embed_audio, then the index at each "
            "precision, then again): the median time, and the median and range of the per-round ratio to embed_audio; "
            f"torch {torch.__version__}, {result['torch_threads']} threads, CPU capability {result['cpu_capability']}, "
            f"flags {', '.join(result['cpu_flags']) or 'none'}: `--dtype auto` chooses {result['auto_chooses']} here.",
            "- Cosines: each window's embedding in the bfloat16 / int8 index against the float32 index's (float16 rows "
            "re-normalised); top-50 overlap: 100 text queries embedded at float32, ranked exactly in both indexes.",
            "",
            "Ceiling: FLOPs of the audio tower per window against this CPU's practical matmul peak (2048^3).",
            "",
            c.markdown_table(
                [
                    "preset",
                    "precision",
                    "GFLOP / window",
                    "tower GFLOP/s",
                    "index GFLOP/s (end to end)",
                    "matmul peak GFLOP/s",
                    "tower / peak",
                ],
                ceiling,
            ),
            "",
            "Matmul peaks: " + ", ".join(f"{k} {v:.1f}" for k, v in peaks.items()) + " GFLOP/s (GOP/s for int8). "
            "In the int8 rows only the linear layers run in int8 (attention products and the rest stay float32), and "
            "their float32 parts keep them far from that peak.",
            *split_section(result, fp32_peak, bf16_peak),
            *targets_section(result),
            f"- Load average at start / end: {result['load_average']} / {result['load_average_end']}.",
        ]
    )
    c.report(NAME, result, md)


def targets_section(result: dict) -> list[str]:
    """Issue 17's targets for ``base`` against what was measured."""
    base = next((r for r in result["presets"] if r["preset"] == "base"), None)
    if base is None:
        return []
    rows = {x["path"]: x for x in base["rows"]}
    fast = [rows[f"index {p}"] for p in ("bfloat16", "int8")]
    ok = [x for x in fast if x["min_cosine"] >= 0.999 and x["top50_overlap"] >= 0.95]
    best = max(ok or fast, key=lambda x: x["ratio_vs_embed_audio"])
    f32 = rows["index float32"]["ratio_vs_embed_audio"]
    table = [
        [
            "base indexing ≥ 2.5x float32 embed_audio at min cosine ≥ 0.999 and top-50 overlap ≥ 0.95 (bfloat16 or "
            "int8)",
            f"{best['path']}: {best['ratio_vs_embed_audio']:.2f}x, min cosine {best['min_cosine']:.5f}, top-50 "
            f"{best['top50_overlap']:.3f}",
            "met" if best in ok and best["ratio_vs_embed_audio"] >= 2.5 else "**NOT met**",
        ],
        ["base float32 indexing ≥ 1.0x one-shot embed_audio", f"{f32:.2f}x", "met" if f32 >= 1.0 else "**NOT met**"],
    ]
    notes = []
    peaks, split = result["matmul_peak_gflops"], base.get("time_split")
    if split:
        ratio = peaks["bfloat16 (torch.mm)"] / peaks["float32 (torch.mm)"]
        f32, b16 = split["float32"], split["bfloat16"]
        bound = f32["total_ms"] / (f32["matmul_ms"] / ratio + b16["other_ms"])
        notes.append(
            f"- Why 2.5x is out of reach on this CPU: its bfloat16 matmul peak is {ratio:.1f}x its float32 peak "
            "(flags: "
            f"{', '.join(result['cpu_flags']) or 'none'}{'' if 'amx_bf16' in result['cpu_flags'] else '; no AMX'}), "
            f"and {100 * f32['other_ms'] / f32['total_ms']:.0f}% of the float32 tower's time is outside matrix "
            f"products ({f32['other_ms']:.0f} ms; {b16['other_ms']:.0f} ms at bfloat16), so even at the full peak "
            f"ratio the tower would reach about {bound:.1f}x (the table above)."
        )
    return ["Targets (issue 17):", "", c.markdown_table(["target", "measured", ""], table), "", *notes]


def split_section(result: dict, fp32_peak: float, bf16_peak: float) -> list[str]:
    """The table of where the audio tower's time goes, and the bfloat16 speed-up it allows (Amdahl): if every
    matrix product ran faster by the ratio of the matmul peaks and the rest took what it measured at bfloat16.
    An estimate, not a strict bound: small matrix products far from the float32 peak can gain more than the ratio."""
    rows = []
    for r in result["presets"]:
        split = r.get("time_split")
        if not split:
            continue
        f32, b16 = split["float32"], split["bfloat16"]
        bound = f32["total_ms"] / (f32["matmul_ms"] * fp32_peak / bf16_peak + b16["other_ms"])
        for p, x in (("float32", f32), ("bfloat16", b16)):
            rows.append(
                [
                    r["preset"],
                    p,
                    str(r["batch_size"]),
                    f"{x['matmul_ms']:.1f}",
                    f"{x['other_ms']:.1f}",
                    f"{x['total_ms']:.1f}",
                    f"{100 * x['other_ms'] / x['total_ms']:.0f}%",
                    c.fmt_ratio(f32["total_ms"] / b16["total_ms"]) if p == "bfloat16" else "—",
                    c.fmt_ratio(bound) if p == "bfloat16" else "—",
                ]
            )
    if not rows:
        return []
    return [
        "",
        "Where the audio tower's time goes (torch's profiler, one batch, features prepared): matrix products "
        "(linear layers, attention products, the patch convolution) against everything else, and the bfloat16 "
        "speed-up the tower could reach if every matrix product ran faster by the ratio of the matmul peaks "
        f"({bf16_peak:.0f} / {fp32_peak:.0f} GFLOP/s) while the rest took what it takes at bfloat16:",
        "",
        c.markdown_table(
            [
                "preset",
                "precision",
                "batch",
                "matrix products ms",
                "other ops ms",
                "total ms",
                "other share",
                "bfloat16 vs float32",
                "bfloat16 at the peak ratio",
            ],
            rows,
        ),
        "",
    ]


if __name__ == "__main__":
    main()
