"""Training throughput: samples/s of our training step vs a plain transformers loop, same model and batch.

Ours: biolingual.data.train_loader (decode + crop in workers) -> batched torch front end on the
device -> BioLingual forward -> ContrastiveLoss -> backward -> Adam step.
Reference: a DataLoader over the same shards whose workers decode and run ClapFeatureExtractor
(rand_trunc, as the published processor) and the tokenizer, then ClapModel(return_loss=True) ->
backward -> Adam step. Target: at least 1.3x, and data wait plus front end under 10% of our step.

    python benchmarks/bench_training.py [--presets tiny] [--steps 20] [--batch-size 16] [--workers 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import itertools
import tempfile
import time
from pathlib import Path

import _common as c
import numpy as np
import soundfile as sf
import torch
import webdataset as wds
from transformers import ClapModel

import biolingual
from biolingual.data import sample_captions, train_loader
from biolingual.loss import ContrastiveLoss
from data_pipeline.shards import ShardSink

NAME = "training"
PREFETCH = 4  # batches each loader worker keeps ready: train_loader's setting, used for the reference too
TARGET = 1.3
SHARE_TARGET = 0.10


def write_shards(folder: Path, n: int) -> str:
    clips = c.synthetic_clips(n, seconds=10.0)
    with ShardSink(folder, "bench", max_samples=max(1, n // 4)) as sink:
        for i, clip in enumerate(clips):
            sink.write(f"clip{i:05d}", clip, c.SAMPLING_RATE, [f"a recording number {i % 7}", "an animal calling"])
    shards = sorted(folder.glob("bench-*.tar"))
    return f"{folder}/bench-{{000000..{len(shards) - 1:06d}}}.tar"


class _HFLoaderStage:
    """Reference loader work per sample: decode, then ClapFeatureExtractor and the tokenizer (in workers)."""

    def __init__(self, feature_extractor, tokenizer):
        self.fe, self.tok = feature_extractor, tokenizer

    def __call__(self, sample):
        audio, rate = sf.read(io.BytesIO(sample["flac"]), dtype="float32")
        features = self.fe(audio, sampling_rate=rate, return_tensors="np")["input_features"][0]
        return features, sample_captions(sample)[0]


def reference_loader(pattern: str, model, batch_size: int, workers: int):
    stage = _HFLoaderStage(model.front_end.config.to_feature_extractor(), model.tokenizer)
    dataset = wds.DataPipeline(
        wds.ResampledShards(pattern, deterministic=True),
        wds.tarfile_to_samples(),
        wds.shuffle(100),
        wds.map(stage),
        wds.batched(batch_size, partial=False),
    )
    return torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=workers, prefetch_factor=PREFETCH if workers else None
    )


def _time_steps(batches, step, n_steps: int, warmup: int) -> dict:
    """Run warmup + n_steps steps; return samples/s of the timed ones and the time spent waiting for data."""
    it = iter(batches)
    for _ in range(warmup):
        step(next(it))
    wait = total = 0.0
    samples = 0
    start = time.perf_counter()
    for _ in range(n_steps):
        t0 = time.perf_counter()
        batch = next(it)
        wait += time.perf_counter() - t0
        samples += step(batch)
    total = time.perf_counter() - start
    return {"samples_per_s": samples / total, "data_wait_share": wait / total, "seconds": total}


def run_preset(preset: str, pattern: str, steps: int, batch_size: int, workers: int) -> dict:
    torch.manual_seed(0)
    model = biolingual.create(
        preset,
        tokenizer_texts=[f"a recording number {i}" for i in range(7)] + ["an animal calling"],
        seed=0,
        device="cpu",
    )
    model.train()
    clap_ref = ClapModel(model.clap.config)
    clap_ref.load_state_dict(model.clap.state_dict())
    clap_ref.train()
    loss_fn = ContrastiveLoss()
    opt_ours = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    opt_ref = torch.optim.Adam(clap_ref.parameters(), lr=1e-5)
    front_end_time = [0.0]

    def timed_front_end(module, inputs, output):
        front_end_time[0] += time.perf_counter() - module._t0

    model.front_end.register_forward_pre_hook(lambda m, i: setattr(m, "_t0", time.perf_counter()))
    model.front_end.register_forward_hook(timed_front_end)

    def our_step(batch) -> int:
        tokens = model.tokenize(batch["text"])
        loss = loss_fn(*model(batch["audio"], tokens["input_ids"], tokens["attention_mask"]))
        loss.backward()
        opt_ours.step()
        opt_ours.zero_grad(set_to_none=True)
        return len(batch["text"])

    def ref_step(batch) -> int:
        features, texts = batch
        tokens = model.tokenizer(list(texts), padding=True, truncation=True, max_length=77, return_tensors="pt")
        out = clap_ref(
            input_ids=tokens["input_ids"],
            attention_mask=tokens["attention_mask"],
            input_features=torch.as_tensor(np.asarray(features)),
            return_loss=True,
        )
        out.loss.backward()
        opt_ref.step()
        opt_ref.zero_grad(set_to_none=True)
        return len(texts)

    # Untimed steps first, more than the loaders hold ready: the timed steps then see the loaders'
    # steady rate, not batches prepared while the models were being built.
    warmup = PREFETCH * max(1, workers) + 2
    ours_loader = train_loader(pattern, batch_size=batch_size, steps_per_epoch=steps + warmup, workers=workers)
    with c.OtherLoad() as load_ours:
        front_end_time[0] = 0.0
        ours = _time_steps(ours_loader, our_step, steps, warmup)
        ours["front_end_share"] = front_end_time[0] * (steps / (steps + warmup)) / ours["seconds"]
    with c.OtherLoad() as load_ref:
        ref = _time_steps(reference_loader(pattern, model, batch_size, workers), ref_step, steps, warmup)
    # The floor: our step on one batch held in memory, with no loader running beside it.
    held = next(iter(train_loader(pattern, batch_size=batch_size, steps_per_epoch=1, workers=0)))
    front_end_time[0] = 0.0
    alone = _time_steps(itertools.repeat(held), our_step, steps, 2)
    alone["front_end_share"] = front_end_time[0] * (steps / (steps + 2)) / alone["seconds"]
    return {
        "preset": preset,
        "parameters": sum(p.numel() for p in model.parameters()),
        "batch_size": batch_size,
        "workers": workers,
        "steps": steps,
        "ours": ours,
        "reference": ref,
        "model_alone": alone,
        "speedup": ours["samples_per_s"] / ref["samples_per_s"],
        "input_share": ours["data_wait_share"] + ours["front_end_share"],
        "other_load": {"ours": load_ours.share, "reference": load_ref.share},
    }


def run(presets=("tiny",), steps: int = 20, batch_size: int = 16, workers: int = 2, n_clips: int = 128) -> dict:
    c.quiet_transformers()
    with tempfile.TemporaryDirectory() as tmp:
        pattern = write_shards(Path(tmp), n_clips)
        results = [run_preset(p, pattern, steps, batch_size, workers) for p in presets]
    return {"date": dt.date.today().isoformat(), "machine": c.machine_info(), "results": results}


def markdown(result: dict) -> str:
    rows = []
    for r in result["results"]:
        rows.append(
            [
                f"`{r['preset']}` ({c.fmt_params(r['parameters'])})",
                r["batch_size"],
                r["workers"],
                c.fmt_rate(r["reference"]["samples_per_s"]),
                c.fmt_rate(r["ours"]["samples_per_s"]),
                c.fmt_ratio(r["speedup"]),
                f"{100 * r['ours']['data_wait_share']:.1f}% + {100 * r['ours']['front_end_share']:.1f}% = "
                f"{100 * r['input_share']:.1f}%",
                f"{100 * r['reference']['data_wait_share']:.1f}%",
                c.fmt_rate(r["model_alone"]["samples_per_s"]),
                f"{100 * r['model_alone']['front_end_share']:.1f}%",
            ]
        )
    table = c.markdown_table(
        [
            "model",
            "batch",
            "workers",
            "reference samples/s",
            "ours samples/s",
            "ratio",
            "ours: data wait + front end (share of step)",
            "reference: data wait",
            "ours without a loader beside it: samples/s",
            "its front end share",
        ],
        rows,
    )
    notes = (
        f"- {result['results'][0]['steps']} timed steps after {PREFETCH} x workers + 2 untimed ones (the loaders' "
        "steady rate).\n- The last two columns run our step on one batch held in memory, with no loader process "
        "beside it: the model's own speed on this machine, and the front end's share of that step."
    )
    return (
        f"Target: ≥ {TARGET:.1f}x, and data wait + front end < {100 * SHARE_TARGET:.0f}% of our step time.\n\n"
        f"{table}\n\n{notes}"
    )


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clips", type=int, default=128)
    args = parser.parse_args(argv)
    result = run(tuple(args.presets), args.steps, args.batch_size, args.workers, args.clips)
    return c.report(NAME, result, markdown(result))


if __name__ == "__main__":
    main()
