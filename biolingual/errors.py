"""Exceptions raised by biolingual, each naming the input it is about."""


class AudioError(ValueError):
    """An audio input cannot be used: unreadable, empty, silent-by-corruption or non-finite."""


class ModelNotFoundError(OSError):
    """A model name is neither a local folder nor a model that can be fetched or found in the cache."""


class DeviceError(ValueError):
    """A device was asked for that this machine (or this torch build) cannot run on."""
