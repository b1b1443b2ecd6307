"""Atomic checkpoints: written to a temporary file, then renamed, so a crash never leaves half a file."""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch

PATTERN = re.compile(r"step_(\d+)\.pt$")


def save_atomic(state: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def step_checkpoints(folder: str | Path) -> list[Path]:
    """``step_N.pt`` files in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := PATTERN.search(p.name))]
    return [p for _, p in sorted(found)]


def prune(folder: str | Path, keep_last: int, protect: set[Path] = frozenset()) -> None:
    """Delete all but the newest ``keep_last`` step checkpoints (never those in ``protect``)."""
    for path in step_checkpoints(folder)[: -keep_last or None] if keep_last > 0 else []:
        if path.resolve() not in {p.resolve() for p in protect}:
            path.unlink(missing_ok=True)


def resolve_resume(resume: str, folder: str | Path) -> Path | None:
    """``latest`` -> the newest checkpoint in ``folder`` (None if there is none); else the path given."""
    if not resume:
        return None
    if resume == "latest":
        found = step_checkpoints(folder)
        return found[-1] if found else None
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint to resume from not found: '{path}'")
    return path


def full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """(model, optimizer) state dicts, whole (not sharded) and on the CPU, keyed by parameter names.

    The same whether the model runs in one process, under DDP, or sharded by FSDP (1 or 2), where this is a
    collective: every rank calls it and only rank 0 receives the tensors. Optimizer state keyed by names
    (not by position) loads into any of these layouts.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, model_state: dict, optim_state: dict) -> None:
    """Load what :func:`full_state` returned (every rank passes the whole state) into any layout."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_state_dict

    options = StateDictOptions(full_state_dict=True)
    if optim_state.get("state") and all(isinstance(k, int) for k in optim_state["state"]):  # an older, positional checkpoint
        set_model_state_dict(model, model_state, options=options)
        optimizer.load_state_dict(optim_state)
        return
    set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optim_state, options=options)
