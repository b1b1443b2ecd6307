"""Which torch device a model runs on: the default, and a device asked for, checked against this machine."""
from __future__ import annotations

import torch

from .errors import DeviceError


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
