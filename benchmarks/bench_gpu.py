"""The GPU check of issue 24: training step, train.py end to end, FSDP2 and the accelerate launch, indexing.

On one GPU, with synthetic data and no network, in under 10 minutes (``benchmarks/gpu_check.sh`` installs
the wheels the device lacks and runs this with a time limit):

* the ``base`` training step alone (forward, ContrastiveLoss, backward, optimizer step, on synthetic
  [B, 480000] audio and captions held on the GPU; configs/base.yaml's batch of 170, or the largest that
  fits): samples/s, MFU (model FLOPs of :mod:`biolingual.training.throughput` over the GPU's dense peak for
  the precision the matrix products run in) and peak memory, for float32 with TF32 off, TF32, bf16
  autocast, bf16 + fused Adam, and that compiled (compile time apart);
* ``train.py`` at base.yaml's settings on synthetic shards (loader, workers, logging, the final checkpoint):
  samples/s and data-wait share from its own TensorBoard log, as a ratio to the step alone at the same
  precision (target ≥ 90%);
* the same under ``torchrun --nproc_per_node 1 train.py --train.fsdp true`` (FSDP2 on one GPU) and
  ``accelerate launch --config_file configs/accelerate/fsdp.yaml --num_processes 1`` (the run's log says
  which precision the trainer took: the launcher's config asks for bf16);
* ``biolingual index`` (run as the command, ``python -m biolingual index``) in hours of audio per minute,
  bfloat16 and float32, 1 and 2 processes on the one GPU, with the GPU's utilisation sampled meanwhile,
  its start-up (imports, model load) measured apart; zero-shot clips/s.

Targets on one H100: base bf16 step ≥ 30% MFU; train.py ≥ 90% of the step alone; indexing ≥ 300 h/min.

Without CUDA (or with ``--cpu-smoke``) it runs a CPU smoke of the same code on the ``tiny`` preset (a couple
of steps per variant that a CPU runs, train.py for a few steps, a short index), in under a minute on 2
cores, and the section it writes says plainly that the GPU figures are still to be taken. A GPU run saves
``results/gpu.json``, the smoke ``results/gpu_cpu_smoke.json``; ``results/gpu.md`` (the section of
docs/performance.md) is rendered from whichever exist, so a CPU run never hides the GPU's figures.
The benchmark measures; it asserts no time.

    python benchmarks/bench_gpu.py [--cpu-smoke] [--only step train index zero_shot] [--batch-size 170]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: biolingual, data_pipeline/

import _common as c
import torch

import biolingual
from biolingual.loss import ContrastiveLoss, clamp_logit_scale_
from biolingual.synthetic import SPECIES
from biolingual.training import throughput

NAME = "gpu"
SMOKE_NAME = "gpu_cpu_smoke"
ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("step", "train", "index", "zero_shot")
TARGET_MFU = 0.30  # base bf16 step on one H100
TARGET_TRAIN_RATIO = 0.90  # train.py against the step alone
TARGET_INDEX_HOURS_PER_MINUTE = 300.0
BATCHES_TO_TRY = (170, 128, 96, 64, 32, 16)  # base.yaml's batch first, then smaller until one fits


@dataclasses.dataclass(frozen=True)
class Variant:
    """One way of running the step: the matmul precision, TF32, the optimizer and torch.compile."""

    name: str
    what: str
    autocast: torch.dtype | None = None
    tf32: bool = False
    fused: bool = False
    compile: bool = False
    cuda_only: bool = False

    @property
    def precision(self) -> str:
        """accelerate's name for it (train.precision)."""
        return "bf16" if self.autocast == torch.bfloat16 else "no"


VARIANTS = (
    Variant("float32", "float32, TF32 off"),
    Variant("tf32", "float32 with TF32 matmuls", tf32=True, cuda_only=True),
    Variant("bf16", "bf16 autocast", autocast=torch.bfloat16, tf32=True),
    Variant("bf16_fused", "bf16 autocast + fused Adam", autocast=torch.bfloat16, tf32=True, fused=True, cuda_only=True),
    Variant(
        "bf16_fused_compile",
        "bf16 autocast + fused Adam + torch.compile",
        autocast=torch.bfloat16,
        tf32=True,
        fused=True,
        compile=True,
        cuda_only=True,
    ),
)

