"""Exceptions raised by biolingual, each naming the input it is about."""


class AudioError(ValueError):
    """An audio input cannot be used: unreadable, empty, silent-by-corruption or non-finite."""


class ModelNotFoundError(OSError):
    """A model name is neither a local folder nor a model that can be fetched or found in the cache."""


class DeviceError(ValueError):
    """A device was asked for that this machine (or this torch build) cannot run on."""


class SearchIndexError(ValueError):
    """A search index folder is missing or corrupt, or its settings differ from those asked for."""


class ModelMismatchError(SearchIndexError):
    """Embeddings of two different models would be mixed in one search index."""


class IndexCorruptError(SearchIndexError):
    """A search index's arrays disagree in length or hold NaN/infinite embeddings; the message names the
    index folder, the file (part or merged array) and the command that rebuilds it."""
