"""The model a run starts from: a preset from scratch, a full pretrained CLAP, or pretrained towers.

In: the config's model section, data.train's shard patterns (their captions train a scratch
tokenizer) and the seed. Out: a BioLingual on CPU, the same on every rank for the same seed.
"""

from __future__ import annotations

import itertools
import logging

import torch
from transformers import AutoTokenizer

from ..config_io import ConfigError
from ..data import expand_shards, sample_captions
from ..extras import require
from ..loading import load
from ..model import BioLingual
from ..presets import default_vocab_size
from ..tokenizer import train_tokenizer
from .config import ModelConfig

log = logging.getLogger(__name__)


def shard_captions(patterns: str | list[str], limit: int) -> list[str]:
    """Up to ``limit`` captions read from the training shards (for a scratch tokenizer).

    Unreadable shard data (a shard cut short by an interrupted copy or a full disk) is logged, naming the
    shard, and skipped, as the training stream skips it (:class:`biolingual.data.BadRun`): the scan runs before
    the data checks, so raising here showed a tarfile.ReadError traceback instead."""
    wds = require("webdataset", "train", "reading captions from the training shards")
    urls = [u for source in expand_shards(patterns) for u in source]

    def skip(exn) -> bool:
        # webdataset appends (stream, url) to the exception's args, the url last
        url = next((a for a in reversed(getattr(exn, "args", ())) if isinstance(a, str)), "unknown shard")
        reason = str(exn.args[0] if exn.args else exn).split(" @ ")[0]
        log.warning(
            "reading captions for the tokenizer: skipping the rest of training shard '%s' (%s: %s)",
            url,
            type(exn).__name__,
            reason,
        )
        return True

    samples = wds.tarfile_to_samples(handler=skip)(iter({"url": u} for u in urls))
    captions: list[str] = []
    for sample in itertools.islice(samples, limit):
        captions.extend(sample_captions(sample))
    return captions


def build_model(
    config: ModelConfig, train_patterns: list[str], seed: int, teacher: BioLingual | None = None
) -> BioLingual:
    """The initial model of a run, on CPU (the same on every rank for the same seed): a saved or published
    model (:func:`biolingual.load`), or a preset (:meth:`BioLingual.from_preset`, as :func:`biolingual.create`)
    whose tokenizer is the text tower's or one trained from the training shards' captions.

    ``teacher`` (``distill.teacher``, with ``distill.teacher_text``): a preset start takes that model's
    text tower, text projection and tokenizer; a saved start must already have them (a student resumed
    from an earlier distillation), or its labels would not embed as the teacher's."""
    torch.manual_seed(seed)
    if not config.init.startswith("preset:"):
        if config.audio_tower or config.text_tower:
            raise ValueError("model.audio_tower/model.text_tower apply to a preset start (model.init: preset:NAME)")
        model = load(config.init, device="cpu")
        if teacher is not None and not _same_text(model, teacher):
            raise ConfigError(
                f"'distill.teacher_text': model.init {config.init} has a text tower other than the teacher "
                f"{teacher.name_or_path}'s; start from a preset (model.init: preset:NAME) to take the teacher's"
            )
        return model
    preset = config.init.split(":", 1)[1]
    if teacher is not None:
        return BioLingual.from_preset(
            preset,
            teacher.tokenizer,
            audio_tower=config.audio_tower,
            name_or_path=config.init,
            device="cpu",
            text_from=teacher,
        )
    if config.text_tower:
        tokenizer = AutoTokenizer.from_pretrained(config.text_tower)
    else:
        captions = shard_captions(train_patterns, config.tokenizer_samples)
        if not captions:
            raise ValueError(f"no captions found in the training shards {train_patterns} to train a tokenizer on")
        tokenizer = train_tokenizer(captions, vocab_size=config.vocab_size or default_vocab_size(preset))
    return BioLingual.from_preset(
        preset,
        tokenizer,
        audio_tower=config.audio_tower,
        text_tower=config.text_tower,
        name_or_path=config.init,
        device="cpu",
    )


def _same_text(model: BioLingual, teacher: BioLingual) -> bool:
    """Whether ``model`` reads and embeds text as ``teacher`` does (tokenizer vocabulary, text weights)."""
    if model.tokenizer.get_vocab() != teacher.tokenizer.get_vocab():
        return False
    mine, theirs = model.clap.state_dict(), teacher.clap.state_dict()
    keys = [k for k in theirs if k.startswith(("text_model.", "text_projection."))]
    return all(k in mine and mine[k].shape == theirs[k].shape and torch.equal(mine[k], theirs[k]) for k in keys)
