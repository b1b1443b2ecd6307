"""Exceptions raised by biolingual, each naming the input it is about."""


class AudioError(ValueError):
    """An audio input cannot be used: unreadable, empty, silent-by-corruption or non-finite."""


class ModelNotFoundError(OSError):
    """A model name is neither a local folder nor a model that can be fetched or found in the cache, or it
    names one that holds no usable CLAP model (another model type, weights missing, corrupt or truncated)."""


def model_not_found(name: str, reason: str) -> ModelNotFoundError:
    """The :class:`ModelNotFoundError` for ``name`` (a model, tokenizer or tower id or folder) that could not
    be loaded because of ``reason``, saying how to load a model from a folder instead."""
    return ModelNotFoundError(
        f"Cannot load model '{name}': {reason}. If you have the model on disk, pass its folder "
        "(one written by model.save_pretrained(...) or transformers' ClapModel.save_pretrained), "
        "e.g. biolingual.load('path/to/model'). A hub id needs network access once, or the model in the "
        "Hugging Face cache (HF_HOME) when offline."
    )


class DeviceError(ValueError):
    """A device was asked for that this machine (or this torch build) cannot run on."""


class SearchIndexError(ValueError):
    """A search index folder is missing or corrupt, or its settings differ from those asked for."""


class ModelMismatchError(SearchIndexError):
    """Embeddings of two different models would be mixed in one search index."""


class IndexCorruptError(SearchIndexError):
    """A search index's arrays disagree in length or hold NaN/infinite embeddings; the message names the
    index folder, the file (part or merged array) and the command that rebuilds it."""


class LaunchError(ValueError):
    """A launcher started fewer processes than it was asked for (``accelerate launch --cpu --num_processes 2``
    runs one); the message gives the command that starts them."""


class UsageError(ValueError):
    """A command line that cannot run as given (an option missing, or naming a file that does not exist);
    the command's ``main`` prints it as one ``error:`` line."""


class WriteError(OSError):
    """A file could not be written (the disk is full, the folder may not be written...): names the file and the
    system's reason. Raised by :mod:`biolingual.atomic` and the shard writer, which remove their temporary file
    first, so what was at the path before is unchanged; the commands add what a rerun does."""

    def __init__(self, path, errno: int | None, reason: str):
        super().__init__(errno, reason, str(path))

    def __str__(self) -> str:
        return f"could not write '{self.filename}': {self.strerror}"


def write_error(path, error: BaseException) -> WriteError | None:
    """The :class:`WriteError` for ``path`` when an OSError caused ``error`` (it may be wrapped: ``torch.save``
    turns a full disk into a RuntimeError raised while handling the OSError), else None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, WriteError):
            return error
        if isinstance(error, OSError) and error.errno is not None:
            return WriteError(path, error.errno, error.strerror or str(error))
        error = error.__cause__ or error.__context__
    return None
