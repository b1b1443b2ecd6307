"""``load()`` a published or saved model, ``create()`` a fresh one from a preset.

Both are thin: ``load`` is :meth:`BioLingual.from_pretrained`, and ``create`` finds or trains the
tokenizer then calls :meth:`BioLingual.from_preset`, the constructor training's initial model uses too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch
from transformers import AutoTokenizer

from .device import default_device, resolve_device  # noqa: F401  (re-exported: where callers have found them)
from .errors import DeviceError, ModelNotFoundError, model_not_found  # noqa: F401  (DeviceError, ModelNotFoundError: re-exported)
from .model import DEFAULT_MODEL, BioLingual  # noqa: F401  (DEFAULT_MODEL: re-exported)
from .presets import PRESETS, default_vocab_size
from .tokenizer import train_tokenizer

PRESET_TOKENIZERS = {"base": "roberta-base"}  # the text tower's own tokenizer when not trained from captions


def load(
    name_or_path: str | os.PathLike | None = None, device=None, dtype: torch.dtype | str | None = None
) -> BioLingual:
    """Load a model from a hub id (default: the published BioLingual) or a local folder.

    ``device`` defaults to CUDA when available, else CPU. ``dtype``: a precision name (``"auto"``,
    ``"float32"``, ``"bfloat16"``, ``"int8"``, ``"float16"`` on GPU) that every embedding call then runs
    at (``model.precision``; weights stay float32), or a torch dtype to hold the weights in (e.g.
    ``torch.float16`` on GPU); default float32. The same as :meth:`BioLingual.from_pretrained`.
    """
    return BioLingual.from_pretrained(name_or_path, device=device, dtype=dtype)


def create(
    preset: str = "tiny",
    tokenizer_texts: Iterable[str] | None = None,
    tokenizer=None,
    vocab_size: int | None = None,
    device=None,
    seed: int | None = None,
) -> BioLingual:
    """A freshly initialised model from a preset (``tiny`` or ``base``).

    Its tokenizer is trained locally from ``tokenizer_texts`` (byte-level BPE, RoBERTa format), or is
    ``tokenizer`` (an object, hub id or folder); ``base`` falls back to roberta-base's.
    """
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset '{preset}': choose one of {sorted(PRESETS)}")
    device = resolve_device(device)
    if tokenizer is None and tokenizer_texts is not None:
        tokenizer = train_tokenizer(tokenizer_texts, vocab_size=vocab_size or default_vocab_size(preset))
    if tokenizer is None:
        tokenizer = PRESET_TOKENIZERS.get(preset)
        if tokenizer is None:
            raise ValueError(
                f"create('{preset}') needs tokenizer_texts (captions to train a tokenizer on) or a tokenizer"
            )
    if isinstance(tokenizer, (str, os.PathLike)):
        try:
            tokenizer = AutoTokenizer.from_pretrained(os.fspath(tokenizer))
        except OSError as e:
            raise model_not_found(os.fspath(tokenizer), f"its tokenizer could not be loaded ({e})") from e
    if seed is not None:
        torch.manual_seed(seed)
    return BioLingual.from_preset(preset, tokenizer, device=device)
