"""Which torch device a model runs on: the default, and a device asked for, checked against this machine;
which GPU a launched process takes, and whether the launcher started the processes it was asked for."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from .errors import DeviceError, LaunchError

# Set by every `accelerate launch` path (its simple launcher included) and by nothing else.
_ACCELERATE_MARK = "ACCELERATE_DYNAMO_BACKEND"
# Process counts that MPI launchers (which accelerate's simple launcher can wrap) set instead of WORLD_SIZE.
_MPI_SIZES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")


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
        raise DeviceError(
            f"unknown device {str(device)!r}: use cpu, cuda or cuda:N (or another torch device type, e.g. mps)"
        ) from None
    if resolved.type != "cuda":
        return resolved
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU build"
        raise DeviceError(
            f"device {str(device)!r} was asked for, but this machine has no CUDA GPU torch can use "
            f"(torch {torch.__version__}, {build}); use --device cpu (device='cpu' in Python)"
        )
    count = torch.cuda.device_count()
    if resolved.index is not None and resolved.index >= count:
        which = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
        raise DeviceError(
            f"device {str(device)!r} was asked for, but torch sees {count} CUDA GPU{'s' if count != 1 else ''} "
            f"({which}); use one of those, or --device cpu"
        )
    return resolved


def rank_device(local_rank: int, gpus: int) -> torch.device:
    """The GPU for the process with ``local_rank`` on a node with ``gpus`` GPUs: ``cuda:{local_rank % gpus}``,
    so 16 processes on 8 GPUs put two on each (indexing is decode-bound: several processes feed one GPU);
    ``gpus`` 0 gives the CPU."""
    if gpus <= 0:
        return torch.device("cpu")
    return torch.device("cuda", int(local_rank) % int(gpus))


def check_launch_size(command: str, environ: Mapping[str, str] | None = None) -> int:
    """The number of processes the launcher started (WORLD_SIZE; 1 when unset), after refusing a launch
    that started fewer than it was asked for.

    ``accelerate launch --cpu --num_processes 2`` (or ``--num_processes 2`` on a machine without GPUs) goes
    through accelerate's simple launcher, which starts ONE process: it exports MASTER_ADDR/MASTER_PORT (only
    when more than one process was asked for) and its ACCELERATE_* settings, but no WORLD_SIZE or RANK. Such
    a process would do the work of all alone while the user expects a share. That case raises
    :class:`~biolingual.errors.LaunchError` (a ValueError) whose message gives the command that starts N
    processes: ``torchrun --nproc_per_node N {command}``. ``command`` is what follows the launcher, e.g.
    ``"-m biolingual index ..."`` or ``"train.py --config ..."``. ``environ`` defaults to ``os.environ``.
    MPI launches (OMPI_COMM_WORLD_SIZE, PMI_SIZE, MV2_COMM_WORLD_SIZE) are not refused."""
    env = os.environ if environ is None else environ
    world = int(env.get("WORLD_SIZE", "1") or "1")
    simple_launcher = _ACCELERATE_MARK in env and "MASTER_ADDR" in env and not any(k in env for k in _MPI_SIZES)
    if world <= 1 and simple_launcher:
        cpu = str(env.get("ACCELERATE_USE_CPU", "")).lower() in ("1", "true", "yes")
        raise LaunchError(
            "`accelerate launch` was asked for several processes but started one: with --cpu, or without GPUs, it runs "
            "its simple launcher, which starts a single process whatever --num_processes says. Start N processes with "
            f"`{'ACCELERATE_USE_CPU=1 ' if cpu else ''}torchrun --standalone --nproc_per_node N {command}`"
        )
    return world
