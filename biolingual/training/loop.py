"""The training loop: one process per device under ``accelerate launch``/``torchrun``, or a plain ``python train.py``.

Each rank builds its own data stream (never ``accelerator.prepare``d: accelerate would shard an
IterableDataset twice), the learning rate is a pure function of the step, checkpoints are atomic,
durable and hold everything a resume needs (model, optimizer, step, best list, every rank's RNG state
and the raw samples its data stream consumed). Under FSDP the trainer shards the model itself
(:mod:`.sharding`), on GPUs and on CPU processes alike.

Every advertised path runs through ``train.py``'s ``main`` on the ``tiny`` preset in the tests: one process
(validation, best-K, export, exact resume with the moving average, sigmoid loss and a teacher, accumulation,
precisions, failures) in tests/test_training.py; DDP and FSDP2 on 2 CPU processes (torchrun) in
tests/test_training_distributed.py; the launchers, the precision they set and the run lock in
tests/test_training_launch.py; the docs' commands in tests/test_docs.py (docs/training.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..extras import MissingExtraError, require

require("accelerate", "train", "training")  # first, so a core install is told which extra to add
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType, broadcast_object_list, gather_object
from tqdm.auto import tqdm

from ..atomic import replace_dir
from ..data import ShardError, check_shards, check_usable, expand_shards, train_loader
from ..device import check_launch_size
from ..errors import LaunchError, ModelNotFoundError, WriteError
from ..faults import fault_point
from ..loading import load
from ..locks import holder_text, lock_holders, take_lock
from ..loss import SIGMOID_BIAS_INIT, ContrastiveLoss, DistillationLoss, SigmoidLoss, clamp_logit_scale_
from ..model import BioLingual
from ..vocabulary import ACCELERATE_SPELLINGS
from . import sharding, throughput
from .accumulation import WholeBatchNorm, rng_state, set_rng_state
from .benchmarks import Benchmarks
from .checkpoint import (
    CheckpointError,
    full_state,
    load_checkpoint,
    load_full_state,
    prune,
    resolve_resume,
    save_atomic,
    step_checkpoints,
)
from .config import LAUNCHER_PRECISION, Config, ConfigError, HelpRequested, load_config, resolve_precision
from .ema import EMA
from .initialise import build_model
from .schedule import lr_at
from .teacher import TeacherCache, TeacherCacheError, build_cache
from .validate import embed_across_ranks, scores

log = logging.getLogger("biolingual.train")
ACCELERATE_WORDS = {ours: theirs for theirs, ours in ACCELERATE_SPELLINGS.items()}  # what Accelerator() takes


def build_optimizer(model: BioLingual, config, device: torch.device | None = None) -> torch.optim.Optimizer:
    """Adam/AdamW; no weight decay on norms, biases and the temperature (1-D parameters). On CUDA the
    fused implementation (one kernel for all parameters instead of several per parameter)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    betas = tuple(config.betas)
    kinds = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    if config.optimizer not in kinds:
        raise ValueError(f"train.optimizer must be one of {sorted(kinds)}, got '{config.optimizer}'")
    fused = {"fused": True} if device is not None and torch.device(device).type == "cuda" else {}
    return kinds[config.optimizer](groups, lr=config.lr, betas=betas, eps=config.eps, **fused)


def _rng_state() -> dict:
    """This process's RNG states as tensors and plain values (what ``torch.load(weights_only=True)`` reads)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": random.getstate(),
    }


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    elif cuda:
        log.warning(
            "the checkpoint holds the RNG state of %d CUDA devices, this process sees %d: not restored",
            len(cuda),
            torch.cuda.device_count() if torch.cuda.is_available() else 0,
        )
    numpy = state["numpy"]
    if isinstance(numpy, dict):
        np.random.set_state(
            (numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"], numpy["gauss"])
        )
    else:  # checkpoints written before the state was stored as a tensor
        np.random.set_state(tuple(numpy))
    random.setstate(_as_tuples(state["python"]))


def _as_tuples(value):
    """random.setstate wants tuples; a state that went through a list-producing format is turned back."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def _weights(weights: list[float], n_sources: int) -> list[float] | None:
    """The sampling weight of each shard source; None (equal) for none given. load_config checks the
    count; a Config built in Python may not have been through it."""
    if not weights:
        return None
    if len(weights) != n_sources:
        raise ConfigError(f"'data.weights' has {len(weights)} values for the {n_sources} sources of data.train")
    return list(weights)


class RunLocked(RuntimeError):
    """Another trainer (or a leftover worker of an earlier job) is writing the same run folder."""


