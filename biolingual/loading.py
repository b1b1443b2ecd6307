"""``load()`` a published or saved model, ``create()`` a fresh one from a preset."""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from transformers import AutoTokenizer, ClapConfig, ClapFeatureExtractor, ClapModel

from .errors import DeviceError, ModelNotFoundError  # noqa: F401  (DeviceError: re-exported)
from .features import FrontEndConfig
from .model import BioLingual
from .presets import PRESETS, preset_config
from .tokenizer import train_tokenizer

DEFAULT_MODEL = "davidrrobinson/BioLingual"
PRESET_TOKENIZERS = {"base": "roberta-base"}  # the text tower's own tokenizer when not trained from captions

log = logging.getLogger(__name__)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device=None) -> torch.device:
    """``device`` (a name such as "cpu", "cuda", "cuda:1", or a torch.device) as a torch.device, checked:
    a CUDA device this machine cannot run is refused here with a :class:`DeviceError` (a ValueError)
    saying so, rather than by torch halfway through loading. None: :func:`default_device`."""
    if device is None:
        return default_device()
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(f"unknown device {str(device)!r}: use cpu, cuda or cuda:N (or another torch device type, e.g. mps)") from None
    if resolved.type != "cuda":
        return resolved
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU build"
        raise DeviceError(f"device {str(device)!r} was asked for, but this machine has no CUDA GPU torch can use "
                          f"(torch {torch.__version__}, {build}); use --device cpu (device='cpu' in Python)")
    count = torch.cuda.device_count()
    if resolved.index is not None and resolved.index >= count:
        which = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
        raise DeviceError(f"device {str(device)!r} was asked for, but torch sees {count} CUDA GPU{'s' if count != 1 else ''} "
                          f"({which}); use one of those, or --device cpu")
    return resolved


def _looks_like_path(name: str) -> bool:
    """Hub ids are 'name' or 'owner/name'; anything else that is given is meant as a folder."""
    return name.startswith((".", "/", "~")) or name.endswith(("/", os.sep)) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def _not_found(name: str, reason: str) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"Cannot load model '{name}': {reason}. If you have the model on disk, pass its folder "
        "(one written by model.save_pretrained(...) or transformers' ClapModel.save_pretrained), "
        "e.g. biolingual.load('path/to/model'). A hub id needs network access once, or the model in the "
        "Hugging Face cache (HF_HOME) when offline."
    )


def load(name_or_path: str | os.PathLike | None = None, device=None, dtype: torch.dtype | None = None) -> BioLingual:
    """Load a model from a hub id (default: the published BioLingual) or a local folder.

    ``device`` defaults to CUDA when available, else CPU; ``dtype`` (e.g. ``torch.float16`` on GPU)
    defaults to float32.
    """
    device = resolve_device(device)  # before any loading: a device this machine lacks fails at once
    name = os.fspath(name_or_path) if name_or_path is not None else DEFAULT_MODEL
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise _not_found(name, f"the folder '{local}' has no config.json, so it is not a saved model")
        source = str(local)
    elif local.exists():
        raise _not_found(name, f"'{local}' is a file; a model is a folder")
    elif _looks_like_path(name):
        raise _not_found(name, f"there is no folder '{local}'")
    else:
        source = name
    try:
        config = ClapConfig.from_pretrained(source)
        clap = ClapModel.from_pretrained(source, config=config, dtype=dtype or torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(source)
    except OSError as e:
        raise _not_found(name, f"it is not a local folder and could not be fetched or found in the cache ({e})") from e
    try:
        front_end = FrontEndConfig.from_feature_extractor(
            ClapFeatureExtractor.from_pretrained(source), fusion=config.audio_config.enable_fusion
        )
    except OSError:
        log.warning("'%s' has no preprocessor_config.json; using the published CLAP front-end settings", name)
        front_end = FrontEndConfig(fusion=config.audio_config.enable_fusion)
    model = BioLingual(clap, tokenizer, front_end, name_or_path=name)
    return model.to(device)


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
        tokenizer = train_tokenizer(tokenizer_texts, vocab_size=vocab_size or (50265 if preset == "base" else 2000))
    if tokenizer is None:
        tokenizer = PRESET_TOKENIZERS.get(preset)
        if tokenizer is None:
            raise ValueError(f"create('{preset}') needs tokenizer_texts (captions to train a tokenizer on) or a tokenizer")
    if isinstance(tokenizer, (str, os.PathLike)):
        try:
            tokenizer = AutoTokenizer.from_pretrained(os.fspath(tokenizer))
        except OSError as e:
            raise _not_found(os.fspath(tokenizer), f"its tokenizer could not be loaded ({e})") from e
    if seed is not None:
        torch.manual_seed(seed)
    config = preset_config(
        preset,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = BioLingual(ClapModel(config), tokenizer, FrontEndConfig(), name_or_path=f"preset:{preset}")
    return model.to(device)
