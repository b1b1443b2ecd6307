"""Training configuration: dataclasses filled from a YAML file and ``--section.key value`` overrides.

:func:`load_config` checks everything it can before a run starts (YAML syntax, section and key names,
value types, ranges, the checkpoint to resume from) and raises :class:`ConfigError`, whose message
names the file (and line) or the command line, and the key.

Lists are lists (``data.train``, ``data.weights``, ``train.betas``): YAML lists in a file, and on the
command line ``0.9,0.98`` or ``[0.9, 0.98]`` as the data pipeline reads them, except ``data.train``,
whose shard patterns may hold commas (``{a,b}``) and are joined by ``::``. A config written before
they were lists (a user's file, or a run folder's ``config.yaml``, which ``--resume`` runs are
started with) has text there, ``"0.9,0.999"`` or ``"a.tar::b.tar"``: it is still read, split as
the old code split it, with a FutureWarning naming the file, line and key and the list to write.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ..config_io import (
    ConfigError,
    command_line_value,
    describe_value,
    find_key,
    is_section,
    parse_overrides,
    read_yaml,
    section_names,
    set_key,
)
from ..extras import require
from ..vocabulary import ACCELERATE_SPELLINGS, TRAINING_PRECISIONS

# a list key's metadata: what joined its items when it was text (and joins data.train's on the command line)
SEPARATOR = "separator"


@dataclass
class DataConfig:
    # one brace-expanded shard pattern per source; the text these lists were before is split at SEPARATOR
    train: list[str] = field(default_factory=list, metadata={SEPARATOR: "::"})
    weights: list[float] = field(default_factory=list, metadata={SEPARATOR: ","})  # per source, e.g. [3, 1]; []: equal
    valid: str = ""  # held-out shards for validation (optional)
    samples_per_epoch: int = 10_000  # per epoch over all ranks; steps per epoch = this / (batch x ranks)
    workers: int = 2
    shuffle_buffer: int = 1000
    clip_seconds: float = 10.0
    max_bad_in_row: int = (
        200  # consecutive undecodable samples with no good one before the run stops, naming the shards
    )


@dataclass
class ModelConfig:
    init: str = "preset:tiny"  # preset:NAME, or a ClapModel hub id / folder
    audio_tower: str = ""  # optional: CLAP checkpoint whose audio tower to start from
    text_tower: str = ""  # optional: RoBERTa-style model (hub id / folder) for the text tower
    tokenizer_samples: int = 20_000  # captions read from the shards to train a scratch tokenizer
    vocab_size: int = 0  # 0: the preset's default
    gradient_checkpointing: bool = False


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 32  # per process
    accum_steps: int = 1  # >1: cached-feature accumulation, which also multiplies the negatives
    lr: float = 1e-4
    min_lr: float = 0.0
    warmup: int = 100
    optimizer: str = "adam"  # adam | adamw
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999], metadata={SEPARATOR: ","})
    eps: float = 1e-8
    grad_clip: float = 1.0  # 0 disables
    precision: str = (
        ""  # float32 | bfloat16 | float16; "": the launcher's (accelerate launch --mixed_precision), else float32
    )
    tf32: bool = True  # TF32 tensor cores for float32 matmuls on GPUs that have them (no effect on a CPU)
    compile: bool = False  # torch.compile the model (first steps slower while it compiles)
    seed: int = 3407
    max_bad_steps: int = 20  # consecutive non-finite losses before the run stops
    fsdp: bool = False  # shard the model with FSDP2 over all processes (implied by an accelerate FSDP config)
    loss: str = "infonce"  # infonce (symmetric InfoNCE) | sigmoid (SigLIP: pairwise sigmoid, learnable bias)
    ema_decay: float = 0.0  # >0: keep an exponential moving average of the weights, validated and exported; 0: off


@dataclass
class DistillConfig:
    teacher: str = (
        ""  # a model biolingual.load opens (folder or hub id): the student learns from it; "": no distillation
    )
    feature_weight: float = 1.0  # 1 - cos(student, teacher) of each embedding (needs the teacher's embedding size)
    affinity_weight: float = 1.0  # KL of the teacher's similarity rows over the batch
    contrastive_weight: float = 1.0  # the student's own train.loss on the captions (0: learn from the teacher alone)
    cache: bool = (
        False  # compute the teacher's embeddings once, into a cache beside the shards, keyed by its fingerprint
    )
    audio_only: bool = False  # distil the audio tower alone (text tower frozen), on shards with or without captions
    # the student takes the teacher's text tower, text projection and tokenizer, frozen: labels and queries
    # embed exactly as the teacher's, and only the audio tower learns, into the teacher's space (TinyCLAP)
    teacher_text: bool = False


@dataclass
class CheckpointConfig:
    every: int = 500  # 0: only at the end
    keep_last: int = 2  # step_N.pt files kept; 0: keep all
    keep_best: int = 3


@dataclass
class ValidConfig:
    every: int = 500  # 0: only at the end
    batch_size: int = 64
    metric: str = "text_to_audio/mAP@10"  # higher is better
    max_samples: int = 0  # 0: all
    # zero-shot benchmarks scored at every validation: beans_zero:FOLDER[:C1+C2], birdset:FOLDER:TASK
    benchmarks: list[str] = field(default_factory=list, metadata={SEPARATOR: "::"})


@dataclass
class LogConfig:
    every: int = 10
    tensorboard: bool = True


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    valid: ValidConfig = field(default_factory=ValidConfig)
    log: LogConfig = field(default_factory=LogConfig)
    out: str = "runs/run"
    resume: str = ""  # "latest", a checkpoint path, or "" to start fresh

    def validate(self, origins: dict[str, str] | None = None, mistakes: typing.Sequence[str] = ()) -> None:
        """Raise :class:`ConfigError` naming every out-of-range value (all of them at once).

        ``origins`` maps a dotted key to where its value was set ("FILE, line N" or "command line"),
        which then prefixes that key's message. ``mistakes`` are the messages, each starting with its place, of
        the values of a wrong type and the names that are no section or key, which :func:`load_config` collects
        so that they are reported with the ranges, every one at once.
        """
        problems = _problems(self)
        if not problems and not mistakes:
            return
        origins = origins or {}

        def order(where: str):  # file lines in order, then the command line, then defaults
            return (0, int(where.rsplit("line ", 1)[1])) if ", line " in where else (1 if where else 2, 0)

        placed = [
            (order(origins.get(key, "")), f"{origins[key]}: {text}" if key in origins else text)
            for key, text in problems
        ]
        placed += [(order(message.split(": ", 1)[0]), message) for message in mistakes]
        lines = [message for _, message in sorted(placed, key=lambda entry: entry[0])]
        if len(lines) == 1:
            raise ConfigError(lines[0])
        raise ConfigError(f"{len(lines)} problems in the training config:\n  " + "\n  ".join(lines))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        yaml = require("yaml", "train", "writing the run's config.yaml")
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


# ---- checks ---------------------------------------------------------------------------------------

PRECISIONS = TRAINING_PRECISIONS
LAUNCHER_PRECISION = (
    "ACCELERATE_MIXED_PRECISION"  # what `accelerate launch` sets from --mixed_precision or its config file
)
OPTIMIZERS = ("adam", "adamw")
LOSSES = ("infonce", "sigmoid")


@functools.cache
def metric_names() -> tuple[str, ...]:
    """The names ``valid.metric`` can take: the scores :func:`biolingual.metrics.retrieval_metrics`
    returns for validation's call, found by calling it once on two items (its ``n_items`` count is
    not a score and is left out), so this list cannot drift from what validation reports."""
    import numpy as np

    from ..metrics import retrieval_metrics

    scores = retrieval_metrics(np.eye(2, dtype=np.float32), np.eye(2, dtype=np.float32), captions=["a", "b"])
    return tuple(sorted(name for name, value in scores.items() if isinstance(value, float)))


def _problems(c: Config) -> list[tuple[str, str]]:
    """(dotted key, message naming it) for every value out of its range."""
    found: list[tuple[str, str]] = []

    def add(key: str, text: str) -> None:
        if all(key != k for k, _ in found):  # one message per key
            found.append((key, text))

    def at_least(key: str, value, low) -> None:
        if not value >= low:
            add(key, f"'{key}' must be at least {low}, got {value!r}")

    def above(key: str, value, low) -> None:
        if not value > low:
            add(key, f"'{key}' must be greater than {low}, got {value!r}")

    def one_of(key: str, value, allowed) -> None:
        if value not in allowed:
            add(key, f"'{key}' must be one of {', '.join(allowed)}; got {value!r}")

    for section in dataclasses.fields(c):
        values = getattr(c, section.name)
        for f in dataclasses.fields(values) if dataclasses.is_dataclass(values) else ():
            value = getattr(values, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                key = f"{section.name}.{f.name}"
                add(key, f"'{key}' must be a finite number, got {value!r}")

    d, m, t = c.data, c.model, c.train
    if any(not pattern.strip() for pattern in d.train):
        add("data.train", f"'data.train' has an empty shard pattern; got {d.train!r}")
    if not all(math.isfinite(w) and w > 0 for w in d.weights):
        add(
            "data.weights",
            f"'data.weights' must be positive numbers, one per source in data.train (like [3, 1]); got {d.weights!r}",
        )
    elif d.weights and d.train and len(d.weights) != len(d.train):
        add(
            "data.weights",
            f"'data.weights' has {len(d.weights)} values for the {len(d.train)} sources of data.train "
            f"(one weight per pattern); got {d.weights!r}",
        )
    at_least("data.samples_per_epoch", d.samples_per_epoch, 1)
    at_least("data.workers", d.workers, 0)
    at_least("data.shuffle_buffer", d.shuffle_buffer, 1)
    above("data.clip_seconds", d.clip_seconds, 0)
    at_least("data.max_bad_in_row", d.max_bad_in_row, 1)

    if not m.init.strip():
        add(
            "model.init",
            "'model.init' must not be empty: give preset:tiny, preset:base, or a ClapModel hub id or folder",
        )
    elif m.init.startswith("preset:"):
        from ..presets import PRESETS

        if m.init.split(":", 1)[1] not in PRESETS:
            add(
                "model.init",
                f"'model.init' names no preset: choose one of {', '.join('preset:' + p for p in sorted(PRESETS))}; "
                f"got {m.init!r}",
            )
    at_least("model.tokenizer_samples", m.tokenizer_samples, 1)
    at_least("model.vocab_size", m.vocab_size, 0)

    at_least("train.steps", t.steps, 1)
    at_least("train.batch_size", t.batch_size, 1)
    at_least("train.accum_steps", t.accum_steps, 1)
    above("train.lr", t.lr, 0)
    at_least("train.min_lr", t.min_lr, 0)
    if t.min_lr > t.lr > 0:
        add(
            "train.min_lr",
            f"'train.min_lr' must not be above train.lr ({t.lr!r}): the schedule decays from lr to min_lr; "
            f"got {t.min_lr!r}",
        )
    at_least("train.warmup", t.warmup, 0)
    one_of("train.optimizer", t.optimizer, OPTIMIZERS)
    at_least("train.weight_decay", t.weight_decay, 0)
    if len(t.betas) != 2 or not all(0 <= b < 1 for b in t.betas):
        add("train.betas", f"'train.betas' must be two numbers in [0, 1) (like [0.9, 0.999]); got {t.betas!r}")
    above("train.eps", t.eps, 0)
    at_least("train.grad_clip", t.grad_clip, 0)
    if t.precision:  # "" leaves it to the launcher; accelerate's spellings are read (with a warning) by load_config
        one_of("train.precision", ACCELERATE_SPELLINGS.get(t.precision, t.precision), PRECISIONS)
    at_least("train.max_bad_steps", t.max_bad_steps, 1)
    one_of("train.loss", t.loss, LOSSES)
    if not 0 <= t.ema_decay < 1:
        add(
            "train.ema_decay",
            "'train.ema_decay' must be in [0, 1) (0 turns the moving average off; 0.999 is usual); "
            f"got {t.ema_decay!r}",
        )

    dc = c.distill
    for key in ("feature_weight", "affinity_weight", "contrastive_weight"):
        at_least(f"distill.{key}", getattr(dc, key), 0)
    if dc.audio_only and not dc.teacher:
        add(
            "distill.audio_only", "'distill.audio_only' distils the audio tower from a teacher: set distill.teacher too"
        )
    if dc.teacher_text and not dc.teacher:
        add(
            "distill.teacher_text",
            "'distill.teacher_text' gives the student the teacher's text tower: set distill.teacher too",
        )
    if dc.teacher_text and c.model.text_tower:
        add(
            "distill.teacher_text",
            "'distill.teacher_text' and 'model.text_tower' both give the student a text tower: set one",
        )
    if dc.teacher and dc.feature_weight + dc.affinity_weight == 0:
        add(
            "distill.teacher",
            "'distill.teacher' is set but distill.feature_weight and distill.affinity_weight are both 0: "
            "the student would learn nothing from it",
        )

    at_least("checkpoint.every", c.checkpoint.every, 0)
    at_least("checkpoint.keep_last", c.checkpoint.keep_last, 0)
    at_least("checkpoint.keep_best", c.checkpoint.keep_best, 1)

    at_least("valid.every", c.valid.every, 0)
    at_least("valid.batch_size", c.valid.batch_size, 1)
    at_least("valid.max_samples", c.valid.max_samples, 0)
    for entry in c.valid.benchmarks:
        from .benchmarks import parse

        try:
            parse(entry)
        except ValueError as e:
            add("valid.benchmarks", f"'valid.benchmarks': {e}")
    if c.valid.metric not in metric_names():
        add(
            "valid.metric",
            f"'valid.metric' must be one of the validation scores {', '.join(metric_names())}; got {c.valid.metric!r}",
        )

    at_least("log.every", c.log.every, 1)

    if not c.out.strip():
        add("out", "'out' must not be empty: it is the run folder")
    if c.resume not in ("", "latest"):
        path = Path(c.resume)
        if path.is_dir():
            add(
                "resume",
                f"'resume': '{path}' is a folder; give a checkpoint file (e.g. {path / 'step_1000.pt'}) "
                "or 'latest' for the newest checkpoint of the run in out",
            )
        elif not path.is_file():
            add("resume", f"'resume': checkpoint to resume from not found: '{path}'")
    return found


def _sections() -> str:
    return section_names(Config())


def _separator(config: Config, dotted: str, where: str) -> str | None:
    """What joins the items of the list key ``dotted`` written as text; None for a key that is not a
    list; ConfigError (prefixed with ``where``) for a name that is not a key."""
    target, key, kind = find_key(config, dotted, where)
    if typing.get_origin(kind) is not list:
        return None
    return next(f.metadata[SEPARATOR] for f in dataclasses.fields(target) if f.name == key)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _old_list_text(config: Config, dotted: str, value, where: str):
    """A list key's value as written before these keys were lists (text such as ``"0.9,0.999"`` or
    ``"a.tar::b.tar"``, a single number, or ``''``), split as the old code split it, with a
    FutureWarning; anything else unchanged, for :func:`set_key` to convert or refuse.

    Kept so that configs written by earlier versions (users' files, run folders' config.yaml that a
    ``--resume`` run is started with) still train; the warning names the file, line and key and
    shows the list to write instead."""
    separator = _separator(config, dotted, where)
    if separator is None or isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return value
    items = [item.strip() for item in str(value).split(separator) if item.strip()]
    written = "[" + ", ".join(item if _is_number(item) else json.dumps(item) for item in items) + "]"  # valid YAML
    warnings.warn(
        f"{where}: '{dotted}' is a list now; the text {value!r} is read as {written} (split at "
        f"'{separator}'): write `{dotted.rsplit('.', 1)[-1]}: {written}` (text there will be refused in a "
        "later version)",
        FutureWarning,
        stacklevel=2,
    )
    return items


def _apply_file(config: Config, path: Path, origins: dict[str, str], mistakes: list[str]) -> None:
    """Set the keys the YAML file at ``path`` gives; each key of a wrong type or name is added to ``mistakes`` and
    the reading goes on (only a file that is no YAML mapping stops it)."""
    tree, lines = read_yaml(path, "train")
    if tree is None:
        return  # an empty file: all defaults
    if not isinstance(tree, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of sections ({_sections()}) and out/resume, "
            f"got {describe_value(tree)}"
        )

    def walk(target, tree: dict, prefix: str) -> None:
        for key, value in tree.items():
            try:
                one(target, key, value, prefix)
            except ConfigError as e:
                mistakes.append(str(e))

    def one(target, key, value, prefix: str) -> None:
        """One key of the file (a section: its keys), set or refused with a ConfigError naming it."""
        dotted = f"{prefix}{key}"
        where = f"{path}, line {lines[dotted]}" if dotted in lines else str(path)
        if not isinstance(key, str):
            raise ConfigError(f"{where}: config keys are names, got {key!r}")
        if "." not in key and is_section(target, key):
            if value is None:
                return  # an empty section
            if not isinstance(value, dict):
                raise ConfigError(
                    f"{where}: section '{dotted}' must be a mapping of keys to values, got {describe_value(value)}"
                )
            walk(getattr(target, key), value, f"{dotted}.")
            return
        if target is config and isinstance(value, dict) and key not in {f.name for f in dataclasses.fields(config)}:
            raise ConfigError(f"{where}: unknown config section '{dotted}' (sections: {_sections()})")
        find_key(config, dotted, where)  # an unknown key is named as such, whatever its value ('train.lr: 1' works too)
        if isinstance(value, dict):
            raise ConfigError(f"{where}: '{dotted}' takes a value, not a mapping (it is a key, not a section)")
        set_key(config, dotted, _old_list_text(config, dotted, value, where), where)
        origins[dotted] = where

    walk(config, tree, "")


# ---- the command line -----------------------------------------------------------------------------

_EPILOG = """\
Any config key can be set on top of the file as --section.key value (or --section.key=value),
e.g. --train.lr 3e-4 --data.workers 0; --out DIR and --resume latest|PATH too.
Sections: data, model, train, distill, checkpoint, valid, log (see docs/training.md)."""


def _command_line_value(config: Config, dotted: str, text: str):
    """An override's text as the key's value would be in YAML: a list key's items split at commas
    (``0.9,0.98`` or ``[0.9, 0.98]``, the pipeline's reading, :func:`command_line_value`), except
    ``data.train``'s, split at ``::``, since a brace pattern may hold commas (``train-{a,b}.tar``)."""
    separator = _separator(config, dotted, "command line")
    if separator == "::":
        return [item.strip() for item in text.split(separator) if item.strip()]
    return command_line_value(text, list[str]) if separator is not None else text  # list[...]: split it


def canonical_precision(name: str) -> str:
    """A training precision in the project's words: ``float32``, ``bfloat16`` or ``float16`` (accelerate's
    ``no``, ``bf16``, ``fp16`` are read as those); anything else is returned as it is, for the checks to name."""
    return ACCELERATE_SPELLINGS.get(name, name)


def resolve_precision(configured: str, launcher: str | None) -> tuple[str, str]:
    """(precision, where it came from) for a run, in the project's words (float32, bfloat16, float16): one
    source of truth between the training config's ``train.precision`` (``configured``, "" when unset) and
    the launcher's ``launcher`` (the ``ACCELERATE_MIXED_PRECISION`` that ``accelerate launch`` sets from
    ``--mixed_precision`` or its config file's ``mixed_precision``, in accelerate's words no/bf16/fp16;
    None when not launched by accelerate).

    The config wins where it sets a precision; unset, the launcher's is taken, else float32. A launcher
    asking for bf16 or fp16 while the config sets another precision is a :class:`ConfigError` naming
    both. A launcher's ``no`` never disagrees: it is also what accelerate exports when nothing was
    asked for, so it cannot be told apart from a default.

    Why: ``Accelerator(mixed_precision=...)`` ignores the launcher's setting whenever the argument is not
    None, so passing the config's old default ``no`` trained ``accelerate launch --config_file
    configs/accelerate/fsdp.yaml`` (``mixed_precision: bf16``) in float32 without a word."""
    launcher = (launcher or "").strip().lower() or None
    configured = canonical_precision(configured)
    if configured:
        if launcher not in (None, "no") and canonical_precision(launcher) != configured:
            raise ConfigError(
                f"'train.precision' is {configured!r} in the training config but the launcher asks for {launcher!r} "
                f"(accelerate launch --mixed_precision, or mixed_precision in its config file; {LAUNCHER_PRECISION}="
                f"{launcher}): make them agree, or leave train.precision unset to take the launcher's"
            )
        return configured, "train.precision"
    if launcher is not None:
        if canonical_precision(launcher) not in PRECISIONS:
            raise ConfigError(
                f"the launcher asks for mixed precision {launcher!r} ({LAUNCHER_PRECISION}), which train.py "
                f"does not train in: use one of {', '.join(ACCELERATE_SPELLINGS)}"
            )
        return canonical_precision(launcher), f"the launcher ({LAUNCHER_PRECISION})"
    return "float32", "the default"


class HelpRequested(Exception):
    """``--help`` was asked for: the message is the usage text, for the entry point to print (exit status 0)."""


def load_config(argv: list[str] | None = None) -> Config:
    """``--config FILE`` then any ``--section.key value`` (or ``--out``, ``--resume``) on top, checked.

    Raises :class:`ConfigError` for any mistake (naming the file and line, or the command line, and
    the key), and :class:`HelpRequested` holding the usage for ``-h``/``--help``: nothing here prints
    or exits; train.py's ``main()`` does.
    """
    parser = argparse.ArgumentParser(
        prog="train.py",
        description="Train a BioLingual (CLAP) model on webdataset shards",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
        exit_on_error=False,
        add_help=False,
    )
    # argparse's own help action prints and exits inside parse_known_args; this flag only records the ask
    parser.add_argument("-h", "--help", action="store_true", help="show this help message and exit")
    parser.add_argument("--config", help="YAML file with sections data, model, train, distill, checkpoint, valid, log")
    try:
        args, rest = parser.parse_known_args(argv)
    except argparse.ArgumentError as e:
        raise ConfigError(f"command line: {e}") from None
    if args.help:
        raise HelpRequested(parser.format_help())
    config = Config()
    origins: dict[str, str] = {}
    mistakes: list[str] = []
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise ConfigError(
                f"config file not found: '{path}'" if not path.exists() else f"config file '{path}' is not a file"
            )
        _apply_file(config, path, origins, mistakes)
    for dotted, text in parse_overrides(rest, "--train.lr 3e-4"):  # the same reading as python -m data_pipeline's
        try:
            set_key(config, dotted, _command_line_value(config, dotted, text), "command line")
        except ConfigError as e:  # reported with every other mistake
            mistakes.append(str(e))
            continue
        origins[dotted] = "command line"
    config.validate(origins, mistakes)
    old = config.train.precision
    if old in ACCELERATE_SPELLINGS:  # accelerate's word, read as ours; a run folder's config.yaml may hold it
        where = origins.get("train.precision", "train.precision")
        warnings.warn(
            f"{where}: 'train.precision' {old!r} is accelerate's spelling; write {ACCELERATE_SPELLINGS[old]!r} "
            "(the project's words for precisions are float32, bfloat16 and float16)",
            FutureWarning,
            stacklevel=2,
        )
        config.train.precision = ACCELERATE_SPELLINGS[old]
    return config
