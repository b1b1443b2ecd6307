"""The model a run starts from: a preset from scratch, a full pretrained CLAP, or pretrained towers."""
from __future__ import annotations

import itertools
import logging

import torch
from transformers import AutoModel, AutoTokenizer, ClapModel, ClapTextConfig

from ..data import expand_shards, sample_captions
from ..features import FrontEndConfig
from ..loading import _not_found, load
from ..model import BioLingual
from ..presets import preset_config
from ..tokenizer import train_tokenizer
from .config import ModelConfig

log = logging.getLogger(__name__)

_TEXT_FIELDS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
    "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "pad_token_id", "bos_token_id", "eos_token_id",
)


def shard_captions(pattern: str, limit: int) -> list[str]:
    """Up to ``limit`` captions read from the training shards (for a scratch tokenizer)."""
    import webdataset as wds

    urls = [u for source in expand_shards(pattern) for u in source]
    samples = wds.tarfile_to_samples()(iter({"url": u} for u in urls))
    captions: list[str] = []
    for sample in itertools.islice(samples, limit):
        captions.extend(sample_captions(sample))
    return captions


def build_model(config: ModelConfig, train_pattern: str, seed: int) -> BioLingual:
    """The initial model of a run, on CPU (the same on every rank for the same seed)."""
    torch.manual_seed(seed)
    if not config.init.startswith("preset:"):
        model = load(config.init, device="cpu")
        if config.audio_tower or config.text_tower:
            raise ValueError("model.audio_tower/model.text_tower apply to a preset start (model.init: preset:NAME)")
        return model
    preset = config.init.split(":", 1)[1]
    if config.text_tower:
        tokenizer = AutoTokenizer.from_pretrained(config.text_tower)
    else:
        captions = shard_captions(train_pattern, config.tokenizer_samples)
        if not captions:
            raise ValueError(f"no captions found in the training shards '{train_pattern}' to train a tokenizer on")
        tokenizer = train_tokenizer(captions, vocab_size=config.vocab_size or (50265 if preset == "base" else 2000))
    clap_config = preset_config(
        preset, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    audio_source = text_source = None
    if config.audio_tower:
        audio_source = _pretrained(ClapModel, config.audio_tower)
        clap_config.audio_config = audio_source.config.audio_config
        clap_config.audio_config.projection_dim = clap_config.projection_dim
    if config.text_tower:
        text_source = _pretrained(AutoModel, config.text_tower)
        fields = {k: getattr(text_source.config, k) for k in _TEXT_FIELDS if hasattr(text_source.config, k)}
        clap_config.text_config = ClapTextConfig(**fields, projection_dim=clap_config.projection_dim)
    clap = ClapModel(clap_config)
    if audio_source is not None:
        clap.audio_model.load_state_dict(audio_source.audio_model.state_dict())
        log.info("audio tower initialised from %s", config.audio_tower)
    if text_source is not None:
        # RoBERTa and CLAP's text tower share parameter names; the position/token-type id buffers may differ.
        missing, unexpected = clap.text_model.load_state_dict(text_source.state_dict(), strict=False)
        missing = [k for k in missing if not k.endswith(("position_ids", "token_type_ids"))]
        unexpected = [k for k in unexpected if not k.endswith(("position_ids", "token_type_ids"))]
        if missing or unexpected:
            raise ValueError(
                f"text tower '{config.text_tower}' does not fit CLAP's text model: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        log.info("text tower initialised from %s", config.text_tower)
    return BioLingual(clap, tokenizer, FrontEndConfig(), name_or_path=config.init)


def _pretrained(cls, name: str):
    try:
        return cls.from_pretrained(name)
    except OSError as e:
        raise _not_found(name, f"it could not be loaded ({e})") from e
