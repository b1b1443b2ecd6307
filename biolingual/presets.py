"""Named model configurations: ``base`` (the published BioLingual architecture) and ``tiny``."""
from __future__ import annotations

from transformers import ClapAudioConfig, ClapConfig, ClapTextConfig

# HTS-AT-tiny audio tower + roberta-base text tower, 512-d projections, unfused: the published model.
_BASE = {
    "audio": dict(
        spec_size=256, num_mel_bins=64, window_size=8, patch_embeds_hidden_size=96, hidden_size=768,
        depths=[2, 2, 6, 2], num_attention_heads=[4, 8, 16, 32], enable_fusion=False,
    ),
    "text": dict(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        max_position_embeddings=514, type_vocab_size=1,
    ),
    "projection_dim": 512,
}

# Small enough for CPU tests and the demo. spec_size stays 256 because a 10 s clip at hop 480 gives
# 1001 frames x 64 mels, which HTS-AT folds into a 256x256 image (freq_ratio 4); width and depth shrink.
_TINY = {
    "audio": dict(
        spec_size=256, num_mel_bins=64, window_size=8, patch_embeds_hidden_size=16, hidden_size=32,
        depths=[1, 1], num_attention_heads=[2, 2], enable_fusion=False,
    ),
    "text": dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=80, type_vocab_size=1,
    ),
    "projection_dim": 32,
}

PRESETS = {"base": _BASE, "tiny": _TINY}


def preset_config(name: str, vocab_size: int, pad_token_id: int = 1, bos_token_id: int = 0, eos_token_id: int = 2) -> ClapConfig:
    """A ``ClapConfig`` for a preset, with the text vocabulary of the tokenizer it will use."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset '{name}': choose one of {sorted(PRESETS)}")
    preset = PRESETS[name]
    text = ClapTextConfig(
        vocab_size=vocab_size, pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
        **preset["text"],
    )
    audio = ClapAudioConfig(**preset["audio"])
    return ClapConfig(
        text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=preset["projection_dim"]
    )
