"""The training loop: one process per device under ``accelerate launch``, or a plain ``python train.py``.

Each rank builds its own data stream (never ``accelerator.prepare``d: accelerate would shard an
IterableDataset twice), the learning rate is a pure function of the step, checkpoints are atomic and
hold everything a resume needs (model, optimizer, step, best list, every rank's RNG state).
"""
from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType, broadcast_object_list, gather_object
from tqdm.auto import tqdm

from ..data import ShardError, check_shards, expand_shards, train_loader
from ..loading import load
from ..loss import ContrastiveLoss, clamp_logit_scale_
from ..model import BioLingual
from .checkpoint import full_state, load_full_state, prune, resolve_resume, save_atomic
from .config import Config, load_config
from .initialise import build_model
from .schedule import lr_at
from .validate import validate

log = logging.getLogger("biolingual.train")


def build_optimizer(model: BioLingual, config) -> torch.optim.Optimizer:
    """Adam/AdamW; no weight decay on norms, biases and the temperature (1-D parameters)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    betas = tuple(float(b) for b in config.betas.split(","))
    kinds = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    if config.optimizer not in kinds:
        raise ValueError(f"train.optimizer must be one of {sorted(kinds)}, got '{config.optimizer}'")
    return kinds[config.optimizer](groups, lr=config.lr, betas=betas, eps=config.eps)


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def _weights(spec: str, n_sources: int) -> list[float] | None:
    if not spec:
        return None
    weights = [float(w) for w in spec.split(",")]
    if len(weights) != n_sources:
        raise ValueError(f"data.weights has {len(weights)} values for {n_sources} shard sources")
    return weights


class Trainer:
    def __init__(self, config: Config):
        self.config = config
        self.out = Path(config.out)
        c = config
        # accelerate keeps one state per process; a second run in the same process (a notebook, the
        # tests) may ask for another precision, which accelerate refuses unless the state is reset.
        AcceleratorState._reset_state()
        self.accelerator = Accelerator(
            mixed_precision=c.train.precision, log_with="tensorboard" if c.log.tensorboard else None,
            project_dir=str(self.out),
        )
        acc = self.accelerator
        launched = int(os.environ.get("WORLD_SIZE", "1"))
        if launched != acc.num_processes:
            # e.g. an FSDP config on a machine without GPUs: accelerate then runs every process alone, and
            # they would all train the same model and write the same files
            raise SystemExit(f"error: the launcher started {launched} processes but accelerate sees {acc.num_processes} "
                             f"({acc.distributed_type}); the accelerate config does not fit this machine (FSDP and "
                             "multi-GPU configs need GPUs; on CPUs use `accelerate launch --cpu --num_processes N`)")
        try:
            self.sources = expand_shards(c.data.train) if c.data.train else None
            if not self.sources:
                raise ShardError("no training shards: set data.train (e.g. --data.train 'data/train-{000000..000009}.tar')")
            check_shards(self.sources, "train")
            self.weights = _weights(c.data.weights, len(self.sources))
            if c.data.valid:
                check_shards(expand_shards(c.data.valid), "validation")
        except (ShardError, ValueError) as e:
            raise SystemExit(f"error: {e}") from e
        if c.train.batch_size < 1 or c.train.accum_steps < 1 or c.train.steps < 1:
            raise SystemExit("error: train.batch_size, train.accum_steps and train.steps must be at least 1")

        self.checkpoints = self.out / "checkpoints"
        self.resume_from = resolve_resume(c.resume, self.checkpoints)
        if c.resume == "latest" and self.resume_from is None and acc.is_main_process:
            log.warning("--resume latest: no checkpoint in %s yet, starting fresh", self.checkpoints)
        init_dir = self.out / "init"
        if acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            c.save(self.out / "config.yaml")
            if not (init_dir / "config.json").is_file():  # the architecture and tokenizer, made once per run
                build_model(c.model, c.data.train, c.train.seed).save_pretrained(init_dir)
        acc.wait_for_everyone()
        torch.manual_seed(c.train.seed)  # identical initial weights on every rank
        model = load(init_dir, device="cpu")
        model.clap.logit_scale_t.requires_grad_(False)  # the loss uses one temperature (logit_scale_a)
        if c.model.gradient_checkpointing:
            # ClapModel's class flag says no, but its text layers and audio stages are transformers'
            # GradientCheckpointingLayer and checkpoint correctly (tested), so allow it on this instance.
            model.clap.supports_gradient_checkpointing = True
            enable = getattr(model.clap, "activation_checkpointing_enable", None)  # its name from transformers 5.x on
            if enable is not None:
                enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.clap.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        optimizer = build_optimizer(model, c.train)
        self.model, self.optimizer = acc.prepare(model, optimizer)
        self.loss_fn = ContrastiveLoss()
        self.step = 0
        self.best: list[dict] = []  # [{"metric": float, "step": int, "path": str}], best first
        self.bad_in_row = 0
        world = acc.num_processes
        self.samples_per_step = c.train.batch_size * c.train.accum_steps * world
        self.steps_per_epoch = max(1, c.data.samples_per_epoch // self.samples_per_step)
        torch.manual_seed(int(c.train.seed) * 1000 + acc.process_index)  # per-rank dropout/augmentation
        if self.resume_from is not None:
            self._load(self.resume_from)
        if c.log.tensorboard:
            flat = {f"{s}.{k}": (v if isinstance(v, (int, float, str, bool)) else str(v))
                    for s, section in c.to_dict().items() if isinstance(section, dict) for k, v in section.items()}
            acc.init_trackers("tensorboard", config=flat)

    @property
    def unwrapped(self) -> BioLingual:
        return self.accelerator.unwrap_model(self.model)

    # ---- checkpoints ----------------------------------------------------------------------------
    def _save(self) -> Path:
        acc = self.accelerator
        rng = gather_object([_rng_state()]) if acc.num_processes > 1 else [_rng_state()]
        model_state, optim_state = full_state(self.model, self.optimizer)  # a collective under FSDP: every rank calls it
        path = self.checkpoints / f"step_{self.step}.pt"
        if acc.is_main_process:
            state = {
                "model": model_state,
                "optimizer": optim_state,
                "step": self.step,
                "best": self.best,
                "rng": rng,
                "scaler": acc.scaler.state_dict() if acc.scaler is not None else None,
            }
            save_atomic(state, path)
            prune(self.checkpoints, self.config.checkpoint.keep_last, protect={Path(b["path"]) for b in self.best})
        acc.wait_for_everyone()
        return path

    def _load(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=False)
        load_full_state(self.model, self.optimizer, state["model"], state["optimizer"])
        self.step, self.best = int(state["step"]), list(state["best"])
        rank = self.accelerator.process_index
        if rank < len(state["rng"]):
            _set_rng_state(state["rng"][rank])
        if state.get("scaler") and self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(state["scaler"])
        if self.accelerator.is_main_process:
            log.info("resumed from %s at step %d", path, self.step)

    # ---- validation and export ------------------------------------------------------------------
    @property
    def sharded(self) -> bool:
        """Under FSDP every forward pass and every gathering of the weights is a collective: validation,
        best-checkpoint and export code must run on all ranks, not only the main one."""
        return self.accelerator.distributed_type == DistributedType.FSDP

    def _validate(self) -> dict | None:
        c, acc = self.config, self.accelerator
        metrics = None
        if c.data.valid and (acc.is_main_process or self.sharded):
            metrics = validate(self.unwrapped, c.data.valid, c.valid.batch_size, c.data.workers, c.valid.max_samples)
            if c.valid.metric not in metrics:
                raise SystemExit(f"error: valid.metric '{c.valid.metric}' is not one of {sorted(metrics)}")
        if c.data.valid and self.sharded:  # every rank decides on the main process's figures
            metrics = broadcast_object_list([metrics])[0]
        if metrics is not None:
            if acc.is_main_process:
                acc.log({f"valid/{k}": v for k, v in metrics.items()}, step=self.step)
                tqdm.write(f"step {self.step} validation: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()) if "@1" in k or "mAP" in k))
            self._keep_if_best(metrics[c.valid.metric])
        acc.wait_for_everyone()
        return metrics

    def _model_state(self) -> dict:
        """The whole model's weights on the main process (gathered from every rank under FSDP)."""
        if self.sharded:
            return full_state(self.model, self.optimizer)[0]
        return self.unwrapped.state_dict()

    def _keep_if_best(self, value: float) -> None:
        c = self.config
        ranked = sorted(self.best + [{"metric": value, "step": self.step, "path": ""}], key=lambda b: -b["metric"])
        if not any(b["step"] == self.step for b in ranked[: c.checkpoint.keep_best]):
            return
        model_state = self._model_state()
        path = self.checkpoints / f"best_step_{self.step}.pt"
        for b in ranked:
            if b["step"] == self.step:
                b["path"] = str(path)
        self.best = ranked[: c.checkpoint.keep_best]
        if not self.accelerator.is_main_process:
            return
        save_atomic({"model": model_state, "step": self.step, "metric": value}, path)
        for dropped in ranked[c.checkpoint.keep_best :]:
            Path(dropped["path"]).unlink(missing_ok=True)
        if self.best[0]["step"] == self.step:
            self._export(self.out / "best", model_state if self.sharded else None)

    def _export(self, folder: Path, state_dict: dict | None = None) -> None:
        """Atomically replace ``folder`` with a biolingual.load()-able transformers-format model."""
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.unwrapped.save_pretrained(tmp, state_dict=state_dict)
        old = folder.with_name(folder.name + ".old")
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)

    # ---- one optimisation step ------------------------------------------------------------------
    def _forward_backward(self, audio: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """Loss of one step; with accum_steps > 1, open_clip's cached-feature accumulation (k x negatives)."""
        acc, k = self.accelerator, self.config.train.accum_steps
        tokens = self.unwrapped.tokenize(texts)
        if k == 1:
            with acc.autocast():
                a, t, scale = self.model(audio, tokens["input_ids"], tokens["attention_mask"])
                loss = self.loss_fn(a, t, scale)
            acc.backward(loss)
            return loss.detach()
        chunks = list(zip(audio.chunk(k), tokens["input_ids"].chunk(k), tokens["attention_mask"].chunk(k)))
        with torch.no_grad(), acc.autocast():
            cached = [self.model(*chunk)[:2] for chunk in chunks]
        total = torch.zeros((), device=audio.device)
        for j, chunk in enumerate(chunks):
            sync = contextlib.nullcontext() if j == k - 1 else acc.no_sync(self.model)
            with sync, acc.autocast():
                a_j, t_j, scale = self.model(*chunk)
                all_a = torch.cat([c[0] for c in cached[:j]] + [a_j] + [c[0] for c in cached[j + 1 :]])
                all_t = torch.cat([c[1] for c in cached[:j]] + [t_j] + [c[1] for c in cached[j + 1 :]])
                # The temperature is in every micro-batch's loss; let its gradient through once, not k times.
                loss = self.loss_fn(all_a, all_t, scale if j == k - 1 else scale.detach())
                acc.backward(loss)
            total += loss.detach()
        return total / k

    def run(self) -> dict:
        c, acc = self.config, self.accelerator
        total_steps = c.train.steps
        bar = tqdm(total=total_steps, initial=self.step, desc="training", unit="step", disable=not acc.is_main_process)
        last_metrics: dict | None = None
        stop = False
        window = {"loss": [], "data": 0.0, "step": 0.0, "samples": 0, "skipped": 0}
        while self.step < total_steps and not stop:
            epoch, start = divmod(self.step, self.steps_per_epoch)
            loader = train_loader(
                c.data.train, batch_size=c.train.batch_size * c.train.accum_steps, steps_per_epoch=self.steps_per_epoch,
                epoch=epoch, seed=c.train.seed, rank=acc.process_index, workers=c.data.workers, weights=self.weights,
                sampling_rate=self.unwrapped.sampling_rate,
                clip_samples=int(round(c.data.clip_seconds * self.unwrapped.sampling_rate)),
                shuffle_buffer=c.data.shuffle_buffer, start_step=start,
            )
            tick = time.perf_counter()
            for batch in loader:
                got_batch = time.perf_counter()
                lr = lr_at(self.step, c.train.lr, c.train.warmup, total_steps, c.train.min_lr)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                loss = self._forward_backward(batch["audio"].to(acc.device), batch["text"])
                if not bool(torch.isfinite(acc.reduce(loss, "mean"))):
                    self.optimizer.zero_grad(set_to_none=True)
                    self.bad_in_row += 1
                    log.warning("step %d: non-finite loss, update skipped (%d in a row)", self.step, self.bad_in_row)
                    if self.bad_in_row >= c.train.max_bad_steps:
                        tqdm.write(f"stopping: {self.bad_in_row} non-finite losses in a row at step {self.step}; "
                                   f"the last good checkpoint is kept in {self.checkpoints}")
                        stop = True
                        break
                else:
                    self.bad_in_row = 0
                    if c.train.grad_clip > 0:
                        acc.clip_grad_norm_(self.model.parameters(), c.train.grad_clip)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    clamp_logit_scale_(self.unwrapped.clap.logit_scale_a)
                self.step += 1
                done = time.perf_counter()
                window["loss"].append(float(loss))
                window["data"] += got_batch - tick
                window["step"] += done - tick
                window["samples"] += self.samples_per_step
                window["skipped"] += int(batch["skipped"])
                tick = done
                if self.step % c.log.every == 0 or self.step == total_steps:
                    stats = {
                        "train/loss": float(np.mean(window["loss"])), "train/lr": lr,
                        "train/temperature": float(self.unwrapped.logit_scale.detach()),
                        "train/samples_per_s": window["samples"] / max(window["step"], 1e-9),
                        "train/samples_per_s_per_device": window["samples"] / acc.num_processes / max(window["step"], 1e-9),
                        "train/data_wait_share": window["data"] / max(window["step"], 1e-9),
                        "train/skipped_samples": window["skipped"],
                        "train/epoch": epoch,
                    }
                    acc.log(stats, step=self.step)
                    bar.set_postfix(loss=f"{stats['train/loss']:.3f}", lr=f"{lr:.2e}", temp=f"{stats['train/temperature']:.1f}",
                                    sps=f"{stats['train/samples_per_s']:.1f}", data=f"{100 * stats['train/data_wait_share']:.0f}%")
                    window = {"loss": [], "data": 0.0, "step": 0.0, "samples": 0, "skipped": 0}
                bar.update(1)
                if c.checkpoint.every and self.step % c.checkpoint.every == 0 and self.step < total_steps and not self.bad_in_row:
                    self._save()
                if c.valid.every and self.step % c.valid.every == 0 and self.step < total_steps:
                    last_metrics = self._validate()
                if self.step >= total_steps:
                    break
        bar.close()
        if not stop:
            self._save()
            last_metrics = self._validate()
            if not c.data.valid:  # no validation set: the final model is the one exported
                state = self._model_state() if self.sharded else None
                if acc.is_main_process:
                    self._export(self.out / "best", state)
        acc.wait_for_everyone()
        acc.end_training()
        return {"step": self.step, "stopped_early": stop, "metrics": last_metrics or {}, "best": self.best}


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    config = load_config(argv)
    return Trainer(config).run()