class Trainer:
    """One run of train.py: built in named steps (launch, data, run folder, model, optimizer, resume), then
    :meth:`run`. Every process of a job builds one."""

    def __init__(self, config: Config):
        self.config = config
        self.out = Path(config.out)
        self._stack = contextlib.ExitStack()  # the run folder's lock, held until the process ends
        self._launch()
        self._check_data()
        self._lock_run_folder()
        self._prepare_run_folder()
        self._build_model_and_optimizer()
        self._init_state()
        if self.resumed is not None:
            self._load(self.resume_from, self.resumed)
        self.resumed = None  # the checkpoint's tensors are in the model and optimizer now
        if config.log.tensorboard:
            flat = {
                f"{s}.{k}": (v if isinstance(v, (int, float, str, bool)) else str(v))
                for s, section in config.to_dict().items()
                if isinstance(section, dict)
                for k, v in section.items()
            }
            self.accelerator.init_trackers("tensorboard", config=flat)

    def _launch(self) -> None:
        """The Accelerator, at the one precision the config and the launcher agree on, checked against the
        processes the launcher really started; TF32 on GPUs."""
        c = self.config
        self.precision, source = resolve_precision(c.train.precision, os.environ.get(LAUNCHER_PRECISION))
        # accelerate keeps one state per process; a second run in the same process (a notebook, the
        # tests) may ask for another precision, which accelerate refuses unless the state is reset.
        AcceleratorState._reset_state()
        self.accelerator = acc = Accelerator(
            mixed_precision=ACCELERATE_WORDS[self.precision],
            log_with="tensorboard" if c.log.tensorboard else None,
            project_dir=str(self.out),
        )
        launched = check_launch_size("train.py --config CONFIG ...")
        if launched != acc.num_processes:
            # e.g. an FSDP config on a machine without GPUs: accelerate then runs every process alone, and
            # they would all train the same model and write the same files
            raise LaunchError(
                f"the launcher started {launched} processes but accelerate sees {acc.num_processes} "
                f"({acc.distributed_type}); the accelerate config does not fit this machine (FSDP and "
                "multi-GPU configs need GPUs; on CPUs use `torchrun --nproc_per_node N train.py ...` "
                "with ACCELERATE_USE_CPU=1, adding --train.fsdp true for FSDP)"
            )
        if acc.is_main_process:
            log.info("precision: %s (from %s)", self.precision, source)
        if acc.device.type == "cuda":
            # TF32 runs float32 matmuls on tensor cores (about 7x the float32 rate of an H100) with a 10-bit
            # mantissa, which contrastive training tolerates; bf16 autocast does not depend on it.
            torch.backends.cuda.matmul.allow_tf32 = bool(c.train.tf32)
            torch.backends.cudnn.allow_tf32 = bool(c.train.tf32)
        # FSDP from accelerate's config (GPU nodes) or from --train.fsdp (any device, CPU processes included)
        self.sharded = c.train.fsdp or acc.distributed_type == DistributedType.FSDP
        if self.sharded and self.precision == "float16":
            raise ConfigError(
                "train.precision float16 is not supported with FSDP (it needs a sharded gradient scaler); use bfloat16"
            )
        if self.sharded and not torch.distributed.is_initialized():
            raise LaunchError(
                "train.fsdp shards the model over several processes, and this is a single process: launch "
                "with `torchrun --nproc_per_node N train.py ...` (ACCELERATE_USE_CPU=1 on CPUs) or "
                "`accelerate launch --config_file configs/accelerate/fsdp.yaml train.py ...`"
            )

    def _check_data(self) -> None:
        """Shards exist and (checked on the main process) some sample decodes, before any model is built."""
        c, acc = self.config, self.accelerator
        max_bad = c.data.max_bad_in_row
        self.sources = expand_shards(c.data.train) if c.data.train else None
        if not self.sources:
            raise ShardError("no training shards: set data.train (e.g. --data.train 'data/train-{000000..000009}.tar')")
        captions = not c.distill.audio_only
        check_shards(self.sources, "train", captions=captions)
        self.weights = _weights(c.data.weights, len(self.sources))
        if c.data.valid:
            check_shards(expand_shards(c.data.valid, split="valid"), "validation")
        if acc.is_main_process:  # a set where nothing decodes fails now, not at step 1
            check_usable(c.data.train, "train", max_bad_in_row=max_bad, captions=captions)
            if c.data.valid:
                check_usable(c.data.valid, "validation", max_bad_in_row=max_bad, split="valid")

    def _lock_run_folder(self) -> None:
        """One job per run folder: the main process holds ``RUN/train.lock`` (naming its pid, host and the pids
        of the job's other processes) for as long as it lives. A second trainer on the folder, or a resume
        while workers of a killed torchrun job still write into it, stops with the holder's name."""
        acc = self.accelerator
        pids = gather_object([os.getpid()]) if acc.num_processes > 1 else [os.getpid()]
        refused = None
        if acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            path = self.out / "train.lock"
            others = (
                f"(rank 0 of {acc.num_processes}; the job's pids: {' '.join(map(str, pids))})" if len(pids) > 1 else ""
            )
            if not take_lock(self._stack, path, holder=holder_text(others), what=f"the run folder '{self.out}'"):
                who = ", ".join(lock_holders([path])) or "pid unknown"
                refused = (
                    f"the run folder '{self.out}' is in use by another trainer ({who}; lock file '{path}'). Wait "
                    "for it to finish or stop it (docs/training.md, 'Stopping a run'), or give this run another "
                    "--out. Two trainers writing one folder overwrite each other's checkpoints."
                )
        if acc.num_processes > 1:
            refused = broadcast_object_list([refused])[0]
        if refused:
            raise RunLocked(refused)

    def _prepare_run_folder(self) -> None:
        """The checkpoint to resume from (read now: a bad file stops the run before any work), the run's
        config.yaml and its ``init/`` model (architecture and tokenizer, made once per run)."""
        c, acc = self.config, self.accelerator
        self.checkpoints = self.out / "checkpoints"
        self.resume_from = resolve_resume(c.resume, self.checkpoints)
        self.resumed = load_checkpoint(self.resume_from) if self.resume_from is not None else None
        if c.resume == "latest" and self.resume_from is None and acc.is_main_process:
            log.warning("--resume latest: no checkpoint in %s yet, starting fresh", self.checkpoints)
        self.init_dir = init_dir = self.out / "init"
        if acc.is_main_process:
            c.train.precision = self.precision  # what it trained at, whichever source set it
            c.save(self.out / "config.yaml")
            if not (init_dir / "config.json").is_file():
                tmp = self.out / ".init.tmp"
                shutil.rmtree(tmp, ignore_errors=True)
                teacher = self._open_teacher("cpu") if c.distill.teacher_text else None
                build_model(c.model, c.data.train, c.train.seed, teacher).save_pretrained(tmp)
                replace_dir(tmp, init_dir)
        acc.wait_for_everyone()

    def _build_model_and_optimizer(self) -> None:
        """The initial model on every rank (identical weights), sharded by FSDP2 or wrapped for DDP, its
        optimizer (fused on CUDA), and optionally compiled."""
        c, acc = self.config, self.accelerator
        torch.manual_seed(c.train.seed)  # identical initial weights on every rank
        model = self._initial_model()
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
        if c.train.compile:
            # in place (nn.Module.compile): parameter names, state dicts and checkpoints stay those of the model
            model.compile()
        if self.sharded:
            # accelerate's own FSDP path is not used: it exists only on accelerators, so the CPU processes
            # of the tests would take a different path from a GPU node's (see sharding.py)
            plugin = acc.state.fsdp_plugin if acc.distributed_type == DistributedType.FSDP else None
            reshard = bool(getattr(plugin, "reshard_after_forward", True)) if plugin is not None else True
            self.model = sharding.shard_model(
                model,
                acc.device,
                reshard_after_forward=reshard is not False,
                param_dtype=torch.bfloat16 if self.precision == "bfloat16" else None,
            )
            self.optimizer = build_optimizer(self.model, c.train, acc.device)
            if acc.is_main_process:
                log.info("model sharded with FSDP2 over %d processes (%s)", acc.num_processes, acc.device.type)
        else:
            model.to(acc.device)  # before the optimizer: fused Adam needs its parameters on the GPU
            optimizer = build_optimizer(model, c.train, acc.device)
            self.model, self.optimizer = acc.prepare(model, optimizer)
        self._plain: BioLingual | None = None  # under FSDP: a whole copy on the main process's CPU, to export
        self.loss_fn = SigmoidLoss() if c.train.loss == "sigmoid" else ContrastiveLoss()
        # after wrapping: under FSDP the average is kept beside each process's shards
        self.ema = EMA(self.model, c.train.ema_decay) if c.train.ema_decay > 0 else None
        self._load_teacher()
        self.benchmarks = None
        if c.valid.benchmarks:  # read on every process, so that all stop alike on a bad copy; scored on the main one
            try:
                self.benchmarks = Benchmarks(c.valid.benchmarks, self.out, c.valid.batch_size, c.data.workers)
            except (ImportError, ValueError) as e:
                raise ConfigError(f"'valid.benchmarks': {e}") from None
        self._flops: float | None = None  # model FLOPs of one training sample, counted at the first log on a GPU

    def _initial_model(self) -> BioLingual:
        """The run's ``init/`` model on the CPU, with the parameters the loss trains: one temperature
        (``logit_scale_a``), and with ``train.loss sigmoid`` SigLIP's bias (kept if the model has one)."""
        c = self.config
        model = load(self.init_dir, device="cpu")
        model.clap.logit_scale_t.requires_grad_(False)  # the loss uses one temperature (logit_scale_a)
        if c.train.loss == "sigmoid":
            model.add_logit_bias(SIGMOID_BIAS_INIT)
        if c.distill.audio_only or c.distill.teacher_text:  # only the audio tower and the temperature learn
            for module in (model.clap.text_model, model.clap.text_projection):
                module.requires_grad_(False)
        if model.logit_bias is not None and (
            c.train.loss != "sigmoid"
            or c.distill.audio_only
            or (c.distill.teacher and c.distill.contrastive_weight == 0)
        ):
            model.logit_bias.requires_grad_(False)  # no loss uses it (DDP refuses parameters without gradients)
        return model

    def _open_teacher(self, device) -> BioLingual:
        try:
            return load(self.config.distill.teacher, device=device)
        except ModelNotFoundError as e:
            raise ConfigError(f"'distill.teacher': {e}") from None

    def _load_teacher(self) -> None:
        """``distill.teacher`` on every process's device, frozen; checked against the student before any step."""
        c, acc = self.config, self.accelerator
        self.teacher, self.teacher_cache = None, None
        if not c.distill.teacher:
            return
        teacher = self._open_teacher(acc.device)
        teacher.eval().requires_grad_(False)
        student = self.unwrapped
        if teacher.sampling_rate != student.sampling_rate:
            raise ConfigError(
                f"'distill.teacher' {c.distill.teacher} reads audio at {teacher.sampling_rate} Hz and the student "
                f"at {student.sampling_rate} Hz: they must hear the same clips"
            )
        if c.distill.feature_weight > 0 and teacher.embedding_dim != student.embedding_dim:
            raise ConfigError(
                f"'distill.feature_weight' compares embeddings, but the teacher {c.distill.teacher} embeds into "
                f"{teacher.embedding_dim} dimensions and the student into {student.embedding_dim}: give the student "
                f"the teacher's projection size, or set --distill.feature_weight 0 (the affinity term needs no "
                "equal sizes)"
            )
        self.distill_fn = DistillationLoss()
        fingerprint = teacher.fingerprint()
        if acc.is_main_process:
            log.info("distilling from %s (fingerprint %s)", c.distill.teacher, fingerprint)
        if not c.distill.cache:
            self.teacher = teacher
            return
        urls = [u for source in self.sources for u in source]
        clip = int(round(c.data.clip_seconds * student.sampling_rate))
        failed = None
        if acc.is_main_process:  # one process embeds the shards that have no cache for this teacher yet
            try:
                build_cache(teacher, urls, clip, batch_size=c.valid.batch_size)
            except TeacherCacheError as e:
                failed = str(e)
        if acc.num_processes > 1:
            failed = broadcast_object_list([failed])[0]
        if failed:
            raise ConfigError(f"'distill.cache': {failed}")
        del teacher  # every batch's teacher embeddings come from the cache now
        self.teacher_cache = TeacherCache(urls, fingerprint, acc.device)

    @torch.no_grad()
    def _teacher_embeddings(self, audio: torch.Tensor, texts: list[str], keys: list[str] | None) -> tuple | None:
        """The teacher's (audio, text, logit scale) for the step's whole batch, from its cache or computed now;
        None without a teacher."""
        if self.teacher_cache is not None:
            return self.teacher_cache.lookup(keys, texts)
        teacher = self.teacher
        if teacher is None:
            return None
        with self.accelerator.autocast():
            text = None
            if texts is not None:
                tokens = teacher.tokenize(texts)
                text = teacher.encode_text(tokens["input_ids"], tokens["attention_mask"])
            return teacher.encode_audio(audio), text, teacher.logit_scale.detach()

    def _loss(
        self,
        audio: torch.Tensor,
        text: torch.Tensor,
        scale: torch.Tensor,
        teacher: tuple | None,
        learn_scalars: bool = True,
    ) -> torch.Tensor:
        """The step's loss: ``train.loss`` on the captions, plus distillation from the teacher's embeddings.
        ``learn_scalars`` False passes the temperature and bias without gradient (accumulation lets it
        through once per step, not once per micro-batch)."""
        c = self.config
        bias = self.unwrapped.logit_bias
        if not learn_scalars:
            scale, bias = scale.detach(), bias.detach() if bias is not None else None
        total = torch.zeros((), device=audio.device)
        if text is not None and (teacher is None or c.distill.contrastive_weight > 0):
            task = (
                self.loss_fn(audio, text, scale, bias)
                if c.train.loss == "sigmoid"
                else self.loss_fn(audio, text, scale)
            )
            total = task if teacher is None else c.distill.contrastive_weight * task
        if teacher is not None:
            t_audio, t_text, t_scale = teacher
            parts = self.distill_fn(audio, t_audio, scale, t_scale, text, t_text, feature=c.distill.feature_weight > 0)
            total = total + c.distill.affinity_weight * parts["affinity"]
            if "feature" in parts:
                total = total + c.distill.feature_weight * parts["feature"]
        return total

    def _init_state(self) -> None:
        """Step, best list and data position; the per-rank seed of dropout and augmentation."""
        c, acc = self.config, self.accelerator
        self.step = 0
        self.best: list[dict] = []  # [{"metric": float, "step": int, "path": str}], best first
        self.bad_in_row = 0
        self.loader = None
        self.resume_positions: dict | None = None
        world = acc.num_processes
        self.samples_per_step = c.train.batch_size * c.train.accum_steps * world
        self.steps_per_epoch = max(1, c.data.samples_per_epoch // self.samples_per_step)
        torch.manual_seed(int(c.train.seed) * 1000 + acc.process_index)  # per-rank dropout/augmentation

    def close(self) -> None:
        """Let go of the run folder (its lock); the process's exit does the same."""
        self._stack.close()

    @property
    def unwrapped(self) -> BioLingual:
        return self.accelerator.unwrap_model(self.model)

    # ---- checkpoints ----------------------------------------------------------------------------
    def _data_position(self, epoch: int) -> dict:
        return {"epoch": epoch, "positions": list(self.loader.positions) if self.loader is not None else []}

    def _save(self, epoch: int) -> Path:
        acc = self.accelerator
        mine = {"rng": _rng_state(), "data": self._data_position(epoch)}
        every = gather_object([mine]) if acc.num_processes > 1 else [mine]
        model_state, optim_state = full_state(
            self.model, self.optimizer
        )  # a collective under FSDP: every rank calls it
        ema_state = None
        if self.ema is not None:
            with self.ema.applied():  # the average as a whole, name-keyed state dict, like the model's
                ema_state = {k: v.detach().clone() for k, v in self._model_state().items()}
        path = self.checkpoints / f"step_{self.step}.pt"
        if acc.is_main_process:
            state = {
                "model": model_state,
                "optimizer": optim_state,
                "step": self.step,
                "best": self.best,
                "rng": [r["rng"] for r in every],
                "data": [r["data"] for r in every],
                "scaler": acc.scaler.state_dict() if acc.scaler is not None else None,
                **({"ema": ema_state, "ema_updates": self.ema.updates} if self.ema is not None else {}),
            }
            save_atomic(state, path)
            fault_point("train.checkpoint_saved")
            prune(self.checkpoints, self.config.checkpoint.keep_last, protect={Path(b["path"]) for b in self.best})
        acc.wait_for_everyone()
        return path

    def _load(self, path: Path, state: dict) -> None:
        trained_sigmoid = "clap.logit_bias" in state["model"]
        if trained_sigmoid != (self.unwrapped.logit_bias is not None):  # the sigmoid loss's bias on one side only
            raise CheckpointError(
                f"'{path}' was trained with train.loss {'sigmoid' if trained_sigmoid else 'infonce'} and this "
                f"run asks for {self.config.train.loss}: resume with --train.loss "
                f"{'sigmoid' if trained_sigmoid else 'infonce'} (or start a new run from its weights with "
                "--model.init)"
            )
        if self.ema is not None:
            if state.get("ema") is not None:  # through the model, so that it lands in any layout (FSDP shards)
                from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

                set_model_state_dict(self.model, state["ema"], options=StateDictOptions(full_state_dict=True))
                self.ema.capture()
                self.ema.updates = int(state["ema_updates"])
            else:
                log.warning(
                    "%s holds no moving average (written with train.ema_decay 0): it starts from the weights", path
                )
        load_full_state(self.model, self.optimizer, state["model"], state["optimizer"])
        if self.ema is not None and state.get("ema") is None:
            self.ema.capture()
        self.step, self.best = int(state["step"]), [dict(b) for b in state["best"]]
        rank = self.accelerator.process_index
        if rank < len(state["rng"]):
            _set_rng_state(state["rng"][rank])
        data = state.get("data") or []
        self.resume_positions = data[rank] if rank < len(data) else None
        if state.get("scaler") and self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(state["scaler"])
        if self.accelerator.is_main_process:
            log.info("resumed from %s at step %d", path, self.step)

    # ---- validation and export ------------------------------------------------------------------
    def _model_state(self) -> dict:
        """The whole model's weights on the main process (gathered from every rank under FSDP: a collective)."""
        if self.sharded:
            return full_state(self.model, self.optimizer)[0]
        return self.unwrapped.state_dict()

    def _whole_model(self) -> BioLingual | None:
        """The model as one module on the main process (None elsewhere), to save and export; under FSDP a
        copy on the CPU loaded from the gathered weights (a collective: every rank calls this), since a
        sharded module's methods other than forward cannot run whole. On the CPU, not the main process's
        GPU: a second whole model there would take memory the training batch needs."""
        acc = self.accelerator
        if not self.sharded:
            return self.unwrapped if acc.is_main_process else None
        state = self._model_state()  # every rank takes part
        if not acc.is_main_process:
            return None
        if self._plain is None:
            self._plain = self._initial_model()
        self._plain.load_state_dict(state)
        return self._plain

    def _validate(self) -> dict | None:
        """Every rank embeds its share of the validation shards with the training model (under FSDP in
        lockstep), the main process scores them, and every rank learns the scores, so that all keep the
        same best list and take part in gathering the weights of a new best."""
        c = self.config
        if not c.data.valid and not c.valid.benchmarks:
            return None
        # the average is what is validated and kept
        with self.ema.applied() if self.ema is not None else contextlib.nullcontext():
            metrics = self._validate_weights() if c.data.valid else {}
            if c.valid.benchmarks:
                metrics.update(self._benchmark())
        return metrics

    def _benchmark(self) -> dict:
        """The zero-shot benchmarks of ``valid.benchmarks`` on the main process (its whole model), logged beside
        retrieval as ``benchmark/<kind>/<name>/<metric>``; every process learns the scores."""
        acc = self.accelerator
        model = self._whole_model()  # a collective under FSDP
        scores = self.benchmarks.run(model) if model is not None else None
        if acc.num_processes > 1:
            scores = broadcast_object_list([scores])[0]
        acc.log(scores, step=self.step)
        if acc.is_main_process:
            tqdm.write(
                f"step {self.step} benchmarks: "
                + ", ".join(f"{k.removeprefix('benchmark/')} {v:.4f}" for k, v in sorted(scores.items()))
            )
        acc.wait_for_everyone()
        return scores

    def _validate_weights(self) -> dict:
        c, acc = self.config, self.accelerator
        model = self.unwrapped
        model.eval()
        try:
            with torch.no_grad(), acc.autocast():
                gathered = embed_across_ranks(
                    lambda audio, ids, mask: model(audio, ids, mask)[:2],
                    model,
                    c.data.valid,
                    batch_size=c.valid.batch_size,
                    workers=c.data.workers,
                    max_samples=c.valid.max_samples,
                    rank=acc.process_index,
                    world=acc.num_processes,
                    lockstep=self.sharded and acc.num_processes > 1,
                )
        finally:
            model.train()
        metrics = scores(*gathered) if gathered is not None else None
        if acc.num_processes > 1:
            metrics = broadcast_object_list([metrics])[0]
        acc.log({f"valid/{k}": v for k, v in metrics.items()}, step=self.step)
        if acc.is_main_process:
            tqdm.write(
                f"step {self.step} validation: "
                + ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()) if "@1" in k or "mAP" in k)
            )
        self._keep_if_best(metrics[c.valid.metric])
        acc.wait_for_everyone()
        return metrics

    def _keep_if_best(self, value: float) -> None:
        """On every rank (the same ``value`` everywhere): keep the model if it is among the best ``keep_best``
        so far (the main process writes it), and export the best."""
        c = self.config
        ranked = sorted(self.best + [{"metric": value, "step": self.step, "path": ""}], key=lambda b: -b["metric"])
        if not any(b["step"] == self.step for b in ranked[: c.checkpoint.keep_best]):
            return
        path = self.checkpoints / f"best_step_{self.step}.pt"
        for b in ranked:
            if b["step"] == self.step:
                b["path"] = str(path)
        self.best = ranked[: c.checkpoint.keep_best]
        model = self._whole_model()  # a collective under FSDP
        if model is None:
            return
        save_atomic({"model": model.state_dict(), "step": self.step, "metric": value}, path)
        fault_point("train.best_saved")
        for dropped in ranked[c.checkpoint.keep_best :]:
            Path(dropped["path"]).unlink(missing_ok=True)
        if self.best[0]["step"] == self.step:
            self._export(model, self.out / "best")

    def _export(self, model: BioLingual, folder: Path) -> None:
        """Replace ``folder`` with a biolingual.load()-able transformers-format model; a ``folder`` that
        exists stays there until the new one takes its place in one atomic swap."""
        tmp = folder.with_name(f".{folder.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        fault_point("train.export_written")
        replace_dir(tmp, folder)

    # ---- one optimisation step ------------------------------------------------------------------
    def _forward_backward(self, audio: torch.Tensor, texts: list[str], keys: list[str] | None = None) -> torch.Tensor:
        """Loss of one step; with accum_steps > 1, open_clip's cached-feature accumulation (k x negatives)."""
        acc, k = self.accelerator, self.config.train.accum_steps
        if self.config.distill.audio_only:  # the text tower takes no part (captions may be missing)
            texts, ids, mask = None, None, None
        else:
            tokens = self.unwrapped.tokenize(texts)
            ids, mask = tokens["input_ids"], tokens["attention_mask"]
            self._text_tokens = int(ids.shape[1])  # padded caption length, for the FLOP count
        teacher = self._teacher_embeddings(audio, texts, keys)
        if k == 1:
            with acc.autocast():
                a, t, scale = self.model(audio, ids, mask)
                loss = self._loss(a, t, scale, teacher)
            acc.backward(loss)
            return loss.detach()
        chunks = list(
            zip(audio.chunk(k), *((ids.chunk(k), mask.chunk(k)) if ids is not None else ([None] * k, [None] * k)))
        )
        device = audio.device
        # the whole batch's input-BatchNorm statistics and each micro-batch's random numbers, so that the
        # gradient passes see the network the cached pass saw (accumulation.py says why)
        with WholeBatchNorm(self.unwrapped, self.unwrapped.features(audio)):
            states, cached = [], []
            with torch.no_grad(), acc.autocast():
                for chunk in chunks:
                    states.append(rng_state(device))
                    cached.append(self.model(*chunk)[:2])
            after = rng_state(device)
            total = torch.zeros((), device=device)
            for j, chunk in enumerate(chunks):
                # DDP: reduce gradients once, after the last micro-batch. FSDP reduces each micro-batch's
                # gradient shards as it goes (correct, only less thrifty).
                sync = contextlib.nullcontext() if j == k - 1 or self.sharded else acc.no_sync(self.model)
                set_rng_state(states[j], device)
                with sync, acc.autocast():
                    a_j, t_j, scale = self.model(*chunk)
                    all_a = torch.cat([c[0] for c in cached[:j]] + [a_j] + [c[0] for c in cached[j + 1 :]])
                    all_t = (
                        None
                        if t_j is None
                        else torch.cat([c[1] for c in cached[:j]] + [t_j] + [c[1] for c in cached[j + 1 :]])
                    )
                    # The temperature (and bias) is in every micro-batch's loss; let its gradient through once, not k
                    # times.
                    loss = self._loss(all_a, all_t, scale, teacher, learn_scalars=j == k - 1)
                    acc.backward(loss)
                total += loss.detach()
            set_rng_state(after, device)  # the next step draws on from where the cached passes left off
        return total / k

    def _optimizer_step(self) -> None:
        c = self.config
        if self.sharded:
            sharding.average_replicated_grads(self.model)
            if c.train.grad_clip > 0:
                sharding.clip_grad_norm_(self.model, c.train.grad_clip)
        elif c.train.grad_clip > 0:
            self.accelerator.clip_grad_norm_(self.model.parameters(), c.train.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        clamp_logit_scale_(self.unwrapped.clap.logit_scale_a)
        if self.ema is not None:
            self.ema.update()

    def _device_stats(self, samples_per_s_per_device: float) -> dict:
        """What a GPU user watches beside samples/s: model FLOP utilisation against the device's dense peak
        at the precision the matmuls run in (only where the peak is known: never guessed, so not on a CPU)
        and this process's peak GPU memory since the last log (throughput.py)."""
        acc, stats = self.accelerator, {}
        peak = throughput.peak_flops(acc.device, throughput.matmul_precision(self.precision))
        if peak is not None:
            if self._flops is None:  # counted once per run, on the padded caption length of a real batch
                clip = int(round(self.config.data.clip_seconds * self.unwrapped.sampling_rate))
                self._flops = throughput.flops_per_sample(self.unwrapped, clip, getattr(self, "_text_tokens", 32))
            stats["train/mfu"] = throughput.mfu(samples_per_s_per_device, self._flops, peak)
        memory = throughput.gpu_memory(acc.device, reset=True)
        if memory is not None:
            stats["train/gpu_mem_gib"] = memory["allocated_gib"]
            stats["train/gpu_mem_reserved_gib"] = memory["reserved_gib"]
        return stats

    def run(self) -> dict:
        c, acc = self.config, self.accelerator
        total_steps = c.train.steps
        bar = tqdm(total=total_steps, initial=self.step, desc="training", unit="step", disable=not acc.is_main_process)
        last_metrics: dict | None = None
        stop = False
        window = {"loss": [], "data": 0.0, "step": 0.0, "samples": 0, "skipped": 0}
        epoch = self.step // self.steps_per_epoch
        while self.step < total_steps and not stop:
            epoch, start = divmod(self.step, self.steps_per_epoch)
            position = self.resume_positions
            consumed = position["positions"] if position and start > 0 and position.get("epoch") == epoch else None
            self.resume_positions = None
            self.loader = train_loader(
                c.data.train,
                batch_size=c.train.batch_size * c.train.accum_steps,
                steps_per_epoch=self.steps_per_epoch,
                epoch=epoch,
                seed=c.train.seed,
                rank=acc.process_index,
                workers=c.data.workers,
                weights=self.weights,
                sampling_rate=self.unwrapped.sampling_rate,
                clip_samples=int(round(c.data.clip_seconds * self.unwrapped.sampling_rate)),
                shuffle_buffer=c.data.shuffle_buffer,
                start_step=start,
                consumed=consumed,
                max_bad_in_row=c.data.max_bad_in_row,
                device=acc.device,
                previous=self.loader,  # its workers go on
                captions=not c.distill.audio_only,
            )
            tick = time.perf_counter()
            for batch in self.loader:
                got_batch = time.perf_counter()
                lr = lr_at(self.step, c.train.lr, c.train.warmup, total_steps, c.train.min_lr)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                loss = self._forward_backward(
                    batch["audio"].to(acc.device, non_blocking=True), batch["text"], batch["key"]
                )
                if not bool(torch.isfinite(acc.reduce(loss, "mean"))):
                    self.optimizer.zero_grad(set_to_none=True)
                    self.bad_in_row += 1
                    log.warning("step %d: non-finite loss, update skipped (%d in a row)", self.step, self.bad_in_row)
                    if self.bad_in_row >= c.train.max_bad_steps:
                        tqdm.write(
                            f"stopping: {self.bad_in_row} non-finite losses in a row at step {self.step}; "
                            f"the last good checkpoint is kept in {self.checkpoints}"
                        )
                        stop = True
                        break
                else:
                    self.bad_in_row = 0
                    self._optimizer_step()
                self.step += 1
                fault_point("train.step")
                done = time.perf_counter()
                window["loss"].append(float(loss))
                window["data"] += got_batch - tick
                window["step"] += done - tick
                window["samples"] += self.samples_per_step
                window["skipped"] += int(batch["skipped"])
                tick = done
                if self.step % c.log.every == 0 or self.step == total_steps:
                    stats = {
                        "train/loss": float(np.mean(window["loss"])),
                        "train/lr": lr,
                        "train/temperature": float(self.unwrapped.logit_scale.detach()),
                        **(
                            {"train/logit_bias": float(self.unwrapped.logit_bias.detach())}
                            if self.unwrapped.logit_bias is not None
                            else {}
                        ),
                        "train/samples_per_s": window["samples"] / max(window["step"], 1e-9),
                        "train/samples_per_s_per_device": window["samples"]
                        / acc.num_processes
                        / max(window["step"], 1e-9),
                        "train/data_wait_share": window["data"] / max(window["step"], 1e-9),
                        "train/skipped_samples": window["skipped"],
                        "train/epoch": epoch,
                        **self._device_stats(window["samples"] / acc.num_processes / max(window["step"], 1e-9)),
                    }
                    acc.log(stats, step=self.step)
                    bar.set_postfix(
                        loss=f"{stats['train/loss']:.3f}",
                        lr=f"{lr:.2e}",
                        temp=f"{stats['train/temperature']:.1f}",
                        sps=f"{stats['train/samples_per_s']:.1f}",
                        data=f"{100 * stats['train/data_wait_share']:.0f}%",
                        **({"mfu": f"{100 * stats['train/mfu']:.0f}%"} if "train/mfu" in stats else {}),
                    )
                    window = {"loss": [], "data": 0.0, "step": 0.0, "samples": 0, "skipped": 0}
                bar.update(1)
                if (
                    c.checkpoint.every
                    and self.step % c.checkpoint.every == 0
                    and self.step < total_steps
                    and not self.bad_in_row
                ):
                    self._save(epoch)
                if c.valid.every and self.step % c.valid.every == 0 and self.step < total_steps:
                    last_metrics = self._validate()
                if self.step >= total_steps:
                    break
        bar.close()
        if not stop:
            self._save(epoch)
            last_metrics = self._validate()
            if not c.data.valid:  # no validation set: the final model (its moving average, if kept) is the one exported
                with self.ema.applied() if self.ema is not None else contextlib.nullcontext():
                    model = self._whole_model()
                    if model is not None:
                        self._export(model, self.out / "best")
        acc.wait_for_everyone()
        acc.end_training()
        return {"step": self.step, "stopped_early": stop, "metrics": last_metrics or {}, "best": self.best}


class ConfigExit(SystemExit):
    """Exit status 2 for a config mistake, whose ``error:`` line :func:`main` has printed (a SystemExit holding the
    text would print it, but exit 1); its text is the line, for callers that read it."""

    def __init__(self, text: str):
        super().__init__(2)
        self.text = text

    def __str__(self) -> str:
        return self.text


def _after_write_error(trainer: Trainer) -> str:
    """What a failed write left and how to go on: every file is written whole or not at all (biolingual.atomic), so
    the newest step checkpoint on disk is complete and a rerun with --resume latest continues from it."""
    found = step_checkpoints(trainer.checkpoints)
    where = (
        f"the newest checkpoint, '{found[-1]}', is complete"
        if found
        else "no checkpoint was written yet, so a rerun starts again from step 0"
    )
    return (
        f"Training stopped at step {trainer.step}; nothing written before was lost ({where}). Free some space "
        "(or make the folder writable) and run the same command with --resume latest to go on"
    )


def main(argv: list[str] | None = None) -> dict:
    """``train.py``'s entry point: ``--help`` prints the usage and exits 0; a user's mistake (config,
    shards, checkpoint, launch, a missing extra) exits with ``error: ...`` and no traceback."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        config = load_config(argv)
        trainer = Trainer(config)
        try:
            return trainer.run()
        except WriteError as e:  # a full disk, or a folder that may not be written, while saving
            raise SystemExit(f"error: {e}. {_after_write_error(trainer)}") from None
        finally:
            trainer.close()
    except HelpRequested as e:
        print(e, end="")
        raise SystemExit(0) from None
    except ConfigError as e:  # status 2, as python -m data_pipeline and argparse give a mistake in what was asked
        print(f"error: {e}", file=sys.stderr)
        raise ConfigExit(f"error: {e}") from None
    except (ShardError, CheckpointError, LaunchError, RunLocked, MissingExtraError, TeacherCacheError) as e:
        raise SystemExit(f"error: {e}") from None
