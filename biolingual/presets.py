"""Named model configurations: ``base`` (the published BioLingual architecture), ``small`` (a student for CPU
indexing) and ``tiny``, and the
freshly initialised ``ClapModel`` of one, optionally with pretrained audio and text towers."""

from __future__ import annotations

import logging

import torch
from transformers import AutoModel, ClapAudioConfig, ClapConfig, ClapModel, ClapTextConfig, PreTrainedTokenizerBase

from .errors import model_not_found

log = logging.getLogger(__name__)

# HTS-AT-tiny audio tower + roberta-base text tower, 512-d projections, unfused: the published model.
_BASE = {
    "audio": dict(
        spec_size=256,
        num_mel_bins=64,
        window_size=8,
        patch_embeds_hidden_size=96,
        hidden_size=768,
        depths=[2, 2, 6, 2],
        num_attention_heads=[4, 8, 16, 32],
        enable_fusion=False,
    ),
    "text": dict(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=514,
        type_vocab_size=1,
    ),
    "projection_dim": 512,
}

# Small enough for CPU tests and the demo. spec_size stays 256 because a 10 s clip at hop 480 gives
# 1001 frames x 64 mels, which HTS-AT folds into a 256x256 image (freq_ratio 4); width and depth shrink.
_TINY = {
    "audio": dict(
        spec_size=256,
        num_mel_bins=64,
        window_size=8,
        patch_embeds_hidden_size=16,
        hidden_size=32,
        depths=[1, 1],
        num_attention_heads=[2, 2],
        enable_fusion=False,
    ),
    "text": dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=80,
        type_vocab_size=1,
    ),
    "projection_dim": 32,
}

# A student for CPU indexing (issue 29), chosen by measurement (benchmarks/bench_student.py, docs/performance.md):
# HTS-AT with one block per stage but two in the third and 64 channels instead of 96 costs 51 ms of one CPU
# core per 10 s window against base's 266 (5.2x fewer), with 6.2 M audio parameters against 28.2 M; `biolingual
# index` with it runs 0.47 hours of audio per CPU-minute against base's 0.19 (2.5x: decoding, resampling and the
# front end stay), above the 1.8x base that BirdNET V2.4 was measured at in the issue (0.36-0.40 h/CPU-min).
# It keeps base's 512-d projections, so it distils from the published model's embeddings directly (the
# feature term of distill.*), and a 4-layer, 256-wide text tower. Still a ClapModel: transformers loads it.
_SMALL = {
    "audio": dict(
        spec_size=256,
        num_mel_bins=64,
        window_size=8,
        patch_embeds_hidden_size=64,
        hidden_size=512,
        depths=[1, 1, 2, 1],
        num_attention_heads=[2, 4, 8, 16],
        enable_fusion=False,
    ),
    "text": dict(
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=1024,
        max_position_embeddings=514,
        type_vocab_size=1,
    ),
    "projection_dim": 512,
}

PRESETS = {"base": _BASE, "small": _SMALL, "tiny": _TINY}

# The text config fields a pretrained RoBERTa-like text tower gives CLAP's text model.
_TEXT_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "max_position_embeddings",
    "type_vocab_size",
    "layer_norm_eps",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
)


def default_vocab_size(name: str) -> int:
    """The vocabulary size of a tokenizer trained from captions for a preset: roberta-base's for ``base``."""
    return 50265 if name == "base" else 2000


def preset_config(
    name: str, vocab_size: int, pad_token_id: int = 1, bos_token_id: int = 0, eos_token_id: int = 2
) -> ClapConfig:
    """A ``ClapConfig`` for a preset, with the text vocabulary of the tokenizer it will use."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset '{name}': choose one of {sorted(PRESETS)}")
    preset = PRESETS[name]
    text = ClapTextConfig(
        vocab_size=vocab_size,
        pad_token_id=pad_token_id,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        **preset["text"],
    )
    audio = ClapAudioConfig(**preset["audio"])
    return ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=preset["projection_dim"])


def preset_clap(
    name: str,
    tokenizer: PreTrainedTokenizerBase,
    audio_tower: str | None = None,
    text_tower: str | None = None,
    text_from: ClapModel | None = None,
) -> ClapModel:
    """A freshly initialised ``ClapModel`` of a preset, its text vocabulary that of ``tokenizer``.

    ``audio_tower`` (a CLAP hub id or folder) replaces the preset's audio tower, config and weights;
    ``text_tower`` (a RoBERTa-like model, whose tokenizer ``tokenizer`` should be) replaces the text tower.
    ``text_from`` (a CLAP, whose tokenizer ``tokenizer`` should be) gives its text tower, text projection,
    projection size and temperatures: a student whose labels embed exactly as that teacher's, its audio tower
    the preset's (``distill.teacher_text``). The towers are loaded before the model is initialised, so for
    one torch seed the new weights are the same whatever towers are given."""
    if text_tower and text_from is not None:
        raise ValueError("text_tower and text_from both give a text tower: pass one")
    config = preset_config(
        name,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    audio_source = text_source = None
    if audio_tower:
        audio_source = _pretrained(ClapModel, audio_tower)
        config.audio_config = audio_source.config.audio_config
        config.audio_config.projection_dim = config.projection_dim
    if text_tower:
        text_source = _pretrained(AutoModel, text_tower)
        fields = {k: getattr(text_source.config, k) for k in _TEXT_FIELDS if hasattr(text_source.config, k)}
        config.text_config = ClapTextConfig(**fields, projection_dim=config.projection_dim)
    if text_from is not None:
        config.projection_dim = text_from.config.projection_dim
        config.text_config = ClapTextConfig(**text_from.config.text_config.to_dict())
        config.audio_config.projection_dim = config.text_config.projection_dim = config.projection_dim
    clap = ClapModel(config)
    if audio_source is not None:
        clap.audio_model.load_state_dict(audio_source.audio_model.state_dict())
        log.info("audio tower initialised from %s", audio_tower)
    if text_source is not None:
        # RoBERTa and CLAP's text tower share parameter names; the position/token-type id buffers may differ.
        missing, unexpected = clap.text_model.load_state_dict(text_source.state_dict(), strict=False)
        missing = [k for k in missing if not k.endswith(("position_ids", "token_type_ids"))]
        unexpected = [k for k in unexpected if not k.endswith(("position_ids", "token_type_ids"))]
        if missing or unexpected:
            raise ValueError(
                f"text tower '{text_tower}' does not fit CLAP's text model: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )
        log.info("text tower initialised from %s", text_tower)
    if text_from is not None:
        clap.text_model.load_state_dict(text_from.text_model.state_dict())
        clap.text_projection.load_state_dict(text_from.text_projection.state_dict())
        with torch.no_grad():
            clap.logit_scale_a.copy_(text_from.logit_scale_a)
            clap.logit_scale_t.copy_(text_from.logit_scale_t)
    return clap


def _pretrained(cls, name: str):
    try:
        return cls.from_pretrained(name)
    except OSError as e:
        raise model_not_found(name, f"it could not be loaded ({e})") from e