# train.py under each launcher: (row name, what, needs CUDA)
LAUNCHES = (
    ("train.py", "`python train.py` (base.yaml's settings)", False),
    ("train.py/fsdp", "`torchrun --nproc_per_node 1 train.py --train.fsdp true` (FSDP2 on one device)", False),
    (
        "train.py/accelerate_fsdp",
        "`accelerate launch --config_file configs/accelerate/fsdp.yaml --num_processes 1 train.py`",
        True,
    ),
)


@dataclasses.dataclass
class Profile:
    """The sizes of one run: the GPU check, or the CPU smoke that proves the code runs."""

    gpu: bool
    preset: str
    batches: tuple[int, ...]  # step alone: tried in order until one fits
    steps: int  # timed steps per variant
    warmup: int
    train_steps: int  # train.py
    train_batch: int
    log_every: int
    workers: int
    clips: int  # synthetic clips written to shards
    index_minutes: float  # one synthetic recording, linked under index_copies names
    index_copies: int
    index_processes: tuple[int, ...]
    index_dtypes: tuple[str, ...]
    index_startup: bool  # also time the command on a 10 s file, to take its start-up off
    zero_shot_clips: int
    launches: tuple[str, ...]


GPU = Profile(
    gpu=True,
    preset="base",
    batches=BATCHES_TO_TRY,
    steps=20,
    warmup=3,
    train_steps=30,
    train_batch=170,
    log_every=5,
    workers=8,
    clips=128,
    index_minutes=15.0,
    index_copies=40,
    index_processes=(1, 2),
    index_dtypes=("bfloat16", "float32"),
    index_startup=True,
    zero_shot_clips=512,
    launches=tuple(n for n, _, _ in LAUNCHES),
)
# Each command the smoke runs costs its imports (~8 s on 2 cores): train.py once, the indexer once.
SMOKE = Profile(
    gpu=False,
    preset="tiny",
    batches=(2,),
    steps=2,
    warmup=0,
    train_steps=4,
    train_batch=2,
    log_every=1,
    workers=1,
    clips=16,
    index_minutes=0.5,
    index_copies=1,
    index_processes=(1,),
    index_dtypes=("float32",),
    index_startup=False,
    zero_shot_clips=8,
    launches=("train.py",),
)


def row_names() -> list[str]:
    """Every row of the results, measured or not (a row this machine cannot run says why)."""
    index = [f"index/{d}/{p}" for d in GPU.index_dtypes for p in GPU.index_processes]
    return [f"step/{v.name}" for v in VARIANTS] + [n for n, _, _ in LAUNCHES] + index + ["zero_shot"]


def captions() -> list[str]:
    """Captions about as long as AnimalSpeak's (20-40 tokens), from the synthetic species."""
    return [
        f"The sound of a {name} ({p.scientific}) recorded at dawn near a forest pond: {p.description}, "
        f"with wind and distant insects in the background"
        for name, p in sorted(SPECIES.items())
    ]


# ---- the step alone -------------------------------------------------------------------------------


