"""BioLingual: contrastive language-audio models (CLAP) for animal sounds.

The heavy parts (transformers, the model) are imported on first use, so tools that only need the
audio loader or the data code start quickly.
"""

import importlib

from .errors import AudioError, ModelNotFoundError

__version__ = "0.1.0"

_ATTRIBUTES = {
    "BioLingual": "model",
    "DEFAULT_MODEL": "model",
    "FrontEndConfig": "features",
    "LogMelFrontEnd": "features",
    "create": "loading",
    "load": "loading",
}
_SUBMODULES = {
    "audio",
    "cli",
    "data",
    "device",
    "embedding",
    "errors",
    "features",
    "loading",
    "loss",
    "metrics",
    "model",
    "presets",
    "search",
    "synthetic",
    "tokenizer",
    "training",
}

__all__ = [
    "AudioError",
    "BioLingual",
    "DEFAULT_MODEL",
    "FrontEndConfig",
    "LogMelFrontEnd",
    "ModelNotFoundError",
    "create",
    "load",
]


def __getattr__(name: str):
    if name in _ATTRIBUTES:
        value = getattr(importlib.import_module(f".{_ATTRIBUTES[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'biolingual' has no attribute '{name}'")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_ATTRIBUTES) | _SUBMODULES)
