"""Synthetic animal-like calls: deterministic, species-specific audio for demos and tests.

Each species has a distinct call pattern (pitch, rhythm, sweep, harmonics), so a model can learn to
tell them apart. They are not real recordings; they make offline demos and tests possible.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CallPattern:
    scientific: str
    f_start: float  # Hz at the start of each call
    f_end: float  # Hz at the end of each call
    call_s: float  # duration of one call
    gap_s: float  # silence between calls
    harmonics: int = 1
    am_hz: float = 0.0  # pulse rate inside a call (trills), 0 for a smooth tone
    description: str = ""


SPECIES: dict[str, CallPattern] = {
    "Spring Peeper": CallPattern("Pseudacris crucifer", 2800, 3100, 0.15, 0.45, 1, 0, "a series of high rising peeps"),
    "Barred Owl": CallPattern("Strix varia", 420, 360, 0.45, 0.35, 3, 0, "deep rhythmic hoots"),
    "Common Loon": CallPattern("Gavia immer", 900, 1300, 2.2, 0.8, 4, 0, "a long rising wail"),
    "American Bullfrog": CallPattern("Lithobates catesbeianus", 180, 150, 0.8, 0.7, 5, 25, "a low droning jug-o-rum"),
    "Field Cricket": CallPattern("Gryllus pennsylvanicus", 4500, 4500, 0.3, 0.4, 1, 30, "fast pulsed chirps"),
    "Humpback Whale": CallPattern("Megaptera novaeangliae", 250, 600, 1.6, 1.2, 3, 0, "a slow upward moan"),
}


def synth_call(species: str, seconds: float, sampling_rate: int, seed: int = 0, noise: float = 0.02) -> np.ndarray:
    """``seconds`` of a species' call pattern at ``sampling_rate``, float32 mono in [-1, 1]."""
    if species not in SPECIES:
        raise KeyError(f"Unknown synthetic species '{species}': choose one of {sorted(SPECIES)}")
    p = SPECIES[species]
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sampling_rate))
    out = noise * rng.standard_normal(n).astype(np.float32)
    period = p.call_s + p.gap_s
    start = rng.uniform(0, p.gap_s)
    jitter = rng.uniform(0.97, 1.03)  # each recording a slightly different individual
    t_call = np.arange(int(p.call_s * sampling_rate)) / sampling_rate
    freq = (p.f_start + (p.f_end - p.f_start) * t_call / p.call_s) * jitter
    phase = 2 * np.pi * np.cumsum(freq) / sampling_rate
    call = sum(np.sin(k * phase) / k for k in range(1, p.harmonics + 1))
    envelope = np.sin(np.pi * t_call / p.call_s) ** 2
    if p.am_hz:
        envelope = envelope * (0.5 + 0.5 * np.sign(np.sin(2 * np.pi * p.am_hz * t_call)))
    call = (0.5 * envelope * call / max(1.0, np.abs(call).max())).astype(np.float32)
    onset = start
    while onset < seconds:
        i = int(onset * sampling_rate)
        j = min(n, i + len(call))
        out[i:j] += call[: j - i]
        onset += period * rng.uniform(0.9, 1.1)
    return np.clip(out, -1.0, 1.0)
