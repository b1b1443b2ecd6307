"""The types eval's readers and runners share: a :class:`Segment` of audio to embed, a :class:`Split` of a
task (segments and targets), and :class:`TaskDataError`. Every dataset reader (BEANS, BirdSet) produces
them and the embedding cache, heads and runners consume them, so they live here rather than in one reader."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .runtime import InputError


class TaskDataError(InputError):
    """A task's folder or split file is missing, or a split holds no usable example."""


@dataclass(frozen=True)
class Segment:
    """The part of an audio file one example covers: [start_s, end_s), zero-padded to ``length_s``."""

    path: str
    start_s: float
    end_s: float
    length_s: float


@dataclass
class Split:
    name: str
    file: Path
    segments: list[Segment]
    targets: np.ndarray  # int64 [N] class ids (classification) or float32 [N, C] multi-hot (detection)
    rows: list[int]  # the row (classification) or line (detection) of each example in ``file``
    problems: list[str] = field(default_factory=list)