def _set_tf32(on: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on  # HTS-AT's patch embedding is a convolution


def _free(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def step_variant(model, variant: Variant, profile: Profile, device: torch.device) -> dict:
    """Samples/s, MFU and peak memory of ``variant`` at the first batch of ``profile.batches`` that fits."""
    texts = captions()
    for batch in profile.batches:
        _free(device)
        try:
            return _time_steps(model, variant, batch, texts, profile, device)
        except torch.OutOfMemoryError:
            continue  # the next, smaller batch
    return {"measured": False, "reason": f"out of memory at every batch tried ({', '.join(map(str, profile.batches))})"}


def _time_steps(model, variant: Variant, batch: int, texts: list[str], profile: Profile, device: torch.device) -> dict:
    _set_tf32(variant.tf32)
    loss_fn = ContrastiveLoss()
    params = [p for p in model.parameters() if p.requires_grad]
    # base.yaml's optimizer (Adam, no weight decay: the same update as AdamW); fused=False keeps torch's
    # default multi-tensor (foreach) kernels, fused=True its single fused kernel
    optimizer = torch.optim.Adam(params, lr=1e-5, fused=True if variant.fused else None)
    forward = torch.compile(model) if variant.compile else model
    generator = torch.Generator(device=device).manual_seed(0)
    audio = 0.1 * torch.randn(
        batch, model.window_samples, device=device, generator=generator
    )  # values do not change the cost
    caption_batch = [texts[i % len(texts)] for i in range(batch)]
    autocast = torch.autocast(device.type, dtype=variant.autocast) if variant.autocast else contextlib.nullcontext()
    text_tokens = [0]

    def step():
        tokens = model.tokenize(caption_batch)  # as the training loop does, every step
        text_tokens[0] = tokens["input_ids"].shape[1]
        with autocast:
            a, t, scale = forward(audio, tokens["input_ids"], tokens["attention_mask"])
            loss = loss_fn(a, t, scale)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        clamp_logit_scale_(model.clap.logit_scale_a)

    try:
        first = c.time_once(step, device)  # compiles, when compiling
        warm = [c.time_once(step, device) for _ in range(profile.warmup)]
        seconds = c.time_once(lambda: [step() for _ in range(profile.steps)], device)
    finally:
        optimizer = None  # frees its state now (step() above shares the name, so not `del`)
    per_step = seconds / profile.steps
    samples_per_s = batch / per_step
    flops = throughput.flops_per_sample(model, model.window_samples, text_tokens[0])
    precision = throughput.matmul_precision(variant.precision)  # after _set_tf32 above
    peak = throughput.peak_flops(device, precision)
    memory = throughput.gpu_memory(device)
    return {
        "measured": True,
        "batch_size": batch,
        "steps": profile.steps,
        "seconds_per_step": per_step,
        "samples_per_s": samples_per_s,
        "text_tokens": text_tokens[0],
        "flops_per_sample": flops,
        "achieved_tflops": samples_per_s * flops / 1e12,
        "matmul_precision": precision,
        "peak_flops": peak,
        "mfu": throughput.mfu(samples_per_s, flops, peak),
        "peak_allocated_gib": memory["allocated_gib"] if memory else None,
        "peak_reserved_gib": memory["reserved_gib"] if memory else None,
        "compile_s": (first - per_step) if variant.compile else None,
        "first_step_s": first,
        "warmup_s": warm,
    }


# ---- train.py under its launchers ---------------------------------------------------------------


def write_shards(folder: Path, n: int) -> str:
    """Synthetic 10 s clips in webdataset shards (the training benchmark's writer), as one brace pattern."""
    from bench_training import write_shards as write

    return write(folder, n)


def train_args(pattern: str, out: Path, profile: Profile, device: torch.device) -> list[str]:
    """train.py's arguments: configs/base.yaml with local synthetic shards, no text tower download, no
    validation, checkpoints only at the end; the tiny preset in the CPU smoke."""
    args = [
        "--config",
        str(ROOT / "configs" / "base.yaml"),
        "--data.train",
        pattern,
        "--data.valid",
        "",
        "--data.workers",
        str(profile.workers),
        "--model.text_tower",
        "",
        "--model.tokenizer_samples",
        "2000",
        "--train.steps",
        str(profile.train_steps),
        "--train.batch_size",
        str(profile.train_batch),
        "--train.warmup",
        "0",
        "--log.every",
        str(profile.log_every),
        "--checkpoint.every",
        "0",
        "--valid.every",
        "0",
        "--out",
        str(out),
    ]
    if profile.preset != "base":
        args += ["--model.init", f"preset:{profile.preset}"]
    return args


def launch_command(launch: str, args: list[str]) -> list[str]:
    py = sys.executable
    if launch == "train.py":
        return [py, str(ROOT / "train.py"), *args]
    if launch == "train.py/fsdp":
        return [
            py,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "1",
            str(ROOT / "train.py"),
            *args,
            "--train.fsdp",
            "true",
        ]
    if launch == "train.py/accelerate_fsdp":
        return [
            py,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(ROOT / "configs" / "accelerate" / "fsdp.yaml"),
            "--num_processes",
            "1",
            str(ROOT / "train.py"),
            *args,
        ]
    raise ValueError(launch)


def _shown(command: list[str], tmp: Path) -> str:
    """A command as the results show it: paths in the checkout relative to it, temporary ones by name."""
    return " ".join(Path(a).name if a.startswith(str(tmp)) else a.replace(f"{ROOT}{os.sep}", "") for a in command[1:])


def read_scalars(out: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar a run logged to TensorBoard under ``out``: {tag: [(step, value), ...]} in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(out.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events.parent), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return {tag: sorted(set(values)) for tag, values in scalars.items()}


def precision_line(output: str) -> str | None:
    """The message of the trainer's log line naming its precision (the first ``biolingual.*`` INFO line of
    the run's output that mentions precision, e.g. "precision: bfloat16 (from ...)"), or None."""
    for line in output.splitlines():
        found = re.search(r"INFO biolingual[\w.]*: (.*precision.*)", line, re.I)
        if found:
            return found.group(1).strip()
    return None


def run_train(launch: str, pattern: str, tmp: Path, profile: Profile, device: torch.device, env: dict) -> dict:
    """Run train.py under ``launch``; samples/s and data-wait share from its TensorBoard log (the windows
    after the first, which holds the workers' start and the first kernels' tuning)."""
    out = tmp / launch.replace("/", "_")
    shutil.rmtree(out, ignore_errors=True)
    command = launch_command(launch, train_args(pattern, out, profile, device))
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    row = {
        "command": _shown(command, tmp),
        "returncode": proc.returncode,
        "wall_s": wall,
        "precision_line": precision_line(output),
    }
    if proc.returncode != 0:
        return {**row, "measured": False, "reason": f"exit code {proc.returncode}", "output_tail": output[-3000:]}
    scalars = read_scalars(out)
    windows = scalars.get("train/samples_per_s", [])
    steady = windows[1:] or windows
    if not steady:
        return {
            **row,
            "measured": False,
            "reason": "no train/samples_per_s in the run's TensorBoard log",
            "output_tail": output[-3000:],
        }
    summary = {
        tag.removeprefix("train/"): c.median([v for _, v in values[1:] or values])
        for tag, values in scalars.items()
        if tag.startswith("train/")
    }
    return {
        **row,
        "measured": True,
        "steps": profile.train_steps,
        "batch_size": profile.train_batch,
        "workers": profile.workers,
        "windows": len(steady),
        "samples_per_s": summary["samples_per_s"],
        "data_wait_share": summary.get("data_wait_share"),
        "logged": summary,
    }


# ---- indexing ------------------------------------------------------------------------------------


class Utilisation:
    """The GPU's utilisation (%) sampled every 0.25 s while the block runs: torch.cuda.utilization (NVML)
    where it answers, else nvidia-smi; ``mean`` None when neither does (or on a CPU)."""

    def __init__(self, device: torch.device):
        self.read = _utilisation_reader(device)
        self.samples: list[float] = []
        self.mean = None

    def __enter__(self):
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        if self.read is not None:
            self.thread.start()
        return self

    def _poll(self):
        while not self.stop.wait(0.25):
            value = self.read()
            if value is not None:
                self.samples.append(value)

    def __exit__(self, *exc):
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()
        self.mean = sum(self.samples) / len(self.samples) if self.samples else None
        return False


def _utilisation_reader(device: torch.device):
    if device.type != "cuda":
        return None
    with contextlib.suppress(Exception):
        torch.cuda.utilization(device)
        return lambda: float(torch.cuda.utilization(device))
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    index = device.index or 0

    def read():
        try:
            out = subprocess.run(
                [smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", str(index)],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout
            return float(out.strip().splitlines()[0])
        except (OSError, ValueError, IndexError, subprocess.SubprocessError):
            return None

    return read


def write_index_inputs(folder: Path, profile: Profile) -> tuple[list[Path], float, Path]:
    """One synthetic recording (24 kHz FLAC, the indexing benchmark's) linked under ``index_copies`` names
    (the indexer sees that many files; writing hours of distinct audio would take longer than indexing it),
    and a 10 s file to measure the command's start-up. Returns (files, hours of audio, short file)."""
    from bench_search_indexing import write_recording

    folder.mkdir(parents=True, exist_ok=True)
    first = folder / "rec000.flac"
    write_recording(first, profile.index_minutes)
    files = [first]
    for i in range(1, profile.index_copies):
        link = folder / f"rec{i:03d}.flac"
        with contextlib.suppress(FileExistsError):
            os.link(first, link)
        files.append(link)
    short = folder.parent / "startup" / "short.flac"
    short.parent.mkdir(parents=True, exist_ok=True)
    write_recording(short, 10 / 60)
    return files, profile.index_minutes * profile.index_copies / 60, short


def index_command(
    inputs: list[Path], out: Path, model_dir: Path, dtype: str, processes: int, device: torch.device
) -> list[str]:
    # an explicit device: with 2 processes on one GPU both take it (LOCAL_RANK 1 has no cuda:1)
    args = [
        "-m",
        "biolingual",
        "index",
        *map(str, inputs),
        "--out",
        str(out),
        "--model",
        str(model_dir),
        "--dtype",
        dtype,
        "--device",
        device.type,
    ]
    if processes == 1:
        return [sys.executable, *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), *args]


def run_index(
    files,
    hours,
    short,
    model_dir: Path,
    dtype: str,
    processes: int,
    tmp: Path,
    device: torch.device,
    env: dict,
    measure_startup: bool,
) -> dict:
    """Hours of audio per minute of ``biolingual index`` as the command runs (start-up included), and with
    the start-up (the same command on one 10 s file) taken off."""
    out = tmp / f"index-{dtype}-{processes}"
    shutil.rmtree(out, ignore_errors=True)
    command = index_command(files, out, model_dir, dtype, processes, device)
    with Utilisation(device) as util:
        start = time.perf_counter()
        proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
    row = {
        "command": _shown(command[: command.index(str(files[0]))] + ["FILES"] + command[command.index("--out") :], tmp),
        "processes": processes,
        "dtype": dtype,
        "audio_hours": hours,
        "files": len(files),
        "wall_s": wall,
        "returncode": proc.returncode,
    }
    if proc.returncode != 0:
        return {
            **row,
            "measured": False,
            "reason": f"exit code {proc.returncode}",
            "output_tail": (proc.stdout + proc.stderr)[-3000:],
        }
    startup = None
    if measure_startup:
        startup_out = tmp / f"startup-{dtype}-{processes}"
        shutil.rmtree(startup_out, ignore_errors=True)
        startup = c.time_once(
            lambda: subprocess.run(
                index_command([short], startup_out, model_dir, dtype, processes, device),
                cwd=ROOT,
                env=env,
                capture_output=True,
                check=True,
            )
        )
    steady = wall - startup if startup is not None and wall > startup else None
    return {
        **row,
        "measured": True,
        "startup_s": startup,
        "hours_per_minute": hours / (wall / 60),
        "steady_hours_per_minute": hours / (steady / 60) if steady else None,
        "gpu_utilisation": util.mean,
        "gpu_samples": len(util.samples),
    }


# ---- zero-shot -----------------------------------------------------------------------------------


def run_zero_shot(model, profile: Profile) -> dict:
    """Clips/s of ``model.zero_shot`` over synthetic 10 s clips and 50 labels at the model's default
    precision on its device (warm-up call first)."""
    clips = c.synthetic_clips(min(profile.zero_shot_clips, 24), seconds=10.0)
    clips = [clips[i % len(clips)] for i in range(profile.zero_shot_clips)]
    labels = [f"label {i}" for i in range(50)]
    model.eval()
    model.zero_shot(clips[:2], labels, sampling_rate=c.SAMPLING_RATE, progress=False)
    seconds = c.time_once(
        lambda: model.zero_shot(clips, labels, sampling_rate=c.SAMPLING_RATE, progress=False), model.device
    )
    return {
        "measured": True,
        "clips": len(clips),
        "labels": len(labels),
        "clips_per_s": len(clips) / seconds,
        "precision": model.resolve_precision(),
        "batch_size": model.default_audio_batch,
    }


# ---- the run ---------------------------------------------------------------------------------------


def _env(device: torch.device) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    # the children import biolingual from this checkout, installed or not
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    if device.type == "cpu":
        env["ACCELERATE_USE_CPU"] = "1"  # torchrun's processes on CPUs (FSDP2 over gloo)
    return env


def _skip(reason: str) -> dict:
    return {"measured": False, "reason": reason}


def _attempt(measure) -> dict:
    """``measure()``'s row, or a row saying how it failed: one failing row must not lose the others."""
    import traceback

    try:
        return measure()
    except Exception as e:  # any failure: recorded in the row, with its traceback
        return {
            "measured": False,
            "reason": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}",
            "output_tail": traceback.format_exc()[-3000:],
        }


def run(profile: Profile, sections=SECTIONS, save=None) -> dict:
    """Measure ``sections`` at ``profile``'s sizes; ``save(result)`` is called after each row, so a run cut
    short by its time limit keeps what it measured."""
    c.quiet_transformers()
    device = torch.device("cuda" if profile.gpu else "cpu")
    result = {
        **c.run_header(NAME if profile.gpu else SMOKE_NAME),
        "profile": dataclasses.asdict(profile),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else c.cpu_model(),
        "cuda": torch.version.cuda,
        "rows": {name: _skip("not run (not in --only)") for name in row_names()},
    }
    rows = result["rows"]

    def done(name: str, row: dict) -> None:
        rows[name] = {**row, "seconds_to_measure": time.perf_counter() - t0}
        print(
            f"{name}: {json.dumps({k: v for k, v in rows[name].items() if k != 'output_tail'}, default=str)}",
            flush=True,
        )
        if save is not None:
            save(result)

    env = _env(device)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        torch.manual_seed(0)
        model = biolingual.create(
            profile.preset, tokenizer_texts=captions() + [f"label {i}" for i in range(50)], seed=0, device=device
        )
        model.clap.logit_scale_t.requires_grad_(False)  # as the trainer: the loss uses one temperature
        model_dir = tmp / "model"
        model.save_pretrained(model_dir)
        result["parameters"] = sum(p.numel() for p in model.parameters())
        result["flops_per_sample_10s_30_tokens"] = throughput.flops_per_sample(model, model.window_samples, 30)
        if "step" in sections:
            model.train()
            for variant in VARIANTS:
                t0 = time.perf_counter()
                if variant.cuda_only and device.type != "cuda":
                    done(f"step/{variant.name}", _skip("needs CUDA"))
                    continue
                done(
                    f"step/{variant.name}",
                    _attempt(lambda model=model, variant=variant: step_variant(model, variant, profile, device)),
                )
            _set_tf32(True)
        if "zero_shot" in sections:
            t0 = time.perf_counter()
            done("zero_shot", _attempt(lambda model=model: run_zero_shot(model, profile)))
        del model
        _free(device)
        if "train" in sections:
            t0 = time.perf_counter()
            pattern = write_shards(tmp / "shards", profile.clips)
            for launch, _, cuda_only in LAUNCHES:
                t0 = time.perf_counter()
                if launch not in profile.launches:
                    done(launch, _skip("not in the CPU smoke"))
                elif cuda_only and device.type != "cuda":
                    done(launch, _skip("needs CUDA"))
                else:
                    done(launch, _attempt(lambda launch=launch: run_train(launch, pattern, tmp, profile, device, env)))
        if "index" in sections:
            t0 = time.perf_counter()
            files, hours, short = write_index_inputs(tmp / "recordings" / "audio", profile)
            for dtype in GPU.index_dtypes:
                for processes in GPU.index_processes:
                    name = f"index/{dtype}/{processes}"
                    t0 = time.perf_counter()
                    if dtype not in profile.index_dtypes or processes not in profile.index_processes:
                        done(name, _skip("not in the CPU smoke"))
                        continue
                    done(
                        name,
                        _attempt(
                            lambda dtype=dtype, processes=processes: run_index(
                                files,
                                hours,
                                short,
                                model_dir,
                                dtype,
                                processes,
                                tmp,
                                device,
                                env,
                                measure_startup=profile.index_startup,
                            )
                        ),
                    )
    add_ratios(result)
    return result


def add_ratios(result: dict) -> None:
    """Each train.py row against the step alone at the same precision (float32 runs take the TF32 row on
    a GPU, where TF32 is the trainer's default, and the float32 row on a CPU)."""
    rows = result["rows"]
    for launch, _, _ in LAUNCHES:
        row = rows.get(launch, {})
        if not row.get("measured"):
            continue
        precision = (row.get("precision_line") or "").lower()
        bf16 = "bf16" in precision or "bfloat16" in precision
        reference = "bf16" if bf16 else ("tf32" if rows.get("step/tf32", {}).get("measured") else "float32")
        ref = rows.get(f"step/{reference}", {})
        if ref.get("measured"):
            row["reference"] = f"step/{reference}"
            row["ratio_to_step_alone"] = row["samples_per_s"] / ref["samples_per_s"]


# ---- markdown --------------------------------------------------------------------------------------


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def _gib(x) -> str:
    return "—" if x is None else f"{x:.1f}"


def _met(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "**NOT met**")


def verdicts(result: dict) -> list[str]:
    """The three targets, met or not, from a run's rows."""
    rows = result["rows"]
    bf16 = max(
        (
            rows[n]
            for n in ("step/bf16", "step/bf16_fused", "step/bf16_fused_compile")
            if rows.get(n, {}).get("mfu") is not None
        ),
        key=lambda r: r["mfu"],
        default=None,
    )
    train = rows.get("train.py", {})
    indexed = [r for n, r in rows.items() if n.startswith("index/") and r.get("measured")]
    best_index = max(indexed, key=lambda r: r["hours_per_minute"], default=None)
    launched = rows.get("train.py/accelerate_fsdp", {})
    return [
        f"base bf16 training step ≥ {100 * TARGET_MFU:.0f}% MFU: "
        + (f"{_pct(bf16['mfu'])} at best ({_met(bf16['mfu'] >= TARGET_MFU)})" if bf16 else _met(None)),
        f"train.py ≥ {100 * TARGET_TRAIN_RATIO:.0f}% of the step alone: "
        + (
            f"{_pct(train['ratio_to_step_alone'])} ({_met(train['ratio_to_step_alone'] >= TARGET_TRAIN_RATIO)})"
            if train.get("ratio_to_step_alone") is not None
            else _met(None)
        ),
        f"indexing ≥ {TARGET_INDEX_HOURS_PER_MINUTE:g} h of audio per minute: "
        + (
            f"{c.fmt_rate(best_index['hours_per_minute'])} h/min at best, {best_index['dtype']} with "
            f"{best_index['processes']} process(es) "
            f"({_met(best_index['hours_per_minute'] >= TARGET_INDEX_HOURS_PER_MINUTE)})"
            if best_index
            else _met(None)
        ),
        "the launcher's bf16 (configs/accelerate/fsdp.yaml) reaches the trainer: "
        + (
            f'it logged "{launched["precision_line"]}" ({_met("bf16" in launched["precision_line"])})'
            if launched.get("precision_line")
            else _met(None)
        ),
    ]


def tables(result: dict) -> str:
    """The step, train.py, indexing and zero-shot tables of one run."""
    rows = result["rows"]
    variants = {v.name: v for v in VARIANTS}

    def why(r):
        return r.get("reason", "")

    step_rows = []
    for v in VARIANTS:
        r = rows[f"step/{v.name}"]
        ref = rows.get("step/float32", {})
        ratio = r["samples_per_s"] / ref["samples_per_s"] if r.get("measured") and ref.get("measured") else None
        step_rows.append(
            [
                variants[v.name].what,
                r.get("batch_size", "—"),
                c.fmt_rate(r.get("samples_per_s")),
                c.fmt_ratio(ratio),
                f"{r['achieved_tflops']:.1f}" if r.get("measured") else "—",
                _pct(r.get("mfu")),
                _gib(r.get("peak_allocated_gib")),
                "—" if r.get("compile_s") is None else f"{r['compile_s']:.0f} s",
                why(r),
            ]
        )
    train_rows = []
    for launch, what, _ in LAUNCHES:
        r = rows[launch]
        train_rows.append(
            [
                what,
                c.fmt_rate(r.get("samples_per_s")),
                r.get("reference", "—"),
                _pct(r.get("ratio_to_step_alone")),
                _pct(r.get("data_wait_share")),
                f"`{r['precision_line']}`" if r.get("precision_line") else "—",
                why(r),
            ]
        )
    index_rows = []
    for name, r in rows.items():
        if name.startswith("index/"):
            _, dtype, processes = name.split("/")
            index_rows.append(
                [
                    dtype,
                    processes,
                    c.fmt_rate(r.get("hours_per_minute")),
                    c.fmt_rate(r.get("steady_hours_per_minute")),
                    "—" if r.get("startup_s") is None else f"{r['startup_s']:.1f} s",
                    "—" if r.get("gpu_utilisation") is None else f"{r['gpu_utilisation']:.0f}%",
                    why(r),
                ]
            )
    zs = rows["zero_shot"]
    flops = result.get("flops_per_sample_10s_30_tokens")
    return "\n\n".join(
        [
            f"`{result['profile']['preset']}` ({c.fmt_params(result['parameters'])} parameters here), "
            f"{flops / 1e9:.2f} GFLOP per training sample (10 s clip, 30-token caption: 3x the towers' forward, "
            "counted by `biolingual.training.throughput`).",
            "**Training step alone** (synthetic audio and captions on the device; forward, ContrastiveLoss, backward, "
            "Adam; MFU against the device's dense peak for the matmul precision):",
            c.markdown_table(
                [
                    "variant",
                    "batch",
                    "samples/s",
                    "vs float32",
                    "TFLOP/s",
                    "MFU",
                    "peak GiB",
                    "compile",
                    "not measured",
                ],
                step_rows,
            ),
            "**train.py end to end** (synthetic shards, loader workers, logging; steady windows of its own TensorBoard "
            "log, the first left out):",
            c.markdown_table(
                [
                    "launch",
                    "samples/s",
                    "reference",
                    "of the step alone",
                    "data wait",
                    "the run's precision line",
                    "not measured",
                ],
                train_rows,
            ),
            "**`biolingual index`** (hours of audio per minute of the command's wall time; 'steady' takes off its "
            "start-up, the same command on one 10 s file):",
            c.markdown_table(
                ["dtype", "processes", "h/min", "steady h/min", "start-up", "GPU utilisation", "not measured"],
                index_rows,
            ),
            f"**Zero-shot**: {c.fmt_rate(zs.get('clips_per_s'))} clips/s ({zs.get('clips', '—')} clips x "
            f"{zs.get('labels', '—')} labels, {zs.get('precision', '—')}, batch {zs.get('batch_size', '—')})."
            if zs.get("measured")
            else f"**Zero-shot**: not measured ({why(zs)}).",
        ]
    )


def markdown(gpu: dict | None, smoke: dict | None) -> str:
    """The GPU section's body: the GPU run's figures, or a plain statement that they are still to be taken,
    then the CPU smoke that shows the benchmark runs."""
    parts = []
    if gpu is None:
        parts += [
            "**The GPU figures are still to be taken**: no GPU was lent to the sessions that ran this "
            "benchmark. `benchmarks/gpu_check.sh` runs it on one (see its header); until then the targets "
            "below are not measured.",
            "",
        ]
        parts += [f"- Target: {line}" for line in verdicts({"rows": {n: {} for n in row_names()}})]
    else:
        m = gpu["machine"]
        parts += [
            f"Run of {gpu['date']} on {gpu['device']} (torch {m['torch']}, CUDA {gpu['cuda']}, transformers "
            f"{m['transformers']}, Python {m['python']}).",
            "",
        ]
        parts += [f"- {line}" for line in verdicts(gpu)]
        parts += ["", tables(gpu)]
    if smoke is not None:
        parts += [
            "",
            f"**CPU smoke** ({smoke['date']}, {smoke['device']}, {smoke['machine']['cpu_count']} cores): "
            "the same code on the `tiny` preset with tiny batches, to show that it runs; its speeds say "
            "nothing about a GPU.",
            "",
            tables(smoke),
        ]
    return "\n".join(parts)


def _load(name: str) -> dict | None:
    path = c.RESULTS_DIR / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def render() -> str:
    """Write results/gpu.md from the saved GPU run and CPU smoke; returns it."""
    md = markdown(_load(NAME), _load(SMOKE_NAME))
    c.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (c.RESULTS_DIR / f"{NAME}.md").write_text(md + "\n")
    return md


def _merge(previous: dict | None, new: dict, sections) -> dict:
    """Rows of ``sections`` from ``new``, the others kept from ``previous`` (a run split over two calls)."""
    if previous is None or previous.get("device") != new.get("device"):
        return new
    keep = {n: r for n, r in previous["rows"].items() if n.split("/")[0].removesuffix(".py") not in set(sections)}
    return {**new, "rows": {**new["rows"], **keep}}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-smoke", action="store_true", help="the CPU smoke even where CUDA is available")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=SECTIONS,
        default=list(SECTIONS),
        help="measure these sections; the other rows of an earlier run on the same device are kept",
    )
    parser.add_argument("--batch-size", type=int, help="the step alone's batch (default: 170, or less until it fits)")
    args = parser.parse_args(argv)
    gpu = torch.cuda.is_available() and not args.cpu_smoke
    profile = GPU if gpu else SMOKE
    if args.batch_size:
        profile = dataclasses.replace(profile, batches=(args.batch_size,))
    name = NAME if gpu else SMOKE_NAME
    previous = _load(name)

    def save(result: dict) -> dict:
        """results/<name>.json and .md (this run's tables; for a GPU run that .md is replaced by the section
        rendered next), then results/gpu.md, the section docs/performance.md shows."""
        merged = _merge(previous, result, args.only)
        add_ratios(merged)
        c.write_outputs(name, merged, tables(merged))
        render()
        return merged

    merged = save(run(profile, args.only, save))
    print(render())
    print(f"\nwrote {c.RESULTS_DIR / (name + '.json')} and {c.RESULTS_DIR / (NAME + '.md')}")
    return merged


if __name__ == "__main__":
    main()
