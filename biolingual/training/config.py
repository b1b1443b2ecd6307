"""Training configuration: dataclasses filled from a YAML file and ``--section.key value`` overrides."""
from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml


@dataclass
class DataConfig:
    train: str = ""  # shard pattern(s); several sources separated by '::'
    weights: str = ""  # comma-separated sampling weight per source, e.g. "3,1"
    valid: str = ""  # held-out shards for validation (optional)
    samples_per_epoch: int = 10_000  # per epoch over all ranks; steps per epoch = this / (batch x ranks)
    workers: int = 2
    shuffle_buffer: int = 1000
    clip_seconds: float = 10.0


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
    betas: str = "0.9,0.999"
    eps: float = 1e-8
    grad_clip: float = 1.0  # 0 disables
    precision: str = "no"  # no | bf16 | fp16
    seed: int = 3407
    max_bad_steps: int = 20  # consecutive non-finite losses before the run stops


@dataclass
class CheckpointConfig:
    every: int = 500
    keep_last: int = 2
    keep_best: int = 3


@dataclass
class ValidConfig:
    every: int = 500  # 0: only at the end
    batch_size: int = 64
    metric: str = "text_to_audio/mAP@10"  # higher is better
    max_samples: int = 0  # 0: all


@dataclass
class LogConfig:
    every: int = 10
    tensorboard: bool = True


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    valid: ValidConfig = field(default_factory=ValidConfig)
    log: LogConfig = field(default_factory=LogConfig)
    out: str = "runs/run"
    resume: str = ""  # "latest", a checkpoint path, or "" to start fresh

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _cast(value: str, kind) -> object:
    if kind is bool:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true/false, got {value!r}")
    return kind(value)


def _apply(config: Config, dotted: str, value, source: str) -> None:
    parts = dotted.split(".")
    target = config
    for part in parts[:-1]:
        if not hasattr(target, part) or not dataclasses.is_dataclass(getattr(target, part)):
            raise ValueError(f"{source}: unknown config section '{part}' in '{dotted}'")
        target = getattr(target, part)
    key = parts[-1]
    hints = typing.get_type_hints(type(target))
    if key not in hints or dataclasses.is_dataclass(getattr(target, key)):
        known = ", ".join(f.name for f in dataclasses.fields(target))
        raise ValueError(f"{source}: unknown config key '{dotted}' (known here: {known})")
    kind = hints[key]
    try:
        setattr(target, key, _cast(value, kind) if isinstance(value, str) and kind is not str else kind(value))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{source}: bad value {value!r} for '{dotted}' ({kind.__name__}): {e}") from e


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def load_config(argv: list[str] | None = None) -> Config:
    """``--config FILE`` then any ``--section.key value`` (or ``--out``, ``--resume``) on top."""
    parser = argparse.ArgumentParser(description="Train a BioLingual (CLAP) model on webdataset shards")
    parser.add_argument("--config", help="YAML file with sections data, model, train, checkpoint, valid, log")
    args, rest = parser.parse_known_args(argv)
    config = Config()
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise SystemExit(f"error: config file not found: '{path}'")
        tree = yaml.safe_load(path.read_text()) or {}
        for dotted, value in _flatten(tree).items():
            _apply(config, dotted, value, str(path))
    i = 0
    while i < len(rest):
        token = rest[i]
        if not token.startswith("--"):
            raise SystemExit(f"error: unexpected argument {token!r}; overrides look like --train.lr 3e-4")
        if "=" in token:
            dotted, value = token[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(rest):
                raise SystemExit(f"error: {token} needs a value")
            dotted, value = token[2:], rest[i + 1]
            i += 2
        try:
            _apply(config, dotted, value, "command line")
        except ValueError as e:
            raise SystemExit(f"error: {e}") from e
    return config
