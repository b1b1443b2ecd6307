"""python -m eval.probe --models hubert wavlm aves biolingual --data watkins.csv --out results/probe \\
    [--layers 0-6] [--fusion]

Which layer of which pre-trained encoder best separates call types or callers: every layer's hidden states
pooled (mean and std over time), an MLP probe per layer, unweighted average recall (UAR) on the test split.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from pathlib import Path

from biolingual.cli_options import add_batch_size_arg, add_device_arg, add_dtype_arg
from biolingual.device import resolve_device
from biolingual.extras import MissingExtraError
from biolingual.precision import describe_choice, resolve_precision

from ..report import pyplot
from ..runtime import EXIT_ERROR, check_device, check_out_dir, finish
from .dataset import SPLIT_RULES, SPLIT_SEED, ProbeDataError, read_csv
from .encoders import CHUNK_S, SHORT_NAMES, TILE_MULTIPLE_S, ProbeModelError, check_spec, load_encoder
from .features import LayerFeatureCache, default_cache_dir
from .mlp import FUSIONS, ProbeConfig
from .run import parse_layers, probe_model
from .summary import write_summary

log = logging.getLogger("eval.probe")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m eval.probe", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--models",
        nargs="+",
        required=True,
        help=f"short names ({', '.join(SHORT_NAMES)}), transformers ids or folders, BioLingual "
        "(CLAP) ids or folders, or AVES torchaudio files (*.torchaudio.pt or their folder)",
    )
    ap.add_argument("--data", nargs="+", required=True, help="CSV files of path,label[,split]; one plot panel each")
    ap.add_argument(
        "--root", default=None, help="folder that relative audio paths start from (default: each CSV's folder)"
    )
    ap.add_argument("--out", required=True, help="results folder (tables, plots, per-layer JSON)")
    ap.add_argument("--layers", default=None, help="layers to probe, e.g. 0-6 or 0,4,8-12 (default: all)")
    ap.add_argument(
        "--fusion",
        nargs="*",
        choices=FUSIONS,
        default=None,
        help="also probe the fused layers: concat, weighted (learned weighted sum); alone: both",
    )
    ap.add_argument(
        "--cache",
        default=None,
        help=f"feature cache folder (default: $BIOLINGUAL_PROBE_CACHE or {default_cache_dir()})",
    )
    add_batch_size_arg(ap, 8, "chunks per forward pass")
    ap.add_argument("--workers", type=int, default=2, help="decoding threads")
    add_device_arg(ap)
    add_dtype_arg(ap)
    ap.add_argument("--chunk-seconds", type=float, default=CHUNK_S, help="longer clips run in chunks of this length")
    ap.add_argument(
        "--tile-multiple-seconds",
        type=float,
        default=TILE_MULTIPLE_S,
        help="tile each clip up to a multiple of this length so like lengths share batches (faster; "
        "default 0: every clip at its own length, as the paper's code)",
    )
    ap.add_argument(
        "--normalize-waveform",
        action="store_true",
        help="zero-mean, unit-variance input for models whose feature extractor says do_normalize "
        "(e.g. facebook/wav2vec2-base); default: the peak-normalised waveform, as the paper's code",
    )
    ap.add_argument("--epochs", type=int, default=ProbeConfig.epochs)
    ap.add_argument("--probe-batch-size", type=int, default=ProbeConfig.batch_size)
    ap.add_argument("--lr", type=float, default=ProbeConfig.lr)
    ap.add_argument("--seed", type=int, default=ProbeConfig.seed, help="probe initialisation and shuffling")
    ap.add_argument(
        "--split",
        choices=SPLIT_RULES,
        default="random",
        help="70/20/10 split rule when the CSV has no split column: random over all rows (the paper's "
        "code, default) or stratified by class",
    )
    ap.add_argument("--split-seed", type=int, default=SPLIT_SEED, help="seed of that split")
    ap.add_argument("--no-plots", action="store_true")
    args = ap.parse_args(argv)
    if args.fusion == []:
        args.fusion = list(FUSIONS)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        check_device(args.device)  # a device this machine lacks is refused before any file is read
        precision = resolve_precision(args.dtype, resolve_device(args.device))  # and a precision it cannot run
        check_out_dir(Path(args.out))
        if not args.no_plots:  # a missing matplotlib is found now, not after hours of extraction
            pyplot()
        datasets = [read_csv(p, seed=args.split_seed, root=args.root, split_rule=args.split) for p in args.data]
        for spec in args.models:  # every name checked before any work starts
            check_spec(spec)
        parse_layers(args.layers, 1)
        if args.tile_multiple_seconds < 0:
            raise ValueError(f"--tile-multiple-seconds must be 0 or more, got {args.tile_multiple_seconds}")
    except (ProbeDataError, ProbeModelError, ValueError, MissingExtraError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    if precision != "float32":
        print(describe_choice(args.dtype, resolve_device(args.device), precision), file=sys.stderr)
    names = [d.name for d in datasets]
    if len(set(names)) != len(names):
        print(f"error: datasets need distinct file names (one panel each), got {names}", file=sys.stderr)
        return EXIT_ERROR
    out, cache_root = Path(args.out), Path(args.cache) if args.cache else default_cache_dir()
    config = ProbeConfig(lr=args.lr, epochs=args.epochs, batch_size=args.probe_batch_size, seed=args.seed)
    runs: dict = {d.name: {} for d in datasets}
    extraction: dict = {d.name: {} for d in datasets}
    for spec in args.models:
        try:
            encoder = load_encoder(
                spec,
                device=args.device,
                chunk_s=args.chunk_seconds,
                dtype=args.dtype,
                normalize_waveform=args.normalize_waveform,
                tile_multiple_s=args.tile_multiple_seconds,
            )
        except ProbeModelError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_ERROR
        layers = parse_layers(args.layers, encoder.num_layers)
        if not layers:
            log.warning("%s has %d layers; none of --layers %s: skipped", encoder.name, encoder.num_layers, args.layers)
            continue
        cache = LayerFeatureCache(cache_root, encoder)
        try:
            for dataset in datasets:
                runs[dataset.name][encoder.name], extraction[dataset.name][encoder.name] = probe_model(
                    encoder, dataset, cache, out, layers, args.fusion or [], config, args.batch_size, args.workers
                )
        finally:
            cache.close()
        del encoder
        gc.collect()
    runs = {d: r for d, r in runs.items() if r}
    if not runs:
        print("error: no model had any of the requested layers", file=sys.stderr)
        return EXIT_ERROR
    text = write_summary(
        out,
        runs,
        {d.name: d.labels for d in datasets},
        extraction,
        {d.name: [f"split: {d.split_source}", *d.notes] for d in datasets},
        plots=not args.no_plots,
    )
    print(text)
    print(
        f"wrote {out / 'results.md'}, results.csv, best_layers.csv"
        + ("" if args.no_plots else ", layers.png and confusion matrices")
    )
    # exit codes as every eval runner's (eval/runtime.py): 2 when unreadable clips were skipped
    skipped = [f for by_model in extraction.values() for e in by_model.values() for f in e["unreadable_files"]]
    return finish(skipped, f"{out}/<dataset>/<model>/extraction.json")


if __name__ == "__main__":
    sys.exit(main())
