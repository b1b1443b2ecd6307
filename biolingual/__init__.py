"""BioLingual: contrastive language-audio models (CLAP) for animal sounds."""
from .errors import AudioError, ModelNotFoundError
from .features import FrontEndConfig, LogMelFrontEnd
from .loading import DEFAULT_MODEL, create, load
from .model import BioLingual

__version__ = "0.1.0"

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
