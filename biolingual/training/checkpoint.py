"""Training checkpoints: durable and atomic on disk, loadable without running code from the file.

Files in ``RUN/checkpoints/``: ``step_N.pt`` (everything a resume needs: model, optimizer, step, best
list, every rank's RNG and data position) and ``best_step_N.pt`` (the model weights only). A file is
written under a temporary name, fsynced and renamed (:mod:`biolingual.atomic`), so a crash never
leaves half a file; it holds only tensors and plain Python values, so it is read with
``torch.load(weights_only=True)``: a crafted file given to ``--resume`` cannot run code.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_write

STEP_FILE = re.compile(r"step_(\d+)\.pt")  # matched against the whole name: best_step_N.pt is not a step file


class CheckpointError(ValueError):
    """A checkpoint cannot be resumed from: missing, unreadable, unsafe, or not a step checkpoint."""


def save_atomic(state: dict, path: str | Path) -> Path:
    """``torch.save`` to ``path`` durably: temporary file, fsync, rename, fsync of the folder."""
    return atomic_write(path, lambda f: torch.save(state, f))


def step_checkpoints(folder: str | Path) -> list[Path]:
    """``step_N.pt`` files in ``folder`` (not ``best_step_N.pt``, not temporary files), oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := STEP_FILE.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def prune(folder: str | Path, keep_last: int, protect: set[Path] = frozenset()) -> None:
    """Delete all but the newest ``keep_last`` step checkpoints (never those in ``protect``)."""
    protected = {Path(p).resolve() for p in protect}
    for path in step_checkpoints(folder)[: -keep_last or None] if keep_last > 0 else []:
        if path.resolve() not in protected:
            path.unlink(missing_ok=True)


def resolve_resume(resume: str, folder: str | Path) -> Path | None:
    """``latest`` -> the newest step checkpoint in ``folder`` (None if there is none); else the path given."""
    if not resume:
        return None
    if resume == "latest":
        found = step_checkpoints(folder)
        return found[-1] if found else None
    path = Path(resume)
    if not path.is_file():
        raise CheckpointError(f"checkpoint to resume from not found: '{path}'")
    return path


# Checkpoints written before RNG states were stored as tensors hold numpy's MT19937 state as an array;
# these are the numpy functions and types that rebuild a plain array, nothing that runs other code.
_numpy_core = getattr(np, "_core", None) or np.core  # numpy 2 renamed np.core
_NUMPY_ARRAY_GLOBALS = [_numpy_core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def load_checkpoint(path: str | Path) -> dict:
    """A step checkpoint as a dict, read with ``weights_only=True``; :class:`CheckpointError` says what is wrong."""
    path = Path(path)
    if path.is_file() and not zipfile.is_zipfile(path):
        # torch.save writes a zip archive; anything else (random bytes, a text file, a truncated download) would reach
        # the legacy pickle reader, whose refusal reads as "could run code" though the file is simply not a checkpoint
        with open(path, "rb") as f:
            head = f.read(8)
        raise CheckpointError(
            f"'{path}' is not a training checkpoint: not a file torch.save writes (train.py's "
            f"step_N.pt files are), it starts with bytes {head!r}; give a step_N.pt file from a run's "
            "checkpoints/ folder, or --resume latest"
        )
    try:
        with torch.serialization.safe_globals(_NUMPY_ARRAY_GLOBALS):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"refusing to resume from '{path}': it holds objects other than tensors and plain values, and "
            f"loading it could run code from the file ({first[:300]}). Checkpoints written by train.py never do."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read checkpoint '{path}': {e}") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"'{path}' is not a training checkpoint (no model state)")
    missing = [k for k in ("optimizer", "step") if k not in state]
    if missing:
        raise CheckpointError(
            f"'{path}' holds model weights only (a best-model file has no {' and '.join(missing)} state); "
            "resume from a step_N.pt file, or start a new run from these weights with --model.init"
        )
    return state


def full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """(model, optimizer) state dicts, whole (not sharded) and on the CPU, keyed by parameter names.

    The same whether the model runs in one process, under DDP, or sharded by FSDP (1 or 2), where this is a
    collective: every rank calls it and only rank 0 receives the tensors. Optimizer state keyed by names
    (not by position) loads into any of these layouts.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, model_state: dict, optim_state: dict
) -> None:
    """Load what :func:`full_state` returned (every rank passes the whole state) into any layout."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_state_dict

    options = StateDictOptions(full_state_dict=True)
    # an older, positional checkpoint
    if optim_state.get("state") and all(isinstance(k, int) for k in optim_state["state"]):
        set_model_state_dict(model, model_state, options=options)
        optimizer.load_state_dict(optim_state)
        return
    set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optim_state, options=options)
