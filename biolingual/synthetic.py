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
    return synth_pattern(SPECIES[species], seconds, sampling_rate, seed=seed, noise=noise)


def synth_pattern(p: CallPattern, seconds: float, sampling_rate: int, seed: int = 0, noise: float = 0.02) -> np.ndarray:
    """``seconds`` of a call pattern (a known or an invented species) at ``sampling_rate``."""
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


_SYLLABLES = [
    "ka",
    "lu",
    "mir",
    "to",
    "sen",
    "va",
    "rho",
    "dun",
    "pel",
    "qui",
    "zar",
    "ome",
    "fen",
    "gal",
    "ist",
    "bor",
]
_KINDS = [
    ("Whistler", "bird"),
    ("Croaker", "frog"),
    ("Chirper", "insect"),
    ("Moaner", "whale"),
    ("Hooter", "owl"),
    ("Triller", "frog"),
]
_ADJECTIVES = [
    "Azure",
    "Crested",
    "Dusky",
    "Golden",
    "Marsh",
    "Pale",
    "Ringed",
    "Spotted",
    "Tawny",
    "Velvet",
    "Western",
    "Wren",
]


def invented_species(n: int, seed: int = 0) -> dict[str, CallPattern]:
    """``n`` invented species, each with its own call signature (pitch band, sweep, rhythm, timbre).

    Names look like "Tawny Whistler"; pitch bands are spread over 150 Hz - 7 kHz on a log scale so
    every species sounds different. Deterministic for a given ``seed``.
    """
    rng = np.random.default_rng(seed)
    species: dict[str, CallPattern] = {}
    bands = np.geomspace(150, 7000, n)
    for i, low in enumerate(rng.permutation(bands)):
        adjective, (kind, group) = _ADJECTIVES[i % len(_ADJECTIVES)], _KINDS[(i // len(_ADJECTIVES) + i) % len(_KINDS)]
        name = f"{adjective} {kind}"
        while name in species:
            name = f"{_ADJECTIVES[int(rng.integers(len(_ADJECTIVES)))]} {name}"
        sweep = float(rng.choice([-0.3, 0.0, 0.4, 0.8]))
        call_s = float(rng.choice([0.1, 0.25, 0.6, 1.5]))
        gap_s = float(rng.choice([0.1, 0.3, 0.8]))
        am_hz = float(rng.choice([0.0, 0.0, 15.0, 40.0]))
        harmonics = int(rng.choice([1, 2, 4]))
        genus = "".join(rng.choice(_SYLLABLES, 3)).capitalize()
        epithet = "".join(rng.choice(_SYLLABLES, 2)) + "us"
        pitch = "high" if low > 2500 else "low" if low < 500 else "mid-pitched"
        rhythm = "pulsed" if am_hz else "smooth"
        shape = "rising" if sweep > 0 else "falling" if sweep < 0 else "steady"
        length = "short" if call_s < 0.3 else "long" if call_s > 1 else "brief"
        species[name] = CallPattern(
            f"{genus} {epithet}",
            float(low),
            float(low * (1 + sweep)),
            call_s,
            gap_s,
            harmonics,
            am_hz,
            f"{length} {pitch} {rhythm} {shape} calls of {'an' if group[0] in 'aeiou' else 'a'} {group}",
        )
    return species
