"""One call that seeds every random source a head or probe trainer draws from.

In: an integer seed. Out: nothing; Python's ``random``, NumPy's global generator and torch's CPU (and
CUDA) generators are reset, so two runs with the same seed train the same head.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed ``random``, ``numpy`` and ``torch`` with ``seed``."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
