"""The model a run starts from: a preset from scratch, a full pretrained CLAP, or pretrained towers.

In: the config's model section, data.train's shard patterns (their captions train a scratch
tokenizer) and the seed. Out: a BioLingual on CPU, the same on every rank for the same seed.
"""

from __future__ import annotations

import itertools
import logging

import torch
from transformers import AutoTokenizer

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


def build_model(config: ModelConfig, train_patterns: list[str], seed: int) -> BioLingual:
    """The initial model of a run, on CPU (the same on every rank for the same seed): a saved or published
    model (:func:`biolingual.load`), or a preset (:meth:`BioLingual.from_preset`, as :func:`biolingual.create`)
    whose tokenizer is the text tower's or one trained from the training shards' captions."""
    torch.manual_seed(seed)
    if not config.init.startswith("preset:"):
        if config.audio_tower or config.text_tower:
            raise ValueError("model.audio_tower/model.text_tower apply to a preset start (model.init: preset:NAME)")
        return load(config.init, device="cpu")
    preset = config.init.split(":", 1)[1]
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
